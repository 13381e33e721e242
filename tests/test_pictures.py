"""The pictures and inspect-layer's words: what can be checked without looking at them."""

import json

import numpy as np
import pytest
from matplotlib.colors import LogNorm
from PIL import Image

from mnistcnn import plots


def title(path) -> str:
    return Image.open(path).text.get("Title", "")


def words(output: str) -> str:
    """The output with the console's line wrapping undone."""
    return " ".join(output.split())


def test_every_picture_names_the_run_and_where_they_apply_the_split_and_checkpoint(run, cli, tmp_path):
    result = cli("eval", run, "--split", "validation", "--checkpoint", "last")
    assert result.exit_code == 0, result.output
    for kind in ("confusion", "misclassified"):
        made = title(run / f"eval-validation-last-{kind}.png")
        assert f"run {run.name}" in made and "validation split" in made and "checkpoint last.npz" in made
    assert title(run / "curves.png").startswith(f"run {run.name}")
    result = cli("inspect-layer", run, "0", "--index", "5", "--out", tmp_path / "pics")
    assert result.exit_code == 0, result.output
    for name in ("validation-image5-feature-maps", "filters", "validation-image5-histogram"):
        made = title(tmp_path / "pics" / f"layer00-0_conv2d-best-{name}.png")
        assert f"run {run.name}, checkpoint best.npz" in made and "layer 0 (0_conv2d)" in made
    assert "activations of validation image 5" in title(tmp_path / "pics" / "layer00-0_conv2d-best-validation-image5-"
                                                                             "histogram.png")


def test_confusion_matrix_colours_each_row_by_its_share_on_a_log_scale():
    matrix = np.array([[90, 9, 1], [0, 50, 0], [3, 0, 997]])
    fig = plots.confusion_figure(matrix, ["a", "b", "c"], "run r, test split")
    ax = fig.axes[0]
    shown = ax.images[0]
    fractions = matrix / matrix.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.ma.filled(shown.get_array(), 0), fractions)
    assert isinstance(shown.norm, LogNorm) and shown.norm.vmin <= 1 / 1000  # one error in 1,000 shows
    # a count in every square that has one; an empty square stays blank
    assert sorted(text.get_text() for text in ax.texts) == sorted(f"{n:,}" for n in matrix[matrix > 0])
    assert fig.get_suptitle() == "run r, test split"
    # no axis label cut at the figure's edge
    fig.canvas.draw()
    renderer, edge = fig.canvas.get_renderer(), fig.bbox
    for label in (ax.xaxis.label, ax.yaxis.label):
        box = label.get_window_extent(renderer)
        assert edge.x0 <= box.x0 and box.x1 <= edge.x1 and edge.y0 <= box.y0 and box.y1 <= edge.y1


def test_training_curves_tick_whole_epochs_only():
    for epochs in ((1, 2, 3), (1,)):  # a run of one epoch too: its single point's axis is ticked 1 alone
        history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 0.9, "val_acc": 0.8}
                   for e in epochs]
        fig = plots.curves_figure(history, "run r")
        fig.canvas.draw()
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)


def test_feature_maps_with_both_signs_are_drawn_diverging_about_0_and_others_from_their_least():
    # the rule serve's page follows too (colour_scale): a conv's negative responses, which a relu zeros, show
    maps = np.random.default_rng(0).normal(size=(3, 7, 7))
    for shown, cmap, (low, high) in [(maps, "RdBu_r", (-np.abs(maps).max(), np.abs(maps).max())),
                                     (np.maximum(maps, 0), "viridis", (0.0, maps.max()))]:
        fig = plots.feature_maps_figure(np.zeros((28, 28)), "image", shown, "t")
        image = next(ax.images[0] for ax in fig.axes if ax.get_title() == "channel 0")
        assert image.get_cmap().name == cmap and (image.norm.vmin, image.norm.vmax) == pytest.approx((low, high))


