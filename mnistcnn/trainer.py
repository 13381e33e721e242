"""The training loop and a run's lifecycle as library calls. Nothing here prints: the loop
reports through callbacks, and ``train_run`` returns how the run ended.

Everything a run needs to continue exactly (weights, optimiser state, batch position,
generator states, history) goes into ``checkpoints/last.npz``; a resumed run reads it back
and goes on as if it had never stopped.
"""
from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from . import config as cfg
from .atomic import write_text
from .augment import Augment, affine_resample
from .averaging import AVERAGE, TRAINING, Averaged
from .data import BatchIterator, Data, Preprocess, recorded_source
from .errors import (CheckpointError, MnistCnnError, NonFiniteError, OutOfMemory, UsageError, WriteError,
                     command_line, signal_name)
from .engine.losses import accuracy, softmax_cross_entropy
from .engine.fast.optim import slot_kinds
from .engine.fast.parallel import StepRunner, planned_workers
from .engine.fast.processes import ProcessStepRunner, WorkerProcessError
from .engine.fast.plan import Plan
from .engine.model import Sequential, check_finite, locate_non_finite
from .engine.optim import Schedule, make_optimizer
from .callbacks import Callbacks, Pruned
from .folders import RUNS_DIR
from .runs import (DIVERGED, RunDir, damaged_checkpoint_advice, is_config_file, load_checkpoint, read_json,
                   save_checkpoint, versions, write_json)
from .words import counted


class Interrupted(Exception):
    """Training stopped on request (SIGINT/SIGTERM) after writing last.npz."""

    def __init__(self, signum: int, checkpoint):
        super().__init__(f"interrupted by signal {signum}")
        self.signum, self.checkpoint = signum, checkpoint


def evaluate(plan: Plan, images: np.ndarray, labels: np.ndarray, transform, batch_size: int = cfg.EVAL_BATCH_SIZE,
             workers: int | None = None, runner=None):
    """Mean loss, accuracy and logits of a model over a uint8 image array, on ``workers`` threads
    (default: one per core; the numbers do not depend on it), or on a training's worker
    processes (``runner``, a ``ProcessStepRunner``)."""
    if isinstance(runner, ProcessStepRunner):
        logits = runner.predict_logits(plan, images, batch_size, transform)
    else:
        logits = plan.predict_logits(images, batch_size, transform, workers)
    if len(labels) == 0:
        return float("nan"), float("nan"), logits
    loss, _ = softmax_cross_entropy(logits, labels)
    return loss, accuracy(logits, labels), logits


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def _rng_from(state: dict) -> np.random.Generator:
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state
    return rng


@dataclass
class EpochSums:
    """The running totals of the epoch in progress; checkpoints keep them, so that a run
    resumed mid-epoch reports the whole epoch."""
    loss: float = 0.0
    correct: int = 0
    count: int = 0
    seconds: float = 0.0

    def add(self, mean_loss: float, correct: int, count: int, seconds: float) -> None:
        self.loss += mean_loss * count
        self.correct += correct
        self.count += count
        self.seconds = seconds

    @property
    def mean_loss(self) -> float:
        return self.loss / self.count

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    @property
    def images_per_s(self) -> float:
        return self.count / max(self.seconds, 1e-9)

    def row(self, epoch: int, step: int, lr: float, val_loss: float, val_acc: float) -> dict:
        """The epoch's row of metrics.csv (``runs.METRIC_COLUMNS``)."""
        return {"epoch": epoch, "step": step, "lr": lr, "train_loss": self.mean_loss, "train_acc": self.accuracy,
                "val_loss": val_loss, "val_acc": val_acc, "seconds": round(self.seconds, 3),
                "images_per_s": round(self.images_per_s, 1)}


def batch_maker(preprocess: Preprocess, raw: np.ndarray, warp):
    """``make(lo, hi)``: rows lo..hi of the training batch ``raw``, preprocessed and warped by
    ``warp`` (an ``Augment.draw``, or None). The step's worker threads call it for their parts."""
    def make(lo: int, hi: int) -> np.ndarray:
        batch = preprocess(raw[lo:hi])
        if warp is None:
            return batch
        return affine_resample(batch, *(p[lo:hi] if p is not None else None for p in warp))
    return make


def optimizer_from(config: dict):
    """The optimiser ``train.optimizer`` names, with only the settings that act with its type."""
    settings = config["train"]["optimizer"]
    used = [key for key in settings if key != "type" and cfg.acts(config, f"train.optimizer.{key}")]
    return make_optimizer({"type": settings["type"], **{key: settings[key] for key in used},
                           "weight_decay": config["train"]["weight_decay"]})


@dataclass
class BestEpoch:
    """The best validation accuracy so far, its epoch, and the epochs since (early stopping)."""
    val_acc: float = -1.0
    epoch: int = 0
    stale_epochs: int = 0

    def update(self, val_acc: float, epoch: int, min_delta: float) -> None:
        if val_acc > self.val_acc + min_delta or self.val_acc < 0:
            self.val_acc, self.epoch, self.stale_epochs = val_acc, epoch, 0
        else:
            self.stale_epochs += 1


