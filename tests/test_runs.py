"""The mnistcnn runs table."""
import json
import os
import shutil
from pathlib import Path

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


def test_a_run_is_listed_from_its_status_alone_started_when_it_says_and_under_the_name_of_its_link(tmp_path, cli):
    folder = tmp_path / "runs"
    # config.yaml lost (removed by hand); a status whose start is not the stamp of the folder's name (a resumed
    # copy's); a symbolic link to a run, listed under its own name; a file, which is no run
    lost, stamped = RunDir(folder / "lost-20260101-000000"), RunDir(folder / "x-20260102-000000")
    for run in (lost, stamped):
        run.path.mkdir(parents=True)
    (stamped.path / "config.yaml").write_text("name: x\n")
    write_json(lost.status_file, {"status": "interrupted"})
    write_json(stamped.status_file, {"status": "interrupted", "started": "2026-01-03T04:05:06"})
    (folder / "link").symlink_to(stamped.path)
    (folder / "notes-20260101-000000").write_text("")
    result = cli("runs", folder, "--json")
    assert result.exit_code == 0, result.output
    assert [(row["run"], row["started"], row["status"]) for row in json.loads(result.output)] == [
        ("lost-20260101-000000", "2026-01-01T00:00:00", "interrupted"),
        ("link", "2026-01-03T04:05:06", "interrupted"), ("x-20260102-000000", "2026-01-03T04:05:06", "interrupted")]


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


def test_a_path_given_as_a_run_that_is_none_is_told_what_it_is(tmp_path):
    import pytest

    from mnistcnn.errors import UsageError

    def refusal(path):
        with pytest.raises(UsageError) as refused:
            RunDir.open(path)
        return str(refused.value)

    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "small.YAML").write_text("x")  # a config by its suffix in any case
    (tmp_path / "empty").mkdir()
    (tmp_path / "plain" / "checkpoints").mkdir(parents=True)  # a folder named so, of no run
    assert "notes.txt: is a file, not a run directory" in refusal(tmp_path / "notes.txt")
    assert "small.YAML: is a config, not a run directory" in refusal(tmp_path / "small.YAML")
    assert "gone: run directory not found" in refusal(tmp_path / "gone")
    assert "empty: not a run directory (no config.yaml, no checkpoints/)" in refusal(tmp_path / "empty")
    assert "checkpoints: not a run directory (no config.yaml" in refusal(tmp_path / "plain" / "checkpoints")
    pictures = tmp_path / "scans"
    pictures.mkdir()
    (pictures / "SEVEN.PNG").write_bytes(b"")
    assert "is a folder of pictures, not a run" in refusal(pictures)
    sweep = tmp_path / "sweep"
    (sweep / "trials").mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("x")
    assert "is a sweep folder, not a run" in refusal(sweep)
    runs = tmp_path / "runs"
    for name, age in (("old-20260101-000000", 100), ("new-20260102-000000", 0)):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text("x")
        os.utime(runs / name, (1_700_000_000 - age, 1_700_000_000 - age))
    assert f"such as {runs / 'new-20260102-000000'} (" in refusal(runs)
    only_config, only_checkpoints = tmp_path / "a", tmp_path / "b"
    (only_checkpoints / "checkpoints").mkdir(parents=True)
    only_config.mkdir()
    (only_config / "config.yaml").write_text("x")
    assert RunDir.open(only_config).path == only_config and RunDir.open(only_checkpoints).path == only_checkpoints


def test_a_checkpoint_is_chosen_from_a_run_or_given_as_a_file_but_not_both(tmp_path):
    import pytest

    from mnistcnn.errors import UsageError
    from mnistcnn.runs import resolve_checkpoint

    run = RunDir.create(tmp_path, "r")
    (run.config_file).write_text("x")
    run.checkpoint("last").write_bytes(b"")
    assert resolve_checkpoint(run.path, "last") == run.checkpoint("last")
    with pytest.raises(UsageError, match="the run has no checkpoints/best.npz; try --checkpoint last$"):
        resolve_checkpoint(run.path)
    run.checkpoint("last").unlink()
    with pytest.raises(UsageError, match="no checkpoints/best.npz, nor any other checkpoint; train its config again"):
        resolve_checkpoint(run.path)
    run.config_file.unlink()
    with pytest.raises(UsageError, match=r"nor any other checkpoint; train its config file again \(this run's config"):
        resolve_checkpoint(run.path)
    loose, onnx = tmp_path / "loose.npz", tmp_path / "model.onnx"
    loose.write_bytes(b"")
    onnx.write_bytes(b"")
    assert resolve_checkpoint(loose) == loose
    with pytest.raises(UsageError, match="--checkpoint last: .*loose.npz is a checkpoint file, not a run directory"):
        resolve_checkpoint(loose, "last")
    with pytest.raises(UsageError, match="--checkpoint best: .*model.onnx is an exported ONNX model, not a run"):
        resolve_checkpoint(onnx, "best")
    with pytest.raises(UsageError, match="missing.npz: no such run directory or checkpoint"):
        resolve_checkpoint(tmp_path / "missing.npz")


