"""Pictures (matplotlib, Agg backend, written atomically as PNG).

Each picture's title names what it shows (the run, and where they apply the split and the
checkpoint); the same title is stored in the PNG's ``Title`` text chunk, so that a file found
later says where it came from without being opened in a viewer."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .atomic import atomic_writer  # noqa: E402
from .colour_scale import colour_scale  # noqa: E402

# the bottom of the confusion matrix's log colour scale: below one image in MNIST's largest test
# class (1,135), so that a single error still shows as a pale square, not as white
SMALLEST_FRACTION = 3e-4


def _save(fig, path, title: str) -> None:
    with atomic_writer(path) as handle:
        # bbox "tight" grows the canvas to whatever the labels need: none is cut at the edge
        fig.savefig(handle, format="png", dpi=100, bbox_inches="tight", metadata={"Title": title})
    plt.close(fig)


def _whole_number_ticks(axis) -> None:
    """Ticks on whole numbers only (epochs, trials), one at least: a single point's axis would
    otherwise be ticked 0.95, 0.975, 1.0 ..."""
    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def curves_figure(history: list[dict], title: str):
    """Loss and accuracy per epoch, train and validation, with a tick on whole epochs only."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["val_acc"] for r in history], "s-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        _whole_number_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def training_curves(history: list[dict], path, title: str = "") -> None:
    """curves.png: the run is named by the folder the picture goes into (its run directory);
    ``title``, the config's name, is added when the folder's name does not already start with it."""
    run = Path(path).resolve().parent.name
    name = f"run {run}" if not title or run.startswith(title) else f"run {run} ({title})"
    heading = f"{name}: loss and accuracy per epoch"
    _save(curves_figure(history, heading), path, heading)


