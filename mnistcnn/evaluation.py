"""Scoring a trained model on a split: loss, accuracy, per-class table, confusion matrix, and
the files ``mnistcnn eval`` leaves beside the run or in --out (a JSON report and two pictures)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import config as cfg
from .atomic import OutputOption, make_folder, written_to
from .data import prepare_data
from .engine.losses import softmax
from .runs import RunDir, output_folder, resolve_checkpoint, write_json
from .trainer import evaluate, load_model

MISCLASSIFIED_SHOWN = 16  # the report's list, and the tiles of its picture


def load_for_target(target, which=None, data_dir=None):
    """(model, meta, preprocess, data, checkpoint path) for a run directory or a checkpoint."""
    path = resolve_checkpoint(target, which)
    model, meta, preprocess = load_model(path)
    config = meta["config"]
    if data_dir is not None:
        config["data"]["dir"] = str(data_dir)
    data = prepare_data(config, source=str(path))
    return model, meta, preprocess, data, path


def checkpoint_label(path) -> str:
    """A checkpoint as a picture's title names it: ``run NAME, checkpoint best.npz`` inside a run
    directory, else its path."""
    path = Path(path)
    run = RunDir.of_checkpoint(path)
    if run is not None:
        return f"run {run.path.name}, checkpoint {path.name}"
    return f"checkpoint {path}"


def per_class(confusion: np.ndarray) -> list[dict]:
    true_positives = np.diag(confusion).astype(float)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    zeros = np.zeros_like(true_positives)
    precision = np.divide(true_positives, predicted, out=zeros.copy(), where=predicted > 0)
    recall = np.divide(true_positives, support, out=zeros.copy(), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=zeros.copy(), where=precision + recall > 0)
    return [{"precision": float(precision[label]), "recall": float(recall[label]), "f1": float(f1[label]),
             "support": int(support[label])} for label in range(len(support))]


def score(plan, images, labels, preprocess, classes: list[str], batch_size=cfg.EVAL_BATCH_SIZE) -> dict:
    """Everything ``mnistcnn eval`` reports about a model run as ``plan``, as plain data."""
    start = time.perf_counter()
    loss, acc, logits = evaluate(plan, images, labels, preprocess, batch_size)
    seconds = time.perf_counter() - start
    return {"loss": loss, "accuracy": acc, "images": int(len(labels)), "seconds": seconds,
            "images_per_s": len(labels) / seconds if seconds else None,
            **logits_report(logits, labels, classes)}


def logits_report(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """From a split's logits (n, classes): the per-class table, the confusion matrix (rows true,
    columns predicted) and the MISCLASSIFIED_SHOWN most confidently misclassified images."""
    num_classes = len(classes)
    predicted = logits.argmax(axis=1)
    confusion = np.bincount(labels * num_classes + predicted, minlength=num_classes ** 2)
    probs = softmax(logits.astype(np.float64))
    wrong = np.flatnonzero(predicted != labels)
    confident = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:MISCLASSIFIED_SHOWN]
    confusion = confusion.reshape(num_classes, num_classes)
    return {
        "classes": classes, "per_class": per_class(confusion), "confusion": confusion.tolist(),
        "misclassified": [{"index": int(i), "true": int(labels[i]), "predicted": int(predicted[i]),
                           "confidence": float(probs[i, predicted[i]])} for i in confident],
    }


def eval_target(target, split="test", which=None, data_dir=None, batch_size=None,
                out_dir=None) -> tuple[dict, np.ndarray]:
    """Score a run's (or a checkpoint's) model on ``split``, ``batch_size`` images at once (None: the
    run's train.eval_batch_size): the report, and the split's images (which ``write_report``
    pictures). ``out_dir``, where the report will go, is made first: a folder that cannot be made
    costs no scoring."""
    model, meta, preprocess, data, path = load_for_target(target, which, data_dir)
    batch_size = batch_size or meta["config"]["train"]["eval_batch_size"]
    if out_dir is not None:
        make_folder(out_dir, _report_option(out_dir))
    images, labels = data.split(split)
    result = score(cfg.fast_plan(model, meta["config"]), images, labels, preprocess, cfg.class_names(meta["config"]),
                   batch_size)
    result.update(split=split, checkpoint=str(path), epoch=meta["epoch"], steps=meta.get("step", 0))
    return result, images


def write_report(result: dict, images: np.ndarray, out_dir=None) -> Path:
    """Write ``eval_target``'s report into ``out_dir`` (None: beside the checkpoint, in its run):
    ``eval-<split>-<checkpoint>.json``, a confusion matrix and the most confidently misclassified
    images, whose paths it adds to ``result["pictures"]``. Returns the JSON file's path."""
    checkpoint = Path(result["checkpoint"])
    option = _report_option(out_dir)
    out_dir = make_folder(out_dir, option) if out_dir is not None else output_folder(checkpoint)
    stem = f"eval-{result['split']}-{checkpoint.stem}"
    title = f"{checkpoint_label(checkpoint)}, {result['split']} split"
    with written_to(option):
        result["pictures"] = [str(p) for p in _eval_pictures(result, images, out_dir / stem, title)]
        write_json(out_dir / f"{stem}.json", result)
    return out_dir / f"{stem}.json"


def _report_option(out_dir) -> OutputOption:
    """eval's --out, the option that chooses where the report goes (--json: nowhere)."""
    return OutputOption("--out", "DIR", given=out_dir is not None, instead="--json")


def _eval_pictures(result: dict, images: np.ndarray, stem: Path, title: str) -> list[Path]:
    """The confusion matrix and the most confidently misclassified images; with none, a picture
    that says so (no picture would leave an earlier evaluation's mistakes under its name)."""
    from .plots import confusion_matrix, image_grid

    classes = result["classes"]
    written = [stem.with_name(f"{stem.name}-{kind}.png") for kind in ("confusion", "misclassified")]
    confusion_matrix(np.asarray(result["confusion"]), classes, written[0], title)
    worst = result["misclassified"]
    # two lines: class names longer than a digit's (Fashion-MNIST's "Ankle boot") overflow a tile's width
    captions = [f"#{m['index']} {m['confidence']:.0%}\n{classes[m['true']]}->{classes[m['predicted']]}"
                for m in worst]
    image_grid(images[[m["index"] for m in worst]], captions, written[1],
               f"{title}: most confidently misclassified (true->predicted)",
               empty=f"no image of the {result['split']} split is misclassified")
    return written