def averaged_copy(config: dict, steps_per_epoch: int) -> Averaged | None:
    """A second model and plan for the weights ``train.average`` averages; None without one."""
    if config["train"]["average"]["type"] == "none":
        return None
    model = cfg.build_model(config)
    return Averaged(config, steps_per_epoch, model, cfg.fast_plan(model, config))


def initial_model(config: dict) -> Sequential:
    """The model a config trains from: its layers, with weights drawn from its seed."""
    return cfg.build_model(config, cfg.random_stream(config["train"]["seed"], "weights"))


class Trainer:
    """Trains ``config`` on ``data``, writing into ``run`` (a RunDir, or None for no files)."""

    def __init__(self, config: dict, data: Data, run: RunDir | None = None, callbacks: Callbacks | None = None):
        self.data, self.run = data, run
        self.callbacks = callbacks or Callbacks()
        seed = config["train"]["seed"]
        self.model = initial_model(config)
        workers, blas_threads, parallel = training_threads(config, self.model)
        self.config = {**config, "train": {**config["train"], "workers": workers, "blas_threads": blas_threads,
                                           "parallel": parallel}}
        config, train_config = self.config, self.config["train"]
        self.plan = cfg.fast_plan(self.model, config)
        self.preprocess = Preprocess.for_config(config, data)
        self.augment = Augment.for_config(config)
        self.iterator = BatchIterator(len(data.train_x), train_config["batch_size"], seed,
                                      drop_last=train_config["drop_last"])
        self.optimizer = optimizer_from(config)
        self.augment_rng = cfg.random_stream(seed, "augmentation")
        self.dropout_rng = cfg.random_stream(seed, "dropout")
        self.step = 0
        self.history: list[dict] = []
        self.best = BestEpoch()
        self.epoch_sums = EpochSums()
        self.stop_signal: int | None = None
        self.finishing = False  # in the final evaluation: no batch is left to stop after
        self.finished = False  # summary.json written: the run is whole
        self.resumed_from: list[dict] = []
        self.wall_seconds = 0.0
        self.workers = workers
        self.runner = None  # the StepRunner, while training
        self.averaged = averaged_copy(config, len(self.iterator))

    @property
    def evaluated(self) -> tuple[Sequential, Plan]:
        """The model that is scored and kept: the averaged one once there is an average."""
        if self.averaged is not None and self.averaged.ready:
            return self.averaged.model, self.averaged.plan
        return self.model, self.plan

    @property
    def epochs(self) -> int:
        return self.config["train"]["epochs"]

    def request_stop(self, signum: int) -> None:
        """Ask the loop to stop after the current batch (called from a signal handler)."""
        self.stop_signal = signum

    # -- checkpoints ------------------------------------------------------------------
    def save(self, which: str, **extra):
        if self.run is None:
            return None
        path = self.run.checkpoint(which)
        arrays = dict(self.model.state_dict())
        if self.averaged is not None and self.averaged.ready:
            arrays = self.averaged.checkpoint_arrays(arrays)
        arrays.update({f"optim.{key}": value for key, value in self.optimizer.state_dict().items()})
        save_checkpoint(path, arrays, {**checkpoint_meta(self), **extra})
        return path

    # -- the loop -------------------------------------------------------------------
    def _train_epoch(self, schedule: Schedule) -> None:
        label_smoothing = self.config["train"]["label_smoothing"]
        x_all, y_all = self.data.train_x, self.data.train_y
        batches = len(self.iterator)
        self.callbacks.on_epoch_start(self.iterator.epoch, batches, self.iterator.batch)
        started = time.perf_counter() - self.epoch_sums.seconds
        params = self.model.params()
        runner = self.runner
        for batch_indices in self.iterator.epoch_batches():
            batch_indices = self.augment.repeated(batch_indices)
            y = y_all[batch_indices]
            warp = self.augment.draw(len(y), self.augment_rng) if self.augment.active else None
            make_batch = batch_maker(self.preprocess, x_all[batch_indices], warp)
            dropout_state = _rng_state(self.dropout_rng)
            loss, correct, grads = runner.gradients(make_batch, y, self.dropout_rng, label_smoothing)
            if not check_finite(loss, grads):
                raise non_finite_error(self, make_batch(0, len(y)), y, dropout_state, label_smoothing)
            runner.update(self.optimizer, params, grads, scheduled_lr(schedule, self.optimizer, self.step))
            self.step += 1
            if self.averaged is not None:
                self.averaged.after_step(self.step, params)
            sums = self.epoch_sums
            sums.add(loss, correct, len(y), time.perf_counter() - started)
            self.callbacks.on_batch(self.iterator.epoch, self.iterator.batch, batches, sums.mean_loss,
                                    sums.accuracy, sums.images_per_s)
            if self.stop_signal is not None and self.iterator.batch < batches:
                raise Interrupted(self.stop_signal, self.save("last", interrupted=True))

    def _end_epoch(self, schedule: Schedule) -> dict:
        train_config = self.config["train"]
        sums = self.epoch_sums
        if self.averaged is not None:
            self.averaged.after_epoch(self.step, self.model.params(), self.data.train_x, self.preprocess)
        val_loss, val_acc, _ = evaluate(self.evaluated[1], self.data.val_x, self.data.val_y, self.preprocess,
                                        train_config["eval_batch_size"], self.workers, self.runner)
        epoch = self.iterator.epoch  # already advanced: this is the 1-based number of the epoch just done
        row = sums.row(epoch, self.step, schedule(max(self.step - 1, 0)), val_loss, val_acc)
        self.history.append(row)
        self.wall_seconds += sums.seconds
        self.epoch_sums = EpochSums()
        self.best.update(val_acc, epoch, train_config["early_stopping"]["min_delta"])
        if self.run is not None:
            self.run.write_metrics(self.history)
            if self.best.epoch == epoch:
                self.save("best")
            if epoch % train_config["checkpoint"]["every"] == 0 or epoch >= self.epochs:
                self.save("last")
        return row

    def fit(self) -> dict:
        """Train to ``train.epochs`` (or early stopping); returns the summary."""
        train_config = self.config["train"]
        patience = train_config["early_stopping"]["patience"]
        schedule = Schedule(train_config["optimizer"]["lr"], len(self.iterator), self.epochs,
                            **train_config["schedule"])
        self.callbacks.on_start(self)
        stopped_early = False
        # overflow is detected and reported by check_finite, not by numpy's warnings
        with blas_limit(train_config["blas_threads"]), step_runner(self) as self.runner, \
                np.errstate(over="ignore", invalid="ignore"):
            while self.iterator.epoch < self.epochs:
                if patience is not None and self.best.stale_epochs >= patience:
                    stopped_early = True
                    break
                self._train_epoch(schedule)
                self.callbacks.on_epoch_end(self._end_epoch(schedule))
                if self.stop_signal is not None and self.iterator.epoch < self.epochs:
                    raise Interrupted(self.stop_signal, self.save("last", interrupted=True))
            return self.finish(stopped_early)  # while the runner's workers are there to evaluate

    def finish(self, stopped_early: bool = False) -> dict:
        """Restore the best weights, score the test split once, and summarise."""
        self.finishing = True
        model, plan = self.evaluated
        if self.run is not None and self.run.checkpoint("best").is_file():
            arrays, _ = load_checkpoint(self.run.checkpoint("best"))
            model.load_state_dict(arrays)
        test_loss, test_acc, _ = evaluate(plan, self.data.test_x, self.data.test_y, self.preprocess,
                                          self.config["train"]["eval_batch_size"], self.workers, self.runner)
        summary = summarise(self, test_loss, test_acc, stopped_early)
        if self.run is not None:
            write_json(self.run.summary_file, summary)
        self.finished = True
        self.callbacks.on_end(summary)
        return summary


