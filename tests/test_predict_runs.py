"""mnistcnn predict on people's pictures, and the mnistcnn runs table."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from mnistcnn.data import load_dataset
from mnistcnn.predict import mnist_style, read_grey
from mnistcnn.runs import RunDir
from mnistcnn.trainer import load_model

@pytest.fixture(scope="module")
def test_images():
    data = load_dataset()
    return data.test_images[:20], data.test_labels[:20]


def engine_predictions(run_dir, images):
    model, _, preprocess = load_model(run_dir / "checkpoints" / "best.npz")
    return model.predict_logits(images[..., None] if images.ndim == 3 else images, 256, preprocess)


def test_mnist_pngs_get_the_same_predictions_as_eval(trained_run, test_images, tmp_path, cli):
    run = trained_run
    images, _ = test_images
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(image.reshape(28, 28)).save(paths[-1])
    result = cli("predict", run, *paths, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    expected = engine_predictions(run, images).argmax(axis=1)
    got = [int(p["prediction"]) for p in report["predictions"]]
    assert got == expected.tolist()
    for p in report["predictions"]:
        probs = [t["probability"] for t in p["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9


def test_a_large_light_background_photo_is_normalised_like_mnist(trained_run, test_images, tmp_path, monkeypatch, cli):
    run = trained_run
    monkeypatch.chdir(tmp_path)  # short relative paths keep the table's columns wide in an 80-column test
    images, _ = test_images
    logits = engine_predictions(run, images)
    index = int(np.argmax(logits.max(axis=1) - np.sort(logits, axis=1)[:, -2]))  # the clearest digit
    original = images[index].reshape(28, 28)
    big = Image.fromarray(255 - original).resize((300, 420), Image.BICUBIC)  # dark ink on white, stretched
    big = Image.merge("RGB", [big, big, big])
    path = tmp_path / "photo.jpg"
    big.save(path, quality=90)
    normalised = mnist_style(read_grey(path))
    assert normalised.shape == (28, 28) and normalised.max() > 200
    assert normalised[:2].max() == 0 and normalised[:, :2].max() == 0  # a black frame around the digit, as MNIST
    result = cli("predict", run, path, "--json")
    assert result.exit_code == 0, result.output
    assert int(json.loads(result.output)["predictions"][0]["prediction"]) == int(logits[index].argmax())
    table = cli("predict", run, "photo.jpg")
    assert table.exit_code == 0 and "photo.jpg" in table.output and "#3" in table.output


def test_predict_errors(trained_run, tmp_path, cli):
    run = trained_run
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    result = cli("predict", run, text)
    assert result.exit_code == 2 and "not an image" in result.output and "Traceback" not in result.output
    result = cli("predict", run, tmp_path / "missing.png")
    assert result.exit_code == 2 and "no such image file" in result.output
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    result = cli("predict", run, blank)
    assert result.exit_code == 2 and "no digit found" in result.output
    result = cli("predict", tmp_path / "norun", blank)
    assert result.exit_code == 2 and "no such run directory" in result.output


def test_runs_table_reports_each_state(trained_run, tmp_path, cli):
    run = trained_run
    folder = tmp_path / "runs"
    shutil.copytree(run, folder / run.name)
    for name, status in (("a-20260101-000000", {"status": "interrupted", "pid": 1}),
                         ("b-20260101-000001", {"status": "failed", "pid": 1}),
                         ("c-20260101-000002", {"status": "running", "pid": os.getpid()}),
                         ("d-20260101-000003", {"status": "running", "pid": 2**22 + 12345})):  # no such process
        fake = RunDir(folder / name)
        fake.path.mkdir()
        (fake.path / "config.yaml").write_text("name: x\ntrain: {epochs: 4}\n")
        (fake.path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_acc": 0.5, "seconds": 2.0}) + "\n")
        fake.write_json("status.json", status)
    (folder / "not-a-run").mkdir()
    result = cli("runs", folder, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["run"]: r for r in json.loads(result.output)}
    summary = json.loads((run / "summary.json").read_text())
    assert rows[run.name]["status"] == "finished" and rows[run.name]["test_acc"] == summary["test_acc"]
    assert rows[run.name]["best_val_acc"] == summary["best_val_acc"]
    assert rows[run.name]["epochs"] == summary["epochs"]
    assert [rows[n]["status"] for n in ("a-20260101-000000", "b-20260101-000001", "c-20260101-000002",
                                        "d-20260101-000003")] == ["interrupted", "failed", "running", "interrupted"]
    assert rows["a-20260101-000000"]["started"] == "2026-01-01T00:00:00" and rows["a-20260101-000000"]["epochs"] == 1
    assert "not-a-run" not in rows
    table = cli("runs", folder)
    assert table.exit_code == 0 and "finished" in table.output and "interrupted" in table.output
    assert cli("runs", tmp_path / "none").exit_code == 2
