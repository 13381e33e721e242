"""The training loop as a library call. It prints nothing: it reports through callbacks.

Everything a run needs to continue exactly (weights, optimiser state, batch position,
generator states, history) goes into ``checkpoints/last.npz``; ``--resume`` reads it back
and the run goes on as if it had never stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import config as cfg
from .augment import Augment, affine_resample
from .data import BatchIterator, Dataset, Preprocess, load_dataset, split_indices
from .errors import CheckpointError, DataError, NonFiniteError
from .engine.losses import softmax_cross_entropy
from .engine.model import Sequential, check_finite
from .engine.optim import Schedule, make_optimizer
from .engine.fast.parallel import StepRunner, default_workers
from .runs import RunDir, load_checkpoint, save_checkpoint, versions


class Interrupted(Exception):
    """Training stopped on request (SIGINT/SIGTERM) after writing last.npz."""

    def __init__(self, signum: int, checkpoint):
        super().__init__(f"interrupted by signal {signum}")
        self.signum, self.checkpoint = signum, checkpoint


class Callbacks:
    """Override what you want to hear about."""

    def on_start(self, trainer: "Trainer") -> None: ...

    def on_epoch_start(self, epoch: int, batches: int, done: int) -> None: ...

    def on_batch(self, epoch: int, batch: int, batches: int, loss: float, acc: float, images_per_s: float) -> None: ...

    def on_epoch_end(self, row: dict) -> None: ...

    def on_end(self, summary: dict) -> None: ...

    def log(self, message: str) -> None: ...


@dataclass
class Data:
    """The arrays a run trains and evaluates on, from a Dataset and a split."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    split_sha256: str
    files_sha256: dict
    source: str
    verified: bool


def prepare_data(config: dict, dataset: Dataset | None = None, source: str = "<config>") -> Data:
    """Load (or take) the dataset, check it fits the model, and split it."""
    k = cfg.num_classes(config)
    if dataset is None:
        dataset = load_dataset(config["data"]["dir"], num_classes=k)
    want = tuple(config["model"]["input_shape"])
    if dataset.image_shape != want:
        raise DataError(f"{dataset.source}: images are {dataset.image_shape} (H, W, C) but the model takes {want}; "
                        f"set model.input_shape in {source} to {list(dataset.image_shape)} or use matching data")
    d = config["data"]
    split = split_indices(dataset.train_labels, d["validation"], d["split"], config["train"]["seed"], d["train_limit"])
    return Data(dataset.train_images[split.train], dataset.train_labels[split.train],
                dataset.train_images[split.validation], dataset.train_labels[split.validation],
                dataset.test_images, dataset.test_labels, split.digest(), dataset.sha256, dataset.source,
                dataset.verified)


def evaluate(model: Sequential, images: np.ndarray, labels: np.ndarray, transform, batch_size: int = 1000):
    """Mean loss, accuracy and logits of a model over a uint8 image array."""
    logits = model.predict_logits(images, batch_size, transform)
    if len(labels) == 0:
        return float("nan"), float("nan"), logits
    loss, _, _ = softmax_cross_entropy(logits, labels)
    return loss, float((logits.argmax(axis=1) == labels).mean()), logits


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def _rng_from(state: dict) -> np.random.Generator:
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state
    return rng


