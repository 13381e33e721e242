"""Data parallelism in worker processes, for the small nets (``parallel.planned_workers``).

Threads share one interpreter: every NumPy call takes its lock (the GIL), and a small net's
step is hundreds of short calls, so two threads mostly wait for each other. Here the other
shares of a batch go to worker processes (``python -m mnistcnn.engine.fast.processes``), each
with an interpreter and a copy of the plan of its own. Before every step the weights and the
share's images reach a worker through a memory-mapped file with no name (handed over open),
and its gradients come back the same way; a task and its reply are a few packed numbers on the
worker's standard input and output (nothing is pickled). The shares, their generators and the
order in which their gradients are added are ``StepRunner``'s, so the numbers are those of as
many threads (tests/engine/test_processes.py). The workers evaluate too, each whole runs of
an evaluation's chunks, so the logits are those of one process.
"""
from __future__ import annotations

import fcntl
import json
import mmap
import os
import signal
import struct
import subprocess
import sys
import tempfile
import traceback

import numpy as np
from threadpoolctl import threadpool_limits

from ...errors import MnistCnnError, signal_name
from ..model import Sequential
from .parallel import StepRunner, batch_rows, batch_shares, keep_freed_memory

_ALIGN = 64  # bytes: each shared array starts on a cache line
SHARED_MEMORY = "/dev/shm" if os.path.isdir("/dev/shm") else None  # the shared files' folder: RAM, where there is one
# a task: what (TRAIN or EVALUATE), rows of x, the share's seed (training) or the batch size
# (evaluation), the share's fraction of the batch and the label smoothing (training)
TASK = struct.Struct("<qqqdd")
TRAIN, EVALUATE = 0, 1
REPLY = struct.Struct("<Bdqq")        # failed, loss, correct, bytes that follow
STATISTICS = struct.Struct("<qqq")    # a batchnorm step's number, count and channels; then mean, variance


