"""Scoring a trained model on a split: loss, accuracy, per-class table, confusion matrix."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import config as cfg
from .errors import UsageError
from .engine.losses import softmax
from .runs import resolve_checkpoint
from .trainer import evaluate, load_model, prepare_data

SPLITS = ("test", "validation", "train")


def split_arrays(data, split: str):
    return {"test": (data.test_x, data.test_y), "validation": (data.val_x, data.val_y),
            "train": (data.train_x, data.train_y)}[split]


def load_for_target(target, which="best", data_dir=None):
    """(model, meta, preprocess, data, checkpoint path) for a run directory or a checkpoint."""
    path = resolve_checkpoint(target, which)
    model, meta, preprocess = load_model(path)
    config = meta["config"]
    if data_dir is not None:
        config["data"]["dir"] = str(data_dir)
    data = prepare_data(config, source=str(path))
    return model, meta, preprocess, data, path


def per_class(confusion: np.ndarray) -> list[dict]:
    tp = np.diag(confusion).astype(float)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for p, r, f, s in zip(precision, recall, f1, support)]


def score(model, images, labels, preprocess, classes: list[str], batch_size=1000, worst=16) -> dict:
    """Everything ``mnistcnn eval`` reports, as plain data."""
    start = time.perf_counter()
    loss, acc, logits = evaluate(model, images, labels, preprocess, batch_size)
    seconds = time.perf_counter() - start
    k = len(classes)
    predicted = logits.argmax(axis=1)
    confusion = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    probs = softmax(logits.astype(np.float64))
    wrong = np.flatnonzero(predicted != labels)
    confident = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:worst]
    return {
        "loss": loss, "accuracy": acc, "images": int(len(labels)), "seconds": seconds,
        "images_per_s": len(labels) / seconds if seconds else None,
        "classes": classes, "per_class": per_class(confusion), "confusion": confusion.tolist(),
        "misclassified": [{"index": int(i), "true": int(labels[i]), "predicted": int(predicted[i]),
                           "confidence": float(probs[i, predicted[i]])} for i in confident],
    }


def eval_target(target, split="test", which="best", data_dir=None, batch_size=1000) -> tuple[dict, dict, Path]:
    if split not in SPLITS:
        raise UsageError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    model, meta, preprocess, data, path = load_for_target(target, which, data_dir)
    images, labels = split_arrays(data, split)
    result = score(model, images, labels, preprocess, cfg.class_names(meta["config"]), batch_size)
    result.update(split=split, checkpoint=str(path), epoch=meta["epoch"])
    return result, {"model": model, "meta": meta, "preprocess": preprocess, "images": images, "labels": labels}, path
