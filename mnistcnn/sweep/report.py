"""What a sweep leaves in its folder, read from the study: trials.csv and trials.jsonl (a row
per trial), best-trial.yaml (the best trial's whole config, ready to train) and two pictures."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter

from .. import config as cfg
from ..atomic import write_text
from ..errors import command_line
from .folder import SweepDir
from .space import goodness
from .study import host, trial_status

COLUMNS = ["number", "status", "value", "epochs", "seconds", "test_acc", "retry_of", "run", "host"]


def trial_rows(trials) -> list[dict]:
    """One row per trial that ran or runs (not the surplus ones, which never started)."""
    rows = []
    retried_as = {trial.user_attrs["retry_of"]: trial.number for trial in trials if "retry_of" in trial.user_attrs}
    for trial in trials:
        attrs = trial.user_attrs
        retry = retried_as.get(trial.number)
        if attrs.get("surplus"):
            continue
        started, ended = trial.datetime_start, trial.datetime_complete
        seconds = round((ended - started).total_seconds(), 2) if started and ended else None
        rows.append({
            "number": trial.number, "status": trial_status(trial),
            "value": trial.value,
            "epochs": attrs.get("epochs", len(trial.intermediate_values)), "seconds": seconds,
            "test_acc": attrs.get("test_acc"), "retry_of": attrs.get("retry_of"), "run": attrs.get("run_dir"),
            "host": attrs.get("host"), "params": dict(trial.params),
            "per_epoch": [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)],
            "reason": attrs.get("reason") or attrs.get("error") or (f"it goes on as trial {retry}" if retry else None),
            "config": attrs.get("config"),
        })
    return rows


def run_place(row: dict) -> str:
    """Where a trial's run directory is: its path, led by its machine's name (``HOST:PATH``, as scp
    names it) when the trial ran on another machine of a shared study."""
    return row["run"] if row["host"] in (None, host()) else f"{row['host']}:{row['run']}"


def last_value(row: dict) -> float | None:
    """A trial's objective, or else the last value it reported (a pruned or stopped trial)."""
    return row["value"] if row["value"] is not None else (row["per_epoch"] or [None])[-1]


def metric_words(metric: str, value: float) -> str:
    """A trial's metric as `mnistcnn runs` and training show it beside the test accuracy: an
    accuracy in percent (98.42%), a loss to four decimals."""
    return f"{value:.2%}" if metric.endswith("_acc") else f"{value:.4f}"


def assignment(key: str, value) -> str:
    """``key=value`` as trials are listed and recorded: floats to four significant digits."""
    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"


def parameter_names(keys, taken=()) -> dict[str, str]:
    """Each searched key as tables and trial lines name it: the last part of its path (lr for
    train.optimizer.lr), or the whole key where that part is ambiguous: shared with another key, or
    with a name in ``taken`` (a table's other columns: train.epochs beside the epochs trained)."""
    last = {key: key.rsplit(".", 1)[-1] for key in keys}
    uses = Counter(last.values())
    return {key: name if uses[name] == 1 and name not in taken else key for key, name in last.items()}


def ranked(rows: list[dict], direction: str) -> list[dict]:
    """The rows that have a value, best first; of equal values, the earlier trial first."""
    return sorted((row for row in rows if row["value"] is not None),
                  key=lambda row: (-goodness(direction, row["value"]), row["number"]))


def best_row(rows: list[dict], direction: str) -> dict | None:
    return next((row for row in ranked(rows, direction) if row["status"] == "complete"), None)


def write_reports(sweep, rows: list[dict], sweep_dir: SweepDir) -> None:
    """trials.csv, trials.jsonl, the PNGs and, once a trial is complete, best-trial.yaml."""
    keys = [parameter.key for parameter in sweep.parameters]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS + keys + [f"{sweep.metric}_per_epoch"])
    for row in rows:
        writer.writerow([row[column] for column in COLUMNS] + [row["params"].get(key) for key in keys]
                        + [" ".join(f"{value:.6g}" for value in row["per_epoch"])])
    write_text(sweep_dir.trials_csv, buffer.getvalue())
    write_text(sweep_dir.trials_jsonl, "".join(json.dumps({k: v for k, v in row.items() if k != "config"}) + "\n"
                                               for row in rows))
    if rows:
        from ..plots import sweep_pictures

        sweep_pictures(rows, sweep, sweep_dir.metric_by_trial, sweep_dir.metric_by_parameter, last_value)
    best = best_row(rows, sweep.direction)
    if best is None or best["config"] is None:
        return
    path = sweep_dir.best_trial
    config = {**best["config"], "name": f"{sweep.name}-best"}
    header = (f"# The best trial of sweep {sweep.name} (trial {best['number']}: {sweep.metric} {best['value']:.6g};\n"
              f"# its run: {run_place(best)}),\n"
              f"# with the worker and BLAS thread counts it ran with, so that on the same machine\n"
              f"#   {command_line('train', path)}\n# trains it again bit for bit.\n")
    write_text(path, header + cfg.dump(config))
