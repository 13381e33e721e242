"""A newcomer's mistakes get a message that names the right cause: the option rather than the
file, the kind of path given where another was expected, and a finished run that is not
resumed as if it had stopped."""
import json
import os
import shutil
from pathlib import Path

import click
import pytest

QUICK = Path(__file__).resolve().parent.parent / "configs" / "quick.yaml"
SWEEP = QUICK.parent / "sweeps" / "quick-lr.yaml"  # a sweep file whose base is QUICK


@pytest.mark.parametrize("options,message", [
    (["--set", "train.epochs=abc"], "error: --set train.epochs=abc: train.epochs: must be an integer"),
    (["--lr", "-1"], "error: --lr -1.0: train.optimizer.lr: must be > 0"),
    (["--epochs", "0"], "error: --epochs 0: train.epochs: must be >= 1"),
    (["--set", "model.layers[0].filtres=4"], "error: --set model.layers[0].filtres=4: model.layers[0].filtres: "
                                             "conv2d has no argument 'filtres'; did you mean 'filters'?"),
    (["--set", "model.layers[12].filters=4"], "error: --set model.layers[12].filters=4: model.layers has 8 entries "
                                              "(0 to 7)"),
    (["--set", "model.layers.0.filters=4"], "error: --set model.layers.0.filters=4: '0' is not a key name; e.g. "
                                            "model.layers[0].filters=4"),
    (["--set", "train.optimizer.lr.x=1"], "error: --set train.optimizer.lr.x=1: train.optimizer.lr is a value, not "
                                          "a section"),
    (["--epochs", "1", "--set", "train=5"], "error: --set train=5: train must be a section with keys; --epochs sets "
                                            "train.epochs in it"),
    (["--set", "data.train_limit=10", "--set", "data=5"], "error: --set data=5: data: must be a mapping of keys"),
])
def test_an_option_error_names_the_option_not_the_file(cli, options, message):
    result = cli("train", QUICK, *options, "--dry-run")
    assert result.exit_code == 2
    assert result.output.startswith(message), result.output
    assert str(QUICK) not in result.output.splitlines()[0]


def test_dry_run_checks_the_data_folder(cli, tmp_path):
    result = cli("train", QUICK, "--data-dir", tmp_path / "nowhere", "--dry-run")
    assert result.exit_code == 2 and f"{tmp_path / 'nowhere'}: data folder not found" in result.output
    assert "Traceback" not in result.output


def test_a_data_folder_that_the_variable_named_is_blamed_on_the_variable(cli, trained_run, tmp_path, monkeypatch):
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv("MNISTCNN_DATA_DIR", str(nowhere))
    result = cli("eval", trained_run)
    assert result.exit_code == 2 and result.output == (
        f"error: {nowhere}: data folder not found; the MNISTCNN_DATA_DIR variable names it: point the variable at a "
        "folder holding train-images-idx3-ubyte[.gz] and the other three MNIST-layout files, or unset it\n")
    given = cli("eval", trained_run, "--data-dir", nowhere)  # the option, not the variable
    assert given.exit_code == 2 and "MNISTCNN_DATA_DIR" not in given.output
    assert f"error: {nowhere}: data folder not found; point data.dir (or --data-dir) at" in given.output
    nowhere.mkdir()  # a folder, without the four files: blamed on the variable too
    result = cli("eval", trained_run)
    assert result.exit_code == 2 and result.output == (
        f"error: {nowhere}: no train-images-idx3-ubyte[.gz] (or train-images.idx3-ubyte) in this folder; the "
        "MNISTCNN_DATA_DIR variable names it: point the variable at a folder holding train-images, train-labels, "
        "t10k-images and t10k-labels, or unset it\n")


def test_the_help_of_data_dir_names_the_variable_that_gives_it_too(cli):
    help_text = " ".join(cli("train", "--help").output.split())
    assert "--data-dir PATH Folder of MNIST-layout IDX files (default: the bundled MNIST). [env var: " \
           "MNISTCNN_DATA_DIR]" in help_text


@pytest.mark.parametrize("options,message", [
    (["--set", "model.input_shape=[32, 32, 1]"], "error: bundled MNIST: images are (28, 28, 1) (H, W, C) but the "
                                                 "model takes (32, 32, 1); set model.input_shape in"),
    (["--set", "data.validation=60000"], "error: data.validation is 60000, but bundled MNIST has 60000 training "
                                         "images; set data.validation (in"),
])
def test_dry_run_refuses_what_training_would_refuse(cli, tmp_path, options, message):
    for dry_run in (["--dry-run"], []):
        result = cli("train", QUICK, *options, *dry_run, "--runs-dir", tmp_path)
        assert result.exit_code == 2 and result.output.startswith(message), result.output  # before the model table
        assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_class_names_fewer_than_the_labels_are_refused_by_a_dry_run_naming_data_classes(cli, tmp_path):
    options = ["--set", "data.classes=[odd, even]", "--set", "model.layers[-1].units=2"]
    for dry_run in (["--dry-run"], []):
        result = cli("train", QUICK, *options, *dry_run, "--runs-dir", tmp_path)
        words = "train-labels-idx1-ubyte.gz: label 5 at index 0 is outside 0-1; data.classes must name one class " \
            "for each label (2 now"
        assert result.exit_code == 2 and words in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_dry_run_refuses_a_truncated_raw_image_file_as_training_would(cli, tmp_path):
    import gzip

    from mnistcnn.data import default_data_dir

    for source in default_data_dir().glob("*-ubyte.gz"):
        (tmp_path / source.name[:-3]).write_bytes(gzip.decompress(source.read_bytes()))
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1_000_000])
    checked = cli("train", QUICK, "--data-dir", tmp_path, "--dry-run")
    assert checked.exit_code == 2 and checked.output == (
        f"error: {images}: truncated: header says (60000, 28, 28) (47040000 bytes of data) but the file has 999984\n")


