"""mnistcnn export: ONNX graphs equal to the engine (shipped configs, random stacks of every
layer type), raw pixels in, metadata, refusals, and predict on an exported file."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mnistcnn.export import FLOAT32_RTOL
from mnistcnn.errors import install_extra
from hypothesis import HealthCheck, example, given, settings, strategies as st

pytest.importorskip("onnxruntime", reason="the export extra: pip install 'mnistcnn[export]'")

from mnistcnn import config as cfg  # noqa: E402
from mnistcnn.data import Preprocess, prepare_data  # noqa: E402
from mnistcnn.engine.fast.plan import Plan  # noqa: E402
from mnistcnn.engine.model import Sequential  # noqa: E402
from mnistcnn.export import (ExportMismatch, OnnxModel, build_model, compare, export_onnx, model_metadata,  # noqa: E402
                             read_metadata, session)
from mnistcnn.trainer import Trainer  # noqa: E402

SLICE = 500  # test images each comparison runs on


def assert_equal_to_engine(comparison):
    assert comparison.largest_difference <= comparison.tolerance, comparison
    assert comparison.disagreements == 0, comparison


def briefly_trained(path: Path, mnist):
    """The config's model after one epoch on 2,000 images (batchnorm statistics included)."""
    config = cfg.load_config(path, ["data.train_limit=2000", "data.validation=500", "train.epochs=1",
                                    "data.split=head", "train.early_stopping.patience=null"])
    trainer = Trainer(config, prepare_data(config, mnist))
    trainer.fit()
    return trainer, config


def test_every_shipped_config_exports_equal_to_the_engine(shipped_config, mnist, tmp_path):
    trainer, config = briefly_trained(shipped_config, mnist)
    output = tmp_path / "model.onnx"
    meta = {"config": config, "test_acc": None}
    comparison, _ = export_onnx(trainer.plan, trainer.preprocess, meta, cfg.class_names(config),
                                mnist.test_images[:SLICE], mnist.test_labels[:SLICE], output)
    assert_equal_to_engine(comparison)
    assert abs(comparison.engine_accuracy - comparison.onnx_accuracy) <= comparison.ties / comparison.images
    assert output.stat().st_size > 1000


LAYER_CHOICES = st.sampled_from(["conv", "maxpool", "avgpool", "relu", "leaky_relu", "tanh", "sigmoid", "batchnorm",
                                 "dropout"])


@st.composite
def layer_stacks(draw):
    """An image part of random layers (strides, paddings, pool sizes), a flatten, then a head."""
    layers, side = [], 28
    for kind in draw(st.lists(LAYER_CHOICES, min_size=1, max_size=5)):
        if kind == "conv":
            kernel = draw(st.sampled_from([1, 3, 5]))
            stride, padding = draw(st.integers(1, 2)), draw(st.sampled_from([0, 1, 2, "same", "valid"]))
            padding = "valid" if padding == "same" and kernel % 2 == 0 else padding
            pad = kernel // 2 if padding == "same" else (0 if padding == "valid" else padding)
            if (side + 2 * pad - kernel) // stride + 1 < 2:
                continue
            layers.append({"type": "conv2d", "filters": draw(st.integers(1, 6)), "kernel": kernel, "stride": stride,
                           "padding": padding, "bias": draw(st.booleans())})
            side = (side + 2 * pad - kernel) // stride + 1
        elif kind in ("maxpool", "avgpool"):
            size = draw(st.integers(2, 3))
            stride = draw(st.integers(1, size))
            if (side - size) // stride + 1 < 2:
                continue
            layers.append({"type": f"{kind}2d", "size": size, "stride": stride})
            side = (side - size) // stride + 1
        elif kind == "leaky_relu":
            layers.append({"type": "leaky_relu", "alpha": draw(st.sampled_from([0.01, 0.2]))})
        elif kind == "dropout":
            layers.append({"type": "dropout", "rate": 0.3})
        else:
            layers.append({"type": kind})
    layers.append({"type": "flatten"})
    for kind in draw(st.lists(st.sampled_from(["dense", "batchnorm", "relu", "tanh"]), max_size=3)):
        layers.append({"type": "dense", "units": draw(st.integers(3, 12))} if kind == "dense" else {"type": kind})
    layers.append({"type": "dense", "units": 10})
    return layers


