"""Benchmark: the training step, evaluation and every layer of the engine, through the code path
``mnistcnn train`` uses (StepRunner: one thread per core, one BLAS thread each), and the same
network in PyTorch when it is importable, timed in alternating rounds.

    python benchmarks/bench.py                       # the LeNet and every config, batch 64/128/256
    python benchmarks/bench.py --nets lenet --batch 64 --rounds 7
    python benchmarks/bench.py --json benchmarks/results.json

PyTorch is optional and never a dependency: ``pip install torch==2.13.0`` (the CPU build) to
compare. Figures, not assertions: nothing here fails on a slow machine.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from mnistcnn import config as cfg
from mnistcnn.data import load_dataset
from mnistcnn.engine.model import Sequential
from mnistcnn.engine.optim import Adam
from mnistcnn.engine.fast.parallel import StepRunner, default_workers, keep_freed_memory

ROOT = Path(__file__).resolve().parent.parent
# The engine issue's reference network: conv 5x5x32 pad 2, relu, maxpool 2, conv 5x5x64 pad 2,
# relu, maxpool 2, dense 128, relu, dense 10 (no dropout), trained with Adam on binarised MNIST.
LENET = [
    {"type": "conv2d", "filters": 32, "kernel": 5, "padding": 2}, {"type": "relu"}, {"type": "maxpool2d", "size": 2},
    {"type": "conv2d", "filters": 64, "kernel": 5, "padding": 2}, {"type": "relu"}, {"type": "maxpool2d", "size": 2},
    {"type": "flatten"}, {"type": "dense", "units": 128}, {"type": "relu"}, {"type": "dense", "units": 10},
]


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


class LayerClock:
    """Wall time of every layer's forward and backward inside the worker threads: a conv that
    does its max pool too (``forward_pooled``) counts as the conv's forward, and weight
    gradients handed over to either thread (``later``) count as their layer's backward."""

    METHODS = ("forward", "forward_pooled", "backward")

    def __init__(self, model):
        self.model, self.lock = model, threading.Lock()
        self.total = collections.defaultdict(float)
        self.originals = []

    def __enter__(self):
        for layer in self.model.layers:
            for method in self.METHODS:
                if hasattr(layer, method):
                    self.originals.append((layer, method, getattr(layer, method)))
                    kind = "backward" if method == "backward" else "forward"
                    setattr(layer, method, self._wrap(getattr(layer, method), (layer.name, kind)))
        return self

    def _add(self, key, seconds):
        with self.lock:
            self.total[key] += seconds

    def _wrap(self, fn, key):
        def timed(*args, **kwargs):
            if len(args) > 2 and args[2] is not None:  # backward(dout, cache, later)
                args = args[:2] + (self._timed_later(args[2], key),) + args[3:]
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self._add(key, time.perf_counter() - start)
            return out
        return timed

    def _timed_later(self, later, key):
        def hand_over(work):
            def timed_work():
                start = time.perf_counter()
                out = work()
                self._add(key, time.perf_counter() - start)
                return out
            later(timed_work)
        return hand_over

    def __exit__(self, *exc):
        for layer, method, original in reversed(self.originals):
            setattr(layer, method, original)


class NumpyNet:
    def __init__(self, specs, batch, x, y, workers):
        self.model = Sequential.from_config(specs, (28, 28, 1), np.random.default_rng(0))
        self.x, self.y, self.workers = x[:batch], y[:batch], workers
        self.optimizer, self.params, self.rng = Adam(), self.model.params(), np.random.default_rng(0)
        self.runner = StepRunner(self.model, workers).__enter__()

    def step(self):
        _, _, grads = self.runner.gradients(self.x, self.y, self.rng)
        self.optimizer.step(self.params, grads, run=self.runner.map)

    def evaluate(self, images):
        return self.model.predict_logits(images, 1000)

    def close(self):
        self.runner.__exit__(None, None, None)


class TorchNet:
    """The same layer stack in PyTorch (NCHW), trained with Adam."""

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

    def evaluate(self, images, batch=1000):
        self.net.eval()
        with self.torch.no_grad():
            return [self.net(self.torch.from_numpy(np.ascontiguousarray(images[i:i + batch].transpose(0, 3, 1, 2))))
                    for i in range(0, len(images), batch)]


def median_step_s(net, steps) -> float:
    return statistics.median(_timed(net.step) for _ in range(steps))


def eval_images_per_s(evaluate, images, repeats=2) -> float:
    return len(images) / min(_timed(lambda: evaluate(images)) for _ in range(repeats))


EVAL_BATCHES = (32, 64, 256, 1000)


