"""mnistcnn train end to end on real MNIST: files, determinism, resume, signals, faults."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from mnistcnn.cli import main
from mnistcnn.runs import load_checkpoint

SMALL = """name: small
data:
  validation: 1000
  train_limit: {limit}
model:
  layers:
    - {{type: conv2d, filters: 8, kernel: 5, padding: 2}}
    - {{type: relu}}
    - {{type: maxpool2d, size: 2}}
    - {{type: conv2d, filters: 16, kernel: 3, padding: 1}}
    - {{type: batchnorm}}
    - {{type: relu}}
    - {{type: maxpool2d, size: 2}}
    - {{type: flatten}}
    - {{type: dropout, rate: 0.1}}
    - {{type: dense, units: 10}}
train:
  epochs: {epochs}
  batch_size: {batch}
  optimizer: {{type: adam, lr: 0.003}}
  schedule: {{type: step, step_epochs: 1, gamma: 0.5, warmup_epochs: 0.2}}
"""


def write_config(tmp_path, limit=3000, epochs=2, batch=32, name="small.yaml"):
    path = tmp_path / name
    path.write_text(SMALL.format(limit=limit, epochs=epochs, batch=batch))
    return path


def only_run(runs):
    found = [p for p in runs.iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def weights(path):
    arrays, _ = load_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith("param.") or k.startswith("buffer.")}


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("short")
    result = cli("train", write_config(tmp), "--runs-dir", tmp / "runs")
    assert result.exit_code == 0, result.output
    return only_run(tmp / "runs"), result.output


def test_short_run_writes_every_file_consistently(short_run):
    run, output = short_run
    for name in ["config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "curves.png", "train.log",
                 "checkpoints/last.npz", "checkpoints/best.npz", "status.json"]:
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_acc"] == max(r["val_acc"] for r in rows) > 0.90
    assert summary["test_acc"] > 0.90 and summary["split_sizes"] == {"train": 3000, "validation": 1000,
                                                                     "test": 10000}
    assert summary["data_verified"] and len(summary["data_sha256"]) == 4 and summary["seed"] == 0
    assert set(summary["versions"]) == {"python", "numpy", "mnistcnn"}
    _, meta = load_checkpoint(run / "checkpoints" / "best.npz")
    assert meta["epoch"] == summary["best_epoch"] and meta["config"]["name"] == "small"
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert "test accuracy" in output and str(run) in output.replace("\n", "")
    assert "epoch 2/2" in (run / "train.log").read_text()
    from PIL import Image
    assert Image.open(run / "curves.png").size[0] > 500


def test_same_seed_same_metrics(short_run, tmp_path):
    run, _ = short_run
    result = cli("train", write_config(tmp_path), "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0 and result.output.count("\n") == 1
    again = only_run(tmp_path / "runs")
    read = lambda r: [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert without_timing(read(run)) == without_timing(read(again))
    a, b = weights(run / "checkpoints/last.npz"), weights(again / "checkpoints/last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_reaches_the_same_weights(short_run, tmp_path):
    run, _ = short_run
    result = cli("train", write_config(tmp_path), "--epochs", 1, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0
    part = only_run(tmp_path / "runs")
    result = cli("train", "--resume", part, "--epochs", 2)
    assert result.exit_code == 0, result.output
    a, b = weights(run / "checkpoints/last.npz"), weights(part / "checkpoints/last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    summary = json.loads((part / "summary.json").read_text())
    assert summary["resumed"][0]["epochs"] == [1, 2] and summary["epochs"] == 2


def test_resume_refuses_config_changes(short_run):
    run, _ = short_run
    result = cli("train", "--resume", run, "--lr", "0.5")
    assert result.exit_code == 2 and "only --epochs" in result.output


def test_data_dir_with_wrong_image_size_fails_before_writing(tmp_path):
    from helpers import make_folder
    make_folder(tmp_path / "data32", size=32)
    result = cli("train", write_config(tmp_path), "--data-dir", tmp_path / "data32", "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2 and "images are (32, 32, 1)" in result.output and "model.input_shape" in result.output
    assert not (tmp_path / "r").exists()


def test_other_data_folder_trains(tmp_path):
    from helpers import make_folder
    make_folder(tmp_path / "d", n_train=300, n_test=40)
    path = write_config(tmp_path, limit=200, epochs=1)
    text = path.read_text().replace("validation: 1000", "validation: 50\n  classes: [a, b, c, d, e, f, g, h, i, j]")
    path.write_text(text)
    result = cli("train", path, "--data-dir", tmp_path / "d", "--runs-dir", tmp_path / "r", "--quiet")
    assert result.exit_code == 0, result.output
    assert not json.loads((only_run(tmp_path / "r") / "summary.json").read_text())["data_verified"]


def test_diverging_learning_rate_is_stopped_with_its_place(tmp_path):
    path = write_config(tmp_path, limit=600, epochs=3)
    # leaky units and no batchnorm: nothing stops the weights from overflowing float32
    text = path.read_text().replace("{type: adam, lr: 0.003}", "{type: sgd, lr: 1.0e+12}")
    text = text.replace("{type: batchnorm}", "{type: leaky_relu, alpha: 0.5}").replace("type: relu", "type: leaky_relu, alpha: 0.5")
    path.write_text(text.replace("type: step,", "type: constant,"))
    result = cli("train", path, "--runs-dir", tmp_path / "r")
    assert result.exit_code == 3
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: non-finite") and "epoch 1, step" in line and "layer" in line
    run = only_run(tmp_path / "r")
    assert load_checkpoint(run / "checkpoints/last.npz")[1]["step"] == 0  # the good initial checkpoint
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


# -- real processes ----------------------------------------------------------------------
def mnistcnn_command():
    exe = shutil.which("mnistcnn")
    return [exe] if exe else [sys.executable, "-m", "mnistcnn.cli"]


def wait_for(predicate, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_installed_command_trains(tmp_path):
    proc = subprocess.run(mnistcnn_command() + ["train", str(write_config(tmp_path, limit=1000, epochs=1)),
                                                "--runs-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout  # not a terminal: plain lines, no control characters
    assert "epoch 1/1" in proc.stdout and (only_run(tmp_path / "r") / "summary.json").is_file()


def _started(runs):
    def check():
        runs_found = list(runs.glob("*/metrics.jsonl")) if runs.exists() else []
        return bool(runs_found)
    return check


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_checkpoint_and_resume_matches(tmp_path, sig, code):
    config = write_config(tmp_path, limit=1500, epochs=3, batch=16)
    reference = tmp_path / "ref"
    assert cli("train", config, "--runs-dir", reference, "--quiet").exit_code == 0
    runs = tmp_path / "r"
    proc = subprocess.Popen(mnistcnn_command() + ["train", str(config), "--runs-dir", str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(_started(runs)), "training did not reach its first epoch"
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    run = only_run(runs)
    assert f"mnistcnn train --resume {run}" in err
    _, meta = load_checkpoint(run / "checkpoints/last.npz")
    assert meta["interrupted"] is True
    assert cli("train", "--resume", run, "--quiet").exit_code == 0
    a, b = weights(only_run(reference) / "checkpoints/last.npz"), weights(run / "checkpoints/last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_sigkill_at_random_moments_leaves_a_loadable_checkpoint_and_resume_matches(tmp_path):
    config = write_config(tmp_path, limit=800, epochs=4, batch=32)
    reference = tmp_path / "ref"
    assert cli("train", config, "--runs-dir", reference, "--quiet").exit_code == 0
    expected = weights(only_run(reference) / "checkpoints/last.npz")
    rng = np.random.default_rng(0)
    for attempt in range(3):
        runs = tmp_path / f"r{attempt}"
        proc = subprocess.Popen(mnistcnn_command() + ["train", str(config), "--runs-dir", str(runs), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: any(runs.glob("*/checkpoints/last.npz")) if runs.exists() else False)
        time.sleep(float(rng.uniform(0.0, 1.5)))
        proc.kill()
        proc.wait()
        run = only_run(runs)
        load_checkpoint(run / "checkpoints/last.npz")  # always loadable
        assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], "temp files left"
        result = cli("train", "--resume", run, "--quiet")
        assert result.exit_code == 0, result.output
        got = weights(run / "checkpoints/last.npz")
        assert all(np.array_equal(expected[k], got[k]) for k in expected)


@pytest.mark.slow
def test_quick_config_reaches_97_percent(tmp_path):
    """The shipped quick.yaml end to end on all of MNIST (about 20 s here)."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "quick.yaml")
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["test_acc"] > 0.97 and summary["split_sizes"]["train"] == 55000
