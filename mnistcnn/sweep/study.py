"""The Optuna study behind a sweep: its storage, sampler and pruner, the trials' states, and
the retry of a trial whose worker stopped (interrupted, killed, lost with its machine).

Optuna is an optional extra: it is imported here, and ``require_optuna`` says how to install it.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import MnistCnnError, UsageError, command_line, install_extra, raise_signal_behind
from .folder import SweepDir

EXTRA = install_extra("sweep")
CONNECT_ATTEMPTS = 4
CONNECT_SECONDS = 10  # a database server that does not answer by then is named, not waited for
# a running trial whose worker is silent this many heartbeats is failed and retried: a beat
# late by a busy machine or a database restarting fails nothing
STALE_HEARTBEATS = 2
SQLITE = "sqlite:///"  # then a database file's path
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")  # a plain path named so is a SQLite database, not a journal file
SQLITE_HEADER = b"SQLite format 3\0"  # the first bytes of every SQLite database file
# a database's name that starts a --storage value with a colon or '//' but not '://' after it: a URL mistyped, not a
# journal file's path (one slash is a folder's: sqlite/sweeps.journal)
MISTYPED_URL = re.compile(r"(?P<scheme>(postgres(ql)?|mysql|mariadb|(?P<sqlite>sqlite))(\+\w+)?)(:|//+)(?P<rest>.*)",
                          re.IGNORECASE)
MASK = "***"  # a password that is not written down
PLACEHOLDER = "PASSWORD"  # a password in a printed command: the user types their own


def require_optuna():
    try:
        import optuna
    except ImportError as err:
        raise_signal_behind(err)
        raise UsageError(f"mnistcnn sweep needs Optuna, which is not installed; {EXTRA}") from None
    optuna.logging.set_verbosity(max(optuna.logging.get_verbosity(), optuna.logging.WARNING))  # a worker's ERROR stays
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def shown(url: str, password: str = MASK) -> str:
    """The storage URL with ``password`` in place of its own (before the host, or libpq's
    ``?password=`` parameter): by default fit to print or write into the sweep folder."""
    if "://" not in url:
        return url
    scheme, credentials, host = url_parts(url)
    host = re.sub(r"([?&]password=)[^&]*", lambda found: found[1] + password, host)
    if credentials is None:
        return f"{scheme}://{host}"
    return f"{scheme}://{credentials.split(':', 1)[0]}:{password}@{host}" if ":" in credentials else \
        f"{scheme}://{credentials}@{host}"


def url_parts(url: str) -> tuple[str, str | None, str]:
    """A database URL's scheme, its credentials (``user:password``, None without) and the rest
    (host, database, query). The credentials end at the last '@' before the query, as SQLAlchemy
    reads them: an '@' in the query is the query's own."""
    scheme, rest = url.split("://", 1)
    before_query, query = rest.split("?", 1) if "?" in rest else (rest, None)
    if "@" not in before_query:
        return scheme, None, rest
    credentials, host = before_query.rsplit("@", 1)
    return scheme, credentials, host if query is None else f"{host}?{query}"


def folder_command(option: str, folder, url: str | None) -> str:
    """``mnistcnn sweep --resume|--status SWEEP_DIR`` to print, with the --storage that the folder
    keeps no password for: ``url`` is the storage's (with its password, or masked as the folder
    keeps it; None: the folder's own study), and the command has a placeholder in its place."""
    again = url is not None and (shown(url) != url or is_masked(url))
    return command_line("sweep", option, folder, *(("--storage", shown(url, password=PLACEHOLDER)) if again else ()))


def is_masked(url: str) -> bool:
    """Whether ``url`` is one that ``shown`` wrote: its password must be given again."""
    return f":{MASK}@" in url or re.search(rf"[?&]password={re.escape(MASK)}(&|$)", url) is not None


def storage_file(url: str | None) -> Path | None:
    """The file a storage URL names: a journal file's path, or an SQLite database's; None for a
    database server."""
    if url is None or "://" in url and not url.startswith(SQLITE):
        return None
    return Path(url.removeprefix(SQLITE))


