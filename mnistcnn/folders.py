"""The folders under --runs-dir: a run's or a sweep's, each named NAME-YYYYmmdd-HHMMSS, and the
runs folder itself. Runs (``runs.RunDir``) and sweeps (``sweep.folder.SweepDir``) both stand on it."""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import re
import shutil
from pathlib import Path

from .atomic import OutputOption, abandoned, fsync_folder, make_folder
from .errors import ConfigError, UsageError, WriteError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RUNS_DIR = Path("runs")  # where runs go, and commands look, unless told otherwise
STAMP_FORMAT = "%Y%m%d-%H%M%S"  # the time in a run's folder name
STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")  # how a run's or a sweep's folder name ends: -STAMP[-N]
OUT_OF_SIGHT = re.compile(r"^\.(.+-\d{8}-\d{6}(?:-\d+)?)\.part$")  # a folder being set up: .NAME-STAMP.part
# a folder being set up is locked moments after it is made: one older and unlocked was left by a killed process
ABANDONED_AFTER_SECONDS = 60


def check_run_name(name: str, example: str = "--name lenet") -> str:
    """``name``, which names a folder under the runs folder; ``example`` shows how to give another."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ConfigError(f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (no path separators, "
                          f"no '..'), e.g. {example}")
    return name


def stamped_folder(runs_dir, name: str) -> Path:
    """A new folder, a run's or a sweep's, made out of sight as ``<runs_dir>/.<name>-<YYYYmmdd-HHMMSS>[-N].part``:
    it reserves the name ``<name>-<YYYYmmdd-HHMMSS>[-N]``, which ``publish_folder`` gives it once it holds what
    makes it of use, so that a process killed while filling it leaves no folder that commands would take for one."""
    check_run_name(name)
    runs_dir = check_runs_folder(runs_dir, make=True)
    stamp = _dt.datetime.now().strftime(STAMP_FORMAT)
    for suffix in range(1, 10000):
        final = runs_dir / (f"{name}-{stamp}" if suffix == 1 else f"{name}-{stamp}-{suffix}")
        path = final.with_name(f".{final.name}.part")
        try:
            path.mkdir()  # atomic: two runs started together never get the same folder
        except FileExistsError:
            continue
        except OSError as err:
            raise UsageError(f"{path}: cannot create the folder ({err.strerror})") from None
        if final.exists():  # the name was published before this folder reserved it
            path.rmdir()
            continue
        return path
    raise UsageError(f"{runs_dir}: too many folders named {name!r} at {stamp}")


def published_path(path: Path) -> Path:
    """Where the folder ``stamped_folder`` made will be once published: what the files written in it
    meanwhile name."""
    return path.with_name(OUT_OF_SIGHT.match(path.name).group(1))


def publish_folder(path: Path) -> Path:
    """The folder ``stamped_folder`` made, renamed to the name it reserved."""
    final = published_path(path)
    try:
        os.rename(path, final)  # onto a folder with files in it, refused: a published one is never replaced
    except OSError as err:
        raise WriteError(f"{path}: cannot rename it to {final.name} ({err.strerror}); check the folder {path.parent}",
                         final, err) from None
    fsync_folder(final.parent)  # the rename is what makes the folder whole: it must survive a power cut
    return final


def abandoned_setup(folder: Path) -> bool:
    """Whether ``folder`` is one that a process killed while setting it up out of sight left
    (``StampedFolder.create`` locks it)."""
    return bool(OUT_OF_SIGHT.match(folder.name)) and abandoned(folder, ABANDONED_AFTER_SECONDS)


def in_sight(folder: Path) -> list[Path]:
    """What ``folder`` holds, but for hidden names: a run's or a sweep's folder being set up
    (``StampedFolder.create``), say."""
    return [child for child in folder.iterdir() if not child.name.startswith(".")]


class StampedFolder:
    """A run's or a sweep's folder, ``<runs_dir>/<name>-<YYYYmmdd-HHMMSS>[-N]``. A new one is set up out of
    sight and locked by the process that fills it (a flock on the folder itself, which the kernel lets go
    of however the process ends) until ``publish`` gives it its name or ``discard`` removes it."""

    def __init__(self, path):
        self.path = Path(path)
        self.setup_lock: int | None = None  # the folder's open descriptor while this process sets it up

    @classmethod
    def create(cls, runs_dir, name: str):
        """A new folder out of sight (``.NAME-STAMP.part``); the ones that processes killed while setting
        theirs up left in ``runs_dir`` are removed."""
        made = cls(stamped_folder(runs_dir, name))
        with contextlib.suppress(OSError):  # a filesystem without locks: ``abandoned`` cannot lock it either
            made.setup_lock = os.open(made.path, os.O_RDONLY)
            fcntl.flock(made.setup_lock, fcntl.LOCK_SH)  # waits only while ``abandoned`` looks at it
        for folder in made.path.parent.glob(".*.part"):  # its own among them: locked and new, never abandoned
            if abandoned_setup(folder):
                shutil.rmtree(folder, ignore_errors=True)
        return made

    def publish(self) -> None:
        """Give the folder, set up out of sight, its own name: from now on commands see it, whole."""
        self.path = publish_folder(self.path)
        self._release()

    def discard(self) -> None:
        """Remove a new folder that stopped (a signal, a full disk) before it held what makes it of use."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self.setup_lock is not None:
            os.close(self.setup_lock)
            self.setup_lock = None


def check_runs_folder(runs_dir, make: bool = False, given: bool = False) -> Path:
    """``runs_dir``, the folder of run directories (train's and sweep's --runs-dir, ``given`` by the
    user or the default), refused naming --runs-dir when it is a file or cannot be made or written
    in; ``make``: made now, else checked as far as can be told without making it (before the work)."""
    return make_folder(runs_dir, OutputOption("--runs-dir", "DIR", given=given), make=make)