def randomised(model: Sequential, rng) -> Sequential:
    """Batchnorm layers given statistics and scales of their own, so folding them is tested."""
    for layer in model.layers:
        if layer.type_name == "batchnorm":
            size = layer.params["gamma"].shape
            layer.params["gamma"] = rng.uniform(0.5, 1.5, size).astype(np.float32)
            layer.params["beta"] = rng.normal(0, 0.2, size).astype(np.float32)
            layer.buffers["running_mean"] = rng.normal(0, 0.3, size).astype(np.float32)
            layer.buffers["running_var"] = rng.uniform(0.2, 2.0, size).astype(np.float32)
    return model


CONV_THEN_BATCHNORM = [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "batchnorm"}, {"type": "relu"},
                      {"type": "maxpool2d"}, {"type": "flatten"}, {"type": "dense", "units": 10}]
DENSE_THEN_BATCHNORM = [{"type": "flatten"}, {"type": "dense", "units": 12}, {"type": "batchnorm"}, {"type": "relu"},
                        {"type": "dense", "units": 10}]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=layer_stacks(), seed=st.integers(0, 2**16), fold=st.booleans(),
       preprocess=st.sampled_from([Preprocess("scale"), Preprocess("binarize", threshold=100),
                                   Preprocess("standardize", mean=0.13, std=0.31)]),
       input_kind=st.sampled_from(["uint8", "float"]))
# a batchnorm folded into the conv or dense layer before it, every time: the draws above may hold none
@example(layers=CONV_THEN_BATCHNORM, seed=0, fold=True, preprocess=Preprocess("scale"), input_kind="uint8")
@example(layers=DENSE_THEN_BATCHNORM, seed=1, fold=True, preprocess=Preprocess("binarize", threshold=100),
         input_kind="float")
# a leaky relu's own slope, every time: ONNX's default one (0.01) would pass for the engine's default
@example(layers=[{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "leaky_relu", "alpha": 0.2},
                 {"type": "flatten"}, {"type": "dense", "units": 10}], seed=2, fold=False,
         preprocess=Preprocess("scale"), input_kind="uint8")
def test_random_layer_stacks_export_equal_to_the_engine(mnist, layers, seed, fold, preprocess, input_kind):
    rng = np.random.default_rng(seed)
    model = randomised(Sequential.from_config(layers, (28, 28, 1), rng), rng)
    plan = Plan(model)
    proto = build_model(model, preprocess, {"classes": [str(d) for d in range(10)]}, input_kind, fold=fold)
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    images, labels = mnist.test_images[:200], mnist.test_labels[:200]
    import onnxruntime

    onnx_session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_equal_to_engine(compare(plan, preprocess, onnx_session, images, labels, input_kind))


@pytest.mark.parametrize("layers", [CONV_THEN_BATCHNORM, DENSE_THEN_BATCHNORM])
def test_a_batchnorm_channel_that_never_varied_folds_equal_to_the_engine(mnist, layers):
    # a channel that was always the same (a dead relu's) has a running variance of 0: only eps keeps it finite
    rng = np.random.default_rng(2)
    model = randomised(Sequential.from_config(layers, (28, 28, 1), rng), rng)
    norm = next(layer for layer in model.layers if layer.type_name == "batchnorm")
    norm.buffers["running_var"][0] = 0.0
    proto = build_model(model, Preprocess("scale"), {"classes": [str(d) for d in range(10)]}, "uint8", fold=True)
    assert "BatchNormalization" not in {node.op_type for node in proto.graph.node}
    compared = compare(Plan(model), Preprocess("scale"), session(proto.SerializeToString()),
                       mnist.test_images[:200], mnist.test_labels[:200], "uint8")
    assert_equal_to_engine(compared)


