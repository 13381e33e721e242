"""IDX reading and its checks, the bundled MNIST, splits, preprocessing, batches."""
import gzip
import shutil
import struct

import numpy as np
import pytest

from mnistcnn import config as cfg
from mnistcnn.augment import Augment, affine_resample, elastic_fields
from mnistcnn.data import (BUNDLED_DIR, MNIST_SHA256, BatchIterator, Preprocess, check_data, load_dataset, read_idx,
                           split_indices)
from mnistcnn.errors import DataError

# images per class of genuine MNIST: what the bundled copy must hold
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def test_bundled_mnist_loads_verified_with_genuine_counts(mnist):
    assert mnist.verified
    assert mnist.train_images.shape == (60000, 28, 28, 1) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28, 1)
    assert tuple(np.bincount(mnist.train_labels)) == MNIST_TRAIN_COUNTS
    assert tuple(np.bincount(mnist.test_labels)) == MNIST_TEST_COUNTS


def test_notebook_split_shapes(mnist):
    split = split_indices(mnist.train_labels, 5000, "head", train_limit=50000)
    assert mnist.train_images[split.train].shape == (50000, 28, 28, 1)
    assert mnist.train_images[split.validation].shape == (5000, 28, 28, 1)
    assert mnist.test_images.shape == (10000, 28, 28, 1)
    assert np.array_equal(split.validation, np.arange(5000))
    whole = split_indices(mnist.train_labels, 5000, "head")  # no train_limit to hide an overlap
    assert not set(whole.validation) & set(whole.train) and len(whole.train) == 55000


def test_random_split_is_stratified_reproducible_and_disjoint(mnist):
    a = split_indices(mnist.train_labels, 5000, "random", seed=3)
    b = split_indices(mnist.train_labels, 5000, "random", seed=3)
    c = split_indices(mnist.train_labels, 5000, "random", seed=4)
    assert a.digest() == b.digest() != c.digest()
    assert len(a.validation) == 5000 and len(a.train) == 55000
    assert not set(a.validation) & set(a.train)
    share = np.bincount(mnist.train_labels[a.validation], minlength=10) / 5000
    assert np.allclose(share, np.array(MNIST_TRAIN_COUNTS) / 60000, atol=0.001)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("naming", ["dash", "dot"])
def test_any_idx_folder_in_either_naming(tmp_path, gz, naming, make_folder):
    make_folder(tmp_path, gz=gz, naming=naming)
    data = load_dataset(tmp_path)
    assert not data.verified and data.train_images.shape == (200, 28, 28, 1)


def test_a_folder_of_32x32_images_loads_with_its_shape(tmp_path, make_folder):
    make_folder(tmp_path, size=32)
    assert load_dataset(tmp_path).image_shape == (32, 32, 1)


IMAGES = np.zeros((200, 28, 28), np.uint8)
CORRUPTIONS = {  # each: the file's bytes made from idx_bytes, and the words its error must hold
    "magic": (lambda idx_bytes: b"\x01\x02\x08\x03" + idx_bytes(IMAGES)[4:], "magic number"),
    "type": (lambda idx_bytes: idx_bytes(IMAGES, type_code=0x0D), "element type 0x0d"),
    "ndim": (lambda idx_bytes: idx_bytes(np.zeros((200, 784), np.uint8)), "has 2 dimensions, expected 3"),
    "truncated": (lambda idx_bytes: idx_bytes(IMAGES)[:-100], "truncated"),
    "padded": (lambda idx_bytes: idx_bytes(IMAGES) + b"\x00" * 7, "padded"),
    "header": (lambda idx_bytes: b"\x00\x00\x08\x03\x00", "truncated inside its header"),
    "empty": (lambda idx_bytes: b"", "too short"),
    "count": (lambda idx_bytes: idx_bytes(np.zeros((150, 28, 28), np.uint8)), "150 images but"),
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_corruption_has_its_own_error_naming_the_file(tmp_path, kind, gz, idx_bytes, make_folder):
    # a gzip file's length says nothing of its data's: a truncated or padded one is found as it is read
    make_bytes, message = CORRUPTIONS[kind]
    make_folder(tmp_path, gz=gz)
    path = tmp_path / ("train-images-idx3-ubyte.gz" if gz else "train-images-idx3-ubyte")
    path.write_bytes(gzip.compress(make_bytes(idx_bytes)) if gz else make_bytes(idx_bytes))
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_a_header_with_an_empty_axis_and_huge_others_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 2**17, 2**17))
    with pytest.raises(DataError, match="which is far too large for an image set"):
        read_idx(path, 3)


