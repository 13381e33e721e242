"""Run directories, metrics files and checkpoints (npz without pickle, written atomically).

A checkpoint is a plain ``.npz``: every array under a readable name, plus ``__meta__``, the
UTF-8 bytes of a JSON document (config, versions, position, metrics, and the SHA-256 of each
array, so a tampered or damaged array is detected).
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import difflib
import fcntl
import hashlib
import io
import json
import os
import platform
import shlex
import time
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_writer, write_text
from .errors import CheckpointError, UsageError, command_line
from .folders import RUNS_DIR, STAMP, StampedFolder, in_sight
from .sweep.folder import SweepDir

META_KEY = "__meta__"
FORMAT = "mnistcnn-checkpoint-1"
DIVERGED = "non-finite"  # the reason status.json gives for a run stopped by a NaN or infinity
LOCK_ATTEMPTS, LOCK_RETRY_SECONDS = 20, 0.05  # tries at a run's training lock, and the wait between them
METRIC_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s"]


def versions(workers: int | None = None) -> dict:
    """What produced a run: package versions, the CPU, the BLAS library and kernel, and the
    trainer's worker count. The same machine and worker count reproduce a run exactly; another
    CPU or BLAS kernel sums in another order and agrees only within float32 rounding."""
    return {"python": platform.python_version(), "numpy": np.__version__, "mnistcnn": __version__,
            "cpu": cpu_model(), "blas": blas_libraries(), "workers": workers}


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's marketing name (Linux's ``model name``), else what the platform module knows."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_libraries() -> list[dict]:
    """The BLAS libraries NumPy runs on, with the kernel each chose for this CPU."""
    from threadpoolctl import threadpool_info

    keys = ("internal_api", "version", "architecture", "num_threads")
    return [{key: library.get(key) for key in keys} for library in threadpool_info()
            if library.get("user_api") == "blas"]


CHECKPOINTS = ("best", "last")  # a run's two checkpoints, checkpoints/best.npz and last.npz


def other_checkpoint(which: str) -> str:
    return CHECKPOINTS[1 - CHECKPOINTS.index(which)]


class RunDir(StampedFolder):
    """``runs/<name>-<YYYYmmdd-HHMMSS>[-N]/`` and the files inside it."""

    @classmethod
    def of_checkpoint(cls, path) -> "RunDir | None":
        """The run a checkpoint file lies in, or None for a checkpoint outside a run directory."""
        path = Path(path)
        return cls(path.parent.parent) if path.parent.name == "checkpoints" else None

    @classmethod
    def create(cls, runs_dir, name: str) -> "RunDir":
        """A new run's folder, out of sight (``.NAME-STAMP.part``) until ``publish`` (``StampedFolder``)."""
        run = super().create(runs_dir, name)
        try:
            run.checkpoints.mkdir()
        except BaseException:  # a full disk, a signal: nothing to resume is left, nor a lock held
            run.discard()
            raise
        return run

    @classmethod
    def open(cls, path) -> "RunDir":
        path = Path(path)
        if path.is_file():
            what = "a config" if is_config_file(path) else "a file"
            raise UsageError(f"{path}: is {what}, not a run directory; give the folder a run wrote (runs/NAME-STAMP), "
                             "`mnistcnn runs` lists them")
        if not path.is_dir():
            raise UsageError(f"{path}: run directory not found; {run_like(path)}`mnistcnn runs` lists them")
        run = cls(path)
        if not run.config_file.is_file() and not run.checkpoints.is_dir():
            raise not_a_run(path)
        return run

    def train_again(self) -> str:
        """How to start this run afresh, as a message ends: from its config.yaml, while it is there."""
        if self.config_file.is_file():
            return f"train its config again: {command_line('train', self.config_file)}"
        return "train its config file again (this run's config.yaml is gone)"

    # paths
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def finished(self) -> bool:
        """Whether the run is whole: summary.json is written last at its end and removed when it is
        trained longer, so it says so even when status.json could not be written after it."""
        return self.summary_file.is_file()

    @property
    def lock_file(self) -> Path:
        return self.path / ".training.lock"

    @contextlib.contextmanager
    def training_lock(self):
        """Held while a process trains the run, so that no other trains it at once. The kernel lets
        go of it when the process ends, however it ends: a killed trainer, or its process id taken
        by another process since, cannot leave the run locked."""
        with open(self.lock_file, "a") as handle:
            for _ in range(LOCK_ATTEMPTS):  # a look by being_trained holds it for an instant
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(LOCK_RETRY_SECONDS)
            else:
                raise self.busy_error()
            handle.truncate(0)  # the holder's process id, for the message of a refused trainer
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield

    def check_writable(self) -> None:
        """Refuse, before anything is printed, to train the run on in a folder whose files cannot be
        written (someone else's run, a read-only drive): it trains in its own folder only."""
        for path in (self.path, self.checkpoints, self.lock_file):
            if path.exists() and not os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
                what = "in this folder" if path.is_dir() else "this file"
                resume_copy = command_line("train", "--resume", f"DIR/{self.path.name}")
                raise UsageError(f"{path}: cannot write {what}, and --resume trains a run in its own folder; make it "
                                 f"writable, or copy the run to a folder you can write in and resume the copy: "
                                 f"cp -r {shlex.quote(str(self.path))} DIR && {resume_copy}")

    @property
    def being_trained(self) -> bool:
        """Whether a process holds the run's training lock now."""
        try:
            with open(self.lock_file) as handle:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # no lock file: no process has trained the run since it was made or copied
            return False
        return False

    def busy_error(self) -> UsageError:
        try:
            pid = int(self.lock_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # the holder has not written it yet
            pid = None
        if pid is None:
            return UsageError(f"{self.path}: is being trained by another process now; wait for it to end, or stop "
                              "it and resume then")
        return UsageError(f"{self.path}: is being trained by process {pid} now; wait for it to end, or stop it "
                          f"(kill -INT {pid}) and resume then")

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def curves_file(self) -> Path:
        return self.path / "curves.png"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, which: str) -> Path:
        return self.checkpoints / f"{which}.npz"

    def has_checkpoint(self, which: str) -> bool:
        """Whether the run holds its ``which`` checkpoint; a folder in its place is refused, not
        taken for a checkpoint that is missing."""
        path = self.checkpoint(which)
        if path.is_dir():
            raise UsageError(f"{path}: is a folder, not a checkpoint file; move it out of the way (the run keeps "
                             f"its {which} checkpoint in a file of that name)")
        return path.is_file()

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    # files
    def write_metrics(self, history: list[dict]) -> None:
        """Rewrite metrics.jsonl and metrics.csv from the full history (atomic, so readers never
        see half a row, and a resumed run's files match its checkpoint)."""
        write_text(self.metrics_file, "".join(json.dumps(row) + "\n" for row in history))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        write_text(self.path / "metrics.csv", text.getvalue())

    def discard_partial_writes(self) -> None:
        """Delete the temporary files of writes that never finished: a process killed mid-write
        (SIGKILL, power cut) leaves its temp file beside the intact previous version."""
        for partial in self.path.rglob(".*.tmp"):
            partial.unlink(missing_ok=True)

    def set_status(self, status: str, **extra) -> None:
        """Rewrite status.json; when and from which config the run started carry over."""
        now = _dt.datetime.now().isoformat(timespec="seconds")
        previous = read_json(self.status_file)
        kept = {key: previous[key] for key in ("started", "config", "overrides")
                if isinstance(previous, dict) and key in previous}
        write_json(self.status_file, {"status": status, "pid": os.getpid(), "started": now, **kept,
                                      "updated": now, **extra})


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> dict | None:
    """A run's JSON file (an object), or None when it is missing, unreadable (a run killed
    mid-way) or holds something else (edited by hand)."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _percent(value) -> str:
    return f"{value:.2%}" if value is not None else "-"


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """A run's summary.json in words, a row each, as train's results and the page's run tab show it."""
    return [
        ("epochs", str(summary["epochs"]) + (" (early stop)" if summary["stopped_early"] else "")),
        ("best validation accuracy", f"{_percent(summary['best_val_acc'])} (epoch {summary['best_epoch']})"),
        ("final validation accuracy", _percent(summary["final_val_acc"])),
        ("test accuracy (best checkpoint)", _percent(summary["test_acc"])),
        ("wall time", f"{summary['wall_seconds']:.1f} s"),
        ("images/s", f"{summary['images_per_s']:,.0f}" if summary["images_per_s"] else "-"),
        ("parameters", f"{summary['params']:,}"),
    ]


