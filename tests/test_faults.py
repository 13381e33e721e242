"""Faults on the real code path: a full disk, no permission, two runs started at once, an
empty data folder, and fuzzing of the IDX reader and the config loader with random input."""
import errno
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from mnistcnn import config as cfg
from mnistcnn.data import read_idx
from mnistcnn.errors import ConfigError, DataError, UsageError, WriteError
from mnistcnn.runs import RunDir, load_checkpoint, write_json
from mnistcnn.trainer import train_run


def _file_behind(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class FailingDisk:
    """os.fsync that starts failing with ``code`` once ``after`` checkpoint writes succeeded:
    from then on every write fails, as on a disk that has filled up."""

    def __init__(self, code, after):
        self.code, self.after, self.saved, self.failed = code, after, 0, []
        self.real = os.fsync

    def __call__(self, fd):
        name = _file_behind(fd)
        if self.saved >= self.after:
            self.failed.append(name)
            raise OSError(self.code, os.strerror(self.code))
        self.real(fd)
        if ".last.npz." in name:
            self.saved += 1


def leftovers(run):
    return [p for p in run.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names open files through /proc")
@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "No space left on device; free some disk space"),
                                        (errno.EACCES, "Permission denied; make the folder writable")])
def test_a_full_or_unwritable_disk_mid_run_names_the_path_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                                        code, words, cli,
                                                                                        write_config, only_run):
    disk = FailingDisk(code, after=1)  # the checkpoint at the start succeeds, the one after epoch 1 does not
    monkeypatch.setattr(os, "fsync", disk)
    result = cli("train", write_config(tmp_path, limit=300, epochs=2), "--runs-dir", tmp_path / "runs", "--quiet")
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    message = result.stderr.strip()
    assert message.count("\n") == 0 and message.startswith("error: ") and "Traceback" not in result.stderr
    assert words in message and "cannot write" in message and str(tmp_path / "runs") in message
    run = only_run(tmp_path / "runs")
    arrays, meta = load_checkpoint(run / "checkpoints" / "last.npz")  # intact, verified by its SHA-256s
    assert meta["epoch"] == 0
    assert leftovers(run) == []
    assert disk.failed  # the fault really happened
    resume = f"then go on from the run's last checkpoint: mnistcnn train --resume {run}"
    assert message.endswith(resume), message
    resumed = cli("train", "--resume", run)  # the disk has room again: the advice works
    assert resumed.exit_code == 0 and json.loads((run / "summary.json").read_text())["epochs"] == 2, resumed.output


def test_a_picture_that_cannot_be_written_after_the_summary_leaves_the_run_finished(tmp_path, monkeypatch, cli,
                                                                                   write_config, only_run):
    real = os.fsync

    def curves_refused(fd):
        if "curves" in _file_behind(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", curves_refused)
    result = cli("train", write_config(tmp_path, limit=300, epochs=1), "--runs-dir", tmp_path / "runs", "--quiet")
    monkeypatch.undo()
    assert result.exit_code == 1 and "curves.png: cannot write" in result.stderr, result.output
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "status.json").read_text())["status"] == "finished" and "--resume" not in result.stderr


def test_a_status_that_cannot_be_written_after_the_summary_leaves_the_run_finished(tmp_path, monkeypatch, cli,
                                                                                   write_config, only_run):
    real = os.fsync

    def status_refused(fd):
        if "status" in _file_behind(fd) and (only_run(tmp_path / "runs") / "summary.json").is_file():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", status_refused)
    result = cli("train", write_config(tmp_path, limit=300, epochs=1), "--runs-dir", tmp_path / "runs", "--quiet")
    monkeypatch.undo()
    run = only_run(tmp_path / "runs")
    assert result.exit_code == 1 and "status.json: cannot write" in result.stderr, result.output
    assert json.loads((run / "status.json").read_text())["status"] == "running"  # as the fault left it
    (row,) = json.loads(cli("runs", run, "--json").output)
    assert row["status"] == "finished"
    again = cli("train", "--resume", run)
    assert again.exit_code == 2 and "finished after 1 epoch; there is nothing to resume" in again.output


