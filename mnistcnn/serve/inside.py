"""What the page shows of a model, computed by the engine: the probabilities of a picture (the fast
plan, as ``mnistcnn eval`` scores), every layer's activations, the arithmetic behind one value
of a conv layer, and the gradients of a class's logit (the plain engine's layers, forward and
backward); and, for the run tab, the test split's confusion matrix and worst mistakes.

Arrays travel to the page as base64 uint8 (``encode_map``): a feature map is drawn pixel for
pixel, and the numbers a learner reads (statistics, one value's arithmetic, the saliency map)
travel as numbers.
"""
from __future__ import annotations

import base64
import functools
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import config as cfg
from ..colour_scale import colour_scale
from ..data import Preprocess
from ..engine import functional as F
from ..engine.fast.plan import Plan
from ..engine.layers import BatchNorm, Conv2D, Dropout
from ..engine.losses import accuracy
from ..engine.model import Sequential
from ..evaluation import checkpoint_label, load_for_target, logits_report
from ..layer_report import layer_words, output_statistics, statistics
from ..predict import (DOUBT_ADVICE, DRAWN_ADVICE, LOW_CONFIDENCE, ONE_COLOUR, SIDE, TOP, check_digit_model,
                       classify, prepare, read_grey)
from ..runs import PICTURE_SUFFIXES, run_summary, summary_rows
from ..trainer import evaluate

MAX_PICTURE_PIXELS = 25_000_000  # a phone photo passes; more is refused by the picture's header
CELL_IMAGES = 60  # test images shown for a cell of the confusion matrix
# layers whose arithmetic differs in training (dropout's masks, batchnorm's batch statistics): a
# trace runs them as in evaluation, and every other layer "in training" only so that it keeps
# what its backward pass needs (relu's mask)
TRAINING_DIFFERS = (BatchNorm, Dropout)
# what each doubt means and what to do, as the page says it under the prediction: an uploaded
# picture in predict's words (the page has no --min-confidence), a drawing in the pad's
PAGE_ADVICE = {"picture": {**DOUBT_ADVICE, LOW_CONFIDENCE: DRAWN_ADVICE[LOW_CONFIDENCE]}, "drawing": DRAWN_ADVICE}


@dataclass
class Served:
    """A trained model loaded once: the plain engine (activations, arithmetic, gradients), the
    fast plan (probabilities), how its inputs are made, and its run's test split. ``worker``: the
    one thread that computes, one request at a time: the layers and the plan are shared, and a
    picture's reading takes memory that grows with its pixels, which reads at once would add up and
    which each thread's allocator would keep."""

    model: Sequential
    plan: Plan
    preprocess: Preprocess
    meta: dict
    checkpoint: Path
    test_x: np.ndarray
    test_y: np.ndarray
    worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "mnistcnn-serve"))
    test_logits: np.ndarray | None = None

    @property
    def classes(self) -> list[str]:
        return cfg.class_names(self.meta["config"])


def open_model(target, which: str | None = None, data_dir=None) -> Served:
    """A run directory's (or a checkpoint's) model, ready to serve."""
    model, meta, preprocess, data, path = load_for_target(target, which, data_dir)
    check_digit_model(model, "serve", target)
    return Served(with_input_gradient(model), cfg.fast_plan(model, meta["config"]), preprocess, meta, path,
                  data.test_x, data.test_y)


def with_input_gradient(model: Sequential) -> Sequential:
    """The model with its first layer computing the gradient at the image too (a model skips it in
    training, where nothing upstream wants it; a saliency map is that gradient)."""
    model.layers[0].needs_input_grad = True
    return model


@functools.cache
def upload_formats() -> tuple[str, ...]:
    """Pillow's names of the formats predict takes by their files' names (PICTURE_SUFFIXES): no
    other of its parsers, each a way in, meets a stranger's bytes."""
    from PIL import Image

    return tuple(sorted({Image.registered_extensions()[suffix] for suffix in PICTURE_SUFFIXES}))


def read_picture(data: bytes, name: str = "upload") -> tuple[np.ndarray, str | None]:
    """A picture's bytes -> (the uint8 (28, 28) image ``mnistcnn predict`` makes of it, its doubt);
    ``name``: what messages call it."""
    return prepare(read_grey(io.BytesIO(data), MAX_PICTURE_PIXELS, name=name, formats=upload_formats()))


def encode_image(image: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(image, np.uint8).tobytes()).decode("ascii")


