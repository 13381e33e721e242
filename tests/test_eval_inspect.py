"""mnistcnn eval and inspect-layer on a short real run and on a fresh config."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistcnn.layer_report import load_target


def test_eval_agrees_with_the_run_summary(run, cli):
    result = cli("eval", run, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    summary = json.loads((run / "summary.json").read_text())
    # training scored it on its worker processes, eval in this one: a tie within rounding may go either way
    assert abs(report["accuracy"] - summary["test_acc"]) <= 1 / 10000 and report["images"] == 10000
    confusion = np.array(report["confusion"])
    assert confusion.sum() == 10000 and np.trace(confusion) / 10000 == report["accuracy"]
    assert sum(row["support"] for row in report["per_class"]) == 10000
    assert "pictures" not in report and not (run / "eval-test-best.json").exists()  # --json writes nothing
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = rows[summary["best_epoch"] - 1]["step"]  # the best checkpoint's training so far
    quiet = cli("eval", run, "--quiet")
    assert quiet.exit_code == 0 and report["steps"] == steps and f"after {steps:,} training steps)" in quiet.output
    assert report["epoch"] == summary["best_epoch"]  # the best checkpoint's epoch, counted from 1 as training does
    written = json.loads((run / "eval-test-best.json").read_text())
    assert written["accuracy"] == report["accuracy"]
    for picture in written["pictures"]:
        assert Image.open(picture).size[0] > 300


def test_eval_table_and_other_splits(run, cli):
    result = cli("eval", run, "--split", "validation", "--checkpoint", "last")
    assert result.exit_code == 0 and "confusion matrix" in result.output and "precision" in result.output
    assert (run / "eval-validation-last.json").is_file()
    result = cli("eval", run / "checkpoints" / "best.npz", "--quiet")
    assert result.exit_code == 0 and result.output.startswith("test: accuracy")


def test_eval_reports_the_split_it_names_by_true_rows_and_predicted_columns(trained_run, cli):
    from mnistcnn.evaluation import load_for_target

    result = cli("eval", trained_run, "--split", "validation", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    labels = load_for_target(trained_run)[3].val_y
    confusion = np.array(report["confusion"])
    assert report["images"] == len(labels) == confusion.sum()
    assert confusion.sum(axis=1).tolist() == np.bincount(labels, minlength=10).tolist()  # a row: a true class
    for label, row in enumerate(report["per_class"]):
        right, predicted, support = confusion[label, label], confusion[:, label].sum(), confusion[label].sum()
        precision, recall = right / predicted if predicted else 0.0, right / support
        f1 = 2 * precision * recall / (precision + recall) if right else 0.0
        assert row == pytest.approx({"precision": precision, "recall": recall, "f1": f1, "support": support}), label
    wrong = report["misclassified"]
    assert len(wrong) == min(16, report["images"] - np.trace(confusion))
    assert all(labels[each["index"]] == each["true"] != each["predicted"] for each in wrong)
    confidences = [each["confidence"] for each in wrong]
    assert confidences == sorted(confidences, reverse=True)  # the most confident mistakes first


def test_eval_scores_the_checkpoint_it_names(run, cli):
    from mnistcnn.runs import load_checkpoint, save_checkpoint

    # a best checkpoint unlike the last: its last layer's weights zeroed, it answers one class for every image
    arrays, meta = load_checkpoint(run / "checkpoints" / "last.npz")
    last_weights = max((key for key in arrays if key.startswith("param.") and key.endswith(".W")),
                       key=lambda key: int(key.split(".")[1]))
    arrays[last_weights] = np.zeros_like(arrays[last_weights])
    meta.pop("sha256")
    save_checkpoint(run / "checkpoints" / "best.npz", arrays, meta)
    best, last = (json.loads(cli("eval", run, "--json", "--checkpoint", which).output) for which in ("best", "last"))
    assert best["accuracy"] < 0.2 and last["accuracy"] > 0.9


def test_eval_of_a_run_it_cannot_write_in_prints_the_scores_then_names_out(run, tmp_path, cli, read_only):
    before = sorted(path.name for path in run.iterdir())
    read_only(run)
    result = cli("eval", run)
    assert result.exit_code == 1
    assert result.stdout.startswith("test: accuracy") and "confusion matrix" in result.stdout, result.output
    assert result.stderr == (f"error: {run / 'eval-test-best-confusion.png'}: cannot write: Permission denied; make "
                             "the folder writable, or write elsewhere with --out DIR (--json writes nothing)\n")
    assert sorted(path.name for path in run.iterdir()) == before
    quiet = cli("eval", run, "--quiet")
    assert quiet.exit_code == 1 and quiet.stdout.startswith("test: accuracy") and quiet.stderr == result.stderr
    elsewhere = cli("eval", run, "--out", tmp_path / "mine" / "eval")
    assert elsewhere.exit_code == 0, elsewhere.output
    assert sorted(path.name for path in (tmp_path / "mine" / "eval").iterdir()) == [
        "eval-test-best-confusion.png", "eval-test-best-misclassified.png", "eval-test-best.json"]
    both = cli("eval", run, "--json", "--out", tmp_path / "x")
    assert both.exit_code == 2 and both.output == ("error: --json prints the report and writes no files; give --json "
                                                   "or --out DIR, not both\n")


def test_inspect_layer_images_are_a_range_up_to_the_split_end_and_an_empty_one_is_refused():
    from mnistcnn.errors import UsageError
    from mnistcnn.layer_report import parse_indices

    assert parse_indices(None, "990:1000", 1000).tolist() == list(range(990, 1000))  # STOP is past the last image
    assert parse_indices(None, None, 5).tolist() == [0, 1, 2, 3, 4]  # the default few, within a small split
    assert parse_indices(None, ":", 3).tolist() == [0, 1, 2]
    with pytest.raises(UsageError, match="^--indices 5:5: STOP must be above START, e.g. 5:21$"):
        parse_indices(None, "5:5", 1000)
    with pytest.raises(UsageError, match="^--indices 0:1001: the split has 1000 images; use a range within 0:1000$"):
        parse_indices(None, "0:1001", 1000)


def test_a_layer_outputs_dead_channels_and_zeros_and_an_index_named_in_the_splits_images():
    from mnistcnn.layer_report import index_words, output_statistics

    out = np.zeros((2, 1, 2, 3), np.float32)  # channel 0 dead, channel 1 alive in one value, channel 2 negative
    out[0, 0, 0, 1], out[..., 2] = 1.0, -1.0
    stats = output_statistics(out)
    assert stats["dead_channel_fraction"] == pytest.approx(1 / 3) and stats["zero_fraction"] == pytest.approx(7 / 12)
    assert stats["zero_fraction_per_channel"] == [1.0, 0.75, 0.0]
    # the batch's image 3 is the split's image 5 + 3
    assert index_words((3, 2), (16, 14, 14, 8), "validation", 5) == \
        "validation image 8, row 2, all 14 columns, all 8 channels"


def test_an_eval_out_folder_that_cannot_be_made_is_refused_before_any_scoring(trained_run, tmp_path, cli):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("")
    result = cli("eval", trained_run, "--out", blocker / "eval")
    assert result.exit_code == 2 and result.output == (
        f"error: --out {blocker / 'eval'}: {blocker} is a file, not a folder; write elsewhere with --out DIR "
        "(--json writes nothing)\n")


def test_inspect_layer_in_a_run_it_cannot_write_in_names_out_and_no_images(run, tmp_path, cli, read_only):
    read_only(run)
    result = cli("inspect-layer", run, "0")
    assert result.exit_code == 2 and result.output == (f"error: {run / 'inspect'}: cannot create this folder "
                                                       "(Permission denied); write elsewhere with --out DIR "
                                                       "(--no-images writes nothing)\n")
    (tmp_path / "pictures").mkdir()
    read_only(tmp_path / "pictures")
    given = cli("inspect-layer", run, "0", "--out", tmp_path / "pictures")
    assert given.exit_code == 2 and given.output == (
        f"error: --out {tmp_path / 'pictures'}: cannot write in this folder (Permission denied); write elsewhere "
        "with --out DIR (--no-images writes nothing)\n")
    assert cli("inspect-layer", run, "0", "--no-images").exit_code == 0


def test_eval_of_a_missing_run_or_one_without_checkpoints_says_what_to_do(tmp_path, cli):
    output = cli("eval", tmp_path / "nope").output
    assert "nope: no such run directory or checkpoint" in output and "`mnistcnn runs` lists the runs" in output
    empty = tmp_path / "r"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "config.yaml").write_text("name: x\n")
    result = cli("eval", empty)
    assert result.exit_code == 2 and f"no checkpoints/best.npz, nor any other checkpoint; train its config again: " \
        f"mnistcnn train {empty / 'config.yaml'}" in result.output, result.output
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    result = cli("eval", bad)
    assert result.exit_code == 2 and "corrupt" in result.output and "Traceback" not in result.output


LAYER_TYPES = ["conv2d", "relu", "maxpool2d", "batchnorm", "flatten", "dropout", "dense"]


@pytest.mark.parametrize("source", ["run", "config"])
def test_inspect_every_layer_type_matches_the_engine(run, tmp_path, source, cli, write_config):
    target = run if source == "run" else write_config(tmp_path)
    model, config, preprocess, data, *_ = load_target(target)
    x, y = preprocess(data.val_x[:8]), data.val_y[:8]
    # the engine's own training step, on a second copy (it moves batchnorm's running statistics)
    _, _, grads = load_target(target)[0].loss_and_gradients(x, y, np.random.default_rng(0))
    seen = set()
    for index, layer in enumerate(model.layers):
        if layer.type_name in seen:
            continue
        seen.add(layer.type_name)
        out_dir = tmp_path / f"pics{index}"
        result = cli("inspect-layer", target, index, "--indices", "0:8", "--json", "--out", out_dir)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        out = x
        for each in model.layers[:index + 1]:
            out = each.forward(out)
        assert report["output_shape"] == list(out.shape)
        assert report["forward"]["mean"] == pytest.approx(float(out.astype(np.float64).mean()), rel=1e-6, abs=1e-9)
        assert report["forward"]["max"] == pytest.approx(float(out.max()))
        for key in layer.params:
            assert report["backward"][f"d{key}"]["mean"] == pytest.approx(
                float(grads[f"{index}.{key}"].astype(np.float64).mean()), rel=1e-6, abs=1e-12)
        if not layer.params:
            assert report["params"] == {}
        for picture in report["pictures"]:
            assert Image.open(picture).size[0] > 100
        if out.ndim == 4:
            assert any("feature-maps" in p for p in report["pictures"])
    assert seen == set(LAYER_TYPES)


def test_inspect_list_and_plain_output(run, cli):
    result = cli("inspect-layer", run, "--list")
    assert result.exit_code == 0 and "0_conv2d" in result.output
    # the list ends with how to look inside one of them
    assert result.output.splitlines()[-1].startswith(f"next: mnistcnn inspect-layer {run} 0_conv2d"), result.output
    result = cli("inspect-layer", run, "2_maxpool2d", "--no-images")
    assert result.exit_code == 0 and "this layer has no parameters" in result.output and "Z[" in result.output


def test_inspect_layer_takes_a_type_that_names_one_layer_and_lists_the_choices_otherwise(trained_run, cli):
    # the help promised "an index or a name", and `dense` (the net's one dense layer) was refused
    layers = json.loads(cli("inspect-layer", trained_run, "--list", "--json").output)
    for kind in ("dense", "flatten", "batchnorm"):  # one layer of each in the small config
        result = cli("inspect-layer", trained_run, kind, "--no-images", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["index"] == next(each["index"] for each in layers if each["type"] == kind)
    convs = [f"{each['index']}:{each['name']}" for each in layers if each["type"] == "conv2d"]
    result = cli("inspect-layer", trained_run, "conv2d", "--no-images")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"{trained_run}: 2 layers are conv2d: {', '.join(convs)}; give one's index or name" in result.output
    result = cli("inspect-layer", trained_run, "densse", "--no-images")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "no layer 'densse'" in result.output and "0:0_conv2d" in result.output
    assert "or a type that names one layer: batchnorm, flatten, dropout, dense" in result.output


def test_inspect_pictures_of_other_images_are_written_beside_not_over_earlier_ones(run, cli):
    # the names ignored --split and --index: a train image's pictures replaced the validation ones
    def pictures(*args):
        result = cli("inspect-layer", run, "0", *args, "--json")
        assert result.exit_code == 0, result.output
        return {Path(path).name: Path(path).read_bytes() for path in json.loads(result.output)["pictures"]}

    validation = pictures()  # the first 16 validation images
    train = pictures("--split", "train", "--index", "0")
    assert sorted(validation) == ["layer00-0_conv2d-best-filters.png",
                                  "layer00-0_conv2d-best-validation-image0-feature-maps.png",
                                  "layer00-0_conv2d-best-validation-images0-15-histogram.png"]
    assert sorted(train) == ["layer00-0_conv2d-best-filters.png", "layer00-0_conv2d-best-train-image0-feature-maps.png",
                             "layer00-0_conv2d-best-train-image0-histogram.png"]
    last = pictures("--checkpoint", "last")  # another model's pictures of the same images
    assert sorted(last) == sorted(name.replace("-best-", "-last-") for name in validation)
    for name, made in validation.items():  # still there, as the first call wrote them
        assert (run / "inspect" / name).read_bytes() == made, name
    other = pictures("--split", "validation", "--index", "3")
    assert sorted(set(other) & (set(validation) | set(train))) == ["layer00-0_conv2d-best-filters.png"]


def test_inspect_gradient_to_weight_ratio_of_a_fresh_model(tmp_path, cli, write_config):
    # a fresh model's biases are all zero: |db| / |b| has no meaning there, and used to print as
    # 1e+11 (divided by a guard value); the weights' ratio is still |dW| / |W|
    target = write_config(tmp_path)
    result = cli("inspect-layer", target, "0", "--indices", "0:8", "--json", "--no-images")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    model = load_target(target)[0]
    W = model.layers[0].params["W"].astype(np.float64)
    assert report["backward"]["db"]["grad_to_weight_norm"] is None
    assert report["backward"]["dA_prev"]["norm"] > 0  # the first layer's gradient at the image, which training skips
    assert report["backward"]["dW"]["grad_to_weight_norm"] == pytest.approx(
        report["backward"]["dW"]["norm"] / np.linalg.norm(W), rel=1e-9)
    result = cli("inspect-layer", target, "0", "--indices", "0:8", "--no-images")
    assert result.exit_code == 0 and "|db| / |b| = n/a (b is all zeros)" in result.output
    assert "|dW| / |W| = " in result.output and "e+" not in result.output.split("|dW| / |W| = ")[1].split()[0]


def test_inspect_layer_refuses_bad_layers_images_and_out_folders_by_name(trained_run, tmp_path, cli):
    run = trained_run
    result = cli("inspect-layer", run, "42", "--out", tmp_path / "pictures")
    assert result.exit_code == 2 and f"{run}: no layer '42'" in result.output and "0:0_conv2d" in result.output
    assert "--list" in result.output and not (tmp_path / "pictures").exists()  # refused: nothing made
    for name in ("layer0.png", "layer0.PNG"):  # a picture's name, in any case, is no folder for several
        result = cli("inspect-layer", run, "0", "--out", tmp_path / name)
        assert result.exit_code == 2 and "is where the pictures go, a folder" in result.output, result.output
        assert not (tmp_path / name).exists()
    result = cli("inspect-layer", run, "0", "--index", "3", "--indices", "0:4")
    assert result.exit_code == 2 and "--index 3 and --indices 0:4: give one of them" in result.output
    result = cli("inspect-layer", run, "conv9")
    assert result.exit_code == 2 and "valid:" in result.output
    result = cli("inspect-layer", run, "0", "--index", "5000")
    assert result.exit_code == 2 and "the split has 1000 images" in result.output
    result = cli("inspect-layer", run, "0", "--indices", "5:2")
    assert result.exit_code == 2 and "--indices 5:2: STOP must be above START" in result.output
    layers = json.loads(cli("inspect-layer", run, "--list", "--json").output)
    for args in (("-1", "--no-images", "--json"), ("--no-images", "--json", "--", "-1")):  # as the help's example
        last = cli("inspect-layer", run, *args)
        assert last.exit_code == 0 and json.loads(last.output)["index"] == layers[-1]["index"], last.output
    typo = cli("inspect-layer", run, "-1", "--bogus")  # options are still checked
    assert typo.exit_code == 2 and "no such option '--bogus'" in typo.output
    result = cli("inspect-layer", tmp_path / "missing", "0")
    assert result.exit_code == 2 and "no such run directory" in result.output


def test_inspect_data_writes_a_grid_of_augmented_samples(tmp_path, cli, configs):
    out = tmp_path / "aug.png"
    config = configs / "best.yaml"
    result = cli("inspect-data", config, "--count", "8", "--out", out)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] > 300
    # the title says the augmentation in words, not as a dict
    said = "shifts of up to 2 px, rotations of up to 10°, scaling by up to 10%, each image 2 times a batch"
    assert Image.open(out).text["Title"] == (f"config best.yaml: train images 0 to 7, preprocess standardize; "
                                             f"augmentation: {said}")
    assert cli("inspect-data", configs / "quick.yaml", "--count", "1", "--out", out).exit_code == 0
    assert Image.open(out).text["Title"] == "config quick.yaml: train image 0, preprocess scale; augmentation: none"


def test_inspect_data_of_a_run_uses_the_runs_config_and_writes_into_it(run, cli):
    result = cli("inspect-data", run, "--count", "4")
    assert result.exit_code == 0, result.output
    assert Image.open(run / "augmented.png").size[0] > 100
    assert Image.open(run / "augmented.png").text["Title"].startswith(f"run {run.name}: train images 0 to 3, ")


def test_an_out_folder_that_cannot_be_made_is_named_and_nothing_is_written(trained_run, tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("kept")
    layer = cli("inspect-layer", trained_run, "0", "--out", blocker)
    assert layer.exit_code == 2 and layer.output == f"error: --out {blocker}: is a file; give a folder (it is " \
                                                    "created if missing)\n", layer.output
    grid = cli("inspect-data", trained_run, "--out", blocker / "sub" / "grid.png")
    assert grid.exit_code == 2 and grid.output == (f"error: --out {blocker / 'sub' / 'grid.png'}: {blocker} is a "
                                                   "file, not a folder; write elsewhere with --out FILE.png\n")
    layer = cli("inspect-layer", trained_run, "0", "--out", blocker / "sub")
    assert layer.exit_code == 2 and layer.output == (f"error: --out {blocker / 'sub'}: {blocker} is a file, not a "
                                                     "folder; write elsewhere with --out DIR (--no-images writes "
                                                     "nothing)\n")
    (tmp_path / "no-data").mkdir()
    refused = cli("inspect-data", trained_run, "--data-dir", tmp_path / "no-data", "--out", tmp_path / "deep" / "g.png")
    assert refused.exit_code == 2 and "no train-images" in refused.output, refused.output
    assert blocker.read_text() == "kept" and sorted(path.name for path in tmp_path.iterdir()) == ["a-file", "no-data"]


def test_the_missing_folders_of_an_out_option_are_made(run, tmp_path, cli):
    for args in (("eval", run, "--quiet", "--out", tmp_path / "a" / "eval"),
                 ("inspect-layer", run, "0", "--out", tmp_path / "b" / "layer"),
                 ("inspect-data", run, "--count", "4", "--out", tmp_path / "c" / "grid" / "x.png")):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.output)
    assert [path.name for path in (tmp_path / "c" / "grid").iterdir()] == ["x.png"]
    assert all(any((tmp_path / name).rglob("*.png")) for name in "ab")


def test_inspect_data_pictures_a_config_changed_by_set_but_not_a_run(tmp_path, trained_run, cli, configs):
    config = configs / "best.yaml"
    plain, rotated = tmp_path / "plain.png", tmp_path / "rotated.png"
    assert cli("inspect-data", config, "--count", "4", "--out", plain).exit_code == 0
    result = cli("inspect-data", config, "--count", "4", "--out", rotated, "--set", "data.augment.rotate=45")
    assert result.exit_code == 0, result.output
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(rotated)))
    typo = cli("inspect-data", config, "--set", "data.augment.rotat=45")
    assert typo.exit_code == 2 and "did you mean 'rotate'?" in typo.output
    refused = cli("inspect-data", trained_run, "--set", "data.augment.rotate=45")
    assert refused.exit_code == 2 and "--set changes a config" in refused.output


def test_inspect_layer_in_a_terminal_shows_the_maps_on_one_scale_it_names(run, cli, monkeypatch):
    from mnistcnn.cli import console

    monkeypatch.setattr(console, "_force_terminal", True)
    conv = cli("inspect-layer", run, "0_conv2d", "--no-images")  # before its relu: both signs
    assert conv.exit_code == 0, conv.output
    said = next(line for line in conv.output.splitlines() if line.startswith("feature maps of validation image 0"))
    low, high = re.fullmatch(r".*channels 0 to \d+ \(blue (\S+), white 0, red (\S+)\):", said).groups()
    assert float(low) == -float(high) < 0, said
    relu = cli("inspect-layer", run, "1_relu", "--no-images")
    assert re.search(r"channels 0 to \d+ \(black 0 to white [0-9.]+\):", relu.output), relu.output


def test_eval_takes_the_runs_evaluation_batch_unless_told_otherwise(eval_batch_run, cli, evaluation_batches,
                                                                    tmp_path):
    run, batch = eval_batch_run
    assert cli("eval", run, "--json").exit_code == 0
    assert set(evaluation_batches) == {batch}  # train.eval_batch_size, not the key's default
    evaluation_batches.clear()
    assert cli("eval", run, "--json", "--batch-size", 7).exit_code == 0
    assert set(evaluation_batches) == {7}


def test_the_eval_report_counts_true_rows_predicted_columns_and_the_most_confident_mistakes_first():
    from mnistcnn.evaluation import MISCLASSIFIED_SHOWN, checkpoint_label, logits_report
    from mnistcnn.runs import RunDir

    labels = np.array([0, 0, 1, 2, 2, 2])
    logits = np.zeros((6, 4))
    for image, (predicted, margin) in enumerate([(0, 3), (1, 1), (1, 3), (2, 3), (0, 5), (2, 3)]):
        logits[image, predicted] = margin  # image 4 is more surely wrong than image 1
    report = logits_report(logits, labels, ["a", "b", "c", "d"])
    assert report["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    expected = [(0.5, 0.5, 0.5, 2), (0.5, 1.0, 2 / 3, 1), (1.0, 2 / 3, 0.8, 3), (0.0, 0.0, 0.0, 0)]
    for row, (precision, recall, f1, support) in zip(report["per_class"], expected):
        assert row["precision"] == pytest.approx(precision) and row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(f1) and row["support"] == support
    (surer, other) = report["misclassified"]
    assert (surer["index"], surer["true"], surer["predicted"], other["index"]) == (4, 2, 0, 1)
    assert surer["confidence"] == pytest.approx(np.exp(5) / (np.exp(5) + 3))  # the predicted class's probability
    many_wrong = logits_report(np.eye(2)[np.ones(20, int)], np.zeros(20, int), ["a", "b"])["misclassified"]
    assert len(many_wrong) == MISCLASSIFIED_SHOWN == 16
    run = RunDir(Path("runs") / "r-20260101-000000")
    assert checkpoint_label(run.checkpoint("best")) == "run r-20260101-000000, checkpoint best.npz"
    assert checkpoint_label(Path("keep") / "model.npz") == f"checkpoint {Path('keep') / 'model.npz'}"


def test_inspect_data_names_a_tried_change_by_its_letters_and_takes_a_png_in_any_case(tmp_path, cli, configs,
                                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    tried = cli("inspect-data", configs / "quick.yaml", "--count", "1", "--set", "data.augment.rotate= 20")
    assert tried.exit_code == 0 and tried.output.strip() == "wrote runs/quick-augmented-rotate20.png", tried.output
    upper = cli("inspect-data", configs / "quick.yaml", "--count", "1", "--out", "GRID.PNG")
    assert upper.exit_code == 0 and (tmp_path / "GRID.PNG").is_file(), upper.output


def test_inspect_layer_gradients_are_those_of_the_configs_label_smoothing(tmp_path, cli, write_config):
    # a model trained with label smoothing: the gradients shown are its training step's, not plain cross-entropy's
    target = write_config(tmp_path)
    target.write_text(target.read_text() + "  label_smoothing: 0.2\n")
    result = cli("inspect-layer", target, "9_dense", "--indices", "0:8", "--json", "--no-images")
    assert result.exit_code == 0, result.output
    model, _, preprocess, data, *_ = load_target(target)
    _, _, grads = model.loss_and_gradients(preprocess(data.val_x[:8]), data.val_y[:8], np.random.default_rng(0), 0.2)
    assert json.loads(result.output)["backward"]["dW"]["mean"] == pytest.approx(
        float(grads["9.W"].astype(np.float64).mean()), rel=1e-6, abs=1e-12)
