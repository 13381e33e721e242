"""Benchmark: the training step, evaluation and every step of the engine's plan, through the
code path ``mnistcnn train`` uses (the workers it plans: threads or, for small nets, processes,
one BLAS thread each), and
the same network in PyTorch when it is importable, timed in alternating rounds.

    python benchmarks/bench.py                       # LeNet and every config, batch 64/128/256
    python benchmarks/bench.py --nets lenet --batch 64 --rounds 9
    python benchmarks/bench.py --nets lenet --batch 64 --rounds 9 --ab ../before   # against another checkout
    python benchmarks/bench.py --json benchmarks/results.json
    python benchmarks/bench.py --nets quick --workers 1                       # the planned workers or not
    python benchmarks/bench.py --nets quick --workers 2 --parallel threads    # threads instead of processes
    python benchmarks/bench.py --nets notebook quick --profile                # where a step's time goes

``lenet`` is configs/lenet-plain.yaml, the reference network (conv 5x5x32, relu, pool, conv
5x5x64, relu, pool, dense 128, relu, dense 10). ``--ab DIR`` times another checkout's engine
(imported from DIR under another name) against this one's in alternating rounds, and prints the
ratio of this one's time to the other's. PyTorch is optional and never a dependency:
``pip install torch==2.13.0`` (the CPU build) to compare. Figures, not assertions: nothing here
fails on a slow machine.
"""
from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import cProfile
import importlib
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

from mnistcnn import config as cfg
from mnistcnn.atomic import write_text
from mnistcnn.data import load_dataset
from mnistcnn.errors import ConfigError
from mnistcnn.engine.fast.parallel import default_workers, keep_freed_memory
from mnistcnn.trainer import blas_limit

ROOT = Path(__file__).resolve().parent.parent
NETS = {"lenet": ROOT / "configs" / "lenet-plain.yaml"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_gflops(n=1024, repeats=10) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class StepClock:
    """Wall time of every step of a plan inside the worker threads: its forward, and its
    backward with the weight gradients it hands over (whichever thread runs them)."""

    def __init__(self, plan):
        self.plan, self.lock = plan, threading.Lock()
        self.total = collections.defaultdict(float)

    def __enter__(self):
        for step in self.plan.training_steps:
            step.forward = self._timed(step.forward, (step.describe(), "forward"))
            step.backward = self._timed_backward(step.backward, (step.describe(), "backward"))
        return self

    def __exit__(self, *exc):
        for step in self.plan.training_steps:
            del step.forward, step.backward  # the class's methods again

    def _add(self, key, seconds):
        with self.lock:
            self.total[key] += seconds

    def _timed(self, fn, key):
        def timed(*args):
            start = time.perf_counter()
            out = fn(*args)
            self._add(key, time.perf_counter() - start)
            return out
        return timed

    def _timed_backward(self, backward, key):
        def timed(*args):
            start = time.perf_counter()
            dx, work = backward(*args)
            self._add(key, time.perf_counter() - start)
            return dx, (self._timed(work, key) if work is not None else None)
        return timed


def import_checkout(folder) -> str:
    """Import another checkout's ``mnistcnn`` under the name ``mnistcnn_ab``; returns that name.
    The name is a link on the import path of this process and of the worker processes it starts
    (PYTHONPATH), which import the engine by its module name."""
    links = Path(tempfile.mkdtemp(prefix="mnistcnn-ab-"))
    atexit.register(shutil.rmtree, links, ignore_errors=True)
    (links / "mnistcnn_ab").symlink_to(Path(folder).resolve() / "mnistcnn", target_is_directory=True)
    sys.path.insert(0, str(links))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(links), os.environ.get("PYTHONPATH")]))
    importlib.import_module("mnistcnn_ab")
    return "mnistcnn_ab"


