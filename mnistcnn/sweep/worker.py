"""A sweep's worker: one process that draws trials from the study and trains each as an
ordinary run, until the study has its trials. ``mnistcnn sweep`` starts ``--jobs`` of them
(``python -m mnistcnn.sweep.worker SWEEP_DIR NAME THREADS``, NAME the key that seeds its
sampler; the storage URL in the environment so that no password shows in the process list, and
the command's process id: a worker whose command is gone stops).

A trial reports its validation metric every epoch, so the pruner can end it early; a trial
interrupted by a signal checkpoints and is queued again, to be resumed from its run directory.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from .. import config as cfg
from ..errors import INTERRUPTED, MnistCnnError, NonFiniteError
from ..runs import RunDir, read_json
from ..callbacks import Pruned, RunLog
from ..data import load_dataset, prepare_data
from ..trainer import train_run
from . import study as studies
from .report import assignment, metric_words
from .folder import SweepDir
from .space import goodness, load_sweep

STORAGE_VARIABLE = "MNISTCNN_SWEEP_STORAGE"
COMMAND_VARIABLE = "MNISTCNN_SWEEP_COMMAND"  # the process id of the mnistcnn sweep that started the worker
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # a worker checkpoints its trial and stops
MAX_FAILURES_IN_A_ROW = 3
STORAGE_LOST = "this worker stopped; resume the sweep once it answers again"  # what to do, when the database is gone
POLL_SECONDS = 1.0


class TrialStopped(Exception):
    """The trial was interrupted by a signal: it checkpointed and is queued again."""


class TrialFailed(Exception):
    """The trial could not run (its error is in the trial's user attributes)."""


class Surplus(Exception):
    """The study had its trials when this one was drawn (another worker was quicker)."""


class TrialReporter(RunLog):
    """Keeps the trial's train.log, reports the metric to the trial every epoch and ends the run
    when the pruner says so. A database that stopped answering is named by ``origin``, the storage
    as the user gave it, in the log and the run's status (not as Optuna words a failed commit)."""

    def __init__(self, trial, metric: str, stopping, origin: str):
        super().__init__()
        self.trial, self.metric, self.stopping, self.origin = trial, metric, stopping, origin

    def on_open(self, run, resumed):
        super().on_open(run, resumed)
        with studies.storage_answering(self.origin, STORAGE_LOST):
            self.trial.set_user_attr("run_dir", str(run.path.resolve()))

    def on_start(self, trainer):
        super().on_start(trainer)
        if self.stopping():  # the signal came while the trial was being set up
            trainer.request_stop(signal.SIGINT)
        with studies.storage_answering(self.origin, STORAGE_LOST):
            for row in trainer.history:  # epochs a resumed run trained before it stopped
                self.trial.report(row[self.metric], row["epoch"])

    def on_epoch_end(self, row):
        super().on_epoch_end(row)
        with studies.storage_answering(self.origin, STORAGE_LOST):
            self.trial.report(row[self.metric], row["epoch"])
            prune = row["epoch"] < self.epochs and self.trial.should_prune()  # after the last epoch, nothing to save
        if prune:
            raise Pruned(f"pruned at epoch {row['epoch']}: {self.metric} {metric_words(self.metric, row[self.metric])}")


class DataCache:
    """The dataset of the last trial, kept while trials read the same files. Each trial's split and
    checks are prepare_data's: a cached split skipped them for a trial whose batch size or input
    shape the data does not fit."""

    def __init__(self):
        self.key, self.dataset = None, None

    def get(self, config: dict):
        key = (config["data"]["dir"], cfg.num_classes(config))  # what load_dataset reads
        if key != self.key:
            self.key, self.dataset = key, load_dataset(key[0], num_classes=key[1])
        return prepare_data(config, self.dataset)


def best_value(history: list[dict], metric: str, direction: str) -> float:
    return max((row[metric] for row in history), key=lambda value: goodness(direction, value))


class Worker:
    """Runs trials of ``sweep`` from ``study`` with ``threads`` threads each."""

    def __init__(self, sweep, study, storage, sweep_dir: SweepDir, threads: int, origin: str):
        self.sweep, self.study, self.storage, self.origin = sweep, study, storage, origin
        self.sweep_dir, self.threads = sweep_dir, threads
        self.data = DataCache()
        self.stopping = False
        self.last_error = None  # of this worker's last trial

    def objective(self, trial) -> float:
        sweep = self.sweep
        self.last_error = None
        ahead = [earlier for earlier in self.study.get_trials(deepcopy=False, states=_counted_states())
                 if earlier.number < trial.number and not earlier.user_attrs.get("surplus")]
        if len(ahead) >= sweep.trials:
            trial.set_user_attr("surplus", True)
            raise Surplus()
        # draws seeded by the trial's number: a sweep repeats on one job, and no two workers draw alike
        self.study.sampler = studies.make_sampler(sweep, str(trial.number))
        values = sweep.suggest(trial)
        trial.set_user_attr("host", studies.host())
        trial.set_user_attr("pid", os.getpid())
        try:
            config = sweep.trial_config(values, f"trial-{trial.number:03d}", self.threads)
            trial.set_user_attr("config", config)
            if studies.has_heartbeat(self.storage):
                return self._train(trial, config)
            with studies.Pulse(trial, sweep.heartbeat):
                return self._train(trial, config)
        except KeyboardInterrupt:  # a second signal: the run stopped at once; --resume retries it
            trial.set_user_attr("stopped", True)
            self.stopping = True
            raise
        except NonFiniteError as err:  # a learning rate that diverges: as good as pruned, for the sampler
            trial.set_user_attr("reason", str(err))
            trial.set_user_attr("diverged", True)
            raise studies.require_optuna().TrialPruned(str(err)) from None
        except studies.StorageLost:  # not the trial's fault: it is retried once the database answers
            raise
        except MnistCnnError as err:
            trial.set_user_attr("error", str(err))
            self.last_error = str(err)
            raise TrialFailed(str(err)) from None

    def _resumable(self, trial) -> RunDir | None:
        path = trial.user_attrs.get("resume_from")
        if path and trial.user_attrs.get("resume_host") == studies.host() and (Path(path) / "checkpoints").is_dir():
            return RunDir(path)
        return None

    def _train(self, trial, config: dict) -> float:
        reporter = TrialReporter(trial, self.sweep.metric, lambda: self.stopping, self.origin)
        run = self._resumable(trial)
        if run is not None and (run.finished or (read_json(run.status_file) or {}).get("status") == "pruned"):
            return self._ended(trial, run, reporter)  # its worker stopped after the run ended
        if run is not None:
            config = cfg.load_config(run.config_file, of_run=True)
        try:
            # `mnistcnn runs` lists what changed each run: here the sweep file and the trial's values
            values = [assignment(key, value) for key, value in trial.params.items()]
            outcome = train_run(config, self.data.get(config), reporter, runs_dir=self.sweep_dir.trials,
                                resume=run, config_path=self.sweep.path, overrides=values, stop_on_signals=True)
        finally:
            reporter.close()
        history = _history(outcome.run)
        trial.set_user_attr("epochs", len(history))
        if outcome.signal is not None:  # the run ended anyway (pruned, or in its last batch): no next trial
            self.stopping = True
        if outcome.pruned is not None:
            trial.set_user_attr("reason", outcome.pruned)
            raise studies.require_optuna().TrialPruned(outcome.pruned)
        if outcome.summary is None:  # stopped by a signal, with a checkpoint
            self.stopping = True
            trial.set_user_attr("stopped", True)
            studies.retry_trial(self.study, self.study.get_trials(deepcopy=False)[trial.number])
            raise TrialStopped()
        trial.set_user_attr("test_acc", outcome.summary["test_acc"])
        return best_value(history, self.sweep.metric, self.sweep.direction)

    def _ended(self, trial, run: RunDir, reporter: TrialReporter) -> float:
        """The outcome of a run that ended before its worker could tell the study."""
        history = _history(run)
        for row in history:
            trial.report(row[self.sweep.metric], row["epoch"])
        trial.set_user_attr("run_dir", str(run.path))
        trial.set_user_attr("epochs", len(history))
        summary = read_json(run.summary_file)
        if summary is None:
            raise studies.require_optuna().TrialPruned("pruned before its worker stopped")
        trial.set_user_attr("test_acc", summary["test_acc"])
        return best_value(history, self.sweep.metric, self.sweep.direction)

    def run(self) -> None:
        """Draw and train trials until the study has its trials (or a signal asks to stop)."""
        failures = 0
        while not self.stopping:
            counts = studies.states(self.study.get_trials(deepcopy=False))
            done = studies.trials_done(counts)
            if done >= self.sweep.trials:
                return
            if done + counts["running"] >= self.sweep.trials and not counts["queued"]:
                # a dead worker's trial comes back as a queued retry
                studies.fail_stale(self.study, self.storage, self.sweep.heartbeat)
                time.sleep(POLL_SECONDS)
                continue
            self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed, Surplus, TrialStopped))
            failures = failures + 1 if self.last_error else 0
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise MnistCnnError(f"{failures} trials in a row failed; the last: {self.last_error}")