def test_float_input_takes_pixels_over_255_and_predicts_as_the_engine(trained_run, mnist, tmp_path, cli):
    result = cli("export", trained_run, "--input", "float", "-o", tmp_path / "float.onnx")
    assert result.exit_code == 0, result.output
    onnx_session = session(tmp_path / "float.onnx")
    assert onnx_session.get_inputs()[0].type == "tensor(float)"
    assert onnx_session.get_inputs()[0].shape[1:] == [1, 28, 28]
    from mnistcnn.trainer import load_model

    model, _, preprocess = load_model(trained_run / "checkpoints" / "best.npz")
    images = mnist.test_images[:300]
    logits = model.predict_logits(images, 100, preprocess)
    top_two = np.sort(logits, axis=1)[:, -2:]
    # a near-tie may go either way in another runtime's rounding: two logits each off by the export's own
    # check (FLOAT32_RTOL of the largest) may swap, as compare() counts ties
    clear = top_two[:, 1] - top_two[:, 0] > 2 * FLOAT32_RTOL * np.abs(logits).max()
    assert clear.mean() > 0.95
    pixels = (images.transpose(0, 3, 1, 2) / np.float32(255)).astype(np.float32)
    exported = onnx_session.run(["probabilities"], {"pixels": pixels})[0].argmax(axis=1)
    assert np.array_equal(exported[clear], logits.argmax(axis=1)[clear])


class FixedLogits:
    """A plan and an onnxruntime session in one, each giving the logits it was made with."""

    def __init__(self, logits):
        self.logits = np.asarray(logits, np.float32)

    def predict_logits(self, images, *args):
        return self.logits[:len(images)]

    def run(self, names, feeds):
        return [self.logits[:len(feeds["pixels"])]]


def test_two_near_tied_classes_swapped_by_rounding_are_a_tie_not_a_disagreement():
    # each logit within the tolerance of the engine's can swap two classes less than twice the tolerance apart
    tolerance = FLOAT32_RTOL * 10.0
    engine = FixedLogits([[10.0, 10.0 - 1.5 * tolerance, 0.0]])
    exported = FixedLogits([[10.0 - 0.8 * tolerance, 10.0 - 0.7 * tolerance, 0.0]])
    images, labels = np.zeros((1, 28, 28, 1), np.uint8), np.array([0])
    comparison = compare(engine, Preprocess("scale"), exported, images, labels, "uint8")
    assert (comparison.ties, comparison.disagreements, comparison.equal) == (1, 0, True)


def test_the_opsets_from_the_lowest_to_the_newest_onnx_knows_are_taken_and_no_others():
    import onnx

    from mnistcnn.errors import UsageError
    from mnistcnn.export import LOWEST_OPSET, check_opset

    newest = onnx.defs.onnx_opset_version()
    for opset in (LOWEST_OPSET, newest):
        check_opset(opset)
    for opset in (LOWEST_OPSET - 1, newest + 1):
        with pytest.raises(UsageError, match=f"^--opset {opset}: give {LOWEST_OPSET} to {newest}$"):
            check_opset(opset)


