"""Softmax cross-entropy: its fused gradient against finite differences, its value against the
textbook formula, and no overflow for large logits."""
import numpy as np
import pytest

from mnistcnn.engine.losses import accuracy, log_softmax, softmax, softmax_cross_entropy


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_gradient_matches_finite_differences(n, smoothing, numerical_gradient, relative_error):
    rng = np.random.default_rng(n)
    logits = rng.normal(scale=3.0, size=(n, 7))
    labels = rng.integers(0, 7, size=n)
    _, dlogits = softmax_cross_entropy(logits, labels, smoothing)
    numeric = numerical_gradient(lambda: softmax_cross_entropy(logits, labels, smoothing)[0], logits)
    assert relative_error(dlogits, numeric) < 1e-6


def test_value_is_the_mean_negative_log_probability_of_the_target():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(4, 3)), np.array([0, 2, 1, 2])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    plain = -np.mean(np.log(probabilities[np.arange(4), labels]))
    assert softmax_cross_entropy(logits, labels)[0] == pytest.approx(plain, rel=1e-12)
    # smoothing s: the target is (1 - s) one-hot + s / K, so the loss mixes in the mean over classes
    uniform = -np.mean(np.log(probabilities).mean(axis=1))
    assert softmax_cross_entropy(logits, labels, 0.2)[0] == pytest.approx(0.8 * plain + 0.2 * uniform, rel=1e-12)
    np.testing.assert_allclose(softmax(logits), probabilities, rtol=1e-12)


def test_large_logits_neither_overflow_nor_lose_the_gradient():
    logits = np.array([[1e4, 0.0, -1e4], [-3e4, 3e4, 0.0]], dtype=np.float32)
    labels = np.array([1, 1])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp(-20000) may underflow to 0
        loss, dlogits = softmax_cross_entropy(logits, labels)
        assert np.all(np.isfinite(log_softmax(logits)))
    assert loss == pytest.approx(1e4 / 2, rel=1e-6)  # the first row's label is 1e4 below its largest logit
    assert dlogits.dtype == np.float32
    np.testing.assert_allclose(dlogits, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-7)  # softmax and target both sum to 1


def test_accuracy_counts_rows_whose_largest_logit_is_the_label():
    assert accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, 1])) == pytest.approx(2 / 3)
