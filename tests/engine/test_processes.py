"""Worker processes: the numbers of as many threads, and a worker's failure or end reported."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from mnistcnn.engine.fast.parallel import StepRunner
from mnistcnn.engine.fast.plan import Plan
from mnistcnn.engine.fast.processes import ProcessStepRunner, WorkerProcessError

SHARED = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()  # where worker files would be
CLOSE_CALLS = 1  # of the mixed net's 16 images: a tie within rounding may go either way


def test_worker_processes_give_the_numbers_of_threads(train_steps, mixed_net, float32_close):
    """The same shares, generators and order of sums as two threads: the same weights, and the
    same batchnorm running statistics, gathered from the worker's share of every batch."""
    thread_losses, threads = train_steps(StepRunner)
    process_losses, processes = train_steps(ProcessStepRunner, batch_size=16)
    for (loss, correct), (want_loss, want_correct) in zip(process_losses, thread_losses):
        # two paths: a count of right answers may differ where two logits tie within rounding
        assert loss == pytest.approx(want_loss, rel=1e-5) and abs(correct - want_correct) <= CLOSE_CALLS
    assert set(processes) == set(threads) and {"buffer.4.running_mean", "buffer.4.running_var"} <= set(threads)
    for key in threads:
        float32_close(processes[key], threads[key], what=key)
    assert not np.array_equal(threads["buffer.4.running_mean"], mixed_net()[0].state_dict()["buffer.4.running_mean"])


def test_a_failing_worker_reports_its_traceback_and_the_runner_goes_on(mixed_net):
    model, x, y = mixed_net()
    wrong = y.copy()
    wrong[8:] = 99  # a label past the last class, in the worker's share only
    with ProcessStepRunner(Plan(model), workers=2, batch_size=16, min_per_worker=4) as runner:
        failing = "^a training worker process failed: ValueError: labels must be"
        with pytest.raises(WorkerProcessError, match=failing) as failed:
            runner.gradients(x, wrong, np.random.default_rng(0))
        assert "\n" not in str(failed.value) and failed.value.details.startswith("Traceback")
        loss, correct, grads = runner.gradients(x, y, np.random.default_rng(0))  # the next step starts clean
    assert np.isfinite(loss) and set(grads) == set(model.params())


def test_a_worker_that_ends_is_named_with_its_exit_code(mixed_net):
    model, x, y = mixed_net()
    with ProcessStepRunner(Plan(model), workers=2, batch_size=16, min_per_worker=4) as runner:
        worker = runner.processes[0].process
        worker.kill()
        worker.wait()
        ended = rf"worker process {worker.pid} ended \(killed by SIGKILL, perhaps for want of memory\)"
        with pytest.raises(WorkerProcessError, match=ended):
            runner.gradients(x, y, np.random.default_rng(0))


@pytest.mark.skipif(not os.path.isfile("/proc/self/maps"), reason="reads this process's mappings in /proc")
def test_workers_leave_no_process_and_no_file_behind_whenever_the_trainer_is_killed(mixed_net, monkeypatch):
    from mnistcnn.engine.fast import processes

    named, reply = [], processes.Worker.reply

    def looked(worker):  # as the workers start: a trainer killed now (SIGKILL) removes nothing itself
        answer = reply(worker)
        with open("/proc/self/maps") as maps:
            named.extend(line for line in maps if SHARED in line and not line.rstrip().endswith("(deleted)"))
        return answer

    monkeypatch.setattr(processes.Worker, "reply", looked)
    model, x, y = mixed_net()
    with ProcessStepRunner(Plan(model), workers=3, batch_size=16, min_per_worker=4) as runner:
        workers = [worker.process for worker in runner.processes]
        assert len(workers) == 2
        runner.gradients(x, y, np.random.default_rng(0))
    assert named == []  # the shared memory is mapped by a name that only the kernel holds
    assert all(worker.returncode == 0 for worker in workers)


def test_workers_start_under_a_trainer_whose_standard_input_is_closed(mixed_net, float32_close):
    # (mnistcnn train ... <&-, a daemon's): the shared file may then get descriptor 0, the worker's standard input;
    # the step must still be the one two threads take, the worker's share included
    model, x, y = mixed_net()
    with StepRunner(Plan(mixed_net()[0]), workers=2, min_per_worker=4) as runner:
        want_loss, _, want = runner.gradients(x, y, np.random.default_rng(0))
    standard_input = os.dup(0)
    os.close(0)
    try:
        with ProcessStepRunner(Plan(model), workers=2, batch_size=16, min_per_worker=4) as runner:
            loss, _, grads = runner.gradients(x, y, np.random.default_rng(0))
    finally:
        os.dup2(standard_input, 0)
        os.close(standard_input)
    assert loss == pytest.approx(want_loss, rel=1e-5) and set(grads) == set(want)  # two paths: float32 rounding
    for key in want:
        float32_close(grads[key], want[key], what=key)