class NumpyNet:
    """One network on one engine: this checkout's (``package`` mnistcnn) or another's. An engine
    from before the plan (engine/fast/plan.py) ran its model fast itself."""

    def __init__(self, specs, batch, x, y, package="mnistcnn", workers=None, parallel=None):
        engine = f"{package}.engine"
        model_module, optim = (importlib.import_module(f"{engine}.{name}") for name in ("model", "optim"))
        parallel_module = importlib.import_module(f"{engine}.fast.parallel")
        self.model = model_module.Sequential.from_config(specs, (28, 28, 1), np.random.default_rng(0))
        try:
            self.plan = importlib.import_module(f"{engine}.fast.plan").Plan(self.model)
        except ModuleNotFoundError:
            self.plan = self.model
        # the workers mnistcnn train would choose (an engine from before the rule: one thread per
        # core); --workers and --parallel instead, with one BLAS thread for one worker
        if hasattr(parallel_module, "planned_workers"):
            self.workers, blas_threads, self.parallel = parallel_module.planned_workers(self.model.macs(), batch)
        elif hasattr(parallel_module, "planned_threads"):
            (self.workers, blas_threads), self.parallel = parallel_module.planned_threads(self.model.macs(), batch), \
                "threads"
        else:
            self.workers, blas_threads, self.parallel = default_workers(), None, "threads"
        if workers:
            self.workers, blas_threads = workers, (1 if workers == 1 else None)
        self.parallel = parallel or self.parallel
        self.blas_threads = blas_threads
        self.x, self.y = x[:batch], y[:batch]
        self.optimizer, self.params, self.rng = optim.Adam(), self.model.params(), np.random.default_rng(0)
        # timed_workers: those whose steps of the plan run in this process (a worker process's do not)
        if self.workers > 1 and self.parallel == "processes":
            processes = importlib.import_module(f"{engine}.fast.processes")
            self.runner = processes.ProcessStepRunner(self.plan, self.workers, batch).__enter__()
            self.timed_workers = 1
        else:
            self.runner = parallel_module.StepRunner(self.plan, self.workers).__enter__()
            self.timed_workers = self.workers

    def step(self):
        _, _, grads = self.runner.gradients(self.x, self.y, self.rng)
        if hasattr(self.runner, "update"):
            self.runner.update(self.optimizer, self.params, grads)
        else:  # an engine from before StepRunner.update
            self.optimizer.step(self.params, grads, run=self.runner.map)

    def evaluate(self, images):
        """As mnistcnn train evaluates: on its worker processes if it has them, else on one
        thread per core."""
        if hasattr(self.runner, "predict_logits"):
            return self.runner.predict_logits(self.plan, images, cfg.EVAL_BATCH_SIZE)
        return self.plan.predict_logits(images, cfg.EVAL_BATCH_SIZE)

    def training_threads(self):
        """BLAS limited as the trainer limits it (evaluation is left to its own threads)."""
        return blas_limit(self.blas_threads)

    def close(self):
        self.runner.__exit__(None, None, None)


class TorchNet:
    """The same layer stack in PyTorch (NCHW), trained with Adam."""

    training_threads = contextlib.nullcontext  # PyTorch's threads are set once, below

    def __init__(self, torch, specs, batch, x, y, threads):
        nn = torch.nn
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        layers, shape = [], (1, 28, 28)
        for spec in specs:
            kind = spec["type"]
            if kind == "conv2d":
                k, s = spec.get("kernel", 3), spec.get("stride", 1)
                pad = spec.get("padding", 0)
                pad = k // 2 if pad == "same" else 0 if pad == "valid" else pad
                layers.append(nn.Conv2d(shape[0], spec["filters"], k, s, pad, bias=spec.get("bias", True)))
                shape = (spec["filters"], (shape[1] + 2 * pad - k) // s + 1, (shape[2] + 2 * pad - k) // s + 1)
            elif kind in ("maxpool2d", "avgpool2d"):
                f = spec.get("size", 2)
                s = spec.get("stride") or f
                layers.append((nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d)(f, s))
                shape = (shape[0], (shape[1] - f) // s + 1, (shape[2] - f) // s + 1)
            elif kind == "flatten":
                layers.append(nn.Flatten())
                shape = (int(np.prod(shape)),)
            elif kind == "dense":
                layers.append(nn.Linear(shape[0], spec["units"], bias=spec.get("bias", True)))
                shape = (spec["units"],)
            elif kind == "batchnorm":
                layers.append(nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0]))
            elif kind == "dropout":
                layers.append(nn.Dropout(spec.get("rate", 0.5)))
            else:
                layers.append({"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
                               "leaky_relu": nn.LeakyReLU}[kind]())
        self.torch, self.net = torch, nn.Sequential(*layers)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.x = torch.from_numpy(np.ascontiguousarray(x[:batch].transpose(0, 3, 1, 2)))
        self.y = torch.from_numpy(y[:batch].astype(np.int64))

    def step(self):
        self.net.train()
        self.optimizer.zero_grad()
        loss = self.torch.nn.functional.cross_entropy(self.net(self.x), self.y)
        loss.backward()
        self.optimizer.step()

    def evaluate(self, images, batch=cfg.EVAL_BATCH_SIZE):
        self.net.eval()
        with self.torch.no_grad():
            return [self.net(self.torch.from_numpy(np.ascontiguousarray(images[i:i + batch].transpose(0, 3, 1, 2))))
                    for i in range(0, len(images), batch)]


