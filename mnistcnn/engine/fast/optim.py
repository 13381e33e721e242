"""The optimisers' updates (``optim``) in place and in parts, so that two threads can each update
half of a large parameter (``parallel.StepRunner.update``): every update is element-wise, so any
split of the entries gives the same numbers. The state is the optimiser's own, under the same
keys, so checkpoints do not change. Tested equal to ``Optimizer.step`` (tests/engine/test_parallel.py).
"""
from __future__ import annotations

import numpy as np

from ..optim import SGD, Adam, Optimizer, decays, slot_key


def slot_kinds(optimizer: Optimizer) -> tuple[str, ...]:
    """The state arrays each parameter has: made before the threads start, so none makes one."""
    return () if isinstance(optimizer, SGD) and not optimizer.momentum else optimizer.slots


def start_step(optimizer: Optimizer, params: dict, lr: float | None = None) -> float:
    """Count the step and make the state; returns the learning rate to update with."""
    optimizer.steps += 1
    for key, p in params.items():
        if not p.flags.c_contiguous:  # updates go through flat views: a copy would lose them
            raise ValueError(f"parameter {key} must be a C-contiguous array")
        for kind in slot_kinds(optimizer):
            optimizer.slot(kind, key, p)
    return float(optimizer.lr if lr is None else lr)


def update_part(optimizer: Optimizer, key: str, p: np.ndarray, g: np.ndarray, lr: float,
                part: slice = slice(None)) -> None:
    """``optimizer.update(key, p, g, lr)`` on the entries ``part`` of the flattened ``p``, after
    ``start_step``: the state changes in place."""
    slots = {kind: optimizer.state[slot_key(kind, key)].reshape(-1)[part] for kind in slot_kinds(optimizer)}
    p, g = p.reshape(-1)[part], np.ascontiguousarray(g).reshape(-1)[part]
    if isinstance(optimizer, Adam):
        _adam(optimizer, key, p, g, lr, slots)
    else:
        _sgd(optimizer, key, p, g, lr, slots)


def _sgd(optimizer: SGD, key, p, g, lr, slots):
    if optimizer.weight_decay and decays(key):
        g = g + optimizer.weight_decay * p
    if optimizer.momentum:
        v = slots["velocity"]
        v *= optimizer.momentum
        v += g
        g = g + optimizer.momentum * v if optimizer.nesterov else v
    p -= p.dtype.type(lr) * g


def _adam(optimizer: Adam, key, p, g, lr, slots):
    if optimizer.weight_decay and decays(key):
        if optimizer.decoupled:
            p -= lr * optimizer.weight_decay * p
        else:
            g = g + optimizer.weight_decay * p
    m, v = slots["m"], slots["v"]
    cast = p.dtype.type  # a Python float would cost a conversion in every operation on these small arrays
    scratch = np.multiply(g, cast(1 - optimizer.beta1))  # one temporary, reused: no per-operation arrays
    m *= cast(optimizer.beta1)
    m += scratch
    np.multiply(g, g, out=scratch)
    scratch *= cast(1 - optimizer.beta2)
    v *= cast(optimizer.beta2)
    v += scratch
    np.sqrt(v, out=scratch)
    scratch += cast(optimizer.eps)
    np.divide(m, scratch, out=scratch)
    scratch *= cast(optimizer.step_size(lr))
    p -= scratch