def test_a_worker_whose_trainer_is_gone_ends_without_a_word(tmp_path):
    # the trainer killed: the worker's reply meets a closed pipe, and its traceback would land on the user's terminal
    worker = subprocess.Popen([sys.executable, "-m", "mnistcnn.engine.fast.processes"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    worker.stdout.close()
    _, err = worker.communicate(b"{}\n", timeout=60)  # a setup it cannot use: it replies with its failure
    assert worker.returncode == 0 and err == b"", err.decode()


def test_a_batch_larger_than_the_runner_was_started_for_is_refused(mixed_net):
    model, x, y = mixed_net()
    with ProcessStepRunner(Plan(model), workers=2, batch_size=8, min_per_worker=4) as runner:
        n = 2 * runner.rows + 1
        with pytest.raises(ValueError, match=f"a batch of {n} images is more than this runner was started for"):
            runner.gradients(np.resize(x, (n,) + x.shape[1:]), np.resize(y, n), np.random.default_rng(0))


def test_worker_processes_evaluate_as_this_process_does(mixed_net, float32_close):
    """Slices of whole chunks in the workers and here: the logits of one process, for the
    runner's model and for another with its layers (an average's), batchnorm statistics too."""
    model, x, _ = mixed_net()
    other = mixed_net(seed=5)[0]
    other.layers[4].buffers["running_mean"][...] = 0.25  # not the runner's buffers
    images = np.resize(x, (700,) + x.shape[1:]) * np.linspace(0.5, 1.0, 700, dtype=np.float32)[:, None, None, None]
    with ProcessStepRunner(Plan(model), workers=2, batch_size=16, min_per_worker=4) as runner:
        for plan in (runner.plan, Plan(other)):
            chunk, group = plan.eval_runs(100)
            assert len(images) > 2 * chunk * group  # the workers take slices
            want = plan.predict_logits(images, 100, workers=1)
            got = runner.predict_logits(plan, images, 100, transform=lambda batch: batch * 1.0)
            assert got.shape == want.shape
            float32_close(got, want, what="logits")


@pytest.mark.parametrize("workers", [2, 3])
def test_worker_processes_take_a_shorter_last_batch_and_a_batch_of_one_as_threads_do(workers, mixed_net,
                                                                                      float32_close):
    """Batches of 16, 9 (fewer shares than workers, of unequal size) and 1 (this process alone),
    with label smoothing (which a worker is told with its task) and Adam's state carried between
    them: the weights and batchnorm statistics of as many threads."""
    from mnistcnn.engine.optim import make_optimizer

    def train(runner_type, **options):
        model, x, y = mixed_net()
        optimizer, rng = make_optimizer({"type": "adam", "lr": 1e-2}), np.random.default_rng(3)
        with runner_type(Plan(model), workers=workers, min_per_worker=4, **options) as runner:
            for n in (16, 9, 1):
                runner.update(optimizer, model.params(), runner.gradients(x[:n], y[:n], rng, label_smoothing=0.1)[2])
        return model.state_dict()

    threads, processes = train(StepRunner), train(ProcessStepRunner, batch_size=16)
    assert processes.keys() == threads.keys()
    for key in threads:
        float32_close(processes[key], threads[key], what=key)


def test_a_batch_too_short_for_every_worker_fits_the_runner_started_for_longer_ones(mixed_net, float32_close):
    """Three workers started for batches of 300 take a share of 100 each; a last batch of 299 is too
    short for three shares of at least ``min_per_worker`` and goes in two of 149 and 150, which
    the shared arrays must hold too (they held 101 images, and the step was refused)."""
    model, x, y = mixed_net()
    x, y = np.resize(x, (299,) + x.shape[1:]), np.resize(y, 299)
    with StepRunner(Plan(mixed_net()[0]), workers=3, min_per_worker=100) as runner:
        assert runner.parts(299) == 2
        want_loss, _, want = runner.gradients(x, y, np.random.default_rng(0))
    with ProcessStepRunner(Plan(model), workers=3, batch_size=300, min_per_worker=100, eval_batch_size=100) as runner:
        loss, _, grads = runner.gradients(x, y, np.random.default_rng(0))
    assert loss == pytest.approx(want_loss, rel=1e-5) and grads.keys() == want.keys()  # two paths: float32 rounding
    for key in want:
        float32_close(grads[key], want[key], what=key)


def test_an_evaluation_in_runs_longer_than_the_shared_arrays_stays_in_this_process(mixed_net, float32_close):
    """Started for evaluations in batches of 20 (runs of 180 images), asked for batches of 1000
    (runs of 256): the workers cannot hold a run, so this process evaluates it all, with the
    numbers of the plan alone."""
    model, x, _ = mixed_net()
    images = np.resize(x, (600,) + x.shape[1:])
    with ProcessStepRunner(Plan(model), workers=2, batch_size=16, min_per_worker=4, eval_batch_size=20) as runner:
        chunk, group = runner.plan.eval_runs(1000)
        assert chunk * group > runner.rows
        float32_close(runner.predict_logits(runner.plan, images, 1000), runner.plan.predict_logits(images, 1000),
                      what="logits")
