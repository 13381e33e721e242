"""mnistcnn train end to end on real MNIST: files, determinism, resume, signals, faults."""
import json
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from mnistcnn import config as cfg
from mnistcnn.callbacks import Callbacks, Pruned
from mnistcnn.runs import load_checkpoint


def test_short_run_writes_every_file_consistently(trained, metrics_without_time):
    run, output = trained
    for name in ["config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "curves.png", "train.log",
                 "checkpoints/last.npz", "checkpoints/best.npz", "status.json"]:
        assert (run / name).is_file(), name
    rows = metrics_without_time(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_acc"] == max(r["val_acc"] for r in rows) > 0.90
    assert summary["test_acc"] > 0.90 and summary["split_sizes"] == {"train": 3000, "validation": 1000,
                                                                     "test": 10000}
    assert summary["data_verified"] and len(summary["data_sha256"]) == 4 and summary["seed"] == 0
    assert summary["data_source"] == "bundled MNIST"  # a recorded result names no path of the machine
    assert set(summary["versions"]) == {"python", "numpy", "mnistcnn", "cpu", "blas", "workers"}
    _, meta = load_checkpoint(run / "checkpoints" / "best.npz")
    assert meta["epoch"] == summary["best_epoch"] and meta["config"]["name"] == "small"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert "test accuracy" in output and str(run) in output.replace("\n", "")
    assert "epoch 2/2" in (run / "train.log").read_text()
    recorded = cfg.parse_yaml((run / "config.yaml").read_text(), "config.yaml")["train"]
    assert recorded["workers"] == summary["versions"]["workers"] >= 1  # the workers chosen, for a resume
    assert recorded["parallel"] in ("threads", "processes")
    assert "workers: " in (run / "train.log").read_text()
    from PIL import Image
    assert Image.open(run / "curves.png").size[0] > 500


def test_summary_and_checkpoints_name_the_machine(trained_run):
    from threadpoolctl import threadpool_info

    machine = json.loads((trained_run / "summary.json").read_text())["versions"]
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert isinstance(machine["workers"], int) and machine["workers"] >= 1
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert [lib["internal_api"] for lib in machine["blas"]] == [lib["internal_api"] for lib in blas] != []
    assert set(machine["blas"][0]) == {"internal_api", "version", "architecture", "num_threads"}
    _, meta = load_checkpoint(trained_run / "checkpoints" / "best.npz")
    assert (meta["versions"]["cpu"], meta["versions"]["workers"]) == (machine["cpu"], machine["workers"])


def test_cpu_model_reads_linux_model_name_else_asks_the_platform(tmp_path, monkeypatch):
    import platform

    from mnistcnn.runs import cpu_model

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n")
    assert cpu_model(x86) == "AMD EPYC 7B13 64-Core Processor"
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n")  # no model name on ARM
    assert cpu_model(arm) == "arm" and cpu_model(tmp_path / "missing") == "arm"


def test_same_seed_same_metrics(trained_run, tmp_path, cli, write_config, only_run, weights, metrics_without_time):
    run = trained_run
    result = cli("train", write_config(tmp_path), "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0 and result.output.count("\n") == 1
    again = only_run(tmp_path / "runs")
    assert metrics_without_time(run) == metrics_without_time(again)
    a, b = weights(run / "checkpoints/last.npz"), weights(again / "checkpoints/last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_worker_processes_train_as_worker_threads(tmp_path, cli, write_config, only_run, weights, float32_close,
                                                  metrics_without_time):
    """train.parallel: processes and threads, two workers each, give the same run."""
    runs = {}
    for parallel in ("threads", "processes"):
        result = cli("train", write_config(tmp_path, limit=1500, epochs=1), "--runs-dir", tmp_path / parallel,
                     "--quiet", "--set", "train.workers=2", "--set", f"train.parallel={parallel}")
        assert result.exit_code == 0, result.output
        runs[parallel] = only_run(tmp_path / parallel)
        recorded = cfg.parse_yaml((runs[parallel] / "config.yaml").read_text(), "config.yaml")["train"]
        assert (recorded["workers"], recorded["parallel"]) == (2, parallel)
    threads, processes = (metrics_without_time(runs[name]) for name in ("threads", "processes"))
    # float32 rounding apart: a validation image on a tie may go either way
    assert np.allclose([row["val_acc"] for row in threads], [row["val_acc"] for row in processes], rtol=0,
                       atol=2 / 1000)
    a, b = weights(runs["threads"] / "checkpoints/last.npz"), weights(runs["processes"] / "checkpoints/last.npz")
    for key in a:
        float32_close(b[key], a[key], what=key)


def test_resume_reaches_the_same_weights(trained_run, tmp_path, cli, write_config, only_run, weights):
    run = trained_run
    result = cli("train", write_config(tmp_path), "--epochs", 1, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0
    part = only_run(tmp_path / "runs")
    result = cli("train", "--resume", part, "--epochs", 2)
    assert result.exit_code == 0, result.output
    a, b = weights(run / "checkpoints/last.npz"), weights(part / "checkpoints/last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    summary = json.loads((part / "summary.json").read_text())
    assert summary["resumed"][0]["epochs"] == [1, 2] and summary["epochs"] == 2


def test_resume_refuses_config_changes(trained_run, cli):
    for options, named in ((("--lr", "0.5"), "--lr"), (("--set", "train.seed=3"), "--set"),
                           (("--epochs", "3", "--batch-size", "8"), "--batch-size"),
                           (("--runs-dir", "elsewhere", "--name", "other"), "--name, --runs-dir")):
        result = cli("train", "--resume", trained_run, *options)
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: --resume continues a run with its own config, in its own folder: "
                                        f"{named} cannot change it (only --epochs and --data-dir may); to train "
                                        f"with other settings, start a new run with them: mnistcnn train "
                                        f"{trained_run / 'config.yaml'} ..."), result.output


def test_data_dir_with_wrong_image_size_fails_before_writing(tmp_path, cli, write_config, make_folder):
    make_folder(tmp_path / "data32", size=32)
    result = cli("train", write_config(tmp_path), "--data-dir", tmp_path / "data32", "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2 and "images are (32, 32, 1)" in result.output and "model.input_shape" in result.output
    assert not (tmp_path / "r").exists()


def test_other_data_folder_trains(tmp_path, cli, write_config, only_run, make_folder):
    make_folder(tmp_path / "d", n_train=300, n_test=40)
    path = write_config(tmp_path, limit=200, epochs=1)
    text = path.read_text().replace("validation: 1000", "validation: 50\n  classes: [a, b, c, d, e, f, g, h, i, j]")
    path.write_text(text)
    result = cli("train", path, "--data-dir", tmp_path / "d", "--runs-dir", tmp_path / "r", "--quiet")
    assert result.exit_code == 0, result.output
    assert not json.loads((only_run(tmp_path / "r") / "summary.json").read_text())["data_verified"]


def test_diverging_learning_rate_is_stopped_with_its_place(tmp_path, cli, write_config, only_run):
    path = write_config(tmp_path, limit=600, epochs=3)
    # leaky units and no batchnorm: nothing stops the weights from overflowing float32
    text = path.read_text().replace("{type: adam, lr: 0.003}", "{type: sgd, lr: 1.0e+12}")
    leaky = "{type: leaky_relu, alpha: 0.5}"
    text = text.replace("{type: batchnorm}", leaky).replace("type: relu", "type: leaky_relu, alpha: 0.5")
    path.write_text(text.replace("type: step, step_epochs: 1, gamma: 0.5,", "type: constant,"))
    result = cli("train", path, "--runs-dir", tmp_path / "r")
    assert result.exit_code == 3
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: non-finite") and "epoch 1, step" in line and "layer" in line
    run = only_run(tmp_path / "r")
    assert line.endswith(f"train again with a lower one, e.g. mnistcnn train {run / 'config.yaml'} --lr 1e+11")
    assert load_checkpoint(run / "checkpoints/last.npz")[1]["step"] == 0  # the good initial checkpoint
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    listed = cli("runs", tmp_path / "r", "--json")
    assert [row["status"] for row in json.loads(listed.output)] == ["diverged"]  # a failure with its cause


# -- real processes ----------------------------------------------------------------------
def test_installed_command_trains(tmp_path, write_config, only_run, mnistcnn_command):
    proc = subprocess.run(mnistcnn_command + ["train", str(write_config(tmp_path, limit=1000, epochs=1)),
                                                "--runs-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout  # not a terminal: plain lines, no control characters
    assert "epoch 1/1" in proc.stdout and (only_run(tmp_path / "r") / "summary.json").is_file()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cli, write_config, only_run):
    """``(config, run)``: a config of many short epochs (a signal lands mid-run), trained whole."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = write_config(folder, limit=1500, epochs=12, batch=16)
    assert cli("train", config, "--runs-dir", folder / "runs", "--quiet").exit_code == 0
    return config, only_run(folder / "runs")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_checkpoint_and_resume_matches(tmp_path, sig, code, cli, uninterrupted, only_run, weights,
                                                     mnistcnn_command, wait_for, first_epoch_done):
    config, reference = uninterrupted
    runs = tmp_path / "r"
    proc = subprocess.Popen(mnistcnn_command + ["train", str(config), "--runs-dir", str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: first_epoch_done(runs), what="training's first epoch")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    run = only_run(runs)
    assert f"mnistcnn train --resume {run}" in err
    _, meta = load_checkpoint(run / "checkpoints/last.npz")
    assert meta["interrupted"] is True
    status = json.loads((run / "status.json").read_text())
    where = f"at epoch {status['epoch']}, batch {status['batch']}/{status['batches']}"  # as the resume line counts
    assert f"{where}; checkpoint {run / 'checkpoints' / 'last.npz'}" in (run / "train.log").read_text()
    assert cli("train", "--resume", run, "--quiet").exit_code == 0
    assert f"resuming {run} {where}" in (run / "train.log").read_text()
    a, b = weights(reference / "checkpoints/last.npz"), weights(run / "checkpoints/last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_sigkill_at_random_moments_leaves_a_loadable_checkpoint_and_resume_matches(tmp_path, cli, write_config,
                                                                                   only_run, weights,
                                                                                   mnistcnn_command, wait_for):
    config = write_config(tmp_path, limit=800, epochs=8, batch=32)  # long enough for most kills to land mid-run
    reference = tmp_path / "ref"
    assert cli("train", config, "--runs-dir", reference, "--quiet").exit_code == 0
    expected = weights(only_run(reference) / "checkpoints/last.npz")
    rng, cut_short = np.random.default_rng(0), 0

    def epochs_ended(runs):
        return [json.loads(line) for path in runs.glob("*/metrics.jsonl") for line in path.read_text().splitlines()]

    for attempt in range(3):
        runs = tmp_path / f"r{attempt}"
        proc = subprocess.Popen(mnistcnn_command + ["train", str(config), "--runs-dir", str(runs), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a moment within epoch 2, 3 or 4 of 8, whatever the machine's speed: mid-run, mid-write perhaps
        ended = wait_for(lambda: len(epochs_ended(runs)) > attempt and epochs_ended(runs), what=f"epoch {attempt + 1}")
        time.sleep(float(rng.uniform(0.0, ended[-1]["seconds"])))
        proc.kill()
        proc.wait()
        run = only_run(runs)
        load_checkpoint(run / "checkpoints/last.npz")  # always loadable
        finished = (run / "summary.json").is_file()
        result = cli("train", "--resume", run, "--quiet")
        if finished:  # the kill came after the end: there is nothing to resume, and the run is whole
            assert result.exit_code == 2 and "there is nothing to resume" in result.output, result.output
        else:
            cut_short += 1
            assert result.exit_code == 0, result.output
            assert not list(run.rglob(".*.tmp")), "resume leaves no temp file of a write the kill cut short"
        got = weights(run / "checkpoints/last.npz")
        assert all(np.array_equal(expected[k], got[k]) for k in expected)
    assert cut_short, "no kill landed mid-run: nothing was resumed"


@pytest.mark.slow
def test_quick_config_reaches_97_percent(tmp_path, cli, only_run, configs):
    """The shipped quick.yaml end to end on all of MNIST."""
    config = configs / "quick.yaml"
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["test_acc"] > 0.97 and summary["split_sizes"]["train"] == 55000


def test_the_trainer_moves_sgd_momentum_and_adam_beta1_with_the_cycle(tmp_path):
    from mnistcnn.engine.optim import Schedule
    from mnistcnn.data import prepare_data
    from mnistcnn.trainer import Trainer

    for optimizer, attribute in (("sgd", "momentum"), ("adam", "beta1")):
        config = cfg.validate({"data": {"train_limit": 256, "validation": 64},
                               "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]},
                               "train": {"epochs": 1, "batch_size": 64, "optimizer": {"type": optimizer, "lr": 0.01},
                                         "schedule": {"type": "onecycle"}}})
        trainer = Trainer(config, prepare_data(config))
        trainer.fit()
        last = Schedule(0.01, 4, 1, type="onecycle").momentum(3)
        assert getattr(trainer.optimizer, attribute) == pytest.approx(last) and last != 0.9


def test_a_run_trained_with_the_old_onecycle_keeps_its_curve_as_cosine():
    old = {"train": {"schedule": {"type": "onecycle", "warmup_epochs": 1.0, "step_epochs": 1, "gamma": 0.1,
                                  "min_lr": 0.0}}}
    assert cfg.upgrade_run_config(old)["train"]["schedule"]["type"] == "cosine"
    new = {"train": {"schedule": {"type": "onecycle", "pct_start": 0.3}}}
    assert cfg.upgrade_run_config(new) is new
    with pytest.raises(Exception, match="warmup_epochs acts only with schedule constant, step or cosine"):
        cfg.from_raw({"train": {"schedule": {"type": "onecycle", "warmup_epochs": 1}}}, "config.yaml")


def test_elastic_distortion_trains_and_a_seed_repeats_it_exactly():
    from mnistcnn.data import prepare_data
    from mnistcnn.trainer import Trainer

    config = cfg.validate({"data": {"train_limit": 512, "validation": 64, "augment": {"elastic": 8.0, "rotate": 5}},
                           "model": {"layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "activation": "relu"},
                                                {"type": "flatten"}, {"type": "dense", "units": 10}]},
                           "train": {"epochs": 1, "batch_size": 64, "workers": 2}})
    weights = []
    for _ in range(2):
        trainer = Trainer(config, prepare_data(config))
        summary = trainer.fit()
        assert np.isfinite(summary["test_loss"])
        weights.append(trainer.model.state_dict())
    assert all(np.array_equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_repeated_images_train_alike_on_worker_processes_and_threads(float32_close):
    """data.augment.repeats: 2 steps on twice the images (the worker processes take them too)."""
    from mnistcnn.data import prepare_data
    from mnistcnn.trainer import Trainer

    histories, weights = {}, {}
    for repeats, parallel in ((2, "threads"), (2, "processes"), (1, "threads")):
        config = cfg.validate({"data": {"train_limit": 2048, "validation": 64, "augment": {"shift": 2,
                                                                                            "repeats": repeats}},
                               "model": {"layers": [{"type": "conv2d", "filters": 4, "kernel": 3},
                                                    {"type": "relu"}, {"type": "flatten"},
                                                    {"type": "dense", "units": 10}]},
                               "train": {"epochs": 2, "batch_size": 512, "workers": 2, "parallel": parallel}})
        trainer = Trainer(config, prepare_data(config))
        trainer.fit()
        histories[repeats, parallel] = [row["val_acc"] for row in trainer.history]
        weights[repeats, parallel] = trainer.model.state_dict()
    assert np.allclose(histories[2, "threads"], histories[2, "processes"], rtol=0, atol=1 / 64)  # a tie apart
    for key, value in weights[2, "threads"].items():
        float32_close(weights[2, "processes"][key], value, what=key)
    assert not np.array_equal(weights[2, "threads"]["param.3.W"], weights[1, "threads"]["param.3.W"])


class StopAfterEpoch(Callbacks):
    """Keeps each epoch's training weights; asks the trainer to stop after epoch ``stop_at``."""

    def __init__(self, stop_at=None):
        self.stop_at, self.snapshots = stop_at, []

    def on_start(self, trainer):
        self.trainer = trainer

    def on_epoch_end(self, row):
        self.snapshots.append(self.trainer.model.state_dict())
        if row["epoch"] == self.stop_at:
            self.trainer.request_stop(signal.SIGINT)


@pytest.mark.parametrize("kind", ["swa", "ema"])
def test_averaged_weights_are_scored_kept_and_resumed_exactly(tmp_path, kind):
    from mnistcnn.runs import RunDir
    from mnistcnn.data import prepare_data
    from mnistcnn.trainer import evaluate, load_model, train_run

    config = cfg.validate({"data": {"train_limit": 512, "validation": 128},
                           "model": {"layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "bias": False},
                                                {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool2d"},
                                                {"type": "flatten"}, {"type": "dense", "units": 10}]},
                           "train": {"epochs": 3, "batch_size": 64, "optimizer": {"lr": 0.01},
                                     "average": {"type": kind, "decay": 0.9, "start": 0.4}}})
    data = prepare_data(config)
    whole = StopAfterEpoch()
    outcome = train_run(config, data, whole, runs_dir=tmp_path / "whole")
    arrays, meta = load_checkpoint(outcome.run.checkpoint("last"))
    if kind == "swa":  # the start (0.4 of 24 steps) leaves out epoch 1: epochs 2 and 3 are averaged
        mean = {key: (whole.snapshots[1][key] + whole.snapshots[2][key]) / 2 for key in whole.snapshots[2]}
        assert all(np.allclose(arrays[key], mean[key], rtol=1e-5, atol=1e-7) for key in mean if "param." in key)
    assert all(np.array_equal(arrays["training." + key], value) for key, value in whole.snapshots[2].items())
    model, _, preprocess = load_model(outcome.run.checkpoint("last"))
    _, val_acc, _ = evaluate(cfg.fast_plan(model, config), data.val_x, data.val_y, preprocess)
    # the averaged weights, with their own batchnorm statistics (scored here in this process, by the trainer
    # maybe on a worker process: a tie within rounding may go either way)
    assert abs(val_acc - meta["history"][-1]["val_acc"]) <= 1 / len(data.val_y)
    model, best, _ = load_model(outcome.run.checkpoint("best"))
    _, test_acc, _ = evaluate(cfg.fast_plan(model, config), data.test_x, data.test_y, preprocess)
    assert abs(test_acc - outcome.summary["test_acc"]) <= 1 / len(data.test_y)
    assert best["epoch"] == outcome.summary["best_epoch"]

    stopped = train_run(config, data, StopAfterEpoch(stop_at=2), runs_dir=tmp_path / "parts")
    assert stopped.summary is None
    resumed = train_run(config, data, runs_dir=tmp_path / "parts", resume=RunDir.open(stopped.run.path))
    again, _ = load_checkpoint(resumed.run.checkpoint("last"))
    assert sorted(again) == sorted(arrays)
    assert all(np.array_equal(again[key], arrays[key]) for key in arrays if not key.startswith("optim."))
    assert resumed.summary["test_acc"] == outcome.summary["test_acc"]


@pytest.mark.parametrize("kind, start, averaged_epochs", [
    ("swa", 1 / 3, [2, 3]),  # start ends exactly at epoch 1's last step: epoch 1 is left out
    ("ema", 22.6 / 24, [3]),  # start rounds to step 23 of 24: the last step alone is averaged
])
def test_averaging_begins_after_start_with_batchnorm_measured_on_training_images(tmp_path, kind, start,
                                                                                averaged_epochs):
    from mnistcnn.data import prepare_data
    from mnistcnn.trainer import load_model, train_run

    config = cfg.validate({"data": {"train_limit": 512, "validation": 128},
                           "model": {"layers": [{"type": "conv2d", "filters": 4, "kernel": 3, "bias": False},
                                                {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool2d"},
                                                {"type": "flatten"}, {"type": "dense", "units": 10}]},
                           "train": {"epochs": 3, "batch_size": 64, "optimizer": {"lr": 0.01},
                                     "average": {"type": kind, "decay": 0.9, "start": start}}})
    data = prepare_data(config)
    assert len(data.train_x) == 512  # 8 steps an epoch, 24 in all
    whole = StopAfterEpoch()
    outcome = train_run(config, data, whole, runs_dir=tmp_path)
    arrays, _ = load_checkpoint(outcome.run.checkpoint("last"))
    # an ema that began at the last step, and an swa's first epoch, are copies of the training weights
    mean = {key: sum(whole.snapshots[epoch - 1][key] for epoch in averaged_epochs) / len(averaged_epochs)
            for key in whole.snapshots[2] if "param." in key}
    assert all(np.allclose(arrays[key], mean[key], rtol=1e-5, atol=1e-7) for key in mean)
    # the averaged weights' batchnorm statistics are the mean of those of the training images' batches
    model, _, preprocess = load_model(outcome.run.checkpoint("last"))
    batches = [model.layers[0].forward_pass(preprocess(data.train_x[i:i + 64]), training=False, rng=None)[0]
               for i in range(0, 512, 64)]
    norm = model.layers[1].buffers
    assert np.allclose(norm["running_mean"], np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0),
                       rtol=1e-4, atol=1e-6)
    # (the fast plan sums a variance's float32 terms in another order; a batch's differs from another's by %)
    assert np.allclose(norm["running_var"], np.mean([b.var(axis=(0, 1, 2), ddof=1) for b in batches], axis=0),
                       rtol=1e-3, atol=1e-6)


class SignalThenPrune(Callbacks):
    """A signal arrives in the last batch of epoch ``epoch``; with ``prune``, the epoch's end then
    prunes the run, as a sweep's pruner can at that moment."""

    def __init__(self, epoch, prune):
        self.epoch, self.prune = epoch, prune

    def on_start(self, trainer):
        self.trainer = trainer

    def on_batch(self, epoch, batch, batches, loss, acc, images_per_s):
        if epoch == self.epoch - 1 and batch == batches:
            self.trainer.request_stop(signal.SIGINT)

    def on_epoch_end(self, row):
        if self.prune and row["epoch"] == self.epoch:
            raise Pruned("pruned")


def test_a_signal_the_run_ends_anyway_is_still_reported(tmp_path):
    # a sweep's worker stops taking trials on it: a run that finished or was pruned did not use it up
    from mnistcnn.data import prepare_data
    from mnistcnn.trainer import train_run

    config = cfg.validate({"data": {"train_limit": 256, "validation": 128},
                           "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]},
                           "train": {"epochs": 2, "batch_size": 64}})
    data = prepare_data(config)
    finished = train_run(config, data, SignalThenPrune(epoch=2, prune=False), runs_dir=tmp_path)
    assert finished.summary is not None and finished.signal == signal.SIGINT
    pruned = train_run(config, data, SignalThenPrune(epoch=1, prune=True), runs_dir=tmp_path)
    assert pruned.pruned == "pruned" and pruned.signal == signal.SIGINT
    plain = train_run(config, data, runs_dir=tmp_path)
    assert plain.summary is not None and plain.signal is None


# -- the best epoch, early stopping, resuming, the schedule, label smoothing -----------------------
def tiny_config(data=None, **train):
    """A linear model on 256 images, 4 steps an epoch on one worker: a run of seconds."""
    return cfg.validate({"data": {"train_limit": 256, "validation": 128, **(data or {})},
                         "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]},
                         "train": {"epochs": 6, "batch_size": 64, "workers": 1, "optimizer": {"lr": 0.01}, **train}})


@pytest.fixture
def scripted_validation(monkeypatch):
    """``scripted_validation(data, accuracies)``: from now on the validation accuracy the trainer
    reads for ``data`` is the next of ``accuracies`` each epoch, so that a test decides which epoch
    is the best; losses, logits and the test split's score stay the model's own."""
    from mnistcnn import trainer

    evaluate = trainer.evaluate

    def arrange(data, accuracies):
        script = iter(accuracies)

        def scripted(plan, images, labels, *args, **kwargs):
            loss, acc, logits = evaluate(plan, images, labels, *args, **kwargs)
            return (loss, next(script), logits) if images is data.val_x else (loss, acc, logits)

        monkeypatch.setattr(trainer, "evaluate", scripted)

    return arrange


def scored_test_loss(path, data) -> float:
    """The test split's loss of a checkpoint's model, scored in this test."""
    from mnistcnn.trainer import evaluate, load_model

    model, meta, preprocess = load_model(path)
    return evaluate(cfg.fast_plan(model, meta["config"]), data.test_x, data.test_y, preprocess)[0]


def test_best_checkpoint_is_the_best_validation_epoch_and_early_stopping_keeps_it(tmp_path, scripted_validation):
    from mnistcnn.data import prepare_data
    from mnistcnn.trainer import train_run

    config = tiny_config(early_stopping={"patience": 2, "min_delta": 0.05})
    data = prepare_data(config)
    # epoch 2 is the best; epoch 3 improves on it by less than min_delta, epoch 4 not at all: two
    # epochs without improvement, so the run stops before epoch 5
    scripted_validation(data, [0.5, 0.7, 0.72, 0.6, 0.9, 0.9])
    each_epoch = StopAfterEpoch()
    outcome = train_run(config, data, each_epoch, runs_dir=tmp_path)
    summary = outcome.summary
    assert (summary["epochs"], summary["stopped_early"], summary["best_epoch"], summary["best_val_acc"]) == \
        (4, True, 2, 0.7)
    best, meta = load_checkpoint(outcome.run.checkpoint("best"))
    assert meta["epoch"] == 2
    assert all(np.array_equal(best[key], value) for key, value in each_epoch.snapshots[1].items())
    assert not all(np.array_equal(best[key], value) for key, value in each_epoch.snapshots[3].items())
    # the test split is scored once, with the best epoch's weights, not the last's
    best_loss, last_loss = (scored_test_loss(outcome.run.checkpoint(which), data) for which in ("best", "last"))
    assert summary["test_loss"] == pytest.approx(best_loss, rel=1e-5) != last_loss


def test_a_run_stopped_early_then_trained_longer_gets_its_patience_anew_and_keeps_its_best(tmp_path,
                                                                                          scripted_validation):
    from mnistcnn.data import prepare_data
    from mnistcnn.runs import RunDir
    from mnistcnn.trainer import train_run

    config = tiny_config(early_stopping={"patience": 2})
    data = prepare_data(config)
    # stops after epoch 4; trained longer, epoch 5 only ties the best and epoch 6 is worse: it
    # stops again after two more epochs, its best still epoch 2
    scripted_validation(data, [0.5, 0.7, 0.6, 0.6, 0.7, 0.65, 0.9, 0.9])
    stopped = train_run(config, data, runs_dir=tmp_path)
    assert (stopped.summary["epochs"], stopped.summary["stopped_early"]) == (4, True)
    longer = {**config, "train": {**config["train"], "epochs": 8}}  # as --resume RUN --epochs 8 reads it
    outcome = train_run(longer, data, runs_dir=tmp_path, resume=RunDir.open(stopped.run.path))
    summary = outcome.summary
    assert (summary["epochs"], summary["stopped_early"], summary["best_epoch"], summary["best_val_acc"]) == \
        (6, True, 2, 0.7)
    assert load_checkpoint(outcome.run.checkpoint("best"))[1]["epoch"] == 2


class StopAt(Callbacks):
    """Asks the trainer to stop after batch ``batch`` of epoch ``epoch`` (both counted from 1)."""

    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch

    def on_start(self, trainer):
        self.trainer = trainer

    def on_batch(self, epoch, batch, batches, loss, acc, images_per_s):
        if (epoch + 1, batch) == (self.epoch, self.batch):
            self.trainer.request_stop(signal.SIGINT)


def test_a_run_resumed_mid_epoch_with_augmentation_is_the_uninterrupted_run(tmp_path, scripted_validation, weights,
                                                                            metrics_without_time):
    from mnistcnn.data import prepare_data
    from mnistcnn.runs import RunDir
    from mnistcnn.trainer import train_run

    config = cfg.validate({"data": {"train_limit": 256, "validation": 128,
                                    "augment": {"shift": 2, "rotate": 10, "repeats": 2}},
                           "model": {"layers": [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "relu"},
                                                {"type": "flatten"}, {"type": "dropout", "rate": 0.2},
                                                {"type": "dense", "units": 10}]},
                           "train": {"epochs": 3, "batch_size": 64, "workers": 1}})
    data = prepare_data(config)
    accuracies = [0.9, 0.5, 0.6]  # epoch 1 stays the best: the resumed run must remember it
    scripted_validation(data, accuracies)
    whole = train_run(config, data, runs_dir=tmp_path / "whole")
    scripted_validation(data, accuracies)
    stopped = train_run(config, data, StopAt(epoch=2, batch=2), runs_dir=tmp_path / "parts")
    assert stopped.summary is None
    assert load_checkpoint(stopped.run.checkpoint("last"))[1]["iterator"] == {"epoch": 1, "batch": 2}
    resumed = train_run(config, data, runs_dir=tmp_path / "parts", resume=RunDir.open(stopped.run.path))
    for which in ("last", "best"):  # the same process and code path: the same weights to the last bit
        a, b = weights(whole.run.checkpoint(which)), weights(resumed.run.checkpoint(which))
        assert all(np.array_equal(a[key], b[key]) for key in a), which
    # the interrupted epoch's training loss and accuracy are the whole epoch's
    assert metrics_without_time(resumed.run.path) == metrics_without_time(whole.run.path)
    figures = ("best_epoch", "best_val_acc", "test_loss", "test_acc")
    assert [resumed.summary[key] for key in figures] == [whole.summary[key] for key in figures]


@pytest.mark.parametrize("preprocess", [{"type": "standardize"}, {"type": "binarize", "threshold": 100}])
def test_a_checkpoint_scores_as_its_run_did_with_the_runs_preprocessing(tmp_path, preprocess):
    from mnistcnn.data import prepare_data
    from mnistcnn.trainer import train_run

    config = tiny_config({"preprocess": preprocess}, epochs=1)
    data = prepare_data(config)
    outcome = train_run(config, data, runs_dir=tmp_path)
    assert scored_test_loss(outcome.run.checkpoint("best"), data) == pytest.approx(outcome.summary["test_loss"],
                                                                                   rel=1e-5)


def test_a_run_is_not_resumed_on_another_data_split(tmp_path):
    from mnistcnn.data import prepare_data
    from mnistcnn.errors import CheckpointError
    from mnistcnn.runs import RunDir
    from mnistcnn.trainer import train_run

    config = tiny_config(epochs=2)
    stopped = train_run(config, prepare_data(config), StopAt(epoch=1, batch=2), runs_dir=tmp_path)
    other = prepare_data({**config, "data": {**config["data"], "split": "random"}})  # other validation images
    with pytest.raises(CheckpointError, match="was trained on another data split"):
        train_run(config, other, runs_dir=tmp_path, resume=RunDir.open(stopped.run.path))


def test_label_smoothing_reaches_the_training_loss():
    from mnistcnn.data import prepare_data
    from mnistcnn.engine.losses import softmax_cross_entropy
    from mnistcnn.trainer import Trainer

    config = tiny_config({"train_limit": 64}, epochs=1, label_smoothing=0.2)  # one step: the initial weights' loss
    trainer = Trainer(config, prepare_data(config))
    logits = trainer.plan.predict_logits(trainer.data.train_x, cfg.EVAL_BATCH_SIZE, trainer.preprocess)
    smoothed, _ = softmax_cross_entropy(logits, trainer.data.train_y, label_smoothing=0.2)
    plain, _ = softmax_cross_entropy(logits, trainer.data.train_y)
    tolerance = 1e-4  # the training step and this evaluation sum in another order
    assert abs(smoothed - plain) > 10 * tolerance * plain  # far apart: the check below tells them apart
    trainer.fit()
    assert trainer.history[0]["train_loss"] == pytest.approx(smoothed, rel=tolerance)


def test_each_step_takes_the_schedules_rate_for_that_step(monkeypatch):
    from mnistcnn.data import prepare_data
    from mnistcnn.engine.fast.parallel import StepRunner
    from mnistcnn.trainer import Trainer

    rates, update = [], StepRunner.update

    def recorded(runner, optimizer, params, grads, lr=None):
        rates.append(lr)
        return update(runner, optimizer, params, grads, lr)

    monkeypatch.setattr(StepRunner, "update", recorded)
    config = tiny_config(epochs=3, optimizer={"type": "sgd", "lr": 0.1},
                         schedule={"type": "step", "warmup_epochs": 1, "step_epochs": 1, "gamma": 0.5})
    trainer = Trainer(config, prepare_data(config))
    trainer.fit()
    # 4 steps an epoch: a warm-up from lr / 4 to lr, then halved every epoch counted from its end
    assert rates == pytest.approx([0.025, 0.05, 0.075, 0.1] + [0.1] * 4 + [0.05] * 4)
    assert [row["lr"] for row in trainer.history] == pytest.approx([0.1, 0.1, 0.05])  # each epoch's last step's


class LastCheckpointEpochs(Callbacks):
    """The epoch that checkpoints/last.npz holds at the end of each epoch."""

    def on_open(self, run, resumed):
        self.run, self.epochs = run, []

    def on_epoch_end(self, row):
        self.epochs.append(load_checkpoint(self.run.checkpoint("last"))[1]["epoch"])


def test_last_checkpoint_is_written_every_n_epochs_and_at_the_end(tmp_path):
    from mnistcnn.data import prepare_data
    from mnistcnn.trainer import train_run

    config = tiny_config(epochs=3, checkpoint={"every": 2})
    written = LastCheckpointEpochs()
    outcome = train_run(config, prepare_data(config), written, runs_dir=tmp_path)
    assert written.epochs == [0, 2, 3]  # the first from before training; epoch 3 is the last
    assert load_checkpoint(outcome.run.checkpoint("last"))[1]["epoch"] == outcome.summary["epochs"] == 3


def test_train_log_says_where_the_run_started_or_resumed_its_data_each_epoch_and_the_result(tmp_path):
    from types import SimpleNamespace

    from mnistcnn.callbacks import RunLog
    from mnistcnn.runs import RunDir

    shown = []

    class Shown(RunLog):
        def show(self, message):
            shown.append(message)

    run, log = RunDir.create(tmp_path, "r"), Shown()
    data = SimpleNamespace(source="data/mnist", verified=False, train_x=[0] * 50, val_x=[0] * 20, test_x=[0] * 10)
    log.on_open(run, None)
    log.on_start(SimpleNamespace(epochs=3, workers=1, data=data,
                                 config={"train": {"blas_threads": 2, "parallel": "threads"}}))
    log.on_epoch_end({"epoch": 2, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.25, "val_acc": 0.9, "lr": 0.01,
                      "seconds": 1.5, "images_per_s": 1234.0})
    log.on_stop("interrupted", "Ctrl-C")
    log.on_end({"best_val_acc": 0.9, "best_epoch": 2, "test_acc": 0.875, "wall_seconds": 3.0})
    written = run.log_path.read_text().splitlines()  # each line is in the file as soon as it is said
    log.close()
    log.log("after its end")  # shown only: the file is closed
    for epochs in ((3, 5), (5, 5)):
        resumed = Shown()
        resumed.on_open(run, {"epochs": epochs, "from_epoch": 2, "from_batch": 4, "batches": 10})
        resumed.close()
    started = [f"run directory: {run.path}",
               "data: data/mnist (unverified); train 50, validation 20, test 10",
               "workers: 1 worker thread with 2 BLAS threads",
               "epoch 2/3: train loss 0.5000 acc 80.00% | val loss 0.2500 acc 90.00% | lr 0.01 | 1.5 s, 1,234 img/s"]
    ended = ["interrupted: Ctrl-C", "done: best val acc 90.00% (epoch 2), test acc 87.50%, 3.0 s"]
    resumes = [f"resuming {run.path} at epoch 3, batch 4/10; epochs 3 -> 5",
               f"resuming {run.path} at epoch 3, batch 4/10"]
    assert written == started + ended
    assert run.log_path.read_text().splitlines() == started + ended + resumes
    assert shown == started + ["after its end"] + resumes  # the command says a stop and the result in its own words


def test_the_workers_line_says_how_a_batch_is_spread_over_the_cores():
    from mnistcnn.callbacks import threads_words

    shared = "each with a share of every batch and one BLAS thread"
    assert threads_words(4, None, "processes") == f"4 workers (this process and 3 worker processes), {shared}"
    assert threads_words(4, None, "threads") == f"4 worker threads, {shared}"
    assert threads_words(1, None, "processes") == "1 worker thread with the BLAS default threads"
    assert threads_words(1, 4) == "1 worker thread with 4 BLAS threads"


def test_a_resumes_dry_run_says_where_it_goes_on_from(run, cli):
    """The dry run of a resume planned all the run's epochs in its words ("3 epochs of N steps"), as
    though it would train them all again: it says the epoch and batch it resumes at, as training does."""
    result = cli("train", "--resume", run, "--epochs", "3", "--dry-run")
    assert result.exit_code == 0, result.output
    assert re.search(rf"dry run: resumes {re.escape(str(run))} at epoch 3, batch 0/\d+ of 3 epochs of \d+ steps",
                     result.output), result.output


class TickingClock:
    """The trainer's ``time`` with a clock that moves a quarter second at each look, so that an
    epoch's seconds are known exactly and the summary's time and throughput can be checked."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 0.25
        return self.now

    strftime = staticmethod(time.strftime)


class ClockedEpochs(StopAt):
    """The ticking clock's time between the start and the end of each epoch trained whole."""

    def __init__(self, clock, epoch=None, batch=None):
        super().__init__(epoch, batch)
        self.clock, self.started, self.elapsed = clock, {}, {}

    def on_epoch_start(self, epoch, batches, batch):
        if batch == 0:
            self.started[epoch + 1] = self.clock.now

    def on_epoch_end(self, row):
        if row["epoch"] in self.started:
            self.elapsed[row["epoch"]] = self.clock.now - self.started[row["epoch"]]


@pytest.mark.parametrize("data, train, images_an_epoch", [
    ({}, {"batch_size": 100, "drop_last": True}, 200),  # the last 56 images are dropped
    ({"augment": {"rotate": 10, "repeats": 2}}, {"batch_size": 64}, 512),  # each image twice
])
def test_the_summary_times_and_counts_the_images_the_epochs_trained_on(tmp_path, monkeypatch, scripted_validation,
                                                                       data, train, images_an_epoch):
    from mnistcnn import trainer
    from mnistcnn.data import prepare_data
    from mnistcnn.runs import RunDir

    clock = TickingClock()
    monkeypatch.setattr(trainer, "time", clock)
    config = tiny_config(data, epochs=3, **train)
    data = prepare_data(config)
    scripted_validation(data, [0.9, 0.5, 0.6])  # the last epoch is not the best
    first, second = ClockedEpochs(clock, epoch=2, batch=1), ClockedEpochs(clock)
    stopped = trainer.train_run(config, data, first, runs_dir=tmp_path)
    outcome = trainer.train_run(config, data, second, runs_dir=tmp_path, resume=RunDir.open(stopped.run.path))
    rows = [json.loads(line) for line in (outcome.run.path / "metrics.jsonl").read_text().splitlines()]
    elapsed = {**first.elapsed, **second.elapsed}
    assert sorted(elapsed) == [1, 3]  # epoch 2 was interrupted
    for epoch, seconds in elapsed.items():  # an epoch's time is the time it took, its evaluation's at most added
        assert 0 < rows[epoch - 1]["seconds"] <= seconds
    for row in rows:
        assert row["images_per_s"] == pytest.approx(images_an_epoch / row["seconds"], rel=1e-3)
    # the time before the interruption counts: the summary's time is the epochs' time
    wall_seconds = sum(row["seconds"] for row in rows)
    summary = outcome.summary
    assert (summary["epochs"], summary["best_val_acc"], summary["final_val_acc"]) == (3, 0.9, 0.6)
    assert summary["wall_seconds"] == pytest.approx(wall_seconds, abs=0.01)
    assert summary["images_per_s"] == pytest.approx(3 * images_an_epoch / wall_seconds, rel=1e-3)


def test_each_resumption_of_a_run_is_in_its_summary(tmp_path):
    from mnistcnn.data import prepare_data
    from mnistcnn.runs import RunDir
    from mnistcnn.trainer import train_run

    config = tiny_config(epochs=3)
    data = prepare_data(config)
    outcome = train_run(config, data, StopAt(epoch=1, batch=2), runs_dir=tmp_path)
    for stop in (StopAt(epoch=2, batch=3), None):
        outcome = train_run(config, data, stop, runs_dir=tmp_path, resume=RunDir.open(outcome.run.path))
    assert [(entry["from_epoch"], entry["from_batch"]) for entry in outcome.summary["resumed"]] == [(0, 2), (1, 3)]


def test_a_resumed_run_records_its_first_options_with_the_ones_given_again_replaced(tmp_path, cli, write_config,
                                                                                  only_run):
    config = write_config(tmp_path, limit=300, epochs=1)
    started = cli("train", config, "--runs-dir", tmp_path / "runs", "--set", "train.optimizer.lr=0.002", "--epochs", 1)
    assert started.exit_code == 0, started.output
    run = only_run(tmp_path / "runs")
    resumed = cli("train", "--resume", run, "--epochs", 2)
    assert resumed.exit_code == 0, resumed.output
    status = json.loads((run / "status.json").read_text())
    assert (status["config"], status["overrides"]) == (str(config), ["--set train.optimizer.lr=0.002", "--epochs 2"])


def test_a_run_trained_longer_whose_config_yaml_was_deleted_reads_its_last_checkpoints_config(tmp_path,
                                                                                            scripted_validation):
    from mnistcnn.data import prepare_data
    from mnistcnn.runs import RunDir
    from mnistcnn.trainer import load_run_config, train_run

    config = tiny_config(epochs=2)
    data = prepare_data(config)
    scripted_validation(data, [0.9, 0.5, 0.4])  # best.npz stays epoch 1's, saved while 2 epochs were planned
    first = train_run(config, data, runs_dir=tmp_path)
    longer = {**config, "train": {**config["train"], "epochs": 3}}
    run = train_run(longer, data, runs_dir=tmp_path, resume=RunDir.open(first.run.path)).run
    run.config_file.unlink()
    read, source = load_run_config(RunDir.open(run.path))
    assert (read["train"]["epochs"], source) == (3, run.checkpoint("last"))


def test_an_average_s_batchnorm_statistics_take_no_batch_of_one_image():
    # 129 images in batches of 64: a last batch of one image would fold a variance of 0 into a batchnorm over
    # one value per channel, a third of its running variance
    from mnistcnn.averaging import Averaged

    config = cfg.validate({"model": {"input_shape": [4, 4, 1], "layers": [
                               {"type": "flatten"}, {"type": "dense", "units": 6}, {"type": "batchnorm"},
                               {"type": "dense", "units": 10}]},
                           "train": {"batch_size": 64, "average": {"type": "swa"}}})
    model = cfg.build_model(config, np.random.default_rng(0))
    averaged = Averaged(config, 2, model, cfg.fast_plan(model, config))
    images = np.random.default_rng(1).random((129, 4, 4, 1), dtype=np.float32)
    averaged.after_epoch(2, {key: value.copy() for key, value in model.params().items()}, images, lambda x: x)
    dense = model.layers[1]
    inputs = [dense.forward(images[lo:hi].reshape(hi - lo, -1)) for lo, hi in ((0, 64), (64, 129))]
    expected = np.mean([batch.var(axis=0, ddof=1) for batch in inputs], axis=0)  # running: unbiased, as PyTorch
    np.testing.assert_allclose(model.layers[2].buffers["running_var"], expected, rtol=1e-4)
