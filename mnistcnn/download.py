"""``mnistcnn download``: fetch MNIST from public mirrors into a cache folder, verified.

Each file goes to a temporary file beside its destination and is renamed into place only
after the SHA-256 of its decompressed content matches genuine MNIST's.
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from .data import MNIST_SHA256, not_genuine
from .atomic import OutputOption, abandoned, make_folder, temporary_file
from .errors import DataError, UsageError

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_CHUNK = 1 << 16
TIMEOUT_SECONDS = 30.0  # a connection that says nothing this long is given up for the next mirror


def gz_content_sha256(path: Path) -> str:
    """SHA-256 of a gzip file's decompressed bytes, streamed."""
    h = hashlib.sha256()
    with gzip.open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, dest, timeout: float, progress) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            dest.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
        if total and done != total:
            raise DataError(f"transfer ended after {done} of {total} bytes")


def discard_abandoned_parts(name: str, folder: Path, timeout: float) -> None:
    """Delete the partial files of ``name`` that downloads killed mid-way left in ``folder``
    (``atomic.abandoned``): unwritten for twice ``timeout``, as a live download gives up a mirror
    silent for ``timeout``."""
    for part in folder.glob(f".{name}.*.part"):
        if abandoned(part, 2 * timeout):
            part.unlink(missing_ok=True)


def download_file(name: str, folder: Path, mirrors=MIRRORS, timeout: float = TIMEOUT_SECONDS, progress=None,
                  log=None) -> Path:
    """Download ``name`` (e.g. ``train-images-idx3-ubyte``) as ``folder/name.gz``, trying each
    mirror in turn. Returns the final path; raises DataError when every mirror fails."""
    discard_abandoned_parts(name, folder, timeout)
    final = folder / f"{name}.gz"
    want = MNIST_SHA256[name]
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{name}.gz"
        try:
            with temporary_file(folder, f".{name}.", ".part") as (fd, part_path):
                with contextlib.suppress(OSError):  # a folder without locks: fetched all the same, its leftovers kept
                    fcntl.flock(fd, fcntl.LOCK_EX)  # while fetched: another download does not take it for abandoned
                with os.fdopen(fd, "wb") as handle:
                    _fetch(url, handle, timeout, progress)
                    handle.flush()
                    os.fsync(handle.fileno())
                got = gz_content_sha256(part_path)
                if got != want:
                    raise DataError(not_genuine(got, want))
                os.replace(part_path, final)
            return final
        except (OSError, EOFError, zlib.error, urllib.error.URLError, DataError, ValueError) as err:
            if isinstance(err, urllib.error.HTTPError):
                reason = f"HTTP {err.code} {err.reason}"
            else:
                reason = getattr(err, "reason", None) or err
            failures.append(f"{url}: {reason}")
            if log and mirror != mirrors[-1]:
                log(f"{url} failed ({reason}); trying the next mirror")
    raise DataError(f"could not download {name}.gz from any mirror: " + "; ".join(failures))


def download_mnist(folder=None, mirrors=MIRRORS, timeout: float = TIMEOUT_SECONDS, progress_factory=None, log=None,
                   force: bool = False) -> list[Path]:
    """Fetch the four MNIST files into ``folder`` (default: the cache). Files already there and
    genuine are kept. ``progress_factory(name)`` returns a ``progress(done, total)`` callback."""
    from .data import CACHE_DIR

    schemeless = next((mirror for mirror in mirrors if "://" not in mirror), None)
    if schemeless is not None:  # urllib's words for it: "unknown url type", after a look at the folder
        raise UsageError(f"--mirror {schemeless}: not a URL; give it with its scheme, e.g. --mirror "
                         f"https://{schemeless} (or file:///FOLDER for a local copy)")
    option = OutputOption("--to", "DIR", given=folder is not None)
    folder = Path(folder) if folder is not None else CACHE_DIR
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # innermost first
    paths = []
    for name in MNIST_SHA256:
        existing = folder / f"{name}.gz"
        if existing.is_file() and not force:
            with contextlib.suppress(OSError, EOFError, zlib.error, ValueError):
                if gz_content_sha256(existing) == MNIST_SHA256[name]:
                    paths.append(existing)
                    if log:
                        log(f"{existing}: already there and genuine")
                    continue
        make_folder(folder, option)  # only where a file is to be fetched: genuine files in a read-only folder will do
        progress = progress_factory(name) if progress_factory else None
        try:
            paths.append(download_file(name, folder, mirrors, timeout, progress, log))
        except DataError as err:
            with contextlib.suppress(OSError):  # nothing came: leave no empty folder behind
                for path in made:
                    path.rmdir()
            raise DataError(f"{err}; MNIST ships inside mnistcnn, so every command works without a download") from None
    return paths