def test_the_command_writes_model_onnx_in_the_run_with_metadata_and_the_check(run, cli, tmp_path, mnist,
                                                                              decided_ranks):
    result = cli("export", run)
    assert result.exit_code == 0, result.output
    path = run / "model.onnx"
    summary = json.loads((run / "summary.json").read_text())
    metadata = read_metadata(path)
    assert metadata["classes"] == [str(d) for d in range(10)]
    assert metadata["test_accuracy"] == summary["test_acc"]
    assert metadata["config_name"] == "small" and metadata["input_kind"] == "uint8"
    assert "0-255" in metadata["input"] and metadata["mnistcnn_version"]
    assert metadata["preprocessing"] == {"type": "scale", "threshold": 0}
    assert metadata["checkpoint"].startswith(f"run {run.name}, checkpoint best.npz, epoch ")
    assert "scale (x / 255)" in result.output  # the preprocessing inside the graph
    assert "largest logit difference" in result.output and "uint8 pixels 0-255, NCHW [N, 1, 28, 28]" in result.output
    assert f"{summary['test_acc']:.2%}" in result.output  # both accuracies, on the whole test split

    from PIL import Image

    digits = tmp_path / "digits"
    digits.mkdir()
    for index, image in enumerate(mnist.test_images[:8]):  # as a user's pictures: dark ink on white
        Image.fromarray(255 - image[..., 0]).save(digits / f"digit-{index}.png")
    predicted = cli("predict", path, digits, "--json")
    from_checkpoint = cli("predict", run, digits, "--json")
    assert predicted.exit_code == from_checkpoint.exit_code == 0, predicted.output
    onnx_rows, engine_rows = (json.loads(r.output)["predictions"] for r in (predicted, from_checkpoint))
    assert len(onnx_rows) == len(engine_rows) == 8
    for onnx_row, engine_row in zip(onnx_rows, engine_rows):  # alike where rounding cannot swap the top
        if 0 in decided_ranks([c["probability"] for c in engine_row["top"]], FLOAT32_RTOL):
            assert onnx_row["prediction"] == engine_row["prediction"], engine_row["path"]
    evaluated = cli("eval", path)  # only predict runs an ONNX model
    assert evaluated.exit_code == 2 and "is an exported ONNX model; give the run it came from" in evaluated.output
    chosen = cli("predict", path, digits, "--checkpoint", "last")
    assert chosen.exit_code == 2 and f"{path} is an exported ONNX model, not a run directory" in chosen.output


def test_the_last_checkpoint_is_exported_beside_the_best_not_over_it(run, cli):
    assert cli("export", run).exit_code == 0
    best = (run / "model.onnx").read_bytes()
    last = cli("export", run, "--checkpoint", "last")
    assert last.exit_code == 0, last.output
    assert f"next: mnistcnn predict {run / 'model-last.onnx'} YOUR-DIGIT.png" in last.output  # what to do with it
    assert (run / "model.onnx").read_bytes() == best
    assert read_metadata(run / "model-last.onnx")["config_name"] == "small"
    # the run's test accuracy is its best checkpoint's: the last one's is not known
    assert read_metadata(run / "model.onnx")["test_accuracy"] != "unknown"
    assert read_metadata(run / "model-last.onnx")["test_accuracy"] == "unknown"


def test_a_run_still_training_is_exported_with_a_warning_that_the_file_will_be_stale(run, cli):
    from mnistcnn.runs import RunDir

    with RunDir(run).training_lock():  # as a trainer holds it
        result = cli("export", run)
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"warning: {run} is being trained now: {run / 'model.onnx'} holds its best checkpoint "
                             "so far, not its final one; export again when training ends\n")
    assert (run / "model.onnx").is_file()
    assert "warning" not in cli("export", run).stderr  # once it has ended


def test_a_flatten_in_the_wrong_order_is_caught_and_nothing_is_kept(trained_run, mnist, tmp_path, monkeypatch):
    """The classic silent bug: flattening NCHW as it comes, not in the engine's (H, W, C) order."""
    import mnistcnn.export as export
    from mnistcnn.trainer import load_model

    model, meta, preprocess = load_model(trained_run / "checkpoints" / "best.npz")
    real_layer = export._layer

    def careless(graph, layer, x, index, norm):
        if layer.type_name == "flatten":
            return graph.node("Flatten", [x], "flatten", axis=1)
        return real_layer(graph, layer, x, index, norm)

    monkeypatch.setattr(export, "_layer", careless)
    output = tmp_path / "model.onnx"
    with pytest.raises(ExportMismatch, match="nothing was written"):
        export_onnx(Plan(model), preprocess, {**meta, "test_acc": None}, [str(d) for d in range(10)],
                    mnist.test_images[:SLICE], mnist.test_labels[:SLICE], output)
    assert not output.exists() and not list(tmp_path.glob(".*.tmp"))
    output.write_bytes(b"an earlier export")  # one that passed its check: a failed export does not take its place
    with pytest.raises(ExportMismatch):
        export_onnx(Plan(model), preprocess, {**meta, "test_acc": None}, [str(d) for d in range(10)],
                    mnist.test_images[:SLICE], mnist.test_labels[:SLICE], output)
    assert output.read_bytes() == b"an earlier export"


