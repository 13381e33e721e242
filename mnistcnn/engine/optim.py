"""Optimisers (SGD with momentum/Nesterov, Adam, AdamW), learning-rate schedules and weight averaging.

Parameters and gradients are dicts of arrays keyed by a stable name (``"0.W"``); optimiser
state is a dict of arrays keyed by the slot and that name (``"m.0.W"``, ``"velocity.0.W"``), so it
saves into a checkpoint and restores.
Weight decay touches only weights (``W``), not biases or batchnorm's gamma/beta. The averages'
maths is ``WeightAverage``; when a run averages, and what it keeps, is ``mnistcnn.averaging``.
The in-place, split form of the updates that training runs is ``fast.optim``.
"""
from __future__ import annotations

import math

import numpy as np


def decays(key: str) -> bool:
    """Whether weight decay applies to parameter ``key`` ("0.W"): weights only."""
    return key.rsplit(".", 1)[-1] == "W"


def slot_key(kind: str, key: str) -> str:
    """The state key of parameter ``key``'s slot ``kind``: ``"m.0.W"``."""
    return f"{kind}.{key}"


class Optimizer:
    name = "optimizer"
    slots: tuple[str, ...] = ()  # the kinds of state a parameter may have (``slot``'s ``kind``)

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0):
        self.lr = lr
        self.weight_decay = weight_decay
        self.state: dict[str, np.ndarray] = {}
        self.steps = 0

    def step(self, params: dict, grads: dict, lr: float | None = None) -> None:
        """Update every parameter in place with its gradient at learning rate ``lr`` (default:
        ``self.lr``)."""
        self.steps += 1
        lr = float(self.lr if lr is None else lr)
        for key, p in params.items():
            self.update(key, p, grads[key], lr)

    def update(self, key: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        """One parameter's update: ``p`` changes in place, the state under ``key`` is replaced."""
        raise NotImplementedError

    def slot(self, kind: str, key: str, like: np.ndarray) -> np.ndarray:
        """The state ``kind`` (``"velocity"``, ``"m"``...) of parameter ``key``: zeros at first."""
        name = slot_key(kind, key)
        if name not in self.state:
            self.state[name] = np.zeros_like(like)
        return self.state[name]

    def set_momentum(self, value: float) -> None:
        """Set the first-moment decay a schedule cycles: SGD's momentum, Adam's beta1."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"steps": np.array(self.steps, dtype=np.int64), **{k: v.copy() for k, v in self.state.items()}}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        self.steps = int(state.pop("steps"))
        self.state = {k: np.array(v) for k, v in state.items()}


class SGD(Optimizer):
    """g += weight_decay p (coupled L2, as torch.optim.SGD; weights only);  v = momentum v + g;
    p -= lr (g + momentum v) with Nesterov, p -= lr v without; p -= lr g when momentum is 0."""

    name = "sgd"
    slots = ("velocity",)

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = momentum
        self.nesterov = nesterov

    def set_momentum(self, value: float) -> None:
        self.momentum = value

    def update(self, key, p, g, lr):
        if self.weight_decay and decays(key):
            g = g + self.weight_decay * p
        if self.momentum:
            v = self.momentum * self.slot("velocity", key, p) + g
            self.state[slot_key("velocity", key)] = v
            g = g + self.momentum * v if self.nesterov else v
        p -= lr * g


class Adam(Optimizer):
    """m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
    p -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps), at step t = 1, 2, ...

    Why the corrections: m and v start at zero, so after t steps their weights on the gradients
    seen add up to 1 - beta1^t and 1 - beta2^t, not 1; dividing by those sums undoes the pull
    towards zero, strong in the first steps (after the first, m is 0.1 g for the default beta1).

    Both bias corrections are folded into the step size, Kingma and Ba's "more efficient" order, as
    Keras's Adam computes it. That is PyTorch's p -= lr m_hat / (sqrt(v_hat) + eps_torch), with
    m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t), for eps_torch = eps / sqrt(1 - beta2^t):
    eps weighs 1 / sqrt(1 - beta2^t) times more here, which only matters for gradients near eps.
    ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2); AdamW decays p directly."""

    name = "adam"
    slots = ("m", "v")
    decoupled = False

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def set_momentum(self, value: float) -> None:
        self.beta1 = value

    def step_size(self, lr: float) -> float:
        """lr sqrt(1 - beta2^t) / (1 - beta1^t): the rate with both bias corrections."""
        return lr * math.sqrt(1 - self.beta2 ** self.steps) / (1 - self.beta1 ** self.steps)

    def update(self, key, p, g, lr):
        if self.weight_decay and decays(key):
            if self.decoupled:
                p -= lr * self.weight_decay * p
            else:
                g = g + self.weight_decay * p
        m = self.beta1 * self.slot("m", key, p) + (1 - self.beta1) * g
        v = self.beta2 * self.slot("v", key, p) + (1 - self.beta2) * (g * g)
        self.state[slot_key("m", key)], self.state[slot_key("v", key)] = m, v
        p -= self.step_size(lr) * (m / (np.sqrt(v) + self.eps))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, as torch.optim.AdamW):
    p -= lr weight_decay p, then Adam's step. The decay stays out of m and v, so every weight
    shrinks by the same fraction whatever its gradients; Adam's ``weight_decay`` (L2) goes
    through the gradient and is divided by sqrt(v) with the rest of it."""

    name = "adamw"
    decoupled = True


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam, AdamW)}


