import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner


from mnistcnn.export import FLOAT32_RTOL

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHIPPED_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def pytest_generate_tests(metafunc):
    """A test that takes ``shipped_config`` runs once for each file in configs/."""
    if "shipped_config" in metafunc.fixturenames:
        metafunc.parametrize("shipped_config", SHIPPED_CONFIGS, ids=[path.stem for path in SHIPPED_CONFIGS])


@pytest.fixture(scope="session")
def configs():
    """The folder of shipped configs (configs/ of the repository)."""
    return CONFIGS


@pytest.fixture(scope="session")
def mnist():
    """The bundled MNIST, loaded once."""
    from mnistcnn.data import load_dataset

    return load_dataset()


def assert_float32_close(actual, expected, rtol=FLOAT32_RTOL, what=""):
    """Equal within float32 rounding of the same sums taken in another order: every entry
    within ``rtol`` of the largest magnitude in ``expected``."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(np.float32).tiny)
    worst = float(np.max(np.abs(actual - expected), initial=0.0))
    assert worst <= rtol * scale, f"{what}: largest difference {worst:.3g} > {rtol:g} x {scale:.3g}"


@pytest.fixture(scope="session")
def float32_close():
    return assert_float32_close


@pytest.fixture(scope="session")
def decided_ranks():
    """``decided_ranks(scores, tolerance)``: the ranks (0 the top) whose class no rounding within
    ``tolerance`` can change, those further than it from both neighbours; another path (the fast
    plan, onnxruntime, another BLAS) must rank alike there, and only there."""

    def ranks(scores, tolerance):
        ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
        apart = -np.diff(ordered) > tolerance  # apart[i]: ranks i and i + 1
        return [rank for rank in range(len(ordered))
                if (rank == 0 or apart[rank - 1]) and (rank == len(ordered) - 1 or apart[rank])]

    return ranks


@pytest.fixture(scope="session")
def close_calls():
    """``close_calls(logits, rtol=FLOAT32_RTOL)``: how many rows' two largest logits lie within
    twice the rounding of another path (``rtol`` of the largest magnitude, on each side): two
    paths' counts of right answers may differ by that many, no more."""

    def count(logits, rtol=FLOAT32_RTOL):
        logits = np.asarray(logits, np.float64)
        top2 = np.sort(logits, axis=1)[:, -2:]
        return int((top2[:, 1] - top2[:, 0] <= 2 * rtol * np.abs(logits).max()).sum())

    return count


# -- gradients and arrays for the engine's tests ---------------------------------------------
@pytest.fixture(scope="session")
def fft_conv_backward():
    """``fft_conv_backward(dZ, cache, compute_dA=True)``: ``(dA_prev, dW, db)`` for a cache of
    ``fftconv.conv_forward``, as the plan's steps take them."""
    from mnistcnn.engine.fast import fftconv

    def backward(dZ, cache, compute_dA=True):
        dY = fftconv.output_spectrum_gradient(dZ, cache)
        return (fftconv.input_gradient(dY, cache) if compute_dA else None), *fftconv.weight_gradients(dZ, dY, cache)

    return backward


@pytest.fixture(scope="session")
def numerical_gradient():
    """``numerical_gradient(f, x)``: d f() / d x by centred differences in float64, one entry at
    a time (``x`` is changed and restored)."""

    def gradient(f, x, eps=1e-6):
        grad = np.zeros_like(x, dtype=np.float64)
        it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
        for _ in it:
            idx = it.multi_index
            old = x[idx]
            x[idx] = old + eps
            up = f()
            x[idx] = old - eps
            down = f()
            x[idx] = old
            grad[idx] = (up - down) / (2 * eps)
        return grad

    return gradient


@pytest.fixture(scope="session")
def relative_error():
    """The largest difference over the sum of the two arrays' largest magnitudes."""

    def error(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)) + np.max(np.abs(b)), 1e-12))

    return error


