"""Looking inside one layer: shapes, forward and backward statistics, feature maps, filters.

The figures are the ones the seed notebook printed for its conv and pool layers (``Z's mean``,
``Z[3,2,1]``, ``dA_mean``, ``dW_mean``, ``db_mean``), for any layer of a real model.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import config as cfg
from .data import Data, Preprocess, prepare_data
from .atomic import OutputOption, make_folder, written_to
from .errors import UsageError
from .evaluation import checkpoint_label, load_for_target
from .engine.losses import softmax_cross_entropy
from .engine.model import Sequential
from .folders import RUNS_DIR
from .runs import PICTURE_SUFFIXES, is_config_file, no_checkpoint_choice, output_folder, resolve_checkpoint
from .trainer import initial_model
from .words import counted, images_of


class Target(NamedTuple):
    """What inspect-layer looks into: a model, its config and data, and where its pictures go."""

    model: Sequential
    config: dict
    preprocess: Preprocess
    data: Data
    picture_folder: Path
    model_name: str  # in the pictures' names: its checkpoint's (best, last), or untrained


def load_target(target, data_dir=None, which: str | None = None) -> Target:
    """The model of a run dir (its ``which`` checkpoint, best by default), a checkpoint or a config
    YAML (untrained), with its config, preprocessing, data and default picture folder."""
    target = Path(target)
    if is_config_file(target):
        if which is not None:
            raise no_checkpoint_choice(which, target, "a config, whose model is untrained")
        config = cfg.load_config(target, flags=cfg.data_dir_flag(data_dir))
        data = prepare_data(config, source=str(target))
        return Target(initial_model(config), config, Preprocess.for_config(config, data), data,
                      RUNS_DIR / "inspect" / config["name"], "untrained")
    model, meta, preprocess, data, path = load_for_target(target, which, data_dir)
    return Target(model, meta["config"], preprocess, data, output_folder(path, "inspect"), path.stem)


def target_label(target, config: dict, which: str | None = None) -> str:
    """What the model is, as headers and titles name it: a run's checkpoint, or for a config the
    untrained model it builds."""
    target = Path(target)
    if is_config_file(target):
        return f"config {target.name}, untrained (as initialised, seed {config['train']['seed']})"
    return checkpoint_label(resolve_checkpoint(target, which))


# images inspect-layer looks at without --index or --indices: a few, so that statistics mean something
IMAGES_BY_DEFAULT = 16


def parse_indices(index: int | None, indices: str | None, n: int) -> np.ndarray:
    if index is not None and indices:
        raise UsageError(f"--index {index} and --indices {indices}: give one of them, one image or a range")
    if indices:
        try:
            lo, hi = (int(part) if part else None for part in indices.split(":"))
        except ValueError:
            raise UsageError(f"--indices {indices!r}: expected START:STOP, e.g. 0:{IMAGES_BY_DEFAULT}") from None
        lo, hi = lo or 0, n if hi is None else hi
        if hi <= lo:
            raise UsageError(f"--indices {indices}: STOP must be above START, e.g. {lo}:{lo + IMAGES_BY_DEFAULT}")
        if not 0 <= lo < hi <= n:
            raise UsageError(f"--indices {indices}: the split has {n} images; use a range within 0:{n}")
        return np.arange(lo, hi)
    i = 0 if index is None else index
    if not 0 <= i < n:
        raise UsageError(f"--index {i}: the split has {n} images (0 to {n - 1})")
    return np.arange(i, min(i + IMAGES_BY_DEFAULT, n)) if index is None else np.array([i])


def statistics(a: np.ndarray) -> dict:
    """The figures inspect-layer shows for an array: mean, std, min, max, norm, share of zeros."""
    a64 = a.astype(np.float64)
    return {"mean": float(a64.mean()), "std": float(a64.std()), "min": float(a64.min()), "max": float(a64.max()),
            "norm": float(np.linalg.norm(a64)), "zero_fraction": float(np.mean(a == 0))}


def output_statistics(out: np.ndarray) -> dict:
    """``statistics`` of a layer's output batch; for a batch of images (NHWC) also its dead units:
    the share of channels that are zero for every image and pixel, and each channel's zeros."""
    stats = statistics(out)
    if out.ndim == 4:
        stats["dead_channel_fraction"] = float(np.mean(np.all(out == 0, axis=(0, 1, 2))))
        stats["zero_fraction_per_channel"] = np.mean(out == 0, axis=(0, 1, 2)).round(4).tolist()
    return stats