def test_a_run_not_found_names_the_run_it_is_near(tmp_path, monkeypatch):
    """A run's name copied from `mnistcnn runs` (without runs/), without its stamp, a character
    short, a checkpoint without .npz: each is told the path meant; a name near none is not."""
    import pytest

    from mnistcnn.errors import UsageError
    from mnistcnn.runs import resolve_checkpoint

    monkeypatch.chdir(tmp_path)
    runs = Path("runs")
    for name, age in (("quick-20260101-000000", 100), ("quick-20260102-000000", 0), ("lenet-20260101-000000", 0)):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "config.yaml").write_text("x")
        (runs / name / "checkpoints" / "best.npz").write_bytes(b"")
        os.utime(runs / name, (1_700_000_000 - age, 1_700_000_000 - age))

    def refusal(path):
        with pytest.raises(UsageError) as refused:
            resolve_checkpoint(path)
        return str(refused.value)

    trial = runs / "search-20260101-000000" / "trials" / "trial-000-20260101-000001"  # a sweep's trial
    (trial / "checkpoints").mkdir(parents=True)
    (trial / "config.yaml").write_text("x")
    (runs / "search-20260101-000000" / "sweep.yaml").write_text("x")
    meant = {"quick-20260101-000000": runs / "quick-20260101-000000",
             "trial-000-20260101-000001": trial, "runs/trial-000-20260101-000001": trial,
             "runs/quick": runs / "quick-20260102-000000",  # the newest of that name
             "runs/quick-20250505-101010": runs / "quick-20260102-000000",  # an example's stamp: the newest too
             "runs/lenet-2026010-000000": runs / "lenet-20260101-000000",
             "runs/lenet-20260101-000000/checkpoints/best": runs / "lenet-20260101-000000/checkpoints/best.npz"}
    for given, path in meant.items():
        assert f"{given}: no such run directory or checkpoint; did you mean {path}? `mnistcnn runs`" in refusal(given)
    assert "did you mean" not in refusal("runs/speedrun")
    with pytest.raises(UsageError, match="run directory not found; did you mean runs/lenet-20260101-000000?"):
        RunDir.open("lenet-20260101-000000x")


def test_a_runs_files_and_the_words_of_its_summary(tmp_path):
    from mnistcnn.runs import output_folder, run_summary, summary_rows

    run = RunDir.create(tmp_path, "r")
    best, loose = run.checkpoint("best"), tmp_path / "loose.npz"
    assert output_folder(best, "inspect") == run.path / "inspect" and output_folder(best) == run.path
    assert output_folder(loose, "inspect") == tmp_path / "loose-inspect" and output_folder(loose) == tmp_path
    assert run_summary(loose) is None and run_summary(best) is None  # outside a run; a run before its end
    run.write_metrics([{"epoch": 1, "step": 10, "lr": 0.1, "val_acc": 0.5, "swa_val_acc": 0.6}])
    assert (run.path / "metrics.csv").read_text().splitlines()[1] == "1,10,0.1,,,,0.5,,"
    summary = {"epochs": 3, "stopped_early": True, "best_val_acc": 0.0, "best_epoch": 1, "final_val_acc": 0.25,
               "test_acc": None, "wall_seconds": 2.0, "images_per_s": None, "params": 1234}
    assert dict(summary_rows(summary)) == {
        "epochs": "3 (early stop)", "best validation accuracy": "0.00% (epoch 1)",
        "final validation accuracy": "25.00%",
        "test accuracy (best checkpoint)": "-", "wall time": "2.0 s", "images/s": "-", "parameters": "1,234"}
    summary.update(stopped_early=False, images_per_s=1500.4)
    assert dict(summary_rows(summary))["epochs"] == "3" and dict(summary_rows(summary))["images/s"] == "1,500"


def test_a_refused_trainer_is_told_which_process_holds_the_run(tmp_path, read_only):
    import pytest

    from mnistcnn.errors import UsageError

    run = RunDir.create(tmp_path, "r")
    run.check_writable()  # no lock file yet: a run copied, or never trained
    for _ in range(2):  # each holder writes its own process id over the last one's
        with run.training_lock():
            pass
    assert f"is being trained by process {os.getpid()} now" in str(run.busy_error())
    run.lock_file.write_text("")  # the holder has not written it yet
    assert "is being trained by another process now" in str(run.busy_error())
    read_only(run.lock_file)
    with pytest.raises(UsageError, match=r"\.training\.lock: cannot write this file, and --resume trains"):
        run.check_writable()
    read_only(run.path)
    with pytest.raises(UsageError, match=f"^{run.path}: cannot write in this folder, and --resume trains"):
        run.check_writable()


def test_a_look_at_whether_a_run_is_being_trained_does_not_refuse_its_trainer(tmp_path, monkeypatch):
    import fcntl

    from mnistcnn import runs

    run = RunDir.create(tmp_path, "r")
    run.lock_file.write_text("")
    look = open(run.lock_file)  # as being_trained holds it, for an instant
    fcntl.flock(look, fcntl.LOCK_SH | fcntl.LOCK_NB)
    waits = []

    def look_ends(seconds):  # while the trainer waits to try again: a timer thread to end it, held up on a loaded
        waits.append(seconds)  # machine past the trainer's last try, got the trainer refused
        look.close()

    monkeypatch.setattr(runs.time, "sleep", look_ends)
    with run.training_lock():
        assert run.lock_file.read_text() == f"{os.getpid()}\n"
    assert len(waits) == 1  # refused while the look held it, taken at the next try


def test_a_run_whose_config_sets_a_key_where_it_does_not_act_still_evaluates_and_resumes(run, cli):
    # a run trained before such keys were refused: its config.yaml holds sgd's momentum beside adam
    config_file = run / "config.yaml"
    text = config_file.read_text()
    assert "type: adam" in text and "momentum: 0.9," in text
    config_file.write_text(text.replace("momentum: 0.9,", "momentum: 0.5,"))
    evaluated = cli("eval", run, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    epochs = len((run / "metrics.jsonl").read_text().splitlines())
    resumed = cli("train", "--resume", run, "--epochs", epochs + 1, "--dry-run")
    assert resumed.exit_code == 0, resumed.output
    afresh = cli("train", config_file, "--dry-run")  # a new run from it is told
    assert afresh.exit_code == 2 and "train.optimizer.momentum acts only with optimizer sgd" in afresh.output