@pytest.fixture(scope="session")
def images():
    """``images(rng, shape, binary)``: binarised pixels, full of exactly tied windows (where a
    pool's tie rule matters), or normal values."""
    return lambda rng, shape, binary: ((rng.random(shape) > 0.5).astype(np.float64) if binary
                                       else rng.normal(size=shape))


@pytest.fixture(scope="session")
def conv_arrays():
    """``conv_arrays(rng, (m, h, w, c_prev), f, c)``: normal ``A``, ``W`` and ``b`` for a conv."""
    return lambda rng, shape, f, c: (rng.normal(size=shape), rng.normal(size=(f, f, shape[3], c)),
                                     rng.normal(size=(1, 1, 1, c)))


# A net with every kind of step a plan makes: a fused first conv, a fused frequency-domain conv
# that gives an input gradient, an im2col conv apart, batchnorm, dropout and a dense head.
MIXED_NET = [
    {"type": "conv2d", "filters": 4, "kernel": 5, "padding": 2},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    # no bias before a batchnorm: its gradient is 0, and rounding noise alone
    {"type": "conv2d", "filters": 6, "kernel": 5, "padding": 2, "algorithm": "fft-gemm", "bias": False},
    {"type": "batchnorm"},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1, "algorithm": "im2col"},
    {"type": "flatten"},
    {"type": "dense", "units": 12},
    {"type": "relu"},
    {"type": "dropout", "rate": 0.3},
    {"type": "dense", "units": 5},
]


@pytest.fixture(scope="session")
def mixed_net():
    """``mixed_net(seed)``: the MIXED_NET model on 12x12 images, and a binarised batch of 16."""
    from mnistcnn.engine.model import Sequential

    def make(seed=1):
        rng = np.random.default_rng(0)
        x = (rng.random((16, 12, 12, 1)) > 0.5).astype(np.float32)
        return Sequential.from_config(MIXED_NET, (12, 12, 1), np.random.default_rng(seed)), x, rng.integers(0, 5, 16)

    return make


@pytest.fixture(scope="session")
def train_steps(mixed_net):
    """``train_steps(runner_type=StepRunner, workers=2, steps=3, **options)``: a few Adam steps of
    the mixed net (dropout, batchnorm) -> (each step's (loss, correct), the final state_dict)."""
    from mnistcnn.engine.fast.parallel import StepRunner
    from mnistcnn.engine.fast.plan import Plan
    from mnistcnn.engine.optim import make_optimizer

    def train(runner_type=StepRunner, workers=2, steps=3, **options):
        model, x, y = mixed_net()
        optimizer, rng, losses = make_optimizer({"type": "adam", "lr": 1e-2}), np.random.default_rng(3), []
        with runner_type(Plan(model), workers=workers, min_per_worker=4, **options) as runner:
            for _ in range(steps):
                loss, correct, grads = runner.gradients(x, y, rng)
                runner.update(optimizer, model.params(), grads)
                losses.append((loss, correct))
        return losses, model.state_dict()

    return train


# -- the command line -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def cli():
    """``cli("train", path, ...)``: the mnistcnn command in this process (arguments made strings),
    named as a shell names it, so that messages quote it as people see them."""
    from mnistcnn.cli import main

    return lambda *args: CliRunner().invoke(main, [str(arg) for arg in args], prog_name="mnistcnn")


@pytest.fixture(scope="session")
def mnistcnn_command():
    """The installed command, for tests that need a real process (signals, two runs at once)."""
    exe = shutil.which("mnistcnn")
    return [exe] if exe else [sys.executable, "-m", "mnistcnn.cli"]


@pytest.fixture(scope="session")
def cli_without():
    """``cli_without(module, "export", path, ...)``: the mnistcnn command in a fresh process where
    ``module`` cannot be imported (an optional extra not installed)."""

    def run(module, *args):
        code = f"import sys; sys.modules[{module!r}] = None; from mnistcnn.cli import main; main()"
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)

    return run