def sample_index(shape) -> tuple:
    """The notebook printed Z[3,2,1]; use it where the output is large enough, else clip."""
    return tuple(min(want, n - 1) for want, n in zip((3, 2, 1), shape))


# the axes of a batch of activations, by its number of dimensions (NHWC images, or flat vectors)
AXES = {4: ("image", "row", "column", "channel"), 2: ("image", "unit")}


def shape_words(shape) -> str:
    """``(16, 14, 14, 8)`` as ``16 images of 14x14 with 8 channels``."""
    images = counted(shape[0], "image")
    if len(shape) == 4:
        return f"{images} of {shape[1]}x{shape[2]} with {counted(shape[3], 'channel')}"
    if len(shape) == 2:
        return f"{images} of {shape[1]} values"
    return f"{images} of shape {tuple(shape[1:])}"


def index_words(index, shape, split: str, first: int) -> str:
    """An index into a batch's activations with each axis named; the batch's image ``i`` is the
    split's image ``first + i``: ``validation image 8, row 2, column 1, all 16 channels``."""
    names = AXES.get(len(shape), ("image",) + tuple(f"axis {d}" for d in range(1, len(shape))))
    words = [f"{split} image {first + index[0]}"] + [f"{name} {i}" for name, i in zip(names[1:], index[1:])]
    words += [f"all {n} {name}s" for name, n in zip(names[len(index):], shape[len(index):])]
    return ", ".join(words)


# the axes of a layer's parameter arrays, by (layer type, parameter name); an axis of None is one
# that only broadcasts (a conv bias's 1, 1, 1)
PARAM_AXES = {
    ("conv2d", "W"): ("kernel row", "kernel column", "input channel", "filter"),
    ("conv2d", "b"): (None, None, None, "filter"),
    ("dense", "W"): ("input", "unit"),
    ("dense", "b"): ("unit",),
    ("batchnorm", "gamma"): ("channel",),
    ("batchnorm", "beta"): ("channel",),
}


def param_shape_words(layer_type: str, key: str, shape) -> str:
    """A parameter's shape with its axes named: ``(3 kernel rows, 3 kernel columns, 8 input
    channels, 16 filters)``; a parameter not in PARAM_AXES shows its bare shape."""
    names = PARAM_AXES.get((layer_type, key))
    if names is None or len(names) != len(shape):
        return str(tuple(shape))
    return "(" + ", ".join(str(n) if name is None else counted(n, name) for n, name in zip(shape, names)) + ")"


def _conv_words(config, input_shape):
    k = config["kernel"]
    return (f"{counted(config['filters'], 'filter')} of {k}x{k} over {counted(input_shape[-1], 'channel')}, "
            f"stride {config['stride']}, padding {config['padding']}"
            + ("" if config.get("bias", True) else ", no bias"))


# a layer's settings in words, by its config's type; a type not here shows only its name
LAYER_WORDS = {
    "conv2d": _conv_words,
    "maxpool2d": lambda c, shape: f"maximum of each {c['size']}x{c['size']} window, stride {c['stride']}",
    "avgpool2d": lambda c, shape: f"mean of each {c['size']}x{c['size']} window, stride {c['stride']}",
    "dense": lambda c, shape: f"{c['units']} units, each over all {int(np.prod(shape[1:]))} inputs",
    "dropout": lambda c, shape: f"drops {c['rate']:.0%} of its inputs at random in training, none in evaluation",
    "batchnorm": lambda c, shape: f"normalises each of {shape[-1]} channels (momentum {c['momentum']}, eps {c['eps']})",
    "leaky_relu": lambda c, shape: f"slope {c['alpha']} below zero",
    "flatten": lambda c, shape: f"{'x'.join(map(str, shape[1:]))} values in one row of {int(np.prod(shape[1:]))}",
}