def test_a_run_that_cannot_start_leaves_no_folder(cli, tmp_path):
    result = cli("train", QUICK, "--set", "data.train_limit=10", "--set", "train.drop_last=true", "--runs-dir",
                 tmp_path, "--quiet")
    assert result.exit_code == 2 and "fewer than one batch of 64 with train.drop_last" in result.output
    assert list(tmp_path.iterdir()) == []
    checked = cli("train", QUICK, "--set", "data.train_limit=10", "--set", "train.drop_last=true", "--dry-run")
    assert checked.exit_code == 2 and checked.output == result.output  # --dry-run refuses what the run would


@pytest.mark.parametrize("command", [["train", QUICK], ["train", QUICK, "--dry-run"],
                                     ["sweep", QUICK.parent / "sweeps" / "quick-lr.yaml"],
                                     ["sweep", QUICK.parent / "sweeps" / "quick-lr.yaml", "--dry-run"]],
                         ids=["train", "train-dry-run", "sweep", "sweep-dry-run"])
def test_a_runs_folder_that_cannot_be_written_is_refused_before_anything_is_printed(cli, tmp_path, read_only,
                                                                                   command):
    (tmp_path / "elsewhere").mkdir()
    read_only(tmp_path)
    result = cli(*command, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr == (f"error: --runs-dir {tmp_path / 'runs'}: cannot create this folder (Permission denied); "
                             "write elsewhere with --runs-dir DIR\n")
    result = cli(*command, "--runs-dir", tmp_path / "elsewhere")
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr == (f"error: --runs-dir {tmp_path / 'elsewhere'}: cannot write in this folder (Permission "
                             "denied); write elsewhere with --runs-dir DIR\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["elsewhere"]
    assert cli("train", QUICK, "--print-config", "--runs-dir", tmp_path / "runs").exit_code == 0  # it writes nothing


def test_a_read_only_filesystem_is_named_as_such_not_as_a_permission(cli, tmp_path, read_only, monkeypatch):
    read_only(tmp_path)
    statvfs = os.statvfs

    def mounted_read_only(path):  # as a read-only mount reports itself
        found = statvfs(path)
        return os.statvfs_result((*found[:8], found.f_flag | os.ST_RDONLY, found.f_namemax))

    monkeypatch.setattr(os, "statvfs", mounted_read_only)
    result = cli("train", QUICK, "--runs-dir", tmp_path)
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr == (f"error: --runs-dir {tmp_path}: cannot write in this folder (Read-only file system); "
                             "write elsewhere with --runs-dir DIR\n")


def test_a_runs_folder_that_cannot_be_entered_is_refused_as_one_that_cannot_be_written(cli, tmp_path, monkeypatch):
    # write but no search permission (chmod a-x): no file can be made in it either; asked of os.access as for a
    # user, since root, who runs CI, may enter any folder
    access = os.access

    def no_search(path, mode, *args, **kwargs):
        return not (mode & os.X_OK and Path(path) == tmp_path) and access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", no_search)
    result = cli("train", QUICK, "--runs-dir", tmp_path)
    assert result.exit_code == 2 and result.stderr == (f"error: --runs-dir {tmp_path}: cannot write in this folder "
                                                       "(Permission denied); write elsewhere with --runs-dir DIR\n")


def test_a_missing_config_points_at_the_ready_made_ones_from_any_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("train", "configs/quick.yaml")
    assert result.exit_code == 2
    hint = f"did you mean {QUICK}? see {QUICK.parent}/ for ready-made ones"
    assert result.output == f"error: configs/quick.yaml: config file not found; {hint}\n"
    assert cli("train", "mine.yaml").output == (f"error: mine.yaml: config file not found; see {QUICK.parent}/ for "
                                                 "ready-made ones\n")  # no ready-made config is named near it


def test_a_slip_in_a_ready_made_configs_name_is_answered_with_its_path(cli, monkeypatch):
    """A newcomer's slips: the name alone, without its folder, a letter missing, .yml for .yaml."""
    monkeypatch.chdir(QUICK.parent.parent)
    for given in ("quick", "quick.yaml", "configs/quik.yaml", "configs/quick.yml"):
        result = cli("train", given)
        assert result.exit_code == 2 and result.output == (
            f"error: {given}: config file not found; did you mean configs/quick.yaml? see configs/ for ready-made "
            "ones\n"), result.output


def test_a_layer_is_reachable_from_set(cli):
    result = cli("train", QUICK, "--set", "model.layers[0].filters=4", "--set", "model.layers[-1].units=10",
                 "--print-config")
    assert result.exit_code == 0, result.output
    assert "- {type: conv2d, filters: 4," in result.output


def test_a_path_of_the_wrong_kind_says_what_it_is(cli, trained_run, tmp_path):
    picture = tmp_path / "digit.jpg"
    picture.write_bytes(b"")
    picture_words = (f"error: {picture}: a .jpg file is a picture, not a run directory or a checkpoint; give the run "
                     f"(runs/NAME-STAMP) or one of its checkpoints; to classify the picture: mnistcnn predict RUN "
                     f"{picture}\n")
    checks = [
        *[((command, picture), picture_words) for command in ("eval", "export", "serve")],
        (("eval", QUICK), f"error: {QUICK}: is a config, not a run or a checkpoint; train it first (mnistcnn train"),
        (("eval", trained_run / "config.yaml"), f"error: {trained_run / 'config.yaml'}: is the config of the run "
                                                f"{trained_run}; give the run directory itself"),
        (("sweep", QUICK), f"error: {QUICK}: is a training config, not a sweep file; train it with mnistcnn train"),
        *[((command, SWEEP), f"error: {SWEEP}: is a sweep file, not a training config; run it with mnistcnn sweep "
                             f"{SWEEP}, or train its base config: mnistcnn train {QUICK}\n")
          for command in ("train", "inspect-data", "inspect-layer")],
        (("train", trained_run), f"error: {trained_run}: is a run directory, not a config; train it longer with "
                                 f"mnistcnn train --resume {trained_run} --epochs N, or train its config afresh"),
        (("train", "--resume", trained_run / "checkpoints" / "best.npz"),
         f"error: {trained_run / 'checkpoints' / 'best.npz'}: a run goes on from its last checkpoint only: mnistcnn "
         f"train --resume {trained_run}\n"),
        (("train", trained_run / "checkpoints" / "best.npz"), "is a checkpoint, not a YAML config"),
        (("train", QUICK, "--runs-dir", QUICK), f"error: --runs-dir {QUICK}: is a file; give a folder (it is created "
                                                "if missing)\n"),
        (("runs", QUICK), f"error: {QUICK}: is a file, not a folder; give the folder that holds your run"),
        (("train", "--resume", QUICK), f"error: {QUICK}: is a config, not a run directory; give the folder a run "
                                       "wrote"),
    ]
    for args, message in checks:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_a_default_runs_folder_that_is_a_file_names_the_option_that_writes_elsewhere(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("")  # not the user's --runs-dir: its fix is to give one
    for args in (("train", QUICK), ("sweep", SWEEP)):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output == "error: runs: is a file, not a folder; write elsewhere with --runs-dir DIR\n", args


def test_a_ctrl_c_while_the_command_loads_is_one_line_and_the_shells_code(monkeypatch, capsys):
    import sys

    import mnistcnn

    class CtrlC:  # the import of the command's module meets a Ctrl-C, as while NumPy loads
        def find_spec(self, name, path=None, target=None):
            if name == "mnistcnn.cli":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "mnistcnn.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [CtrlC(), *sys.meta_path])
    with pytest.raises(SystemExit) as ended:
        mnistcnn.command()
    assert ended.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"


def test_a_signal_while_an_extra_loads_is_that_signal_not_a_missing_extra(monkeypatch, cli, trained_run):
    """A Ctrl-C as export loaded onnxruntime said 'mnistcnn export needs onnx and onnxruntime, which
    are not installed' (exit 2): an extension module whose initialisation a signal cuts short
    (pybind11's) raises ImportError('initialization failed') from the KeyboardInterrupt."""
    import sys

    from mnistcnn.errors import Terminated

    class CutShort:  # the extension's initialisation meets the signal
        def __init__(self, module, signal):
            self.module, self.signal = module, signal

        def find_spec(self, name, path=None, target=None):
            if name == self.module:
                raise ImportError("initialization failed") from self.signal()

    for module, args in (("onnxruntime", ("export", trained_run)), ("uvicorn", ("serve", trained_run)),
                         ("optuna", ("sweep", SWEEP, "--dry-run"))):
        for signal, code in ((KeyboardInterrupt, 130), (Terminated, 143)):
            with monkeypatch.context() as patched:
                patched.delitem(sys.modules, module, raising=False)
                patched.setattr(sys, "meta_path", [CutShort(module, signal), *sys.meta_path])
                result = cli(*args)
            assert (result.exit_code, result.output) == (code, "error: interrupted\n"), (module, signal)


def test_an_option_of_other_commands_is_said_to_be_theirs(cli, trained_run):
    result = cli("eval", trained_run, "--runs-dir", "runs")
    assert result.exit_code == 2 and "Did you mean" not in result.output  # click's guess was --data-dir
    assert "no such option '--runs-dir': eval does not take it; runs, sweep, train take it" in result.output
    assert "Did you mean '--save-inputs'?" in cli("predict", trained_run, "x.png", "--save-input", "seen").output


def test_a_usage_error_is_one_line_with_the_command_what_is_wrong_and_the_fix(cli, trained_run):
    said = {  # a newcomer's slips, and what each is told
        ("train", "c.yaml", "--epochs", "two"):
            "mnistcnn train: invalid value for '--epochs': 'two' is not a valid integer; see mnistcnn train --help",
        ("predict", trained_run): "mnistcnn predict: missing argument 'IMAGE|FOLDER|GLOB...'; usage: mnistcnn "
                                  "predict [OPTIONS] RUN|CHECKPOINT|MODEL.onnx IMAGE|FOLDER|GLOB...",
        ("train", "c.yaml", "--epochs"): "mnistcnn train: option '--epochs' requires an argument",
        ("--epochs", "1", "train", "c.yaml"): "mnistcnn: no such option '--epochs' before the command: an option goes "
                                              "after its command (mnistcnn train ... --epochs); train takes it",
        ("train", "c.yaml", "-epochs", "1"): "mnistcnn train: -epochs: an option's name takes two dashes: --epochs",
        ("train", "c.yaml", "--set", "train.epochs", "=", "3"):
            "--set KEY=VALUE is one word, without spaces around '=' (--set train.epochs=3)",
        ("train", "c.yaml", "--set", "train.epochs", "4"):
            "got unexpected extra argument (4); --set KEY=VALUE is one word, without spaces around '=' "
            "(--set train.epochs=4)",
        ("inspect-data", "c.yaml", "--set", "data.augment.rotate:", "20"):
            "--set KEY=VALUE is one word, without spaces around '=' (--set data.augment.rotate=20)",
        ("predict", "seven.jpg"): "mnistcnn predict: missing argument 'IMAGE|FOLDER|GLOB...'; the run comes first, "
                                  "then the pictures: mnistcnn predict RUN seven.jpg",
        ("trian",): "mnistcnn: no such command 'trian'. Did you mean 'train'?",
        ("help",): "mnistcnn: no such command 'help'; the commands: config-keys, download, eval,",
    }
    for arguments, words in said.items():
        result = cli(*arguments)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        assert words in result.output, result.output
    assert "Usage: mnistcnn [OPTIONS] COMMAND" in cli().output  # no command at all: the commands, with help


def test_an_option_named_as_a_key_of_the_file_is_told_where_that_setting_goes(cli):
    """A trainer's habits (--weight-decay 0.01) and a sweep file's keys as options (--trials 4) got
    only 'no such option', or click's guess of another option's name (inspect-data --rotate: --out)."""
    said = {
        ("train", QUICK, "--weight-decay", "0.01"): "no such option '--weight-decay': weight_decay is a config key; "
                                                    "--set train.weight_decay=0.01 sets it",
        ("train", QUICK, "--train-limit=500"): "--set data.train_limit=500 sets it",
        ("inspect-data", QUICK, "--rotate", "20"): "--set data.augment.rotate=20 sets it",
        ("sweep", SWEEP, "--trials", "4"): "no such option '--trials': trials is a key of the sweep file; write "
                                           "'trials: 4' in it",
        ("train", QUICK, "--batch_size", "32"): "Did you mean '--batch-size'?",  # an option's other spelling
    }
    for arguments, words in said.items():
        result = cli(*arguments)
        assert result.exit_code == 2 and result.output.count("\n") == 1 and words in result.output, result.output


def test_a_long_name_after_one_dash_is_said_whatever_click_read_it_as(cli, trained_run):
    said = {  # click reads -help as -h -e (no -e), -output as -o utput (then x.onnx is one argument too many)
        ("-help",): "mnistcnn: -help: an option's name takes two dashes: --help",
        ("train", "c.yaml", "-help"): "mnistcnn train: -help: an option's name takes two dashes: --help",
        ("export", trained_run, "-output", "x.onnx"): "mnistcnn export: -output: an option's name takes two dashes: "
                                                      "--output",
    }
    for arguments, words in said.items():
        result = cli(*arguments)
        assert result.exit_code == 2 and result.output.count("\n") == 1 and words in result.output, result.output
    assert "no such command 'trian'" in cli("trian", "-epochs", "3").output  # a slip after it is not the error


def test_an_option_before_its_command_is_shown_after_that_command(cli):
    for command, option in (("runs", "--json"), ("sweep", "--runs-dir"), ("train", "--data-dir")):
        result = cli(option, "x", command, "y")
        assert result.exit_code == 2 and f"(mnistcnn {command} ... {option})" in result.output, result.output


def test_a_damaged_last_checkpoint_is_not_resumed_and_the_message_says_what_to_do(cli, run):
    last = run / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[:1000])
    result = cli("train", "--resume", run, "--epochs", "9")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output  # before the model's table
    assert result.output == (f"error: {last}: not a .npz (zip) file; the file is truncated or corrupt. A run goes on "
                             f"from its last checkpoint only: train its config again: mnistcnn train "
                             f"{run / 'config.yaml'}\n")


def test_a_finished_run_is_not_resumed_but_can_be_trained_longer(cli, run):
    before = (run / "train.log").read_text()
    refused = cli("train", "--resume", run)
    assert refused.exit_code == 2
    # its last checkpoint stands for the run, as Lightning's ckpt_path does
    assert cli("train", "--resume", run / "checkpoints" / "last.npz").output == refused.output
    assert refused.output.startswith(f"error: {run}: finished after 2 epochs; there is nothing to resume. To train "
                                     f"it longer: mnistcnn train --resume {run} --epochs N, with N over 2")
    assert (run / "train.log").read_text() == before  # nothing appended, nothing rewritten
    assert cli("train", "--resume", run, "--epochs", "2").exit_code == 2
    longer = cli("train", "--resume", run, "--epochs", "3", "--quiet")
    assert longer.exit_code == 0, longer.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["resumed"][-1]["epochs"] == [2, 3]


def test_a_run_trained_longer_is_not_finished_until_it_ends_again(cli, run, signal_in_final_evaluation):
    import signal

    signal_in_final_evaluation(signal.SIGINT)
    assert cli("train", "--resume", run, "--epochs", "3", "--quiet").exit_code == 130
    (row,) = json.loads(cli("runs", run, "--json").output)
    assert (row["status"], row["epochs"], row["test_acc"]) == ("interrupted", 3, None)  # not the 2 epochs' summary
    signal_in_final_evaluation(None)
    assert cli("train", "--resume", run, "--quiet").exit_code == 0  # what is left: the final evaluation
    (row,) = json.loads(cli("runs", run, "--json").output)
    assert (row["status"], row["epochs"]) == ("finished", 3) and row["test_acc"] is not None


def test_a_run_whose_config_yaml_was_emptied_is_told_its_checkpoints_keep_a_copy(cli, run):
    """An emptied config.yaml of a run: the advice for a new config file (start from lenet.yaml)
    would lose the run; moved away, the copy in its checkpoints is read, as the test below shows."""
    (run / "config.yaml").write_text("")
    for command in (["train", "--resume", run, "--epochs", "3"], ["inspect-data", run]):
        result = cli(*command)
        assert result.exit_code == 2 and result.output == (
            f"error: {run / 'config.yaml'}: the config is empty; move it away, and the copy the run's checkpoints "
            "keep is read, or put its settings back\n"), result.output


def test_a_run_whose_config_yaml_was_deleted_is_read_from_its_checkpoint(cli, run, tmp_path):
    kept = (run / "config.yaml").read_text()
    (run / "config.yaml").unlink()
    grid = cli("inspect-data", run, "--count", "4")
    assert grid.exit_code == 0 and (run / "augmented.png").is_file(), grid.output
    longer = cli("train", "--resume", run, "--epochs", "3", "--quiet")
    assert longer.exit_code == 0, longer.output
    assert (run / "config.yaml").read_text() == kept.replace("epochs: 2", "epochs: 3")
    for name in ("config.yaml", "checkpoints/last.npz"):
        (run / name).unlink()
    unresumable = cli("train", "--resume", run, "--epochs", "4")
    assert unresumable.exit_code == 2 and unresumable.output == (
        f"error: {run}: has no checkpoints/last.npz to resume from; train its config file again (this run's "
        "config.yaml is gone)\n")
    (run / "checkpoints/best.npz").unlink()
    refused = cli("inspect-data", run)
    assert refused.exit_code == 2
    assert refused.output == f"error: {run}: has no config.yaml and no checkpoint that keeps one; give a config " \
                             "file instead\n"


def test_a_run_without_its_last_checkpoint_is_refused_before_anything_is_printed(cli, run):
    (run / "checkpoints" / "last.npz").unlink()
    result = cli("train", "--resume", run, "--epochs", "3")
    assert result.exit_code == 2
    assert result.output == (f"error: {run}: has no checkpoints/last.npz to resume from; train its config again: "
                             f"mnistcnn train {run / 'config.yaml'}\n")


def test_help_is_whole_and_every_command_shows_examples(cli):
    from mnistcnn.cli import main

    overview = cli("--help").output
    assert "First steps:" in overview and "..." not in overview.split("Commands:")[1].split("First steps:")[0]
    for name, command in main.commands.items():
        text = cli(name, "--help").output
        assert "Examples:" in text, name
        for option in command.params:
            if isinstance(option, click.Option):
                assert option.help, f"{name} {option.opts[0]} has no help"
    assert " train [OPTIONS] [CONFIG]\n" in cli("train", "--help").output.splitlines()[0] + "\n"


def test_help_prose_fits_an_80_column_terminal():
    """The words under a command's options (predict's exit codes, what export and serve need) are
    wrapped to the terminal as the rest of the help is; only an example's command line may be
    longer. Kept as written, they ran to 115 columns and the terminal broke them mid-word."""
    from click.testing import CliRunner

    from mnistcnn.cli import main

    for name in [None, *main.commands]:
        args = [name, "--help"] if name else ["--help"]
        text = CliRunner().invoke(main, args, prog_name="mnistcnn", terminal_width=80).output
        too_wide = [line for line in text.splitlines() if len(line) > 80 and not line.lstrip().startswith("mnistcnn ")]
        assert not too_wide, (name, too_wide)


def test_config_keys_lists_every_key_with_its_default(cli):
    result = cli("config-keys", "--json")
    keys = {row["key"]: row for row in json.loads(result.output)}
    assert keys["train.optimizer.lr"]["default"] == "0.001" and "learning rate" in keys["train.optimizer.lr"]["meaning"]
    assert keys["data.split"]["takes"] == "head | random"
    assert keys["train.optimizer.lr"]["takes"] == "float in (0, 1e+12]"  # as people write it, not 1000000000000.0
    assert "train.optimizer.lr: must be <= 1e+12; got" in cli("train", QUICK, "--lr", "1e13", "--dry-run").output
    assert cli("config-keys", "nope").exit_code == 2
    for query, found in (("lr", ["train.optimizer.lr", "train.schedule.min_lr"]), ("data.limit", ["data.train_limit"])):
        searched = cli("config-keys", query, "--json")  # no key starts so: the keys that hold it
        assert [row["key"] for row in json.loads(searched.output)] == found, searched.output
    layer_argument = cli("config-keys", "filters", "--json")
    assert [row["key"] for row in json.loads(layer_argument.output)] == ["model.layers[i]: conv2d"]
    top = cli("train", QUICK, "--dry-run", "--set", "lr=0.1")
    assert "lr: unknown key; it belongs in train.optimizer: did you mean 'train.optimizer.lr'?" in top.output
    several = cli("train", QUICK, "--dry-run", "--set", "type=sgd")  # no guess among several sections
    assert "type: unknown key; it belongs in one of data.preprocess, train.optimizer," in several.output
    typo = cli("config-keys", "train.optimzer")
    assert typo.exit_code == 2 and "did you mean 'train.optimizer'?" in typo.output, typo.output
    layers = {row["key"]: row for row in json.loads(cli("config-keys", "model.layers[0]", "--json").output)}
    assert layers["model.layers[i]: conv2d"]["takes"].startswith("filters, kernel=3, stride=1, padding=0,")
    assert "activation=null" in layers["model.layers[i]: dense"]["takes"] and "model.layers" not in layers
    # the form the help gives, model.layers[INDEX].ARGUMENT: the layer types that take the argument
    filters = [row["key"] for row in json.loads(cli("config-keys", "model.layers[0].filters", "--json").output)]
    assert filters == ["model.layers[i]: conv2d"]
    misspelt = cli("config-keys", "model.layers[2].unts")
    assert misspelt.exit_code == 2 and misspelt.output == (
        "error: no layer takes an argument that starts with 'unts'; did you mean 'model.layers[2].units'? "
        "`mnistcnn config-keys model.layers` lists every layer type's arguments\n")


def test_keras_style_activation_expands_and_softmax_is_refused(cli, tmp_path):
    text = QUICK.read_text().replace("- {type: dense, units: 10}", "- {type: dense, units: 10, activation: softmax}")
    softmax = tmp_path / "softmax.yaml"
    softmax.write_text(text)
    result = cli("train", softmax, "--dry-run")
    assert result.exit_code == 2 and "model.layers[7].activation: softmax is applied by the loss" in result.output
    relu = tmp_path / "relu.yaml"
    relu.write_text(QUICK.read_text().replace("- {type: conv2d, filters: 8, kernel: 5, padding: 2}\n    - {type: relu}",
                                              "- {type: conv2d, filters: 8, kernel: 5, padding: 2, activation: relu}"))
    assert relu.read_text() != QUICK.read_text()
    assert "activation: relu" in cli("train", relu, "--print-config").output  # the config as written
    plain, shorthand = (cli("train", path, "--dry-run").output for path in (QUICK, relu))
    assert shorthand.replace("model: relu", "model: quick") == plain  # the same model, its layers numbered alike
    # a key counts the entries as written: the second conv is model.layers[2] in relu.yaml, [3] in quick.yaml
    for path, index in ((relu, 2), (QUICK, 3)):
        narrowed = cli("train", path, "--dry-run", "--set", f"model.layers[{index}].filters=5")
        assert narrowed.exit_code == 0 and "(14, 14, 5)" in narrowed.output, narrowed.output
    wrong = cli("train", relu, "--dry-run", "--set", "model.layers[2].filters=0")
    assert "error: --set model.layers[2].filters=0: model.layers[2].filters: filters must be" in wrong.output
    planned = cli("train", relu, "--dry-run", "--set", "model.layers[2].stride=2",  # the plan's own check
                  "--set", "model.layers[2].algorithm=fft-gemm")
    assert planned.output.startswith("error: --set model.layers[2].algorithm=fft-gemm: model.layers[2].algorithm: "
                                     "fft-gemm needs stride 1"), planned.output


def test_training_ends_with_the_next_commands_for_its_run(trained):
    run, output = trained
    assert f"next: mnistcnn eval {run}" in output and f"mnistcnn predict {run} YOUR-DIGIT.png" in output
    curves = next(line for line in output.splitlines() if "loss and accuracy per epoch" in line)  # and its picture
    assert str(run / "curves.png") in curves and (run / "curves.png").is_file(), output


@pytest.mark.parametrize("signum,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_in_the_final_evaluation_stops_it_and_the_run_resumes(cli, write_config, only_run, tmp_path,
                                                                        signal_in_final_evaluation, signum, code,
                                                                        signals_raise):
    import signal

    signal_in_final_evaluation(getattr(signal, signum))
    config = write_config(tmp_path, 600, 1, 100)
    stopped = cli("train", config, "--runs-dir", tmp_path / "runs")
    run = only_run(tmp_path / "runs")
    assert stopped.exit_code == code, stopped.output
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    assert not (run / "summary.json").exists()
    signal_in_final_evaluation(None)
    resumed = cli("train", "--resume", run, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_once_the_summary_is_written_lets_the_run_end_whole(cli, write_config, only_run, tmp_path,
                                                                     monkeypatch, signum, signals_raise):
    import signal

    from mnistcnn import trainer

    write_curves = trainer.write_curves

    def signalled_while_drawing(*args, **kwargs):
        signal.raise_signal(getattr(signal, signum))
        return write_curves(*args, **kwargs)

    monkeypatch.setattr(trainer, "write_curves", signalled_while_drawing)
    result = cli("train", write_config(tmp_path, 600, 1, 100), "--runs-dir", tmp_path / "runs", "--quiet")
    run = only_run(tmp_path / "runs")
    assert result.exit_code == 0 and "test accuracy " in result.output, result.output
    assert "the signal came as the run was finishing: it finished, and its files are whole" in result.output
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "curves.png").is_file() and (run / "summary.json").is_file()


def test_files_respect_the_umask_and_json_writes_nothing(cli, run):
    import os
    import stat

    before = sorted(p.name for p in run.iterdir())
    result = cli("eval", run, "--json")
    assert result.exit_code == 0 and json.loads(result.output)["accuracy"] > 0.5
    assert sorted(p.name for p in run.iterdir()) == before  # --json prints, writes nothing
    report = run / "eval-test-best.json"
    # not the temporary file's 0600, nor a fixed mode; group-writable under a user-private group's umask 002
    for umask, mode in ((0o022, 0o644), (0o027, 0o640), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            assert cli("eval", run, "--quiet").exit_code == 0
        finally:
            os.umask(old)
        assert stat.S_IMODE(report.stat().st_mode) == mode, oct(umask)


def test_inspect_data_writes_into_runs_not_the_current_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("inspect-data", QUICK, "--count", "4")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "wrote runs/quick-augmented.png"
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]
    tried = cli("inspect-data", QUICK, "--count", "4", "--set", "data.augment.rotate=20")  # beside, not over it
    assert tried.output.strip() == "wrote runs/quick-augmented-rotate20.png"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["quick-augmented-rotate20.png",
                                                                     "quick-augmented.png"]
    jpeg = cli("inspect-data", QUICK, "--count", "4", "--out", "grid.jpg")  # would be PNG bytes under a JPEG name
    assert jpeg.exit_code == 2 and "give a name that ends in .png" in jpeg.output
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]


def test_runs_shows_the_folder_and_what_changed_the_config(cli, write_config, tmp_path):
    config = write_config(tmp_path, 600, 1, 100)
    assert cli("train", config, "--runs-dir", tmp_path / "runs", "--set", "train.seed=3", "--epochs", "1",
               "--quiet").exit_code == 0
    rows = json.loads(cli("runs", tmp_path / "runs", "--json").output)
    assert rows[0]["overrides"] == ["--set train.seed=3", "--epochs 1"]
    run = rows[0]["path"]
    assert cli("train", "--resume", run, "--epochs", "2", "--quiet").exit_code == 0  # trained longer
    (row,) = json.loads(cli("runs", run, "--json").output)
    assert (row["overrides"], row["epochs"]) == (["--set train.seed=3", "--epochs 2"], 2)


def test_commands_suggested_for_a_path_with_a_space_can_be_pasted(cli, trained_run, tmp_path):
    import shlex

    run = shutil.copytree(trained_run, tmp_path / "my runs" / trained_run.name)
    (run / "checkpoints" / "last.npz").unlink()
    refused = cli("train", "--resume", run, "--epochs", "3")
    assert refused.exit_code == 2
    suggested = refused.output.rstrip("\n").split("train its config again: ", 1)[1]
    assert shlex.split(suggested) == ["mnistcnn", "train", str(run / "config.yaml")]


@pytest.mark.parametrize("config,assignment", [("quick.yaml", "model.layers[-1].units=5"),
                                               ("quick.yaml", "data.classes=[a,b]"),
                                               ("speedrun.yaml", "model.layers[-1].units=5")])  # activation: relu
def test_a_model_that_no_longer_ends_in_the_classes_blames_the_set_that_did_it(cli, configs, config, assignment):
    result = cli("train", configs / config, "--dry-run", "--set", assignment)
    assert result.exit_code == 2 and result.output.startswith(f"error: --set {assignment}: model.layers[-1]: the "
                                                              "model ends with shape"), result.output


def test_a_warm_up_longer_than_the_training_is_refused_naming_the_option(cli):
    result = cli("train", QUICK, "--dry-run", "--epochs", "1", "--set", "train.schedule.type=cosine",
                 "--set", "train.schedule.warmup_epochs=5")
    assert result.exit_code == 2 and result.output.startswith(
        "error: --set train.schedule.warmup_epochs=5: train.schedule.warmup_epochs: a warm-up of 5 epochs does not "
        "end within train.epochs (1)"), result.output
    shortened = cli("train", QUICK, "--dry-run", "--epochs", "1", "--set", "train.schedule.warmup_epochs=1")
    assert shortened.exit_code == 0, shortened.output  # the rate reaches lr in the last step
    from mnistcnn import config as cfg

    trained_so = {"train": {"epochs": 1, "schedule": {"type": "cosine", "warmup_epochs": 5}}}
    assert cfg.from_raw(trained_so, "a run's config.yaml", of_run=True)["train"]["epochs"] == 1  # still readable


def test_ctrl_c_before_training_exits_130_in_one_line(cli, monkeypatch, configs):
    from mnistcnn import config as cfg

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cfg, "load_config", interrupted)  # Ctrl-C while the config and data load
    result = cli("train", configs / "quick.yaml")
    assert result.exit_code == 130 and result.output == "error: interrupted\n", result.output


