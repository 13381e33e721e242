"""Pictures (matplotlib, Agg backend, written atomically as PNG)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_writer  # noqa: E402


def _save(fig, path) -> None:
    with atomic_writer(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def training_curves(history: list[dict], path, title: str = "") -> None:
    """Loss and accuracy per epoch, train and validation."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["val_acc"] for r in history], "s-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def confusion_matrix(matrix: np.ndarray, classes: list[str], path, title: str = "") -> None:
    """Raw counts (left) and row-normalised recall (right)."""
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    size = max(5, 0.5 * k + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for ax, data, fmt, label in ((axes[0], matrix, "d", "count"), (axes[1], norm, ".2f", "fraction of true class")):
        ax.imshow(data, cmap="Blues")
        ax.set(xticks=range(k), yticks=range(k), xticklabels=classes, yticklabels=classes,
               xlabel="predicted", ylabel="true", title=label)
        if k <= 20:
            peak = data.max() or 1
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] > peak / 2 else "black")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def image_grid(images: np.ndarray, captions: list[str], path, title: str = "", cmap="gray") -> None:
    """Images (N, H, W) or (N, H, W, 1) in a grid with a caption each."""
    n = len(images)
    cols = min(8, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        ax.imshow(image, cmap=cmap)
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def histogram(values: np.ndarray, path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(np.asarray(values, dtype=np.float64).ravel(), bins=60, color="steelblue")
    ax.set(xlabel="value", ylabel="count", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