def test_an_unwritable_runs_folder_at_the_start(tmp_path, monkeypatch, cli, write_config, only_run):
    create = os.open

    def refuse(path, flags, *args, **kwargs):  # no new file: every write goes through a temporary one
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return create(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    result = cli("train", write_config(tmp_path, limit=300, epochs=1), "--runs-dir", tmp_path / "runs")
    monkeypatch.undo()
    assert result.exit_code == 1
    assert "config.yaml: cannot write: Permission denied" in result.stderr and "Traceback" not in result.stderr
    assert list((tmp_path / "runs").iterdir()) == []  # a folder with nothing to resume is not left behind


def test_a_write_into_a_folder_removed_meanwhile_names_the_folder_and_the_fix(tmp_path):
    from mnistcnn.atomic import OutputOption, write_text, written_to

    gone = tmp_path / "gone"  # made before the work began, removed by hand while it ran
    with pytest.raises(UsageError) as refused:
        write_text(gone / "report.json", "{}")
    assert str(refused.value) == f"{gone / 'report.json'}: the folder {gone} does not exist; create it"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError) as refused, written_to(OutputOption("--out", "DIR")):
        write_text(gone / "report.json", "{}")  # written where an option chose: that option is the other fix
    assert str(refused.value).endswith("does not exist; create it, or write elsewhere with --out DIR")


def test_a_refused_write_names_what_is_in_the_way_and_its_fix(tmp_path):
    from mnistcnn.atomic import OutputOption, write_error, write_text, written_to

    with pytest.raises(UsageError, match="is a folder; give the name of a file to write in it"):
        write_text(tmp_path, "{}")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("")
    with pytest.raises(WriteError) as refused:  # a file where its folder should be is no missing folder
        write_text(blocker / "report.json", "{}")
    assert str(refused.value) == f"{blocker / 'report.json'}: cannot write: Not a directory; check the folder"
    full, read_only = (OSError(code, os.strerror(code)) for code in (errno.ENOSPC, errno.EROFS))
    assert str(write_error(blocker, full)).endswith(": cannot write: No space left on device "
                                                    "(the previous version is intact); free some disk space")
    assert str(write_error(tmp_path / "new.txt", read_only)).endswith(
        "new.txt: cannot write: Read-only file system; use a writable folder")
    with pytest.raises(WriteError, match="^the disk went away$"), written_to(OutputOption("--out", "DIR")):
        raise WriteError("the disk went away")  # no path of its own: no option to name


