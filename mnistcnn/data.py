"""Data: IDX files read and checked, the bundled MNIST verified, the arrays a config trains on, splits and batches.

Images stay uint8 (N, H, W, C) in memory and become float32 one batch at a time.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config as cfg
from .errors import DataError, UsageError

BUNDLED_DIR = Path(__file__).parent / "datasets" / "mnist"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnistcnn"
SPLITS = ("test", "validation", "train")  # the splits a model is scored on
ENV_DATA_DIR = "MNISTCNN_DATA_DIR"

ROLES = {
    "train_images": ("train-images", "idx3"),
    "train_labels": ("train-labels", "idx1"),
    "test_images": ("t10k-images", "idx3"),
    "test_labels": ("t10k-labels", "idx1"),
}

# SHA-256 of the decompressed canonical files: they identify genuine MNIST whatever the compression.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
GENUINE_HINT = ("get the genuine file with `mnistcnn download`, or reinstall mnistcnn, "
                "which ships MNIST")

IDX_TYPES = {0x08: np.uint8}  # the only element type MNIST-layout data uses
_CHUNK = 1 << 20


# -- IDX ----------------------------------------------------------------------------
def unreadable(path, err: Exception) -> DataError:
    """A file whose gzip stream or bytes cannot be read."""
    return DataError(f"{path}: unreadable ({err.__class__.__name__}: {err}); the file is corrupt or truncated")


def not_genuine(got: str, want: str) -> str:
    return f"SHA-256 of the decompressed data is {got}, genuine MNIST's is {want}"


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_exact(stream, buffer: memoryview, hasher) -> int:
    """Fill ``buffer`` from ``stream``; returns how many bytes arrived (fewer means truncated)."""
    filled = 0
    while filled < len(buffer):
        n = stream.readinto(buffer[filled:filled + _CHUNK])
        if not n:
            break
        if hasher is not None:
            hasher.update(buffer[filled:filled + n])
        filled += n
    return filled


def read_idx(path, expected_ndim: int | None = None, want_sha256: bool = False):
    """Read an IDX file (raw or gzip) into an array, checking everything a corrupt or foreign
    file can get wrong. Returns the array, or ``(array, sha256 of the decompressed bytes)``.

    The checksum is computed while reading, so the file is never held twice in memory.
    """
    path = Path(path)
    hasher = hashlib.sha256() if want_sha256 else None
    try:
        with _open(path) as stream:
            dims = _read_idx_header(stream, path, expected_ndim, hasher)
            size = math.prod(dims)
            _check_length(path, dims)  # before allocating
            data = np.empty(size, dtype=np.uint8)
            got = _read_exact(stream, memoryview(data), hasher)
            if got < size:
                raise DataError(f"{path}: truncated: header says {dims} ({size} bytes of data) but only {got} "
                                "arrived")
            if stream.read(1):
                raise DataError(f"{path}: padded: more data than the header's {dims} ({size} bytes)")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except (OSError, EOFError, zlib.error) as err:  # a corrupt or truncated gzip stream
        raise unreadable(path, err) from None
    array = data.reshape(dims)
    return (array, hasher.hexdigest()) if want_sha256 else array


def _read_idx_header(stream, path: Path, expected_ndim: int | None, hasher) -> tuple:
    """The dimensions from an IDX header (magic, element type, axis lengths), checked."""
    header = stream.read(4)
    if len(header) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(header)} bytes of header)")
    zero, dtype_code, ndim = header[:2], header[2], header[3]
    if zero != b"\x00\x00":
        raise DataError(f"{path}: not an IDX file (magic number {header.hex()} does not start with 0000)")
    if dtype_code not in IDX_TYPES:
        raise DataError(f"{path}: element type 0x{dtype_code:02x} is not supported; MNIST-layout files "
                        "hold unsigned bytes (0x08)")
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"{path}: has {ndim} dimensions, expected {expected_ndim} "
                        f"({'images N x H x W' if expected_ndim == 3 else 'labels N'})")
    if ndim < 1 or ndim > 4:
        raise DataError(f"{path}: {ndim} dimensions is not an image or label file")
    dims_raw = stream.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path}: truncated inside its header")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    if hasher is not None:
        hasher.update(header + dims_raw)
    # an axis of length 0 makes the size 0, but the other axes must still fit an array
    if math.prod(max(n, 1) for n in dims) > 2**33:
        raise DataError(f"{path}: header claims {dims}, which is far too large for an image set")
    return dims


def check_data_folder(folder, from_variable: bool = False) -> Path:
    """``folder`` as a Path, refused when it is no folder of the four MNIST-layout files;
    ``from_variable``: MNISTCNN_DATA_DIR named it, not data.dir or --data-dir, so the message names
    the variable."""
    find_idx_files(folder, from_variable)
    return Path(folder)


def find_idx_files(folder, from_variable: bool = False) -> dict[str, Path]:
    """The four MNIST-layout files in ``folder``, in either naming, raw or gzip (``from_variable``:
    as check_data_folder's)."""
    folder = Path(folder)

    def fix(folder_words: str) -> str:
        return (f"the {ENV_DATA_DIR} variable names it: point the variable at {folder_words}, or unset it"
                if from_variable else f"point data.dir (or --data-dir) at {folder_words}")

    if folder.is_file():  # one of the files given for their folder
        raise DataError(f"{folder}: is a file, not a data folder; {fix(f'the folder that holds it, {folder.parent}')}")
    if not folder.is_dir():
        holding = "a folder holding train-images-idx3-ubyte[.gz] and the other three MNIST-layout files"
        raise DataError(f"{folder}: data folder not found; {fix(holding)}")
    found = {}
    for role, (stem, kind) in ROLES.items():
        names = [f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"]
        candidates = [folder / (n + ext) for n in names for ext in ("", ".gz")]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            raise DataError(f"{folder}: no {stem}-{kind}-ubyte[.gz] (or {stem}.{kind}-ubyte) in this folder; "
                            f"{fix('a folder holding train-images, train-labels, t10k-images and t10k-labels')}")
        found[role] = existing[0]
    return found


def _check_length(path: Path, dims) -> None:
    """Refuse a raw IDX file whose size disagrees with its header (a gzip file's is known only
    once it is read)."""
    if path.suffix == ".gz":
        return
    size, actual = math.prod(dims), path.stat().st_size - 4 - 4 * len(dims)
    if actual != size:
        what = "truncated" if actual < size else "padded"
        raise DataError(f"{path}: {what}: header says {dims} ({size} bytes of data) but the file has {actual}")


def training_images_shape(folder) -> tuple[int, tuple]:
    """How many training images a folder holds and their (H, W, C), from the IDX header alone,
    and the raw file's length checked against it."""
    path = find_idx_files(folder)["train_images"]
    try:
        with _open(path) as stream:
            dims = _read_idx_header(stream, path, 3, None)
    except (OSError, EOFError, zlib.error) as err:
        raise unreadable(path, err) from None
    _check_length(path, dims)
    count, *shape = dims
    return count, (*shape, 1)


def check_labels(labels: np.ndarray, num_classes: int, path: Path) -> None:
    if labels.size and labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(f"{path}: label {labels[bad]} at index {bad} is outside 0-{num_classes - 1}; data.classes "
                        f"must name one class for each label ({num_classes} now; leave it out for the ten digits)")


def canonical_name(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.replace(".idx", "-idx")


# -- the dataset ----------------------------------------------------------------------
@dataclass
class Dataset:
    """Images (N, H, W, C) uint8 and labels (N,) int64 of the official train and test sets."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    verified: bool
    sha256: dict = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])


def default_data_dir() -> Path:
    """Where data comes from when nothing is named: $MNISTCNN_DATA_DIR, the bundled copy, the cache."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return check_data_folder(env, from_variable=True)
    if all((BUNDLED_DIR / f"{name}.gz").is_file() for name in MNIST_SHA256):
        return BUNDLED_DIR
    if CACHE_DIR.is_dir():
        return CACHE_DIR
    raise DataError(f"MNIST is not bundled in {BUNDLED_DIR} and not cached in {CACHE_DIR}; run "
                    "`mnistcnn download`, or point --data-dir at a folder of MNIST IDX files")


def is_mnist_source(folder: Path) -> bool:
    """The bundled copy and the download cache must be genuine MNIST; other folders are the user's."""
    folder = Path(folder).resolve()
    return folder in (BUNDLED_DIR.resolve(), CACHE_DIR.resolve())


def recorded_source(source: str) -> str:
    """A data folder as a run's summary records it: the bundled copy and the cache by name, so
    that a recorded result holds no path of the machine it ran on."""
    folder = Path(source).resolve()
    return {BUNDLED_DIR.resolve(): "bundled MNIST", CACHE_DIR.resolve(): "the download cache"}.get(folder, source)


def load_dataset(folder=None, verify: bool | None = None, num_classes: int = 10) -> Dataset:
    """Load the four files of an MNIST-layout folder, checking shapes and label ranges.

    ``verify`` (default: for the bundled copy and the cache) compares each file's decompressed
    SHA-256 with genuine MNIST's.
    """
    folder = Path(folder) if folder is not None else default_data_dir()
    verify = is_mnist_source(folder) if verify is None else verify
    files = find_idx_files(folder)
    arrays, sums = {}, {}
    for role, path in files.items():
        arrays[role], sums[canonical_name(path)] = read_idx(path, 3 if "images" in role else 1, want_sha256=True)
        if verify:
            want = MNIST_SHA256.get(canonical_name(path))
            if want != sums[canonical_name(path)]:
                raise DataError(f"{path}: {not_genuine(sums[canonical_name(path)], want)}; {GENUINE_HINT}")
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(f"{files[f'{split}_images']}: {len(images)} images but {files[f'{split}_labels']} has "
                            f"{len(labels)} labels; the two files must have the same count")
        if len(labels) == 0:
            raise DataError(f"{files[f'{split}_labels']}: holds no examples")
        check_labels(labels, num_classes, files[f"{split}_labels"])
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"{folder}: train images are {arrays['train_images'].shape[1:]} but test images are "
                        f"{arrays['test_images'].shape[1:]}")

    def nhwc(images):
        return images[..., None] if images.ndim == 3 else images

    return Dataset(nhwc(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
                   nhwc(arrays["test_images"]), arrays["test_labels"].astype(np.int64),
                   source=str(folder), verified=verify, sha256=sums)


# -- splits ---------------------------------------------------------------------------
@dataclass
class Split:
    train: np.ndarray  # indices into the official training set
    validation: np.ndarray

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.train, self.validation):
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()


def split_indices(labels: np.ndarray, validation: int, mode: str = "head", seed: int = 0,
                  train_limit: int | None = None) -> Split:
    """Train/validation indices of the official training set.

    ``head`` takes the first ``validation`` images for validation (TensorFlow's loader);
    ``random`` draws a stratified sample with a seeded generator, so every class keeps its
    share. ``train_limit`` keeps only that many training images (quick runs).
    """
    n = len(labels)
    if mode == "head":
        val, train = np.arange(validation), np.arange(validation, n)
    else:
        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        by_class = order[np.argsort(labels[order], kind="stable")]  # shuffled within each class
        counts = np.bincount(labels, minlength=int(labels.max()) + 1)
        # each class's share, rounded down, then the remainder to the largest fractions
        exact_quota = counts * validation / n
        quota = np.floor(exact_quota).astype(int)
        quota[np.argsort(quota - exact_quota, kind="stable")[:validation - quota.sum()]] += 1
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(n) - np.repeat(starts, counts)
        chosen = rank < np.repeat(quota, counts)
        val, train = np.sort(by_class[chosen]), np.sort(by_class[~chosen])
    if train_limit is not None:
        train = train[:train_limit]
    return Split(train=train, validation=val)


# -- preprocessing ----------------------------------------------------------------------
# images whose float64 copy standardize's statistics are summed over at once: memory stays flat;
# another size adds in another order and moves a standardized run's numbers by rounding
FIT_CHUNK = 10000
PIXEL_SCALE = np.float32(1 / 255)  # a uint8 pixel times this is scale's 0-1 value, where standardize starts too


class Preprocess:
    """uint8 images -> float32: ``binarize`` (x > threshold -> 1), ``scale`` (x / 255) or
    ``standardize`` ((x/255 - mean) / std with the training split's statistics)."""

    def __init__(self, type="scale", threshold=0, mean=None, std=None):
        self.type, self.threshold = type, threshold
        self.mean, self.std = mean, std

    @classmethod
    def for_config(cls, config: dict, data: "Data") -> "Preprocess":
        """A config's ``data.preprocess``, fitted to ``data``'s training split."""
        return cls(**config["data"]["preprocess"]).fit(data.train_x)

    def fit(self, images: np.ndarray) -> "Preprocess":
        if self.type == "standardize" and self.mean is None:
            # float64 sums over the uint8 array, in chunks to keep memory flat
            total, total_sq, count = 0.0, 0.0, 0
            for start in range(0, len(images), FIT_CHUNK):
                chunk = images[start:start + FIT_CHUNK].astype(np.float64) / 255.0
                total += chunk.sum()
                total_sq += (chunk * chunk).sum()
                count += chunk.size
            self.mean = total / count
            # images of one colour: rounding can leave the variance a hair below 0, whose root is NaN
            self.std = max(float(np.sqrt(max(total_sq / count - self.mean ** 2, 0.0))), 1e-6)
        return self

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.type == "binarize":
            return (batch > self.threshold).astype(np.float32)
        x = batch.astype(np.float32) * PIXEL_SCALE
        if self.type == "standardize":
            shift, factor = self.standardizing()
            x -= shift
            x *= factor
        return x

    def standardizing(self) -> tuple[np.float32, np.float32]:
        """standardize's float32 ``(shift, factor)``: a scaled pixel x becomes (x - shift) * factor."""
        return np.float32(self.mean), np.float32(1 / self.std)

    def describe(self) -> str:
        """In words, as a formula of a uint8 pixel x."""
        if self.type == "binarize":
            return f"binarize (x > {self.threshold} -> 1, else 0)"
        if self.type == "standardize":
            return f"standardize ((x / 255 - {self.mean:.6g}) / {self.std:.6g})"
        return "scale (x / 255)"

    def to_config(self) -> dict:
        config = {"type": self.type, "threshold": self.threshold}
        if self.type == "standardize":
            config.update(mean=float(self.mean), std=float(self.std))
        return config


# -- batches --------------------------------------------------------------------------
class BatchIterator:
    """Seeded shuffled batches over ``n`` examples with a resumable position.

    Epoch ``e`` is shuffled by a generator seeded with ``(seed, e)``, so the position
    ``(epoch, batch)`` alone restores the exact sequence an uninterrupted run would see.
    """

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool = False):
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.epoch, self.batch = 0, 0

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def epoch_batches(self):
        """Yield index arrays for the rest of the current epoch, advancing the position."""
        order = self.order(self.epoch)
        while self.batch < len(self):
            start = self.batch * self.batch_size
            self.batch += 1
            yield order[start:start + self.batch_size]
        self.epoch, self.batch = self.epoch + 1, 0

    def state(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


@dataclass
class Data:
    """The arrays a run trains and evaluates on, from a Dataset and a split."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    split_sha256: str
    files_sha256: dict
    source: str
    verified: bool

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` of one of SPLITS by its name."""
        if name not in SPLITS:
            raise UsageError(f"--split {name!r}: choose one of {', '.join(SPLITS)}")
        return {"test": (self.test_x, self.test_y), "validation": (self.val_x, self.val_y),
                "train": (self.train_x, self.train_y)}[name]

    def split_sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)[1]) for name in SPLITS}


