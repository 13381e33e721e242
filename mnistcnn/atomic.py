"""Atomic file writes: a temporary file in the same folder, flushed, fsynced, then renamed.

A crash at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import FolderMissing, MnistCnnError, UsageError, WriteError

NAME_ATTEMPTS = 100  # random names a temporary file tries before the folder is taken to refuse new ones


@dataclass(frozen=True)
class OutputOption:
    """The option that chooses where a command writes (``-o FILE``): a write refused there names it
    as the way to write elsewhere. ``given``: the place is the option's value, not its default;
    ``instead``: an option with which the command writes nothing (``--json``)."""

    name: str
    metavar: str
    given: bool = True
    instead: str | None = None

    def fix(self) -> str:
        return f"write elsewhere with {self.name} {self.metavar}" + (
            f" ({self.instead} writes nothing)" if self.instead else "")

    def named(self, path) -> str:
        """``path`` as a message names it: after the option, when the user gave it."""
        return f"{self.name} {path}" if self.given else str(path)


@contextlib.contextmanager
def written_to(option: OutputOption):
    """Files written in this block go where ``option`` chose: a refused write says so in its fix."""
    try:
        yield
    except (WriteError, FolderMissing) as err:
        if err.path is None:
            raise
        raise write_error(err.path, err.reason, option) from None


@contextlib.contextmanager
def atomic_writer(path, mode: str = "wb"):
    """Yield a file object; on success it replaces ``path``, on any error it is removed.

    An OSError (disk full, no permission, read-only file system) becomes a WriteError that
    names ``path``: a failed write() or fsync() carries no file name of its own.
    """
    path = Path(path)
    try:
        with temporary_file(path.parent, f".{path.name}.", ".tmp") as (fd, temp_path):
            with os.fdopen(fd, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_path, path)
    except OSError as err:
        raise write_error(path, err) from None
    fsync_folder(path.parent)


@contextlib.contextmanager
def temporary_file(folder, prefix: str, suffix: str):
    """Yield ``(fd, path)``: a new file ``folder/<prefix><random><suffix>`` with the mode the user's
    umask gives any file they write, removed if the block raises. Its name is bound before the file
    is made, so that a signal (Ctrl-C, SIGTERM) that lands as it is made removes it too: mkstemp
    tells its file's name only once the file exists, and a signal then left it behind."""
    path = None
    try:
        for _ in range(NAME_ATTEMPTS):
            path = Path(folder) / f"{prefix}{secrets.token_hex(6)}{suffix}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:  # another's file, not this block's to remove
                path = None
        else:
            raise FileExistsError(errno.EEXIST, f"no free name for a temporary file in {NAME_ATTEMPTS} tries",
                                  str(folder))
        yield fd, path
    except BaseException:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


def make_folder(folder, option: OutputOption, file=None, make: bool = True) -> Path:
    """Create ``folder`` (with its parents) to write into, before any work whose results it would
    hold: the value of ``option``, or (``file`` given) the folder of the file it names. A folder
    that cannot be made or written in is a UsageError naming the option's value, what is in the
    way, and the fix. ``make`` False checks what can be told without making anything (a dry run)."""
    folder = Path(folder)
    named = option.named(folder if file is None else file)
    what = "this folder" if file is None else f"its folder {folder}"
    nearest = next((path for path in (folder, *folder.parents) if path.exists()), Path.cwd())
    if not nearest.is_dir():
        if nearest == folder and file is None:
            fix = "give a folder (it is created if missing)" if option.given else option.fix()
            raise UsageError(f"{named}: is a file" + ("; " if option.given else ", not a folder; ") + fix)
        raise UsageError(f"{named}: {nearest} is a file, not a folder; {option.fix()}")
    if make:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"{named}: cannot create {what} ({err.strerror}); {option.fix()}") from None
        nearest = folder
    # a folder that exists but refuses files fails here, before the work, not at the first write
    if not os.access(nearest, os.W_OK | os.X_OK):
        done = "write in" if nearest == folder else "create"
        raise UsageError(f"{named}: cannot {done} {what} ({os.strerror(_refusal(nearest))}); {option.fix()}")
    return folder


def _refusal(folder: Path) -> int:
    """Why os.access refused to let us write in ``folder``, which it does not say: a read-only
    filesystem (a mounted image, a locked drive) or a permission."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        read_only = False
    return errno.EROFS if read_only else errno.EACCES


def abandoned(path, idle_seconds: float) -> bool:
    """Whether ``path``, a file or folder that a process holds locked (flock) while it writes it, was
    left by one killed mid-way (SIGKILL, a power cut): no process holds its lock (the kernel lets go
    of a dead one's) and nothing was written in it for ``idle_seconds``, which covers the moment
    between its making and its locking. A filesystem that cannot lock keeps it."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # removed meanwhile
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # refused while a live process holds it
        return time.time() - os.fstat(handle).st_mtime > idle_seconds
    except OSError:
        return False
    finally:
        os.close(handle)


def write_error(path: Path, err: OSError, option: OutputOption | None = None) -> MnistCnnError:
    """The error to report for ``err`` writing ``path``: the path given is wrong (a UsageError), or
    the machine refused the write (a WriteError); ``option``, the one that chose the place, is the
    other fix (None: no option could write elsewhere, as in a run's own folder)."""
    if path.is_dir():
        return UsageError(f"{path}: is a folder; give the name of a file to write in it")
    if err.errno == errno.ENOENT and not path.parent.is_dir():
        return FolderMissing(f"{path}: the folder {path.parent} does not exist; create it"
                             + (f", or {option.fix()}" if option else ""), path, err)
    reason = err.strerror or str(err)
    fix = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some disk space",
           errno.EACCES: "make the folder writable", errno.EPERM: "make the folder writable",
           errno.EROFS: "use a writable folder"}.get(err.errno, "check the folder")
    previous = " (the previous version is intact)" if path.exists() else ""
    return WriteError(f"{path}: cannot write: {reason}{previous}; {fix}" + (f", or {option.fix()}" if option else ""),
                      path, err)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path, text: str) -> None:
    with atomic_writer(path, "w") as handle:
        handle.write(text)


def write_bytes(path, data: bytes) -> None:
    with atomic_writer(path, "wb") as handle:
        handle.write(data)
