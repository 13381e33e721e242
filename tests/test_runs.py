"""The mnistcnn runs table."""
import json
import os
import shutil

from mnistcnn.cli import console
from mnistcnn.runs import RunDir, write_json


def test_runs_table_reports_each_state(trained_run, tmp_path, cli, monkeypatch):
    run = trained_run
    folder = tmp_path / "runs"
    shutil.copytree(run, folder / run.name)
    for name, status in (("a-20260101-000000", {"status": "interrupted", "pid": 1}),
                         ("b-20260101-000001", {"status": "failed", "pid": 1}),
                         ("c-20260101-000002", {"status": "running", "pid": os.getpid()}),
                         # its process id taken by a live process (init) that does not train it
                         ("d-20260101-000003", {"status": "running", "pid": 1})):
        fake = RunDir(folder / name)
        fake.path.mkdir()
        (fake.path / "config.yaml").write_text("name: x\ntrain: {epochs: 4}\n")
        (fake.path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_acc": 0.5, "seconds": 2.0}) + "\n")
        write_json(fake.status_file, {**status, "overrides": ["--set train.optimizer.lr=0.003", "--epochs 4"]})
    (folder / "not-a-run").mkdir()
    (folder / "rec-20260101-000004").mkdir()
    for name in ("config.yaml", "metrics.csv", "summary.json"):
        shutil.copy(run / name, folder / "rec-20260101-000004" / name)
    with RunDir(folder / "c-20260101-000002").training_lock():  # as its trainer holds it
        result = cli("runs", folder, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["run"]: r for r in json.loads(result.output)}
    summary = json.loads((run / "summary.json").read_text())
    assert rows[run.name]["status"] == "finished" and rows[run.name]["test_acc"] == summary["test_acc"]
    assert rows[run.name]["best_val_acc"] == summary["best_val_acc"]
    assert rows[run.name]["epochs"] == summary["epochs"]
    assert [rows[n]["status"] for n in ("a-20260101-000000", "b-20260101-000001", "c-20260101-000002",
                                        "d-20260101-000003")] == ["interrupted", "failed", "running", "interrupted"]
    assert rows["a-20260101-000000"]["started"] == "2026-01-01T00:00:00" and rows["a-20260101-000000"]["epochs"] == 1
    assert "not-a-run" not in rows
    recorded = rows["rec-20260101-000004"]  # as docs/results keeps it: no metrics.jsonl, no status.json
    assert recorded["status"] == "finished" and recorded["epochs"] == summary["epochs"]
    monkeypatch.setattr(console, "_width", 80)  # as a terminal of 80 columns
    table = cli("runs", folder)
    assert table.exit_code == 0 and "finished" in table.output and "interrupted" in table.output
    # under 100 columns what changed each run is listed below the table, whole
    assert "changed by:\n  a-20260101-000000: --set train.optimizer.lr=0.003 --epochs 4\n" in table.output
    monkeypatch.setattr(console, "_width", 140)  # as a terminal of 140 columns
    wide = cli("runs", folder).output
    assert "changed by" in wide.splitlines()[2] and "changed by:" not in wide and "config" in wide.splitlines()[2]
    assert cli("runs", tmp_path / "none").exit_code == 2
    # train's --runs-dir names the same folder to runs, as DIR does
    assert cli("runs", "--runs-dir", folder, "--json").output == cli("runs", folder, "--json").output
    assert cli("runs", folder, "--runs-dir", folder / ".." / "runs", "--json").exit_code == 0  # one folder, spelt twice
    two = cli("runs", folder, "--runs-dir", tmp_path / "other")
    assert two.exit_code == 2 and two.output == (  # its own fix alone, not click's usage after it
        f"error: DIR {folder} and --runs-dir {tmp_path / 'other'} name two folders; give one of them\n")


def test_runs_lists_a_run_whose_json_files_were_edited_into_something_else(trained_run, tmp_path, cli):
    folder = tmp_path / "runs"
    edited = shutil.copytree(trained_run, folder / "edited-20260101-000000")
    shutil.copytree(trained_run, folder / trained_run.name)
    (edited / "summary.json").write_text("[1, 2]")
    (edited / "status.json").write_text('"finished"')
    (edited / "metrics.jsonl").write_text('[]\n{"epoch": 1, "val_acc": 0.5}\n')
    for options in ((), ("--json",)):
        result = cli("runs", folder, *options)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    rows = {row["run"]: row for row in json.loads(result.output)}
    assert rows["edited-20260101-000000"]["epochs"] == 1 and rows["edited-20260101-000000"]["best_val_acc"] == 0.5
    assert rows[trained_run.name]["status"] == "finished"


def test_runs_given_one_run_directory_shows_that_run(trained_run, cli):
    result = cli("runs", trained_run, "--json")
    assert result.exit_code == 0, result.output
    assert [row["run"] for row in json.loads(result.output)] == [trained_run.name]


def test_a_run_whose_start_is_unknown_shows_a_dash_as_other_unknowns_do(trained_run, tmp_path, cli, monkeypatch):
    renamed = shutil.copytree(trained_run, tmp_path / "runs" / "mine")  # no time stamp in its name
    (renamed / "status.json").unlink()  # nor a status that says when it started
    monkeypatch.setattr(console, "_width", 140)  # wide enough for the started column
    result = cli("runs", renamed.parent)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.split()[:1] == ["mine"])
    assert row.split()[:3] == ["mine", "-", "small"], row