def _size(shape, dtype) -> int:
    return -(-int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize // _ALIGN) * _ALIGN


class SharedArrays:
    """Named arrays laid out one after another in a memory-mapped file that a worker and the
    trainer both map, each by a descriptor ``fd`` of it: ``layout`` is ``[(name, shape, dtype)]``."""

    def __init__(self, layout: list, fd: int, create: bool = False):
        size = max(_ALIGN, sum(_size(shape, dtype) for _, shape, dtype in layout))
        if create:
            os.ftruncate(fd, size)
        self.memory = mmap.mmap(fd, size)
        self.arrays, offset = {}, 0
        for name, shape, dtype in layout:
            count = int(np.prod(shape, dtype=np.int64))
            self.arrays[name] = np.frombuffer(self.memory, np.dtype(dtype), count, offset).reshape(shape)
            offset += _size(shape, dtype)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def shared_layout(model: Sequential, rows: int) -> list:
    """What a worker and the trainer share: the weights and buffers (keyed as ``state_dict`` keys
    them), up to ``rows`` images, their labels and logits, and the share's gradients (``grad.<key>``)."""
    params = model.params()
    dtype = next(iter(params.values()), np.zeros(0, np.float32)).dtype
    layout = [(key, list(store[name].shape), store[name].dtype.str) for key, store, name in model.state_slots()]
    layout += [("x", [rows, *model.input_shape], dtype.str), ("y", [rows], np.dtype(np.int64).str),
               ("logits", [rows, *model.output_shape], dtype.str)]
    return layout + [(f"grad.{key}", list(p.shape), p.dtype.str) for key, p in params.items()]


def encode_statistics(statistics: list) -> bytes:
    """A share's ``Plan.batch_statistics``: each batchnorm step's number, count, mean, variance."""
    parts = []
    for number, entry in enumerate(statistics):
        if entry is not None:
            count, mean, variance = entry
            parts += [STATISTICS.pack(number, count, len(mean)), np.asarray(mean, np.float64).tobytes(),
                      np.asarray(variance, np.float64).tobytes()]
    return b"".join(parts)


def decode_statistics(data: bytes, steps: int) -> list:
    statistics, at = [None] * steps, 0
    while at < len(data):
        number, count, channels = STATISTICS.unpack_from(data, at)
        at += STATISTICS.size
        mean, variance = np.frombuffer(data, np.float64, 2 * channels, at).reshape(2, channels)
        statistics[number] = (count, mean, variance)
        at += 16 * channels
    return statistics


def _reply(out, failed: bool, loss: float = 0.0, correct: int = 0, payload: bytes = b"") -> None:
    try:
        out.write(REPLY.pack(failed, loss, correct, len(payload)) + payload)
        out.flush()
    except BrokenPipeError:  # the trainer has gone (killed): no one to reply to, nothing to say on its terminal
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # where the reply's last flush at exit goes
        sys.exit(0)


def worker_main() -> None:
    """A worker process: reads its setup (a JSON line), builds the plan on the shared weights,
    then computes one share of a batch per task until its input ends."""
    tasks = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to standard error, never into the replies
    from .plan import Plan  # plan imports parallel, as this module does: not at the module's import

    try:
        setup = json.loads(tasks.readline())
        shared = SharedArrays(setup["layout"], setup["fd"])
        os.close(setup["fd"])  # the mapping keeps the file
        model = Sequential.from_config(setup["specs"], setup["input_shape"], dtype=np.dtype(setup["dtype"]))
        for key, store, name in model.state_slots():
            store[name] = shared[key]
        plan = Plan(model, setup["conv_algorithm"])
        keep_freed_memory()
    except Exception:
        _reply(out, True, payload=traceback.format_exc().encode())
        return
    _reply(out, False)  # ready
    with threadpool_limits(limits=1, user_api="blas"):
        while len(task := tasks.read(TASK.size)) == TASK.size:
            kind, rows, seed_or_batch_size, fraction, label_smoothing = TASK.unpack(task)
            try:
                if kind == EVALUATE:
                    shared["logits"][:rows] = plan.predict_logits(shared["x"][:rows], seed_or_batch_size, workers=1)
                    _reply(out, False)
                    continue
                plan.prepare()
                rng = np.random.default_rng(seed_or_batch_size)
                loss, correct, grads, caches = plan.loss_and_gradients(
                    shared["x"][:rows], shared["y"][:rows], rng, label_smoothing, fraction)
                for key, grad in grads.items():
                    shared[f"grad.{key}"][...] = grad
                _reply(out, False, float(loss), correct, encode_statistics(plan.batch_statistics(caches)))
            except Exception:
                _reply(out, True, payload=traceback.format_exc().encode())


class WorkerProcessError(MnistCnnError):
    """A worker process failed or ended; ``details``: the traceback of a failure, for the log."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


def _shared_file() -> int:
    """A descriptor of a new file with no name (or unlinked at once) in SHARED_MEMORY: a trainer killed at
    any moment leaves nothing there. It is above 2, where a worker's standard streams go: a trainer with
    its standard input closed (``<&-``) would have the file itself at 0."""
    with tempfile.TemporaryFile(dir=SHARED_MEMORY) as file:
        return fcntl.fcntl(file.fileno(), fcntl.F_DUPFD_CLOEXEC, 3)


class Worker:
    """One worker process and the arrays it shares with the trainer."""

    def __init__(self, model: Sequential, rows: int, conv_algorithm: str):
        layout = shared_layout(model, rows)
        fd = _shared_file()
        try:
            self.shared = SharedArrays(layout, fd, create=True)
            # a session of its own: Ctrl-C reaches the trainer alone, which stops it by ending its input
            self.process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, start_new_session=True, pass_fds=[fd])
        finally:
            os.close(fd)  # the mapping keeps the file
        setup = {"fd": fd, "layout": layout, "specs": model.get_config(), "input_shape": model.input_shape,
                 "dtype": self.shared["x"].dtype.str, "conv_algorithm": conv_algorithm}
        self.process.stdin.write(json.dumps(setup).encode() + b"\n")
        self.process.stdin.flush()

    def load(self, model: Sequential, x: np.ndarray) -> None:
        """The weights and buffers of ``model`` (this worker's architecture), and the images."""
        for key, store, name in model.state_slots():
            self.shared[key][...] = store[name]
        self.shared["x"][:len(x)] = x

    def send(self, kind: int, rows: int, seed_or_batch_size: int, fraction: float = 0.0,
             label_smoothing: float = 0.0) -> None:
        """A ``TASK``: ``seed_or_batch_size`` is a training share's seed or an evaluation's batch size."""
        try:
            self.process.stdin.write(TASK.pack(kind, rows, seed_or_batch_size, fraction, label_smoothing))
            self.process.stdin.flush()
        except OSError:  # it has ended: reply() says how
            pass

    def reply(self) -> tuple:
        """``(loss, correct, payload)``; raises WorkerProcessError if it failed or ended."""
        header = self.process.stdout.read(REPLY.size)
        if len(header) < REPLY.size:
            code = self.process.wait()
            how = f"exit code {code}" if code >= 0 else f"killed by {signal_name(-code)}"
            if code == -signal.SIGKILL:
                how += ", perhaps for want of memory"
            raise WorkerProcessError(f"training worker process {self.process.pid} ended ({how})")
        failed, loss, correct, length = REPLY.unpack(header)
        payload = self.process.stdout.read(length)
        if failed:
            details = payload.decode(errors="replace").strip()
            raise WorkerProcessError(f"a training worker process failed: {details.splitlines()[-1]}", details)
        return loss, correct, payload

    def close(self) -> None:
        try:
            self.process.stdin.close()  # its input ends: it returns
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


class ProcessStepRunner(StepRunner):
    """``StepRunner`` with the shares of a batch after the first computed in worker processes
    (``workers - 1`` of them, started when entered, for batches of at most ``batch_size``); the
    first share, the weight update and everything else stay in this process. Its workers
    evaluate too (``predict_logits``), slices of ``eval_batch_size`` chunks each."""

    def __init__(self, plan, workers: int = 2, batch_size: int = 64, min_per_worker: int = 16,
                 conv_algorithm: str = "auto", eval_batch_size: int = 1000):
        super().__init__(plan, 1, min_per_worker)
        self.workers = max(1, int(workers))
        self.conv_algorithm = conv_algorithm
        chunk, group = plan.eval_runs(eval_batch_size)
        self.rows = max(self.largest_share(batch_size), chunk * group)  # a training share, an evaluation's slice
        self.processes: list[Worker] = []

    def __enter__(self):
        super().__enter__()
        try:
            self.processes = [Worker(self.plan.model, self.rows, self.conv_algorithm) for _ in range(self.workers - 1)]
            for worker in self.processes:
                worker.reply()  # ready
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for worker in self.processes:
            worker.close()
        self.processes = []
        super().__exit__(*exc)

    def gradients(self, x, y: np.ndarray, rng: np.random.Generator, label_smoothing: float = 0.0):
        n = len(y)
        parts = min(self.parts(n), len(self.processes) + 1)
        if parts == 1:
            return super().gradients(x, y, rng, label_smoothing)
        if n > self.rows * parts:
            raise ValueError(f"a batch of {n} images is more than this runner was started for "
                             f"({self.rows * parts})")
        shares = batch_shares(n, parts, rng)
        handed = list(zip(self.processes, shares[1:]))
        for worker, (lo, hi, seed, fraction) in handed:
            worker.load(self.plan.model, batch_rows(x, lo, hi))
            worker.shared["y"][:hi - lo] = y[lo:hi]
            worker.send(TRAIN, hi - lo, seed, fraction, label_smoothing)
        try:
            lo, hi, seed, fraction = shares[0]
            self.plan.prepare()
            loss, correct, grads, caches = self.plan.loss_and_gradients(
                batch_rows(x, lo, hi), y[lo:hi], np.random.default_rng(seed), label_smoothing, fraction)
            results = [(loss, correct, grads, self.plan.batch_statistics(caches))]
        finally:
            replies = _replies(worker for worker, _ in handed)
        steps = len(self.plan.training_steps)
        for (loss, correct, payload), (worker, _) in zip(replies, handed):
            results.append((loss, correct, {key: worker.shared[f"grad.{key}"] for key in grads},
                            decode_statistics(payload, steps)))
        return self.combine(shares, results)

    def predict_logits(self, plan, x: np.ndarray, batch_size: int = 1000, transform=None) -> np.ndarray:
        """``plan.predict_logits(x, batch_size, transform)`` (``plan`` of this runner's model
        or of one with its layers, such as its average), slices of it in the worker processes:
        each slice is whole runs of chunks, so the numbers are those of one process."""
        chunk, group = plan.eval_runs(batch_size)
        size = chunk * group
        if not self.processes or size > self.rows:
            return plan.predict_logits(x, batch_size, transform, workers=1)
        slices = [(lo, min(len(x), lo + size)) for lo in range(0, len(x), size)]
        outs = []
        for first in range(0, len(slices), len(self.processes) + 1):  # a slice for each process in turn
            own, *others = slices[first:first + len(self.processes) + 1]
            handed = list(zip(self.processes, others))
            for worker, (lo, hi) in handed:
                worker.load(plan.model, transform(x[lo:hi]) if transform else x[lo:hi])
                worker.send(EVALUATE, hi - lo, batch_size)
            try:
                outs.append(plan.predict_logits(x[own[0]:own[1]], batch_size, transform, workers=1))
            finally:
                _replies(worker for worker, _ in handed)
            outs += [worker.shared["logits"][:hi - lo].copy() for worker, (lo, hi) in handed]
        return np.concatenate(outs) if outs else plan.predict_logits(x, batch_size, transform, workers=1)


def _replies(workers) -> list:
    """Every worker's reply, each read even after another's failure (the next task then starts
    clean); the first failure is raised after."""
    replies, errors = [], []
    for worker in workers:
        try:
            replies.append(worker.reply())
        except WorkerProcessError as err:
            errors.append(err)
    if errors:
        raise errors[0]
    return replies


if __name__ == "__main__":
    worker_main()
