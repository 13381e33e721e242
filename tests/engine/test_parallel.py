"""The threads: a training step's weight gradients done by whichever thread is free, errors that
reach the caller, and evaluation's grouped map."""
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from mnistcnn.engine.fast.parallel import SharedWork, StepRunner, map_grouped_in_threads
from mnistcnn.engine.fast.plan import Plan
from mnistcnn.engine.model import Sequential
from mnistcnn.engine.optim import SGD, Adam, AdamW, make_optimizer

def test_a_thread_done_early_takes_over_the_others_weight_gradients(monkeypatch, float32_close, mixed_net):
    """One half slowed down: the other thread runs some of its weight gradients, and the sums
    are what they are when each half does its own."""
    model, x, y = mixed_net()
    plan = Plan(model)
    with StepRunner(plan, workers=2, min_per_worker=4) as runner:
        want = runner.gradients(x, y, np.random.default_rng(7))[2]
    step = Plan.loss_and_gradients
    first_half_start = x.ctypes.data
    taken_over = []
    taken = threading.Event()

    def slow_first_half(self, batch, *args, **kwargs):
        result = step(self, batch, *args, **kwargs)
        if batch.ctypes.data == first_half_start:
            taken.wait(timeout=60)  # until the other thread, out of its own work, takes this half's
        return result

    next_job = SharedWork._next

    def counting(self, part):
        others = not self.jobs[part]
        item = next_job(self, part)
        if item is not None and others:
            taken_over.append(part)
            taken.set()
        return item

    monkeypatch.setattr(SharedWork, "_next", counting)
    monkeypatch.setattr(Plan, "loss_and_gradients", slow_first_half)
    with StepRunner(plan, workers=2, min_per_worker=4) as runner:
        grads = runner.gradients(x, y, np.random.default_rng(7))[2]
    assert taken_over  # the slowed half's weight gradients were done by the other thread
    assert set(grads) == set(want)
    for key in want:
        float32_close(grads[key], want[key], what=key)


def test_an_error_in_handed_over_work_reaches_the_caller(monkeypatch, mixed_net):
    model, x, y = mixed_net()
    plan = Plan(model)
    last = plan.training_steps[-1]
    backward = type(last).backward

    def failing(dout, cache):
        dx, _ = backward(last, dout, cache)
        return dx, lambda: {"12.W": 1 / 0}

    monkeypatch.setattr(last, "backward", failing)
    with StepRunner(plan, workers=2, min_per_worker=4) as runner, pytest.raises(ZeroDivisionError):
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
    later_started, raised, done = threading.Event(), threading.Event(), []

    def fn(i):
        if i == 2:  # fails while the other thread is inside an item
            assert later_started.wait(30)
            raised.set()
            raise ValueError("item 2 is bad")
        if i > 2:
            later_started.set()
            assert raised.wait(30)
            time.sleep(0.01)  # all 197 items would take 2 s
        done.append(i)
        return np.array([i])

    with pytest.raises(ValueError, match="item 2"):
        map_grouped_in_threads(fn, np.sum, range(200), 3, 2)
    assert len([i for i in done if i > 2]) < 150  # the other thread stopped taking items, long before the end


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.1), lambda: SGD(lr=0.1, weight_decay=0.01),
                                  lambda: SGD(lr=0.1, momentum=0.9), lambda: SGD(lr=0.1, momentum=0.9, nesterov=True),
                                  lambda: SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                                  lambda: Adam(lr=0.01), lambda: Adam(lr=0.01, weight_decay=0.1),
                                  lambda: AdamW(lr=0.01, weight_decay=0.1)])