AVERAGES = ("none", "ema", "swa")


class WeightAverage:
    """A running average of the parameters, the model that is evaluated and kept.

    ``ema``: an exponential moving average, ``average += (1 - decay) * (params - average)``
    after every step (Polyak averaging, as Keras's ``use_ema``). ``swa``: the equal-weight mean of
    the weights at the end of each epoch (Izmailov et al., PyTorch's ``AveragedModel``). Both
    start from a copy of the weights at their first update.
    """

    def __init__(self, kind: str, decay: float = 0.999):
        self.kind, self.decay = kind, decay
        self.count = 0
        self.average: dict[str, np.ndarray] = {}

    def update(self, params: dict) -> None:
        if self.count == 0:
            self.average = {key: p.copy() for key, p in params.items()}
        else:
            weight = 1.0 - self.decay if self.kind == "ema" else 1.0 / (self.count + 1)
            for key, p in params.items():
                average = self.average[key]
                average += average.dtype.type(weight) * (p - average)
        self.count += 1

    def state_dict(self) -> dict:
        return {"count": np.array(self.count, dtype=np.int64), **{k: v.copy() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        self.count = int(state.pop("count"))
        self.average = {k: np.array(v) for k, v in state.items()}


def make_optimizer(config: dict) -> Optimizer:
    """Build an optimiser from ``{type: adam, lr: ..., ...}`` (keys already validated)."""
    args = dict(config)
    kind = args.pop("type")
    return OPTIMIZERS[kind](**args)


SCHEDULES = ("constant", "step", "cosine", "onecycle")


class Schedule:
    """Learning rate (and, for one-cycle, momentum) as a function of the global step.

    ``constant``; ``step`` (times ``gamma`` every ``step_epochs``); ``cosine`` (from the base
    rate down to ``min_lr`` over the run); each after an optional linear warm-up of
    ``warmup_epochs`` (the rate climbs in equal steps from ``lr / warm-up steps`` to ``lr``), and
    counted from its end, as PyTorch's SequentialLR of a warm-up and StepLR or CosineAnnealingLR.
    ``onecycle`` is Smith and Topin's policy as PyTorch's OneCycleLR draws it: the rate rises from
    ``lr / div_factor`` to ``lr`` over ``pct_start`` of the run and anneals, cosine, to
    ``lr / div_factor / final_div_factor``; momentum (SGD) or beta1 (Adam) moves the other way
    between ``max_momentum`` and ``base_momentum``.
    """

    def __init__(self, base_lr, steps_per_epoch, epochs, type="constant", warmup_epochs=0.0,
                 step_epochs=1, gamma=0.1, min_lr=0.0, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4, cycle_momentum=True, base_momentum=0.85, max_momentum=0.95):
        self.base_lr, self.type = base_lr, type
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        self.step_epochs, self.gamma, self.min_lr = step_epochs, gamma, min_lr
        total = epochs * steps_per_epoch
        # the two phases: (last step, starting rate, final rate, starting momentum, final momentum)
        self.phases = [(pct_start * total - 1, base_lr / div_factor, base_lr, max_momentum, base_momentum),
                       (total - 1, base_lr, base_lr / div_factor / final_div_factor, base_momentum, max_momentum)]
        self.cycle_momentum = cycle_momentum

    def __call__(self, step: int) -> float:
        if self.type == "onecycle":
            return self._one_cycle(step)[0]
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.type == "constant":
            return self.base_lr
        after_warm_up = step - self.warmup_steps  # both decays start where the warm-up ends
        if self.type == "step":
            return self.base_lr * self.gamma ** (after_warm_up // (self.step_epochs * self.steps_per_epoch))
        total = max(self.epochs * self.steps_per_epoch - self.warmup_steps, 1)
        return _cosine(self.base_lr, self.min_lr, min(after_warm_up / total, 1.0))

    def momentum(self, step: int) -> float | None:
        """The momentum (or beta1) for ``step``; None when the schedule leaves it alone."""
        return self._one_cycle(step)[1] if self.type == "onecycle" and self.cycle_momentum else None

    def _one_cycle(self, step: int) -> tuple[float, float]:
        (rise_end, *rise), (fall_end, *fall) = self.phases
        start, end, (lr_from, lr_to, momentum_from, momentum_to) = \
            (0.0, rise_end, rise) if step <= rise_end else (rise_end, fall_end, fall)
        progress = (step - start) / (end - start) if end > start else 1.0
        return _cosine(lr_from, lr_to, progress), _cosine(momentum_from, momentum_to, progress)


def _cosine(start: float, end: float, progress: float) -> float:
    """From ``start`` (progress 0) to ``end`` (progress 1) along half a cosine."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * progress) + 1)