def training_threads(config: dict, model: Sequential) -> tuple[int, int | None, str]:
    """``(workers, BLAS threads, parallel)``: ``train.workers``, ``train.blas_threads`` and
    ``train.parallel``, or, when workers is null, what the model's size pays for
    (``planned_workers``)."""
    train_config = config["train"]
    if train_config["workers"] is not None:
        return train_config["workers"], train_config["blas_threads"], train_config["parallel"] or "threads"
    workers, blas_threads, parallel = planned_workers(model.macs(), cfg.step_images(config))
    return workers, train_config["blas_threads"] or blas_threads, train_config["parallel"] or parallel


def step_runner(trainer: "Trainer"):
    """The ``StepRunner`` that computes the trainer's steps: threads, or worker processes."""
    train_config = trainer.config["train"]
    if trainer.workers > 1 and train_config["parallel"] == "processes":
        return ProcessStepRunner(trainer.plan, trainer.workers, cfg.step_images(trainer.config),
                                 conv_algorithm=trainer.config["model"]["conv_algorithm"],
                                 eval_batch_size=train_config["eval_batch_size"])
    return StepRunner(trainer.plan, trainer.workers)


def blas_limit(threads: int | None):
    """BLAS limited to ``threads`` while training (a sweep's trial shares the cores); None: as is."""
    return threadpool_limits(threads, "blas") if threads else contextlib.nullcontext()


def scheduled_lr(schedule: Schedule, optimizer, step: int) -> float:
    """The step's learning rate; a one-cycle schedule also sets the optimiser's momentum (or beta1)."""
    momentum = schedule.momentum(step)
    if momentum is not None:
        optimizer.set_momentum(momentum)
    return schedule(step)