def median_step_s(net, steps, settle_s=0.1) -> float:
    """The median of ``steps`` timed steps, after untimed ones for ``settle_s`` seconds: the
    library timed just before leaves its threads spinning on the cores for a while (OpenMP's
    wait policy), which would slow the first steps of the next round, whichever side it is."""
    with net.training_threads():
        end = time.perf_counter() + settle_s
        net.step()
        while time.perf_counter() < end:
            net.step()
        return statistics.median(_timed(net.step) for _ in range(steps))


def eval_images_per_s(evaluate, images, repeats=2) -> float:
    return len(images) / min(_timed(lambda: evaluate(images)) for _ in range(repeats))


EVAL_BATCHES = (32, 64, 256, cfg.EVAL_BATCH_SIZE)  # PyTorch's, beside mnistcnn's own


def eval_rounds(net, other, images, rounds) -> dict:
    """Evaluation speed at mnistcnn's evaluation batch (config.EVAL_BATCH_SIZE), alternating NumPy
    and PyTorch rounds. PyTorch is also timed at each of EVAL_BATCHES and its best kept, since its
    fastest batch size is not mnistcnn's, so the comparison can be read both ways."""
    net.evaluate(images[:cfg.EVAL_BATCH_SIZE])
    out = {"eval_images_per_s": None}
    if other is None:
        out["eval_images_per_s"] = statistics.median(eval_images_per_s(net.evaluate, images) for _ in range(rounds))
        return out
    other.evaluate(images[:cfg.EVAL_BATCH_SIZE])
    by_batch = {b: eval_images_per_s(lambda im, b=b: other.evaluate(im, b), images) for b in EVAL_BATCHES}
    best = max(by_batch, key=by_batch.get)
    numpy_s, torch_s, torch_best = [], [], []
    for _ in range(rounds):
        numpy_s.append(eval_images_per_s(net.evaluate, images))
        torch_s.append(eval_images_per_s(other.evaluate, images))
        torch_best.append(eval_images_per_s(lambda im: other.evaluate(im, best), images))
    out.update(eval_images_per_s=statistics.median(numpy_s), torch_eval_images_per_s=statistics.median(torch_s),
               torch_eval_best_batch=best, torch_eval_best_images_per_s=statistics.median(torch_best),
               eval_ratio=statistics.median(a / b for a, b in zip(numpy_s, torch_s)),
               eval_ratio_rounds=[a / b for a, b in zip(numpy_s, torch_s)],
               eval_ratio_vs_best_batch=statistics.median(a / b for a, b in zip(numpy_s, torch_best)))
    return out


def bench_one(name, specs, batch, data, args, torch):
    x, y, test = data
    net = NumpyNet(specs, batch, x, y, workers=args.workers, parallel=args.parallel)
    with net.training_threads():
        for _ in range(3):
            net.step()
        with StepClock(net.plan) as clock:
            for _ in range(args.steps):
                net.step()
    per_step, done = [], -1
    for step in net.plan.training_steps:
        done = max(done, *step.layers)  # a relu moved after its pool outputs the pool's shape
        per_step.append({"step": step.describe(), "output": [batch, *net.model.layers[done].output_shape],
                         "forward_ms": 1e3 * clock.total[(step.describe(), "forward")] / args.steps / net.timed_workers,
                         "backward_ms": 1e3 * clock.total[(step.describe(), "backward")] / args.steps
                         / net.timed_workers})
    row = {"net": name, "batch": batch, "params": net.model.num_params(), "macs_per_image": net.model.macs(),
           "workers": net.workers, "parallel": net.parallel, "blas_threads": net.blas_threads,
           "per_step_ms_per_worker": per_step}
    other = TorchNet(torch, specs, batch, x, y, default_workers()) if torch else None
    if other:
        for _ in range(3):
            other.step()
    rounds = []
    for _ in range(args.rounds):  # alternate, so a noisy neighbour hits both sides alike
        numpy_s = median_step_s(net, args.steps)
        torch_s = median_step_s(other, args.steps) if other else None
        rounds.append({"numpy_ms": 1e3 * numpy_s, "torch_ms": 1e3 * torch_s if other else None,
                       "ratio": numpy_s / torch_s if other else None})
    step_s = statistics.median(r["numpy_ms"] for r in rounds) / 1e3
    row.update(step_ms=1e3 * step_s, train_images_per_s=batch / step_s, epoch_50000_s=50000 / batch * step_s,
               gflops=6 * net.model.macs() * batch / step_s / 1e9, rounds=rounds)
    if other:
        row.update(torch_step_ms=statistics.median(r["torch_ms"] for r in rounds),
                   step_ratio_median=statistics.median(r["ratio"] for r in rounds))
    row.update(eval_rounds(net, other, test, args.rounds))
    net.close()
    return row