def test_feature_maps_show_the_input_with_its_label_and_a_colour_bar(run, cli, tmp_path):
    maps = np.random.default_rng(0).normal(size=(6, 7, 7))
    fig = plots.feature_maps_figure(np.zeros((28, 28, 1)), "validation image 5, label 7", maps, "t")
    titles = [ax.get_title() for ax in fig.axes]
    assert "validation image 5, label 7" in titles and titles.count("") <= 1  # the colour bar's
    assert any(ax.get_ylabel() == "activation" for ax in fig.axes)
    channels = [ax.images[0] for ax in fig.axes if ax.get_title().startswith("channel")]
    assert len(channels) == 6 and len({(im.norm.vmin, im.norm.vmax) for im in channels}) == 1  # one scale
    result = cli("inspect-layer", run, "3_conv2d", "--index", "5", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    from mnistcnn.layer_report import load_target
    label = int(load_target(run)[3].val_y[5])
    feature_maps = tmp_path / "layer03-3_conv2d-best-validation-image5-feature-maps.png"
    assert f"feature maps of validation image 5, label {label}" in title(feature_maps)


def test_inspect_layer_header_is_in_words_and_every_index_names_its_axes(run, cli):
    result = cli("inspect-layer", run, "3_conv2d", "--index", "5", "--no-images")
    assert result.exit_code == 0, result.output
    said = words(result.output)
    assert f"model: run {run.name}, checkpoint best.npz" in said
    assert "layer 3 (3_conv2d): conv2d, 16 filters of 3x3 over 8 channels, stride 1, padding 1" in said
    assert "{'type'" not in said
    assert ("input 1 image of 14x14 with 8 channels -> output 1 image of 14x14 with 16 channels; "
            "validation image 5") in said
    assert "output Z[validation image 5, row 2, column 1, all 16 channels] = [" in said
    assert "parameter W: (3 kernel rows, 3 kernel columns, 8 input channels, 16 filters), 1,152 values" in said
    assert "parameter b: (1, 1, 1, 16 filters)" in said and "dW and db at its parameters" in said
    result = cli("inspect-layer", run, "9_dense", "--no-images")  # images 0 to 15: the notebook's Z[3, 2]
    said = words(result.output)
    assert "layer 9 (9_dense): dense, 10 units, each over all 784 inputs" in said
    assert "validation images 0 to 15" in said and "output Z[validation image 3, unit 2] = " in said


def test_inspect_layer_says_a_config_gives_an_untrained_model(tmp_path, cli, write_config):
    result = cli("inspect-layer", write_config(tmp_path), "0", "--indices", "0:4", "--no-images")
    assert result.exit_code == 0, result.output
    assert "model: config small.yaml, untrained (as initialised, seed 0)" in words(result.output)


def test_a_terminal_preview_shows_two_pixels_a_character_upper_as_colour_lower_as_background():
    from mnistcnn.cli import half_block_preview

    image = np.array([[0, 5], [1, 0], [2, 0]])  # an odd height: the last character's lower half is black
    preview = half_block_preview(image)
    assert preview.plain == "\u2580\u2580\n\u2580\u2580\n"
    styles = [str(span.style) for span in preview.spans]
    assert styles == ["rgb(0,0,0) on rgb(51,51,51)", "rgb(255,255,255) on rgb(0,0,0)",
                      "rgb(102,102,102) on rgb(0,0,0)", "rgb(0,0,0) on rgb(0,0,0)"]


def test_terminal_previews_share_a_scale_and_a_signed_one_diverges_about_zero():
    from mnistcnn.cli import half_block_preview
    from mnistcnn.colour_scale import colour_scale

    faint, strong = np.array([[1.0], [2.0]]), np.array([[2.0], [4.0]])
    shared = colour_scale(np.stack([faint, strong]))
    assert [str(span.style) for span in half_block_preview(faint, shared).spans] == \
        ["rgb(0,0,0) on rgb(85,85,85)"]  # 1 is the shared low, 2 a third of the way to 4
    signed = np.array([[-2.0, 0.0, 1.0], [2.0, -1.0, 0.0]])
    styles = [str(span.style) for span in half_block_preview(signed).spans]
    assert styles == ["rgb(0,0,255) on rgb(255,0,0)", "rgb(255,255,255) on rgb(128,128,255)",
                      "rgb(255,128,128) on rgb(255,255,255)"]  # blue below 0, white at 0, red above


def overlapping(texts) -> list[tuple[str, str]]:
    """The pairs of ``texts`` (matplotlib Text objects, drawn) whose boxes overlap."""
    renderer = texts[0].figure.canvas.get_renderer()
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in texts]
    return [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:] if box.overlaps(other)]


FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def eval_result(tmp_path, mistakes: int) -> dict:
    """A report as eval_target makes it, of a Fashion-MNIST model: long class names."""
    misclassified = [{"index": 1000 + i, "true": 0 if i % 2 else 9, "predicted": 9 if i % 2 else 0,
                      "confidence": 0.99} for i in range(mistakes)]
    return {"checkpoint": str(tmp_path / "best.npz"), "split": "test", "classes": FASHION,
            "confusion": np.eye(10, dtype=int).tolist(), "misclassified": misclassified}


