"""Data parallelism over the cores, in threads: the training step (``Plan.loss_and_gradients``,
the plan's ``Sequential.loss_and_gradients``) and evaluation (``Plan.predict_logits``), each
thread with BLAS limited to one thread.

A training batch is cut into shares (``batch_shares``), one per worker; each share runs forward
and backward in its own thread, its gradients scaled by its fraction of the batch, so that
added they are the whole batch's mean gradient: the same sums, grouped by share. They are added
in a fixed order, so the result does not depend on which thread finishes first; the weight
gradients are jobs that either thread may run (``SharedWork``). Each share draws its dropout
masks from a generator of its own, seeded in order. A batchnorm layer normalises each share by
that share's statistics (its running averages get the whole batch's): with batchnorm, a step on
two shares is not the step on the whole batch. The optimiser's update runs in halves too
(``fast.optim``). How many workers, and whether threads or processes (``processes``), is
``planned_workers``'s rule.

NumPy releases the GIL inside BLAS and most element-wise loops, so two threads keep two
cores busy; two workers with multi-threaded BLAS would oversubscribe the cores and lose.
"""
from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from .optim import start_step, update_part


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameter numbers
# Parameters with fewer entries are updated by one thread: a hand-off would cost more than it saves.
SPLIT_UPDATE_SIZE = 65536
# A training step's multiply-adds per worker below which a second worker does not pay: one
# worker then does the whole batch.
MIN_SHARE_MACS = 8_000_000
# The multiply-adds per worker from which threads do as well as processes: below it, a thread
# waits for the other's GIL through hundreds of short NumPy calls a step, so the shares go to
# processes. ``benchmarks/bench.py --workers N --parallel threads|processes`` times a step
# every way, to check both constants against the plan.
THREAD_SHARE_MACS = 500_000_000


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to reuse freed blocks instead of returning them to the kernel.

    A training step allocates and frees the same few-MB arrays every time; by default glibc
    maps each afresh and gives it back, and every step pays thousands of page faults. All
    threads share the main arena: a thread's own arena grows in heaps of at most 64 MB, which
    it maps and unmaps again as a large step's arrays come and go. Other C libraries: nothing
    happens, returns False. Once per process: the setting stays, and finding the C library runs
    ``ldconfig`` in a subprocess.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return all([libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20), libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30),
                    libc.mallopt(_M_ARENA_MAX, 1)])
    except (OSError, AttributeError, TypeError):
        return False


def cores() -> int:
    """The cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def default_workers() -> int:
    return min(cores(), 8)


def planned_workers(macs_per_image: int, batch_size: int) -> tuple[int, int | None, str]:
    """``(workers, BLAS threads, "threads" or "processes")`` for training steps of
    ``batch_size`` images on a model of ``macs_per_image`` forward multiply-adds (a step does
    about three times that): one worker per core, each with one BLAS thread; threads where each
    share has at least THREAD_SHARE_MACS, processes below (``processes``), and a single worker
    with one BLAS thread where a share would have less than MIN_SHARE_MACS. A static rule on
    the model's size, never a timing: a config trains the same way every run."""
    macs_per_worker = 3 * macs_per_image * batch_size // default_workers()
    if default_workers() == 1 or macs_per_worker < MIN_SHARE_MACS:
        return 1, 1, "threads"
    return default_workers(), None, "threads" if macs_per_worker >= THREAD_SHARE_MACS else "processes"