def check_data_fits(config: dict, count: int, image_shape: tuple, data_source, source: str) -> int:
    """Refuse data that the config cannot train on: ``count`` training images of ``image_shape``
    from ``data_source``, for the config read from ``source``; returns how many it trains on."""
    want = tuple(config["model"]["input_shape"])
    if image_shape != want:
        raise DataError(f"{data_source}: images are {image_shape} (H, W, C) but the model takes {want}; "
                        f"set model.input_shape in {source} to {list(image_shape)} or use matching data")
    validation = config["data"]["validation"]
    if validation >= count:
        raise DataError(f"data.validation is {validation}, but {data_source} has {count} training images; set "
                        f"data.validation (in {source} or with --set data.validation=N) below {count}")
    training = min(count - validation, config["data"]["train_limit"] or count)
    batch_size = config["train"]["batch_size"]
    if config["train"]["drop_last"] and training < batch_size:
        raise DataError(f"the training split has {training} images, fewer than one batch of {batch_size} with "
                        f"train.drop_last; lower train.batch_size (--batch-size) in {source}, or set drop_last false")
    _check_batchnorm_batches(config, training, source)
    return training


def _check_batchnorm_batches(config: dict, training: int, source: str) -> None:
    """Refuse a training step of one image where a batchnorm sees one value per channel: its
    variance is 0 and it zeros its output (PyTorch refuses it too). A worker's share of a batch
    is never that small (parallel.StepRunner.parts), so the smallest batch is what counts."""
    batch_size, drop_last = config["train"]["batch_size"], config["train"]["drop_last"]
    smallest = batch_size if drop_last or training % batch_size == 0 else training % batch_size
    if smallest * config["data"]["augment"]["repeats"] != 1:
        return
    index = cfg.build_model(config).batchnorm_of_one_value()
    if index is not None:
        fix = ("set train.drop_last: true or change train.batch_size (--batch-size)" if batch_size > 1
               else "raise train.batch_size (--batch-size) above 1")
        raise DataError(f"model.layers[{index}]: a batchnorm over one value per channel would train on a batch of "
                        f"1 image ({training} training images in batches of {batch_size}), whose variance is 0, and "
                        f"zero its output; {fix} in {source}")