def non_finite_error(trainer: Trainer, batch, y, dropout_state: dict, label_smoothing: float) -> NonFiniteError:
    """The error for a step whose loss or gradients are not finite, naming the layer where it
    starts: the batch run again through the plain model with the step's dropout draws."""
    where = locate_non_finite(trainer.model, batch, y, _rng_from(dropout_state), label_smoothing)
    lower = f"{trainer.config['train']['optimizer']['lr'] / 10:g}"
    config = trainer.run.config_file if trainer.run is not None else "CONFIG"
    return NonFiniteError(f"non-finite loss or gradient at epoch {trainer.iterator.epoch + 1}, step "
                          f"{trainer.step + 1} (batch {trainer.iterator.batch}); it first appears in the {where}. "
                          "The learning rate is too high for this net; train again with a lower one, e.g. "
                          f"{command_line('train', config, '--lr', lower)}")


def checkpoint_meta(trainer: Trainer) -> dict:
    """Everything besides the arrays that a checkpoint needs to continue the run exactly."""
    return {
        "config": trainer.config,
        "versions": versions(trainer.workers),
        "epoch": trainer.iterator.epoch,
        "step": trainer.step,
        "iterator": trainer.iterator.state(),
        "rng": {"augment": _rng_state(trainer.augment_rng), "dropout": _rng_state(trainer.dropout_rng)},
        "epoch_sums": asdict(trainer.epoch_sums),
        "history": trainer.history,
        "best": asdict(trainer.best),
        "preprocess": trainer.preprocess.to_config(),
        "split_sha256": trainer.data.split_sha256,
        "data_sha256": trainer.data.files_sha256,
        "resumed": trainer.resumed_from,
        "wall_seconds": trainer.wall_seconds,
        "interrupted": False,
    }


@dataclass
class Position:
    """Where a checkpoint left its training, as ``checkpoint_meta`` wrote it down."""
    planned_epochs: int
    epoch: int
    batch: int
    step: int
    augment_rng: np.random.Generator
    dropout_rng: np.random.Generator
    history: list
    best: BestEpoch
    epoch_sums: EpochSums
    wall_seconds: float
    resumed_from: list
    split_sha256: str | None


def incomplete_metadata(path, err: Exception, instead: str) -> CheckpointError:
    """A checkpoint whose metadata misses a key (``err`` a KeyError) or holds something else there."""
    what = f"lacks {err}" if isinstance(err, KeyError) else f"is unreadable ({err})"
    return CheckpointError(f"{path}: its metadata {what}; not a complete mnistcnn checkpoint. {instead}")


def resume_position(meta: dict, path, instead: str) -> Position:
    """The Position in a checkpoint's metadata; refused in one line when part of it is missing or
    holds something else (a file made by hand, or by another program)."""
    try:
        history = list(meta["history"])
        if not all(isinstance(row, dict) for row in history):
            raise TypeError("history rows are not mappings")
        return Position(
            planned_epochs=int(meta["config"]["train"]["epochs"]), epoch=int(meta["iterator"]["epoch"]),
            batch=int(meta["iterator"]["batch"]), step=int(meta["step"]),
            augment_rng=_rng_from(meta["rng"]["augment"]), dropout_rng=_rng_from(meta["rng"]["dropout"]),
            history=history, best=BestEpoch(**meta["best"]), epoch_sums=EpochSums(**meta["epoch_sums"]),
            wall_seconds=float(meta.get("wall_seconds", 0.0)), resumed_from=list(meta.get("resumed", [])),
            split_sha256=meta.get("split_sha256"))
    except (KeyError, TypeError, ValueError) as err:
        raise incomplete_metadata(path, err, instead) from None


def restore(trainer: Trainer, arrays: dict, position: Position, path) -> None:
    """Put ``trainer`` where the checkpoint at ``path`` (written by ``Trainer.save``, checked by
    ``last_checkpoint``) left off."""
    trainer.model.load_state_dict(trainer.averaged.restore(arrays) if trainer.averaged is not None else arrays)
    optim = {key[len("optim."):]: value for key, value in arrays.items() if key.startswith("optim.")}
    if optim:
        trainer.optimizer.load_state_dict(optim)
    if position.split_sha256 != trainer.data.split_sha256:
        raise CheckpointError(f"{path}: was trained on another data split (its hash differs); resume with the "
                              "run's own config and data")
    trainer.iterator.load_state({"epoch": position.epoch, "batch": position.batch})
    trainer.augment_rng, trainer.dropout_rng = position.augment_rng, position.dropout_rng
    trainer.step = position.step
    trainer.history = position.history
    trainer.best = position.best
    trainer.epoch_sums = position.epoch_sums
    trainer.wall_seconds = position.wall_seconds
    trainer.resumed_from = position.resumed_from