def ab_one(name, specs, batch, data, args, package):
    """This checkout's engine against another's, in alternating rounds (each side first in every
    other round): the step time and the evaluation time of 5,000 images, this one's over the
    other's per round (below 1: this one is faster)."""
    x, y, test = data
    this, other = (NumpyNet(specs, batch, x, y, engine, args.workers, args.parallel)
                   for engine in ("mnistcnn", package))
    for net in (this, other):
        median_step_s(net, 3)
        net.evaluate(test[:cfg.EVAL_BATCH_SIZE])
    rounds = []
    for index in range(args.rounds):
        times = {}
        for net in (this, other) if index % 2 == 0 else (other, this):
            times[net] = (median_step_s(net, args.steps), len(test) / eval_images_per_s(net.evaluate, test))
        rounds.append({"step_ratio": times[this][0] / times[other][0], "eval_ratio": times[this][1] / times[other][1],
                       "step_ms": 1e3 * times[this][0], "other_step_ms": 1e3 * times[other][0],
                       "eval_images_per_s": len(test) / times[this][1],
                       "other_eval_images_per_s": len(test) / times[other][1]})
    for net in (this, other):
        net.close()
    row = {"net": name, "batch": batch, "ab_rounds": rounds,
           "step_ratio_median": statistics.median(r["step_ratio"] for r in rounds),
           "eval_ratio_median": statistics.median(r["eval_ratio"] for r in rounds)}
    print(f"\n{name} batch {batch}, this checkout / {args.ab}, {len(rounds)} alternating rounds:")
    print(f"  {'round':>5}{'step ms':>10}{'other':>10}{'ratio':>8}{'eval img/s':>13}{'other':>10}{'time ratio':>12}")
    for i, r in enumerate(rounds):
        print(f"  {i + 1:>5}{r['step_ms']:>10.2f}{r['other_step_ms']:>10.2f}{r['step_ratio']:>8.3f}"
              f"{r['eval_images_per_s']:>13,.0f}{r['other_eval_images_per_s']:>10,.0f}{r['eval_ratio']:>12.3f}")
    print(f"  median ratio: step {row['step_ratio_median']:.3f}, evaluation {row['eval_ratio_median']:.3f}")
    return row


def profile_one(name, specs, batch, data, args, top=12):
    """A training step on one thread (cProfile sees only its own thread): the median step time
    without the profiler, the calls per step that cProfile counts (Python functions and NumPy's
    C functions; ufuncs such as np.maximum are not among them), the step's temporary memory at
    its peak (tracemalloc, to which NumPy reports its arrays), and the ``top`` functions by
    their own time."""
    x, y, _ = data
    net = NumpyNet(specs, batch, x, y, workers=1)
    median_step_s(net, 3)
    step_s = median_step_s(net, args.rounds * args.steps)
    profile = cProfile.Profile()
    with net.training_threads():
        profile.runcall(lambda: [net.step() for _ in range(args.steps)])
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        net.step()
        temporary = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
    net.close()
    stats = pstats.Stats(profile).stats
    by_own_time = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    functions = [{"function": f"{Path(file).name}:{line} {function}" if line else function,
                  "us_per_step": 1e6 * own / args.steps, "calls_per_step": calls / args.steps}
                 for (file, line, function), (_, calls, own, _, _) in by_own_time]
    row = {"net": name, "batch": batch, "step_ms": 1e3 * step_s, "temporary_mb": temporary / 1e6,
           "calls_per_step": sum(calls for _, calls, _, _, _ in stats.values()) / args.steps, "functions": functions}
    print(f"\n{name} batch {batch}, one thread: step {row['step_ms']:.2f} ms, {row['calls_per_step']:.0f} calls "
          f"a step, {row['temporary_mb']:.1f} MB of temporary arrays at the step's peak")
    print(f"  {'own time':>10}{'calls':>7}  function")
    for function in functions:
        print(f"  {function['us_per_step']:>7.0f} us{function['calls_per_step']:>7.0f}  {function['function']}")
    return row