def confusion_figure(matrix: np.ndarray, classes: list[str], title: str):
    """One square per (true, predicted) pair: its colour the fraction of the true class on a log
    scale (so that a class's few errors show beside its many right answers), its number the count."""
    matrix = np.asarray(matrix)
    support = matrix.sum(axis=1, keepdims=True)
    fractions = matrix / np.maximum(support, 1)
    k = len(classes)
    size = max(6.0, 0.6 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    cmap = plt.get_cmap("Blues").with_extremes(bad="white")  # no image at all: blank, not pale blue
    norm = LogNorm(vmin=SMALLEST_FRACTION, vmax=1.0, clip=True)
    shown = ax.imshow(np.ma.masked_equal(fractions, 0), cmap=cmap, norm=norm)
    bar = fig.colorbar(shown, ax=ax, shrink=0.8)
    bar.set_label("fraction of the true class (log scale)")
    ax.set_xticks(range(k), classes)
    ax.set_yticks(range(k), [f"{name} ({int(n):,})" for name, n in zip(classes, support[:, 0])])
    ax.set(xlabel="predicted class", ylabel="true class (images)", title="counts; colour: share of the row")
    if k <= 20:  # beyond that a count no longer fits in its square
        for i, j in zip(*np.nonzero(matrix)):
            dark = norm(fractions[i, j]) > 0.6
            ax.text(j, i, f"{matrix[i, j]:,}", ha="center", va="center", fontsize=8 if k <= 12 else 6,
                    color="white" if dark else "black")
    fig.suptitle(title)
    return fig


def confusion_matrix(matrix: np.ndarray, classes: list[str], path, title: str = "") -> None:
    _save(confusion_figure(matrix, classes, title), path, title)


def _shared_scale(arrays: np.ndarray) -> dict:
    """One colour scale for every panel (``colour_scale``'s, as serve's page draws): diverging, 0 its
    neutral colour, when the values have both signs."""
    low, high, signed = colour_scale(arrays)
    if signed:
        return {"cmap": "RdBu_r", "vmin": low, "vmax": high}
    return {"cmap": "viridis", "vmin": low, "vmax": high if high > low else low + 1}


def _grid(fig, images: np.ndarray, captions: list[str], style: dict):
    """Images (N, H, W) or (N, H, W, 1), 8 to a row, in ``fig``; the last image drawn."""
    cols, rows = _grid_size(len(images))
    axes = fig.subplots(rows, cols, squeeze=False)
    shown = None
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        shown = ax.imshow(image, **style)
        ax.set_title(caption, fontsize=8)
    return axes, shown


def _grid_size(n: int) -> tuple[int, int]:
    cols = min(8, max(n, 1))
    return cols, max(1, math.ceil(n / cols))


def image_grid(images: np.ndarray, captions: list[str], path, title: str = "", scale: str = "",
               empty: str = "") -> None:
    """Images (N, H, W) or (N, H, W, 1) in a grid with a caption each: grey pictures, or with
    ``scale`` (what the values are) on one shared colour scale with a colour bar; with no images,
    the words ``empty`` (so that the file says so rather than keep an earlier picture's)."""
    cols, rows = _grid_size(len(images))
    width = 1.6 * cols + (1.2 if scale else 0) if len(images) else 6.0  # no images: room for the words
    fig = plt.figure(figsize=(width, 1.8 * rows + 0.6), layout="constrained")
    axes, shown = _grid(fig, images, captions, _shared_scale(images) if scale else {"cmap": "gray"})
    if scale and shown is not None:
        fig.colorbar(shown, ax=axes, shrink=0.9, label=scale)
    if not len(images):
        _say_nothing_shown(axes.flat[0], empty)
    fig.suptitle(title)
    _save(fig, path, title)


def _say_nothing_shown(ax, words: str) -> None:
    """``words`` in the middle of an ``ax`` that has nothing to show, in place of a blank."""
    ax.text(0.5, 0.5, words, transform=ax.transAxes, ha="center", va="center", color="dimgrey")


def feature_maps_figure(image: np.ndarray, caption: str, maps: np.ndarray, title: str):
    """The input ``image`` (H, W) or (H, W, 1) with its ``caption``, beside a layer's ``maps``
    (C, H', W') on one shared colour scale, so that channels compare by colour."""
    image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    cols, rows = _grid_size(len(maps))
    fig = plt.figure(figsize=(1.6 * cols + 3.5, 1.7 * rows + 0.8), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[2.2, 1.6 * cols + 1.3])
    ax_input = left.subplots()
    ax_input.imshow(image, cmap="gray")
    ax_input.set_title(caption, fontsize=9)
    ax_input.axis("off")
    axes, shown = _grid(right, maps, [f"channel {c}" for c in range(len(maps))], _shared_scale(maps))
    if shown is not None:
        right.colorbar(shown, ax=axes, shrink=0.9, label="activation")
    fig.suptitle(title)
    return fig


def feature_maps(image: np.ndarray, caption: str, maps: np.ndarray, path, title: str) -> None:
    _save(feature_maps_figure(image, caption, maps, title), path, title)


def histogram(values: np.ndarray, path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.hist(np.asarray(values, dtype=np.float64).ravel(), bins=60, color="steelblue")
    ax.set(xlabel="value", ylabel="count", title=title)
    ax.grid(alpha=0.3)
    _save(fig, path, title)


def _sweep_points(rows: list[dict], last_value):
    """(row, value, status) for each trial with a value: complete trials their objective, pruned
    ones the last value they reported (``last_value(row)``)."""
    for row in rows:
        value = last_value(row)
        if row["status"] in SWEEP_STYLES and value is not None:
            yield row, value, row["status"]


SWEEP_STYLES = {"complete": ("o", "tab:blue", "complete"), "pruned": ("x", "tab:red", "pruned (last reported)")}


NO_TRIAL_SHOWN = "no complete or pruned trial to show"


def _scatter_by_status(ax, points, x_of) -> None:
    for status, (marker, colour, label) in SWEEP_STYLES.items():
        chosen = [(x_of(row), value) for row, value, kind in points if kind == status]
        if chosen:
            ax.plot(*zip(*chosen), marker, color=colour, label=label, alpha=0.8, linestyle="none")


def _tilt_crowded_labels(fig, axes) -> None:
    """Tilt the x tick labels of those ``axes`` whose labels, side by side, would run into each
    other (a choice of many values or of long ones; a log scale's 3x10^-4 beside 4x10^-4)."""
    fig.canvas.draw()  # a label's width is known once drawn
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        labels = [label for label in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
                  if label.get_text() and label.get_visible()]
        boxes = sorted((label.get_window_extent(renderer) for label in labels), key=lambda box: box.x0)
        if any(box.x1 >= following.x0 for box, following in zip(boxes, boxes[1:])):
            plt.setp(labels, rotation=45, ha="right", rotation_mode="anchor")


def sweep_pictures(rows: list[dict], sweep, by_trial: Path, by_parameter: Path, last_value) -> None:
    """``by_trial`` (each trial's metric and the best so far) and ``by_parameter`` (the metric
    against each searched parameter); ``last_value(row)`` is the value a trial's point shows."""
    points = list(_sweep_points(rows, last_value))
    metric = sweep.metric
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    if points:
        _scatter_by_status(ax, points, lambda row: row["number"])
        complete = sorted((row["number"], value) for row, value, status in points if status == "complete")
        if complete:
            best = [max((value for _, value in complete[:i + 1]), key=sweep.goodness)
                    for i in range(len(complete))]
            ax.step([number for number, _ in complete], best, where="post", color="black", label="best so far")
        ax.legend()
    else:
        _say_nothing_shown(ax, NO_TRIAL_SHOWN)
    ax.set(xlabel="trial", ylabel=metric)
    _whole_number_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    title = f"sweep {sweep.name}: {metric} by trial"
    ax.set_title(title)
    _save(fig, by_trial, title)

    columns = min(3, len(sweep.parameters))
    lines = math.ceil(len(sweep.parameters) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.5 * columns, 3.6 * lines), layout="constrained",
                             squeeze=False)
    for ax, parameter in zip(axes.flat, sweep.parameters):
        with_value = [point for point in points if parameter.key in point[0]["params"]]
        if parameter.kind == "choice":
            names = [str(value) for value in parameter.values]
            ax.set_xticks(range(len(names)), names)
            ax.set_xlim(-0.5, len(names) - 0.5)
            position = {name: i for i, name in enumerate(names)}
            _scatter_by_status(ax, with_value, lambda row: position[str(row["params"][parameter.key])])
        elif with_value:
            _scatter_by_status(ax, with_value, lambda row: row["params"][parameter.key])
        else:  # the range searched, not matplotlib's 0 to 1 of an empty axis
            ax.set_xlim(parameter.low, parameter.high)
        if not with_value:
            _say_nothing_shown(ax, NO_TRIAL_SHOWN)
        if parameter.log:
            ax.set_xscale("log")
        ax.set(xlabel=parameter.key, ylabel=metric)
        ax.grid(alpha=0.3)
    if points:
        axes.flat[0].legend()
    for ax in list(axes.flat)[len(sweep.parameters):]:
        ax.set_visible(False)
    _tilt_crowded_labels(fig, axes.flat[:len(sweep.parameters)])
    title = f"sweep {sweep.name}: {metric} against each parameter"
    fig.suptitle(title)
    _save(fig, by_parameter, title)
