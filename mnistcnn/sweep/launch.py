"""A sweep on this machine: its folder (folder.py names what is in it), its worker processes,
and what the study holds now.

The workers are separate processes (``worker.py``) in sessions of their own: a Ctrl-C reaches
this process only, which passes it on once, so that each running trial checkpoints cleanly.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import config as cfg
from ..atomic import write_text
from ..engine.fast.parallel import cores as available_cores
from ..errors import INTERRUPTED, UsageError, command_line, signal_name
from ..folders import published_path
from . import study as studies
from .folder import SweepDir
from .report import best_row, trial_rows, write_reports
from .space import Sweep, load_sweep
from .worker import COMMAND_VARIABLE, POLL_SECONDS, STOP_SIGNALS, STORAGE_VARIABLE


def plan_jobs(jobs: int | None, trials: int, jobs_before: int | None = None) -> tuple[int, int]:
    """``(jobs, threads per job)`` with jobs x threads <= cores; by default as many jobs as a
    resumed sweep ran before (so that its trials keep their threads), else a job per core."""
    cores = available_cores()
    if jobs is None:
        jobs = min(cores, jobs_before) if jobs_before is not None else max(1, min(cores, trials))
    if not 1 <= jobs <= cores:
        raise UsageError(f"--jobs {jobs}: this machine has {cores} cores, and each job needs one; give --jobs 1 to "
                         f"{cores}")
    return jobs, cores // jobs


@dataclass
class Snapshot:
    """The study as it is now, for the view."""

    rows: list
    counts: dict
    best: dict | None
    running_workers: int
    trials: int  # the sweep's

    @property
    def done(self) -> int:
        return studies.trials_done(self.counts)

    @property
    def finished(self) -> bool:
        return self.done >= self.trials


class SweepRun:
    """A sweep folder, the study it feeds, and the worker processes started here."""

    def __init__(self, sweep: Sweep, sweep_dir: SweepDir, storage: studies.Storage):
        self.sweep, self.sweep_dir, self.storage = sweep, sweep_dir, storage
        self.study = studies.open_study(sweep, studies.open_storage(storage, sweep.heartbeat))
        self.workers: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.reported = None
        self.signalled = False  # a stop signal was passed on to the workers

    @classmethod
    def start(cls, sweep: Sweep, runs_dir, storage: str | None = None, study: str | None = None) -> "SweepRun":
        """A new sweep folder under ``runs_dir``, set up out of sight and given its name once it holds
        base.yaml, sweep.yaml and (unless the storage is shared) its study; a shared storage is opened
        first, so that a bad URL writes nothing."""
        shared, sweep.study = sweep.study_storage(storage), studies.study_name(study) or sweep.study
        if shared is not None:
            study = studies.open_study(sweep, studies.open_storage(shared, sweep.heartbeat), create=True)
            done = studies.trials_done(studies.states(study.get_trials(deepcopy=False)))
            if done >= sweep.trials:  # nothing left to run: no new, empty sweep folder
                status = command_line("sweep", "--status", "--storage",
                                      studies.shown(shared.url, password=studies.PLACEHOLDER), "--study", sweep.study)
                raise UsageError(f"study {sweep.study!r} has its {sweep.trials} trials already ({done} done); see "
                                 f"them with {status}, or give another --study")
        sweep_dir = SweepDir.create(runs_dir, sweep.name)  # out of sight until it holds what --resume reads
        folder = published_path(sweep_dir.path)
        storage = shared or studies.local_storage(folder)
        try:
            write_text(sweep_dir.base_file, cfg.dump(sweep.base))
            resolved = {**sweep.to_yaml(), "base": sweep_dir.base_file.name,
                        "storage": studies.shown(shared.url) if shared is not None else None}
            write_text(sweep_dir.sweep_file, f"# resolved from {sweep.path}; resume with "
                                             f"{studies.folder_command('--resume', folder, storage.url)}\n"
                       + cfg.dump(resolved))
            if shared is None:
                studies.create_local_study(sweep, sweep_dir.path)
            sweep_dir.publish()
        except BaseException:  # a signal or a full disk while it is set up: a folder --resume would refuse
            sweep_dir.discard()
            raise
        return cls(sweep, sweep_dir, storage)

    @classmethod
    def resume(cls, folder, storage: str | None = None) -> "SweepRun":
        """The sweep in ``folder`` again; trials that stopped part-way are queued to resume."""
        sweep_dir = SweepDir.open(folder, "give the folder mnistcnn sweep printed")
        sweep = load_sweep(sweep_dir.sweep_file, of_folder=True)
        run = cls(sweep, sweep_dir, sweep.study_storage(storage, sweep_dir.path))
        studies.retry_unfinished(run.study)
        counts = studies.states(run.study.get_trials(deepcopy=False))
        done = studies.trials_done(counts)
        if done >= sweep.trials and not counts["queued"] and not counts["running"]:  # its workers would idle
            run.snapshot()  # the reports it names, which a command killed as its last trial ended did not write
            status = studies.folder_command("--status", sweep_dir.path, run.storage.url)
            raise UsageError(f"{sweep_dir.path}: the sweep is finished, {done} of {sweep.trials} trials done; its "
                             f"reports are rewritten as the study stands, and there is nothing to resume. Its trials: "
                             f"{status}; its best: "
                             f"{command_line('train', sweep_dir.best_trial)}")
        return run

    def launch(self, jobs: int, threads: int) -> None:
        """Start ``jobs`` worker processes of ``threads`` threads each."""
        self.sweep_dir.workers.mkdir(exist_ok=True)
        self.sweep_dir.record_jobs(jobs)
        launched = len(self.study.get_trials(deepcopy=False))  # seeds differ from an earlier launch's
        environment = {**os.environ, STORAGE_VARIABLE: self.storage.url, COMMAND_VARIABLE: str(os.getpid()),
                       "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        # the workers start with the stop signals blocked and lift the block once their handlers are set: one
        # passed on while a worker imports waits for it rather than ending it with a traceback
        mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for index in range(jobs):
                name = f"{studies.host()}-{index}"
                self.logs.append(self.sweep_dir.worker_log(name))
                with open(self.logs[-1], "a", encoding="utf-8") as log:
                    self.workers.append(subprocess.Popen(
                        [sys.executable, "-m", "mnistcnn.sweep.worker", str(self.sweep_dir.path),
                         f"{name}/{self.sweep_dir.path.resolve()}/{launched}", str(threads)],
                        env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask_before)

    def run_workers(self, jobs: int, threads: int, show) -> tuple[Snapshot, int | None]:
        """Launch the workers and call ``show(snapshot)`` until they end; SIGINT and SIGTERM are
        passed on to them once. Returns the last snapshot and the signal that stopped the sweep."""
        stopped = None

        def pass_on(signum, frame):
            nonlocal stopped
            stopped = signum
            self.stop(signum)

        previous = {signum: signal.signal(signum, pass_on) for signum in STOP_SIGNALS}
        resume = studies.folder_command("--resume", self.sweep_dir.path, self.storage.url)
        try:
            self.launch(jobs, threads)
            # one that came before the launch reached no worker; a worker that has it still blocks it: one, not two
            if stopped is not None:
                self.stop(stopped)
            with studies.storage_answering(self.storage.origin, f"the running trials checkpoint; once it answers "
                                                                f"again: {resume}"):
                while True:
                    snapshot = self.snapshot()
                    show(snapshot)
                    if not snapshot.running_workers:
                        return snapshot, stopped
                    time.sleep(POLL_SECONDS)
        except BaseException:  # the workers run in sessions of their own: they must not outlive this
            self.stop(signal.SIGTERM)
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def stop(self, signum: int = signal.SIGINT) -> None:
        """Pass a signal on to the workers: each running trial checkpoints and stops."""
        self.signalled = True
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signum)

    def snapshot(self) -> Snapshot:
        """The trials now; the reports are rewritten whenever a trial has ended since the last."""
        # the workers are counted before the trials are read: a snapshot with none running holds every trial's end
        running_workers = sum(process.poll() is None for process in self.workers)
        trials = self.study.get_trials(deepcopy=False)
        rows = trial_rows(trials)
        ended = [(row["number"], row["status"]) for row in rows if row["status"] in studies.ENDED]
        if ended != self.reported:
            write_reports(self.sweep, rows, self.sweep_dir)
            self.reported = ended
        return Snapshot(rows, studies.states(trials), best_row(rows, self.sweep.direction),
                        running_workers, self.sweep.trials)

    def worker_errors(self) -> list[str]:
        """What each worker that failed (not stopped by a signal) said last, and where its log is. A
        signal passed on may also kill a worker outright, as Python exits and its handlers are reset."""
        stopped = {None, 0, INTERRUPTED} | ({-signum for signum in STOP_SIGNALS} if self.signalled else set())
        failed = []
        for process, log in zip(self.workers, self.logs):
            if process.poll() not in stopped:
                lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() or ["(no output)"]
                code = process.returncode  # below 0: the signal that killed it, as subprocess gives it
                how = f"was killed by {signal_name(-code)}" if code < 0 else f"exited with code {code}"
                failed.append(f"worker {log.stem} {how}: {lines[-1]} (log: {log})")
        return failed


def study_status(folder, storage: str | None, name: str | None) -> tuple[dict, list[dict], int]:
    """``(settings, trial rows, trials done)`` of a study: named by ``storage`` and ``name`` when
    both are given, else by the sweep folder that ran it."""
    name = studies.study_name(name)
    if storage is None or name is None:
        if folder is None:
            raise UsageError("--status needs a sweep folder, or both --storage URL and --study NAME")
        if Path(folder).is_file():  # most likely the sweep file, given as when the sweep started
            raise UsageError(f"{folder}: is a file, not a sweep folder; --status reads a sweep folder "
                             "(runs/NAME-STAMP) or --storage URL --study NAME, and mnistcnn sweep SWEEP.yaml starts "
                             "a sweep")
        sweep_dir = SweepDir.open(folder, "with --status give a sweep folder, or --storage URL and --study NAME")
        sweep = load_sweep(sweep_dir.sweep_file, of_folder=True)
        study_storage, name = sweep.study_storage(storage, sweep_dir.path), name or sweep.study
    else:
        study_storage = studies.Storage.named(storage, "--storage")
    study = studies.load_any_study(study_storage, name)
    settings = {"metric": "value", "direction": "maximize", "trials": None, **study.user_attrs.get("sweep", {}),
                "study": name}
    trials = study.get_trials(deepcopy=False)
    return settings, trial_rows(trials), studies.trials_done(studies.states(trials))