def decode_image(text: str) -> np.ndarray:
    """A 28x28 image as ``encode_image`` sent it -> uint8 (28, 28); ValueError if it is not one."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) != SIDE * SIDE:
        raise ValueError(f"an image is {SIDE * SIDE} bytes (28x28 grey levels), got {len(raw)}")
    return np.frombuffer(raw, np.uint8).reshape(SIDE, SIDE)


def encode_map(values: np.ndarray, signed: bool | None = None) -> dict:
    """One example's layer output, (H, W, C) or (units,), as codes 0 to 255 for the page's canvases:
    base64 uint8, channels first; ``low`` and ``high`` are the values 0 and 255 stand for, on the
    scale inspect-layer draws with (``colour_scale``: one for the whole layer, so that channels
    compare); ``signed``: that scale is symmetric about 0, which 127.5 stands for, and the page
    draws it with its diverging colours. ``signed=True``: signed whatever the values (gradients)."""
    a = values.astype(np.float64)
    low, high, signed = colour_scale(a, signed)
    span = high - low
    scaled = (a - low) * (255 / span) if span > 0 else np.full(a.shape, 127.5 if signed else 0.0)
    if a.ndim == 3:
        scaled = np.moveaxis(scaled, -1, 0)
    data = np.rint(scaled).astype(np.uint8).tobytes()
    return {"shape": list(values.shape), "low": low, "high": high, "signed": signed,
            "data": base64.b64encode(data).decode("ascii")}


def describe_layers(model: Sequential) -> list[dict]:
    """Each layer as the page titles it: name, type, what it does (inspect-layer's words), output
    shape, parameters, and for image-shaped layers the conv whose filters made its channels."""
    described, conv = [], None
    for index, layer in enumerate(model.layers):
        conv = index if isinstance(layer, Conv2D) else conv
        report = {"index": index, "name": layer.name, "type": layer.type_name, "config": layer.get_config(),
                  "input_shape": [1, *layer.input_shape]}
        described.append({
            "index": index, "name": layer.name, "type": layer.type_name, "words": layer_words(report),
            "shape": list(layer.output_shape), "params": layer.num_params(),
            "filters_from": conv if len(layer.output_shape) == 3 else None,
        })
    return described


def trace(model: Sequential, x: np.ndarray) -> tuple[list[np.ndarray], list]:
    """Every layer's output for a float batch ``x`` and the caches its backward pass needs, in
    evaluation's arithmetic (see TRAINING_DIFFERS)."""
    outputs, caches = [], []
    for layer in model.layers:
        x, cache = layer.forward_pass(x, training=not isinstance(layer, TRAINING_DIFFERS))
        outputs.append(x)
        caches.append(cache)
    return outputs, caches


def model_input(served: Served, image: np.ndarray) -> np.ndarray:
    """A uint8 (28, 28) image as the model takes it: a float batch of one, preprocessed."""
    return served.preprocess(image[None, :, :, None])


def predict_picture(served: Served, image: np.ndarray, doubt: str | None) -> dict:
    """``mnistcnn predict``'s answer for a prepared image (probabilities from the fast plan), with
    every layer's activations and inspect-layer's statistics of them."""
    result = {"image": image, "doubt": doubt}
    classify(served.plan, served.preprocess, [result], served.classes, top=len(served.classes))
    outputs, _ = trace(served.model, model_input(served, image))
    layers = []
    for output in outputs:
        stats = output_statistics(output)
        stats.pop("zero_fraction_per_channel", None)  # the maps show it
        layers.append({"stats": stats, "maps": encode_map(output[0])})
    by_class = {choice["class"]: choice["probability"] for choice in result["top"]}
    return {"image": encode_image(image), "doubt": result["doubt"], "prediction": result["prediction"],
            "probabilities": [by_class.get(name) for name in served.classes], "top": result["top"][:TOP],
            "layers": layers}


def conv_arithmetic(model: Sequential, x: np.ndarray, index: int, row: int, col: int, channel: int) -> dict:
    """The value at (``row``, ``col``, ``channel``) of conv layer ``index`` for a batch of one
    ``x``, taken apart: the input window (padding included), the filter, their products, the
    bias, the value the engine computed, and what the layers after it that keep positions (relu,
    batchnorm, ...: ``Layer.keeps_positions``) make of it.
    Arrays are channels first: (C_prev, f, f)."""
    layer = model.layers[index]
    outputs, _ = trace(model, x)
    before = x if index == 0 else outputs[index - 1]
    f, stride, pad = layer.kernel, layer.stride, layer.pad
    window = F.zero_pad(before, pad)[0, row * stride:row * stride + f, col * stride:col * stride + f, :]
    weights, bias = filter_of(layer, channel)
    products = window.astype(np.float64) * weights
    after, shape = [], outputs[index].shape
    for following in range(index + 1, len(model.layers)):
        layer_after = model.layers[following]
        if not layer_after.keeps_positions or outputs[following].shape != shape:
            break
        after.append({"index": following, "name": layer_after.name, "type": layer_after.type_name,
                      "value": float(outputs[following][0, row, col, channel])})
    channels_first = (lambda a: np.moveaxis(a, -1, 0).tolist())
    return {
        "layer": index, "row": row, "col": col, "channel": channel, "kernel": f, "stride": stride, "pad": pad,
        "input_layer": index - 1, "top": row * stride - pad, "left": col * stride - pad,
        "window": channels_first(window.astype(np.float64)), "filter": channels_first(weights.astype(np.float64)),
        "products": channels_first(products), "channel_sums": products.sum(axis=(0, 1)).tolist(),
        "sum": float(products.sum()), "bias": bias or 0.0, "value": float(outputs[index][0, row, col, channel]),
        "after": after,
    }


def class_gradients(model: Sequential, x: np.ndarray, target: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The gradient of logit ``target`` for a batch of one ``x``: at the model's input (the
    saliency map, shaped like ``x``) and at each layer's output, by the plain engine's backward.
    The first layer must compute its input gradient (``with_input_gradient``)."""
    outputs, caches = trace(model, x)
    dout = np.zeros_like(outputs[-1])
    dout[0, target] = 1
    reaching = [None] * len(model.layers)
    for index in range(len(model.layers) - 1, -1, -1):
        reaching[index] = dout
        dout, _ = model.layers[index].backward_pass(dout, caches[index])
    return dout, reaching


def gradients(served: Served, image: np.ndarray, target: int) -> dict:
    """``class_gradients`` for the page: the saliency map's numbers and picture, and each layer's
    gradient as maps with its statistics."""
    saliency, reaching = class_gradients(served.model, model_input(served, image), target)
    return {"class": target, "saliency": saliency[0, :, :, 0].astype(np.float64).tolist(),
            "saliency_map": encode_map(saliency[0, :, :, 0], signed=True),
            "layers": [{"stats": statistics(grad), "maps": encode_map(grad[0], signed=True)} for grad in reaching]}


def filter_of(layer: Conv2D, channel: int) -> tuple[np.ndarray, float | None]:
    """Filter ``channel`` of a conv layer: its weights (f, f, C_prev) and its bias (None if it has none)."""
    bias = float(layer.params["b"][0, 0, 0, channel]) if "b" in layer.params else None
    return layer.params["W"][:, :, :, channel], bias


def filter_weights(model: Sequential, index: int, channel: int) -> dict:
    """Filter ``channel`` of conv layer ``index``: its weights channels first (C_prev, f, f) and bias."""
    weights, bias = filter_of(model.layers[index], channel)
    return {"layer": index, "channel": channel, "weights": np.moveaxis(weights.astype(np.float64), -1, 0).tolist(),
            "bias": bias}


def model_summary(served: Served) -> dict:
    """What the page needs once: the model's name, classes and layers, and where it comes from; and
    the grey levels within which predict sees no drawing, that the pad shows an upload as predict reads it."""
    return {"name": served.meta["config"]["name"], "checkpoint": checkpoint_label(served.checkpoint),
            "classes": served.classes, "layers": describe_layers(served.model), "advice": PAGE_ADVICE,
            "one_colour": ONE_COLOUR}


def test_predictions(served: Served) -> np.ndarray:
    """The test split's logits by the fast plan, computed once (on ``Served.worker``)."""
    if served.test_logits is None:
        _, _, served.test_logits = evaluate(served.plan, served.test_x, served.test_y, served.preprocess,
                                            served.meta["config"]["train"]["eval_batch_size"])
    return served.test_logits


def run_report(served: Served) -> dict:
    """The run tab: training curves (the checkpoint's history), the test split's confusion matrix
    and most confidently misclassified images, the config and the run's summary."""
    logits = test_predictions(served)
    summary = run_summary(served.checkpoint)
    report = logits_report(logits, served.test_y, served.classes)
    for mistake in report["misclassified"]:
        mistake["image"] = encode_image(served.test_x[mistake["index"]])
    return {**report, "accuracy": accuracy(logits, served.test_y), "history": served.meta.get("history", []),
            "config": cfg.dump(served.meta["config"]),
            "summary": summary, "results": summary_rows(summary) if summary else None}


def cell_images(served: Served, true: int, predicted: int) -> dict:
    """The test images of one cell of the confusion matrix (the first CELL_IMAGES of them)."""
    chosen = np.flatnonzero((served.test_y == true) & (test_predictions(served).argmax(axis=1) == predicted))
    return {"true": true, "predicted": predicted, "count": int(chosen.size),
            "images": [{"index": int(i), "image": encode_image(served.test_x[i])} for i in chosen[:CELL_IMAGES]]}