def _counted_states():
    state = studies.require_optuna().trial.TrialState
    return (state.WAITING, state.RUNNING, state.COMPLETE, state.PRUNED)


def _history(run: RunDir) -> list[dict]:
    from ..runlist import read_metrics

    return read_metrics(run.metrics_file)


def report_lost_database(origin: str) -> None:
    """A thread of Optuna's (the trial's heartbeat) that dies as the database stops answering says
    so in one line, not in three chained tracebacks; the worker's own line follows when it stops."""
    default = threading.excepthook

    def hook(args):
        lost = studies.storage_lost(args.exc_value, origin, "the running trial's heartbeat stopped")
        if lost is None:
            default(args)
        else:
            print(f"warning: {lost}", file=sys.stderr, flush=True)

    threading.excepthook = hook


def stop_without(command: int) -> None:
    """Stop this worker as Ctrl-C does once ``command``, the process that started it, is gone
    without passing a signal on (SIGKILL): its trial checkpoints, rather than the sweep going on unseen."""
    while os.getppid() == command:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGINT)


def main(argv=None) -> int:
    """``python -m mnistcnn.sweep.worker SWEEP_DIR NAME THREADS``: one worker process."""
    folder, name, threads = (argv or sys.argv[1:])[:3]
    # Optuna logs each trial this worker ends by an exception (stopped by a signal, surplus, a config that fails) as
    # failed, with a traceback: the sweep reports those in its own words, and an unexpected error still has its own
    optuna = studies.require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        sweep_dir = SweepDir(folder)
        sweep = load_sweep(sweep_dir.sweep_file, of_folder=True)
        url = os.environ[STORAGE_VARIABLE]  # resolved by the command that started this worker
        origin = f"{sweep_dir.path}'s storage {studies.shown(url)}"
        storage = studies.open_storage(studies.Storage(url, origin), sweep.heartbeat)
        worker = Worker(sweep, studies.open_study(sweep, storage, seed_key=name), storage, sweep_dir, int(threads),
                        origin)
        report_lost_database(origin)

        def request_stop(signum, frame):  # between trials; a running trial's trainer has its own handler
            worker.stopping = True

        for signum in STOP_SIGNALS:
            signal.signal(signum, request_stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the command that started this worker
        threading.Thread(target=stop_without, args=(int(os.environ[COMMAND_VARIABLE]),), daemon=True).start()
        with studies.storage_answering(origin, STORAGE_LOST):
            worker.run()
    except KeyboardInterrupt:  # a second signal while a trial ran
        return INTERRUPTED
    except MnistCnnError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return INTERRUPTED if worker.stopping else 0


if __name__ == "__main__":
    sys.exit(main())
