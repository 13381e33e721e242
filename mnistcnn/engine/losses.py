"""Softmax cross-entropy on logits, numerically stable, with its fused gradient; accuracy."""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log(softmax(logits)) along the last axis; shifting by the max keeps exp from overflowing."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def class_indices(logits: np.ndarray, labels) -> np.ndarray:
    """``labels`` as an array of class indices, one per row of ``logits`` (N, K), each in 0..K-1.

    NumPy's indexing would take one-hot rows (the seed notebook's labels) by broadcasting them
    when N is K or 1, and -1 as the last class, without a word: a ValueError says so instead."""
    labels = np.asarray(labels)
    n, k = logits.shape
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        one_hot = "; one-hot rows? pass labels.argmax(axis=1)" if labels.ndim == 2 else ""
        raise ValueError(f"labels must be {n} integer class indices, shape ({n},), one per row of the logits "
                         f"{logits.shape}; got {labels.dtype} of shape {labels.shape}{one_hot}")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be class indices from 0 to {k - 1}, one of the logits' {k} columns; "
                         f"got {labels.min()} to {labels.max()}")
    return labels


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0):
    """Mean cross-entropy of integer ``labels`` (N,) under ``softmax(logits)`` (N, K).

    With label smoothing ``s`` the target is ``(1 - s) * one_hot + s / K``. Returns
    ``(loss, dlogits)``; ``dlogits = (softmax(logits) - target) / N`` is the fused gradient.
    Why so simple: a row's loss is ``-sum(target * log_softmax)``, and the derivative of
    ``log_softmax_j`` by logit ``i`` is ``[i == j] - softmax_i``; summed against a target that
    adds up to 1, that leaves ``softmax_i - target_i``. The mean over the rows divides by N.
    """
    labels = class_indices(logits, labels)
    n, k = logits.shape
    logp = log_softmax(logits)
    probs = np.exp(logp)
    target = np.full((n, k), label_smoothing / k, dtype=logits.dtype)
    target[np.arange(n), labels] += 1.0 - label_smoothing
    loss = float(-(target * logp).sum() / n)
    dlogits = (probs - target) / logits.dtype.type(n)
    return loss, dlogits


def right_answers(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) bools: whether each row's largest logit is at the row's label."""
    return logits.argmax(axis=1) == class_indices(logits, labels)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of rows whose largest logit is at the row's label."""
    return float(right_answers(logits, labels).mean())