def test_a_split_without_examples_and_test_images_of_another_size_are_refused(tmp_path, make_folder):
    make_folder(tmp_path / "empty", n_test=0)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: holds no examples"):
        load_dataset(tmp_path / "empty")
    make_folder(tmp_path / "mixed", size=28)
    make_folder(tmp_path / "other", size=32)
    (tmp_path / "other" / "t10k-images-idx3-ubyte.gz").replace(tmp_path / "mixed" / "t10k-images-idx3-ubyte.gz")
    (tmp_path / "other" / "t10k-labels-idx1-ubyte.gz").replace(tmp_path / "mixed" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"train images are \(28, 28\) but test images are \(32, 32\)"):
        load_dataset(tmp_path / "mixed")


def test_genuine_mnist_named_with_dots_is_verified_as_genuine(tmp_path):
    for path in BUNDLED_DIR.glob("*-ubyte.gz"):
        stem, kind = path.name.removesuffix("-ubyte.gz").rsplit("-", 1)
        shutil.copy(path, tmp_path / f"{stem}.{kind}-ubyte.gz")
    dataset = load_dataset(tmp_path, verify=True)
    assert dataset.verified and sorted(dataset.sha256) == sorted(MNIST_SHA256)


def test_a_training_split_under_one_batch_with_drop_last_is_refused_by_the_dry_run(tmp_path, make_folder):
    # every batch of it would be dropped: an epoch of no steps
    make_folder(tmp_path, n_train=200)
    config = cfg.validate({"data": {"dir": str(tmp_path), "validation": 50, "train_limit": 30},
                           "train": {"batch_size": 64, "drop_last": True}})
    with pytest.raises(DataError, match="the training split has 30 images, fewer than one batch of 64 with "
                                        "train.drop_last"):
        check_data(config)


def test_a_last_batch_of_one_image_through_a_batchnorm_of_one_value_per_channel_is_refused(tmp_path, make_folder):
    # trained on one image, such a batchnorm's variance is 0 and it zeros its output (PyTorch raises)
    from mnistcnn.engine.layers import BatchNorm

    layer = BatchNorm()
    layer.build((3,))
    assert not layer.forward(np.array([[1.0, 2.0, 3.0]], np.float32), training=True).any()
    make_folder(tmp_path, n_train=200)
    dense = [{"type": "flatten"}, {"type": "dense", "units": 8}, {"type": "batchnorm"}, {"type": "dense", "units": 10}]
    one_by_one = [{"type": "conv2d", "filters": 4, "kernel": 28}, {"type": "batchnorm"}, {"type": "flatten"},
                  {"type": "dense", "units": 10}]
    per_pixel = [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "batchnorm"}, {"type": "flatten"},
                 {"type": "dense", "units": 10}]

    def check(layers, train_limit=129, **train):
        config = cfg.validate({"data": {"dir": str(tmp_path), "validation": 50, "train_limit": train_limit},
                               "model": {"layers": layers}, "train": {"batch_size": 64, **train}})
        return check_data(config, "c.yaml")

    for layers, index in ((dense, 2), (one_by_one, 1)):
        with pytest.raises(DataError) as refused:
            check(layers)
        assert str(refused.value) == (
            f"model.layers[{index}]: a batchnorm over one value per channel would train on a batch of 1 image (129 "
            "training images in batches of 64), whose variance is 0, and zero its output; set train.drop_last: true "
            "or change train.batch_size (--batch-size) in c.yaml")
    with pytest.raises(DataError, match="raise train.batch_size"):
        check(dense, batch_size=1, drop_last=True)
    assert check(dense, drop_last=True)["steps_per_epoch"] == 2
    assert check(dense, train_limit=130)["steps_per_epoch"] == 3
    assert check(per_pixel)["steps_per_epoch"] == 3  # 28x28 values per channel even in one image
    repeated = cfg.validate({"data": {"dir": str(tmp_path), "validation": 50, "train_limit": 129,
                                      "augment": {"shift": 1, "repeats": 2}}, "model": {"layers": dense}})
    assert check_data(repeated)["steps_per_epoch"] == 3  # the last step holds two augmented copies


