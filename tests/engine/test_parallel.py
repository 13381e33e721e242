"""The two-thread training step: the same numbers as its parts done in turn, whichever thread
does the weight gradients, and errors that reach the caller."""
import time

import numpy as np
import pytest

from mnistcnn.engine.model import Sequential
from mnistcnn.engine.fast.parallel import SharedWork, StepRunner, map_grouped_in_threads

SPECS = [
    {"type": "conv2d", "filters": 4, "kernel": 5, "padding": 2},                           # fused with its pool
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "conv2d", "filters": 6, "kernel": 5, "padding": 2, "algorithm": "fft-gemm"},  # fused, gives dA
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1, "algorithm": "im2col"},    # apart, gives dA
    {"type": "flatten"},
    {"type": "dense", "units": 12},
    {"type": "relu"},
    {"type": "dropout", "rate": 0.3},
    {"type": "dense", "units": 5},
]


def batch():
    rng = np.random.default_rng(0)
    return (rng.random((16, 12, 12, 1)) > 0.5).astype(np.float32), rng.integers(0, 5, size=16)


def parts_in_turn(model, x, y, seed):
    """What ``StepRunner.gradients`` promises: one child generator per half, drawn in order,
    each half's gradients scaled by its share and added in order."""
    seeds = np.random.default_rng(seed).integers(0, 2**63 - 1, size=2)
    halves = [model.train_step_gradients(x[lo:lo + 8], y[lo:lo + 8], np.random.default_rng(s), 0.0, False, 0.5)
              for lo, s in zip((0, 8), seeds)]
    return {k: halves[0][2][k] + halves[1][2][k] for k in halves[0][2]}


def test_two_threads_give_the_numbers_of_the_parts_in_turn(monkeypatch, float32_close):
    model = Sequential.from_config(SPECS, (12, 12, 1), np.random.default_rng(1))
    x, y = batch()
    want = parts_in_turn(model, x, y, seed=7)
    assert set(want) == set(model.params())
    train_step = Sequential.train_step_gradients
    first_half_start = x.ctypes.data

    def slow_first_half(self, x, *args, **kwargs):
        result = train_step(self, x, *args, **kwargs)
        if x.ctypes.data == first_half_start:
            time.sleep(0.05)  # the other thread runs out of its own work and takes this half's
        return result

    taken_over = []
    next_job = SharedWork._next

    def counting(self, part):
        others = not self.jobs[part]
        job = next_job(self, part)
        if job is not None and others:
            taken_over.append(part)
        return job

    monkeypatch.setattr(SharedWork, "_next", counting)
    for slow in (False, True):
        if slow:
            monkeypatch.setattr(Sequential, "train_step_gradients", slow_first_half)
            taken_over.clear()
        for _ in range(3):
            with StepRunner(model, workers=2, min_per_worker=4) as runner:
                loss, correct, grads = runner.gradients(x, y, np.random.default_rng(7))
            assert set(grads) == set(want)
            for key in want:
                float32_close(grads[key], want[key], what=key)
    assert taken_over  # the slowed half's weight gradients were done by the other thread


def test_an_error_in_handed_over_work_reaches_the_caller():
    model = Sequential.from_config(SPECS, (12, 12, 1), np.random.default_rng(1))
    last = model.layers[-1]
    backward = last.backward

    def failing(dout, cache, later=None):
        dx, grads = backward(dout, cache, later)
        if later is not None:
            later(lambda: {"W": 1 / 0})
        return dx, grads

    last.backward = failing
    x, y = batch()
    with StepRunner(model, workers=2, min_per_worker=4) as runner, pytest.raises(ZeroDivisionError):
        runner.gradients(x, y, np.random.default_rng(7))


def test_grouped_map_runs_fixed_groups_in_order_whatever_the_timing():
    """Evaluation's scheduler: each run of ``group`` consecutive items goes to ``then`` whole and
    in order, however the threads interleave (here: random delays, and 1, 2 and 3 threads)."""
    rng = np.random.default_rng(0)
    delays = rng.random(11) * 0.004

    def fn(i):
        time.sleep(delays[i])
        return np.array([i, 10 * i])

    for workers in (1, 2, 3):
        seen = []
        out = map_grouped_in_threads(fn, lambda a: seen.append(a.tolist()) or a.sum(), range(11), 4, workers)
        assert sorted(seen) == [[0, 0, 1, 10, 2, 20, 3, 30], [4, 40, 5, 50, 6, 60, 7, 70], [8, 80, 9, 90, 10, 100]]
        assert out == [66, 242, 297]
    assert map_grouped_in_threads(fn, np.sum, [], 4) == []


def test_grouped_map_error_reaches_the_caller_and_stops_the_others():
    done = []

    def fn(i):
        if i == 2:
            raise ValueError("item 2 is bad")
        time.sleep(0.002)
        done.append(i)
        return np.array([i])

    with pytest.raises(ValueError, match="item 2"):
        map_grouped_in_threads(fn, np.sum, range(200), 3, 2)
    assert len(done) < 20  # the other thread stopped taking items