def test_threaded_update_in_halves_equals_the_plain_optimiser(make):
    rng = np.random.default_rng(0)
    start = {"0.W": rng.normal(size=(300, 300)).astype(np.float32), "0.b": rng.normal(size=7).astype(np.float32)}
    plain, threaded = ({k: v.copy() for k, v in start.items()} for _ in range(2))
    opt_a, opt_b = make(), make()
    with StepRunner(None, workers=2) as runner:
        for step in range(5):
            grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()}
            opt_a.step(plain, grads, lr=None if step < 3 else 0.5 * opt_a.lr)
            runner.update(opt_b, threaded, grads, lr=None if step < 3 else 0.5 * opt_b.lr)
    # the same element-wise formulas in float32, only evaluated in another way (in place, in
    # halves): a few float32 roundings apart at most
    for key in start:
        np.testing.assert_allclose(threaded[key], plain[key], rtol=1e-5, atol=1e-6)
    assert opt_b.steps == opt_a.steps and opt_b.state.keys() == opt_a.state.keys()
    for key in opt_a.state:
        np.testing.assert_allclose(opt_b.state[key], opt_a.state[key], rtol=1e-5, atol=1e-6)


def test_an_update_refuses_a_parameter_it_could_only_update_through_a_copy():
    """The updates go through flat views; a parameter not C-contiguous would be updated in a copy
    and keep its values, so it is refused."""
    weights = np.ones((4, 6), dtype=np.float32).T
    with StepRunner(None) as runner, pytest.raises(ValueError, match="parameter 0.W must be a C-contiguous array"):
        runner.update(SGD(lr=0.1), {"0.W": weights}, {"0.W": np.ones_like(weights)})


