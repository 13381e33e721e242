"""Benchmark: per-layer forward/backward ms, the training step's images/s and GFLOP/s, a plain
float32 A @ B GFLOP/s measured in the same run, evaluation images/s, MNIST load time, peak RSS.

    python benchmarks/bench.py [--batch 64 128] [--config configs/lenet.yaml ...] [--json out.json]

Figures, not assertions: nothing here fails on a slow machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np

from mnistcnn import config as cfg
from mnistcnn.data import load_dataset
from mnistcnn.model import Sequential
from mnistcnn.optim import Adam
from mnistcnn.parallel import StepRunner, default_workers


def best_of(fn, repeats=5, number=3) -> float:
    """Best mean seconds of ``number`` calls over ``repeats`` rounds (the least disturbed)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def gemm_gflops(n=1024) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    return 2 * n ** 3 / best_of(lambda: a @ b) / 1e9


def per_layer(model: Sequential, x: np.ndarray, y: np.ndarray):
    rows, out, caches, inputs = [], x, [], []
    for layer in model.layers:
        inputs.append(out)
        t = best_of(lambda: layer.forward(inputs[-1], training=True, rng=np.random.default_rng(0)))
        out, cache = layer.forward(inputs[-1], training=True, rng=np.random.default_rng(0))
        caches.append(cache)
        rows.append({"layer": layer.name, "output": list(out.shape), "forward_ms": 1e3 * t})
    dout = np.ones_like(out) / len(out)
    for i in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[i]
        rows[i]["backward_ms"] = 1e3 * best_of(lambda: layer.backward(dout, caches[i]))
        dout, _ = layer.backward(dout, caches[i])
        if dout is None:
            break
    return rows


def train_step(model: Sequential, x, y, workers: int) -> float:
    opt = Adam()
    params = model.params()
    rng = np.random.default_rng(0)
    with StepRunner(model, workers) as runner:
        def step():
            _, _, grads = runner.gradients(x, y, rng)
            opt.step(params, grads)
        return best_of(step, repeats=5, number=5)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", nargs="*", default=["configs/lenet.yaml"])
    parser.add_argument("--batch", nargs="*", type=int, default=[64])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    start = time.perf_counter()
    data = load_dataset()
    load_s = time.perf_counter() - start
    report = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                          "processor": platform.processor() or platform.machine(), "workers": default_workers()},
              "mnist_load_verified_s": round(load_s, 3), "gemm_gflops": round(gemm_gflops(), 1), "runs": []}
    print(f"MNIST loaded and verified in {load_s:.2f} s; plain float32 A @ B: {report['gemm_gflops']} GFLOP/s")
    for path in args.config:
        config = cfg.load_config(path)
        for batch in args.batch:
            model = Sequential.from_config(config["model"]["layers"], config["model"]["input_shape"],
                                           np.random.default_rng(0))
            x = data.train_images[:batch].astype(np.float32) / 255
            y = data.train_labels[:batch]
            layers = per_layer(model, x, y)
            step_s = train_step(model, x, y, default_workers())
            step1_s = train_step(model, x, y, 1)
            flops = 3 * 2 * model.macs() * batch  # forward, and a backward of about twice the work
            eval_x = data.test_images[:1000]
            eval_s = best_of(lambda: model.predict_logits(eval_x, 1000, lambda b: b.astype(np.float32) / 255),
                             repeats=3, number=1)
            run = {"config": path, "batch": batch, "step_ms": 1e3 * step_s, "step_ms_one_thread": 1e3 * step1_s,
                   "train_images_per_s": batch / step_s, "epoch_50000_s": 50000 / batch * step_s,
                   "gflops": flops / step_s / 1e9, "eval_images_per_s": 1000 / eval_s, "layers": layers}
            report["runs"].append(run)
            print(f"\n{path} batch {batch}: step {run['step_ms']:.1f} ms ({run['step_ms_one_thread']:.1f} ms on one "
                  f"thread), {run['train_images_per_s']:,.0f} img/s training, epoch of 50,000 in "
                  f"{run['epoch_50000_s']:.1f} s, {run['gflops']:.1f} GFLOP/s; eval {run['eval_images_per_s']:,.0f} "
                  "img/s")
            print(f"  {'layer':<14}{'output':<20}{'forward ms':>12}{'backward ms':>13}")
            for row in layers:
                back = f"{row['backward_ms']:.2f}" if "backward_ms" in row else "-"
                print(f"  {row['layer']:<14}{str(tuple(row['output'])):<20}{row['forward_ms']:>12.2f}{back:>13}")
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {report['peak_rss_mb']:.0f} MB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