class Trainer:
    """Trains ``config`` on ``data``, writing into ``run`` (a RunDir, or None for no files)."""

    def __init__(self, config: dict, data: Data, run: RunDir | None = None, callbacks: Callbacks | None = None):
        self.config, self.data, self.run = config, data, run
        self.cb = callbacks or Callbacks()
        t = config["train"]
        seed = t["seed"]
        self.model = Sequential.from_config(config["model"]["layers"], config["model"]["input_shape"],
                                            np.random.default_rng([seed, 0]))
        self.preprocess = Preprocess(**config["data"]["preprocess"]).fit(data.train_x)
        self.augment = Augment(**config["data"]["augment"])
        self.iterator = BatchIterator(len(data.train_x), t["batch_size"], seed, shuffle=True, drop_last=t["drop_last"])
        if len(self.iterator) == 0:
            raise DataError(f"the training split has {len(data.train_x)} images, fewer than one batch of "
                            f"{t['batch_size']} with drop_last; lower train.batch_size")
        opt = dict(t["optimizer"])
        if opt["type"] == "sgd":
            opt = {k: opt[k] for k in ("type", "lr", "momentum", "nesterov")}
        else:
            opt = {k: opt[k] for k in ("type", "lr", "beta1", "beta2", "eps")}
        self.optimizer = make_optimizer({**opt, "weight_decay": t["weight_decay"]})
        self.augment_rng = np.random.default_rng([seed, 1])
        self.dropout_rng = np.random.default_rng([seed, 2])
        self.step = 0
        self.history: list[dict] = []
        self.best_val_acc = -1.0
        self.best_epoch = 0
        self.stale_epochs = 0
        self.epoch_sums = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
        self.stop_signal: int | None = None
        self.resumed_from: list[dict] = []
        self.wall_seconds = 0.0
        self.workers = t["workers"] or default_workers()

    # -- schedule -------------------------------------------------------------------
    @property
    def epochs(self) -> int:
        return self.config["train"]["epochs"]

    def schedule(self) -> Schedule:
        s = self.config["train"]["schedule"]
        return Schedule(self.config["train"]["optimizer"]["lr"], len(self.iterator), self.epochs, **s)

    def request_stop(self, signum: int) -> None:
        """Ask the loop to stop after the current batch (called from a signal handler)."""
        self.stop_signal = signum

    # -- checkpoints ------------------------------------------------------------------
    def _arrays(self) -> dict:
        arrays = dict(self.model.state_dict())
        arrays.update({f"optim.{k}": v for k, v in self.optimizer.state_dict().items()})
        return arrays

    def _meta(self, **extra) -> dict:
        return {
            "config": self.config,
            "versions": versions(),
            "epoch": self.iterator.epoch,
            "step": self.step,
            "iterator": self.iterator.state(),
            "rng": {"augment": _rng_state(self.augment_rng), "dropout": _rng_state(self.dropout_rng)},
            "epoch_sums": self.epoch_sums,
            "history": self.history,
            "best": {"val_acc": self.best_val_acc, "epoch": self.best_epoch, "stale_epochs": self.stale_epochs},
            "preprocess": self.preprocess.to_config(),
            "split_sha256": self.data.split_sha256,
            "data_sha256": self.data.files_sha256,
            "resumed": self.resumed_from,
            "wall_seconds": self.wall_seconds,
            "interrupted": False,
            **extra,
        }

    def save(self, which: str, **extra):
        if self.run is None:
            return None
        path = self.run.checkpoint(which)
        save_checkpoint(path, self._arrays(), self._meta(**extra))
        return path

    def restore(self, arrays: dict, meta: dict, path) -> None:
        """Continue from a checkpoint written by this trainer's ``save``."""
        check_compatible(self.model, arrays, meta, path)
        self.model.load_state_dict(arrays)
        optim = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
        if optim:
            self.optimizer.load_state_dict(optim)
        if meta.get("split_sha256") != self.data.split_sha256:
            raise CheckpointError(f"{path}: was trained on another data split (its hash differs); resume with the "
                                  "run's own config and data")
        self.iterator.load_state(meta["iterator"])
        self.augment_rng = _rng_from(meta["rng"]["augment"])
        self.dropout_rng = _rng_from(meta["rng"]["dropout"])
        self.step = int(meta["step"])
        self.history = list(meta["history"])
        best = meta["best"]
        self.best_val_acc, self.best_epoch, self.stale_epochs = best["val_acc"], best["epoch"], best["stale_epochs"]
        self.epoch_sums = dict(meta["epoch_sums"])
        self.wall_seconds = float(meta.get("wall_seconds", 0.0))
        self.resumed_from = list(meta.get("resumed", []))

    # -- the loop -------------------------------------------------------------------
    def _train_epoch(self, schedule: Schedule) -> None:
        t = self.config["train"]
        x_all, y_all = self.data.train_x, self.data.train_y
        batches = len(self.iterator)
        self.cb.on_epoch_start(self.iterator.epoch, batches, self.iterator.batch)
        started = time.perf_counter() - self.epoch_sums["seconds"]
        params = self.model.params()
        runner = self.runner
        for idx in self.iterator.epoch_batches():
            raw, y = x_all[idx], y_all[idx]
            warp = self.augment.draw(len(y), self.augment_rng) if self.augment.active else None

            def make_batch(lo, hi, raw=raw, warp=warp):  # runs in the worker threads
                batch = self.preprocess(raw[lo:hi])
                return affine_resample(batch, *(p[lo:hi] for p in warp)) if warp is not None else batch

            dropout_state = _rng_state(self.dropout_rng)
            loss, correct, grads = runner.gradients(make_batch, y, self.dropout_rng, t["label_smoothing"])
            if not check_finite(loss, grads):
                where = self.model.locate_non_finite(make_batch(0, len(y)), y, _rng_from(dropout_state),
                                                     t["label_smoothing"])
                raise NonFiniteError(f"non-finite loss or gradient at epoch {self.iterator.epoch + 1}, step "
                                     f"{self.step + 1} (batch {self.iterator.batch}); it first appears in the {where}. "
                                     "Lower train.optimizer.lr; the last good checkpoint is kept")
            lr = schedule(self.step)
            self.optimizer.step(params, grads, lr, run=runner.map)
            self.step += 1
            s = self.epoch_sums
            s["loss"] += loss * len(y)
            s["correct"] += correct
            s["count"] += len(y)
            s["seconds"] = time.perf_counter() - started
            self.cb.on_batch(self.iterator.epoch, self.iterator.batch, batches, s["loss"] / s["count"],
                             s["correct"] / s["count"], s["count"] / max(s["seconds"], 1e-9))
            if self.stop_signal is not None and self.iterator.batch < batches:
                path = self.save("last", interrupted=True)
                raise Interrupted(self.stop_signal, path)

    def _end_epoch(self, schedule: Schedule) -> dict:
        t = self.config["train"]
        s = self.epoch_sums
        val_loss, val_acc, _ = evaluate(self.model, self.data.val_x, self.data.val_y, self.preprocess,
                                        t["eval_batch_size"])
        epoch = self.iterator.epoch  # already advanced: this is the 1-based number of the epoch just done
        row = {"epoch": epoch, "step": self.step, "lr": schedule(max(self.step - 1, 0)),
               "train_loss": s["loss"] / s["count"], "train_acc": s["correct"] / s["count"],
               "val_loss": val_loss, "val_acc": val_acc, "seconds": round(s["seconds"], 3),
               "images_per_s": round(s["count"] / max(s["seconds"], 1e-9), 1)}
        self.history.append(row)
        self.wall_seconds += s["seconds"]
        self.epoch_sums = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
        improved = val_acc > self.best_val_acc + t["early_stopping"]["min_delta"]
        if improved or self.best_val_acc < 0:
            self.best_val_acc, self.best_epoch, self.stale_epochs = val_acc, epoch, 0
        else:
            self.stale_epochs += 1
        if self.run is not None:
            self.run.write_metrics(self.history)
            if self.best_epoch == epoch:
                self.save("best")
            if epoch % t["checkpoint"]["every"] == 0 or epoch >= self.epochs:
                self.save("last")
        return row

    def fit(self) -> dict:
        """Train to ``train.epochs`` (or early stopping); returns the summary."""
        t = self.config["train"]
        schedule = self.schedule()
        self.cb.on_start(self)
        if self.run is not None and not self.run.checkpoint("last").is_file():
            self.save("last")  # from the first moment on, a run always has something to resume
        stopped_early = False
        # overflow is detected and reported by check_finite, not by numpy's warnings
        with StepRunner(self.model, self.workers) as self.runner, np.errstate(over="ignore", invalid="ignore"):
            while self.iterator.epoch < self.epochs:
                patience = t["early_stopping"]["patience"]
                if patience is not None and self.stale_epochs >= patience:
                    stopped_early = True
                    break
                self._train_epoch(schedule)
                row = self._end_epoch(schedule)
                self.cb.on_epoch_end(row)
                if self.stop_signal is not None and self.iterator.epoch < self.epochs:
                    path = self.save("last", interrupted=True)
                    raise Interrupted(self.stop_signal, path)
        return self.finish(stopped_early)

    def finish(self, stopped_early: bool = False) -> dict:
        """Restore the best weights, score the test split once, and summarise."""
        t = self.config["train"]
        if self.run is not None and self.run.checkpoint("best").is_file():
            arrays, _ = load_checkpoint(self.run.checkpoint("best"))
            self.model.load_state_dict(arrays)
        test_loss, test_acc, _ = evaluate(self.model, self.data.test_x, self.data.test_y, self.preprocess,
                                          t["eval_batch_size"])
        last = self.history[-1] if self.history else {}
        images = sum(len(self.data.train_x) if not t["drop_last"] else len(self.iterator) * t["batch_size"]
                     for _ in self.history)
        summary = {
            "name": self.config["name"],
            "status": "finished",
            "epochs": len(self.history),
            "stopped_early": stopped_early,
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "final_val_acc": last.get("val_acc"),
            "test_loss": test_loss,
            "test_acc": test_acc,
            "wall_seconds": round(self.wall_seconds, 2),
            "images_per_s": round(images / self.wall_seconds, 1) if self.wall_seconds else None,
            "params": self.model.num_params(),
            "macs_per_image": self.model.macs(),
            "seed": t["seed"],
            "versions": versions(),
            "split_sha256": self.data.split_sha256,
            "data_sha256": self.data.files_sha256,
            "data_source": self.data.source,
            "data_verified": self.data.verified,
            "split_sizes": {"train": len(self.data.train_x), "validation": len(self.data.val_x),
                            "test": len(self.data.test_x)},
            "resumed": self.resumed_from,
        }
        if self.run is not None:
            self.run.write_json("summary.json", summary)
        self.cb.on_end(summary)
        return summary


