"""Typed errors: the library raises these; only the CLI turns them into messages and exit codes."""
from __future__ import annotations

import shlex
import signal
from pathlib import Path

INTERRUPTED = 128 + signal.SIGINT  # the shell's status for a command stopped by Ctrl-C


def command_line(*arguments) -> str:
    """An mnistcnn command to copy into a shell, each argument quoted where it needs to be (a path
    with spaces or brackets)."""
    return " ".join(["mnistcnn", *(shlex.quote(str(argument)) for argument in arguments)])


def install_extra(extra: str) -> str:
    """The command that installs an optional extra: from the checkout mnistcnn runs from (the
    usual install, ``pip install -e``), else from the package index."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return f"pip install -e {shlex.quote(f'{checkout}[{extra}]')}"
    return f"pip install 'mnistcnn[{extra}]'"


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 36`` for a signal Python has no name for (most real-time ones)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def stopped_exit_code(signum: int | None) -> int:
    """The status of a command that a signal stopped: 143 for SIGTERM, else Ctrl-C's 130."""
    return 128 + signal.SIGTERM if signum == signal.SIGTERM else INTERRUPTED


class Terminated(BaseException):
    """SIGTERM in a command, raised where it is as Ctrl-C raises KeyboardInterrupt: what it was
    writing is cleaned up as after Ctrl-C (a temporary file, a half-fetched download)."""


def raise_terminated(signum, frame):
    """The commands' SIGTERM handler."""
    raise Terminated


def raise_signal_behind(err: ImportError) -> None:
    """Raise again the Ctrl-C or SIGTERM that an optional extra's failed import came from, if it
    did: an extension module whose initialisation a signal cuts short (pybind11's, as onnxruntime's)
    raises ImportError('initialization failed') from it, which read as 'not installed'."""
    cause = err.__cause__ or err.__context__
    while cause is not None:
        if isinstance(cause, (KeyboardInterrupt, Terminated)):
            raise cause.with_traceback(None) from None
        cause = cause.__cause__ or cause.__context__


class MnistCnnError(Exception):
    """Base of every error a user can cause and fix; ``exit_code`` is the command's exit status."""

    exit_code = 1

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if exit_code is not None:  # else the parent's
            cls.exit_code = exit_code


class ConfigError(MnistCnnError, exit_code=2):
    """A config file or override is invalid (names the file and the key path)."""


class DataError(MnistCnnError, exit_code=2):
    """A data file is missing, corrupt or foreign (names the file)."""


class CheckpointError(MnistCnnError, exit_code=2):
    """A checkpoint is missing, corrupt, tampered with or incompatible."""


class UsageError(MnistCnnError, exit_code=2):
    """A command was given an argument that cannot work (a bad path, index or layer name)."""


class FolderMissing(UsageError):
    """The folder a file was to be written in does not exist; ``path`` and ``reason`` as a
    WriteError's, so that ``atomic.written_to`` names the option that writes elsewhere."""

    def __init__(self, message: str, path: Path, reason: OSError):
        super().__init__(message)
        self.path, self.reason = path, reason


class NonFiniteError(MnistCnnError, exit_code=3):
    """Training produced a NaN or infinity; says where it first appeared."""


class OutOfMemory(MnistCnnError):
    """The machine had no memory left for an array the work needed (names what to make smaller)."""


class WriteError(MnistCnnError):
    """A file could not be written (disk full, no permission); the previous version is intact.
    ``path`` and ``reason`` (the OSError), where known, let ``atomic.written_to`` name the option
    that writes elsewhere."""

    def __init__(self, message: str, path: Path | None = None, reason: OSError | None = None):
        super().__init__(message)
        self.path, self.reason = path, reason