# the mnistcnn command, killed outright (as by SIGKILL or a power cut) as it puts a file in place
KILLED_AS_IT_WRITES = """import os, signal
replace = os.replace
def replace_or_die(source, target, **kwargs):
    dies = os.path.basename(target) == {name!r}
    if dies and not {after!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    replace(source, target, **kwargs)
    if dies:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_or_die
from mnistcnn.cli import main
main()
"""


@pytest.fixture(scope="session")
def killed_as_it_writes():
    """``killed_as_it_writes(name, "train", path, ...)``: the mnistcnn command in a process of its own,
    killed outright as it is about to rename a file named ``name`` into place (``after``: just after)."""

    def run(name, *args, after=False):
        code = KILLED_AS_IT_WRITES.format(name=name, after=after)
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)

    return run


@pytest.fixture
def left_out_of_sight(cli):
    """``left_out_of_sight(runs)``: that a command killed as it set up a folder in ``runs`` left none that
    commands see, only its hidden one, which is returned aged as one whose process died long ago."""

    def check(runs):
        assert [child.name for child in runs.iterdir() if not child.name.startswith(".")] == []
        assert cli("runs", runs).output == f"no run directories in {runs}\n"
        (left,) = runs.iterdir()
        long_ago = time.time() - 3600
        os.utime(left, (long_ago, long_ago))
        return left

    return check


# -- a small config and its runs ----------------------------------------------------------------
SMALL = """name: small
data:
  validation: 1000
  train_limit: {limit}
model:
  layers:
    - {{type: conv2d, filters: 8, kernel: 5, padding: 2}}
    - {{type: relu}}
    - {{type: maxpool2d, size: 2}}
    - {{type: conv2d, filters: 16, kernel: 3, padding: 1}}
    - {{type: batchnorm}}
    - {{type: relu}}
    - {{type: maxpool2d, size: 2}}
    - {{type: flatten}}
    - {{type: dropout, rate: 0.1}}
    - {{type: dense, units: 10}}
train:
  epochs: {epochs}
  batch_size: {batch}
  optimizer: {{type: adam, lr: 0.003}}
  schedule: {{type: step, step_epochs: 1, gamma: 0.5, warmup_epochs: 0.2}}
"""


@pytest.fixture(scope="session")
def write_config():
    """``write_config(folder, limit, epochs, batch)``: a small CNN's config file (every layer type
    the trainer uses), trained on the first ``limit`` MNIST images."""

    def write(folder, limit=3000, epochs=2, batch=32, name="small.yaml"):
        path = folder / name
        path.write_text(SMALL.format(limit=limit, epochs=epochs, batch=batch))
        return path

    return write


@pytest.fixture(scope="session")
def only_run():
    """The one run directory in a runs folder."""

    def find(runs):
        found = [path for path in runs.iterdir() if path.is_dir()]
        assert len(found) == 1, found
        return found[0]

    return find


@pytest.fixture(scope="session")
def weights():
    """A checkpoint's parameters and buffers (no optimiser state)."""
    from mnistcnn.runs import load_checkpoint

    def read(path):
        arrays, _ = load_checkpoint(path)
        return {key: value for key, value in arrays.items() if key.startswith(("param.", "buffer."))}

    return read


@pytest.fixture(scope="session")
def resaved_checkpoint():
    """``resaved_checkpoint(source, path, change)``: the checkpoint ``source`` written to ``path``
    after ``change(arrays, meta)`` altered it, hashed anew: a file that passes the SHA-256 check,
    as one made by hand or by another config would."""
    from mnistcnn.runs import load_checkpoint, save_checkpoint

    def resave(source, path, change):
        arrays, meta = load_checkpoint(source)
        change(arrays, meta)
        meta.pop("sha256")
        save_checkpoint(path, arrays, meta)
        return path

    return resave


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cli, write_config, only_run):
    """One short real training run (the small config, 2 epochs on 3,000 images) that every test
    reading a run shares: ``(run directory, what the command printed)``."""
    folder = tmp_path_factory.mktemp("trained")
    result = cli("train", write_config(folder), "--runs-dir", folder / "runs")
    assert result.exit_code == 0, result.output
    return only_run(folder / "runs"), result.output