def test_a_fold_that_misses_the_tolerance_keeps_the_batchnorm_as_a_node(mnist, tmp_path, monkeypatch):
    import onnx

    import mnistcnn.export as export

    model = randomised(Sequential.from_config(CONV_THEN_BATCHNORM, (28, 28, 1), np.random.default_rng(3)),
                       np.random.default_rng(3))
    real_folded = export.folded

    def off_by_a_percent(layer, norm):
        weights, bias = real_folded(layer, norm)
        return weights * np.float32(1.01), bias

    monkeypatch.setattr(export, "folded", off_by_a_percent)
    output = tmp_path / "model.onnx"
    meta = {"config": {"name": "folded", "train": {"eval_batch_size": 100}}, "test_acc": None}
    comparison, folded = export_onnx(Plan(model), Preprocess("scale"), meta, [str(d) for d in range(10)],
                                     mnist.test_images[:SLICE], mnist.test_labels[:SLICE], output)
    assert not folded
    assert_equal_to_engine(comparison)
    assert "BatchNormalization" in {node.op_type for node in onnx.load(str(output)).graph.node}


def test_an_export_interrupted_in_its_check_leaves_no_file(trained_run, tmp_path, cli, monkeypatch):
    import mnistcnn.export as export

    def interrupted(*args, **kwargs):  # Ctrl-C while the graph is compared with the engine
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "compare", interrupted)
    result = cli("export", trained_run, "-o", tmp_path / "model.onnx")
    assert result.exit_code == 130 and result.output == "error: interrupted\n"
    assert list(tmp_path.iterdir()) == []  # an unchecked graph is never under the name predict takes


def test_a_file_exported_before_input_kinds_were_recorded_is_fed_uint8_pixels(tmp_path, mnist, float32_close):
    model = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 10}], (28, 28, 1),
                                   np.random.default_rng(4))
    path = tmp_path / "older.onnx"  # its metadata has classes but no input_kind, as earlier versions wrote it
    path.write_bytes(build_model(model, Preprocess("scale"), {"classes": [str(d) for d in range(10)]},
                                 "uint8").SerializeToString())
    images = mnist.test_images[:50]
    float32_close(OnnxModel(path).predict_logits(images), model.predict_logits(images, 50, Preprocess("scale")))


def test_an_onnx_file_another_tool_wrote_is_refused_in_one_line(tmp_path):
    from mnistcnn.errors import CheckpointError

    model = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 3}], (4, 4, 1))
    path = tmp_path / "foreign.onnx"  # a graph with a pixel input but no class names
    path.write_bytes(build_model(model, Preprocess("scale"), {}, "uint8").SerializeToString())
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: not a model that mnistcnn export wrote"):
        OnnxModel(path)


def test_metadata_round_trips(tmp_path):
    model = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 3}], (4, 4, 1))
    meta = {"config": {"name": "three"}}
    metadata = model_metadata(meta, ["a", "b", "c"], "float", 0.75, Preprocess("scale"))
    path = tmp_path / "three.onnx"
    path.write_bytes(build_model(model, Preprocess("scale"), metadata, "float").SerializeToString())
    assert read_metadata(path) == metadata
    assert OnnxModel(path).classes == ["a", "b", "c"] and OnnxModel(path).input_shape == (4, 4, 1)


