"""``mnistcnn export``: a trained model as an ONNX graph that takes raw pixels, proven equal to
the engine on the run's test split before it is kept.

The graph is NCHW, as ONNX runtimes expect: weights are moved from the engine's layout (W as
(f, f, C_prev, C)) to ONNX's (C, C_prev, f, f), and a flatten first puts the image back in the
engine's (H, W, C) order so that the dense layer after it reads its inputs where it learnt them.
The run's preprocessing is part of the graph, so an app feeds pixels as they come. ``onnx`` and
``onnxruntime`` are the optional extra ``mnistcnn[export]``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from . import config as cfg
from .atomic import OutputOption, make_folder, write_bytes, written_to
from .data import PIXEL_SCALE
from .engine.layers import BatchNorm, Conv2D, Dense
from .engine.losses import accuracy
from .errors import CheckpointError, MnistCnnError, UsageError, install_extra, raise_signal_behind

# Two float32 computations of the same sums in another order (another GEMM shape, another thread
# split, another CPU's BLAS kernel, another runtime) differ by rounding alone: a sum of n products
# by about sqrt(n) * eps of its terms' size, eps = 1.2e-7 and n <= 1,600 in the shipped nets,
# compounded over a few layers. 1e-4 of the array's largest magnitude bounds that with room to
# spare and is still far below the error of any real mistake (a wrong tap, a lost window, a
# missing bias).
FLOAT32_RTOL = 1e-4  # the check of an exported graph; the tests share it

EXTRA = install_extra("export")
DEFAULT_OPSET = 17
LOWEST_OPSET = 13  # Softmax over one axis, as the graph uses it
INPUT_KINDS = {"uint8": "uint8 pixels 0-255, NCHW", "float": "float32 pixels 0-1 (pixel / 255), NCHW"}
DEFAULT_INPUT_KIND = "uint8"  # what a graph takes unless export --input says otherwise
LAYOUT = "as the training images are (for MNIST: a white digit on black, fitted into 20x20 and centred in 28x28)"
SIMPLE_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


class ExportMismatch(MnistCnnError):
    """The exported graph disagrees with the engine beyond float32 rounding."""


def require_onnx(needed_by: str = "mnistcnn export needs onnx and onnxruntime", alternative: str = ""):
    """The two modules, else a UsageError: ``needed_by`` says what needs them (the command the user
    ran), ``alternative`` another fix than installing them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise_signal_behind(err)
        raise UsageError(f"{needed_by}, which are not installed; {EXTRA}{alternative}") from None
    return onnx, onnxruntime


class Graph:
    """Nodes and initializers of an ONNX graph under construction, with generated names."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers, self.count = onnx, [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def constant(self, hint: str, array) -> str:
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str | None = None, output: str | None = None, **attrs) -> str:
        output = output or self.name(hint or op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], **attrs))
        return output


def folded(layer, norm: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of a conv or dense layer with the batchnorm after it folded in (evaluation mode:
    y = x * scale + shift per channel)."""
    inv_std = 1.0 / np.sqrt(norm.buffers["running_var"].astype(np.float64) + norm.eps)
    scale = norm.params["gamma"] * inv_std
    shift = norm.params["beta"] - norm.buffers["running_mean"] * scale
    bias = layer.params["b"].reshape(-1) if "b" in layer.params else 0.0
    return ((layer.params["W"] * scale).astype(np.float32), (bias * scale + shift).astype(np.float32))