def run_summary(checkpoint) -> dict | None:
    """The summary.json of the run a checkpoint lies in; None outside a run, or before its end."""
    run = RunDir.of_checkpoint(checkpoint)
    return read_json(run.summary_file) if run is not None else None


def output_folder(checkpoint, what: str = "") -> Path:
    """Where files made from a checkpoint go: its run directory (subfolder ``what``), or, for a
    checkpoint outside a run, its own folder (subfolder ``<stem>-<what>``)."""
    checkpoint = Path(checkpoint)
    run = RunDir.of_checkpoint(checkpoint)
    if run is not None:
        return run.path / what if what else run.path
    return checkpoint.parent / f"{checkpoint.stem}-{what}" if what else checkpoint.parent


# -- checkpoints ----------------------------------------------------------------------
def array_sha256(array: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write arrays and JSON metadata to ``path`` atomically (temp file, fsync, rename)."""
    # np.ascontiguousarray would turn 0-d arrays (an optimiser's step count) into 1-d ones
    arrays = {k: np.array(v, order="C", copy=True) for k, v in arrays.items()}
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"checkpoint array {k} has dtype object")
    meta = {"format": FORMAT, **meta, "sha256": {k: array_sha256(v) for k, v in arrays.items()}}
    meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_writer(path) as handle:
        np.savez(handle, **arrays, **{META_KEY: meta_bytes})


def damaged_checkpoint_advice(path: Path) -> str:
    """What to use instead of the unreadable checkpoint ``path``: its run's other one, if any."""
    run = RunDir.of_checkpoint(path)
    if run is None or path.stem not in CHECKPOINTS or not run.checkpoint(other_checkpoint(path.stem)).is_file():
        return "Use another checkpoint, or train the run again"
    other = other_checkpoint(path.stem)
    return (f"The run's other checkpoint, {run.checkpoint(other)}, may be intact: give the run with --checkpoint "
            f"{other}, or that file")


def damaged_checkpoint_error(path: Path, what: str, instead: str) -> CheckpointError:
    """A checkpoint whose bytes are cut short or corrupt: ``what`` is wrong with them (an empty
    file is named so), and ``instead`` what to use."""
    empty = not path.exists() or path.stat().st_size == 0
    return CheckpointError(f"{path}: {'empty (0 bytes)' if empty else what}; the file is truncated or corrupt. "
                           f"{instead}")


def load_checkpoint(path, instead: str | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify a checkpoint: ``(arrays, meta)``. Never unpickles anything. ``instead``:
    what to do when the file is damaged (default: use the run's other checkpoint)."""
    path = Path(path)
    instead = instead or damaged_checkpoint_advice(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if is_onnx_file(path):
        raise CheckpointError(f"{path}: is an exported ONNX model; give the run it came from (or its .npz "
                              "checkpoint): of the commands, only predict takes an ONNX model")
    try:
        with open(path, "rb") as handle:
            is_zip = zipfile.is_zipfile(handle)
    except OSError as err:  # else said to be no zip file, its bytes corrupt
        raise CheckpointError(f"{path}: cannot read the checkpoint ({err.strerror or err}); make it readable "
                              f"(chmod a+r {shlex.quote(str(path))}), or copy it to a file you can read") from None
    if not is_zip:  # np.load would otherwise try the bytes as a pickle
        size = path.stat().st_size
        if size and path.suffix.lower() != ".npz":
            raise CheckpointError(f"{path}: is not a checkpoint (a run's checkpoints/best.npz or last.npz); give a run "
                                  "folder or one of its checkpoints")
        raise damaged_checkpoint_error(path, "not a .npz (zip) file", instead)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}  # an object array stops here, unpickled
        if META_KEY not in arrays:
            raise CheckpointError(f"{path}: not an mnistcnn checkpoint (no {META_KEY} entry)")
        for key, value in arrays.items():
            if not isinstance(value, np.ndarray):  # a zip member that is not an .npy array
                raise CheckpointError(f"{path}: entry {key} is not an array; the file is corrupt or foreign")
    except CheckpointError:
        raise
    except ValueError as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            raise CheckpointError(f"{path}: holds an object array, which would need pickle to load; "
                                  "refused (checkpoints hold plain numeric arrays only)") from None
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({err})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, zipfile.LargeZipFile) as err:
        raise damaged_checkpoint_error(path, f"not a valid .npz zip ({err.__class__.__name__})", instead) from None
    except Exception as err:  # zipfile and the npy parser raise a zoo of errors on hostile bytes
        raise CheckpointError(f"{path}: corrupt checkpoint ({err.__class__.__name__}: {err})") from None
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a mapping")
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: its metadata is unreadable ({err})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    sums = meta.get("sha256")
    if not isinstance(sums, dict) or set(sums) != set(arrays):
        raise CheckpointError(f"{path}: the arrays do not match the list in its metadata; the file was altered")
    for key, array in arrays.items():
        if array.dtype.hasobject:
            raise CheckpointError(f"{path}: array {key} has dtype object; refused")
        if array_sha256(array) != sums[key]:
            raise CheckpointError(f"{path}: array {key} fails its SHA-256 check; the file was altered or damaged. "
                                  f"{instead}")
    return arrays, meta


# Files that are pictures by their names: `predict` reads them from a folder; given where a model goes, they
# are a slip (for predict, a swap of its arguments).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
CONFIG_SUFFIXES = (".yaml", ".yml")


def is_config_file(path) -> bool:
    return Path(path).suffix.lower() in CONFIG_SUFFIXES


def is_onnx_file(path) -> bool:
    """An exported ONNX model, told by its name as export writes it: ``.onnx`` in any case."""
    return Path(path).suffix.lower() == ".onnx"


def no_checkpoint_choice(which: str, target, what: str) -> UsageError:
    """--checkpoint given with ``target``, which is ``what`` (a config, a checkpoint file), not a run."""
    return UsageError(f"--checkpoint {which}: {target} is {what}, not a run directory; give the run directory to "
                      f"choose its {which} checkpoint, or leave out --checkpoint")


def not_a_run(folder: Path) -> UsageError:
    """A folder given as a run that is none: what it is (a folder of runs, a sweep's, a run's
    checkpoints/, a folder of pictures) and what to give instead."""

    if folder.suffix.lower() == ".npz":
        return UsageError(f"{folder}: is a folder, not a checkpoint file; give a run folder or one of its checkpoints")
    if folder.name == "checkpoints" and RunDir(folder.parent).config_file.is_file():
        return UsageError(f"{folder}: is the checkpoints folder of the run {folder.parent}; give the run itself, or "
                          f"one of its checkpoints ({folder / 'best.npz'})")
    if SweepDir(folder).is_sweep_folder:
        return UsageError(f"{folder}: is a sweep folder, not a run; each of its trials is one, in "
                          f"{SweepDir(folder).trials}: `{command_line('runs', folder)}` lists them")
    files = in_sight(folder)
    runs = [child for child in files if RunDir(child).config_file.is_file()]
    if runs:
        newest = max(runs, key=lambda run: run.stat().st_mtime)
        return UsageError(f"{folder}: holds run directories, not a run; give one of them, such as {newest} "
                          f"(`{command_line('runs', folder)}` lists them)")
    if any(child.suffix.lower() in PICTURE_SUFFIXES for child in files):
        return UsageError(f"{folder}: is a folder of pictures, not a run; to classify them, the run comes first: "
                          f"{command_line('predict', 'RUN', folder)}")
    return UsageError(f"{folder}: not a run directory (no config.yaml, no checkpoints/); give a folder a run wrote "
                      "(runs/NAME-STAMP): `mnistcnn runs` lists them")


def run_like(path: Path) -> str:
    """The run or checkpoint nearest to a path not found, as a question ("did you mean
    runs/quick-20260101-000000? "), for the slips of copying one: the run's name as `mnistcnn runs`
    lists it (without its runs folder, or a sweep trial's without its sweep's trials/), a checkpoint
    without .npz, a character missing, its name without the stamp or with another (an example's:
    the newest run of that name); "" when none is near."""
    path = Path(path)
    checkpoint = path.with_name(path.name + ".npz")
    if path.name and checkpoint.is_file():
        return f"did you mean {checkpoint}? "
    folders = [path.parent] + ([RUNS_DIR] if path.parent == Path(".") else [])
    folders += [SweepDir(child).trials for folder in list(folders) if folder.is_dir() for child in in_sight(folder)
                if SweepDir(child).is_sweep_folder]
    runs = [child for folder in folders if folder.is_dir() for child in in_sight(folder)
            if RunDir(child).config_file.is_file()]
    name = STAMP.sub("", path.name)
    named = [run for run in runs if run.name == path.name] or \
        [run for run in runs if run.name in difflib.get_close_matches(path.name, [r.name for r in runs], n=1,
                                                                       cutoff=0.8)] or \
        [run for run in runs if run.name.startswith(name + "-")]
    if not named:
        return ""
    return f"did you mean {max(named, key=lambda run: run.stat().st_mtime)}? "


def resolve_checkpoint(target, which: str | None = None) -> Path:
    """A checkpoint path from a run directory (``which`` = best, the default, or last) or a
    checkpoint file (then ``which`` must be None: the file is the choice)."""
    target = Path(target)
    if target.is_dir():
        which = which or "best"
        run = RunDir.open(target)
        path = run.checkpoint(which)
        if not run.has_checkpoint(which):
            other = other_checkpoint(which)
            hint = (f"; try --checkpoint {other}" if run.checkpoint(other).is_file() else
                    f", nor any other checkpoint; {run.train_again()}")
            raise UsageError(f"{target}: the run has no checkpoints/{which}.npz{hint}")
        return path
    if not target.exists():
        raise UsageError(f"{target}: no such run directory or checkpoint; {run_like(target)}`mnistcnn runs` lists "
                         f"the runs in {RUNS_DIR}/")
    if is_config_file(target):
        if RunDir(target.parent).checkpoints.is_dir():  # a run's own config.yaml
            raise UsageError(f"{target}: is the config of the run {target.parent}; give the run directory itself")
        raise UsageError(f"{target}: is a config, not a run or a checkpoint; train it first "
                         f"({command_line('train', target)}) and give the run directory it prints")
    if target.suffix.lower() in PICTURE_SUFFIXES:
        raise UsageError(f"{target}: a {target.suffix} file is a picture, not a run directory or a checkpoint; give "
                         f"the run (runs/NAME-STAMP) or one of its checkpoints; to classify the picture: "
                         f"{command_line('predict', 'RUN', target)}")
    if which is not None:
        raise no_checkpoint_choice(which, target, "an exported ONNX model" if is_onnx_file(target)
                                   else "a checkpoint file")
    return target