def summarise(trainer: Trainer, test_loss: float, test_acc: float, stopped_early: bool) -> dict:
    """summary.json: the results, and what produced them (data, split, seed, versions, machine)."""
    train_config, data = trainer.config["train"], trainer.data
    last = trainer.history[-1] if trainer.history else {}
    per_epoch = len(trainer.iterator) * train_config["batch_size"] if train_config["drop_last"] else len(data.train_x)
    images = per_epoch * trainer.augment.repeats * len(trainer.history)
    return {
        "name": trainer.config["name"],
        "status": "finished",
        "epochs": len(trainer.history),
        "stopped_early": stopped_early,
        "best_epoch": trainer.best.epoch,
        "best_val_acc": trainer.best.val_acc,
        "final_val_acc": last.get("val_acc"),
        "test_loss": test_loss,
        "test_acc": test_acc,
        "wall_seconds": round(trainer.wall_seconds, 2),
        "images_per_s": round(images / trainer.wall_seconds, 1) if trainer.wall_seconds else None,
        "params": trainer.model.num_params(),
        "macs_per_image": trainer.model.macs(),
        "seed": train_config["seed"],
        "versions": versions(trainer.workers),
        "split_sha256": data.split_sha256,
        "data_sha256": data.files_sha256,
        "data_source": recorded_source(data.source),
        "data_verified": data.verified,
        "split_sizes": data.split_sizes(),
        "resumed": trainer.resumed_from,
    }


# a checkpoint's arrays besides the model's: the training's state, which a resumed run takes back
TRAINING_STATE = ("optim.", TRAINING, AVERAGE)


def check_compatible(arrays: dict, expected: dict[str, np.ndarray], path, whose: str, instead: str,
                     unused=TRAINING_STATE, mismatch: str = "the checkpoint comes from another config") -> None:
    """Refuse a checkpoint whose arrays are not those ``expected`` by ``whose`` (the config's model,
    or a resumed training's state): each there, of its shape and dtype, finite, and none besides
    them but those whose names start with one of ``unused`` (state the caller does not take).
    ``mismatch`` ends the message of an array missing, extra or of another shape: why, and the fix."""
    for key, want in expected.items():
        if key not in arrays:
            raise CheckpointError(f"{path}: has no array {key}, which {whose} needs; {mismatch}")
        array = arrays[key]
        if array.shape != want.shape:
            raise CheckpointError(f"{path}: array {key} has shape {array.shape} but {whose} needs {want.shape}; "
                                  f"{mismatch}")
        if array.dtype != want.dtype:
            raise CheckpointError(f"{path}: array {key} holds {array.dtype} but {whose} needs {want.dtype}; the "
                                  f"checkpoint was not written by mnistcnn: save its arrays as {want.dtype}")
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"{path}: array {key} holds NaN or infinity: the training had diverged when it "
                                  f"was saved. {instead}")
    extra = [key for key in arrays if key not in expected and not key.startswith(unused)]
    if extra:
        raise CheckpointError(f"{path}: has arrays {whose} has no place for ({', '.join(extra[:3])}); {mismatch}")


def training_state(model: Sequential, optimizer, averages: bool, arrays: dict) -> dict[str, np.ndarray]:
    """Arrays shaped as those ``Trainer.save`` writes for ``model`` and ``optimizer`` (with
    ``averages``, the run's ``train.average``), given which of its optional parts the checkpoint
    ``arrays`` keeps: optimiser slots once a step was taken, the average once it has begun."""
    state, params = model.state_dict(), model.params()
    steps = arrays.get("optim.steps")
    stepped = steps is not None and steps.shape == () and steps.dtype.kind in "iu" and int(steps) > 0
    kept = {key.split(".")[1] for key in arrays if key.startswith("optim.") and key.count(".") > 1}
    # SGD's velocity exists only while its momentum is on, which a one-cycle schedule may change
    kinds = [kind for kind in optimizer.slots if kind in kept or (stepped and kind in slot_kinds(optimizer))]
    optim = {"optim.steps": np.array(0, np.int64),
             **{f"optim.{kind}.{key}": value for kind in kinds for key, value in params.items()}}
    if not averages or AVERAGE + "count" not in arrays:
        return {**state, **optim}
    average = {AVERAGE + "count": np.array(0, np.int64), **{AVERAGE + key: value for key, value in params.items()}}
    return {**state, **{TRAINING + key: value for key, value in state.items()}, **average, **optim}


def fitted_preprocess(settings, config: dict) -> Preprocess:
    """The preprocessing a checkpoint keeps (``Preprocess.to_config``): its config's
    ``data.preprocess``, fitted; TypeError or ValueError when it is something else."""
    preprocess = Preprocess(**settings)
    wanted = config["data"]["preprocess"]
    if (preprocess.type, preprocess.threshold) != (wanted["type"], wanted["threshold"]):
        raise ValueError(f"preprocess {settings} is not the config's data.preprocess")
    if preprocess.type == "standardize" and not (np.isfinite(float(preprocess.mean)) and float(preprocess.std) > 0):
        raise ValueError(f"preprocess {settings} has no mean, or no std above 0")
    return preprocess