def _preprocess(graph: Graph, x: str, preprocess, input_kind: str) -> str:
    """Raw pixels -> the float32 images the model was trained on, as ``data.Preprocess`` makes them.
    uint8 pixels are cast to float32 first: some runtimes have no comparison of uint8 (onnxruntime 1.16)."""
    if input_kind == "uint8":
        x = graph.node("Cast", [x], to=graph.onnx.TensorProto.FLOAT)
        x = graph.node("Mul", [x, graph.constant("one_255th", PIXEL_SCALE)], "scaled")
    if preprocess.type == "binarize":
        # halfway to the next pixel value: pixel / 255 and pixel * (1/255) round apart, but never by half a step
        cut = np.float32((preprocess.threshold + 0.5) / 255)
        above = graph.node("Greater", [x, graph.constant("threshold", cut)])
        return graph.node("Cast", [above], to=graph.onnx.TensorProto.FLOAT)
    if preprocess.type == "standardize":
        shift, factor = preprocess.standardizing()
        x = graph.node("Sub", [x, graph.constant("mean", shift)])
        x = graph.node("Mul", [x, graph.constant("inv_std", factor)], "standardized")
    return x


def _layer(graph: Graph, layer, x: str, index: int, norm: BatchNorm | None) -> str:
    """One engine layer (with the batchnorm folded into it, if any) as ONNX nodes."""
    kind = layer.type_name
    if isinstance(layer, Conv2D):
        W, b = folded(layer, norm) if norm else (layer.params["W"], layer.params.get("b"))
        inputs = [x, graph.constant(f"conv{index}_W", W.transpose(3, 2, 0, 1))]
        if b is not None:
            inputs.append(graph.constant(f"conv{index}_b", b.reshape(-1)))
        return graph.node("Conv", inputs, f"conv{index}", kernel_shape=[layer.kernel] * 2,
                          strides=[layer.stride] * 2, pads=[layer.pad] * 4)
    if isinstance(layer, Dense):
        W, b = folded(layer, norm) if norm else (layer.params["W"], layer.params.get("b"))
        x = graph.node("MatMul", [x, graph.constant(f"dense{index}_W", W)], f"dense{index}")
        return x if b is None else graph.node("Add", [x, graph.constant(f"dense{index}_b", b)], f"dense{index}")
    if kind in ("maxpool2d", "avgpool2d"):
        op = "MaxPool" if kind == "maxpool2d" else "AveragePool"
        return graph.node(op, [x], f"pool{index}", kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2)
    if kind in SIMPLE_OPS:
        return graph.node(SIMPLE_OPS[kind], [x], f"{kind}{index}")
    if kind == "leaky_relu":
        return graph.node("LeakyRelu", [x], f"leaky_relu{index}", alpha=float(layer.alpha))
    if kind == "flatten":
        if len(layer.input_shape) == 3:  # NCHW -> NHWC: the engine flattens (H, W, C)
            x = graph.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])
        return graph.node("Flatten", [x], f"flatten{index}", axis=1)
    if kind == "dropout":
        return x  # evaluation: the identity
    if isinstance(layer, BatchNorm):
        return graph.node("BatchNormalization", [x] + [graph.constant(f"bn{index}_{key}", value) for key, value in (
            ("scale", layer.params["gamma"]), ("bias", layer.params["beta"]),
            ("mean", layer.buffers["running_mean"]), ("var", layer.buffers["running_var"]))],
            f"batchnorm{index}", epsilon=float(layer.eps))
    raise UsageError(f"model.layers[{index}] ({kind}) cannot be exported to ONNX")