@pytest.mark.parametrize("signum,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_as_the_run_folder_is_set_up_leaves_no_half_made_folder(tmp_path, monkeypatch, cli, write_config,
                                                                         signum, code, signals_raise):
    real = RunDir.set_status

    def signalled(run, status, **extra):  # the signal comes after config.yaml, before the run is marked running
        signal.raise_signal(getattr(signal, signum))
        real(run, status, **extra)

    monkeypatch.setattr(RunDir, "set_status", signalled)
    result = cli("train", write_config(tmp_path, limit=300, epochs=1), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == code and result.stderr == "error: interrupted\n", result.output
    assert list((tmp_path / "runs").iterdir()) == []  # not a folder that `runs` skips and --resume refuses


@pytest.mark.parametrize("name", ["config.yaml", "status.json"])
def test_a_kill_as_the_run_folder_is_set_up_leaves_no_folder_in_sight(tmp_path, cli, write_config, only_run,
                                                                      killed_as_it_writes, left_out_of_sight, name):
    # the folder was made under its own name first: killed before its config.yaml was in, it stayed, and `runs`
    # passed it over while --resume refused it ("has no config.yaml and no checkpoint that keeps one")
    config, runs = write_config(tmp_path, limit=300, epochs=1), tmp_path / "runs"
    killed = killed_as_it_writes(name, "train", config, "--runs-dir", runs, "--quiet")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left_out_of_sight(runs)  # the next run removes it once no process has touched it for a while
    assert cli("train", config, "--runs-dir", runs, "--quiet").exit_code == 0
    assert json.loads((only_run(runs) / "status.json").read_text())["status"] == "finished"
    assert [child.name for child in runs.iterdir()] == [only_run(runs).name]


def test_a_full_disk_as_a_run_folder_is_made_leaves_nothing(tmp_path, cli, write_config, monkeypatch):
    # the hidden folder stayed, its setup lock held until the process ended, for a later run to remove
    import errno
    import pathlib

    make = pathlib.Path.mkdir

    def full_for_checkpoints(path, *args, **kwargs):
        if path.name == "checkpoints":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return make(path, *args, **kwargs)

    config, runs = write_config(tmp_path, limit=300, epochs=1), tmp_path / "runs"
    monkeypatch.setattr(pathlib.Path, "mkdir", full_for_checkpoints)
    result = cli("train", config, "--runs-dir", runs, "--quiet")
    assert result.exit_code == 1 and "No space left on device" in result.stderr, result.output
    assert list(runs.iterdir()) == []


def test_a_folder_that_a_live_process_sets_up_is_never_taken_for_abandoned(tmp_path):
    # the lock is a flock on the folder: another open descriptor, here as in another process, cannot take it
    from mnistcnn.sweep.folder import SweepDir

    live = SweepDir.create(tmp_path, "slow")  # a sweep's has no training lock: its setup locks the folder itself
    killed, just_made = tmp_path / ".killed-20260101-000000.part", tmp_path / ".new-20260101-000000.part"
    not_a_run = tmp_path / ".notes.part"  # hidden and old, but no run's or sweep's: not this code's to remove
    for folder in (killed, just_made, not_a_run):
        folder.mkdir()  # just_made: by a process that has not locked it yet
    long_ago = time.time() - 3600
    for folder in (live.path, killed, not_a_run):
        os.utime(folder, (long_ago, long_ago))
    run = RunDir.create(tmp_path, "next")
    assert sorted(child.name for child in tmp_path.iterdir()) == sorted([live.path.name, just_made.name,
                                                                         not_a_run.name, run.path.name])
    live.publish()  # whole: in sight, under the name it reserved
    assert [child.name for child in tmp_path.iterdir() if not child.name.startswith(".")] == [live.path.name]


def test_a_folder_is_named_name_and_stamp_and_the_next_in_that_second_takes_2(tmp_path, monkeypatch):
    import datetime as dt
    from types import SimpleNamespace

    from mnistcnn import folders

    second = dt.datetime(2026, 1, 2, 3, 4, 5)  # two folders made within one second, whatever the machine's speed
    monkeypatch.setattr(folders, "_dt", SimpleNamespace(datetime=SimpleNamespace(now=lambda: second)))
    first, again = folders.stamped_folder(tmp_path, "x"), folders.stamped_folder(tmp_path, "x")
    assert (first.name, again.name) == (".x-20260102-030405.part", ".x-20260102-030405-2.part")
    assert (folders.publish_folder(first).name, folders.publish_folder(again).name) == ("x-20260102-030405",
                                                                                        "x-20260102-030405-2")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc")
@pytest.mark.parametrize("end", ["publish", "discard"])
def test_a_folder_set_up_lets_go_of_its_lock_once_published_or_discarded(tmp_path, end):
    # a sweep's worker lives on to its next trial: a lock kept would hold a descriptor per trial
    from mnistcnn.folders import StampedFolder

    before = len(os.listdir("/proc/self/fd"))
    made = StampedFolder.create(tmp_path, "x")
    assert made.setup_lock is not None
    getattr(made, end)()
    assert made.setup_lock is None and len(os.listdir("/proc/self/fd")) == before


def test_two_runs_with_the_same_name_started_together_get_two_directories(tmp_path, write_config,
                                                                         mnistcnn_command):
    config = write_config(tmp_path, limit=200, epochs=1)
    runs = tmp_path / "runs"
    procs = [subprocess.Popen(mnistcnn_command + ["train", str(config), "--runs-dir", str(runs), "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    dirs = sorted(p for p in runs.iterdir() if p.is_dir())
    assert len(dirs) == 2
    for run in dirs:
        assert json.loads((run / "summary.json").read_text())["status"] == "finished"
        load_checkpoint(run / "checkpoints" / "best.npz")
    assert {out.strip().rsplit(" ", 1)[-1] for out, _ in outputs} == {str(run) for run in dirs}


def test_a_resume_of_a_run_that_another_process_trains_is_refused_until_it_ends(tmp_path, cli, write_config, only_run,
                                                                                 mnistcnn_command, wait_for,
                                                                                 first_epoch_done):
    config = write_config(tmp_path, limit=3000, epochs=50)  # still training when the resume is tried
    process = subprocess.Popen([*mnistcnn_command, "train", str(config), "--runs-dir", str(tmp_path / "runs"),
                                "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: first_epoch_done(tmp_path / "runs"), what="the first epoch")
        run = only_run(tmp_path / "runs")
        refused = cli("train", "--resume", run, "--quiet")
        log = (run / "train.log").read_text()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert refused.output == (f"error: {run}: is being trained by process {process.pid} now; wait for it to end, or "
                              f"stop it (kill -INT {process.pid}) and resume then\n")
    assert "resuming" not in log
    assert cli("train", "--resume", run, "--print-config").exit_code == 0  # its process has ended


def test_a_run_whose_process_id_another_process_took_since_is_resumed(run, cli):
    # status.json names a live process (init) that is not training the run: after a reboot or a kill -9
    write_json(run / "status.json", {"status": "running", "pid": 1})
    assert json.loads(cli("runs", run, "--json").output)[0]["status"] == "finished"
    longer = cli("train", "--resume", run, "--epochs", "3", "--quiet")
    assert longer.exit_code == 0, longer.output
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3


@pytest.mark.parametrize("options", [[], ["--dry-run"]], ids=["resume", "dry-run"])
def test_a_resume_in_a_run_folder_it_cannot_write_in_is_refused_before_anything_is_printed(run, cli, read_only,
                                                                                           options):
    # the model's table came first, then "RUN/.training.lock: Read-only file system"
    read_only(run)
    result = cli("train", "--resume", run, "--epochs", "3", *options)
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr == (f"error: {run}: cannot write in this folder, and --resume trains a run in its own "
                             "folder; make it writable, or copy the run to a folder you can write in and resume the "
                             f"copy: cp -r {run} DIR && mnistcnn train --resume DIR/{run.name}\n")
    assert cli("train", "--resume", run, "--epochs", "3", "--print-config").exit_code == 0  # it writes nothing


def test_a_refused_resume_leaves_the_training_process_files_alone(run):
    # a sweep worker resumes through train_run, without the command's early look at the lock
    partial = run / "checkpoints" / ".last.npz.k3j2.tmp"  # the live trainer's write in flight
    partial.write_bytes(b"half a checkpoint")
    write_json(run / "status.json", {"status": "running", "pid": os.getpid()})
    with RunDir(run).training_lock(), pytest.raises(UsageError, match=f"is being trained by process {os.getpid()}"):
        train_run({}, None, resume=RunDir(run))
    assert partial.read_bytes() == b"half a checkpoint"


def test_a_run_to_be_trained_longer_stays_finished_when_its_config_cannot_be_written(run, cli, monkeypatch):
    from mnistcnn import trainer

    real = trainer.write_text

    def config_refused(path, text):
        if path.name == "config.yaml":
            raise WriteError(f"{path}: cannot write: No space left on device")
        real(path, text)

    monkeypatch.setattr(trainer, "write_text", config_refused)
    result = cli("train", "--resume", run, "--epochs", "3", "--quiet")
    monkeypatch.undo()
    assert result.exit_code == 1 and "config.yaml: cannot write" in result.stderr, result.output
    (row,) = json.loads(cli("runs", run, "--json").output)
    assert (row["status"], row["epochs"]) == ("finished", 2) and row["test_acc"] is not None


def test_out_of_memory_is_one_line_naming_the_fix(tmp_path, cli, write_config, only_run, trained_run, monkeypatch):
    from mnistcnn import evaluation
    from mnistcnn.trainer import Trainer

    numpy_words = "Unable to allocate 658. MiB for an array with shape (60000, 28, 28, 8) and data type float32"

    def out_of_memory(*args, **kwargs):  # as numpy's _ArrayMemoryError, a MemoryError, says it
        raise MemoryError(numpy_words)

    monkeypatch.setattr(Trainer, "fit", out_of_memory)
    result = cli("train", write_config(tmp_path, limit=300, epochs=1), "--runs-dir", tmp_path / "runs", "--quiet")
    run = only_run(tmp_path / "runs")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr == (f"error: out of memory in training ({numpy_words}); train with smaller batches: mnistcnn "
                             f"train {run / 'config.yaml'} --batch-size 8\n")  # a quarter of its 32
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    monkeypatch.setattr(evaluation, "score", out_of_memory)
    scored = cli("eval", trained_run, "--json")
    assert scored.exit_code == 1 and scored.stderr == (f"error: out of memory ({numpy_words}); fewer images at once "
                                                       "(--batch-size, where the command has it) need less\n")


def test_an_empty_data_folder_is_named_and_no_run_is_made(tmp_path, cli, write_config):
    empty = tmp_path / "data"
    empty.mkdir()
    result = cli("train", write_config(tmp_path, epochs=1), "--runs-dir", tmp_path / "runs", "--data-dir", empty)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert str(empty) in result.stderr and "train-images" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# -- fuzzing: random input gives a typed error or a result, never another exception, never a hang
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_as_an_idx_file(tmp_path, blob, gz):
    import gzip

    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(blob) if gz else blob)
    try:
        array = read_idx(path)
    except DataError as err:
        assert str(path) in str(err)
        return
    assert array.dtype == np.uint8  # IDX type 0x08 is the only one MNIST needs and read_idx accepts


@st.composite
def idx_like(draw):
    """A plausible header (sometimes lying about its sizes or type) and a body."""
    ndim = draw(st.integers(0, 4))
    dims = draw(st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 40), min_size=ndim, max_size=ndim))
    type_code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
    header = bytes([0, 0, type_code, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + draw(st.binary(max_size=400))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx_like(), st.sampled_from([None, 1, 3]))
def test_random_idx_headers(tmp_path, blob, ndim):
    path = tmp_path / "g"
    path.write_bytes(blob)
    try:
        array = read_idx(path, expected_ndim=ndim)
    except DataError:
        return
    assert array.dtype == np.uint8 and (ndim is None or array.ndim == ndim)


def test_a_valid_idx_round_trips(tmp_path, idx_bytes):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "ok").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "ok", expected_ndim=3), array)


scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=8)
structures = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(["type", "units", "filters", "kernel", "padding", "stride", "rate"]),
    inner, max_size=4), max_leaves=12)