def test_status_keeps_when_and_from_what_the_run_started_as_it_changes(tmp_path):
    run = RunDir.create(tmp_path, "x")
    write_json(run.status_file, {"status": "running", "started": "2026-01-01T00:00:00", "config": "x.yaml"})
    run.set_status("finished")
    status = json.loads(run.status_file.read_text())
    assert (status["status"], status["started"], status["config"]) == ("finished", "2026-01-01T00:00:00", "x.yaml")


def test_an_unfinished_runs_best_validation_accuracy_is_its_best_epochs(tmp_path, cli):
    run = RunDir(tmp_path / "runs" / "x-20260101-000000")
    run.path.mkdir(parents=True)
    (run.path / "config.yaml").write_text("name: x\ntrain: {epochs: 5}\n")
    run.metrics_file.write_text("".join(json.dumps({"epoch": epoch, "val_acc": acc, "seconds": 1.0}) + "\n"
                                        for epoch, acc in ((1, 0.5), (2, 0.8), (3, 0.6))))
    write_json(run.status_file, {"status": "interrupted"})
    result = cli("runs", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    assert [(row["epochs"], row["best_val_acc"]) for row in json.loads(result.output)] == [(3, 0.8)]


def test_a_run_without_a_summary_is_listed_from_its_config_metrics_and_status(tmp_path, cli, monkeypatch):
    folder = tmp_path / "runs"
    stopped, unknown = RunDir(folder / "x-20260101-000000"), RunDir(folder / "y-20260101-000001")
    for run in (stopped, unknown):
        run.path.mkdir(parents=True)
        (run.path / "config.yaml").write_text("name: x\ntrain: {epochs: 5}\n")
    # an epoch whose validation accuracy was not a number (null) is passed over, not compared
    stopped.metrics_file.write_text("".join(json.dumps({"epoch": epoch, "val_acc": acc, "seconds": seconds}) + "\n"
                                            for epoch, acc, seconds in ((1, 0.5, 1.5), (2, None, 2.0))))
    write_json(stopped.status_file, {"status": "interrupted"})  # unknown: no status.json at all
    result = cli("runs", folder, "--json")
    assert result.exit_code == 0, result.output
    rows = {row["run"]: row for row in json.loads(result.output)}
    assert [rows[stopped.path.name][key] for key in ("epochs", "epochs_planned", "best_val_acc", "wall_seconds",
                                                     "status")] == [2, 5, 0.5, 3.5, "interrupted"]
    assert rows[unknown.path.name]["status"] == "unknown"
    monkeypatch.setattr(console, "_width", 80)
    line = next(line for line in cli("runs", folder).output.splitlines() if line.split()[:1] == [stopped.path.name])
    assert line.split()[1:] == ["2/5", "50.00%", "-", "3.5s", "interrupted"], line


def test_runs_are_listed_in_the_order_they_started_whatever_their_names(tmp_path, cli):
    folder = tmp_path / "runs"
    # no status.json: the start is read off the name, a second run of that second's (-2) too
    for name in ("b-20260102-000000", "a-20260103-000000", "c-20260101-000000-2"):
        (folder / name).mkdir(parents=True)
        (folder / name / "config.yaml").write_text("name: x\n")
    result = cli("runs", folder, "--json")
    assert result.exit_code == 0, result.output
    assert [(row["run"], row["started"]) for row in json.loads(result.output)] == [
        ("c-20260101-000000-2", "2026-01-01T00:00:00"), ("b-20260102-000000", "2026-01-02T00:00:00"),
        ("a-20260103-000000", "2026-01-03T00:00:00")]


def test_in_80_columns_a_long_run_name_leaves_the_scores_and_status_whole(trained_run, tmp_path, cli, monkeypatch):
    """A sweep's trials (trial-000-STAMP) and runs of speedrun.yaml or notebook.yaml have names of 24
    characters and more: in a terminal of 80 columns their test accuracy and an 'interrupted' status
    were cut short ('97.5…', 'interrupt…'), the figures the table is read for."""
    folder = tmp_path / "runs"
    finished = shutil.copytree(trained_run, folder / "trial-000-20260101-000000")
    stopped = RunDir(folder / "speedrun-20260101-000001")
    stopped.path.mkdir()
    (stopped.path / "config.yaml").write_text("name: speedrun\ntrain: {epochs: 4}\n")
    (stopped.path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_acc": 0.5, "seconds": 2.0}) + "\n")
    write_json(stopped.status_file, {"status": "interrupted", "pid": 1})
    test_acc = json.loads((finished / "summary.json").read_text())["test_acc"]
    monkeypatch.setattr(console, "_width", 80)  # as a terminal of 80 columns
    table = cli("runs", folder)
    assert table.exit_code == 0, table.output
    assert f"{test_acc:.2%}" in table.output and "interrupted" in table.output and "…" not in table.output, \
        table.output
    assert max(map(len, table.output.splitlines())) <= 80, table.output


def test_the_sweep_folders_of_a_listing_are_those_whose_trials_it_holds(tmp_path):
    from mnistcnn.runlist import list_runs, sweep_folders
    from mnistcnn.sweep.folder import SweepDir

    folder = tmp_path / "runs"
    for name in ("b-sweep-20260101-000000", "a-sweep-20260101-000000"):
        sweep_dir = SweepDir(folder / name)
        for trial in ("trial-000-20260101-000000", "trial-001-20260101-000001"):
            (sweep_dir.trials / trial).mkdir(parents=True)
            (sweep_dir.trials / trial / "config.yaml").write_text("name: t\n")
        sweep_dir.sweep_file.write_text("name: s\n")
    (folder / "lone-20260101-000000").mkdir()
    (folder / "lone-20260101-000000" / "config.yaml").write_text("name: lone\n")
    # a trial and a run being set up out of sight (.NAME-STAMP.part) are no rows yet
    for hidden in (SweepDir(folder / "a-sweep-20260101-000000").trials / ".trial-002-20260101-000002.part",
                   folder / ".lone-20260101-000001.part"):
        hidden.mkdir()
        (hidden / "config.yaml").write_text("name: t\n")
    rows = list_runs(folder)
    assert len(rows) == 5
    assert [sweep_dir.path for sweep_dir in sweep_folders(rows)] == [folder / "a-sweep-20260101-000000",
                                                                     folder / "b-sweep-20260101-000000"]
    (one,) = sweep_folders(list_runs(folder / "a-sweep-20260101-000000"))  # a sweep folder given: its trials
    assert one.trials == folder / "a-sweep-20260101-000000" / "trials"
    assert sweep_folders(list_runs(folder / "lone-20260101-000000")) == []


def test_runs_of_the_folder_one_is_in_names_it(tmp_path, monkeypatch, cli):
    from mnistcnn.runlist import list_runs
    from mnistcnn.sweep.folder import SweepDir

    sweep_dir = SweepDir(tmp_path / "tiny-20260101-000000")
    (sweep_dir.trials / "trial-000-20260101-000000").mkdir(parents=True)
    (sweep_dir.trials / "trial-000-20260101-000000" / "config.yaml").write_text("name: t\n")
    sweep_dir.sweep_file.write_text("name: s\n")
    monkeypatch.chdir(sweep_dir.path)
    (row,) = list_runs(".")
    assert row["sweep"] == "tiny-20260101-000000" and row["run"] == "trial-000-20260101-000000"
    table = cli("runs", ".")  # the line under the table named the sweep by Path('.').name, which is empty
    assert table.exit_code == 0 and "sweep tiny-20260101-000000: its trials are in trials/" in table.output, \
        table.output
    monkeypatch.chdir(sweep_dir.trials / "trial-000-20260101-000000")
    (row,) = list_runs(".")
    assert row["run"] == "trial-000-20260101-000000" and row["started"] == "2026-01-01T00:00:00", row


def test_a_missing_run_points_to_the_runs_folder_the_commands_use(tmp_path, cli, monkeypatch):
    """The message names folders.RUNS_DIR, the folder `mnistcnn runs` lists without DIR, not a
    copy of its name."""
    import mnistcnn.runs as runs

    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "experiments")
    result = cli("eval", tmp_path / "gone")
    assert result.exit_code == 2 and f"lists the runs in {tmp_path / 'experiments'}/" in result.output, result.output