def build_model(model, preprocess, metadata: dict, input_kind: str = DEFAULT_INPUT_KIND, opset: int = DEFAULT_OPSET,
                fold: bool = True):
    """The ONNX ModelProto: pixels in (``input_kind``), logits and probabilities out; ``metadata``
    (``model_metadata``'s) is its metadata_props, and its config name, checkpoint and classes are
    in the doc string that viewers such as Netron show, beside each tensor's."""
    onnx, _ = require_onnx()
    graph = Graph(onnx)
    height, width, channels = model.input_shape
    x = _preprocess(graph, "pixels", preprocess, input_kind)
    layers = model.layers
    skip = set()
    for index, layer in enumerate(layers):
        if index in skip:
            continue
        after = layers[index + 1] if index + 1 < len(layers) else None
        norm = after if fold and isinstance(layer, (Conv2D, Dense)) and isinstance(after, BatchNorm) else None
        if norm is not None:
            skip.add(index + 1)
        x = _layer(graph, layer, x, index, norm)
    graph.node("Identity", [x], output="logits")
    graph.node("Softmax", ["logits"], output="probabilities", axis=1)
    element = onnx.TensorProto.UINT8 if input_kind == "uint8" else onnx.TensorProto.FLOAT
    classes = model.output_shape[0]
    pixels = onnx.helper.make_tensor_value_info("pixels", element, ["N", channels, height, width], doc_string=(
        f"{INPUT_KINDS[input_kind]} [N, {channels}, {height}, {width}], {LAYOUT}; the run's preprocessing, "
        f"{preprocess.describe()}, is inside the graph"))
    outputs = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["N", classes], doc_string=what)
               for name, what in (("logits", f"[N, {classes}], a score per class of metadata 'classes'"),
                                  ("probabilities", f"[N, {classes}], the softmax of the logits"))]
    source = f" ({metadata['checkpoint']})" if "checkpoint" in metadata else ""
    described = (f"mnistcnn {__version__}, {metadata.get('config_name', 'a model')}{source}. Input 'pixels': "
                 f"{pixels.doc_string}. Outputs 'logits' and 'probabilities' (their softmax), [N, {classes}], over "
                 f"the classes {', '.join(map(str, metadata.get('classes', [])))}.")
    # the oldest IR version the opset needs, not the installed onnx's newest: a runtime that knows the
    # opset then loads the file (onnxruntime refuses an IR version newer than its own)
    proto = onnx.helper.make_model_gen_version(
        onnx.helper.make_graph(graph.nodes, "mnistcnn", [pixels], outputs, graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", opset)], producer_name="mnistcnn", producer_version=__version__,
        doc_string=described)
    onnx.helper.set_model_props(proto, {key: value if isinstance(value, str) else json.dumps(value)
                                        for key, value in metadata.items()})
    return proto


def model_metadata(meta: dict, classes: list[str], input_kind: str, test_acc, preprocess) -> dict:
    """What the file says about itself (ONNX metadata_props, strings): ``meta`` is the checkpoint's,
    with ``source`` (the checkpoint in words) where it is known."""
    metadata = {"classes": classes, "input": INPUT_KINDS[input_kind], "input_kind": input_kind,
                "preprocessing": preprocess.to_config(), "config_name": meta["config"]["name"],
                "mnistcnn_version": __version__, "test_accuracy": test_acc if test_acc is not None else "unknown",
                "outputs": "logits, probabilities (softmax of the logits)"}
    if "source" in meta:
        metadata["checkpoint"] = f"{meta['source']}, epoch {meta['epoch']}"
    return metadata


def read_metadata(path) -> dict:
    """An exported file's metadata, JSON values decoded."""
    onnx, _ = require_onnx()
    props = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    decoded = {}
    for key, value in props.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return decoded


@dataclass
class Comparison:
    """The exported graph against the engine on one set of images."""

    images: int
    largest_difference: float
    tolerance: float
    ties: int
    disagreements: int
    engine_accuracy: float
    onnx_accuracy: float
    engine_images_per_s: float
    onnx_images_per_s: float

    @property
    def equal(self) -> bool:
        return self.largest_difference <= self.tolerance and self.disagreements == 0


def session(model):
    """An onnxruntime session on the CPU for an .onnx file, or a serialized graph (bytes)."""
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                        providers=["CPUExecutionProvider"])


def onnx_logits(session, images_nhwc: np.ndarray, input_kind: str, batch_size: int = cfg.EVAL_BATCH_SIZE) -> np.ndarray:
    """Logits of an onnxruntime session for uint8 NHWC images (sent as the graph takes them)."""
    outputs = []
    for start in range(0, len(images_nhwc), batch_size):
        batch = images_nhwc[start:start + batch_size].transpose(0, 3, 1, 2)
        batch = batch if input_kind == "uint8" else batch.astype(np.float32) / np.float32(255)
        outputs.append(session.run(["logits"], {"pixels": np.ascontiguousarray(batch)})[0])
    return np.concatenate(outputs) if outputs else np.zeros((0, session.get_outputs()[0].shape[1]), np.float32)


