"""The fast plan against the plain engine, for every shipped config: one training step's loss,
gradients, updated weights and batchnorm statistics, and the evaluation's logits, within
float32 rounding (conftest's FLOAT32_RTOL); one thread against two; and the same numbers
run to run."""

import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st

from mnistcnn import config as cfg
from mnistcnn.data import Preprocess, prepare_data
from mnistcnn.engine.fast import convpool
from mnistcnn.engine.fast.parallel import StepRunner
from mnistcnn.engine.fast.plan import Plan, eval_chunk, head_start
from mnistcnn.engine.layer_arguments import LayerConfigError
from mnistcnn.engine.layers import BatchNorm, Conv2D, Dense, Flatten, Layer, MaxPool2D, ReLU
from mnistcnn.engine.model import Sequential, recompute_batchnorm
from mnistcnn.engine.optim import make_optimizer
from mnistcnn.export import FLOAT32_RTOL



def trained_looking(config, seed=0):
    """The config's model with small nonzero biases and batchnorm shifts, as a trained model
    has. With zero biases a conv's output over blank pixels is exactly 0 in im2col but rounding
    noise around 0 in the frequency domain, and a relu there passes or stops the gradient by the
    noise's sign; a bias moves those outputs off the kink. Small, so that adding it rounds away
    no difference between two values that a max pool compares."""
    model = Sequential.from_config(config["model"]["layers"], config["model"]["input_shape"],
                                   np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    for key, p in model.params().items():
        if key.endswith((".b", ".beta")):
            p[...] = rng.choice([-1, 1], size=p.shape) * rng.uniform(0.01, 0.02, size=p.shape)
    return model


def mnist_batch(config, n=48):
    data = prepare_data(config)
    preprocess = Preprocess(**config["data"]["preprocess"]).fit(data.train_x)
    return data.train_x[:n], data.train_y[:n], preprocess


def test_one_training_step_of_the_plan_is_the_plain_loop(shipped_config, float32_close, close_calls):
    config = cfg.load_config(shipped_config)
    images, y, preprocess = mnist_batch(config)
    # MNIST's blank background makes 2x2 pool windows tie exactly, where max pooling's gradient
    # may go to any of the tied places and the last bit of another GEMM shape decides which: a
    # little noise leaves every window one maximum, so the two paths must route alike
    x = preprocess(images) + np.random.default_rng(9).uniform(0, 1e-2, images.shape).astype(np.float32)
    smoothing = config["train"]["label_smoothing"]
    plain, fast = trained_looking(config), trained_looking(config)
    plan = Plan(fast, config["model"]["conv_algorithm"])

    loss, correct, grads = plain.loss_and_gradients(x, y, np.random.default_rng(5), smoothing)
    fast_loss, fast_correct, fast_grads, caches = plan.loss_and_gradients(x, y, np.random.default_rng(5), smoothing)
    plan.update_batchnorm_statistics([plan.batch_statistics(caches)])
    logits = trained_looking(config).forward(x, training=True, rng=np.random.default_rng(5))  # as the step saw them
    assert abs(fast_loss - loss) <= 1e-5 * abs(loss) and abs(fast_correct - correct) <= close_calls(logits)
    assert set(fast_grads) == set(grads) == set(plain.params())
    for key in grads:
        float32_close(fast_grads[key], grads[key], what=key)
    for key, value in plain.buffers().items():  # batchnorm's running statistics
        float32_close(fast.buffers()[key], value, what=key)

    # plain SGD, whose update is linear in the gradient, so the tolerance carries over: Adam's
    # first step divides each gradient by its own size and makes rounding noise a full step
    for model, gradients in ((plain, grads), (fast, fast_grads)):
        make_optimizer({"type": "sgd", "lr": config["train"]["optimizer"]["lr"]}).step(model.params(), gradients)
    for key, value in plain.params().items():
        float32_close(fast.params()[key], value, what=f"updated {key}")


def test_evaluation_by_the_plan_is_the_plain_loop(shipped_config, float32_close):
    config = cfg.load_config(shipped_config)
    images, _, preprocess = mnist_batch(config, n=300)  # several chunks, the last one short
    model = trained_looking(config)
    plan = Plan(model, config["model"]["conv_algorithm"])
    plain = model.forward(preprocess(images))
    for workers in (1, 2):
        logits = plan.predict_logits(images, 1000, preprocess, workers=workers)
        float32_close(logits, plain)
        # the same class, except where two logits tie within the tolerance
        top2 = np.sort(plain, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * FLOAT32_RTOL * np.abs(plain).max()
        assert np.array_equal(logits.argmax(axis=1)[clear], plain.argmax(axis=1)[clear])


def test_the_plan_says_what_it_does(configs):
    config = cfg.load_config(configs / "lenet.yaml")
    model = Sequential.from_config(config["model"]["layers"], config["model"]["input_shape"])
    rows = Plan(model).describe()
    assert ("training", "3, 5", "conv 5x5x32x64, frequency-domain + max pool 2x2, fused") in rows
    assert ("training", "4", "relu, after the pool") in rows and ("always", "9", "dropout") in rows
    assert ("evaluation", "0, 2, 1", "conv 5x5x1x32, im2col + max pool 2x2 + relu, fused") in rows
    assert ("training", "3", "conv 5x5x32x64, im2col") in Plan(model, "im2col").describe()


def test_two_threads_give_the_numbers_of_the_parts_in_turn(float32_close, close_calls, mixed_net):
    """``StepRunner``'s promise: each half with its own child generator, drawn in order, its
    gradients scaled by its share and added in order; batchnorm's running statistics those of
    the whole batch, folded in once, as one thread would."""
    in_turn, x, y = mixed_net()
    threaded, whole = mixed_net()[0], mixed_net()[0]
    plan = Plan(in_turn)
    seeds = np.random.default_rng(7).integers(0, 2**63 - 1, size=2)
    halves = [plan.loss_and_gradients(x[lo:lo + 8], y[lo:lo + 8], np.random.default_rng(s), 0.0, 0.5)
              for lo, s in zip((0, 8), seeds)]
    whole.forward(x, training=True, rng=np.random.default_rng(0))  # the plain loop, the whole batch
    with StepRunner(Plan(threaded), workers=2, min_per_worker=4) as runner:
        loss, correct, grads = runner.gradients(x, y, np.random.default_rng(7))
    assert loss == pytest.approx((halves[0][0] + halves[1][0]) / 2, rel=1e-5)
    probe = mixed_net()[0]  # the halves' logits, as each half's step saw them
    logits = np.concatenate([probe.forward(x[lo:lo + 8], training=True, rng=np.random.default_rng(s))
                             for lo, s in zip((0, 8), seeds)])
    assert abs(correct - (halves[0][1] + halves[1][1])) <= close_calls(logits)  # BLAS threads differ, so may ties
    assert set(grads) == set(in_turn.params())
    for key in grads:
        float32_close(grads[key], halves[0][2][key] + halves[1][2][key], what=key)
    assert set(threaded.buffers()) == {"4.running_mean", "4.running_var"}
    for key, value in whole.buffers().items():
        float32_close(threaded.buffers()[key], value, what=key)


@pytest.mark.parametrize("workers", [1, 2])
def test_one_machine_one_seed_one_worker_count_gives_identical_numbers(workers, train_steps):
    (_, first), (_, second) = train_steps(workers=workers, steps=4), train_steps(workers=workers, steps=4)
    assert set(first) == set(second)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_relu_after_the_pool_gives_the_plain_numbers(relative_error, close_calls):
    """Max commutes with relu, ties of binarised inputs and all-negative windows included: in
    float64, with no fused kernel (two input channels; the second conv gives an input
    gradient), the plan's outputs and gradients are the plain engine's up to float64 rounding
    (1e-12: a tap, a window or a tie gone wrong is off by far more)."""
    specs = [{"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1}, {"type": "relu"},
             {"type": "maxpool2d", "size": 2}, {"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1},
             {"type": "relu"}, {"type": "maxpool2d", "size": 3, "stride": 2}, {"type": "flatten"},
             {"type": "dense", "units": 5}]
    model = Sequential.from_config(specs, (10, 10, 2), np.random.default_rng(0), dtype=np.float64)
    plan = Plan(model, "im2col")
    assert [step.layers for step in plan.training_steps] == [(0,), (2,), (1,), (3,), (5,), (4,), (6,), (7,)]
    x = (np.random.default_rng(1).random((6, 10, 10, 2)) > 0.5).astype(np.float64)
    y = np.arange(6) % 5
    loss, correct, grads = model.loss_and_gradients(x, y)
    fast_loss, fast_correct, fast_grads, _ = plan.loss_and_gradients(x, y)
    logits = model.forward(x, training=True)
    assert abs(fast_correct - correct) <= close_calls(logits, 1e-12) and fast_grads.keys() == grads.keys()
    assert relative_error(fast_loss, loss) < 1e-12
    for key in grads:
        assert relative_error(fast_grads[key], grads[key]) < 1e-12, key


@pytest.mark.parametrize("algorithm", ["im2col", "fft-gemm"])
def test_evaluation_adds_a_conv_bias_after_the_pool(algorithm, float32_close):
    """A quarter of the additions; rounding is monotone, so max(z + b) == max(z) + b."""
    specs = [{"type": "conv2d", "filters": 6, "kernel": 5, "padding": 2, "algorithm": algorithm}, {"type": "relu"},
             {"type": "maxpool2d", "size": 2},
             {"type": "conv2d", "filters": 8, "kernel": 3, "padding": 1, "algorithm": "im2col"},
             {"type": "maxpool2d", "size": 2}, {"type": "relu"}, {"type": "flatten"}, {"type": "dense", "units": 4}]
    model = Sequential.from_config(specs, (12, 12, 1), np.random.default_rng(0))
    rng = np.random.default_rng(3)
    for key, p in model.params().items():
        if key.endswith(".b"):
            p[...] = rng.normal(size=p.shape).astype(np.float32)
    plan = Plan(model)
    # the first conv (either algorithm) does its pool and the relu after it itself; the second,
    # an im2col conv with an input gradient to give, pools apart and adds its bias after
    assert [step.describe() for step in plan.evaluation_steps][:4] == [
        "layers 0, 2, 1: conv 5x5x1x6, "
        f"{'im2col (channel-first phases)' if algorithm == 'im2col' else 'frequency-domain'} "
        "+ max pool 2x2 + relu, fused",
        "layer 3: conv 3x3x6x8, im2col, no bias", "layer 4: maxpool2d", "layer 3: its bias, after the pool"]
    images = np.concatenate([(rng.random((5, 12, 12, 1)) > 0.6), rng.random((5, 12, 12, 1)) * 3]).astype(np.float32)
    float32_close(plan.predict_logits(images), model.forward(images))


def test_evaluation_chunks_fit_the_cache(configs):
    config = cfg.load_config(configs / "lenet.yaml")
    lenet = Plan(Sequential.from_config(config["model"]["layers"], config["model"]["input_shape"]))
    small = Plan(Sequential.from_config([{"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2},
                                         {"type": "flatten"}, {"type": "dense", "units": 10}], (28, 28, 1)))
    assert eval_chunk(lenet.model, lenet.methods) == 48 and eval_chunk(small.model, small.methods) == 256
    assert head_start(lenet.model) == 7 and head_start(small.model) == 2  # the dense layers


def conv(filters, kernel, padding=0, stride=1, **options):
    return {"type": "conv2d", "filters": filters, "kernel": kernel, "padding": padding, "stride": stride, **options}


def pool(kind, size, stride=None):
    return {"type": kind, "size": size, **({"stride": stride} if stride else {})}


RELU, FLAT, HEAD, NORM = {"type": "relu"}, {"type": "flatten"}, {"type": "dense", "units": 4}, {"type": "batchnorm"}
FFT = {"algorithm": "fft-gemm"}
# One small net for each choice the plan makes (non-square inputs, odd sizes where a pool drops a
# row): its layers, its input, what ``describe()`` must list, and for a fused first conv the
# phases its kernel computes (convpool.channels_first, else reads_blocks or the column matrix).
SWITCHES = {
    "first conv fused, channel-first phases": (
        [conv(8, 5, 2), RELU, pool("maxpool2d", 2), FLAT, HEAD], (9, 12, 1),
        ["conv 5x5x1x8, im2col (channel-first phases) + max pool 2x2, fused", "relu, after the pool",
         "conv 5x5x1x8, im2col (channel-first phases) + max pool 2x2 + relu, fused"], "channel-first"),
    "first conv fused, phases read from the shifted blocks": (
        [conv(16, 5, 2), RELU, pool("maxpool2d", 2), FLAT, HEAD], (12, 9, 1),
        ["conv 5x5x1x16, im2col + max pool 2x2, fused"], "blocks"),
    "first conv fused, phases from a column matrix": (
        [conv(16, 3, 1), RELU, pool("maxpool2d", 2), FLAT, HEAD], (11, 10, 1),
        ["conv 3x3x1x16, im2col + max pool 2x2, fused"], "columns"),
    "first conv fused with an overlapping 3x3 pool, channel-first": (
        [conv(10, 5, 2, 2), RELU, pool("maxpool2d", 3, 2), FLAT, HEAD], (16, 20, 1),
        ["conv 5x5x1x10, im2col (channel-first phases) + max pool 3x3, fused"], "channel-first"),
    "first conv fused with an overlapping 3x3 pool, phases": (
        [conv(16, 5, 2, 2), RELU, pool("maxpool2d", 3, 2), FLAT, HEAD], (20, 16, 1),
        ["conv 5x5x1x16, im2col + max pool 3x3 + relu, fused"], "columns"),
    "first conv in the frequency domain, fused": (
        [conv(6, 5, 2, **FFT), RELU, pool("maxpool2d", 2), FLAT, HEAD], (10, 7, 1),
        ["conv 5x5x1x6, frequency-domain + max pool 2x2, fused"], None),
    "frequency-domain conv with an input gradient, fused": (
        [conv(3, 3, 1), RELU, conv(5, 5, 2, **FFT), RELU, pool("maxpool2d", 2), FLAT, HEAD], (9, 11, 1),
        ["conv 5x5x3x5, frequency-domain + max pool 2x2, fused",
         "conv 5x5x3x5, frequency-domain + max pool 2x2 + relu, fused"], None),
    "frequency-domain conv without bias, fused": (
        [conv(3, 3, 1), RELU, conv(5, 3, 1, bias=False, **FFT), RELU, pool("maxpool2d", 2), FLAT, HEAD], (8, 10, 1),
        ["conv 3x3x3x5, frequency-domain + max pool 2x2 + relu, fused"], None),
    "frequency-domain conv apart, batchnorm after it": (
        [conv(3, 3, 1), RELU, conv(4, 5, 2, bias=False, **FFT), NORM, RELU, FLAT, HEAD], (7, 8, 1),
        ["conv 5x5x3x4, frequency-domain", "batchnorm"], None),
    "im2col conv with an input gradient, its pool apart, bias after it in evaluation": (
        [conv(3, 3, 1), RELU, conv(5, 3, 1, algorithm="im2col"), RELU, pool("maxpool2d", 2), FLAT, HEAD], (9, 8, 1),
        ["conv 3x3x3x5, im2col", "maxpool2d", "relu, after the pool", "conv 3x3x3x5, im2col, no bias",
         "its bias, after the pool"], None),
    "one-channel conv apart (batchnorm after it), its columns by slice copies": (
        [conv(4, 3, 1, bias=False), NORM, RELU, pool("maxpool2d", 2), FLAT, HEAD], (10, 9, 1),
        ["conv 3x3x1x4, im2col", "batchnorm", "relu, after the pool"], None),
    "overlapping max pool, its gradient by cell number": (
        [conv(3, 3, 1), RELU, conv(4, 3, 1, algorithm="im2col"), RELU, pool("maxpool2d", 3, 2), FLAT, HEAD],
        (10, 11, 1), ["maxpool2d 3x3 stride 2, gradient by cell number"], None),
    "max pool with gaps between its windows": (
        [conv(3, 3, 1), {"type": "tanh"}, pool("maxpool2d", 2, 3), FLAT, HEAD], (11, 10, 2), ["maxpool2d"], None),
    "average pools, side by side and overlapping": (
        [conv(3, 3, 1), {"type": "leaky_relu"}, pool("avgpool2d", 2), conv(4, 3, 1, algorithm="im2col"),
         {"type": "sigmoid"}, pool("avgpool2d", 3, 1), FLAT, HEAD], (10, 9, 2), ["avgpool2d"], None),
    "first conv fused without bias, channel-first phases": (
        [conv(8, 5, 2, bias=False), RELU, pool("maxpool2d", 2), FLAT, HEAD], (9, 12, 1),
        ["conv 5x5x1x8, im2col (channel-first phases) + max pool 2x2, fused"], "channel-first"),
    "first conv fused without bias, phases read from the shifted blocks": (
        [conv(16, 5, 2, bias=False), RELU, pool("maxpool2d", 3, 2), FLAT, HEAD], (12, 14, 1),
        ["conv 5x5x1x16, im2col + max pool 3x3, fused"], "blocks"),
    "first conv fused, no relu after the pool in evaluation": (
        [conv(16, 3, 1), pool("maxpool2d", 2), FLAT, HEAD], (9, 10, 1),
        ["conv 3x3x1x16, im2col + max pool 2x2, fused"], "columns"),
    "frequency-domain conv with a pool it does not fuse, bias after the pool in evaluation": (
        [conv(3, 3, 1), RELU, conv(5, 3, 1, **FFT), RELU, pool("maxpool2d", 3, 2), FLAT, HEAD], (10, 11, 1),
        ["conv 3x3x3x5, frequency-domain", "maxpool2d 3x3 stride 2, gradient by cell number",
         "conv 3x3x3x5, frequency-domain, no bias", "its bias, after the pool"], None),
    "relu before an average pool, not moved": (
        [conv(3, 3, 1), RELU, pool("avgpool2d", 2), conv(4, 3, 1, algorithm="im2col"), RELU, FLAT, HEAD],
        (8, 9, 2), ["relu", "avgpool2d"], None),
    "dense head with batchnorm and dropout": (
        # no bias before a batchnorm: its gradient is 0, rounding noise alone
        [conv(3, 3, 0, 2), RELU, FLAT, {"type": "dense", "units": 6, "bias": False}, NORM, RELU,
         {"type": "dropout", "rate": 0.3}, HEAD], (9, 9, 1), ["batchnorm", "dropout"], None),
}


def switch_case(name, dtype):
    """The net of ``SWITCHES[name]`` twice (the same weights, biases and batchnorm shifts not
    zero, so that a bias added after a pool shows), a batch of 10 and its labels."""
    layers, shape, _, _ = SWITCHES[name]
    models = [Sequential.from_config(layers, shape, np.random.default_rng(0), dtype=dtype) for _ in range(2)]
    rng = np.random.default_rng(1)
    shifts = {key: rng.normal(scale=0.5, size=p.shape) for key, p in models[0].params().items()
              if key.endswith((".b", ".beta"))}
    for model in models:
        for key, shift in shifts.items():
            model.params()[key][...] = shift
    x = rng.normal(size=(10,) + shape).astype(dtype)  # no two values tie, none sits on relu's kink
    return models, x, rng.integers(0, 4, size=10)


@pytest.mark.parametrize("name", SWITCHES)
def test_every_choice_of_the_plan_gives_the_plain_engine_s_numbers(name, relative_error):
    """In float64, where no rounding can tip a max pool's choice or a relu's: the training step's
    logits, loss, gradients and batchnorm statistics, and the evaluation's logits (in chunks of
    4, on two threads), are the plain engine's within float64 rounding (1e-10 of the largest
    magnitude: a wrong tap, window, phase or bias is off by far more)."""
    _, _, listed, phases = SWITCHES[name]
    (plain, fast), x, y = switch_case(name, np.float64)
    plan = Plan(fast)
    described = [what for _, _, what in plan.describe()]
    for what in listed:
        assert what in described, described
    if phases is not None:  # the fused first conv's kernel computes its phases this way
        first = fast.layers[0]
        reads = "blocks" if convpool.reads_blocks(first.kernel, first.stride) else "columns"
        assert ("channel-first" if convpool.channels_first(first.filters) else reads) == phases
    loss, correct, grads = plain.loss_and_gradients(x, y, np.random.default_rng(5))
    fast_loss, fast_correct, fast_grads, caches = plan.loss_and_gradients(x, y, np.random.default_rng(5))
    plan.update_batchnorm_statistics([plan.batch_statistics(caches)])
    assert fast_loss == pytest.approx(loss, rel=1e-10) and fast_correct == correct
    assert fast_grads.keys() == grads.keys() == plain.params().keys()
    for key in grads:
        assert relative_error(fast_grads[key], grads[key]) < 1e-10, key
    for key, value in plain.buffers().items():
        assert relative_error(fast.buffers()[key], value) < 1e-10, key
    assert relative_error(plan.predict_logits(x, batch_size=4, workers=2), plain.forward(x)) < 1e-10
    # last: the plain training forward moves batchnorm's running statistics once more
    training_logits = plan.forward(x, training=True, rng=np.random.default_rng(5))[0]
    assert relative_error(training_logits, plain.forward(x, training=True, rng=np.random.default_rng(5))) < 1e-10


@pytest.mark.parametrize("name", SWITCHES)
def test_every_choice_of_the_plan_in_float32_computes_the_plain_values(name, float32_close):
    """The same nets in float32, the dtype training runs in: forward values within float32
    rounding (FLOAT32_RTOL) in training and evaluation. The gradients' routing through a max
    pool may tip on a last bit there; the shipped configs' test compares them on inputs made
    free of near-ties."""
    (plain, fast), x, _ = switch_case(name, np.float32)
    plan = Plan(fast)
    float32_close(plan.predict_logits(x, batch_size=4, workers=2), plain.forward(x), what="evaluation logits")
    float32_close(plan.forward(x, training=True, rng=np.random.default_rng(5))[0],
                  plain.forward(x, training=True, rng=np.random.default_rng(5)), what="training logits")


@st.composite
def small_nets(draw):
    """``(specs, input shape, model-wide conv algorithm, batch size)``: one or two conv blocks of
    any kernel, stride, padding and filter count (a few filters and more than THIN_FILTERS) and
    each algorithm; a block is either a conv, relu and stride-2 max pool, which the plan may
    fuse, or a conv with any of batchnorm, an activation and a max or average pool of any size
    and stride (odd sides included). Then a dense head with or without batchnorm and dropout;
    one to six images of one or two channels. Biases are not zero (the test sets them) but
    before a batchnorm, where their gradient is 0, rounding noise alone."""
    specs = []
    for _ in range(draw(st.integers(1, 2))):
        f, stride = draw(st.integers(1, 5)), draw(st.integers(1, 2))
        pad = draw(st.integers(0, f))
        algorithms = ["auto", "im2col"] + (["fft-gemm"] if stride == 1 and pad < f else [])
        specs.append(conv(draw(st.sampled_from([1, 3, convpool.THIN_FILTERS + 1])), f, pad, stride,
                          algorithm=draw(st.sampled_from(algorithms))))
        if draw(st.booleans()):  # a block the plan may fuse
            specs += [RELU, pool("maxpool2d", draw(st.integers(2, 3)), 2)]
            continue
        if draw(st.booleans()):
            specs[-1]["bias"] = False
            specs.append(NORM)
        activation = draw(st.sampled_from(["relu", "leaky_relu", "tanh", None]))
        specs += [{"type": activation}] if activation else []
        if draw(st.booleans()):
            specs.append(pool(draw(st.sampled_from(["maxpool2d", "avgpool2d"])), draw(st.integers(2, 3)),
                              draw(st.integers(1, 3))))
            specs += [RELU] if draw(st.booleans()) else []
    specs.append(FLAT)
    normed = draw(st.booleans())
    if draw(st.booleans()):
        specs += [{"type": "dense", "units": 5, "bias": not normed}] + ([NORM] if normed else [])
        specs += [RELU, {"type": "dropout", "rate": 0.3}]
    shape = (draw(st.integers(4, 13)), draw(st.integers(4, 13)), draw(st.sampled_from([1, 1, 2])))
    # a batchnorm over fewer than three values gives its input a gradient of 0: rounding noise
    images = draw(st.integers(3 if normed else 1, 6))
    return specs + [HEAD], shape, draw(st.sampled_from(["auto", "im2col", "fft-gemm"])), images


@settings(max_examples=150, deadline=None)
@given(small_nets(), st.integers(0, 2**16))
@example(([conv(1, 5, 5, 2), RELU, pool("maxpool2d", 3, 2), FLAT, HEAD], (4, 5, 1), "auto", 1), 6)
def test_random_small_nets_through_the_plan_give_the_plain_engine_s_numbers(relative_error, net, seed):
    """Whatever the plan makes of a net (fused or not, reordered, chunked), in float64 its
    training step (loss, gradients, batchnorm statistics) and evaluation are the plain engine's
    within float64 rounding: each gradient within 1e-9 of its largest entry, or 1e-10 of the
    largest gradient of all (a wrong tap, window, bias or mask is off by far more)."""
    specs, shape, algorithm, images = net
    # not the weights' own stream: images drawn from it copied the kernel, and two windows of a max
    # pool tied to the last bit, whose gradient each engine may rightly route to either
    rng = np.random.default_rng([seed, 1])
    try:
        models = [Sequential.from_config(specs, shape, np.random.default_rng(seed), dtype=np.float64) for _ in range(2)]
    except LayerConfigError:  # a kernel or pool larger than its input
        assume(False)
    plain, fast = models
    for key, p in plain.params().items():
        if key.endswith((".b", ".beta")):
            p[...] = fast.params()[key][...] = rng.normal(scale=0.5, size=p.shape)
    plan = Plan(fast, algorithm)
    x, y = rng.normal(size=(images,) + shape), rng.integers(0, 4, size=images)
    loss, correct, grads = plain.loss_and_gradients(x, y, np.random.default_rng(5))
    fast_loss, fast_correct, fast_grads, caches = plan.loss_and_gradients(x, y, np.random.default_rng(5))
    plan.update_batchnorm_statistics([plan.batch_statistics(caches)])
    assert fast_loss == pytest.approx(loss, rel=1e-10) and fast_correct == correct
    assert fast_grads.keys() == grads.keys()
    largest = max(float(np.max(np.abs(grad))) for grad in grads.values())
    for key, grad in grads.items():
        # a gradient that cancels to (nearly) nothing, such as a bias's whose shift a later
        # batchnorm takes out, is rounding noise of the size of the others' rounding
        assert np.max(np.abs(fast_grads[key] - grad)) <= 1e-9 * np.max(np.abs(grad)) + 1e-10 * largest, key
    for key, value in plain.buffers().items():
        assert relative_error(fast.buffers()[key], value) < 1e-10, key
    assert relative_error(plan.predict_logits(x, batch_size=4, workers=2), plain.forward(x)) < 1e-10


class ChannelScale(Layer):
    """A layer the plan has no step of its own for, with a parameter: x times a weight per channel."""

    def build(self, input_shape, rng=None, dtype=np.float32):
        out = super().build(input_shape, rng, dtype)
        self.params = {"s": np.linspace(0.5, 1.5, input_shape[-1]).astype(dtype)}
        return out

    def forward_pass(self, x, training=False, rng=None):
        return x * self.params["s"], x

    def backward_pass(self, dout, cache):
        return dout * self.params["s"], {"s": (dout * cache).reshape(-1, cache.shape[-1]).sum(axis=0)}


def test_a_layer_the_plan_does_not_know_runs_as_the_plain_engine_runs_it(relative_error):
    """Its own forward and backward, its gradients keyed like the model's, and the conv before it
    left unfused: the plain engine's numbers in training and evaluation (float64)."""
    plain, fast = (Sequential([Conv2D(4, 3, padding=1), ChannelScale(), ReLU(), MaxPool2D(2), Flatten(), Dense(3)],
                              (7, 8, 1), np.random.default_rng(0), dtype=np.float64) for _ in range(2))
    plan = Plan(fast)
    assert [step.describe() for step in plan.training_steps][:2] == ["layer 0: conv 3x3x1x4, im2col",
                                                                    "layer 1: layer"]
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 7, 8, 1)), rng.integers(0, 3, size=5)
    loss, _, grads = plain.loss_and_gradients(x, y)
    fast_loss, _, fast_grads, _ = plan.loss_and_gradients(x, y)
    assert fast_loss == pytest.approx(loss, rel=1e-12) and fast_grads.keys() == grads.keys() >= {"1.s"}
    for key, grad in grads.items():
        assert relative_error(fast_grads[key], grad) < 1e-12, key
    assert relative_error(plan.predict_logits(x, workers=2), plain.forward(x)) < 1e-12


class DoubledConv(Conv2D):
    """A conv subclass that changes its arithmetic: twice the conv's output."""

    def forward_pass(self, x, training=False, rng=None):
        out, cache = super().forward_pass(x, training, rng)
        return 2 * out, cache

    def backward_pass(self, dout, cache):
        return super().backward_pass(2 * dout, cache)


class AbsoluteReLU(ReLU):
    """A relu subclass that changes its arithmetic to |x|, which does not commute with a max pool."""

    def forward_pass(self, x, training=False, rng=None):
        return np.abs(x), x

    def backward_pass(self, dout, cache):
        return dout * np.sign(cache), {}


class NamedMaxPool(MaxPool2D):
    """A max pool subclass that keeps its arithmetic."""


class NamedNorm(BatchNorm):
    """A batchnorm subclass that keeps its arithmetic (its running statistics included)."""


class NamedDense(Dense):
    """A dense subclass that keeps its arithmetic."""


def test_a_subclass_of_a_layer_runs_as_the_plain_engine_runs_it(relative_error):
    """The plan computes a layer by its kernels only for the exact class (steps.computed_as): a conv,
    relu, pool, batchnorm or dense of a subclass runs its own forward and backward, so a subclass that
    changes the arithmetic (DoubledConv, AbsoluteReLU before a pool) gets its own numbers, and one that
    keeps it the same numbers, within float64 rounding, in training and evaluation."""
    def layers():
        return [DoubledConv(4, 3, padding=1), AbsoluteReLU(), MaxPool2D(2), Conv2D(3, 3, padding=1, bias=False),
                NamedNorm(), ReLU(), NamedMaxPool(3, stride=2), Flatten(), NamedDense(5), ReLU(), Dense(3)]

    plain, fast = (Sequential(layers(), (9, 10, 1), np.random.default_rng(0), dtype=np.float64) for _ in range(2))
    plan = Plan(fast)
    described = [step.describe() for step in plan.training_steps]
    assert described[:3] == ["layer 0: conv2d", "layer 1: relu", "layer 2: maxpool2d"], described
    assert "layer 6: maxpool2d" in described and "layer 8: dense" in described, described
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 9, 10, 1)), rng.integers(0, 3, size=6)
    loss, _, grads = plain.loss_and_gradients(x, y)
    fast_loss, _, fast_grads, caches = plan.loss_and_gradients(x, y)
    plan.update_batchnorm_statistics([plan.batch_statistics(caches)])
    assert fast_loss == pytest.approx(loss, rel=1e-10) and fast_grads.keys() == grads.keys()
    for key, grad in grads.items():
        assert relative_error(fast_grads[key], grad) < 1e-10, key
    for key, value in plain.buffers().items():
        assert relative_error(fast.buffers()[key], value) < 1e-10, key
    assert relative_error(plan.predict_logits(x, workers=2), plain.forward(x)) < 1e-10


@pytest.mark.parametrize("name", ["frequency-domain conv apart, batchnorm after it",
                                  "dense head with batchnorm and dropout"])
def test_batchnorm_statistics_recomputed_through_the_plan_are_the_plain_loop_s(name, relative_error):
    """``recompute_batchnorm`` (an average's statistics) folds three batches of unequal sizes,
    through the plan's training forward (``fold_batchnorm_statistics``) or the plain one, dropout
    drawing alike: the running statistics agree within float64 rounding."""
    (plain, fast), x, _ = switch_case(name, np.float64)
    batches = [x[:4], x[4:9], x[9:]]
    recompute_batchnorm(plain, iter(batches), np.random.default_rng(2))
    recompute_batchnorm(fast, iter(batches), np.random.default_rng(2), Plan(fast).fold_batchnorm_statistics)
    assert plain.buffers().keys() == fast.buffers().keys() and plain.buffers()
    for key, value in plain.buffers().items():
        assert relative_error(fast.buffers()[key], value) < 1e-10, key