def load_model(path, dtype=np.float32):
    """Rebuild a model from a checkpoint alone: ``(model, meta, preprocess)``."""
    arrays, meta = load_checkpoint(path)
    instead = damaged_checkpoint_advice(Path(path))
    try:
        if not isinstance(meta["config"], dict):
            raise TypeError("its config is not a mapping")
        config = cfg.from_raw(meta["config"], f"{path} (embedded config)", of_run=True)
        preprocess = fitted_preprocess(meta["preprocess"], config)
        meta["epoch"], meta["step"] = int(meta["epoch"]), int(meta.get("step", 0))
    except (KeyError, TypeError, ValueError) as err:
        raise incomplete_metadata(path, err, instead) from None
    model = cfg.build_model(config, np.random.default_rng(0), dtype)
    # a checkpoint holds the float32 arrays that training keeps; a model of another dtype takes them cast
    saved = {key: value.astype(np.float32, copy=False) for key, value in model.state_dict().items()}
    check_compatible(arrays, saved, path, "the config's model", instead)
    model.load_state_dict(arrays)
    meta["config"] = config
    return model, meta, preprocess


def load_run_config(run: RunDir, flags: dict | None = None) -> tuple[dict, Path]:
    """The config a run trained with, and the file it was read from: the run's config.yaml or,
    when that was deleted, the copy its last (else best) checkpoint keeps."""
    path = run.config_file
    if path.is_file():
        return cfg.load_config(path, flags=flags, of_run=True), path
    for which in ("last", "best"):
        if run.checkpoint(which).is_file():
            _, meta = load_checkpoint(run.checkpoint(which))
            if not isinstance(meta.get("config"), dict):
                raise CheckpointError(f"{run.checkpoint(which)}: its metadata lacks the config; not a complete "
                                      "mnistcnn checkpoint")
            source = f"{run.checkpoint(which)} (embedded config)"
            return cfg.from_raw(meta["config"], source, flags=flags, of_run=True), run.checkpoint(which)
    raise UsageError(f"{run.path}: has no config.yaml and no checkpoint that keeps one; give a config file instead")


RESUME_OPTIONS = ("--epochs", "--data-dir")  # a run goes on with its own config, but these may change


def config_to_resume(run_path, flags: dict, config_path=None, sets=(), runs_dir_given=False
                     ) -> tuple[dict, Path, RunDir]:
    """The config to continue the run at ``run_path`` with, the file it was read from, and the
    run; ``flags`` may change only RESUME_OPTIONS: a config file, --set and --runs-dir are refused."""
    run_path, run_of_checkpoint = Path(run_path), RunDir.of_checkpoint(run_path)
    if run_path.is_file() and run_of_checkpoint is not None:  # a run's checkpoint, as Lightning's ckpt_path takes
        if run_path != run_of_checkpoint.checkpoint("last"):
            raise UsageError(f"{run_path}: a run goes on from its last checkpoint only: "
                             f"{command_line('train', '--resume', run_of_checkpoint.path)}")
        run_path = run_of_checkpoint.path
    refused = [f"CONFIG ({config_path})"] * bool(config_path) + ["--set"] * bool(sets)
    refused += [option for option, (_, value) in flags.items() if value is not None and option not in RESUME_OPTIONS]
    refused += ["--runs-dir"] * runs_dir_given
    if refused:
        raise UsageError(f"--resume continues a run with its own config, in its own folder: {', '.join(refused)} "
                         f"cannot change it (only {' and '.join(RESUME_OPTIONS)} may); to train with other "
                         f"settings, start a new run with them: {command_line('train', RunDir(run_path).config_file)}"
                         " ...")
    run = RunDir.open(run_path)
    if run.being_trained:  # said before the data loads; train_run's lock decides
        raise run.busy_error()
    config, source = load_run_config(run, flags)
    check_resumable(run, config["train"]["epochs"])  # before anything is printed
    last_checkpoint(run, config, source)
    return config, source, run


def last_checkpoint(run: RunDir, config: dict, source) -> tuple[dict, dict, Position]:
    """``(arrays, meta, position)`` of the checkpoint a run resumes from, refused unless they are
    the state of training ``config`` (read from ``source``); a damaged one cannot be replaced."""
    path, instead = run.checkpoint("last"), f"A run goes on from its last checkpoint only: {run.train_again()}"
    arrays, meta = load_checkpoint(path, instead)
    expected = training_state(cfg.build_model(config), optimizer_from(config),
                              config["train"]["average"]["type"] != "none", arrays)
    edited = isinstance(meta.get("config"), dict) and meta["config"].get("model") != config["model"]
    mismatch = (f"{source} was edited since the run trained (its model is another): undo the edit, or train it as a "
                f"new run: {command_line('train', source)}" if edited else "the checkpoint comes from another config")
    check_compatible(arrays, expected, path, f"training with {source}", instead, unused=(), mismatch=mismatch)
    return arrays, meta, resume_position(meta, path, instead)


def config_of_target(target, overrides=(), data_dir=None) -> tuple[dict, Path, RunDir | None]:
    """The config of a config file (changed by ``overrides``, --set assignments) or of a run
    directory, as it trained; the file it was read from; and the run (None for a config file)."""
    target, flags = Path(target), cfg.data_dir_flag(data_dir)
    if not target.exists() and not is_config_file(target):
        raise UsageError(f"{target}: no such run folder or config file; `mnistcnn runs` lists the runs, "
                         f"{cfg.ready_made()} holds ready-made configs")
    if not target.is_dir():
        return cfg.load_config(target, overrides, flags), target, None
    if overrides:
        raise UsageError(f"--set changes a config; {target} is a run, pictured as it trained: give a config file, "
                         "e.g. the run's config.yaml, with --set")
    run = RunDir.open(target)
    config, source = load_run_config(run, flags)
    return config, source, run