def print_row(row):
    line = (f"\n{row['net']} batch {row['batch']}: step {row['step_ms']:.1f} ms, {row['train_images_per_s']:,.0f} "
            f"img/s training (epoch of 50,000 in {row['epoch_50000_s']:.1f} s), {row['gflops']:.1f} GFLOP/s; "
            f"eval {row['eval_images_per_s']:,.0f} img/s; {row['workers']} worker(s)"
            + (" in processes" if row["workers"] > 1 and row["parallel"] == "processes" else "")
            + (f", {row['blas_threads']} BLAS thread" if row["blas_threads"] else ""))
    print(line)
    if "torch_step_ms" in row:
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in row["rounds"])
        print(f"  PyTorch: step {row['torch_step_ms']:.1f} ms, eval {row['torch_eval_images_per_s']:,.0f} img/s; "
              f"NumPy/PyTorch step time per round: {ratios} (median {row['step_ratio_median']:.2f}); "
              f"eval speed-up per round at batch {cfg.EVAL_BATCH_SIZE}: "
              f"{', '.join(f'{r:.2f}' for r in row['eval_ratio_rounds'])} "
              f"(median {row['eval_ratio']:.2f}x), {row['eval_ratio_vs_best_batch']:.2f}x against "
              f"PyTorch at batch {row['torch_eval_best_batch']} ({row['torch_eval_best_images_per_s']:,.0f} img/s)")
    print(f"  {'step of the plan (per worker)':<70}{'output':<20}{'forward ms':>12}{'backward ms':>13}")
    for step in row["per_step_ms_per_worker"]:
        print(f"  {step['step']:<70}{str(tuple(step['output'])):<20}{step['forward_ms']:>12.2f}"
              f"{step['backward_ms']:>13.2f}")


def layer_stacks(nets, parser) -> list:
    """``(name, layer specs)`` of every net, all read before any is timed, so that a mistyped
    name stops the run at once with the reason."""
    stacks = []
    for name in nets:
        path = NETS.get(name) or (Path(name) if Path(name).is_file() else ROOT / "configs" / Path(name).name)
        path = path if path.suffix else path.with_suffix(".yaml")
        try:
            stacks.append((name, cfg.load_config(path)["model"]["layers"]))
        except ConfigError as err:
            parser.error(str(err))
    return stacks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="*", help="lenet, configs by name (quick or quick.yaml) or path (default: "
                                                  "lenet and every config)")
    parser.add_argument("--batch", nargs="*", type=int, default=[64, 128, 256])
    parser.add_argument("--rounds", type=int, default=5, help="alternating NumPy/PyTorch rounds")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is importable")
    parser.add_argument("--ab", metavar="DIR", help="time another checkout's engine against this one's instead")
    parser.add_argument("--workers", type=int, help="train on this many workers, not the number mnistcnn train "
                                                    "plans (parallel.planned_workers)")
    parser.add_argument("--parallel", choices=("threads", "processes"),
                        help="the workers as threads or processes, not as mnistcnn train plans")
    parser.add_argument("--profile", action="store_true", help="profile a step on one thread instead (cProfile, "
                                                                  "tracemalloc); --steps steps are profiled")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    stacks = layer_stacks(args.nets or ["lenet"] + [p.name for p in sorted((ROOT / "configs").glob("*.yaml"))
                                                    if p != NETS["lenet"]], parser)
    keep_freed_memory()

    start = time.perf_counter()
    dataset = load_dataset()
    load_s = time.perf_counter() - start
    x = (dataset.train_images[:256] > 0).astype(np.float32)  # binarised, as the notebook did
    y = dataset.train_labels[:256].astype(np.int64)
    test = (dataset.test_images[:5000] > 0).astype(np.float32)
    report = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                          "processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads_per_step_at_most": default_workers()},
              "mnist_load_verified_s": round(load_s, 3), "gemm_gflops": round(gemm_gflops(), 1), "runs": []}
    print(f"MNIST loaded and verified in {load_s:.2f} s; plain float32 1024x1024 A @ B: {report['gemm_gflops']} "
          f"GFLOP/s; {default_workers()} cores")

    torch = None
    package = import_checkout(args.ab) if args.ab else None
    if not args.no_torch and not args.ab and not args.profile:
        try:
            import torch  # noqa: F811  (optional: the comparison only)
            report["machine"]["torch"] = torch.__version__
        except ImportError:
            print("PyTorch is not installed: NumPy figures only (pip install torch==2.13.0 to compare)")
    for name, specs in stacks:
        for batch in args.batch:
            if package:
                report["runs"].append(ab_one(name, specs, batch, (x, y, test), args, package))
                continue
            if args.profile:
                report["runs"].append(profile_one(name, specs, batch, (x, y, test), args))
                continue
            row = bench_one(name, specs, batch, (x, y, test), args, torch)
            report["runs"].append(row)
            print_row(row)
    report["peak_rss_mb_with_torch" if torch else "peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(f"\npeak RSS of this process {report.get('peak_rss_mb', report.get('peak_rss_mb_with_torch')):.0f} MB"
          + (" (PyTorch included)" if torch else ""))
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