def holds_journal(path: Path) -> bool:
    """Whether the file at ``path`` holds something, and not a SQLite database: an Optuna journal,
    as sweeps of earlier versions wrote under a .db name. A new or empty file holds neither yet."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(SQLITE_HEADER))
    except OSError:  # no such file, or one that opening it will explain
        return False
    return head not in (b"", SQLITE_HEADER)


def resolved_storage(url: str | None, folder: Path | None = None) -> str | None:
    """The storage a --storage value or a sweep file's storage: means: a database URL as it is; a
    plain path ending in one of SQLITE_SUFFIXES a SQLite database's URL, unless the file there is a
    journal already; any other plain path an Optuna journal file. A file's path is made absolute (a
    relative one taken from ``folder``, else the working directory), so that the URL kept in the
    sweep folder still names it from another working directory."""
    path = storage_file(url)
    if path is None:
        return url
    path = (folder or Path()) / path
    sqlite = url.startswith(SQLITE) or path.suffix.lower() in SQLITE_SUFFIXES and not holds_journal(path)
    return (SQLITE if sqlite else "") + str(path.resolve())


@dataclass(frozen=True)
class Storage:
    """A study's storage: ``url`` as Optuna opens it (``resolved_storage``, with its password), and
    ``origin``, where the user named it, in their spelling and without a password: what a message
    about the storage starts with."""

    url: str
    origin: str

    @classmethod
    def named(cls, value: str, where: str, folder: Path | None = None) -> "Storage":
        """The storage that ``value`` means, given at ``where``: ``--storage`` or ``SWEEP.yaml: storage:``
        (a relative file's path then taken from ``folder``, the sweep file's, as its base: is)."""
        if not value.strip():  # --storage "$DB" with DB unset: not the sweep folder's own study, which runs alone
            raise UsageError(f"{where.rstrip(':')}: is empty; give a database URL or a file's path (a shell "
                             "variable that holds it may be unset in this shell)")
        mistyped = MISTYPED_URL.fullmatch(value) if "://" not in value else None
        if mistyped is not None:
            # SQLite's is sqlite:/// and then the file's path, as typed after the colon (sqlite:/srv/x.db: /srv/x.db)
            url = shown(f"{mistyped['scheme']}:///{mistyped['rest']}" if mistyped["sqlite"]
                        else f"{mistyped['scheme']}://{mistyped['rest'].lstrip('/')}")
            raise UsageError(f"{where.rstrip(':')}: {mistyped['scheme']} is not followed by '://' (without it the "
                             f"value is a journal file's path); did you mean {url}?")
        origin = f"{where} {shown(value)}"
        if is_masked(value):  # as a sweep folder keeps it
            raise UsageError(f"{origin}: the sweep folder keeps no password; give it again with --storage "
                             f"{shown(value, password=PLACEHOLDER)}")
        credentials = url_parts(value)[1] if "://" in value else None
        if credentials is not None and "@" in credentials:  # the first '@' would be read as the host's start
            raise UsageError(f"{origin}: the user name or password holds an '@', which ends them in a URL; write "
                             "each '@' in them as %40")
        return cls(resolved_storage(value, folder), origin)


def study_name(given: str | None) -> str | None:
    """The --study given (None: the sweep's name); an empty one is refused, as --storage's is."""
    if given is not None and not given.strip():
        raise UsageError("--study: is empty; give the study's name, the same on every machine (without --study: "
                         "the sweep's name)")
    return given


def local_storage(sweep_dir: Path) -> Storage:
    """A SQLite file in the sweep folder: enough for the jobs of one machine."""
    study_file = SweepDir(sweep_dir).study_file
    return Storage(f"{SQLITE}{study_file.resolve()}", f"{study_file} (the sweep folder's own study)")


def storage_words(storage: Storage | None) -> str:
    """A storage in words, its kind first, with no password; None: the SQLite file a new sweep
    folder will hold."""
    if storage is None:
        return "a SQLite file in the sweep folder"
    url = storage.url
    if url.startswith(SQLITE):
        return f"the SQLite database {url.removeprefix(SQLITE)}"
    if "://" not in url:
        return f"the Optuna journal file {url}"
    return f"the database {shown(url)}"


def check_storage_folder(storage: Storage | None) -> None:
    """Refuse a journal file or SQLite database whose folder does not exist (nothing would create it)."""
    path = storage_file(storage.url) if storage is not None else None
    folder = path.parent if path is not None else None
    if folder is not None and not folder.is_dir():
        raise UsageError(f"{storage.origin}: the folder {folder} does not exist; create it (mkdir -p {folder}), "
                         "or give a path in a folder that does")


def engine_options(url: str) -> dict:
    """SQLAlchemy's engine options for the database ``url`` names."""
    if url.startswith("sqlite"):  # transactions begun by hand (isolation_level None), each holding the write lock
        return {"connect_args": {"timeout": 60, "isolation_level": None}}
    engine = {"pool_pre_ping": True}
    # libpq waits for ever by default; other drivers (pg8000) take no connect_timeout
    if url.startswith(("postgresql+psycopg://", "postgresql+psycopg2://")) and "connect_timeout" not in url:
        engine["connect_args"] = {"connect_timeout": CONNECT_SECONDS}
    return engine


def open_storage(storage: Storage, heartbeat: int):
    """Optuna's storage for ``storage.url``: a database URL (SQLite, PostgreSQL, MySQL), or else
    the path of a journal file on a shared filesystem. Databases get a heartbeat: a running trial
    whose worker is silent for STALE_HEARTBEATS heartbeats is failed and retried."""
    optuna = require_optuna()
    check_storage_folder(storage)
    url, origin = storage.url, storage.origin
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        try:
            return optuna.storages.JournalStorage(JournalFileBackend(url, JournalFileOpenLock(url)))
        except OSError as err:
            raise UsageError(f"{origin}: cannot open the journal file ({err.strerror or err})") from None
        except ValueError:  # the journal's lines are JSON
            raise UsageError(f"{origin}: is not an Optuna journal file; give a new file's path, or a "
                             "database URL") from None
    if url.startswith(("postgresql://", "postgres://")):  # the driver the extra installs
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    sqlite = url.startswith("sqlite")
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url), heartbeat_interval=heartbeat,
                                                 grace_period=STALE_HEARTBEATS * heartbeat,
                                                 heartbeat_stale_trial_callback=retry_trial)
            from sqlalchemy import event

            if sqlite:
                event.listen(storage.engine, "begin", write_first)
            else:  # opened: from now on a lost connection is waited for, a while
                event.listen(storage.engine, "do_connect", patient_connect(heartbeat))
            return storage
        except ImportError as err:  # Optuna wraps the missing driver's ModuleNotFoundError in its own
            driver = err.name or getattr(err.__cause__, "name", None) or "of that database"
            raise UsageError(f"{origin}: needs the database driver {driver}; PostgreSQL's comes with "
                             f"{EXTRA}, for MySQL pip install PyMySQL and use mysql+pymysql://") from None
        except Exception as err:  # SQLAlchemy's errors: no server, wrong password, no database
            # workers that start together on an empty database race to create its tables: one wins, try again
            if attempt + 1 == CONNECT_ATTEMPTS or "already exists" not in str(err) and "duplicate key" not in str(err):
                reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
                if "Can't load plugin" in reason:  # SQLAlchemy knows no database by that name
                    raise UsageError(f"{origin}: no database is called {url.split('://')[0]!r}; give "
                                     "a postgresql://, mysql+pymysql:// or sqlite:/// URL, or a journal file's "
                                     "path") from None
                raise UsageError(f"{origin}: cannot open the database: {' '.join(reason.split())}; "
                                 f"{database_hint(reason)}") from None
            time.sleep(0.5 + attempt)