# -- a run's lifecycle --------------------------------------------------------------------
@dataclass
class Outcome:
    """How a run ended: finished (with its summary), stopped by a signal, or pruned."""

    run: RunDir
    summary: dict | None = None
    signal: int | None = None  # also set when the run ended anyway (pruned, or in its last batch)
    checkpoint: Path | None = None  # written when the run stopped; None when a second signal cut it short
    pruned: str | None = None  # why a callback ended the run


class StopOnSignal:
    """SIGINT/SIGTERM ask the trainer to stop after the current batch; a second one, or one
    during the final evaluation, stops at once (last.npz is as the last save left it); one
    after the summary is written only waits for the run's last files."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def handle(self, signum, frame):
        if self.trainer.finished:  # the run is whole: its status and curves are written all the same
            self.trainer.stop_signal = self.trainer.stop_signal or signum
            return
        if self.trainer.stop_signal is not None or self.trainer.finishing:  # nothing to wait for
            if self.trainer.stop_signal is None:
                self.trainer.stop_signal = signum  # the exit code tells SIGTERM from Ctrl-C
            raise KeyboardInterrupt
        self.trainer.request_stop(signum)

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def train_run(config: dict, data: Data, callbacks: Callbacks | None = None, *, runs_dir=RUNS_DIR,
              resume: RunDir | None = None, config_path=None, overrides=(),
              stop_on_signals: bool = False) -> Outcome:
    """Train in a new run directory under ``runs_dir``, or continue the run ``resume``.

    Writes config.yaml, keeps status.json up to date (running, then finished, interrupted, pruned
    or failed; with the config file and the ``overrides`` given to it) and leaves summary.json and
    curves.png. A signal (with ``stop_on_signals``) ends the run with a checkpoint and returns
    an Outcome without summary, as does a callback's ``Pruned``; errors are raised after the
    status says failed. A new run's folder is set up out of sight (``RunDir.create``) and given its
    name once it holds its config, its status and a first last.npz, so that one killed meanwhile
    leaves no folder that commands see; when the run stops (an error, a signal) before it is open
    (its callbacks told), the folder is removed again.
    """
    callbacks = callbacks or Callbacks()
    if resume is None:
        trainer = Trainer(config, data, callbacks=callbacks)  # refuses what cannot train before a folder exists
        trainer.run = RunDir.create(runs_dir, config["name"])
    with (resume or trainer.run).training_lock():
        try:
            if resume is not None:
                trainer = _resumed_trainer(resume, config, data, callbacks)
            else:
                write_text(trainer.run.config_file, cfg.dump(trainer.config))  # with the threads it chose
            trainer.run.set_status("running", **_started_from(trainer.run, config_path, overrides))
            if resume is None:
                trainer.save("last")  # from the first moment it is seen, a run has something to resume
                trainer.run.publish()
            callbacks.on_open(trainer.run, trainer.resumed_from[-1] if resume is not None else None)
        except BaseException:
            if resume is None:  # a new run stopped (a signal, a full disk) before it held anything to resume
                trainer.run.discard()
            raise
        # a run trained longer is no longer finished; its end writes a new summary
        trainer.run.summary_file.unlink(missing_ok=True)
        return _fit(trainer, stop_on_signals)


def _started_from(run: RunDir, config_path, overrides) -> dict:
    """What status.json says changed the run's config: the config file and its overrides
    (``config.given_options``); for a resume, the overrides the run started with, each option
    given again (--epochs) replaced."""
    if config_path:
        return {"config": str(config_path), "overrides": list(overrides)}
    if not overrides:
        return {}
    given = {override.split(" ", 1)[0] for override in overrides}
    before = (read_json(run.status_file) or {}).get("overrides", [])
    return {"overrides": [override for override in before if override.split(" ", 1)[0] not in given] + list(overrides)}


def _fit(trainer: Trainer, stop_on_signals: bool) -> Outcome:
    """Train a run that is open and marked running, and record how it ended."""
    run = trainer.run
    try:
        with StopOnSignal(trainer) if stop_on_signals else contextlib.nullcontext():
            summary = trainer.fit()
            run.set_status("finished")
            write_curves(trainer)  # a signal now is noted, not obeyed: the run is whole
    except Interrupted as stop:
        # the epoch counted from 1, as the progress bar and the resume line count it
        _record_end(trainer, "interrupted", f"by {signal_name(stop.signum)} at epoch "
                    f"{trainer.iterator.epoch + 1}, batch {trainer.iterator.batch}/{len(trainer.iterator)}; checkpoint "
                    f"{stop.checkpoint}",
                    curves=True, epoch=trainer.iterator.epoch + 1, batch=trainer.iterator.batch,
                    batches=len(trainer.iterator))
        return Outcome(run, signal=stop.signum, checkpoint=stop.checkpoint)
    except KeyboardInterrupt:  # a second signal, or one in the final evaluation: last.npz is as the last save left it
        _record_end(trainer, "interrupted", "by a signal that stopped it at once (a second one, or one during the "
                    "final evaluation); checkpoints/last.npz is the last one saved")
        return Outcome(run, signal=trainer.stop_signal or signal.SIGINT)
    except Pruned as stop:
        _record_end(trainer, "pruned", str(stop), curves=True, epoch=trainer.iterator.epoch, reason=str(stop))
        return Outcome(run, pruned=str(stop), signal=trainer.stop_signal)
    except NonFiniteError as err:
        _record_end(trainer, "failed", str(err), curves=True, reason=DIVERGED)
        raise
    except WorkerProcessError as err:
        _record_end(trainer, "failed", f"{err}\n{err.details}".strip(), curves=True, reason=str(err))
        raise WorkerProcessError(f"{err}; {_then_go_on(run)}" + (" (its traceback is in train.log)" if err.details
                                                                    else ""), err.details) from None
    except WriteError as err:  # a full disk, say: once there is room, the run goes on
        if trainer.finished:  # its summary is written: only a picture after it failed
            raise
        _record_end(trainer, "failed", str(err), reason=str(err))
        raise WriteError(f"{err}; then {_then_go_on(run)}") from None
    except MemoryError as err:  # numpy's, for an array the batch needed
        _record_end(trainer, "failed", f"out of memory: {err}", reason="out of memory")
        batch = trainer.config["train"]["batch_size"]
        raise OutOfMemory(f"out of memory in training ({err}); train with smaller batches: "
                          f"{command_line('train', run.config_file, '--batch-size', max(1, batch // 4))}") from None
    except BaseException as err:
        if not trainer.finished:  # a run whose summary is written stays finished
            _record_end(trainer, "failed", f"{type(err).__name__}: {err}")
        raise
    return Outcome(run, summary, signal=trainer.stop_signal)


def _then_go_on(run: RunDir) -> str:
    """How a run that failed goes on: from its last checkpoint, or else from the start."""
    if run.checkpoint("last").is_file():
        return f"go on from the run's last checkpoint: {command_line('train', '--resume', run.path)}"
    return run.train_again()


def check_resumable(run: RunDir, epochs: int) -> bool:
    """Refuse to resume a run without a last checkpoint, or a finished run unless ``epochs`` goes
    past what it trained; returns whether the run had finished (and is being trained longer)."""
    if not run.has_checkpoint("last"):
        raise UsageError(f"{run.path}: has no checkpoints/last.npz to resume from; {run.train_again()}")
    if not run.finished:
        return False
    trained = (read_json(run.summary_file) or {}).get("epochs", 0)
    if epochs <= trained:
        raise UsageError(f"{run.path}: finished after {counted(trained, 'epoch')}; there is nothing to resume. To "
                         f"train it longer: {command_line('train', '--resume', run.path, '--epochs', 'N')}, with N "
                         f"over {trained}")
    return True


def _resumed_trainer(run: RunDir, config: dict, data: Data, callbacks: Callbacks) -> Trainer:
    """A trainer at the place checkpoints/last.npz left off; ``config`` may plan more epochs."""
    run.discard_partial_writes()
    arrays, meta, position = last_checkpoint(run, config, run.config_file)
    trainer = Trainer(config, data, run, callbacks)
    restore(trainer, arrays, position, run.checkpoint("last"))
    planned = position.planned_epochs
    if check_resumable(run, config["train"]["epochs"]):
        trainer.best.stale_epochs = 0  # a run that stopped early gets its patience anew for the extra epochs
    trainer.resumed_from.append({"from_epoch": position.epoch, "from_batch": position.batch,
                                 "batches": len(trainer.iterator),
                                 "epochs": [planned, config["train"]["epochs"]],
                                 "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if (planned != config["train"]["epochs"] or cfg.upgrade_run_config(meta["config"]) is not meta["config"]
            or not run.config_file.is_file()):  # read from the checkpoint: written back
        write_text(run.config_file, cfg.dump(trainer.config))
    return trainer


def _record_end(trainer: Trainer, status: str, why: str, curves: bool = False, **extra) -> None:
    """status.json, train.log (through the callbacks) and the curves of a run that stopped before
    its end. Best effort: a full disk here must not mask why the run stopped."""
    with contextlib.suppress(MnistCnnError, OSError):
        trainer.run.set_status(status, **extra)
        trainer.callbacks.on_stop(status, why)
        if curves:
            write_curves(trainer)


def write_curves(trainer: Trainer) -> None:
    """curves.png in the run directory, once there is an epoch to draw."""
    if trainer.history:
        from .plots import training_curves
        training_curves(trainer.history, trainer.run.curves_file, trainer.config["name"])