def test_the_file_tells_a_reader_what_to_feed_it_and_what_it_gives(tmp_path):
    """What Netron and onnxruntime's get_modelmeta() show: the model's and each tensor's doc string,
    and the metadata: the checkpoint it came from and the preprocessing inside the graph."""
    model = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 3}], (4, 4, 1))
    preprocess = Preprocess("standardize", mean=0.13, std=0.31)
    meta = {"config": {"name": "three"}, "epoch": 2, "source": "run three-20260101-000000, checkpoint best.npz"}
    metadata = model_metadata(meta, ["a", "b", "c"], "uint8", 0.75, preprocess)
    path = tmp_path / "three.onnx"
    path.write_bytes(build_model(model, preprocess, metadata).SerializeToString())
    assert read_metadata(path)["preprocessing"] == {"type": "standardize", "threshold": 0, "mean": 0.13, "std": 0.31}
    assert read_metadata(path)["checkpoint"] == "run three-20260101-000000, checkpoint best.npz, epoch 2"
    described = session(path).get_modelmeta().description
    assert "three" in described and "run three-20260101-000000, checkpoint best.npz" in described
    assert "'logits'" in described and "'probabilities'" in described and "a, b, c" in described
    import onnx

    graph = onnx.load(str(path)).graph
    pixels = graph.input[0].doc_string
    assert "uint8 pixels 0-255, NCHW [N, 1, 4, 4]" in pixels and "a white digit on black" in pixels
    assert "standardize ((x / 255 - 0.13) / 0.31)" in pixels and "inside the graph" in pixels
    assert pixels in described
    assert all(output.doc_string for output in graph.output)


EVERY_PIXEL = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)  # one image holding each uint8 value once


def pixels_out():
    """A model whose 256 logits are its input image's 16x16 pixels as they come in: the graph's
    logits are then its preprocessing of each pixel."""
    model = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 256}], (16, 16, 1))
    model.layers[1].params["W"] = np.eye(256, dtype=np.float32)
    model.layers[1].params["b"] = np.zeros(256, np.float32)
    return model


@pytest.mark.parametrize("input_kind", ["uint8", "float"])
def test_the_graph_preprocesses_every_pixel_value_as_the_engine_does(mnist, input_kind, float32_close):
    """The graph's preprocessing is written in ONNX ops, beside data.Preprocess: for every type, and
    binarize at every threshold, each pixel value 0-255 comes out as Preprocess makes it."""
    model, pixels = pixels_out(), EVERY_PIXEL
    fed = pixels.transpose(0, 3, 1, 2).copy() if input_kind == "uint8" else \
        (pixels.transpose(0, 3, 1, 2) / np.float32(255)).astype(np.float32)  # as onnx_logits feeds --input float
    kinds = [Preprocess("scale"), Preprocess("standardize").fit(mnist.train_images[:5000]),
             *(Preprocess("binarize", threshold=threshold) for threshold in range(255))]
    for preprocess in kinds:
        graph = session(build_model(model, preprocess, {"classes": []}, input_kind).SerializeToString())
        exported = graph.run(["logits"], {"pixels": fed})[0].reshape(256)
        engine = preprocess(pixels).reshape(256)
        if preprocess.type == "binarize":  # 0 or 1: a pixel on the wrong side of the cut is a whole step off
            assert np.array_equal(exported, engine), preprocess.describe()
        else:
            float32_close(exported, engine, what=preprocess.describe())


