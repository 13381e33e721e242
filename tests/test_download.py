"""`mnistcnn download` against mirrors served on 127.0.0.1 by the test itself."""
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mnistcnn.data import BUNDLED_DIR, MNIST_SHA256, load_dataset
from mnistcnn.download import download_file, download_mnist
from mnistcnn.errors import DataError

LABELS = "t10k-labels-idx1-ubyte"
# the paused mirror sends the rest of its file once the test sets this, however long the pause: a pause of a fixed
# time ended before a test held up on a loaded machine had looked at the part file while it stood still
RESUME_PAUSED = threading.Event()


class Mirror(BaseHTTPRequestHandler):
    # path prefix -> behaviour: good | corrupt | truncated | missing | foreign (another MNIST file) | stalled
    # (half the file, then nothing for a while) | paused (half the file, nothing until RESUME_PAUSED, then the rest)
    def do_GET(self):
        kind, name = self.path.strip("/").split("/", 1)
        source = BUNDLED_DIR / ("train-labels-idx1-ubyte.gz" if kind == "foreign" else name)
        if kind == "missing" or not source.is_file():
            self.send_error(404)
            return
        body = source.read_bytes()
        if kind == "corrupt":
            body = body[:100] + bytes(b ^ 0xFF for b in body[100:200]) + body[200:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "stalled":
            with contextlib.suppress(OSError):  # the client may be gone before the half is sent
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
            time.sleep(10)
            return
        if kind == "paused":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            RESUME_PAUSED.wait()
            body = body[len(body) // 2:]
        self.wfile.write(body[: len(body) // 2] if kind == "truncated" else body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_genuine_file_is_downloaded_whole_and_alone(server, tmp_path):
    path = download_file(LABELS, tmp_path, mirrors=(f"{server}/good/",))
    assert path == tmp_path / f"{LABELS}.gz" and path.read_bytes() == (BUNDLED_DIR / f"{LABELS}.gz").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == [f"{LABELS}.gz"]


# the corrupt body fails inside gzip (zlib's Z_DATA_ERROR, -3) before its SHA-256 can be taken
@pytest.mark.parametrize("kind,reason", [("corrupt", r"Error -3 while decompressing data: .+"),
                                         ("truncated", r"transfer ended after \d+ of \d+ bytes"),
                                         ("foreign", r"SHA-256 of the decompressed data is [0-9a-f]{64}, genuine "
                                                     r"MNIST's is [0-9a-f]{64}")])
def test_bad_transfer_is_rejected_and_leaves_nothing(server, tmp_path, kind, reason):
    url = re.escape(f"{server}/{kind}/{LABELS}.gz")
    with pytest.raises(DataError) as err:
        download_file(LABELS, tmp_path, mirrors=(f"{server}/{kind}/",), timeout=5)
    expected = rf"could not download {LABELS}\.gz from any mirror: {url}: {reason}"
    assert re.fullmatch(expected, str(err.value)), str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_downloaded_file_has_the_mode_the_umask_gives(server, tmp_path):
    import os
    import stat

    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):  # readable by others, as any file they write: not 0600
        old = os.umask(umask)
        try:
            path = download_file(LABELS, tmp_path, mirrors=(f"{server}/good/",))
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == mode, oct(umask)


def test_a_part_file_a_killed_download_left_is_removed_by_the_next(server, tmp_path):
    import os

    abandoned, live = tmp_path / f".{LABELS}.k1ll3d.part", tmp_path / f".{LABELS}.w0rk1n.part"
    for part in (abandoned, live):
        part.write_bytes(b"half a file")
    os.utime(abandoned, (time.time() - 3600, time.time() - 3600))  # untouched for an hour: its download is dead
    download_file(LABELS, tmp_path, mirrors=(f"{server}/good/",), timeout=30)
    assert sorted(path.name for path in tmp_path.iterdir()) == [live.name, f"{LABELS}.gz"]  # another's, in flight


def test_a_part_file_of_a_download_still_running_is_kept_however_long_its_mirror_pauses(server, tmp_path, wait_for):
    outcome = {}

    def patient():  # a download with a longer --timeout than the next one's, on a mirror that pauses
        try:
            outcome["path"] = download_file(LABELS, tmp_path, mirrors=(f"{server}/paused/",), timeout=30)
        except DataError as err:
            outcome["error"] = err

    RESUME_PAUSED.clear()
    first = threading.Thread(target=patient)
    first.start()
    try:
        part = wait_for(lambda: next(tmp_path.glob(".*.part"), None), what="the first download's part file")
        wait_for(lambda: time.time() - part.stat().st_mtime > 2.5, what="the part file to be untouched for 2.5 s")
        download_file(LABELS, tmp_path, mirrors=(f"{server}/good/",), timeout=1)  # abandoned after 2 s, by its rule
    finally:
        RESUME_PAUSED.set()
    first.join(timeout=60)
    assert "path" in outcome, outcome  # its part file was not taken from under it


def test_404_falls_through_to_the_next_mirror(server, tmp_path):
    logs = []
    path = download_file(LABELS, tmp_path, mirrors=(f"{server}/missing/", f"{server}/corrupt/", f"{server}/good/"),
                         log=logs.append)
    assert path.is_file() and len(logs) == 2 and "404" in logs[0]


def test_download_all_then_load_verified_from_there(server, tmp_path, monkeypatch, read_only):
    paths = download_mnist(tmp_path, mirrors=(f"{server}/good/",))
    assert sorted(p.name for p in paths) == sorted(f"{n}.gz" for n in MNIST_SHA256)
    data = load_dataset(tmp_path, verify=True)
    assert len(data.train_labels) == 60000
    # a second call keeps the genuine files without fetching them again, in a folder it may not write in too
    read_only(tmp_path)
    assert download_mnist(tmp_path, mirrors=("http://127.0.0.1:9/",)) == paths


def test_cli_download_failure_is_one_line(server, tmp_path, cli):
    result = cli("download", "--to", tmp_path / "new" / "mnist", "--mirror", f"{server}/missing/")
    assert result.exit_code == 2
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    missing = re.escape(f"{server}/missing/")
    assert re.fullmatch(rf"error: could not download ([\w-]+)\.gz from any mirror: {missing}\1\.gz: HTTP 404 .+; "
                        r"MNIST ships inside mnistcnn, so every command works without a download\n",
                        result.output), result.output
    assert list(tmp_path.iterdir()) == []  # the folders it made for the download are gone again


def test_a_failed_download_in_a_terminal_takes_its_stopped_bar_off_the_screen(server, tmp_path, cli, monkeypatch):
    """The error names the file; a bar left above it at its last percent reads as a download still
    under way: the last frame of the bars (each begins by erasing the one before) holds none."""
    from mnistcnn.cli import console

    monkeypatch.setattr(console, "_force_terminal", True)
    result = cli("download", "--to", tmp_path / "mnist", "--mirror", f"{server}/stalled/", "--timeout", "1")
    assert result.exit_code == 2
    screen, error = result.output.split("error: ", 1)
    assert "could not download" in error
    last_frame = screen.rsplit("\x1b[2K", 1)[-1]
    assert "━" not in last_frame and "%" not in last_frame, repr(last_frame)


def test_a_file_as_the_folder_and_a_timeout_of_nothing_are_refused(tmp_path, cli):
    (tmp_path / "a-file").write_text("kept")
    result = cli("download", "--to", tmp_path / "a-file")
    assert result.exit_code == 2
    assert result.output == f"error: --to {tmp_path / 'a-file'}: is a file; give a folder (it is created if missing)\n"
    assert cli("download", "--timeout", "-1").exit_code == 2 and (tmp_path / "a-file").read_text() == "kept"
    schemeless = cli("download", "--to", tmp_path / "new", "--mirror", "example.org/mnist")  # urllib: unknown url type
    assert schemeless.exit_code == 2 and schemeless.output == (
        "error: --mirror example.org/mnist: not a URL; give it with its scheme, e.g. --mirror "
        "https://example.org/mnist (or file:///FOLDER for a local copy)\n") and not (tmp_path / "new").exists()


def test_sigterm_mid_download_leaves_no_partial_file(server, tmp_path, mnistcnn_command, wait_for):
    folder = tmp_path / "mnist"
    process = subprocess.Popen([*mnistcnn_command, "download", "--to", str(folder), "--mirror", f"{server}/stalled/"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: folder.is_dir() and any(folder.glob(".*.part")), what="the first file's transfer")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err == "error: interrupted\n", err
    assert list(folder.iterdir()) == []  # as after Ctrl-C: the half-fetched file is removed


@pytest.mark.parametrize("signum,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_as_the_part_file_is_made_leaves_no_file(server, tmp_path, cli, signal_as_made, signals_raise,
                                                          signum, code):
    # the part file was made by mkstemp, which names it only once it exists: a SIGTERM that came in between
    # (the command descheduled there, on a loaded machine) left it, and test_sigterm_mid_download failed
    folder = tmp_path / "mnist"
    folder.mkdir()
    signal_as_made(".part", getattr(signal, signum))
    result = cli("download", "--to", folder, "--mirror", f"{server}/good/")
    assert result.exit_code == code and result.stderr == "error: interrupted\n", result.output
    assert list(folder.iterdir()) == []


def test_download_help_names_the_folder_it_downloads_to(tmp_path, mnistcnn_command):
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    shown = subprocess.run([*mnistcnn_command, "download", "--help"], capture_output=True, text=True, env=environment)
    unwrapped = "".join(shown.stdout.split())  # the long path may fold at any of its hyphens
    assert f"Destination(default{tmp_path / 'cache' / 'mnistcnn'})." in unwrapped, shown.stdout