# what to do about a database server's refusal, by the words of PostgreSQL's message (libpq's)
DATABASE_HINTS = (
    ("password authentication failed", "check the user name and password in the URL"),
    ("no password supplied", "give the password in the URL (USER:PASSWORD@HOST), or in PGPASSWORD or ~/.pgpass"),
    ("does not exist", "check its name in the URL, or create it on the database machine (README: On many machines)"),
    ("no pg_hba.conf entry", "let this machine in: a host line for it in pg_hba.conf on the database machine, then "
                             "reload PostgreSQL"),
    ("Connection refused", "check the host and port, and that PostgreSQL runs there and listens to other machines "
                           "(listen_addresses in postgresql.conf)"),
    ("resolve host", "check the host's name in the URL"),
    ("timeout expired", f"the server did not answer within {CONNECT_SECONDS} s; check the host and port, and any "
                        "firewall between"),
)


def database_hint(reason: str) -> str:
    return next((hint for words, hint in DATABASE_HINTS if words in reason),
                "check the URL: postgresql://USER:PASSWORD@HOST[:PORT]/DATABASE")


def patient_connect(seconds: int):
    """SQLAlchemy's do_connect handler for a database that answered once: a connection that fails
    is tried again each second for up to ``seconds`` (a heartbeat), so that a database restarting,
    or a network dropping for a moment, does not end the sweep. STALE_HEARTBEATS heartbeats without
    a worker's beat fail its trial: a longer wait would outlast the trials it waits for."""

    def connect(dialect, record, arguments, options):
        deadline = time.monotonic() + seconds
        while True:
            try:
                return dialect.connect(*arguments, **options)
            except dialect.loaded_dbapi.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1)

    return connect