LAYER_TYPES = ["conv2d", "maxpool2d", "avgpool2d", "relu", "flatten", "dense", "dropout", "batchnorm", "tanh", "nope"]


@st.composite
def config_trees(draw):
    """Random structures, and real keys with random values (so the fuzzing gets past the top)."""
    raw = draw(st.dictionaries(st.sampled_from(["name", "data", "model", "train", "extra"]), structures, max_size=3))
    if draw(st.booleans()):
        layers = draw(st.lists(st.fixed_dictionaries({"type": st.sampled_from(LAYER_TYPES)}, optional={
            "units": st.integers(-5, 10**9), "filters": st.integers(-5, 10**9), "kernel": st.integers(-2, 40),
            "padding": st.integers(-1, 5) | st.sampled_from(["same", "valid", "x"]),
            "size": st.integers(-1, 40), "rate": st.floats(allow_nan=True)}), max_size=8))
        raw["model"] = {"layers": layers}
    if draw(st.booleans()):
        raw["train"] = {"optimizer": {"lr": draw(scalars)}, "epochs": draw(scalars), "batch_size": draw(scalars)}
    return raw


@settings(max_examples=250, deadline=None)
@given(config_trees())
def test_random_configs_give_config_errors_only(raw):
    try:
        config = cfg.validate(raw, "fuzz.yaml")
    except ConfigError as err:
        assert str(err).startswith("fuzz.yaml")
        return
    assert cfg.validate(config, "again.yaml") == config  # what passes is complete: validating it changes nothing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200) | st.builds(yaml.safe_dump, structures))