def layer_words(report: dict) -> str:
    """``layer 3 (3_conv2d): conv2d, 64 filters of 5x5 over 32 channels, stride 1, padding 2``."""
    words = LAYER_WORDS.get(report["type"])
    settings = f", {words(report['config'], report['input_shape'])}" if words else ""
    return f"layer {report['index']} ({report['name']}): {report['type']}{settings}"


def find_layer(model: Sequential, layer, target) -> int:
    """The index of ``layer`` in ``model``, which ``target`` holds: ``Sequential.layer_index``'s
    rule (an index, a name, or a type that names one layer), its refusal naming ``target``."""
    try:
        return model.layer_index(layer)
    except UsageError as err:
        raise UsageError(f"{target}: {err} (`--list` shows their shapes)") from None


def report_layer(target, loaded: Target, layer, split: str, index: int | None, indices: str | None,
                 out_dir: Path | None = None, write_pictures: bool = True,
                 which: str | None = None) -> tuple[dict, np.ndarray]:
    """inspect-layer's report on ``layer`` of ``target`` (``loaded`` by ``load_target``) for the
    images of ``split`` that ``index`` or ``indices`` choose, with the pictures written (if
    ``write_pictures``) to ``out_dir`` (None: the target's picture folder); and the layer's
    output, which the report describes."""

    model, config, preprocess, data = loaded.model, loaded.config, loaded.preprocess, loaded.data
    layer_index = find_layer(model, layer, target)
    images, labels = data.split(split)
    chosen = parse_indices(index, indices, len(images))
    report = inspect_layer(model, layer_index, preprocess(images[chosen]), labels[chosen],
                           config["train"]["label_smoothing"])
    source = target_label(target, config, which)
    caption = f"{split} image {chosen[0]}, label {cfg.class_names(config)[labels[chosen[0]]]}"
    described = images_of(split, chosen[0], chosen[-1])
    batch_caption = caption if len(chosen) == 1 else described
    if write_pictures and out_dir is not None and Path(out_dir).suffix.lower() in PICTURE_SUFFIXES:
        raise UsageError(f"--out {out_dir}: is where the pictures go, a folder (several PNGs are written); "
                         f"give a folder name, e.g. --out {Path(out_dir).with_suffix('')}")
    report["images"] = {"split": split, "indices": [int(chosen[0]), int(chosen[-1]) + 1], "described": described}
    written = []
    if write_pictures:
        option = OutputOption("--out", "DIR", given=out_dir is not None, instead="--no-images")
        with written_to(option):
            written = pictures(report, model.layers[layer_index], make_folder(out_dir or loaded.picture_folder, option),
                               loaded.model_name, source, images[chosen[0]], caption, batch_caption)
    output = report.pop("_output")
    report["model"] = source
    report["pictures"] = [str(path) for path in written]
    return report, output


def inspect_layer(model: Sequential, index: int, x: np.ndarray, y: np.ndarray, label_smoothing=0.0) -> dict:
    """Statistics of layer ``index`` for a float batch ``x`` with labels ``y``."""
    layer = model.layers[index]
    out = x
    for each in model.layers[:index + 1]:
        out, _ = each.forward_pass(out, training=False)
    dx, grads = _backward_to(model, index, x, y, label_smoothing)
    report = {
        "index": index, "name": layer.name, "type": layer.type_name, "config": layer.get_config(),
        "input_shape": [len(x)] + list(layer.input_shape), "output_shape": list(out.shape),
        "params": {k: {"shape": list(v.shape), "count": int(v.size)} for k, v in layer.params.items()},
        "param_count": layer.num_params(),
        "forward": output_statistics(out),
        "sample": {"index": list(sample_index(out.shape)), "value": np.asarray(out[sample_index(out.shape)]).tolist()},
        "backward": {"dA_prev": statistics(dx) if dx is not None else None},
    }
    for key, param in layer.params.items():
        grad_stats = statistics(grads[key])
        # the update's scale against the weights'; None for an all-zero parameter (a fresh
        # model's biases), where the ratio would only measure the guard against dividing by 0
        weight_norm = float(np.linalg.norm(param.astype(np.float64)))
        grad_stats["grad_to_weight_norm"] = grad_stats["norm"] / weight_norm if weight_norm > 0 else None
        report["backward"][f"d{key}"] = grad_stats
    report["_output"] = out  # arrays for pictures; not part of the JSON
    return report