class StorageLost(MnistCnnError):
    """The study's database stopped answering, for longer than ``patient_connect`` waits."""


def storage_lost(err: BaseException, origin: str, then: str) -> StorageLost | None:
    """``err`` as one line if a database that stopped answering caused it: ``origin`` (the storage
    as the user named it), the driver's reason and ``then`` (what to do); None for other errors."""
    from sqlalchemy.exc import OperationalError

    cause = err  # Optuna raises its own errors from SQLAlchemy's, or while handling them
    while cause is not None and not isinstance(cause, OperationalError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    reason = " ".join(str(cause.orig or cause).strip().splitlines()[0].split())
    return StorageLost(f"{origin}: the database stopped answering ({reason}); {then}")


@contextlib.contextmanager
def storage_answering(origin: str, then: str):
    """Raise the error of a database that stopped answering as ``storage_lost``'s one line; other errors pass."""
    try:
        yield
    except Exception as err:
        lost = storage_lost(err, origin, then)
        if lost is None:
            raise
        raise lost from None


def write_first(connection) -> None:
    """Begin each SQLite transaction holding the database's write lock.

    Optuna hands a queued trial to the worker whose transaction reads it waiting and marks it
    running; SQLite's default transaction reads without a lock, so two workers could both read it
    waiting and both train it. PostgreSQL and MySQL lock the row (``SELECT ... FOR UPDATE``).
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_sampler(sweep, seed_key: str):
    """The sweep's sampler, seeded by the sweep's seed and ``seed_key``."""
    optuna = require_optuna()
    seed = zlib.crc32(f"{sweep.seed}/{seed_key}".encode())
    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler(sweep.grid(), seed=seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(sweep):
    optuna = require_optuna()
    if sweep.pruner == "median":
        # a trial reports epochs 1, 2, ...: pruning may start at the epoch after the warm-up
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.startup_trials,
                                           n_warmup_steps=sweep.warmup_epochs + 1)
    if sweep.pruner == "hyperband":
        epochs = sweep.base["train"]["epochs"]
        return optuna.pruners.HyperbandPruner(min_resource=sweep.warmup_epochs + 1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def open_study(sweep, storage, seed_key: str = "main", create: bool = False):
    """The sweep's study in ``storage``; ``create`` makes it when missing. A study that another
    sweep file started (another space or objective) is refused."""
    optuna = require_optuna()
    settings = {"space": sweep.to_yaml()["space"], **sweep.settings()}
    try:
        study = optuna.create_study(storage=storage, study_name=sweep.study, direction=sweep.direction,
                                    sampler=make_sampler(sweep, seed_key), pruner=make_pruner(sweep),
                                    load_if_exists=True) if create else \
            optuna.load_study(study_name=sweep.study, storage=storage, sampler=make_sampler(sweep, seed_key),
                              pruner=make_pruner(sweep))
    except KeyError:
        raise UsageError(f"study {sweep.study!r} is not in the storage; start it with mnistcnn sweep SWEEP.yaml") \
            from None
    except ValueError as err:  # the name exists with another direction
        raise UsageError(f"study {sweep.study!r}: {err}; give another --study") from None
    existing = study.user_attrs.get("sweep")
    if existing is None:
        study.set_user_attr("sweep", settings)
    elif existing != settings:
        raise UsageError(f"study {sweep.study!r} was started by another sweep file (its space, objective or trials "
                         "differ); give another --study, or the same sweep file")
    return study


def create_local_study(sweep, sweep_dir: Path) -> None:
    """Make the sweep's study in the SQLite file of ``sweep_dir``, a folder set up out of sight, and let
    go of the file: the folder is renamed next, and SQLite keeps its journal beside the path it opened."""
    storage = open_storage(local_storage(sweep_dir), sweep.heartbeat)
    try:
        open_study(sweep, storage, create=True)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def load_any_study(storage: Storage, name: str):
    """A study by name alone (``--status`` from any machine); a file that does not exist is not
    made (as opening a journal or a SQLite file would)."""
    optuna = require_optuna()
    file = storage_file(storage.url)
    if file is not None and not file.is_file():
        raise UsageError(f"{storage.origin}: no such file; give --storage the journal or SQLite file the sweep "
                         "wrote")
    opened = open_storage(storage, heartbeat=60)
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(opened)]
        held = f"give --study one of: {', '.join(names)}" if names else "it holds none"
        raise UsageError(f"{storage.origin}: holds no study {name!r}; {held}") from None


def retry_trial(study, trial) -> None:
    """Queue a copy of a trial that stopped before its end (once), pointing at its run directory
    so that a worker on the same machine resumes it from its checkpoint."""
    if any(other.user_attrs.get("retry_of") == trial.number for other in study.get_trials(deepcopy=False)):
        return
    attrs = {"retry_of": trial.number}
    if trial.user_attrs.get("run_dir"):
        attrs["resume_from"] = trial.user_attrs["run_dir"]
        attrs["resume_host"] = trial.user_attrs.get("host")
    study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)


STATUS = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "queued"}
ENDED = ("complete", "pruned", "diverged", "failed", "stopped")  # the statuses of a trial that runs no more


def trial_status(trial) -> str:
    """A trial's status in the sweep's words: Optuna's, or stopped (by a signal, to be resumed), or
    diverged (pruned for Optuna, which then learns to avoid its values, but not by the pruner)."""
    if trial.user_attrs.get("stopped"):
        return "stopped"
    if trial.user_attrs.get("diverged"):
        return "diverged"
    return STATUS[trial.state.name]


def states(trials) -> dict:
    """How many of ``trials`` have each status (surplus trials, which never ran, left out); a
    stopped trial counts as stopped until the trial that resumes it has ended (or stopped in its
    turn: then that one stands for it)."""
    counts = dict.fromkeys((*ENDED, "running", "queued"), 0)
    resumed = {trial.user_attrs["retry_of"] for trial in trials if "retry_of" in trial.user_attrs
               and trial_status(trial) in ENDED}
    for trial in trials:
        if not trial.user_attrs.get("surplus") and trial.number not in resumed:
            counts[trial_status(trial)] += 1
    return counts


def trials_done(counts: dict) -> int:
    """The trials that count towards the sweep's number: those that ran to an end of their own."""
    return counts["complete"] + counts["pruned"] + counts["diverged"]


def _stopped(trial) -> bool:
    """A failed trial that had started training and stopped before its end (not one whose config
    or data failed, nor a surplus draw)."""
    attrs = trial.user_attrs
    return trial.state.name == "FAIL" and not attrs.get("error") and not attrs.get("surplus")


def _fail(study, trial) -> None:
    study.tell(trial.number, state=require_optuna().trial.TrialState.FAIL, skip_if_finished=True)


def _process_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def retry_unfinished(study) -> None:
    """Queue a retry for each trial that stopped without one: cut short by a second Ctrl-C, or
    left running by a worker of this machine that is gone."""
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs.get("retry_of") for trial in trials}
    for trial in trials:
        orphaned = (trial.state.name == "RUNNING" and trial.user_attrs.get("host") == host()
                    and not _process_alive(trial.user_attrs.get("pid")))
        if orphaned:
            _fail(study, trial)
        if (orphaned or _stopped(trial)) and trial.number not in retried:
            retry_trial(study, trial)
            retried.add(trial.number)