def compare(plan, preprocess, session, images: np.ndarray, labels: np.ndarray, input_kind: str,
            batch_size: int = cfg.EVAL_BATCH_SIZE) -> Comparison:
    """Logits of the engine (``plan``) and of the exported graph on the same uint8 images,
    ``batch_size`` at once; each is timed after a first small batch (onnxruntime plans its memory on
    the first run)."""
    plan.predict_logits(images[:16], batch_size, preprocess)
    onnx_logits(session, images[:16], input_kind, batch_size)
    started = time.perf_counter()
    engine = plan.predict_logits(images, batch_size, preprocess)
    engine_seconds = time.perf_counter() - started
    started = time.perf_counter()
    exported = onnx_logits(session, images, input_kind, batch_size)
    onnx_seconds = time.perf_counter() - started
    tolerance = FLOAT32_RTOL * float(np.abs(engine).max(initial=0.0))
    top2 = np.sort(engine, axis=1)[:, -2:] if engine.shape[1] > 1 else np.zeros((len(engine), 2))
    tied = (top2[:, 1] - top2[:, 0]) <= 2 * tolerance  # two logits, each off by the tolerance, may swap
    differ = engine.argmax(axis=1) != exported.argmax(axis=1)
    return Comparison(
        images=len(images), largest_difference=float(np.abs(engine - exported).max(initial=0.0)), tolerance=tolerance,
        ties=int((differ & tied).sum()), disagreements=int((differ & ~tied).sum()),
        engine_accuracy=accuracy(engine, labels), onnx_accuracy=accuracy(exported, labels),
        engine_images_per_s=len(images) / max(engine_seconds, 1e-9),
        onnx_images_per_s=len(images) / max(onnx_seconds, 1e-9))


@dataclass
class Exported:
    """What ``export_run`` wrote and how it compares with the engine."""

    checkpoint: Path
    output: Path
    size_bytes: int
    comparison: Comparison
    folded: bool
    input_shape: tuple
    preprocessing: str  # inside the graph, in words
    training_run: Path | None  # the checkpoint's run when it is being trained now: the file will fall behind it


def export_run(target, which: str | None = None, data_dir=None, output=None, input_kind: str = DEFAULT_INPUT_KIND,
               opset: int = DEFAULT_OPSET) -> Exported:
    """Export the model of a run directory (its ``which`` checkpoint) or of a checkpoint file to
    ``output`` (default: model.onnx in the run's folder; model-last.onnx for its last checkpoint),
    checked on the run's test split."""
    from .evaluation import checkpoint_label, load_for_target
    from .runs import RunDir, is_onnx_file, output_folder, run_summary

    require_onnx()
    if output is not None and Path(output).is_dir():  # refused before the model is loaded and checked
        raise UsageError(f"-o {output}: is a folder; give the file's name in it, e.g. -o {Path(output) / 'model.onnx'}")
    if output is not None and not is_onnx_file(output):
        # predict tells an ONNX model by its name, and no config or checkpoint is overwritten by a slip
        raise UsageError(f"-o {output}: an ONNX file's name ends in .onnx; give e.g. -o {Path(output).stem}.onnx")
    model, meta, preprocess, data, path = load_for_target(target, which, data_dir)
    default_name = "model.onnx" if path.name == "best.npz" else f"model-{path.stem}.onnx"  # none overwrites another
    option = OutputOption("-o", "FILE", given=output is not None)
    output = Path(output) if output else output_folder(path) / default_name
    # the run's test score is its best checkpoint's
    meta["test_acc"] = (run_summary(path) or {}).get("test_acc") if path.stem == "best" else None
    meta["source"] = checkpoint_label(path)
    check_opset(opset)
    make_folder(output.parent, option, output)  # once nothing can be refused
    with written_to(option):
        comparison, folded = export_onnx(cfg.fast_plan(model, meta["config"]), preprocess, meta,
                                         cfg.class_names(meta["config"]), data.test_x, data.test_y, output,
                                         input_kind, opset)
    run = RunDir.of_checkpoint(path)
    return Exported(path, output, output.stat().st_size, comparison, folded, model.input_shape, preprocess.describe(),
                    run.path if run is not None and run.being_trained else None)


