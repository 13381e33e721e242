"""Small synthetic IDX files for tests."""
import gzip
import struct

import numpy as np


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path, array, gz=False, type_code=0x08):
    data = idx_bytes(np.asarray(array), type_code)
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_folder(folder, n_train=200, n_test=50, size=28, gz=True, seed=0, naming="dash"):
    """A tiny MNIST-layout folder: random images whose label is a bright square's position."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
        ext = ".gz" if gz else ""
        sep = "-" if naming == "dash" else "."
        write_idx(folder / f"{stem}-images{sep}idx3-ubyte{ext}", images, gz)
        write_idx(folder / f"{stem}-labels{sep}idx1-ubyte{ext}", labels, gz)
    return folder