def test_misclassified_captions_stay_apart_with_long_class_names(tmp_path, drawn_figures):
    from mnistcnn.evaluation import write_report

    write_report(eval_result(tmp_path, 16), np.zeros((1016, 28, 28)), tmp_path)
    fig = drawn_figures[tmp_path / "eval-test-best-misclassified.png"]
    fig.canvas.draw()
    captions = [ax.title for ax in fig.axes if ax.get_title()]
    assert len(captions) == 16 and "Ankle boot->T-shirt/top" in captions[0].get_text()
    assert overlapping(captions) == []


def test_an_eval_without_mistakes_says_so_in_place_of_an_earlier_picture_of_mistakes(tmp_path, drawn_figures,
                                                                                     recwarn):
    from mnistcnn.evaluation import write_report

    picture = tmp_path / "eval-test-best-misclassified.png"
    write_report(eval_result(tmp_path, 3), np.zeros((1016, 28, 28)), tmp_path)
    assert picture.exists()
    made = write_report(eval_result(tmp_path, 0), np.zeros((1016, 28, 28)), tmp_path)
    assert str(picture) in json.loads(made.read_text())["pictures"]
    fig = drawn_figures[picture]
    assert [text.get_text() for ax in fig.axes for text in ax.texts] == ["no image of the test split is misclassified"]
    assert not any(ax.images for ax in fig.axes)  # the earlier picture's mistakes are gone
    assert "test split: most confidently misclassified" in title(picture)
    assert [str(warning.message) for warning in recwarn] == []  # matplotlib's, on the user's terminal