def eval_rounds(net, other, images, rounds) -> dict:
    """Evaluation speed, batch 1000 as the issue defines it, alternating NumPy and PyTorch rounds.
    PyTorch is also timed at the batch size that suits it best here (small batches run 2x faster
    than 1000), so the comparison can be read both ways."""
    net.evaluate(images[:1000])
    out = {"eval_images_per_s": None}
    if other is None:
        out["eval_images_per_s"] = statistics.median(eval_images_per_s(net.evaluate, images) for _ in range(rounds))
        return out
    other.evaluate(images[:1000])
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
    net = NumpyNet(specs, batch, x, y, default_workers())
    for _ in range(3):
        net.step()
    with LayerClock(net.model) as clock:
        for _ in range(args.steps):
            net.step()
    fused = {pool: conv for conv, pool in net.model._pooled_convs(net.model._order(True)).items()}
    per_layer = [{"layer": layer.name, "output": [batch, *layer.output_shape],
                  "forward_ms": 1e3 * clock.total[(layer.name, "forward")] / args.steps / net.workers,
                  "backward_ms": 1e3 * clock.total[(layer.name, "backward")] / args.steps / net.workers,
                  "done_by": net.model.layers[fused[i]].name if i in fused else None}
                 for i, layer in enumerate(net.model.layers)]
    row = {"net": name, "batch": batch, "params": net.model.num_params(), "macs_per_image": net.model.macs(),
           "per_layer_ms_per_worker": per_layer}
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


def print_row(row):
    line = (f"\n{row['net']} batch {row['batch']}: step {row['step_ms']:.1f} ms, {row['train_images_per_s']:,.0f} "
            f"img/s training (epoch of 50,000 in {row['epoch_50000_s']:.1f} s), {row['gflops']:.1f} GFLOP/s; "
            f"eval {row['eval_images_per_s']:,.0f} img/s")
    print(line)
    if "torch_step_ms" in row:
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in row["rounds"])
        print(f"  PyTorch: step {row['torch_step_ms']:.1f} ms, eval {row['torch_eval_images_per_s']:,.0f} img/s; "
              f"NumPy/PyTorch step time per round: {ratios} (median {row['step_ratio_median']:.2f}); "
              f"eval speed-up per round at batch 1000: {', '.join(f'{r:.2f}' for r in row['eval_ratio_rounds'])} "
              f"(median {row['eval_ratio']:.2f}x), {row['eval_ratio_vs_best_batch']:.2f}x against "
              f"PyTorch at batch {row['torch_eval_best_batch']} ({row['torch_eval_best_images_per_s']:,.0f} img/s)")
    print(f"  {'layer (per worker)':<20}{'output':<20}{'forward ms':>12}{'backward ms':>13}")
    for layer in row["per_layer_ms_per_worker"]:
        times = (f"{'in ' + layer['done_by']:>25}" if layer.get("done_by") else
                 f"{layer['forward_ms']:>12.2f}{layer['backward_ms']:>13.2f}")
        print(f"  {layer['layer']:<20}{str(tuple(layer['output'])):<20}{times}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="*", help="lenet and/or config paths (default: lenet and configs/*.yaml)")
    parser.add_argument("--batch", nargs="*", type=int, default=[64, 128, 256])
    parser.add_argument("--rounds", type=int, default=5, help="alternating NumPy/PyTorch rounds")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is importable")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    keep_freed_memory()

    start = time.perf_counter()
    dataset = load_dataset()
    load_s = time.perf_counter() - start
    x = (dataset.train_images[:256] > 0).astype(np.float32)  # binarised, as the notebook did
    y = dataset.train_labels[:256].astype(np.int64)
    test = (dataset.test_images[:5000] > 0).astype(np.float32)
    nets = args.nets or ["lenet"] + [str(p.relative_to(ROOT)) for p in sorted((ROOT / "configs").glob("*.yaml"))]
    report = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                          "processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "workers": default_workers()},
              "mnist_load_verified_s": round(load_s, 3), "gemm_gflops": round(gemm_gflops(), 1), "runs": []}
    print(f"MNIST loaded and verified in {load_s:.2f} s; plain float32 1024x1024 A @ B: {report['gemm_gflops']} "
          f"GFLOP/s; {default_workers()} workers")

    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811  (optional: the comparison only)
            report["machine"]["torch"] = torch.__version__
        except ImportError:
            print("PyTorch is not installed: NumPy figures only (pip install torch==2.13.0 to compare)")
    for name in nets:
        specs = LENET if name == "lenet" else cfg.load_config(ROOT / name if not Path(name).is_file() else name)[
            "model"]["layers"]
        for batch in args.batch:
            row = bench_one(name, specs, batch, (x, y, test), args, torch)
            report["runs"].append(row)
            print_row(row)
    report["peak_rss_mb_with_torch" if torch else "peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(f"\npeak RSS of this process {report.get('peak_rss_mb', report.get('peak_rss_mb_with_torch')):.0f} MB"
          + (" (PyTorch included)" if torch else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