def test_workers_follow_the_model_size_not_a_timing(monkeypatch):
    from mnistcnn.engine.fast import parallel
    from mnistcnn.engine.fast.parallel import MIN_SHARE_MACS, THREAD_SHARE_MACS, planned_workers

    monkeypatch.setattr(parallel, "default_workers", lambda: 2)
    notebook_macs = 52_600  # the seed notebook's net: at 64 a step too small to hand half of it over
    assert planned_workers(notebook_macs, 64) == (1, 1, "threads")
    assert planned_workers(notebook_macs, 256) == (2, None, "processes")
    quick_macs = 390_432  # quick.yaml: two processes at its batch of 64 and up to 256
    assert planned_workers(quick_macs, 64) == (2, None, "processes")
    assert planned_workers(quick_macs, 256) == (2, None, "processes")
    assert planned_workers(11_065_088, 64) == (2, None, "threads")  # LeNet: a thread per core
    # the edges: a batch of two, a share of one image, three times its forward multiply-adds
    assert planned_workers(-(-MIN_SHARE_MACS // 3), 2) == (2, None, "processes")
    assert planned_workers(-(-MIN_SHARE_MACS // 3) - 1, 2) == (1, 1, "threads")
    assert planned_workers(-(-THREAD_SHARE_MACS // 3), 2) == (2, None, "threads")
    assert planned_workers(-(-THREAD_SHARE_MACS // 3) - 1, 2) == (2, None, "processes")
    monkeypatch.setattr(parallel, "default_workers", lambda: 1)
    assert planned_workers(11_065_088, 64) == (1, 1, "threads")

# Two threads allocate and free 72 MB a step, more than a thread's own malloc arena holds in one heap.
THREADED_STEPS = """
import resource, sys, threading
import numpy as np
from mnistcnn.engine.fast.parallel import keep_freed_memory
if not keep_freed_memory():
    sys.exit(3)
def steps():
    for _ in range(int(sys.argv[1])):
        arrays = [np.ones(3 << 20, np.float32) for _ in range(6)]
        del arrays
threads = [threading.Thread(target=steps) for _ in range(2)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
"""


def test_threads_reuse_freed_memory_instead_of_faulting_it_in_again():
    def page_faults(steps):
        done = subprocess.run([sys.executable, "-c", THREADED_STEPS, str(steps)], capture_output=True, text=True)
        if done.returncode == 3:
            pytest.skip("not glibc's malloc: keep_freed_memory has nothing to set")
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    few, many = page_faults(2), page_faults(20)
    # the first step faults its pages in; with an arena per thread, each later step would fault them in again
    assert many - few < few / 2, (few, many)


def test_two_threads_give_the_plain_engine_s_step_on_the_whole_batch_without_batchnorm(relative_error):
    """Each thread's share of the batch has its gradients scaled by its fraction and the two are
    added: the mean over the whole batch, as the plain engine computes it. In float64, with every
    kind of step a thread runs (a fused first conv, a frequency-domain conv, dense layers), and
    neither batchnorm (each share normalises by its own statistics) nor dropout (each share draws
    from its own generator), which would make a step on shares another step."""
    specs = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1}, {"type": "relu"},
             {"type": "maxpool2d", "size": 2},
             {"type": "conv2d", "filters": 5, "kernel": 3, "padding": 1, "algorithm": "fft-gemm"}, {"type": "relu"},
             {"type": "maxpool2d", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 6}, {"type": "tanh"},
             {"type": "dense", "units": 3}]
    plain, threaded = (Sequential.from_config(specs, (8, 10, 1), np.random.default_rng(0), dtype=np.float64)
                       for _ in range(2))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(13, 8, 10, 1)), rng.integers(0, 3, size=13)  # shares of 6 and 7 images
    loss, correct, grads = plain.loss_and_gradients(x, y)
    with StepRunner(Plan(threaded), workers=2, min_per_worker=4) as runner:
        assert runner.parts(len(y)) == 2
        threaded_loss, threaded_correct, threaded_grads = runner.gradients(x, y, np.random.default_rng(2))
    assert threaded_loss == pytest.approx(loss, rel=1e-12) and threaded_correct == correct
    assert threaded_grads.keys() == grads.keys()
    for key in grads:
        assert relative_error(threaded_grads[key], grads[key]) < 1e-10, key


# The optimisers with the state they carry from step to step (velocity; Adam's moments and count).
OPTIMISERS = {
    "sgd, momentum, weight decay": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    "sgd, nesterov, weight decay": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                                    "weight_decay": 0.01},
    "adam, L2 weight decay": {"type": "adam", "lr": 0.01, "weight_decay": 0.01},
    "adamw": {"type": "adamw", "lr": 0.01, "weight_decay": 0.1},
}


def steps_net(workers: int) -> list:
    """A fused first conv, a frequency-domain conv and a dense head; with one worker batchnorm and
    dropout too (shares normalise and draw on their own, so two workers would take another step)."""
    shared = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1}, {"type": "relu"},
              {"type": "maxpool2d", "size": 2}]
    head = [{"type": "maxpool2d", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 6}, {"type": "relu"}]
    fft = {"type": "conv2d", "filters": 5, "kernel": 3, "padding": 1, "algorithm": "fft-gemm"}
    if workers > 1:
        return shared + [fft, {"type": "relu"}] + head + [{"type": "dense", "units": 3}]
    return (shared + [{**fft, "bias": False}, {"type": "batchnorm"}, {"type": "relu"}] + head
            + [{"type": "dropout", "rate": 0.3}, {"type": "dense", "units": 3}])


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("optimiser", OPTIMISERS)
def test_steps_of_the_runner_and_its_update_are_the_plain_loop_s(optimiser, workers, relative_error):
    """Several steps through the fast path (``StepRunner.gradients``, then ``update`` in halves)
    against the plain loop (``Sequential.loss_and_gradients``, ``Optimizer.step``), with label
    smoothing and the learning rate changing, batches of 13, 9, 7 and 1 (a last one shorter, shares of unequal
    size, fewer shares than workers, a batch of one): in float64 the weights, the optimiser's
    state and batchnorm's running statistics agree within 1e-9 (the same sums in another order;
    a wrong state is off by far more)."""
    specs = steps_net(workers)
    plain, fast = (Sequential.from_config(specs, (8, 10, 1), np.random.default_rng(0), dtype=np.float64)
                   for _ in range(2))
    plain_optimiser, fast_optimiser = (make_optimizer(OPTIMISERS[optimiser]) for _ in range(2))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 8, 10, 1)), rng.integers(0, 3, size=30)
    plain_rng, fast_rng = np.random.default_rng(2), np.random.default_rng(2)  # dropout's masks
    with StepRunner(Plan(fast), workers=workers, min_per_worker=4) as runner:
        for (lo, hi), lr in zip([(0, 13), (13, 22), (22, 29), (29, 30)], [None, 0.02, None, 0.005]):
            _, _, grads = plain.loss_and_gradients(x[lo:hi], y[lo:hi], plain_rng, label_smoothing=0.1)
            plain_optimiser.step(plain.params(), grads, lr)
            _, _, fast_grads = runner.gradients(x[lo:hi], y[lo:hi], fast_rng, label_smoothing=0.1)
            runner.update(fast_optimiser, fast.params(), fast_grads, lr)
    assert fast_optimiser.steps == plain_optimiser.steps == 4
    assert fast_optimiser.state.keys() == plain_optimiser.state.keys()
    for key, value in plain_optimiser.state.items():
        assert relative_error(fast_optimiser.state[key], value) < 1e-9, key
    for key, value in {**plain.params(), **plain.buffers()}.items():
        assert relative_error({**fast.params(), **fast.buffers()}[key], value) < 1e-9, key