def map_grouped_in_threads(fn, then, items, group: int, workers: int | None = None) -> list:
    """``then(concatenate([fn(item) for item in run]))`` for each run of ``group`` consecutive
    items, in order, on ``workers`` threads with one BLAS thread each.

    Threads take items one at a time as they free up; a run's ``then`` is done by the thread
    that finishes its last item. Runs are fixed by position, not by timing, so the results do
    not depend on the threads. (Evaluation: ``fn`` the convolutions of a chunk that stays in
    cache, ``then`` the dense layers on several chunks at once, which reads their weights once.)
    """
    items = list(items)
    results, outputs = [None] * len(items), [None] * -(-len(items) // group)
    left = [min(group, len(items) - start) for start in range(0, len(items), group)]
    lock = threading.Lock()
    queue = iter(range(len(items)))
    failed = []  # set by the first error: the other threads stop taking items

    def work() -> None:
        while not failed:
            with lock:
                index = next(queue, None)
            if index is None:
                return
            try:
                results[index] = fn(items[index])
                run = index // group
                with lock:
                    left[run] -= 1
                    finished = left[run] == 0
                if finished:
                    span = slice(run * group, min(len(items), (run + 1) * group))
                    outputs[run] = then(np.concatenate(results[span]))
                    results[span] = [None] * (span.stop - span.start)  # let the memory go
            except BaseException:
                failed.append(True)
                raise

    workers = min(default_workers() if workers is None else max(1, int(workers)), len(items))
    if workers <= 1:
        work()
    else:
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            try:
                for future in [pool.submit(work) for _ in range(workers)]:
                    future.result()  # an error in a thread reaches the caller
            except BaseException:  # Ctrl-C while waiting, too: the other threads stop taking items
                failed.append(True)
                raise
    return outputs


class SharedWork:
    """Work that any of a step's threads may do: the weight gradients that the plan's backward
    pass hands over. Each thread, its own part of the batch done, runs its own jobs (newest
    first: their data is still in its cache), then the other parts' (oldest first), until every
    part is done and no job is left. The host often slows one core for a while; then the other
    takes over some of its weight gradients instead of waiting. A job's numbers do not depend
    on the thread that runs it; its gradients go to the part that handed it over."""

    def __init__(self, parts: int):
        self.jobs = [collections.deque() for _ in range(parts)]
        self.grads = [{} for _ in range(parts)]
        self.running = parts  # parts still producing jobs
        self.changed = threading.Condition()
        self.error: BaseException | None = None

    def add(self, part: int, job) -> None:
        with self.changed:
            self.jobs[part].append((part, job))
            self.changed.notify()

    def part_done(self) -> None:
        with self.changed:
            self.running -= 1
            self.changed.notify_all()

    def _next(self, part: int):
        if self.jobs[part]:
            return self.jobs[part].pop()
        for jobs in self.jobs:
            if jobs:
                return jobs.popleft()
        return None

    def help(self, part: int) -> None:
        """Run jobs until none is left and none can come."""
        while True:
            with self.changed:
                while (item := self._next(part)) is None and self.running:
                    self.changed.wait()
            if item is None:
                return
            owner, job = item
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # the trainer checks gradients itself
                    self.grads[owner].update(job())
            except BaseException as err:  # kept for the caller: the other thread must not wait forever
                self.error = self.error or err


class StepRunner:
    """Computes ``(loss, correct, grads)`` for a batch on a ``plan`` with ``workers`` threads
    (1: inline)."""

    def __init__(self, plan, workers: int = 1, min_per_worker: int = 16):
        self.plan = plan
        self.workers = max(1, int(workers))
        self.min_per_worker = min_per_worker
        self.pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        self._limits = None

    def __enter__(self):
        keep_freed_memory()
        if self.workers > 1:
            self._limits = threadpool_limits(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def map(self, fn, items) -> list:
        """``[fn(item) for item in items]`` on this runner's threads (BLAS already limited)."""
        if self.pool is None:
            return [fn(item) for item in items]
        return list(self.pool.map(fn, items))

    def update(self, optimizer, params: dict, grads: dict, lr: float | None = None) -> None:
        """``optimizer.step(params, grads, lr)`` with each large array updated in halves, one per
        thread (``fast.optim``: the update is element-wise, so the same numbers)."""
        lr = start_step(optimizer, params, lr)
        jobs = []
        for key, param in params.items():
            size = param.size
            cuts = [0, size] if self.pool is None or size < SPLIT_UPDATE_SIZE else [0, size // 2, size]
            jobs += [(key, param, grads[key], slice(lo, hi)) for lo, hi in zip(cuts[:-1], cuts[1:])]
        self.map(lambda job: update_part(optimizer, *job[:3], lr, job[3]), jobs)

    def gradients(self, x, y: np.ndarray, rng: np.random.Generator, label_smoothing: float = 0.0):
        """``x`` is the batch, or a function ``x(lo, hi)`` that makes rows lo..hi of it: then
        each thread prepares its own part (preprocessing, augmentation) in parallel too."""
        n = len(y)
        parts = self.parts(n)
        self.plan.prepare(self.map if parts > 1 else None)
        if parts == 1:
            batch = batch_rows(x, 0, n)
            loss, correct, grads, caches = self.plan.loss_and_gradients(batch, y, rng, label_smoothing)
            self.plan.update_batchnorm_statistics([self.plan.batch_statistics(caches)])
            return loss, correct, grads
        shares = batch_shares(n, parts, rng)
        work = SharedWork(parts)

        def part(index, lo, hi, seed, fraction):
            try:
                batch = batch_rows(x, lo, hi)
                result = self.plan.loss_and_gradients(batch, y[lo:hi], np.random.default_rng(seed), label_smoothing,
                                                      fraction, functools.partial(work.add, index))
            finally:
                work.part_done()
            work.help(index)
            return result

        futures = [self.pool.submit(part, index, *share) for index, share in enumerate(shares)]
        results = [f.result() for f in futures]
        if work.error is not None:
            raise work.error
        return self.combine(shares, [(loss, correct, grads, self.plan.batch_statistics(caches))
                                     for (loss, correct, _, caches), grads in zip(results, work.grads)])

    def parts(self, n: int) -> int:
        """Shares of a batch of ``n`` images: one per worker, none under ``min_per_worker``."""
        return min(self.workers, max(1, n // self.min_per_worker))

    def largest_share(self, batch_size: int) -> int:
        """The most images one share of a batch of at most ``batch_size`` can hold, for a batch of
        two shares or more. A batch too short for every worker goes in fewer, larger shares (up
        to twice ``min_per_worker``), so each count of shares is tried with its longest batch."""
        largest = 0
        for parts in range(2, self.workers + 1):
            longest = batch_size if parts == self.workers else min(batch_size, (parts + 1) * self.min_per_worker - 1)
            if self.parts(longest) == parts:  # +1: batch_shares's bounds may round a share up
                largest = max(largest, -(-longest // parts) + 1)
        return largest

    def combine(self, shares: list, results: list):
        """``(loss, correct, grads)`` of the batch from each share's ``(loss, correct, grads,
        batch statistics)``: gradients (already scaled) added in a fixed order, the batchnorm
        statistics folded in."""
        grads = results[0][2]
        for _, _, part_grads, _ in results[1:]:
            for key, grad in part_grads.items():
                grads[key] += grad
        self.plan.update_batchnorm_statistics([statistics for *_, statistics in results])
        loss = sum(fraction * result[0] for (*_, fraction), result in zip(shares, results))
        return loss, sum(result[1] for result in results), grads


def batch_rows(x, lo: int, hi: int) -> np.ndarray:
    """Rows lo..hi of the batch ``x``, or those that a function ``x(lo, hi)`` makes."""
    return x(lo, hi) if callable(x) else x[lo:hi]


def batch_shares(n: int, parts: int, rng: np.random.Generator) -> list[tuple[int, int, int, float]]:
    """``(lo, hi, seed, fraction)`` of each share of a batch of ``n`` images: its rows, the seed
    of its own generator (drawn in order: dropout masks do not depend on timing) and its
    fraction of the batch (each share's loss is a mean over its images: weighted by size, they
    give the batch's mean)."""
    seeds = rng.integers(0, 2**63 - 1, size=parts)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return [(int(lo), int(hi), int(seed), (hi - lo) / n) for lo, hi, seed in zip(bounds[:-1], bounds[1:], seeds)]
