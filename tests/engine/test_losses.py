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


# the seed notebook's labels are one-hot rows (one_hot=True); a batch of 10 of them (as many rows
# as classes) or of 1 broadcasts against the indices instead of failing, as a label of -1 indexes
# the last class
NOT_CLASS_INDICES = {
    "one-hot, 10 rows": np.eye(10, dtype=np.int64)[[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]],
    "one-hot, 1 row": np.eye(10, dtype=np.uint8)[[7]],
    "one-hot floats": np.eye(10)[[3, 1, 4]],
    "floats": np.array([3.0, 1.0, 4.0]),
    "negative": np.array([3, -1, 4]),
    "past the last class": np.array([3, 10, 4]),
}


@pytest.mark.parametrize("labels", NOT_CLASS_INDICES.values(), ids=NOT_CLASS_INDICES.keys())
def test_labels_that_are_not_class_indices_are_refused_by_the_loss_and_the_accuracy(labels):
    logits = np.random.default_rng(0).normal(size=(len(labels), 10))
    with pytest.raises(ValueError, match=r"^labels must be"):
        softmax_cross_entropy(logits, labels)
    if labels.ndim == 2:  # an index past the classes only scores wrong; one-hot rows score garbage
        with pytest.raises(ValueError, match=r"^labels must be .*labels\.argmax\(axis=1\)"):
            accuracy(logits, labels)


def test_labels_may_be_any_integer_type_or_a_list():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    for labels in (np.array([1, 0, 1], dtype=np.uint8), [1, 0, 1]):
        assert accuracy(logits, labels) == 1.0
        assert softmax_cross_entropy(logits, labels)[0] == softmax_cross_entropy(logits, np.array([1, 0, 1]))[0]