def has_heartbeat(storage) -> bool:
    """Whether Optuna keeps a heartbeat in ``storage`` (databases); a journal file has none."""
    return isinstance(storage, require_optuna().storages.RDBStorage)


def fail_stale(study, storage, heartbeat: int) -> None:
    """Fail and retry running trials whose worker went silent: by Optuna's heartbeat in a
    database, else by the ``alive`` time that ``Pulse`` keeps on the trial."""
    optuna = require_optuna()
    if has_heartbeat(storage):
        with contextlib.suppress(Exception):  # a passing database hiccup: the next poll tries again
            optuna.storages.fail_stale_trials(study)
        return
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        alive = trial.user_attrs.get("alive", trial.datetime_start.timestamp() if trial.datetime_start else now)
        if now - alive > STALE_HEARTBEATS * heartbeat:
            _fail(study, trial)
            retry_trial(study, trial)


class Pulse:
    """Marks a running trial alive every ``seconds`` from a thread of its own, for storages
    without Optuna's heartbeat (``fail_stale`` reads it)."""

    def __init__(self, trial, seconds: int):
        self.trial, self.seconds = trial, seconds
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)

    def beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is made up by the next one
                self.trial.set_user_attr("alive", time.time())
            if self.stop.wait(self.seconds):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def host() -> str:
    return socket.gethostname()
