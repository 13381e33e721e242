"""A sweep's folder: the one place that names what is in it.

    runs/<name>-<stamp>/
        sweep.yaml, base.yaml   the resolved sweep file and base config (--resume reads them)
        study.db                the study, unless --storage names a shared one
        trials/                 one ordinary run directory per trial run here
        workers/                each worker process's log, and jobs.json: how many ran here last
        trials.csv, trials.jsonl, best-trial.yaml, metric-by-trial.png, metric-by-parameter.png
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..atomic import write_text
from ..errors import UsageError
from ..folders import StampedFolder


class SweepDir(StampedFolder):
    """``runs/<name>-<YYYYmmdd-HHMMSS>[-N]/`` of a sweep and the files inside it; a new one is set up out
    of sight (``StampedFolder.create``) until it holds what --resume reads."""

    @classmethod
    def open(cls, path, hint: str) -> "SweepDir":
        """The sweep folder at ``path``; when it has no sweep file, a UsageError that ends with ``hint``."""
        sweep_dir = cls(path)
        if not sweep_dir.sweep_file.is_file():
            raise UsageError(f"{sweep_dir.path}: not a sweep folder (no {sweep_dir.sweep_file.name}); {hint}")
        return sweep_dir

    @property
    def kept_storage(self) -> str | None:
        """The storage that sweep.yaml names (a password in it masked); None for the folder's own
        study, or a sweep file that cannot be read."""
        try:
            kept = yaml.safe_load(self.sweep_file.read_text(encoding="utf-8")).get("storage")
        except (OSError, yaml.YAMLError, AttributeError):
            return None
        return kept if isinstance(kept, str) else None

    @property
    def is_sweep_folder(self) -> bool:
        """Whether the folder is a sweep's that has trials to list."""
        return self.sweep_file.is_file() and self.trials.is_dir()

    # paths
    @property
    def sweep_file(self) -> Path:
        return self.path / "sweep.yaml"

    @property
    def base_file(self) -> Path:
        return self.path / "base.yaml"

    @property
    def study_file(self) -> Path:
        return self.path / "study.db"

    @property
    def trials(self) -> Path:
        return self.path / "trials"

    @property
    def workers(self) -> Path:
        return self.path / "workers"

    @property
    def jobs_file(self) -> Path:
        return self.workers / "jobs.json"

    @property
    def jobs_before(self) -> int | None:
        """How many jobs the last launch in this folder ran (None before any, or if unreadable)."""
        try:
            jobs = json.loads(self.jobs_file.read_text(encoding="utf-8"))["jobs"]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return jobs if isinstance(jobs, int) and jobs >= 1 else None

    def record_jobs(self, jobs: int) -> None:
        write_text(self.jobs_file, json.dumps({"jobs": jobs}) + "\n")

    def worker_log(self, name: str) -> Path:
        return self.workers / f"{name}.log"

    @property
    def trials_csv(self) -> Path:
        return self.path / "trials.csv"

    @property
    def trials_jsonl(self) -> Path:
        return self.path / "trials.jsonl"

    @property
    def best_trial(self) -> Path:
        return self.path / "best-trial.yaml"

    @property
    def metric_by_trial(self) -> Path:
        return self.path / "metric-by-trial.png"

    @property
    def metric_by_parameter(self) -> Path:
        return self.path / "metric-by-parameter.png"

    @property
    def pictures(self) -> list[Path]:
        """The study's pictures, those written yet (the reports draw them once the study has a trial)."""
        return [path for path in (self.metric_by_trial, self.metric_by_parameter) if path.is_file()]