def test_a_count_of_one_is_said_in_the_singular_wherever_a_count_is_said():
    from mnistcnn.callbacks import threads_words
    from mnistcnn.words import counted

    assert [counted(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert counted(1, "worker process", "worker processes") == "1 worker process"
    assert counted(2, "worker process", "worker processes") == "2 worker processes"
    assert threads_words(2, None, "processes").startswith("2 workers (this process and 1 worker process), ")
    assert threads_words(1, 1) == "1 worker thread with 1 BLAS thread"


def test_a_missing_extra_is_installed_from_the_checkout_mnistcnn_runs_from():
    import mnistcnn
    from mnistcnn.errors import install_extra

    checkout = Path(mnistcnn.__file__).resolve().parent.parent
    assert (checkout / "pyproject.toml").is_file()  # an editable install, as the README makes
    assert install_extra("sweep") == f"pip install -e '{checkout}[sweep]'"


def test_a_newcomers_slips_get_the_fix_in_the_message(cli, tmp_path, trained_run):
    (tmp_path / "tab.yaml").write_text("name: x\ntrain:\n\tepochs: 3\n")
    (tmp_path / "tag.yaml").write_text("name: !!python/object:os.system x\n")
    (tmp_path / "schedule.yaml").write_text("name: x\ntrain:\n  schedule: cosine\n")
    (tmp_path / "mini.yaml").write_text("name: mini\n")
    (tmp_path / "notes.md").write_text("# notes\n")
    slips = [
        (("train", tmp_path / "tab.yaml", "--dry-run"), "found character '\\t' that cannot start any token; indent "
                                                        "with spaces, not tabs"),
        (("train", tmp_path / "tag.yaml", "--dry-run"), "a config holds plain values (numbers, words, lists, "
                                                        "mappings): remove the tag"),
        (("train", tmp_path / "schedule.yaml", "--dry-run"), "got 'cosine'; did you mean {type: cosine}?"),
        (("train", tmp_path / "mini.yaml", "--set", "model.layers[0].filters=16", "--dry-run"),
         "(--print-config prints the whole config, the default list included, to copy it from)"),
        (("eval", tmp_path / "notes.md"), f"{tmp_path / 'notes.md'}: is not a checkpoint"),
        (("inspect-data", tmp_path / "nope"), f"{tmp_path / 'nope'}: no such run folder or config file"),
        (("predict", trained_run, tmp_path / "*.gif"), f"{tmp_path / '*.gif'}: no file matches"),
        (("predict", trained_run, tmp_path / "x.png", "--min-confidence", "50"), "50 is over 1: a probability from "
                                                                                "0 to 1, e.g. 0.5 for 50%"),
    ]
    for args, words in slips:
        result = cli(*args)
        assert result.exit_code in (1, 2) and words in result.output, (args, result.output)
        assert "Traceback" not in result.output


@pytest.mark.parametrize("words, expected", [("mnistcnn ins", {"inspect-data", "inspect-layer"}),
                                              ("mnistcnn eval runs/x --checkpoint ", {"best", "last"}),
                                              ("mnistcnn train --ep", {"--epochs"})])
def test_tab_completion_offers_commands_options_and_choices(monkeypatch, capsys, words, expected):
    from mnistcnn.cli import main

    # what the README's line in ~/.bashrc asks of the command at each Tab
    monkeypatch.setenv("_MNISTCNN_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(len(words.split(" ")) - 1))
    with pytest.raises(SystemExit) as ended:
        main.main(prog_name="mnistcnn")
    assert ended.value.code == 0
    assert {line.split(",", 1)[1] for line in capsys.readouterr().out.splitlines()} == expected


def test_a_folder_given_as_a_run_is_told_what_it_is_and_what_to_give(cli, run, tmp_path):
    runs_folder, pictures = run.parent, tmp_path / "my digits"
    pictures.mkdir()
    (pictures / "seven.png").write_bytes(b"")
    said = {  # the folder given, and the words of its line
        runs_folder: f"holds run directories, not a run; give one of them, such as {run}",
        run / "checkpoints": f"is the checkpoints folder of the run {run}; give the run itself, or one of its "
                             f"checkpoints ({run / 'checkpoints' / 'best.npz'})",
        pictures: "is a folder of pictures, not a run; to classify them, the run comes first: mnistcnn predict RUN",
    }
    for folder, words in said.items():
        result = cli("eval", folder, "--json")
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert words in " ".join(result.output.split()), result.output
    assert "is a folder of pictures" in cli("predict", pictures, run).output  # the arguments swapped


def test_the_help_of_set_says_it_repeats_and_is_one_word(cli):
    for command in ("train", "inspect-data"):
        said = " ".join(cli(command, "--help").output.split())
        assert "(repeatable; one word: no spaces around =" in said, said


def test_python_dash_m_mnistcnn_is_the_command():
    import subprocess
    import sys

    ran = subprocess.run([sys.executable, "-m", "mnistcnn", "--version"], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.startswith("mnistcnn, version"), ran.stderr


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_inspect_data_takes_the_seeds_train_takes(cli, tmp_path, seed):
    """inspect-data's --seed and train.seed seed the same generators: one range, refused in one line
    (a negative one was NumPy's traceback)."""
    from mnistcnn import config as cfg

    field = cfg.SCHEMA["train"]["seed"]
    assert not field.low <= seed <= field.high
    result = cli("inspect-data", QUICK, "--seed", seed, "--out", tmp_path / "grid.png")
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output, result.output
    assert f"{field.low}<=x<={field.high}" in result.output


@pytest.mark.parametrize("arguments,message", [
    (["export", "RUN", "-o", ""], "-o: is empty; give a file's path"),
    (["export", "RUN", "--output", " "], "-o: is empty; give a file's path"),
    (["eval", "RUN", "--out", ""], "--out: is empty; give a folder's path"),
    (["inspect-layer", "RUN", "0", "--out", ""], "--out: is empty; give a folder's path"),
    (["predict", "RUN", "digit.png", "--save-inputs", ""], "--save-inputs: is empty; give a folder's path"),
    (["train", "--resume", ""], "--resume: is empty; give a path"),
    (["eval", ""], "RUN|CHECKPOINT: is empty; give a path"),
    (["runs", ""], "DIR: is empty; give a folder's path"),
])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(cli, trained_run, tmp_path, monkeypatch,
                                                                    arguments, message):
    monkeypatch.chdir(tmp_path)  # where an empty path would have read or written
    result = cli(*(trained_run if argument == "RUN" else argument for argument in arguments))
    assert result.exit_code == 2
    assert result.output == f"error: {message} (a shell variable that holds it may be unset in this shell)\n"
    assert list(tmp_path.iterdir()) == []
