"""What a training run tells the world as it goes: the ``Callbacks`` a trainer calls, ``Pruned``
(a callback ending a run early), and ``RunLog``, which keeps a run's train.log. Light to import:
the command line builds its progress display on them without loading the trainer or the fast plan."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from .words import counted

if TYPE_CHECKING:
    from .runs import RunDir
    from .trainer import Trainer


class Pruned(Exception):
    """Raised by a callback to end the run early because it is not worth more epochs (a sweep's
    pruner); the run keeps its checkpoints and its status says pruned, with this message."""


class Callbacks:
    """Override what you want to hear about."""

    def on_open(self, run: RunDir, resumed: dict | None) -> None:
        """The run directory is ready; ``resumed`` is where a resumed run continues from."""

    def on_start(self, trainer: "Trainer") -> None: ...

    def on_epoch_start(self, epoch: int, batches: int, done: int) -> None: ...

    def on_batch(self, epoch: int, batch: int, batches: int, loss: float, acc: float, images_per_s: float) -> None: ...

    def on_epoch_end(self, row: dict) -> None:
        """After the epoch's checkpoints are written; may raise ``Pruned`` to end the run."""

    def on_end(self, summary: dict) -> None: ...

    def on_stop(self, status: str, why: str) -> None:
        """The run ended before its last epoch: interrupted, pruned or failed, and ``why``."""


class RunLog(Callbacks):
    """Keeps train.log in the run directory: where the run started or resumed, its data, a line
    per epoch and the result. ``show`` is where a subclass shows the lines too (the CLI prints)."""

    def __init__(self):
        self.log_file = None
        self.epochs = 0

    def show(self, message: str) -> None:
        """Nothing here; the command line prints."""

    def log(self, message: str, show: bool = True) -> None:
        if self.log_file:
            try:
                self.log_file.write(message + "\n")
                self.log_file.flush()
            except OSError as err:
                from .atomic import write_error
                raise write_error(Path(self.log_file.name), err) from None
        if show:
            self.show(message)

    def close(self) -> None:
        if self.log_file:
            with contextlib.suppress(OSError):
                self.log_file.close()
            self.log_file = None

    def on_open(self, run, resumed):
        self.log_file = open(run.log_path, "a", encoding="utf-8")
        if resumed is None:
            self.log(f"run directory: {run.path}")
            return
        planned, epochs = resumed["epochs"]
        self.log(f"resuming {run.path} at epoch {resumed['from_epoch'] + 1}, batch {resumed['from_batch']}/"
                 f"{resumed['batches']}"
                 + (f"; epochs {planned} -> {epochs}" if planned != epochs else ""))

    def on_start(self, trainer):
        self.epochs = trainer.epochs
        data = trainer.data
        self.log(f"data: {data.source} ({'verified MNIST' if data.verified else 'unverified'}); train "
                 f"{len(data.train_x)}, validation {len(data.val_x)}, test {len(data.test_x)}")
        train_config = trainer.config["train"]
        self.log(f"workers: {threads_words(trainer.workers, train_config['blas_threads'], train_config['parallel'])}")

    def on_epoch_end(self, row):
        self.log(f"epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f} acc "
                 f"{row['train_acc']:.2%} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%} | "
                 f"lr {row['lr']:.3g} | {row['seconds']:.1f} s, {row['images_per_s']:,.0f} img/s")

    def on_stop(self, status, why):
        self.log(f"{status}: {why}", show=False)  # the command says it in its own words

    def on_end(self, summary):
        self.log(f"done: best val acc {summary['best_val_acc']:.2%} (epoch {summary['best_epoch']}), "
                 f"test acc {summary['test_acc']:.2%}, {summary['wall_seconds']:.1f} s", show=False)


def threads_words(workers: int, blas_threads: int | None, parallel: str = "threads") -> str:
    """How a run spreads each batch over the cores, in words: for train.log and ``--dry-run``."""
    if workers > 1 and parallel == "processes":
        return (f"{workers} workers (this process and {counted(workers - 1, 'worker process', 'worker processes')}), "
                "each with a share of every batch and one BLAS thread")
    if workers > 1:
        return f"{workers} worker threads, each with a share of every batch and one BLAS thread"
    if not blas_threads:
        return "1 worker thread with the BLAS default threads"
    return f"1 worker thread with {counted(blas_threads, 'BLAS thread')}"