def test_a_binarizing_graph_cuts_between_two_pixel_values_however_they_were_scaled():
    """pixel * (1/255) and pixel / 255 round apart in float32 for half the pixel values: the graph
    of ``--input float`` takes every pixel value on the side the engine puts it, either way, and so
    does the graph of uint8 pixels, which it scales itself."""
    pixels, model = EVERY_PIXEL, pixels_out()  # the logits are the binarized pixels
    scaled = {"x * (1/255)": pixels.transpose(0, 3, 1, 2) * np.float32(1 / 255),
              "x / 255": pixels.transpose(0, 3, 1, 2) / np.float32(255)}
    for threshold in range(0, 255, 16):  # 7 of these 16 the exact cut got wrong
        preprocess = Preprocess("binarize", threshold=threshold)
        graph = session(build_model(model, preprocess, {"classes": []}, "float").SerializeToString())
        for how, floats in scaled.items():
            binarized = graph.run(["logits"], {"pixels": floats.astype(np.float32)})[0]
            assert np.array_equal(binarized.reshape(256), preprocess(pixels).reshape(256)), (threshold, how)
        as_uint8 = session(build_model(model, preprocess, {"classes": []}, "uint8").SerializeToString())
        binarized = as_uint8.run(["logits"], {"pixels": pixels.transpose(0, 3, 1, 2).copy()})[0]
        assert np.array_equal(binarized.reshape(256), preprocess(pixels).reshape(256)), (threshold, "uint8")


@pytest.mark.parametrize("preprocess", [Preprocess("scale"), Preprocess("binarize", threshold=0),
                                        Preprocess("standardize", mean=0.13, std=0.31)], ids=lambda p: p.type)
@pytest.mark.parametrize("input_kind", ["uint8", "float"])
def test_every_op_but_the_casts_computes_in_float32(preprocess, input_kind):
    """The ops every runtime has for float32: onnxruntime 1.16, for one, has no Greater on uint8,
    and refused a binarizing graph of uint8 pixels (notebook.yaml's, lenet-plain.yaml's)."""
    import onnx

    model = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 3}], (4, 4, 1))
    proto = onnx.shape_inference.infer_shapes(build_model(model, preprocess, {"classes": ["a", "b", "c"]}, input_kind),
                                              strict_mode=True)
    graph = proto.graph
    element = {value.name: value.type.tensor_type.elem_type for value in [*graph.input, *graph.value_info,
                                                                          *graph.output]}
    element.update((tensor.name, tensor.data_type) for tensor in graph.initializer)
    computed = [node for node in graph.node if node.op_type != "Cast"]  # the casts to float32 themselves aside
    assert {(node.op_type, element[name]) for node in computed for name in node.input
            if element[name] != onnx.TensorProto.FLOAT} == set()


# ONNX's versioning table (onnx/docs/Versioning.md): the IR version each opset first came with
IR_OF_OPSET = {13: 7, 17: 8, 21: 10}


@pytest.mark.parametrize("opset", sorted(IR_OF_OPSET))
def test_the_file_has_the_oldest_ir_version_its_opset_needs(opset):
    """A runtime that knows the opset loads the file: an onnxruntime a phone or a browser ships
    refuses a newer IR version than its own, whatever the ops."""
    model = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 3}], (4, 4, 1))
    proto = build_model(model, Preprocess("scale"), {"classes": ["a", "b", "c"]}, opset=opset)
    assert proto.ir_version == IR_OF_OPSET[opset]
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    assert session(proto.SerializeToString()).run(["logits"], {"pixels": np.zeros((2, 1, 4, 4), np.uint8)})[0].shape \
        == (2, 3)


def untrained_digit_model(path: Path) -> Path:
    """An exported file of an untrained 28x28 digit model, as export writes one (the check aside)."""
    model = Sequential.from_config([{"type": "flatten"}, {"type": "dense", "units": 10}], (28, 28, 1))
    metadata = model_metadata({"config": {"name": "tiny"}}, [str(d) for d in range(10)], "uint8", None,
                              Preprocess("scale"))
    path.write_bytes(build_model(model, Preprocess("scale"), metadata).SerializeToString())
    return path


