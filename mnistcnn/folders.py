"""The folders under --runs-dir: a run's or a sweep's, each named NAME-YYYYmmdd-HHMMSS, and the
runs folder itself. Runs (``runs.RunDir``) and sweeps (``sweep.folder.SweepDir``) both stand on it."""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from .atomic import OutputOption, make_folder
from .errors import ConfigError, UsageError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RUNS_DIR = Path("runs")  # where runs go, and commands look, unless told otherwise
STAMP_FORMAT = "%Y%m%d-%H%M%S"  # the time in a run's folder name


def check_run_name(name: str, example: str = "--name lenet") -> str:
    """``name``, which names a folder under the runs folder; ``example`` shows how to give another."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ConfigError(f"run name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (no path separators, "
                          f"no '..'), e.g. {example}")
    return name


def stamped_folder(runs_dir, name: str) -> Path:
    """A new folder ``<runs_dir>/<name>-<YYYYmmdd-HHMMSS>[-N]`` (a run's, or a sweep's)."""
    check_run_name(name)
    runs_dir = check_runs_folder(runs_dir, make=True)
    stamp = _dt.datetime.now().strftime(STAMP_FORMAT)
    for suffix in range(1, 10000):
        path = runs_dir / (f"{name}-{stamp}" if suffix == 1 else f"{name}-{stamp}-{suffix}")
        try:
            path.mkdir()  # atomic: two runs started together never get the same folder
        except FileExistsError:
            continue
        except OSError as err:
            raise UsageError(f"{path}: cannot create the folder ({err.strerror})") from None
        return path
    raise UsageError(f"{runs_dir}: too many folders named {name!r} at {stamp}")


def check_runs_folder(runs_dir, make: bool = False, given: bool = False) -> Path:
    """``runs_dir``, the folder of run directories (train's and sweep's --runs-dir, ``given`` by the
    user or the default), refused naming --runs-dir when it is a file or cannot be made or written
    in; ``make``: made now, else checked as far as can be told without making it (before the work)."""
    return make_folder(runs_dir, OutputOption("--runs-dir", "DIR", given=given), make=make)