def test_random_yaml_text_gives_config_errors_only(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        config = cfg.load_config(path)
    except ConfigError as err:
        assert str(path) in str(err)
        return
    assert cfg.validate(config) == config


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="finds the worker process through /proc")
def test_a_killed_worker_process_ends_the_run_with_one_line_and_it_resumes(tmp_path, mnistcnn_command, write_config,
                                                                          only_run, wait_for, first_epoch_done):
    config = write_config(tmp_path, limit=3000, epochs=8)  # still training when the first epoch is seen
    process = subprocess.Popen([*mnistcnn_command, "train", str(config), "--runs-dir", str(tmp_path / "runs"),
                                "--set", "train.parallel=processes", "--set", "train.workers=2", "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = f"/proc/{process.pid}/task/{process.pid}/children"
    wait_for(lambda: first_epoch_done(tmp_path / "runs"),
             what="the first epoch")
    (worker,) = open(children).read().split()
    os.kill(int(worker), 9)
    out, err = process.communicate(timeout=120)
    run = only_run(tmp_path / "runs")
    assert process.returncode == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"error: training worker process {worker} ended "
                          "(killed by SIGKILL, perhaps for want of memory)")
    assert err.endswith(f"go on from the run's last checkpoint: mnistcnn train --resume {run}\n")
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and f"worker process {worker} ended" in status["reason"]
    resumed = subprocess.run([*mnistcnn_command, "train", "--resume", str(run), "--quiet"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
