"""The seed notebook's demonstration cells, run unchanged against the package."""
import numpy as np
import pytest

from mnistcnn.data import split_indices
from mnistcnn.engine.model import Sequential
from mnistcnn.engine.optim import Adam
from mnistcnn.engine.reference import conv_forward_loop, pool_forward_loop
# the notebook's own import path
from mnistcnn.functional import (conv_backward, conv_forward, conv_single_step, create_mask_from_window,
                                 distribute_value, pool_backward, pool_forward)


@pytest.fixture(scope="module")
def train_x(mnist):
    data = mnist
    split = split_indices(data.train_labels, 5000, "head", train_limit=50000)
    # the notebook's reshape_data: binarised, uint8, 0 or 255
    return (data.train_images[split.train] > 0).astype(np.uint8) * 255


def test_notebook_cells_run_unchanged(train_x):
    np.random.seed(1)
    # In [64]
    A_prev = train_x[0:10]
    W = np.random.randn(5, 5, 1, 10)
    b = np.random.randn(1, 1, 1, 10)
    hparameters = {"pad": 2, "stride": 2}
    Z, cache_conv = conv_forward(A_prev, W, b, hparameters)
    assert Z.shape == (10, 14, 14, 10) and Z[3, 2, 1].shape == (10,)
    assert cache_conv[0][1][2][3].shape == (1,)  # cache_conv[0] is A_prev, as the notebook printed
    assert np.allclose(Z, conv_forward_loop(A_prev.astype(float), W, b, hparameters))
    # In [67]
    hparameters = {"stride": 2, "f": 3}
    A, cache = pool_forward(A_prev, hparameters)
    assert A.shape == (10, 13, 13, 1)
    A, cache = pool_forward(A_prev, hparameters, mode="average")
    assert np.allclose(A, pool_forward_loop(A_prev.astype(float), hparameters, mode="average"))
    # In [58]: one output neuron is conv_forward's first one (its window in the padded image)
    window = np.pad(A_prev[0].astype(float), ((2, 2), (2, 2), (0, 0)))[:5, :5]
    assert np.isclose(conv_single_step(window, W[..., 0], b[..., 0]), Z[0, 0, 0, 0])
    # In [69]
    dA, dW, db = conv_backward(Z, cache_conv)
    assert dA.shape == (10, 28, 28, 1) and dW.shape == (5, 5, 1, 10) and db.shape == (1, 1, 1, 10)
    # In [71], In [48]
    mask = create_mask_from_window(np.random.randn(2, 3))
    assert mask.sum() == 1
    assert np.allclose(distribute_value(2, (2, 2)), [[0.5, 0.5], [0.5, 0.5]])
    # In [53]: the notebook pools train_x[0:10] (its A_pre typo) but hands in a dA of another shape;
    # the fixed pool_backward says so instead of reading the wrong entries.
    A_pre = train_x[0:50]  # noqa: F841 (the notebook's typo)
    hparameters = {"stride": 1, "f": 2}
    A, cache = pool_forward(A_prev, hparameters)
    dA = np.random.randn(5, 28, 28, 1)
    with pytest.raises(ValueError, match=r"dA must have the pooled output's shape \(10, 27, 27, 1\)"):
        pool_backward(dA, cache, mode="max")
    dA = np.random.randn(*A.shape)
    dA_prev = pool_backward(dA, cache, mode="max")
    assert dA_prev.shape == (10, 28, 28, 1) and np.isclose(dA_prev.sum(), dA.sum())
    assert np.isclose(pool_backward(dA, cache, mode="average").sum(), dA.sum())


def test_tiny_network_overfits_64_real_digits(mnist):
    data = mnist
    x = data.train_images[:64].astype(np.float32) / 255
    y = data.train_labels[:64]
    specs = [{"type": "conv2d", "filters": 8, "kernel": 3, "padding": 1}, {"type": "relu"},
             {"type": "maxpool2d", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 10}]
    model = Sequential.from_config(specs, (28, 28, 1), np.random.default_rng(0))
    opt = Adam(lr=0.01)
    params = model.params()
    for _ in range(60):
        loss, correct, grads = model.loss_and_gradients(x, y)
        opt.step(params, grads)
    assert (model.forward(x).argmax(axis=1) == y).mean() == 1.0
    assert loss < 0.05
