"""Softmax cross-entropy on logits, numerically stable, with its fused gradient; accuracy."""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log(softmax(logits)) along the last axis; shifting by the max keeps exp from overflowing."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0):
    """Mean cross-entropy of integer ``labels`` (N,) under ``softmax(logits)`` (N, K).

    With label smoothing ``s`` the target is ``(1 - s) * one_hot + s / K``. Returns
    ``(loss, dlogits)``; ``dlogits = (softmax(logits) - target) / N`` is the fused gradient.
    """
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
    return logits.argmax(axis=1) == labels


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of rows whose largest logit is at the row's label."""
    return float(right_answers(logits, labels).mean())