@pytest.fixture(scope="session")
def trained_run(trained):
    """The shared run's directory. Tests read it; a test that changes files copies it first."""
    return trained[0]


@pytest.fixture
def run(trained_run, tmp_path):
    """A copy of the shared run, for tests whose commands write files into it."""
    copy = tmp_path / "runs" / trained_run.name
    shutil.copytree(trained_run, copy)
    return copy


@pytest.fixture
def drawn_figures(monkeypatch):
    """The figures that the pictures written during the test were drawn from, by path (the latest
    of each), so that a test reads titles, texts and where they sit off matplotlib's objects."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from mnistcnn import plots

    drawn, save = {}, plots._save

    def keep(fig, path, title):
        save(fig, path, title)
        FigureCanvasAgg(fig)  # closed, the figure lost the canvas that measures its texts
        drawn[Path(path)] = fig

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: from now on no file or folder can be made in ``folder`` or under it
    (EACCES), and os.access says so, as in a folder its user may not write in: a permission that
    root, who runs CI, would override."""
    import errno

    folders = []
    mkdir, create, access = os.mkdir, os.open, os.access

    def refused(path):
        path = Path(path).absolute()
        return any(path == folder or folder in path.parents for folder in folders)

    def guarded_mkdir(path, *args, **kwargs):
        if refused(Path(path).parent):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return mkdir(path, *args, **kwargs)

    def guarded_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and refused(Path(path).parent):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return create(path, flags, *args, **kwargs)

    def guarded_access(path, mode, *args, **kwargs):
        return not (mode & os.W_OK and refused(path)) and access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", guarded_mkdir)
    monkeypatch.setattr(os, "access", guarded_access)
    monkeypatch.setattr(os, "open", guarded_open)
    return lambda folder: folders.append(Path(folder).absolute())


