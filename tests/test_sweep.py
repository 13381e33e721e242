"""mnistcnn sweep: trials as runs, pruning, reports, Ctrl-C and --resume, a shared PostgreSQL
study with a worker killed mid-trial, and sweep files refused with one line."""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import threading
import uuid
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from mnistcnn.errors import ConfigError, UsageError, install_extra
from mnistcnn.folders import in_sight
import yaml

from mnistcnn.engine.fast.parallel import cores as available_cores

pytest.importorskip("optuna", reason="the sweep extra: pip install 'mnistcnn[sweep]'")

BASE = """name: tiny
data: {{validation: 500, train_limit: {limit}}}
model:
  layers:
    - {{type: conv2d, filters: 4, kernel: 5, padding: 2, activation: relu}}
    - {{type: maxpool2d, size: 4}}
    - {{type: flatten}}
    - {{type: dense, units: 10}}
train: {{epochs: {epochs}, batch_size: 64, optimizer: {{type: sgd, lr: 0.05}}}}
"""


def write_sweep(folder: Path, limit=2000, epochs=3, **settings) -> Path:
    """A base config and a sweep file over it; ``settings`` replace the sweep file's keys."""
    (folder / "base.yaml").write_text(BASE.format(limit=limit, epochs=epochs))
    sweep = {"name": "tiny", "base": "base.yaml", "trials": 6, "sampler": "random",
             "pruner": {"type": "none"},
             "space": {"train.optimizer.lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
                       "model.layers[0].filters": {"type": "int", "low": 3, "high": 6}}}
    sweep.update(settings)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def read_trials(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def sweep_folder(runs: Path) -> Path:
    (folder,) = [path for path in runs.iterdir() if (path / "sweep.yaml").is_file()]
    return folder


def run_sweep(command, *args, cwd, timeout=240):
    return subprocess.run([*command, "sweep", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_two_jobs_complete_the_trials_and_the_best_trial_trains_again_bit_for_bit(tmp_path, mnistcnn_command, cli,
                                                                                   metrics_without_time):
    path = write_sweep(tmp_path)
    done = run_sweep(mnistcnn_command, path, "--jobs", "2", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = sweep_folder(tmp_path / "runs")
    rows = read_trials(folder)
    assert sorted(int(row["number"]) for row in rows) == list(range(6))
    assert {row["status"] for row in rows} <= {"complete", "pruned"}
    for name in ("trials.jsonl", "best-trial.yaml", "metric-by-trial.png", "metric-by-parameter.png"):
        assert (folder / name).stat().st_size > 0, name
    assert len((folder / "trials.jsonl").read_text().splitlines()) == 6

    best = max((row for row in rows if row["status"] == "complete"), key=lambda row: float(row["value"]))
    best_config = yaml.safe_load((folder / "best-trial.yaml").read_text())
    assert best_config["train"]["optimizer"]["lr"] == float(best["train.optimizer.lr"])
    assert best_config["model"]["layers"][0]["filters"] == int(best["model.layers[0].filters"])
    assert best_config["train"]["workers"] == best_config["train"]["blas_threads"] == 1  # 2 jobs on 2 cores
    assert f"mnistcnn train {folder / 'best-trial.yaml'}" in done.stdout
    assert f"pictures: {folder / 'metric-by-trial.png'}, {folder / 'metric-by-parameter.png'}" in done.stdout
    assert f"(its run: {best['run']})" in done.stdout and f"# its run: {best['run']})" in \
        (folder / "best-trial.yaml").read_text()  # a resumed trial's number names no folder: its run does

    again = cli("train", folder / "best-trial.yaml", "--runs-dir", tmp_path / "again", "--quiet")
    assert again.exit_code == 0, again.output
    (rerun,) = (tmp_path / "again").iterdir()
    trial_run = Path(best["run"])
    assert metrics_without_time(rerun) == metrics_without_time(trial_run)
    summary = json.loads((rerun / "summary.json").read_text())
    assert summary["test_acc"] == float(best["test_acc"])
    assert summary["best_val_acc"] == float(best["value"])

    listed = cli("runs", tmp_path / "runs", "--json")
    assert listed.exit_code == 0, listed.output
    trials = json.loads(listed.output)
    assert len(trials) == 6 and {row["sweep"] for row in trials} == {folder.name}
    for row in trials:  # what changed each trial's run: the sweep file's values for it
        assert row["config"] == str(folder / "sweep.yaml") and sorted(value.split("=")[0] for value in
                                                                     row["overrides"]) == \
            ["model.layers[0].filters", "train.optimizer.lr"], row
    assert all(Path(row["path"]).parent == folder / "trials" for row in trials)
    table = cli("runs", tmp_path / "runs")  # where the trials are, to give them to eval or predict
    assert table.exit_code == 0 and f"sweep {folder.name}: its trials are in {folder / 'trials'}/" in table.output
    status = cli("sweep", "--status", folder)
    assert status.exit_code == 0, status.output
    assert "study tiny: 6 of 6 trials done" in status.output


def test_a_learning_rate_that_cannot_learn_is_pruned_after_fewer_epochs(tmp_path, mnistcnn_command):
    path = write_sweep(tmp_path, trials=8, pruner={"type": "median", "warmup_epochs": 0, "startup_trials": 1},
                       space={"train.optimizer.lr": {"type": "choice", "values": [0.1, 0.05, 1.0e-9]}})
    done = run_sweep(mnistcnn_command, path, "--jobs", "1", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = sweep_folder(tmp_path / "runs")
    rows = read_trials(folder)
    pruned = [row for row in rows if row["status"] == "pruned"]
    complete = [row for row in rows if row["status"] == "complete"]
    assert pruned and complete
    assert any(float(row["train.optimizer.lr"]) == 1e-9 for row in pruned)
    assert max(int(row["epochs"]) for row in pruned) < min(int(row["epochs"]) for row in complete) == 3
    for row in pruned:  # the trial's run says so, and why
        status = json.loads((Path(row["run"]) / "status.json").read_text())
        assert status["status"] == "pruned" and "pruned at epoch" in status["reason"]


def running_trial(folder: Path):
    """A trial run that has trained at least one batch and is still running, else None. Only trial folders in
    sight: one being set up (.NAME.part) is renamed or removed by its worker while this reads it."""
    for trial in in_sight(folder / "trials"):
        status_file = trial / "status.json"
        try:
            status = json.loads(status_file.read_text())
        except ValueError:
            continue
        if status.get("status") == "running" and (status_file.parent / "metrics.jsonl").exists():
            return status_file.parent, status["pid"]
    return None


def start_sweep(command, path: Path, tmp_path: Path) -> subprocess.Popen:
    """``mnistcnn sweep PATH --jobs 2`` running, its sweep folder in tmp_path/runs."""
    return subprocess.Popen([*command, "sweep", str(path), "--jobs", "2", "--runs-dir", str(tmp_path / "runs")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_trial_folder_being_set_up_is_not_taken_for_a_running_one(tmp_path):
    # its worker renames or removes it as a poll reads it: a FileNotFoundError under load, before
    part = tmp_path / "trials" / ".trial-000-20260101-000000.part"
    part.mkdir(parents=True)
    (part / "status.json").write_text(json.dumps({"status": "running", "pid": 1}))
    (part / "metrics.jsonl").touch()
    assert running_trial(tmp_path) is None


def wait_for_a_running_trial(tmp_path: Path, wait_for) -> Path:
    """The sweep folder of start_sweep, once a trial in it has trained past its first epoch."""
    folder = wait_for(lambda: next((p for p in (tmp_path / "runs").glob("*") if (p / "trials").is_dir()), None),
                      what="the sweep folder")
    wait_for(lambda: running_trial(folder), what="a trial past its first epoch")
    return folder


def test_sigint_mid_sweep_then_resume_finishes_every_trial_once(tmp_path, mnistcnn_command, wait_for):
    # 4 trials on 2 jobs: two stopped mid-trial, two never started; the trials are long enough for the signal
    # to find one running
    path = write_sweep(tmp_path, limit=6000, epochs=4, trials=4)
    process = start_sweep(mnistcnn_command, path, tmp_path)
    folder = wait_for_a_running_trial(tmp_path, wait_for)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"interrupted; resume with: mnistcnn sweep --resume {folder}\n" in err
    complete = [row for row in read_trials(folder) if row["status"] == "complete"]
    assert ("top trials" in out) == bool(complete), out  # no empty table when none is complete
    stopped = [row for row in read_trials(folder) if row["status"] == "stopped"]
    assert stopped, "a trial was running when the signal came"
    interrupted = [json.loads(p.read_text()) for p in folder.glob("trials/*/status.json")]
    assert "running" not in {status["status"] for status in interrupted}
    assert not [log for log in folder.glob("workers/*.log") if "Traceback" in log.read_text()]  # a stop is no error

    elsewhere = run_sweep(mnistcnn_command, "--resume", folder, "--storage", tmp_path / "other.journal", cwd=tmp_path)
    assert elsewhere.returncode == 2 and "is not in the storage" in elsewhere.stderr  # no new, empty study
    assert f"{len(stopped)} stopped by a signal and queued again" in out, out
    done = run_sweep(mnistcnn_command, "--resume", folder, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 jobs x " in done.stdout  # as before: each trial goes on with the threads it had
    final = [line for line in done.stdout.splitlines() if "trials done" in line][-1]
    assert "stopped by a signal" not in final, done.stdout  # the trials that resumed them have ended
    assert f"(resumes {stopped[0]['number']})" in done.stdout  # the table says which trial a retry continues
    rows = read_trials(folder)
    numbers = [int(row["number"]) for row in rows]
    assert len(numbers) == len(set(numbers))
    assert sum(row["status"] in ("complete", "pruned") for row in rows) == 4
    for row in stopped:  # each stopped trial went on from its checkpoint, in its own run directory
        (retry,) = [other for other in rows if other["retry_of"] == row["number"]]
        assert retry["status"] in ("complete", "pruned") and retry["run"] == row["run"]
        assert json.loads((Path(row["run"]) / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == \
            int(retry["epochs"])
    summaries = [json.loads((Path(row["run"]) / "summary.json").read_text()) for row in stopped
                 if (Path(row["run"]) / "summary.json").exists()]
    assert all(summary["resumed"] for summary in summaries)


def test_sigint_as_the_workers_start_stops_each_of_them_cleanly(tmp_path, mnistcnn_command, wait_for):
    path = write_sweep(tmp_path, limit=500, epochs=1)
    process = start_sweep(mnistcnn_command, path, tmp_path)
    logs = wait_for(lambda: list((tmp_path / "runs").glob("*/workers/*.log")), what="the first worker's start")
    process.send_signal(signal.SIGINT)  # the worker is still importing: the signal waits until it can obey it
    out, err = process.communicate(timeout=120)
    folder = sweep_folder(tmp_path / "runs")
    assert process.returncode == 130 and err == f"interrupted; resume with: mnistcnn sweep --resume {folder}\n", err
    assert all("Traceback" not in log.read_text() for log in logs)
    assert "0/6 trials done" in out  # no worker went on with the sweep


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker processes through /proc")
def test_a_sweep_command_killed_outright_stops_its_workers_and_resumes(tmp_path, mnistcnn_command, wait_for):
    path = write_sweep(tmp_path, limit=6000, epochs=4, trials=4)  # two killed mid-trial, two never started
    process = start_sweep(mnistcnn_command, path, tmp_path)
    folder = wait_for_a_running_trial(tmp_path, wait_for)
    workers = [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
    process.kill()  # no signal to pass on: the workers see their command gone
    process.communicate(timeout=60)

    def running(pid: int) -> bool:
        try:
            return "sweep.worker" in Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:  # it ended and was reaped (by init: its parent is gone) between looking and reading
            return False

    def ended() -> bool:
        return not any(running(pid) for pid in workers)

    try:
        wait_for(ended, timeout=60, what="the workers of the killed sweep to stop")
    finally:
        for pid in workers:  # not left running the sweep unseen if they do not
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    statuses = [json.loads(status.read_text())["status"] for status in folder.glob("trials/*/status.json")]
    assert "interrupted" in statuses and "running" not in statuses  # each running trial checkpointed
    done = run_sweep(mnistcnn_command, "--resume", folder, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sum(row["status"] in ("complete", "pruned") for row in read_trials(folder)) == 4


def test_a_signal_between_two_workers_starting_reaches_both(tmp_path, monkeypatch):
    from mnistcnn.sweep import launch
    from mnistcnn.sweep.space import load_sweep

    started = []

    class SignalledAfterTheFirst(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)
            if len(started) == 1:  # Ctrl-C before the sweep has this worker in its list, or the second one at all
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(launch.subprocess, "Popen", SignalledAfterTheFirst)
    run = launch.SweepRun.start(load_sweep(write_sweep(tmp_path, limit=500, epochs=1, trials=2)), tmp_path / "runs")
    snapshot, stopped = run.run_workers(2, 1, lambda snapshot: None)
    assert stopped == signal.SIGINT and [worker.returncode for worker in run.workers] == [130, 130]
    assert snapshot.done == 0


@pytest.mark.skipif(available_cores() < 2, reason="one job and two jobs differ only with two cores")
def test_a_resumed_sweep_runs_as_many_jobs_as_before_unless_told_and_a_finished_one_is_not_resumed(
        tmp_path, mnistcnn_command):
    from mnistcnn.sweep.folder import SweepDir
    from mnistcnn.sweep.launch import plan_jobs

    path = write_sweep(tmp_path, limit=500, epochs=1, trials=2)
    first = run_sweep(mnistcnn_command, path, "--jobs", "1", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "1 job x " in first.stdout
    folder = sweep_folder(tmp_path / "runs")
    jobs_before = SweepDir(folder).jobs_before
    assert jobs_before == 1 and plan_jobs(None, 2, jobs_before)[0] == 1  # not a job per core, as without one before
    assert plan_jobs(None, 2, None)[0] == 2 and plan_jobs(2, 2, jobs_before)[0] == 2  # --jobs decides
    best_trial = (folder / "best-trial.yaml").read_text()
    for report in ("best-trial.yaml", "trials.csv"):  # as when the command was killed as its last trial ended
        (folder / report).unlink()
    finished = run_sweep(mnistcnn_command, "--resume", folder, cwd=tmp_path)
    assert (folder / "best-trial.yaml").read_text() == best_trial and len(read_trials(folder)) == 2
    assert finished.returncode == 2 and finished.stdout == "" and finished.stderr == (
        f"error: {folder}: the sweep is finished, 2 of 2 trials done; its reports are rewritten as the study stands, "
        "and there is nothing to resume. Its trials: "
        f"mnistcnn sweep --status {folder}; its best: mnistcnn train {folder / 'best-trial.yaml'}\n")
    again = run_sweep(mnistcnn_command, folder, cwd=tmp_path)  # the folder given as a sweep file
    assert again.returncode == 2 and again.stderr == (
        f"error: {folder}: is a sweep folder, not a sweep file; go on with it: mnistcnn sweep --resume {folder}, or "
        f"see its trials: mnistcnn sweep --status {folder}\n")


def test_each_queued_trial_goes_to_one_worker_of_a_local_study(tmp_path):
    # the workers of one machine share a SQLite file: four threads, each with its own connection, ask at once
    import optuna

    from mnistcnn.sweep import study as studies

    storage = studies.open_storage(studies.local_storage(tmp_path), heartbeat=60)
    study = optuna.create_study(storage=storage, study_name="queued")
    for value in range(40):
        study.enqueue_trial({"x": value}, skip_if_exists=False)
    taken, start = [], threading.Barrier(4)

    def ask_ten() -> None:
        start.wait()
        taken.extend(study.ask().number for _ in range(10))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's: a heartbeat is meant for study.optimize
        threads = [threading.Thread(target=ask_ten) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(taken) == list(range(40))


@pytest.fixture(params=["postgresql", "journal"])
def shared_storage(request, tmp_path):
    """A study two machines could share: a real PostgreSQL server (Optuna's heartbeat), or a
    journal file (the sweep's own heartbeat)."""
    if request.param == "journal":
        return str(tmp_path / "study.journal")
    return request.getfixturevalue("postgres_url")


def test_two_sweeps_share_one_study_and_a_killed_worker_s_trial_is_retried(tmp_path, mnistcnn_command,
                                                                            shared_storage, wait_for):
    from mnistcnn.sweep.study import shown

    study = f"test-{uuid.uuid4().hex[:12]}"
    path = write_sweep(tmp_path, limit=6000, epochs=3, trials=6, heartbeat=1)
    common = [str(path), "--jobs", "1", "--storage", shared_storage, "--study", study]
    first = subprocess.Popen([*mnistcnn_command, "sweep", *common, "--runs-dir", str(tmp_path / "a")],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen([*mnistcnn_command, "sweep", *common, "--runs-dir", str(tmp_path / "b")],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = wait_for(lambda: next((p for p in (tmp_path / "b").glob("*") if (p / "trials").is_dir()), None),
                      what="the second sweep's folder")
    killed_run, worker_pid = wait_for(lambda: running_trial(folder), what="a trial of the second sweep")
    subprocess.run(["kill", "-KILL", str(worker_pid)], check=True)
    _, second_err = second.communicate(timeout=120)
    _, first_err = first.communicate(timeout=240)
    assert first.returncode == 0, first_err
    assert second.returncode == 1 and "was killed by SIGKILL: (no output)" in second_err, second_err
    assert second_err.endswith(f"the sweep is not finished; resume with: mnistcnn sweep --resume {folder}"
                               + (f" --storage {shown(shared_storage, password='PASSWORD')}\n"
                                  if "@" in shared_storage else "\n")), second_err

    status = run_sweep(mnistcnn_command, "--status", "--storage", shared_storage, "--study", study, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    rows = read_trials(sweep_folder(tmp_path / "a"))
    numbers = [int(row["number"]) for row in rows]
    assert len(numbers) == len(set(numbers))
    assert sum(row["status"] in ("complete", "pruned") for row in rows) == 6
    (lost,) = [row for row in rows if row["run"] == str(killed_run.resolve()) and row["status"] == "failed"]
    (retry,) = [row for row in rows if row["retry_of"] == lost["number"]]
    assert retry["status"] == "complete" and retry["train.optimizer.lr"] == lost["train.optimizer.lr"]
    assert all(row["host"] for row in rows if row["status"] == "complete")  # every trial says where it ran
    again = run_sweep(mnistcnn_command, *common, "--runs-dir", tmp_path / "c", cwd=tmp_path)
    assert again.returncode == 2 and f"study '{study}' has its 6 trials already" in again.stderr, again.stderr
    assert not (tmp_path / "c").exists()  # no new, empty sweep folder


def test_commands_printed_for_a_sweep_on_a_database_give_its_storage_again_without_its_password(tmp_path, cli,
                                                                                                postgres_url):
    # the sweep folder keeps no password, yet "resume with: mnistcnn sweep --resume DIR" left --storage out: the
    # command printed was refused with "the sweep folder keeps no password"
    from urllib.parse import urlsplit

    from mnistcnn.sweep.study import shown

    study, secret = f"test-{uuid.uuid4().hex[:12]}", f":{urlsplit(postgres_url).password}@"
    path = write_sweep(tmp_path, limit=500, epochs=1, trials=1)
    runs = tmp_path / "runs"
    first = cli("sweep", path, "--jobs", 1, "--storage", postgres_url, "--study", study, "--runs-dir", runs)
    assert first.exit_code == 0, first.output
    folder, again = sweep_folder(tmp_path / "runs"), shown(postgres_url, password="PASSWORD")
    kept = (folder / "sweep.yaml").read_text()
    assert kept.startswith(f"# resolved from {path}; resume with mnistcnn sweep --resume {folder} --storage {again}\n")
    finished = cli("sweep", "--resume", folder, "--storage", postgres_url)
    assert f"Its trials: mnistcnn sweep --status {folder} --storage {again};" in finished.output, finished.output
    full = cli("sweep", path, "--storage", postgres_url, "--study", study, "--runs-dir", runs)
    assert f"see them with mnistcnn sweep --status --storage {again} --study {study}," in full.output, full.output
    given = cli("sweep", folder)  # the folder given as a sweep file
    assert given.output.endswith(f"go on with it: mnistcnn sweep --resume {folder} --storage {again}, or see its "
                                 f"trials: mnistcnn sweep --status {folder} --storage {again}\n"), given.output
    listed = cli("runs", runs)  # the trials run here, and where the study's others are
    assert (f"sweep {folder.name}: its trials are in {folder / 'trials'}/; those run here, of a study kept in "
            f"{shown(postgres_url)}: all of them with mnistcnn sweep --status {folder} --storage {again}\n") \
        in listed.output, listed.output
    assert secret not in kept + finished.output + full.output + given.output + listed.output
    status = cli("sweep", "--status", folder, "--storage", again.replace(":PASSWORD@", secret))  # as the user types it
    assert status.exit_code == 0 and f"study {study}: 1 of 1 trial" in status.output, status.output


class Gateway:
    """A TCP relay to the PostgreSQL server of ``url``, at ``self.url``: ``down()`` closes every
    connection through it and refuses new ones (the database gone, as the sweep sees it), ``up()``
    lets them through again on the same port."""

    def __init__(self, url: str):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.server = (parts.hostname, parts.port or 5432)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = parts._replace(netloc=f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{self.port}").geturl()
        self.sockets, self.lock = [], threading.Lock()
        threading.Thread(target=self.accept, args=(self.listener,), daemon=True).start()

    def accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # down() closed it
                return
            server = socket.create_connection(self.server)
            with self.lock:
                self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self.relay, args=(source, target), daemon=True).start()

    @staticmethod
    def relay(source, target):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def down(self):
        with contextlib.suppress(OSError):  # wakes the thread in accept(), which close() alone would leave listening
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for end in self.sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            self.sockets = []

    def up(self):
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self.accept, args=(self.listener,), daemon=True).start()


def test_a_database_that_restarts_is_waited_for_and_one_gone_longer_is_one_line(postgres_url):
    # a database restarted under a sweep ended it with Optuna's traceback, and the workers with it
    from mnistcnn.sweep import study as studies

    gateway = Gateway(postgres_url)
    storage = studies.open_storage(studies.Storage(gateway.url, "--storage DB"), heartbeat=5)
    before = len(storage.get_all_studies())  # a connection in the pool, which down() breaks
    gateway.down()
    threading.Timer(1.5, gateway.up).start()
    assert len(storage.get_all_studies()) == before  # waited for the database to come back
    gateway.down()
    with pytest.raises(studies.StorageLost) as lost:
        with studies.storage_answering("--storage DB", "resume it then"):
            storage.get_all_studies()
    assert re.fullmatch(r"--storage DB: the database stopped answering \([^\n]+\); resume it then", str(lost.value))


def test_a_sweep_whose_database_is_gone_stops_in_one_line_and_resumes_once_it_is_back(tmp_path, mnistcnn_command,
                                                                                      postgres_url, wait_for):
    from mnistcnn.sweep.study import shown

    gateway, study = Gateway(postgres_url), f"test-{uuid.uuid4().hex[:12]}"
    path = write_sweep(tmp_path, limit=6000, epochs=3, trials=3, heartbeat=2)
    process = subprocess.Popen([*mnistcnn_command, "sweep", str(path), "--jobs", "1", "--storage", gateway.url,
                                "--study", study, "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = wait_for(lambda: next((p for p in (tmp_path / "runs").glob("*") if (p / "trials").is_dir()), None),
                      what="the sweep folder")
    wait_for(lambda: running_trial(folder), what="a trial past its first epoch")
    gateway.down()
    _, err = process.communicate(timeout=120)
    resume = f"mnistcnn sweep --resume {folder} --storage {shown(gateway.url, password='PASSWORD')}"
    assert process.returncode == 1 and re.fullmatch(
        rf"error: --storage {re.escape(shown(gateway.url))}: the database stopped answering \([^\n]+\); the running "
        rf"trials checkpoint; once it answers again: {re.escape(resume)}\n", err), err
    (log,) = folder.glob("workers/*.log")  # the worker stops on its own, told to and without the database
    wait_for(lambda: log.read_text().strip().endswith("this worker stopped; resume the sweep once it answers again"),
             what="the worker's own line")
    assert "Traceback" not in log.read_text(), log.read_text()
    (trial_log,) = folder.glob("trials/*/train.log")
    assert "StorageInternalError" not in trial_log.read_text(), trial_log.read_text()
    gateway.up()
    done = run_sweep(mnistcnn_command, "--resume", folder, "--storage", gateway.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sum(row["status"] in ("complete", "pruned") for row in read_trials(folder)) == 3


BAD_SWEEPS = [
    ({"space": {"train.optimizr.lr": {"type": "float", "low": 0.01, "high": 0.1}}},
     "space[train.optimizr.lr]: train.optimizr: unknown key; did you mean 'optimizer'?"),
    ({"space": {"train.optimizer.lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "low must be below high"),
    ({"space": {"train.optimizer.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}},
     "log: true needs low > 0"),
    ({"space": {"train.optimizer.lr": {"type": "float", "low": -1.0, "high": 0.1}}},
     "space[train.optimizer.lr] = -1.0: train.optimizer.lr: must be > 0"),
    ({"space": {"model.layers[0].filters": {"type": "float", "low": 2, "high": 8}}},
     "space[model.layers[0].filters].type: model.layers[0].filters takes whole numbers"),
    ({"space": {"train.lr": {"type": "float", "low": 0.01, "high": 0.1}}},  # as a config file's key is told
     "space[train.lr]: train.lr: unknown key; it belongs in train.optimizer: did you mean 'train.optimizer.lr'?"),
    ({"space": {}}, "space: give at least one config key to search"),
    ({"sampler": "bayes"}, "sampler: must be one of tpe, random, grid; got 'bayes'"),
    ({"sampler": "grid"}, "the grid sampler takes choices, or ranges with a step"),
    ({"base": "missing.yaml"}, "missing.yaml: config file not found; base 'missing.yaml' is read from the sweep file's "
                                  "folder"),
    ({"trials": 0}, "trials: must be 1 to 100000"),
    ({"pruner": {"type": "median", "warmup": 2}}, "pruner.warmup: unknown key; did you mean 'warmup_epochs'?"),
    ({"objective": {"metric": "test_acc"}}, "objective.metric: must be one of val_acc, val_loss"),
    ({"pruner": {"type": "median", "warmup_epochs": 3}}, "pruner.warmup_epochs: 3 leaves nothing to prune"),
    ({"prunner": {"type": "median"}}, "sweep.yaml: prunner: unknown key; did you mean 'pruner'?"),
    ({"storage": 5}, "sweep.yaml: storage: must be text or null (null: a SQLite file in the sweep folder; else a "
                     "PostgreSQL/MySQL/SQLite URL"),
    ({"study": ["s1"]}, "sweep.yaml: study: must be text or null (the study's name in the storage"),
    ({"study": " "}, "sweep.yaml: study: is empty; give a value (the study's name in the storage"),  # 'must be text'
    ({"name": "../escape"}, "sweep.yaml: name: run name '../escape': use 1-64 letters, digits, '.', '_' or '-' (no "
                            "path separators, no '..'), e.g. name: lr-search"),
    ({"space": {"train.optimizer.beta1": {"type": "float", "low": 0.8, "high": 0.95}}},
     "sweep.yaml: space[train.optimizer.beta1]: train.optimizer.beta1 acts only with optimizer adam or adamw (the base "
     "config has optimizer sgd); remove it from the space, or set train.optimizer.type to adam or adamw in the base "
     "config, or search it"),
    ({"space": {"train.optimizer.type": {"type": "choice", "values": ["sgd"]},
                "train.optimizer.eps": {"type": "float", "low": 1e-8, "high": 1e-6}}},
     "space[train.optimizer.eps]: train.optimizer.eps acts only with optimizer adam or adamw (the space searches "
     "train.optimizer.type over sgd); remove it from the space, or add adam or adamw to "
     "space[train.optimizer.type].values"),
    ({"sampler": "grid", "space": {"train.optimizer.type": {"type": "choice", "values": ["sgd", "adam"]},
                                   "train.optimizer.momentum": {"type": "choice", "values": [0.5, 0.9]}}},
     "space[train.optimizer.momentum]: train.optimizer.momentum acts only with optimizer sgd, so the grid sampler "
     "would train each trial with optimizer adam once for each of its values; use sampler: tpe or random"),
    ({"space": {"train.schedule.type": {"type": "choice", "values": ["onecycle"]},
                "train.optimizer.momentum": {"type": "float", "low": 0.5, "high": 0.9}}},
     "space[train.optimizer.momentum]: train.optimizer.momentum does nothing with schedule onecycle and "
     "train.schedule.cycle_momentum true in any trial: the schedule sets it every step, from "
     "train.schedule.max_momentum to base_momentum and back; remove it from the space, or set "
     "train.schedule.base_momentum and max_momentum instead, or set train.schedule.cycle_momentum to false"),
    ({"sampler": "grid", "space": {"train.schedule.type": {"type": "choice", "values": ["cosine", "onecycle"]},
                                   "train.optimizer.momentum": {"type": "choice", "values": [0.5, 0.9]}}},
     "space[train.optimizer.momentum]: train.optimizer.momentum does nothing with schedule onecycle and "
     "train.schedule.cycle_momentum true, so the grid sampler would train each trial with schedule onecycle and "
     "train.schedule.cycle_momentum true once for each of its values; use sampler: tpe or random"),
]


def test_a_grid_holds_each_step_of_a_range_both_ends_included(tmp_path):
    from mnistcnn.sweep.space import load_sweep

    path = write_sweep(tmp_path, sampler="grid", trials=100, space={
        "train.optimizer.lr": {"type": "float", "low": 0.01, "high": 0.05, "step": 0.01},
        "model.layers[0].filters": {"type": "int", "low": 3, "high": 7, "step": 2}})
    sweep = load_sweep(path)
    grid = sweep.grid()
    assert grid["train.optimizer.lr"] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert grid["model.layers[0].filters"] == [3, 5, 7]
    assert all(type(value) is int for value in grid["model.layers[0].filters"])
    assert sweep.trials == 15  # a grid has no more points to try than it holds
    # the folder's copy of the sweep file, which --resume reads, is the same grid
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(sweep.to_yaml()))
    assert load_sweep(copy).grid() == grid


def test_a_range_s_step_and_log_scale_are_what_the_sampler_draws_from(tmp_path):
    import optuna

    from mnistcnn.sweep.space import load_sweep

    path = write_sweep(tmp_path, space={
        "train.optimizer.lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
        "model.layers[0].filters": {"type": "int", "low": 3, "high": 7, "step": 2}})
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    for parameter in load_sweep(path).parameters:
        parameter.suggest(trial)
    assert trial.distributions["train.optimizer.lr"] == optuna.distributions.FloatDistribution(0.01, 0.2, log=True)
    assert trial.distributions["model.layers[0].filters"] == optuna.distributions.IntDistribution(3, 7, step=2)


def test_a_key_that_acts_only_with_some_choices_is_drawn_only_in_their_trials(tmp_path):
    # as Optuna's define-by-run examples: momentum is suggested only in the trials that drew sgd
    import optuna

    from mnistcnn import config as cfg
    from mnistcnn.sweep.space import load_sweep

    path = write_sweep(tmp_path, space={"train.optimizer.momentum": {"type": "float", "low": 0.5, "high": 0.8},
                                        "train.optimizer.type": {"type": "choice", "values": ["sgd", "adam"]}})
    base = tmp_path / "base.yaml"
    base.write_text(base.read_text().replace("type: sgd, lr: 0.05", "type: sgd, lr: 0.05, momentum: 0.7"))
    sweep = load_sweep(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(10):
        trial = study.ask()
        values = sweep.suggest(trial)
        optimizer = values["train.optimizer.type"]
        drawn.add(optimizer)
        assert ("train.optimizer.momentum" in trial.params) == (optimizer == "sgd"), trial.params
        config = sweep.trial_config(values, "trial", 1)
        # an adam trial leaves the base's sgd momentum at its default: its config.yaml and best-trial.yaml train
        # again as they are, not refused for a momentum that did not act
        assert config["train"]["optimizer"]["momentum"] == (values.get("train.optimizer.momentum") or 0.9)
        assert cfg.from_raw(cfg.parse_yaml(cfg.dump(config), "best-trial.yaml"), "best-trial.yaml") == config
        study.tell(trial, 0.5)
    assert drawn == {"sgd", "adam"}
    assert sweep.drawn_only_with("train.optimizer.momentum") == "only with optimizer sgd"
    assert sweep.drawn_only_with("train.optimizer.type") == sweep.drawn_only_with("train.optimizer.lr") == ""


def test_a_momentum_that_onecycle_overwrites_is_drawn_only_in_the_trials_of_other_schedules(tmp_path):
    import optuna

    from mnistcnn.sweep.space import load_sweep

    path = write_sweep(tmp_path, space={
        "train.optimizer.momentum": {"type": "float", "low": 0.5, "high": 0.8},
        "train.optimizer.nesterov": {"type": "choice", "values": [True, False]},
        "train.schedule.type": {"type": "choice", "values": ["cosine", "onecycle"]}})
    sweep = load_sweep(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(10):
        trial = study.ask()
        values = sweep.suggest(trial)
        drawn.add(values["train.schedule.type"])
        assert ("train.optimizer.momentum" in trial.params) == (values["train.schedule.type"] == "cosine")
        assert "train.optimizer.nesterov" in trial.params  # the default momentum, 0.9, is above 0 in either
        sweep.trial_config(values, "trial", 1)
        study.tell(trial, 0.5)
    assert drawn == {"cosine", "onecycle"}
    assert sweep.drawn_only_with("train.optimizer.momentum") == (
        "not with schedule onecycle and train.schedule.cycle_momentum true")


def test_a_sweep_folder_from_before_the_acting_rule_still_loads(tmp_path):
    from mnistcnn.sweep.space import load_sweep

    path = write_sweep(tmp_path, space={"train.optimizer.beta1": {"type": "float", "low": 0.8, "high": 0.95}})
    base = tmp_path / "base.yaml"  # a base config that set adam's beta2 for sgd, searching beta1 as well
    base.write_text(base.read_text().replace("type: sgd, lr: 0.05", "type: sgd, lr: 0.05, beta2: 0.99"))
    with pytest.raises(ConfigError, match="train.optimizer.beta2 acts only with optimizer adam or adamw"):
        load_sweep(path)
    sweep = load_sweep(path, of_folder=True)  # as --resume, --status and its workers read its folder's copy
    assert sweep.suggest(__import__("optuna").create_study().ask()) == {}


def test_a_sweep_file_s_defaults(tmp_path):
    from mnistcnn.sweep.space import load_sweep

    path = write_sweep(tmp_path, name="lr-search", objective={"metric": "val_loss"})
    settings = yaml.safe_load(path.read_text())
    del settings["sampler"], settings["pruner"]
    path.write_text(yaml.safe_dump(settings))
    sweep = load_sweep(path)
    assert (sweep.sampler, sweep.pruner, sweep.startup_trials, sweep.warmup_epochs) == ("tpe", "median", 5, 1)
    assert (sweep.direction, sweep.study, sweep.heartbeat) == ("minimize", "lr-search", 30)


SPACE_REFUSED = [
    ({"type": "float", "low": 0.01, "high": 2.0e12}, "space[train.optimizer.lr] = 2000000000000.0: "
                                                      "train.optimizer.lr: must be <= 1e+12"),
    ({"type": "float", "low": float("nan"), "high": 0.1}, "space[train.optimizer.lr].low: must be a number; got nan"),
    ({"type": "float", "low": True, "high": 0.1}, "space[train.optimizer.lr].low: must be a number; got True"),
    ({"type": "choice", "values": []}, "space[train.optimizer.lr].values: a choice needs a non-empty list of values"),
    ({"type": "choice", "values": [0.1], "low": 0.01}, "space[train.optimizer.lr].low: a choice takes only values"),
    ({"type": "float", "low": 0.01, "high": 0.1, "values": [0.1]},
     "space[train.optimizer.lr].values: only a choice takes values; a float takes low and high"),
    ({"type": "float", "low": 0.01, "high": 0.1, "log": "yes"}, "space[train.optimizer.lr].log: must be true or false"),
    ({"type": "float", "low": 0.01, "high": 0.1, "step": 0}, "space[train.optimizer.lr].step: must be above 0"),
    ({"type": "float", "low": 0.01, "high": 0.1, "step": 0.01, "log": True},
     "space[train.optimizer.lr].step: must be above 0, and not with log: true"),
    ({"type": "float", "low": 0.1, "high": 0.1}, "space[train.optimizer.lr]: low must be below high"),
]


@pytest.mark.parametrize("spec, message", SPACE_REFUSED, ids=[m[27:60] for _, m in SPACE_REFUSED])
def test_a_searched_range_that_cannot_be_searched_is_refused(tmp_path, spec, message):
    from mnistcnn.sweep.space import load_sweep

    with pytest.raises(ConfigError) as refused:
        load_sweep(write_sweep(tmp_path, space={"train.optimizer.lr": spec}))
    assert f"sweep.yaml: {message}" in str(refused.value)


@pytest.mark.parametrize("settings, message", [
    ({"trials": 100_001}, "trials: must be 1 to 100000"),
    ({"heartbeat": 0}, "heartbeat: must be 1 or more"),
    ({"sampler": "grid", "space": {"train.optimizer.lr": {"type": "float", "low": 0.001, "high": 0.2, "step": 1e-6}}},
     "space: the grid has 199,001 points, over 100,000"),
])
def test_a_sweep_setting_out_of_its_range_is_refused(tmp_path, settings, message):
    from mnistcnn.sweep.space import load_sweep

    with pytest.raises(ConfigError) as refused:
        load_sweep(write_sweep(tmp_path, **settings))
    assert f"sweep.yaml: {message}" in str(refused.value)


def test_a_training_config_given_for_a_sweep_file_says_which_it_is(tmp_path):
    from mnistcnn.sweep.space import load_sweep

    write_sweep(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_sweep(tmp_path / "base.yaml")
    assert "base.yaml: is a training config, not a sweep file; train it with" in str(refused.value)


def test_a_default_pruner_warm_up_that_leaves_nothing_to_prune_says_it_is_the_default(tmp_path, cli):
    path = write_sweep(tmp_path, epochs=1, pruner={"type": "median"})
    result = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "pruner.warmup_epochs: 1 (the default) leaves nothing to prune in the base " \
                                      "config's 1 epoch;" in result.output, result.output
    both = write_sweep(tmp_path, epochs=1, pruner={"type": "median"},
                       space={"train.optimizer.lr": {"type": "float", "low": -1.0, "high": 0.1}})
    first = cli("sweep", both, "--runs-dir", tmp_path / "runs")
    assert first.exit_code == 2 and "must be > 0" in first.output  # a mistake in the space comes first


@pytest.mark.parametrize("settings, message", BAD_SWEEPS, ids=[m[:40] for _, m in BAD_SWEEPS])
def test_a_bad_sweep_file_gets_one_line_and_nothing_is_written(tmp_path, cli, settings, message):
    path = write_sweep(tmp_path, **settings)
    for options in ((), ("--dry-run",)):
        result = cli("sweep", path, "--runs-dir", tmp_path / "runs", *options)
        assert result.exit_code == 2
        assert result.output.startswith(f"error: {path}: ") and result.output.count("\n") == 1, result.output
        assert message in result.output
        assert not (tmp_path / "runs").exists()


def test_a_storage_file_in_a_missing_folder_is_refused_by_the_dry_run_too(tmp_path, cli):
    path = write_sweep(tmp_path)
    for storage in (tmp_path / "nowhere" / "study.journal", f"sqlite:///{tmp_path / 'nowhere' / 'study.db'}"):
        for options in ((), ("--dry-run",)):
            result = cli("sweep", path, "--storage", storage, "--runs-dir", tmp_path / "runs", *options)
            assert result.exit_code == 2 and f"the folder {tmp_path / 'nowhere'} does not exist; create it" in \
                result.output, result.output
            assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("signum,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_the_study_is_made_leaves_no_sweep_folder(tmp_path, cli, monkeypatch, signum, code,
                                                                 signals_raise):
    from mnistcnn.sweep import study as studies

    real = studies.open_study

    def signalled(*args, **kwargs):  # the sweep folder exists; its SQLite study is being made
        signal.raise_signal(getattr(signal, signum))
        return real(*args, **kwargs)

    monkeypatch.setattr(studies, "open_study", signalled)
    result = cli("sweep", write_sweep(tmp_path), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == code and result.output == "error: interrupted\n", result.output
    assert list((tmp_path / "runs").iterdir()) == []  # not a folder that --status and --resume refuse


@pytest.mark.parametrize("after", [False, True], ids=["before-its-sweep-file", "before-its-study"])
def test_a_kill_as_the_sweep_folder_is_set_up_leaves_no_folder_in_sight(tmp_path, cli, killed_as_it_writes,
                                                                        left_out_of_sight, after):
    # the folder was made under its own name first: killed before its sweep.yaml was in, `runs` passed it over and
    # --resume refused it ("not a sweep folder"); killed before its study was made, --resume said "study 'tiny' is
    # not in the storage"
    from mnistcnn.sweep import launch
    from mnistcnn.sweep.space import load_sweep

    path, runs = write_sweep(tmp_path, limit=500, epochs=1, trials=1), tmp_path / "runs"
    killed = killed_as_it_writes("sweep.yaml", "sweep", path, "--runs-dir", runs, after=after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left_out_of_sight(runs)  # the next sweep removes it once no process has touched it for a while
    folder = launch.SweepRun.start(load_sweep(path), runs).sweep_dir.path
    assert list(runs.iterdir()) == [folder]
    # what the folder records names it where it is now, not where it was set up
    assert f"resume with mnistcnn sweep --resume {folder}\n" in (folder / "sweep.yaml").read_text()
    status = cli("sweep", "--status", folder)
    assert status.exit_code == 0 and "study tiny: 0 of 1 trials done" in status.output, status.output


def fake_trial(state, number=0, value=None, params=None, **attrs):
    """An Optuna trial as the sweep's reports read it: ``state`` its state's name, ``attrs`` its user attributes."""
    start = dt.datetime(2026, 1, 1)
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), value=value, user_attrs=attrs,
                           params={"train.epochs": 3, "train.optimizer.lr": 0.05} if params is None else params,
                           intermediate_values={1: 0.5}, datetime_start=start,
                           datetime_complete=start + dt.timedelta(seconds=2))


class PrunedEveryEpoch:
    """An Optuna trial as a TrialReporter sees it: the values reported, and a pruner that says
    prune at every epoch."""

    def __init__(self):
        self.reported = []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return True


def test_a_trial_is_pruned_before_its_last_epoch_never_after_it():
    from mnistcnn.callbacks import Pruned
    from mnistcnn.sweep.worker import TrialReporter

    trial = PrunedEveryEpoch()
    reporter = TrialReporter(trial, "val_acc", stopping=lambda: False, origin="--storage DB")
    reporter.epochs = 3  # as on_start reads it from the trainer
    row = {"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "lr": 0.1, "seconds": 1.0, "images_per_s": 100.0}
    with pytest.raises(Pruned, match="pruned at epoch 2: val_acc 50.00%"):
        reporter.on_epoch_end({**row, "epoch": 2, "val_acc": 0.5})
    reporter.on_epoch_end({**row, "epoch": 3, "val_acc": 0.6})  # trained whole: complete, with its value
    assert trial.reported == [(2, 0.5), (3, 0.6)]


def database_gone() -> Exception:
    """Optuna's error for a commit to a database that stopped answering, raised from SQLAlchemy's."""
    import optuna
    from sqlalchemy.exc import OperationalError

    try:
        try:
            raise OperationalError("INSERT", {}, ConnectionRefusedError("Connection refused"))
        except OperationalError as err:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from err
    except optuna.exceptions.StorageInternalError as err:
        return err


def test_a_database_gone_as_a_trial_reports_its_epoch_is_named_in_the_trial_s_log():
    """The trial's train.log said Optuna's 'invalid data in the commit, e.g. exceeding max length'."""
    from mnistcnn.sweep.study import StorageLost
    from mnistcnn.sweep.worker import TrialReporter

    class Unreachable:
        def report(self, value, step):
            raise database_gone()

    reporter = TrialReporter(Unreachable(), "val_acc", stopping=lambda: False, origin="--storage DB")
    reporter.epochs = 3
    with pytest.raises(StorageLost, match=r"^--storage DB: the database stopped answering \(.*Connection refused\); "
                                          "this worker stopped; resume the sweep once it answers again$"):
        reporter.on_epoch_end({"epoch": 1, "val_acc": 0.5, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0,
                               "lr": 0.1, "seconds": 1.0, "images_per_s": 100.0})


def test_a_database_gone_under_the_heartbeat_thread_is_one_line_in_the_worker_s_log(capsys):
    """Optuna's heartbeat thread died with three chained tracebacks in the worker's log."""
    from mnistcnn.sweep.worker import report_lost_database

    before = threading.excepthook
    try:
        report_lost_database("--storage DB")

        def beat():
            raise database_gone()

        thread = threading.Thread(target=beat)
        thread.start()
        thread.join()
    finally:
        threading.excepthook = before
    err = capsys.readouterr().err
    assert re.fullmatch(r"warning: --storage DB: the database stopped answering \([^\n]*\); the running trial's "
                        r"heartbeat stopped\n", err), err


def test_a_trials_value_is_its_best_epochs():
    from mnistcnn.sweep.worker import best_value

    history = [{"val_acc": 0.5, "val_loss": 0.9}, {"val_acc": 0.8, "val_loss": 0.4}, {"val_acc": 0.6, "val_loss": 0.7}]
    assert best_value(history, "val_acc", "maximize") == 0.8 and best_value(history, "val_loss", "minimize") == 0.4


def test_the_median_pruner_prunes_only_after_the_warm_up_epochs():
    import optuna

    from mnistcnn.sweep.study import make_pruner

    sweep = SimpleNamespace(pruner="median", startup_trials=1, warmup_epochs=2, base={"train": {"epochs": 5}})
    study = optuna.create_study(direction="maximize", pruner=make_pruner(sweep))
    good = study.ask()
    for epoch in range(1, 6):
        good.report(0.9, epoch)
    study.tell(good, 0.9)
    poor, pruned_at = study.ask(), []
    for epoch in range(1, 6):
        poor.report(0.1, epoch)
        if poor.should_prune():
            pruned_at.append(epoch)
    assert pruned_at == [3, 4, 5]  # epochs 1 and 2 are the warm-up


def test_the_hyperband_pruner_prunes_only_after_the_warm_up_epochs():
    import optuna

    from mnistcnn.sweep.study import make_pruner

    sweep = SimpleNamespace(pruner="hyperband", warmup_epochs=2, base={"train": {"epochs": 9}})
    # the study's name decides which bracket a trial falls in: a fixed one, for the same brackets each time
    study = optuna.create_study(study_name="hyperband", direction="maximize", pruner=make_pruner(sweep))
    pruned_at = []
    for number in range(30):  # every other trial poor from its first epoch
        trial, value = study.ask(), 0.9 if number % 2 == 0 else 0.1
        for epoch in range(1, 10):
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned_at.append(epoch)
                break
        else:
            study.tell(trial, value)
    assert pruned_at and min(pruned_at) == 3  # epochs 1 and 2 are the warm-up


def test_two_workers_of_a_sweep_draw_their_own_values_and_a_worker_draws_its_own_again():
    import optuna

    from mnistcnn.sweep.study import make_sampler

    sweep = SimpleNamespace(seed=0, sampler="random")

    def draws(seed_key):
        study = optuna.create_study(sampler=make_sampler(sweep, seed_key))
        return [study.ask().suggest_float("train.optimizer.lr", 1e-3, 1.0, log=True) for _ in range(3)]

    assert draws("1") == draws("1") != draws("2")


def test_a_database_whose_tables_stay_half_made_is_one_line_after_the_last_attempt(monkeypatch):
    # workers racing to create the tables retry; a table that keeps "already existing" ends in one line
    import optuna

    from mnistcnn.sweep import study as studies

    def racing(*args, **kwargs):
        raise RuntimeError('relation "studies" already exists')

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(studies.time, "sleep", lambda seconds: None)
    storage = studies.Storage("postgresql://db.example/sweeps", "--storage postgresql://db.example/sweeps")
    with pytest.raises(UsageError, match="^--storage postgresql://db.example/sweeps: cannot open the database: "
                                         'relation "studies" already exists; '):
        studies.open_storage(storage, heartbeat=60)


def test_a_study_is_refused_to_a_sweep_file_with_another_space_and_taken_by_the_same_one(tmp_path):
    import optuna

    from mnistcnn.sweep.space import load_sweep
    from mnistcnn.sweep.study import open_study

    storage = optuna.storages.InMemoryStorage()
    open_study(load_sweep(write_sweep(tmp_path)), storage, create=True)
    open_study(load_sweep(write_sweep(tmp_path)), storage)  # a second machine with the same file
    other = write_sweep(tmp_path, space={"train.optimizer.lr": {"type": "float", "low": 0.001, "high": 0.01}})
    with pytest.raises(UsageError, match="^study 'tiny' was started by another sweep file .*; give another --study"):
        open_study(load_sweep(other), storage, create=True)


def test_a_trial_stopped_by_a_nan_is_diverged_not_pruned():
    from mnistcnn.sweep.study import trial_status

    trial = fake_trial
    assert trial_status(trial("PRUNED", diverged=True, reason="non-finite loss")) == "diverged"
    assert trial_status(trial("PRUNED", reason="pruned at epoch 2")) == "pruned"
    assert trial_status(trial("FAIL", stopped=True)) == "stopped" and trial_status(trial("COMPLETE")) == "complete"
    from mnistcnn.cli import sweep_headline
    from mnistcnn.sweep.launch import Snapshot
    from mnistcnn.sweep.study import states

    ended = [trial("PRUNED", 0, diverged=True), trial("PRUNED", 1), trial("COMPLETE", 2),
             trial("FAIL", 3, stopped=True)]
    snapshot = Snapshot([], states(ended), None, 0, trials=4)
    assert snapshot.done == 3 and not snapshot.finished  # the stopped one is queued again
    assert sweep_headline(SimpleNamespace(trials=4), snapshot).startswith(
        "3/4 trials done (1 complete, 1 pruned, 1 diverged), 0 running, 0 failed, 1 stopped by a signal")
    resumed = Snapshot([], states(ended + [trial("COMPLETE", 4, retry_of=3)]), None, 0, trials=4)
    assert resumed.finished and resumed.counts["stopped"] == 0
    twice = ended + [trial("FAIL", 4, stopped=True, retry_of=3)]  # its resumption stopped too
    assert states(twice)["stopped"] == 1 and states(twice + [trial("COMPLETE", 5, retry_of=4)])["stopped"] == 0


def running_study(heartbeat_ago: dict):
    """An in-memory study (no Optuna heartbeat, as a journal file's) with a running trial per
    entry: its name, and the heartbeats ago it was last marked alive (``Pulse``'s attribute)."""
    import time

    import optuna

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="retries")
    trials = {}
    for name, ago in heartbeat_ago.items():
        trial = study.ask()
        trial.suggest_float("train.optimizer.lr", 0.01, 0.1)
        for key, value in {"run_dir": f"runs/{name}", "host": "this", "alive": time.time() - 10 * ago}.items():
            trial.set_user_attr(key, value)
        trials[name] = trial.number
    return study, storage, trials


def test_a_trial_whose_worker_went_silent_is_failed_and_retried_once_from_its_run(tmp_path):
    import optuna

    from mnistcnn.sweep.study import STALE_HEARTBEATS, fail_stale, retry_trial

    # a beat a little late (a busy machine) is not a silence: only more than STALE_HEARTBEATS beats missed are
    study, storage, trials = running_study({"silent": STALE_HEARTBEATS + 1, "late": STALE_HEARTBEATS - 0.5})
    fail_stale(study, storage, heartbeat=10)
    by_number = {trial.number: trial for trial in study.get_trials()}
    silent, late = by_number[trials["silent"]], by_number[trials["late"]]
    assert (silent.state, late.state) == (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING)
    (retry,) = [trial for trial in study.get_trials() if trial.state == optuna.trial.TrialState.WAITING]
    assert retry.user_attrs == {"retry_of": silent.number, "resume_from": "runs/silent", "resume_host": "this"}
    assert retry.system_attrs["fixed_params"] == silent.params
    retry_trial(study, silent)  # told again (another worker's heartbeat check): still one retry
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1


def test_unfinished_trials_of_this_machine_are_retried_others_are_left_to_their_workers(monkeypatch):
    import optuna

    from mnistcnn.sweep import study as studies

    gone = subprocess.Popen(["true"])  # a worker that is gone: its pid is no one's
    gone.wait()
    study, storage, trials = running_study({"orphaned": 0, "alive": 0, "elsewhere": 0, "stopped": 0, "broken": 0})
    for name, pid in {"orphaned": gone.pid, "alive": os.getpid(), "elsewhere": gone.pid}.items():
        storage.set_trial_user_attr(trials[name], "pid", pid)
    storage.set_trial_user_attr(trials["elsewhere"], "host", "another")  # its pid means nothing here
    storage.set_trial_user_attr(trials["broken"], "error", "the config failed")  # a retry would fail alike
    for name in ("stopped", "broken"):  # "stopped": cut short by a second Ctrl-C
        study.tell(trials[name], state=optuna.trial.TrialState.FAIL)
    monkeypatch.setattr(studies, "host", lambda: "this")
    studies.retry_unfinished(study)
    retried = {trial.user_attrs["retry_of"] for trial in study.get_trials() if "retry_of" in trial.user_attrs}
    assert retried == {trials["orphaned"], trials["stopped"]}
    states = {trial.number: trial.state.name for trial in study.get_trials()}
    assert [states[trials[name]] for name in ("orphaned", "alive", "elsewhere")] == ["FAIL", "RUNNING", "RUNNING"]


def test_a_stopped_trial_counts_as_stopped_until_its_resumption_ends_and_a_surplus_draw_not_at_all():
    from mnistcnn.sweep.study import states

    trial = fake_trial
    stopped = [trial("COMPLETE", 0), trial("FAIL", 1, stopped=True), trial("FAIL", 2, surplus=True)]
    assert states(stopped)["stopped"] == 1 and states(stopped)["failed"] == 0  # a surplus draw never ran
    for state, status in (("WAITING", "queued"), ("RUNNING", "running")):
        counts = states(stopped + [trial(state, 3, retry_of=1)])
        assert (counts["stopped"], counts[status]) == (1, 1)  # its resumption has not ended yet
    assert states(stopped + [trial("COMPLETE", 3, retry_of=1)])["stopped"] == 0


def test_the_best_trial_s_run_on_another_machine_is_named_with_that_machine(tmp_path):
    # every machine of a shared study writes the study's best trial; its run, in another machine's folders, was
    # named by its path alone, as if it were here
    from mnistcnn.sweep.folder import SweepDir
    from mnistcnn.sweep.report import trial_rows, write_reports
    from mnistcnn.sweep.space import load_sweep
    from mnistcnn.sweep.study import host

    config, params = {"name": "trial-000"}, {"train.optimizer.lr": 0.05, "model.layers[0].filters": 4}
    trials = [fake_trial("COMPLETE", 0, 0.9, params, host="elsewhere", run_dir="/runs/s/trials/trial-000",
                         config=config),
              fake_trial("COMPLETE", 1, 0.8, params, host=host(), run_dir="/runs/s/trials/trial-001", config=config)]
    rows = trial_rows(trials)
    write_reports(load_sweep(write_sweep(tmp_path)), rows, SweepDir(tmp_path))
    assert "# its run: elsewhere:/runs/s/trials/trial-000),\n" in (tmp_path / "best-trial.yaml").read_text()
    from mnistcnn.sweep.report import run_place

    assert run_place(rows[1]) == "/runs/s/trials/trial-001"  # a run of this machine: its path


def test_a_storage_file_in_the_sweep_file_is_relative_to_the_sweep_file_as_its_base_is(tmp_path, cli, monkeypatch):
    """It was relative to the working directory: the same sweep file, run from two folders, made two studies."""
    path = write_sweep(tmp_path, storage="studies.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("sweep", path, "--dry-run")
    assert result.exit_code == 0 and f"storage: the SQLite database {tmp_path / 'studies.db'}\n" in result.output, \
        result.output
    given = cli("sweep", path, "--dry-run", "--storage", "studies.db")  # an option's path: the working directory's
    assert f"storage: the SQLite database {elsewhere / 'studies.db'}\n" in given.output, given.output


def test_a_stopped_trial_and_a_searched_train_epochs_read_unmistakably(capsys):
    from rich.console import Console

    from mnistcnn.cli import SweepView, sweep_table
    from mnistcnn.sweep.launch import Snapshot
    from mnistcnn.sweep.report import parameter_names, trial_rows
    from mnistcnn.sweep.study import states

    trials = [fake_trial("FAIL", 0, stopped=True), fake_trial("RUNNING", 1, retry_of=0)]
    searched = ["train.epochs", "train.optimizer.lr", "model.layers[0].filters", "model.layers[3].filters"]
    sweep = SimpleNamespace(metric="val_acc", trials=2, parameters=[SimpleNamespace(key=key) for key in searched])
    SweepView(sweep).show(Snapshot(trial_rows(trials), states(trials), None, 1, trials=2))
    assert capsys.readouterr().out.splitlines()[0] == ("trial 0 stopped after 1 epoch, 2.0s: it goes on as trial 1 "
                                                       "(train.epochs=3, lr=0.05)")
    one = fake_trial("COMPLETE", 2, 0.9, {"model.layers[0].filters": 4})  # still names the other filters key in full
    SweepView(sweep).show(Snapshot(trial_rows([one]), states([one]), None, 0, trials=2))
    assert capsys.readouterr().out.splitlines()[0].endswith(": val_acc 90.00% (model.layers[0].filters=4)")
    console = Console(width=200, record=True)
    console.print(sweep_table(trial_rows(trials), {"metric": "val_acc", "direction": "maximize"}, ""))
    header = console.export_text().splitlines()[1].split()
    assert header == ["trial", "status", "val_acc", "epochs", "trial", "time", "test", "train.epochs", "lr"]
    # the top rows name a key as every searched key does, as the trial lines above named it
    console.print(sweep_table(trial_rows([one, fake_trial("COMPLETE", 3, 0.8)]),
                              {"metric": "val_acc", "direction": "maximize", "space": dict.fromkeys(searched)}, "",
                              top=1))
    assert "model.layers[0].filters" in console.export_text().splitlines()[1].split()
    # an accuracy in percent, beside the test column's, as `mnistcnn runs` lists the same trial; a loss as it is
    for metric, said in (("val_acc", "90.00%"), ("val_loss", "0.9000")):
        shown = Console(width=200, record=True)
        shown.print(sweep_table(trial_rows([one]), {"metric": metric, "direction": "maximize"}, ""))
        assert shown.export_text().splitlines()[3].split()[2] == said, shown.export_text()
    assert parameter_names(["model.layers[0].filters", "model.layers[3].filters", "train.batch_size"]) == {
        "model.layers[0].filters": "model.layers[0].filters", "model.layers[3].filters": "model.layers[3].filters",
        "train.batch_size": "batch_size"}


def test_dry_run_prints_the_search_and_starts_nothing(tmp_path, cli):
    path = write_sweep(tmp_path, storage="postgresql://user:secret@db.example/sweeps")
    result = cli("sweep", path, "--runs-dir", tmp_path / "runs", "--dry-run", "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert re.search(r"train\.optimizer\.lr +float +0\.01 to 0\.2, log scale", result.output), result.output
    assert re.search(r"model\.layers\[0\]\.filters +int +3 to 6", result.output), result.output
    assert "sampler random (seed 0); pruner none" in result.output and "1 job x " in result.output
    assert "postgresql://user:***@db.example/sweeps" in result.output and "secret" not in result.output
    assert not (tmp_path / "runs").exists()
    resumed = cli("sweep", "--resume", tmp_path, "--dry-run")
    assert resumed.exit_code == 2 and "--dry-run checks a sweep file before it starts" in resumed.output


@pytest.mark.parametrize("storage,kind", [("study.db", "the SQLite database"), ("study.sqlite3", "the SQLite database"),
                                          ("sqlite:///study.sqlite", "the SQLite database"),
                                          ("Study.DB", "the SQLite database"),  # capitals: the same suffix
                                          ("study.journal", "the Optuna journal file")])
def test_the_dry_run_says_which_storage_a_path_means(tmp_path, cli, monkeypatch, storage, kind):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path)
    result = cli("sweep", path, "--storage", storage, "--runs-dir", tmp_path / "runs", "--dry-run", "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert f"storage: {kind} {tmp_path / storage.removeprefix('sqlite:///')}\n" in result.output


def test_a_storage_path_named_as_a_sqlite_file_is_a_sqlite_database(tmp_path, mnistcnn_command, cli):
    path = write_sweep(tmp_path, limit=500, epochs=1, trials=1)
    database = tmp_path / "shared" / "studies.db"
    database.parent.mkdir()
    done = run_sweep(mnistcnn_command, path, "--storage", "../shared/studies.db", "--study", "s1", "--jobs", "1",
                     "--runs-dir", tmp_path / "runs", cwd=tmp_path / "shared")
    assert done.returncode == 0, done.stderr
    assert database.read_bytes().startswith(b"SQLite format 3\x00")  # not a journal file's JSON lines
    status = cli("sweep", "--status", "--storage", database, "--study", "s1")
    assert status.exit_code == 0 and "study s1: 1 of 1 trials done" in status.output, status.output


def write_journal(path: Path, study: str) -> None:
    """An Optuna journal file holding ``study`` with one complete trial."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))),
                                  study_name=study, direction="maximize")
    journal.optimize(lambda trial: trial.suggest_float("train.optimizer.lr", 0.01, 0.2, log=True), n_trials=1)


def test_a_journal_file_an_earlier_version_wrote_under_a_sqlite_name_is_read_as_a_journal(tmp_path, cli,
                                                                                         monkeypatch):
    from mnistcnn.sweep.launch import SweepRun

    monkeypatch.chdir(tmp_path)
    write_journal(tmp_path / "old.db", "s")
    status = cli("sweep", "--status", "--storage", "old.db", "--study", "s")
    assert status.exit_code == 0 and "study s: 1 trial done" in status.output, status.output
    write_sweep(tmp_path, trials=2, storage=str(tmp_path / "old.db"), study="s")  # as its sweep folder keeps it
    assert len(SweepRun.resume(tmp_path).study.trials) == 1  # which keeps the sweep's settings in the study
    from_folder = cli("sweep", "--status", tmp_path)
    assert from_folder.exit_code == 0 and "study s: 1 of 2 trials done" in from_folder.output, from_folder.output
    assert (tmp_path / "old.db").read_bytes().startswith(b"{")  # still the journal's JSON lines
    (tmp_path / "empty.db").touch()
    for storage, kind in (("old.db", "the Optuna journal file"), ("empty.db", "the SQLite database")):
        plan = cli("sweep", "sweep.yaml", "--storage", storage, "--dry-run", "--jobs", "1")
        assert f"storage: {kind} {tmp_path / storage}\n" in plan.output, plan.output


def test_status_and_resume_of_a_sweep_folder_ask_alike_for_the_password_it_does_not_keep(tmp_path, cli):
    path = write_sweep(tmp_path, storage="postgresql://user:***@localhost:1/sweeps")  # as a sweep folder keeps it
    message = (f"error: {path}: storage: postgresql://user:***@localhost:1/sweeps: the sweep folder keeps no "
               "password; give it again with --storage postgresql://user:PASSWORD@localhost:1/sweeps\n")
    for command in (("--status", tmp_path), ("--resume", tmp_path)):
        result = cli("sweep", *command)
        assert result.exit_code == 2 and result.output == message, result.output


def test_a_storage_error_names_where_the_storage_was_given_as_the_user_spelt_it(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path)  # tmp_path is a sweep folder whose study.db is gone
    folder = cli("sweep", "--status", ".")
    assert folder.output == ("error: study.db (the sweep folder's own study): no such file; give --storage the "
                             "journal or SQLite file the sweep wrote\n"), folder.output
    write_sweep(tmp_path, storage="foo://bar")
    unknown = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert unknown.output.startswith(f"error: {path}: storage: foo://bar: no database is called 'foo';"), \
        unknown.output
    write_sweep(tmp_path, storage="nowhere/study.journal")
    missing = cli("sweep", path, "--dry-run")
    assert missing.output.startswith(f"error: {path}: storage: nowhere/study.journal: the folder "
                                     f"{tmp_path / 'nowhere'} does not exist;"), missing.output
    given = cli("sweep", "--status", "--storage", "postgresql://user:secret@localhost:1/sweeps", "--study", "s1")
    assert given.output.startswith("error: --storage postgresql://user:***@localhost:1/sweeps: cannot open the "
                                   "database: "), given.output  # not the postgresql+psycopg:// it opens
    write_journal(tmp_path / "studies.journal", "s1")
    other = cli("sweep", "--status", "--storage", "studies.journal", "--study", "s2")
    assert other.output == "error: --storage studies.journal: holds no study 's2'; give --study one of: s1\n"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "study.db").exists()


def test_a_missing_sweep_file_points_at_the_examples(tmp_path, cli):
    result = cli("sweep", tmp_path / "nope.yaml", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path / 'nope.yaml'}: sweep file not found; configs/sweeps/ holds examples\n"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("storage", ["none.journal", "sqlite:///none.db"])
def test_status_of_a_storage_file_that_is_not_there_makes_none(tmp_path, cli, monkeypatch, storage):
    monkeypatch.chdir(tmp_path)
    result = cli("sweep", "--status", "--storage", storage, "--study", "s1")
    assert result.exit_code == 2 and result.output.startswith(f"error: --storage {storage}: no such file")
    assert list(tmp_path.iterdir()) == []


def test_status_of_a_sweep_file_says_what_status_reads_unless_storage_and_study_name_the_study(tmp_path, cli):
    path = write_sweep(tmp_path)
    result = cli("sweep", path, "--status")
    assert result.exit_code == 2
    assert result.output == (f"error: {path}: is a file, not a sweep folder; --status reads a sweep folder "
                             "(runs/NAME-STAMP) or --storage URL --study NAME, and mnistcnn sweep SWEEP.yaml starts a "
                             "sweep\n")
    named = cli("sweep", path, "--status", "--storage", "foo://bar", "--study", "s1")
    assert named.exit_code == 2 and named.output.startswith("error: --storage foo://bar: no database is called "
                                                            "'foo'"), named.output


def test_a_storage_url_of_no_known_database_names_the_ones_that_work(cli):
    result = cli("sweep", "--status", "--storage", "foo://bar", "--study", "s1")
    assert result.exit_code == 2 and result.output.startswith("error: --storage foo://bar: no database is called "
                                                              "'foo'; give a postgresql://"), result.output


@pytest.mark.parametrize("typed", ["postgresql:/mnistcnn:secret@dbhost/sweeps", "postgresql//mnistcnn:secret@dbhost/"
                                   "sweeps", "postgresql:mnistcnn:secret@dbhost/sweeps"])
def test_a_database_url_with_its_slashes_mistyped_is_named_as_one_without_its_password(tmp_path, cli, typed):
    """Without its '://' a URL would be a journal file's path: refused with the folder it names."""
    for command in (("sweep", write_sweep(tmp_path), "--dry-run"), ("sweep", "--status", "--study", "s1")):
        result = cli(*command, "--storage", typed)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: --storage: ") and "did you mean postgresql://mnistcnn:***@dbhost/" \
            "sweeps?" in result.output and "secret" not in result.output, result.output
    in_the_file = cli("sweep", write_sweep(tmp_path, storage=typed), "--dry-run")
    assert in_the_file.output.startswith(f"error: {tmp_path / 'sweep.yaml'}: storage: postgresql is not followed "
                                         "by '://'"), in_the_file.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["base.yaml", "sweep.yaml"]


@pytest.mark.parametrize("typed,meant", [("sqlite:/srv/studies.db", "sqlite:////srv/studies.db"),
                                         ("sqlite:studies.db", "sqlite:///studies.db"),
                                         ("sqlite//studies.db", "sqlite:///studies.db")])
def test_a_mistyped_sqlite_url_is_told_the_url_of_that_file(typed, meant):
    """sqlite://PATH (two slashes) names no file: SQLite's URL is sqlite:/// and then the path."""
    from mnistcnn.sweep.study import Storage

    with pytest.raises(UsageError, match=f"did you mean {re.escape(meant)}\\?$"):
        Storage.named(typed, "--storage")


def test_a_journal_file_in_a_folder_named_after_a_database_is_a_journal_file(tmp_path, monkeypatch):
    """One slash after the name is a folder's, not a URL's '//' mistyped."""
    from mnistcnn.sweep.study import Storage

    monkeypatch.chdir(tmp_path)
    assert Storage.named("sqlite/sweeps.journal", "--storage").url == str(tmp_path / "sqlite" / "sweeps.journal")


def test_an_empty_storage_or_study_is_refused_not_taken_for_the_default(tmp_path, cli):
    """--storage "$DB" with DB unset in this shell ran the sweep alone in a SQLite file of its own."""
    path = write_sweep(tmp_path)
    for command in ((path, "--dry-run"), (path,), ("--status", "--study", "s1")):
        result = cli("sweep", *command, "--storage", "")
        assert result.exit_code == 2 and result.output.startswith("error: --storage: is empty; give "), result.output
    for command in ((path,), (path, "--dry-run"), ("--status", "--storage", tmp_path / "study.db")):
        result = cli("sweep", *command, "--study", " ")
        assert result.exit_code == 2 and result.output.startswith("error: --study: is empty; give "), result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["base.yaml", "sweep.yaml"]


def test_a_database_whose_driver_is_missing_names_the_driver_to_install(cli):
    result = cli("sweep", "--status", "--storage", "mysql://user@localhost/db", "--study", "s1")
    assert result.exit_code == 2 and result.output.startswith("error: --storage mysql://user@localhost/db: needs the "
                                                              "database driver MySQLdb;"), result.output
    assert "pip install PyMySQL and use mysql+pymysql://" in result.output


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_takes_the_driver_the_sweep_extra_installs(cli, scheme):
    # SQLAlchemy's default for postgresql:// is psycopg2, which the extra does not install: psycopg (3) is asked instead
    result = cli("sweep", "--status", "--storage", f"{scheme}://user@127.0.0.1:1/db", "--study", "s1")
    assert result.exit_code == 2 and "needs the database driver" not in result.output, result.output
    assert "Connection refused; check the host and port" in result.output


def test_a_password_given_as_the_url_s_password_parameter_is_masked_as_one_before_the_host(cli, tmp_path):
    # libpq takes a password from ?password= too: it was printed in messages, kept in sweep.yaml and given in the
    # commands printed for the folder as it was typed
    from mnistcnn.sweep.study import folder_command, shown

    url = "postgresql://user@127.0.0.1:1/sweeps?sslmode=disable&password=secret"
    refused = cli("sweep", "--status", "--storage", url, "--study", "s1")
    assert refused.exit_code == 2 and "secret" not in refused.output, refused.output
    assert shown(url) == "postgresql://user@127.0.0.1:1/sweeps?sslmode=disable&password=***"
    again = "postgresql://user@127.0.0.1:1/sweeps?sslmode=disable&password=PASSWORD"
    assert folder_command("--resume", tmp_path, url) == f"mnistcnn sweep --resume {tmp_path} --storage '{again}'"
    kept = cli("sweep", "--status", "--storage", shown(url), "--study", "s1")  # as the sweep folder keeps it
    assert kept.exit_code == 2 and f"the sweep folder keeps no password; give it again with --storage {again}" \
        in kept.output, kept.output


def test_a_database_that_refuses_or_does_not_answer_is_one_line_that_says_what_to_do(cli, monkeypatch):
    # a server that took the connection and never answered (a firewall, a hung machine) left the command waiting
    # for ever, silent; a refusal said what PostgreSQL said and nothing of what to do
    import socket

    from mnistcnn.sweep import study as studies

    refused = cli("sweep", "--status", "--storage", "postgresql://user:secret@127.0.0.1:1/sweeps", "--study", "s1")
    assert refused.exit_code == 2 and refused.output.endswith(
        "Connection refused; check the host and port, and that PostgreSQL runs there and listens to other machines "
        "(listen_addresses in postgresql.conf)\n"), refused.output
    monkeypatch.setattr(studies, "CONNECT_SECONDS", 1)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, and never answers
        url = f"postgresql://user:secret@127.0.0.1:{silent.getsockname()[1]}/sweeps"
        waited = cli("sweep", "--status", "--storage", url, "--study", "s1")
    assert waited.exit_code == 2 and waited.output.startswith(
        f"error: --storage {studies.shown(url)}: cannot open the database: connection timeout expired; the server did "
        "not answer within"), waited.output
    at = cli("sweep", "--status", "--storage", "postgresql://user:p@ss@127.0.0.1/sweeps", "--study", "s1")
    assert at.exit_code == 2 and at.output == ("error: --storage postgresql://user:***@127.0.0.1/sweeps: the user name "
                                               "or password holds an '@', which ends them in a URL; write each '@' in "
                                               "them as %40\n"), at.output
    # an '@' in the query is no password's: the URL goes to the server (refused here), as SQLAlchemy reads it
    query = cli("sweep", "--status", "--storage", "postgresql://user:p@127.0.0.1:1/sweeps?application_name=me@x",
                "--study", "s1")
    assert query.exit_code == 2 and "Connection refused" in query.output, query.output
    assert query.output.startswith("error: --storage postgresql://user:***@127.0.0.1:1/sweeps?application_name=me@x:")


def test_only_libpq_drivers_are_given_a_connect_timeout():
    # pg8000 refuses connect_timeout, which every postgresql* URL got
    from mnistcnn.sweep.study import CONNECT_SECONDS, engine_options

    assert engine_options("postgresql+psycopg://u@h/db")["connect_args"] == {"connect_timeout": CONNECT_SECONDS}
    assert engine_options("postgresql+psycopg2://u@h/db")["connect_args"] == {"connect_timeout": CONNECT_SECONDS}
    assert "connect_args" not in engine_options("postgresql+pg8000://u@h/db")
    assert "connect_args" not in engine_options("postgresql+psycopg://u@h/db?connect_timeout=3")


def test_a_wrong_password_or_database_name_on_a_real_server_says_what_to_check(cli, postgres_url):
    from urllib.parse import urlsplit

    parts = urlsplit(postgres_url)
    wrong = postgres_url.replace(f":{parts.password}@", ":wrong@")
    password = cli("sweep", "--status", "--storage", wrong, "--study", "s1")
    assert password.exit_code == 2 and password.output.endswith(
        f'password authentication failed for user "{parts.username}"; check the user name and password in the '
        'URL\n'), password.output
    missing = cli("sweep", "--status", "--storage", parts._replace(path="/no_such_db").geturl(), "--study", "s1")
    assert missing.exit_code == 2 and missing.output.endswith(
        'database "no_such_db" does not exist; check its name in the URL, or create it on the database machine '
        '(README: On many machines)\n'), missing.output


def test_more_jobs_than_cores_is_refused_before_anything_is_written(tmp_path, cli):
    result = cli("sweep", write_sweep(tmp_path), "--jobs", 10_000, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "--jobs 10000: this machine has" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_base_config_that_does_not_validate_is_named(tmp_path, cli):
    path = write_sweep(tmp_path)
    (tmp_path / "base.yaml").write_text("train: {epochs: -1}\n")
    result = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "base:" in result.output and "train.epochs: must be >= 1" in result.output
    assert not (tmp_path / "runs").exists()


def test_without_optuna_the_command_says_what_to_install(tmp_path, cli_without):
    result = cli_without("optuna", "sweep", write_sweep(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: mnistcnn sweep needs Optuna, which is not installed; "
                                     f"{install_extra('sweep')}")


def test_a_trial_that_ends_as_the_last_worker_exits_is_shown_before_the_sweep_ends(tmp_path, monkeypatch):
    """A worker may write its last trial's end and exit while the study is read: the snapshot that
    finds no worker running must hold that trial, so that its line is printed."""
    from mnistcnn.sweep import launch
    from mnistcnn.sweep.space import load_sweep

    run = launch.SweepRun.start(load_sweep(write_sweep(tmp_path, trials=1)), tmp_path / "runs")
    reads = []

    class Study:
        def get_trials(self, deepcopy=True):
            reads.append(len(reads))
            # the worker ends its trial and exits right after the second read
            return [fake_trial("COMPLETE", value=0.9) if len(reads) > 2 else fake_trial("RUNNING")]

    class Worker:
        def poll(self):
            return 0 if len(reads) >= 2 else None

        def send_signal(self, signum):
            pass

    run.study = Study()
    monkeypatch.setattr(run, "launch", lambda jobs, threads: run.workers.append(Worker()))
    monkeypatch.setattr(launch, "write_reports", lambda *args: None)
    monkeypatch.setattr(launch, "POLL_SECONDS", 0)
    shown = []
    snapshot, stopped = run.run_workers(1, 1, shown.append)
    assert stopped is None and snapshot.done == 1
    assert shown[-1].done == 1  # the view printed the trial's line


def test_a_worker_that_a_passed_on_signal_ends_as_python_exits_is_not_an_error(tmp_path):
    """A second Ctrl-C that reaches a worker while Python exits (its handlers reset) kills it by
    SIGINT: the sweep printed 'error: worker vm-1 ... (no output)' for a clean stop."""
    from mnistcnn.sweep import launch
    from mnistcnn.sweep.space import load_sweep

    run = launch.SweepRun.start(load_sweep(write_sweep(tmp_path, trials=1)), tmp_path / "runs")
    run.workers = [SimpleNamespace(returncode=-signal.SIGINT, poll=lambda: -signal.SIGINT, send_signal=print),
                   SimpleNamespace(returncode=-signal.SIGKILL, poll=lambda: -signal.SIGKILL, send_signal=print)]
    run.logs = [tmp_path / "vm-0.log", tmp_path / "vm-1.log"]
    for log in run.logs:
        log.write_text("")
    run.stop(signal.SIGINT)
    assert run.worker_errors() == [f"worker vm-1 was killed by SIGKILL: (no output) (log: {run.logs[1]})"]


def test_a_worker_killed_by_a_signal_python_has_no_name_for_is_named_by_its_number(tmp_path):
    """signal.Signals has no member for most real-time signals: naming one raised a ValueError."""
    from mnistcnn.sweep import launch
    from mnistcnn.sweep.space import load_sweep

    run = launch.SweepRun.start(load_sweep(write_sweep(tmp_path, trials=1)), tmp_path / "runs")
    number = signal.SIGRTMIN + 2
    run.workers = [SimpleNamespace(returncode=-number, poll=lambda: -number)]
    run.logs = [tmp_path / "vm-0.log"]
    run.logs[0].write_text("")
    assert run.worker_errors() == [f"worker vm-0 was killed by signal {number}: (no output) (log: {run.logs[0]})"]


def test_a_trial_whose_batch_the_cached_data_does_not_fit_is_refused_as_train_refuses_it():
    """The worker keeps the dataset between trials: a trial's data checks are still prepare_data's
    (a cached split let a drop_last batch larger than the training split through, to a division by
    zero at the epoch's end)."""
    from mnistcnn import config as cfg
    from mnistcnn.data import prepare_data
    from mnistcnn.errors import DataError
    from mnistcnn.sweep.worker import DataCache

    fits, too_large = (cfg.from_raw({"data": {"train_limit": 100, "validation": 500},
                                     "train": {"drop_last": True, "batch_size": batch}}, "<sweep>")
                       for batch in (64, 128))
    with pytest.raises(DataError) as direct:
        prepare_data(too_large)
    cache = DataCache()
    assert len(cache.get(fits).train_x) == 100
    with pytest.raises(DataError) as cached:
        cache.get(too_large)
    assert str(cached.value) == str(direct.value)
