"""The averaged weights of a run (``train.average``): a model of their own, evaluated and kept.

Averaging begins after ``start`` of the run. From then on, each epoch's validation score, the
best checkpoint and the test score are those of the averaged weights; the training weights go
on unaveraged and are kept in the checkpoints under ``training.`` to resume from. The average
itself (EMA or SWA, its formula and state) is ``engine.optim.WeightAverage``.
"""
from __future__ import annotations

import numpy as np

from .config import random_stream
from .engine.fast.plan import Plan
from .engine.model import Sequential, recompute_batchnorm
from .engine.optim import WeightAverage

# Batchnorm statistics for averaged weights come from this many training images: their mean
# and variance are then as precise as the running averages of training, for a fraction of an epoch.
BATCHNORM_IMAGES = 10_000
TRAINING = "training."
AVERAGE = "average."


class Averaged:
    """``model`` (built like the trained one) and its ``plan`` hold the average when ``ready``."""

    def __init__(self, config: dict, steps_per_epoch: int, model: Sequential, plan: Plan):
        average, train_config = config["train"]["average"], config["train"]
        self.weights = WeightAverage(average["type"], average["decay"])
        self.start_step = int(round(average["start"] * train_config["epochs"] * steps_per_epoch))
        self.model, self.plan = model, plan
        self.batch_size = train_config["batch_size"]
        self.seed = train_config["seed"]

    @property
    def ready(self) -> bool:
        """Whether there are averaged weights yet (before ``start``, the training ones count)."""
        return self.weights.count > 0

    def after_step(self, step: int, params: dict) -> None:
        if self.weights.kind == "ema" and step > self.start_step:
            self.weights.update(params)

    def after_epoch(self, step: int, params: dict, images: np.ndarray, preprocess) -> None:
        """Fold in the epoch's weights (swa), then give the averaged model the current average
        and batchnorm statistics of its own, measured on (unaugmented) training images."""
        if self.weights.kind == "swa" and step > self.start_step:
            self.weights.update(params)
        if not self.ready:
            return
        for key, array in self.model.params().items():
            np.copyto(array, self.weights.average[key])
        images = images[:BATCHNORM_IMAGES]
        starts = list(range(0, len(images), self.batch_size))
        if len(starts) > 1 and len(images) - starts[-1] == 1:
            starts.pop()  # a batch of one image: a batchnorm over one value per channel would fold in a variance of 0
        batches = (preprocess(images[lo:hi]) for lo, hi in zip(starts, starts[1:] + [len(images)]))
        recompute_batchnorm(self.model, batches, random_stream(self.seed, "batchnorm recompute"),
                            self.plan.fold_batchnorm_statistics)

    def checkpoint_arrays(self, training: dict) -> dict:
        """A checkpoint's arrays: the averaged model's as the model's, beside the training
        weights and the average's state."""
        arrays = dict(self.model.state_dict())
        arrays.update({TRAINING + key: value for key, value in training.items()})
        arrays.update({AVERAGE + key: value for key, value in self.weights.state_dict().items()})
        return arrays

    def restore(self, arrays: dict) -> dict:
        """Take the average back from a checkpoint's arrays; returns the training weights'
        arrays (the checkpoint's own when it was written before averaging began)."""
        if AVERAGE + "count" not in arrays:
            return arrays
        self.model.load_state_dict(arrays)
        self.weights.load_state_dict({key[len(AVERAGE):]: value for key, value in arrays.items()
                                      if key.startswith(AVERAGE)})
        return {key[len(TRAINING):]: value for key, value in arrays.items() if key.startswith(TRAINING)}
