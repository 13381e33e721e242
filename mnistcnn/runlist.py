"""What is in a runs folder: one row per run directory, read from the files a run leaves
(status.json, summary.json, metrics.jsonl, config.yaml), never from the checkpoints."""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import yaml

from .errors import UsageError
from .folders import RUNS_DIR, STAMP, STAMP_FORMAT, in_sight
from .runs import DIVERGED, RunDir, read_json
from .sweep.folder import SweepDir


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl, skipping any line that is not a JSON object."""
    rows = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    except OSError:
        pass
    return [row for row in rows if isinstance(row, dict)]


def run_status(run: RunDir, status: dict | None) -> str:
    """finished, interrupted, failed, diverged (failed on a NaN or infinity), pruned (by a sweep),
    running, or unknown (no status.json); a run whose process is gone without saying so (killed,
    machine restarted) counts as interrupted: it can be resumed."""
    if run.finished:
        return "finished"
    if status is None:
        return "unknown"
    state = status.get("status", "unknown")
    if state == "running" and not run.being_trained:
        return "interrupted"
    if state == "failed" and status.get("reason") == DIVERGED:
        return "diverged"
    return state


def folder_name(path: Path) -> str:
    """The name a folder goes by, also when given as ``.`` or ``..`` (whose ``name`` is empty or
    ``..``); symbolic links are not followed, so a linked run keeps the name it is listed under."""
    return Path(os.path.abspath(path)).name


def describe_run(path: Path) -> dict | None:
    """One run directory as a row, or None when ``path`` is not a run directory."""
    run = RunDir(path)
    if not run.config_file.is_file() and not run.status_file.is_file():
        return None
    status, summary = read_json(run.status_file), read_json(run.summary_file)
    history = read_metrics(run.metrics_file)
    try:
        config = yaml.safe_load(run.config_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        config = None
    started = (status or {}).get("started")
    if started is None:
        match = STAMP.search(folder_name(path))
        if match:
            started = _dt.datetime.strptime(match.group(1), STAMP_FORMAT).isoformat(timespec="seconds")
    val_accs = [row["val_acc"] for row in history if isinstance(row.get("val_acc"), (int, float))]
    return {
        "run": folder_name(path),
        "path": str(path),
        "started": started,
        "config": (status or {}).get("config") or (config.get("name") if isinstance(config, dict) else None),
        "overrides": (status or {}).get("overrides", []),
        # a recorded run (docs/results) keeps metrics.csv and summary.json, not metrics.jsonl
        "epochs": len(history) or (summary or {}).get("epochs", 0),
        "epochs_planned": (config or {}).get("train", {}).get("epochs") if isinstance(config, dict) else None,
        "best_val_acc": (summary or {}).get("best_val_acc", max(val_accs) if val_accs else None),
        "test_acc": (summary or {}).get("test_acc"),
        "wall_seconds": (summary or {}).get("wall_seconds",
                                             round(sum(row.get("seconds", 0) for row in history), 2) or None),
        "status": run_status(run, status),
    }


def list_runs(folder=RUNS_DIR) -> list[dict]:
    folder = Path(folder)
    if folder.is_file():
        raise UsageError(f"{folder}: is a file, not a folder; give the folder that holds your run directories "
                         "(default: runs)")
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such runs folder; train first (mnistcnn train CONFIG.yaml) or give the "
                         "folder that holds your run directories")
    if not SweepDir(folder).is_sweep_folder and (row := describe_run(folder)) is not None:  # one run: its own row
        return [{**row, "sweep": None}]
    rows = []
    for child in [folder] if SweepDir(folder).is_sweep_folder else in_sight(folder):
        if (sweep_dir := SweepDir(child)).is_sweep_folder:  # its trials, each an ordinary run
            rows += [{**row, "sweep": folder_name(child)} for trial in in_sight(sweep_dir.trials)
                     if (row := describe_run(trial)) is not None]
        elif (row := describe_run(child)) is not None:
            rows.append({**row, "sweep": None})
    return sorted(rows, key=lambda row: (row["started"] or "", row["run"]))


def sweep_folders(rows: list[dict]) -> list[SweepDir]:
    """The sweep folders whose trials are among ``rows`` (as ``list_runs`` gives them), in order of
    their paths: a trial's run directory lies in its sweep's ``SweepDir.trials``."""
    return [SweepDir(path) for path in sorted({Path(row["path"]).parent.parent for row in rows if row["sweep"]})]