def test_a_layer_wider_than_a_picture_says_how_many_of_its_filters_and_maps_are_shown(tmp_path, cli):
    config = tmp_path / "wide.yaml"
    config.write_text("name: wide\ndata: {train_limit: 100}\nmodel:\n  layers:\n"
                      "    - {type: conv2d, filters: 65, kernel: 3, padding: 1}\n"
                      "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    result = cli("inspect-layer", config, "0", "--index", "0", "--out", tmp_path / "pics")
    assert result.exit_code == 0, result.output
    filters = title(tmp_path / "pics" / "layer00-0_conv2d-untrained-filters.png")
    assert "filters (first 64 of 65 filters, each the mean over its input channels)" in filters
    maps = title(tmp_path / "pics" / "layer00-0_conv2d-untrained-validation-image0-feature-maps.png")
    assert maps.endswith("(first 64 of 65 channels)")


def sweep_of(*parameters):
    """What the sweep pictures read of a sweep, searching ``parameters`` for the largest val_acc."""
    from types import SimpleNamespace

    return SimpleNamespace(name="s", metric="val_acc", goodness=lambda value: value, parameters=list(parameters))


def x_labels(ax) -> list:
    return [label for label in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
            if label.get_text() and label.get_visible()]


def test_a_sweeps_parameter_labels_do_not_run_into_each_other(tmp_path, drawn_figures):
    from mnistcnn.sweep.space import Parameter

    sizes = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
    sweep = sweep_of(Parameter("train.optimizer.lr", "float", 3e-4, 3e-3, log=True),  # within a decade: 3x10^-4, 4x..
                     Parameter("train.batch_size", "choice", values=sizes),
                     Parameter("train.optimizer.type", "choice", values=("sgd", "adam")))
    rows = [{"number": n, "status": "complete", "value": 0.99, "per_epoch": [0.99],
             "params": {"train.optimizer.lr": lr, "train.batch_size": size, "train.optimizer.type": "sgd"}}
            for n, (lr, size) in enumerate([(3.05e-4, 16), (2.95e-3, 1024)])]
    plots.sweep_pictures(rows, sweep, tmp_path / "by-trial.png", tmp_path / "by-parameter.png",
                         lambda row: row["value"])
    fig = drawn_figures[tmp_path / "by-parameter.png"]
    fig.canvas.draw()
    lr, size, optimizer = fig.axes
    for ax in (lr, size):
        labels = x_labels(ax)
        assert {label.get_rotation() for label in labels} == {45}
        # parallel lines of text at 45 degrees, apart by their horizontal step times sin 45: more than a line's height
        ends = sorted(label.get_window_extent().x1 for label in labels)
        height = max(label.get_fontsize() for label in labels) * fig.dpi / 72
        assert min(np.diff(ends)) * np.sin(np.pi / 4) > height, ax.get_xlabel()
    assert overlapping(x_labels(optimizer)) == [] and x_labels(optimizer)[0].get_rotation() == 0  # room: level


def test_a_sweep_with_nothing_to_show_yet_says_so_on_axes_spanning_the_ranges_searched(tmp_path, drawn_figures):
    from mnistcnn.sweep.space import Parameter

    sweep = sweep_of(Parameter("train.optimizer.lr", "float", 1e-4, 3e-2, log=True),
                     Parameter("data.augment.rotate", "float", 0, 12),
                     Parameter("train.batch_size", "choice", values=(32, 64)))
    failed = [{"number": n, "status": "failed", "value": None, "per_epoch": [], "params": {}} for n in range(2)]
    plots.sweep_pictures(failed, sweep, tmp_path / "by-trial.png", tmp_path / "by-parameter.png", lambda row: None)
    for picture in ("by-trial.png", "by-parameter.png"):
        for ax in drawn_figures[tmp_path / picture].axes:
            assert [text.get_text() for text in ax.texts] == ["no complete or pruned trial to show"]
    lr, rotate, _ = drawn_figures[tmp_path / "by-parameter.png"].axes
    np.testing.assert_allclose(lr.get_xlim(), (1e-4, 3e-2))  # not matplotlib's 1 to 10 of an empty log axis
    np.testing.assert_allclose(rotate.get_xlim(), (0, 12))


def test_the_picture_of_mistakes_shows_the_misclassified_images_of_the_split_it_names(tmp_path, drawn_figures):
    from mnistcnn.evaluation import write_report

    images = np.arange(1016.0)[:, None, None] * np.ones((1016, 28, 28))  # image i holds the value i
    made = write_report(dict(eval_result(tmp_path, 3), split="validation"), images, tmp_path)
    assert made == tmp_path / "eval-validation-best.json"
    picture = tmp_path / "eval-validation-best-misclassified.png"
    shown = [ax.images[0].get_array() for ax in drawn_figures[picture].axes if ax.images]
    assert [float(image.max()) for image in shown] == [1000, 1001, 1002]
    assert "validation split: most confidently misclassified" in title(picture)


def test_the_feature_maps_of_a_range_of_images_are_those_of_its_first_image(trained_run, cli, tmp_path, drawn_figures):
    # --indices 5:9: the feature-maps picture is of validation image 5 alone, its pixels, label and maps
    from mnistcnn.layer_report import load_target

    result = cli("inspect-layer", trained_run, "0_conv2d", "--indices", "5:9", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    model, _, preprocess, data, *_ = load_target(trained_run)
    label = int(data.val_y[5])
    fig = drawn_figures[tmp_path / "layer00-0_conv2d-best-validation-image5-feature-maps.png"]
    shown = next(ax.images[0] for ax in fig.axes if ax.get_title() == f"validation image 5, label {label}")
    assert np.array_equal(np.asarray(shown.get_array()), np.squeeze(data.val_x[5]))
    maps = model.layers[0].forward(preprocess(data.val_x[5:6]))[0]
    channel = next(ax.images[0] for ax in fig.axes if ax.get_title() == "channel 1")
    # the engine's output for the image alone, and as the first of a batch of 4: within float32 rounding
    assert np.allclose(np.asarray(channel.get_array()), maps[..., 1], rtol=1e-5, atol=1e-6)
    # the histogram is of the four images, and says so
    assert title(tmp_path / "layer00-0_conv2d-best-validation-images5-8-histogram.png").endswith(
        "activations of validation images 5 to 8")


def test_a_filters_picture_shows_each_filter_as_the_mean_over_its_input_channels(trained_run, cli, tmp_path,
                                                                                   drawn_figures):
    from mnistcnn.layer_report import load_target

    result = cli("inspect-layer", trained_run, "3_conv2d", "--index", "0", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    W = load_target(trained_run)[0].layers[3].params["W"]  # (3, 3, 8 input channels, 16 filters)
    fig = drawn_figures[tmp_path / "layer03-3_conv2d-best-filters.png"]
    shown = next(ax.images[0] for ax in fig.axes if ax.get_title() == "filter 2")
    assert np.allclose(np.asarray(shown.get_array()), W[:, :, :, 2].mean(axis=2), rtol=1e-6)