@pytest.fixture
def signals_raise():
    """SIGINT and SIGTERM raise KeyboardInterrupt during the test, as Ctrl-C does in a terminal: a
    test that sends SIGTERM fails, not the whole session, when no handler of mnistcnn's takes it,
    and one that sends SIGINT still sees it when pytest was started with SIGINT ignored (a script's
    background job), where Python sets no handler of its own."""
    previous = {signum: signal.signal(signum, signal.default_int_handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.fixture(scope="session")
def metrics_without_time():
    """``metrics_without_time(run)``: a run's metrics.jsonl rows without their timings, which
    differ run to run where the numbers must not."""

    def read(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]

    return read


@pytest.fixture(scope="session")
def first_epoch_done():
    """``first_epoch_done(runs)``: the metrics.jsonl of a run under ``runs`` that has ended an
    epoch, or None (for ``wait_for``)."""
    return lambda runs: next(Path(runs).glob("*/metrics.jsonl"), None) if Path(runs).is_dir() else None


@pytest.fixture
def signal_in_final_evaluation(monkeypatch):
    """``signal_in_final_evaluation(signum)``: from now on the trainer raises ``signum`` as it
    scores the test split (once, at a run's end); ``signal_in_final_evaluation(None)``: no more."""
    from mnistcnn import trainer

    evaluate = trainer.evaluate

    def arrange(signum):
        def signalled(plan, images, *args, **kwargs):
            if len(images) == 10000:  # the test split
                signal.raise_signal(signum)
            return evaluate(plan, images, *args, **kwargs)

        monkeypatch.setattr(trainer, "evaluate", evaluate if signum is None else signalled)

    return arrange


@pytest.fixture
def signal_as_made(monkeypatch):
    """``signal_as_made(suffix, signum)``: from now on ``signum`` is raised the moment a file whose name
    ends with ``suffix`` is created, before its maker has its name: a signal that the child of a
    loaded machine, descheduled there, takes as it goes on."""
    create = os.open

    def arrange(suffix, signum):
        def signalled(path, flags, *args, **kwargs):
            fd = create(path, flags, *args, **kwargs)
            if flags & os.O_CREAT and str(path).endswith(suffix):
                signal.raise_signal(signum)
            return fd

        monkeypatch.setattr(os, "open", signalled)

    return arrange


@pytest.fixture(scope="session")
def wait_for():
    """``wait_for(condition, timeout, what)``: poll ``condition`` until it returns something true,
    and return that; fail naming ``what`` after ``timeout`` seconds."""

    def wait(condition, timeout=120.0, what="a condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    return wait


# -- synthetic IDX files -----------------------------------------------------------------------
def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write_idx(path, array, gz=False, type_code=0x08):
    data = _idx_bytes(np.asarray(array), type_code)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture(scope="session")
def idx_bytes():
    """``idx_bytes(array, type_code=0x08)``: an IDX file's bytes."""
    return _idx_bytes


@pytest.fixture(scope="session")
def write_idx():
    """``write_idx(path, array, gz=False, type_code=0x08)``: an IDX file, gzipped or not."""
    return _write_idx


@pytest.fixture(scope="session")
def make_folder():
    """``make_folder(folder, n_train, n_test, size, gz, seed, naming)``: a tiny MNIST-layout folder
    of random images (labels random too), named with dashes or dots."""

    def make(folder, n_train=200, n_test=50, size=28, gz=True, seed=0, naming="dash"):
        rng = np.random.default_rng(seed)
        folder.mkdir(parents=True, exist_ok=True)
        separator = "-" if naming == "dash" else "."
        for stem, count in (("train", n_train), ("t10k", n_test)):
            labels = rng.integers(0, 10, count).astype(np.uint8)
            images = rng.integers(0, 40, (count, size, size)).astype(np.uint8)
            extension = ".gz" if gz else ""
            _write_idx(folder / f"{stem}-images{separator}idx3-ubyte{extension}", images, gz)
            _write_idx(folder / f"{stem}-labels{separator}idx1-ubyte{extension}", labels, gz)
        return folder

    return make


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server's URL (bash .ci/run starts one and sets MNISTCNN_TEST_POSTGRES);
    without it the test is skipped here, and fails in CI."""
    url = os.environ.get("MNISTCNN_TEST_POSTGRES")
    if not url:
        message = "no PostgreSQL: set MNISTCNN_TEST_POSTGRES=postgresql://USER:PASSWORD@HOST/DB (bash .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def eval_batch_run(tmp_path_factory, cli, write_config, only_run):
    """``(run directory, its train.eval_batch_size)``: a one-epoch run on 600 images whose
    evaluation batch is not the default."""
    from mnistcnn.config import EVAL_BATCH_SIZE

    batch = EVAL_BATCH_SIZE // 8 + 1
    folder = tmp_path_factory.mktemp("eval-batch")
    result = cli("train", write_config(folder, limit=600, epochs=1), "--runs-dir", folder / "runs",
                 "--set", f"train.eval_batch_size={batch}")
    assert result.exit_code == 0, result.output
    return only_run(folder / "runs"), batch


@pytest.fixture
def evaluation_batches(monkeypatch):
    """The batch sizes the fast plan is asked to evaluate in, as the test's commands ask them."""
    from mnistcnn.engine.fast.plan import Plan

    asked, real = [], Plan.predict_logits

    def recorded(self, x, batch_size=None, *args, **kwargs):
        asked.append(batch_size)
        return real(self, x, batch_size, *args, **kwargs)

    monkeypatch.setattr(Plan, "predict_logits", recorded)
    return asked