def _backward_to(model: Sequential, index: int, x, y, label_smoothing):
    """``(dA_prev, parameter gradients)`` of layer ``index`` for one training step on ``x``.

    The layers' stateless passes leave the model as it was: batchnorm's running statistics are
    not updated, and dropout's masks come from a fixed seed."""
    rng = np.random.default_rng(0)
    out, caches = x, []
    for layer in model.layers:
        out, cache = layer.forward_pass(out, training=True, rng=rng)
        caches.append(cache)
    _, dout = softmax_cross_entropy(out, y, label_smoothing)
    target = model.layers[index]
    needs_input_grad = target.needs_input_grad
    target.needs_input_grad = True  # the first layer skips its input gradient in training
    try:
        for i in range(len(model.layers) - 1, index - 1, -1):
            dout, grads = model.layers[i].backward_pass(dout, caches[i])
    finally:
        target.needs_input_grad = needs_input_grad
    return dout, grads


# the feature maps and filters a picture shows at most: 8 rows of 8 tiles
TILES_SHOWN = 64


def _how_many_shown(shown: int, total: int, noun: str) -> str:
    """``all 32 filters`` or, for a layer wider than a picture holds, ``first 64 of 130 filters``."""
    return f"all {total} {noun}" if shown == total else f"first {shown} of {total} {noun}"


def pictures(report: dict, layer, out_dir: Path, model_name: str, source: str, input_image: np.ndarray,
             caption: str, batch_caption: str) -> list[Path]:
    """Feature maps of the batch's first image beside it (``input_image``, described by ``caption``),
    conv filters, and a histogram of the activations of the images ``batch_caption`` describes, as PNGs
    titled with ``source`` (what the model is: ``target_label``).

    The pictures are named after the layer and the model (``model_name``: best, last, untrained),
    and a picture of images after them too (``validation-image5``, ``train-images0-15``), so
    another checkpoint, split or choice of images writes beside them."""
    from . import plots

    out = report["_output"]
    stem = f"layer{report['index']:02d}-{report['name']}-{model_name}"
    first, stop = report["images"]["indices"]
    first_image = f"{stem}-{report['images']['split']}-image{first}"
    batch = first_image if stop - first == 1 else f"{stem}-{report['images']['split']}-images{first}-{stop - 1}"
    layer_name = f"layer {report['index']} ({report['name']})"
    written = []
    if out.ndim == 4:
        maps = np.moveaxis(out[0], -1, 0)[:TILES_SHOWN]
        path = out_dir / f"{first_image}-feature-maps.png"
        plots.feature_maps(input_image, caption, maps, path, f"{source}\n{layer_name}: feature maps of {caption} "
                           f"({_how_many_shown(len(maps), out.shape[-1], 'channels')})")
        written.append(path)
    if "W" in layer.params and layer.params["W"].ndim == 4:
        W = layer.params["W"]
        filters = np.moveaxis(W.mean(axis=2), -1, 0)[:TILES_SHOWN]  # averaged over input channels
        path = out_dir / f"{stem}-filters.png"
        plots.image_grid(filters, [f"filter {c}" for c in range(len(filters))], path,
                         f"{source}\n{layer_name}: filters ({_how_many_shown(len(filters), W.shape[-1], 'filters')}, "
                         "each the mean over its input channels)", scale="weight")
        written.append(path)
    path = out_dir / f"{batch}-histogram.png"
    plots.histogram(out, path, f"{source}\n{layer_name}: activations of {batch_caption}")
    written.append(path)
    return written