@pytest.mark.parametrize("optimiser", ["sgd, nesterov, weight decay", "adamw"])
def test_a_run_resumed_from_its_state_goes_on_as_the_uninterrupted_run(optimiser, mixed_net):
    """Stopped after two steps, its weights, batchnorm statistics, optimiser state and dropout
    generator loaded into a new model, optimiser and plan (a frequency-domain conv's spectral
    weights made anew): two more steps through the fast path give the uninterrupted run's
    numbers, to the last bit (the same path on one machine)."""

    def steps(model, optimizer, rng, count):
        with StepRunner(Plan(model), workers=2, min_per_worker=4) as runner:
            for _ in range(count):
                runner.update(optimizer, model.params(), runner.gradients(x, y, rng)[2])

    model, x, y = mixed_net()
    optimizer, rng = make_optimizer(OPTIMISERS[optimiser]), np.random.default_rng(3)
    steps(model, optimizer, rng, 4)
    stopped, _, _ = mixed_net()
    stopped_optimizer, stopped_rng = make_optimizer(OPTIMISERS[optimiser]), np.random.default_rng(3)
    steps(stopped, stopped_optimizer, stopped_rng, 2)
    resumed, resumed_optimizer = mixed_net(seed=7)[0], make_optimizer(OPTIMISERS[optimiser])
    resumed.load_state_dict(stopped.state_dict())
    resumed_optimizer.load_state_dict(stopped_optimizer.state_dict())
    resumed_rng = np.random.default_rng()
    resumed_rng.bit_generator.state = stopped_rng.bit_generator.state
    steps(resumed, resumed_optimizer, resumed_rng, 2)
    want, got = model.state_dict(), resumed.state_dict()
    assert got.keys() == want.keys() and resumed_optimizer.state_dict().keys() == optimizer.state_dict().keys()
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    for key, value in optimizer.state_dict().items():
        np.testing.assert_array_equal(resumed_optimizer.state_dict()[key], value, err_msg=key)


def test_a_worker_s_share_of_a_training_batch_holds_more_than_one_image():
    # data.check_data_fits refuses a batch of one image where a batchnorm would zero it, by the batch
    # alone: a share of a longer batch is never that short
    from mnistcnn.engine.fast.parallel import batch_shares

    with StepRunner(None, workers=4) as runner:
        for n in range(2, 300):
            shares = batch_shares(n, runner.parts(n), np.random.default_rng(0))
            assert min(hi - lo for lo, hi, *_ in shares) > 1, n