def check_opset(opset: int) -> None:
    """Refuse an opset below LOWEST_OPSET or above the newest the installed onnx knows."""
    onnx, _ = require_onnx()
    if not LOWEST_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise UsageError(f"--opset {opset}: give {LOWEST_OPSET} to {onnx.defs.onnx_opset_version()}")


def export_onnx(plan, preprocess, meta: dict, classes: list[str], images: np.ndarray, labels: np.ndarray,
                output: Path, input_kind: str = DEFAULT_INPUT_KIND,
                opset: int = DEFAULT_OPSET) -> tuple[Comparison, bool]:
    """Check the graph and prove it equal to the engine on ``images``, then write it to
    ``output`` (else write nothing: a file already there stays); returns the comparison and
    whether batchnorm was folded. A batchnorm folded into the layer before it sums in another
    order: if that misses the tolerance, it is kept as a node."""
    onnx, _ = require_onnx()
    check_opset(opset)
    test_acc = meta.get("test_acc")
    metadata = model_metadata(meta, classes, input_kind, test_acc, preprocess)
    has_norm = any(isinstance(layer, BatchNorm) for layer in plan.model.layers)
    for fold in (True, False) if has_norm else (False,):
        # checked in memory: an interrupted or failed check leaves no unchecked file under the name predict takes
        graph = build_model(plan.model, preprocess, metadata, input_kind, opset, fold)
        onnx.checker.check_model(graph, full_check=True)
        serialized = graph.SerializeToString()
        comparison = compare(plan, preprocess, session(serialized), images, labels, input_kind,
                             meta["config"]["train"]["eval_batch_size"])
        if comparison.equal:
            write_bytes(output, serialized)
            return comparison, fold
    raise ExportMismatch(f"the exported graph's logits differ from the engine's by {comparison.largest_difference:.3g} "
                         f"(tolerance {comparison.tolerance:.3g}) and {comparison.disagreements} predictions differ; "
                         f"nothing was written. Please report it with the checkpoint")


class OnnxModel:
    """An exported .onnx file with what prediction asks of a model (``input_shape`` as (H, W, C),
    ``predict_logits`` of uint8 NHWC images): ``mnistcnn predict`` runs it through onnxruntime
    with the same preparation of the pictures. The preprocessing is in the graph."""

    def __init__(self, path):
        path = Path(path)
        require_onnx(f"{path}: mnistcnn predict runs an exported ONNX model with onnx and onnxruntime",
                     ", or give the run it came from")
        if not path.is_file():
            raise UsageError(f"{path}: no such ONNX file")
        try:
            self.session = session(path)
            self.metadata = read_metadata(path)
        except Exception as err:  # onnxruntime and onnx raise their own zoo on a foreign or truncated file
            raise CheckpointError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:200]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or "classes" not in self.metadata:
            raise CheckpointError(f"{path}: not a model that mnistcnn export wrote (no pixel input and class names)")
        _, channels, height, width = inputs[0].shape
        self.input_shape = (height, width, channels)
        self.input_kind = self.metadata.get("input_kind", "uint8")
        self.classes = [str(name) for name in self.metadata["classes"]]

    def predict_logits(self, x: np.ndarray, batch_size: int = cfg.EVAL_BATCH_SIZE, transform=None) -> np.ndarray:
        return onnx_logits(self.session, x, self.input_kind, batch_size)