def check_data(config: dict, source: str = "<config>") -> dict:
    """What ``--dry-run`` checks of the data, from the image files' headers and the (small) label
    files: that the folder ``data.dir`` names (none: the bundled MNIST) holds the four
    MNIST-layout files, and that they fit the config. Returns the training images, validation
    images and steps an epoch the run would have."""
    folder = config["data"]["dir"] or default_data_dir()
    training = check_data_fits(config, *training_images_shape(folder), recorded_source(folder), source)
    files = find_idx_files(folder)
    for role in ("train_labels", "test_labels"):
        check_labels(read_idx(files[role], 1), cfg.num_classes(config), files[role])
    steps = len(BatchIterator(training, config["train"]["batch_size"], config["train"]["seed"],
                              drop_last=config["train"]["drop_last"]))
    return {"training": training, "validation": config["data"]["validation"], "steps_per_epoch": steps}


def prepare_data(config: dict, dataset: Dataset | None = None, source: str = "<config>") -> Data:
    """Load (or take) the dataset, check it fits the model, and split it."""
    if dataset is None:
        dataset = load_dataset(config["data"]["dir"], num_classes=cfg.num_classes(config))
    check_data_fits(config, len(dataset.train_labels), dataset.image_shape, recorded_source(dataset.source), source)
    data_config = config["data"]
    split = split_indices(dataset.train_labels, data_config["validation"], data_config["split"],
                          config["train"]["seed"], data_config["train_limit"])
    return Data(dataset.train_images[split.train], dataset.train_labels[split.train],
                dataset.train_images[split.validation], dataset.train_labels[split.validation],
                dataset.test_images, dataset.test_labels, split.digest(), dataset.sha256, dataset.source,
                dataset.verified)