def check_compatible(model: Sequential, arrays: dict, meta: dict, path) -> None:
    """Refuse a checkpoint whose arrays do not fit the model (another config)."""
    for key, want in model.state_dict().items():
        if key not in arrays:
            raise CheckpointError(f"{path}: has no array {key}; it was saved from another model config")
        if arrays[key].shape != want.shape:
            raise CheckpointError(f"{path}: array {key} has shape {arrays[key].shape} but the config's model needs "
                                  f"{want.shape}; the checkpoint comes from another config")
        if not np.all(np.isfinite(arrays[key])):
            raise CheckpointError(f"{path}: array {key} holds NaN or infinity")
    extra = [k for k in arrays if (k.startswith("param.") or k.startswith("buffer.")) and k not in model.state_dict()]
    if extra:
        raise CheckpointError(f"{path}: has arrays the config's model does not ({', '.join(extra[:3])}); "
                              "it comes from another config")


def load_model(path, dtype=np.float32):
    """Rebuild a model from a checkpoint alone: ``(model, meta, preprocess)``."""
    arrays, meta = load_checkpoint(path)
    try:
        config = cfg.validate(meta["config"], f"{path} (embedded config)")
        preprocess = Preprocess(**meta["preprocess"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: its metadata lacks {err}; not a complete mnistcnn checkpoint") from None
    model = Sequential.from_config(config["model"]["layers"], config["model"]["input_shape"],
                                   np.random.default_rng(0), dtype)
    check_compatible(model, arrays, meta, path)
    model.load_state_dict(arrays)
    meta["config"] = config
    return model, meta, preprocess


def train(config: dict, runs_dir="runs", callbacks=None, dataset=None, source="<config>"):
    """Create a run directory and train: the one-call library entry point."""
    from .atomic import write_text
    from .config import dump

    data = prepare_data(config, dataset, source)
    run = RunDir.create(runs_dir, config["name"])
    write_text(run.path / "config.yaml", dump(config))
    trainer = Trainer(config, data, run, callbacks)
    return trainer, trainer.fit()