def test_predict_takes_an_exported_file_whose_name_ends_in_capitals(tmp_path, cli, mnist):
    """export writes -o MODEL.ONNX (any case of .onnx): predict runs it as the ONNX model it is."""
    from PIL import Image

    path = untrained_digit_model(tmp_path / "MODEL.ONNX")
    Image.fromarray(255 - mnist.test_images[0][..., 0]).save(tmp_path / "digit.png")
    result = cli("predict", path, tmp_path / "digit.png", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["predictions"]) == 1


def test_a_corrupt_checkpoint_is_refused_as_eval_refuses_it(tmp_path, cli):
    bad = tmp_path / "best.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    exported, evaluated = cli("export", bad), cli("eval", bad)
    assert exported.exit_code == evaluated.exit_code == 2
    assert exported.output == evaluated.output and exported.output.count("\n") == 1


def test_an_unwritable_output_is_one_line_and_leaves_nothing(trained_run, tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli("export", trained_run, "-o", blocker / "model.onnx")
    assert result.exit_code == 2
    assert result.output == f"error: -o {blocker / 'model.onnx'}: {blocker} is a file, not a folder; write " \
                            "elsewhere with -o FILE\n"
    assert not (trained_run / "model.onnx").exists()
    folder = cli("export", trained_run, "-o", tmp_path)
    assert folder.exit_code == 2 and folder.output == f"error: -o {tmp_path}: is a folder; give the file's name in " \
                                                      f"it, e.g. -o {tmp_path / 'model.onnx'}\n"
    config = tmp_path / "my.yaml"
    config.write_text("name: mine\n")
    slip = cli("export", trained_run, "-o", config)
    assert slip.exit_code == 2 and f"-o {config}: an ONNX file's name ends in .onnx; give e.g. -o my.onnx" \
        in slip.output
    assert config.read_text() == "name: mine\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file", "my.yaml"]


def test_a_missing_folder_of_o_is_made_once_nothing_can_be_refused(trained_run, tmp_path, cli):
    refused = cli("export", trained_run, "-o", tmp_path / "new" / "model.onnx", "--opset", "3")
    assert refused.exit_code == 2 and "--opset 3: give 13 to" in refused.output and not (tmp_path / "new").exists()
    result = cli("export", trained_run, "-o", tmp_path / "new" / "deeper" / "model.onnx")
    assert result.exit_code == 0, result.output
    assert [path.name for path in (tmp_path / "new" / "deeper").iterdir()] == ["model.onnx"]


def test_a_run_it_cannot_write_in_names_o_as_the_fix(run, tmp_path, cli, read_only):
    read_only(run)
    result = cli("export", run)  # refused before the export and its check, which take a while
    assert result.exit_code == 2 and result.output == (f"error: {run / 'model.onnx'}: cannot write in its folder "
                                                       f"{run} (Permission denied); write elsewhere with -o FILE\n")
    assert not (run / "model.onnx").exists()
    assert cli("export", run, "-o", tmp_path / "model.onnx").exit_code == 0


def test_without_onnx_the_command_says_what_to_install(trained_run, cli_without):
    result = cli_without("onnx", "export", trained_run)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: mnistcnn export needs onnx and onnxruntime, which are not installed; "
                                     f"{install_extra('export')}")


def test_without_onnxruntime_predict_on_an_exported_file_names_predict_not_export(trained_run, cli_without, tmp_path):
    exported = untrained_digit_model(tmp_path / "model.onnx")
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "digit.png")
    result = cli_without("onnxruntime", "predict", exported, tmp_path / "digit.png")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {exported}: mnistcnn predict runs an exported ONNX model with onnx and "
                                     f"onnxruntime, which are not installed; {install_extra('export')}, or give "
                                     "the run it came from")


def test_the_check_of_an_export_takes_the_runs_evaluation_batch(eval_batch_run, evaluation_batches, tmp_path, cli):
    run, batch = eval_batch_run
    assert cli("export", run, "-o", tmp_path / "model.onnx").exit_code == 0
    assert set(evaluation_batches) == {batch}