@pytest.mark.parametrize("label, index", [(12, 17), (10, 5)])  # 10: the number of classes, one past the last
def test_labels_outside_the_classes(tmp_path, make_folder, write_idx, label, index):
    make_folder(tmp_path, gz=False)
    labels = np.full(50, 3, np.uint8)
    labels[index] = label
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match=f"label {label} at index {index} is outside 0-9"):
        load_dataset(tmp_path)


def test_a_truncated_or_garbage_gzip_is_a_data_error_naming_the_file(tmp_path, make_folder):
    make_folder(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DataError, match="corrupt or truncated|truncated"):
        read_idx(path)
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match=str(path)):
        read_idx(path)


def test_missing_folder_and_missing_file(tmp_path, make_folder, monkeypatch):
    with pytest.raises(DataError, match="data folder not found"):
        load_dataset(tmp_path / "nope")
    monkeypatch.setenv("MNISTCNN_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="data folder not found; the MNISTCNN_DATA_DIR variable names it"):
        load_dataset()
    make_folder(tmp_path)
    monkeypatch.delenv("MNISTCNN_DATA_DIR")
    one_file = tmp_path / "train-images-idx3-ubyte.gz"  # a file of the folder given for the folder
    with pytest.raises(DataError, match=f"is a file, not a data folder; point data.dir \\(or --data-dir\\) at the "
                                        f"folder that holds it, {tmp_path}$"):
        load_dataset(one_file)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        load_dataset(tmp_path)


def test_checksum_mismatch_names_file_both_sums_and_the_fix(tmp_path, make_folder):
    make_folder(tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path, verify=True)
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and "ba891046e6505d7a" in message
    assert "mnistcnn download" in message


def test_binarize_scale_and_standardize_and_a_fitted_standardize_round_trips():
    batch = np.array([[0, 1, 128, 255]], np.uint8).reshape(1, 2, 2, 1)
    assert Preprocess("binarize", threshold=0)(batch).ravel().tolist() == [0, 1, 1, 1]
    assert Preprocess("binarize", threshold=127)(batch).ravel().tolist() == [0, 0, 1, 1]
    assert np.allclose(Preprocess("scale")(batch).ravel(), [0, 1 / 255, 128 / 255, 1])
    images = np.random.default_rng(0).integers(0, 256, (100, 4, 4, 1)).astype(np.uint8)
    std = Preprocess("standardize").fit(images)
    out = std(images)
    assert out.dtype == np.float32 and abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3
    again = Preprocess(**std.to_config())
    assert np.array_equal(again(images), out)


def test_standardize_fitted_on_images_of_one_colour_gives_finite_numbers():
    # their variance, E[x^2] - E[x]^2, can round to a hair below 0, whose square root is NaN
    images = np.full((4, 28, 28, 1), 7, np.uint8)
    assert np.isfinite(Preprocess("standardize").fit(images)(images)).all()


def test_standardize_is_fitted_on_the_training_split_alone():
    from mnistcnn import config as cfg
    from mnistcnn.data import prepare_data

    config = cfg.validate({"data": {"train_limit": 500, "validation": 1000, "preprocess": {"type": "standardize"}}})
    data = prepare_data(config)
    fitted, pixels = Preprocess.for_config(config, data), data.train_x / 255.0
    assert fitted.mean == pytest.approx(pixels.mean(), rel=1e-9) and fitted.std == pytest.approx(pixels.std(), rel=1e-6)


def test_batch_iterator_resumes_exactly():
    full = BatchIterator(103, 10, seed=5)
    expected = [list(b) for _ in range(3) for b in full.epoch_batches()]
    it = BatchIterator(103, 10, seed=5)
    got = []
    for _ in range(1):
        got += [list(b) for b in it.epoch_batches()]
    gen = it.epoch_batches()
    got += [list(next(gen)) for _ in range(4)]
    state = it.state()
    resumed = BatchIterator(103, 10, seed=5)
    resumed.load_state(state)
    got += [list(b) for b in resumed.epoch_batches()]
    got += [list(b) for b in resumed.epoch_batches()]
    assert got == expected
    assert sorted(i for b in expected[:11] for i in b) == list(range(103))
    assert expected[:11] != expected[11:22]  # each epoch shuffled anew
    assert len(BatchIterator(103, 10, 0, drop_last=True)) == 10


def test_augmentation_is_seeded_and_identity_without_change():
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    x[:, 0, 0] = 0  # the background value that shifted-in pixels take
    assert np.array_equal(affine_resample(x, np.zeros(4), np.ones(4), np.zeros((4, 2))), x)
    aug = Augment(shift=2, rotate=10, scale=0.1)
    a = aug(x, np.random.default_rng(1))
    b = aug(x, np.random.default_rng(1))
    assert a.shape == x.shape and np.array_equal(a, b) and not np.array_equal(a, x)
    shifted = affine_resample(x, np.zeros(4), np.ones(4), np.tile([[0, 3]], (4, 1)))
    assert np.array_equal(shifted[:, :, 3:], x[:, :, :-3]) and not shifted[:, :, :3].any()


@pytest.mark.parametrize("warp, amount", [("shift", 2), ("rotate", 10.0), ("scale", 0.1), ("elastic", 8.0)])
def test_each_warp_alone_augments(warp, amount):
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    assert not np.array_equal(Augment(**{warp: amount})(x, np.random.default_rng(1)), x)


@pytest.mark.parametrize("shape", [(7, 9), (9, 7)])
def test_a_non_square_image_keeps_its_pixels_unwarped_and_an_empty_batch_stays_empty(shape):
    x = np.random.default_rng(0).random((2, *shape, 1)).astype(np.float32)
    assert np.array_equal(affine_resample(x, np.zeros(2), np.ones(2), np.zeros((2, 2))), x)
    empty = affine_resample(x[:0], np.zeros(0), np.ones(0), np.zeros((0, 2)))  # a thread's share of a tiny batch
    assert empty.shape == (0, *shape, 1) and empty.dtype == x.dtype


def test_augmentation_draws_span_the_ranges_the_config_gives():
    theta, zoom, shifts, _ = Augment(shift=2, rotate=10, scale=0.1).draw(4000, np.random.default_rng(0))
    # rotate is in degrees, either way; scale shrinks as well as enlarges; a shift reaches both ends
    assert np.abs(theta).max() <= np.deg2rad(10) and theta.min() < -np.deg2rad(9.5) and theta.max() > np.deg2rad(9.5)
    assert 0.9 <= zoom.min() < 0.91 and 1.09 < zoom.max() <= 1.1
    assert np.unique(shifts).tolist() == [-2, -1, 0, 1, 2]


def test_elastic_fields_are_smooth_seeded_and_move_pixels_as_a_shift_would():
    fields = elastic_fields(64, (28, 28), 34.0, 4.0, np.random.default_rng(0))
    assert fields.shape == (64, 2, 28, 28) and fields.dtype == np.float32
    assert np.array_equal(fields, elastic_fields(64, (28, 28), 34.0, 4.0, np.random.default_rng(0)))
    size = np.abs(fields[..., 4:-4, 4:-4]).mean()
    assert 0.3 < size < 3  # about a pixel or two, as Simard's alpha 34, sigma 4
    assert np.abs(np.diff(fields, axis=-1)).mean() < size / 3  # neighbours move alike: a smooth field
    x = np.random.default_rng(1).random((2, 28, 28, 1)).astype(np.float32)
    one_right = np.zeros((2, 2, 28, 28), np.float32)
    one_right[:, 1] = 1.0  # every pixel taken from one to its right: the image moves one left
    assert np.array_equal(affine_resample(x, np.zeros(2), np.ones(2), np.zeros((2, 2)), one_right),
                          affine_resample(x, np.zeros(2), np.ones(2), np.tile([[0, -1]], (2, 1))))
    augment = Augment(elastic=8.0, shape=(28, 28))
    assert augment.active and len(augment.draw(2, np.random.default_rng(0))) == 4


def test_repeats_put_each_image_in_a_batch_twice_each_copy_augmented_on_its_own(mnist):
    from mnistcnn.trainer import batch_maker

    augment = Augment(shift=2, rotate=10, repeats=2)
    indices = augment.repeated(np.array([5, 3, 9]))
    assert indices.tolist() == [5, 5, 3, 3, 9, 9]
    assert Augment(shift=2).repeated(np.array([5, 3])).tolist() == [5, 3]
    images = mnist.train_images
    batch = batch_maker(Preprocess("scale"), images[indices], augment.draw(6, np.random.default_rng(0)))(0, 6)
    assert batch.shape == (6, 28, 28, 1)
    assert all(not np.array_equal(batch[i], batch[i + 1]) for i in (0, 2, 4))


def test_loading_is_streamed_into_one_buffer(tmp_path, write_idx):
    path = write_idx(tmp_path / "x-idx3-ubyte.gz", np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256, gz=True)
    array, digest = read_idx(path, 3, want_sha256=True)
    import hashlib
    assert digest == hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    assert array.shape == (2, 3, 4)


@pytest.mark.parametrize("elastic", [False, True])
def test_affine_resample_matches_a_pixel_loop(elastic):
    rng = np.random.default_rng(5)
    batch = rng.random((3, 9, 7, 2)).astype(np.float32) + 0.25  # background (the minimum) is not zero
    theta, zoom, shifts = np.array([0.3, -0.5, 0.0]), np.array([0.9, 1.2, 1.0]), np.array([[1, -2], [0, 3], [-9, 0]])
    fields = rng.uniform(-2, 2, (3, 2, 9, 7)).astype(np.float32) if elastic else np.zeros((3, 2, 9, 7), np.float32)
    got = affine_resample(batch, theta, zoom, shifts, fields if elastic else None)
    n, h, w, c = batch.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    for i in range(n):
        background = batch[i].min()
        for y in range(h):
            for x in range(w):
                dy, dx = y - cy - shifts[i, 0], x - cx - shifts[i, 1]
                cos, sin = np.cos(theta[i]) / zoom[i], np.sin(theta[i]) / zoom[i]
                sy, sx = cos * dy - sin * dx + cy + fields[i, 0, y, x], sin * dy + cos * dx + cx + fields[i, 1, y, x]
                y0, x0 = int(np.floor(sy)), int(np.floor(sx))
                want = np.zeros(c)
                fy, fx = sy - y0, sx - x0  # where the sample falls between the four pixels
                for yy, xx, weight in ((y0, x0, (1 - fy) * (1 - fx)), (y0, x0 + 1, (1 - fy) * fx),
                                       (y0 + 1, x0, fy * (1 - fx)), (y0 + 1, x0 + 1, fy * fx)):
                    inside = 0 <= yy < h and 0 <= xx < w
                    want += weight * (batch[i, yy, xx] if inside else background)
                np.testing.assert_allclose(got[i, y, x], want, atol=2e-5)


def test_the_package_ships_every_bundled_file():
    """pyproject's package data must match the bundled folder, or a wheel (a non-editable
    install) would lack MNIST while an editable install still found it in the source tree."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from pathlib import Path

    from mnistcnn.data import BUNDLED_DIR, MNIST_SHA256
    root = Path(__file__).resolve().parent.parent
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    package = "mnistcnn.datasets.mnist"
    assert package in setuptools["packages"]
    shipped = {path.name for pattern in setuptools["package-data"][package] for path in BUNDLED_DIR.glob(pattern)}
    assert {f"{name}.gz" for name in MNIST_SHA256} <= shipped
    assert shipped == {path.name for path in BUNDLED_DIR.iterdir() if path.is_file()}


def test_each_recorded_result_trains_again_on_the_split_it_recorded(mnist):
    """docs/results keeps each published run's config and summary: its config, trained again, must
    hold out the same validation images (best.yaml's random split is drawn from train.seed)."""
    import json
    from pathlib import Path

    from mnistcnn import config as cfg
    from mnistcnn.data import prepare_data

    results = sorted((Path(__file__).resolve().parent.parent / "docs" / "results").glob("*/summary.json"))
    assert results, "docs/results holds no recorded run"
    for summary_file in results:
        config = cfg.load_config(summary_file.with_name("config.yaml"), of_run=True)
        recorded = json.loads(summary_file.read_text())
        assert prepare_data(config, mnist).split_sha256 == recorded["split_sha256"], summary_file.parent.name


def test_the_augmentation_is_said_in_words_naming_only_what_it_does():
    assert Augment().words() == "none"
    assert Augment(rotate=15, elastic=8.0, elastic_sigma=4.0).words() == \
        "rotations of up to 15°, elastic distortion 8 (smoothed over 4 px)"
    assert Augment(shift=2, scale=0.1, repeats=1).words() == "shifts of up to 2 px, scaling by up to 10%"
    assert Augment(shift=2, repeats=3).words() == "shifts of up to 2 px, each image 3 times a batch"


def test_the_elastic_smoothing_is_a_gaussian_of_the_sigma_given():
    from mnistcnn.augment import gaussian_matrix

    smoothing = gaussian_matrix(29, 4.0)
    middle = smoothing[14]
    assert middle[18] / middle[14] == pytest.approx(np.exp(-0.5), rel=1e-5)  # one sigma away
    assert middle.sum() == pytest.approx(1.0, rel=1e-5)
