"""Checkpoints: atomic, no pickle, and every kind of damage refused with one clear line."""
import json
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mnistcnn.errors import CheckpointError
from mnistcnn.runs import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def best(trained_run):
    return trained_run / "checkpoints" / "best.npz"


def damaged(tmp_path, best, kind):
    path = tmp_path / f"{kind}.npz"
    data = best.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-zip":
        path.write_bytes(b"hello" * 100)
    elif kind == "object":
        np.savez(path, weights=np.array([{"a": 1}], dtype=object))
    else:
        arrays, meta = load_checkpoint(best)
        if kind == "tampered":
            arrays["param.0.W"] = arrays["param.0.W"] + 1  # keep the old hashes
            np.savez(path, **arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        elif kind in ("extra-array", "missing-array"):  # the arrays no longer those its metadata lists
            if kind == "extra-array":
                arrays["param.99.W"] = np.zeros(3, np.float32)
            else:  # an optimiser's array, which the model's own check would not miss
                arrays.pop(next(key for key in arrays if key.startswith("optim.")))
            np.savez(path, **arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        elif kind == "nan":  # hashed as saved: a diverged model's weights
            arrays["param.0.W"][0, 0, 0, 0] = np.nan
            meta.pop("sha256")
            save_checkpoint(path, arrays, meta)
        elif kind == "wrong-shape":
            arrays["param.0.W"] = np.zeros((3, 3, 1, 8), np.float32)
            meta.pop("sha256")
            save_checkpoint(path, arrays, meta)
    return path


@pytest.mark.parametrize("kind,message", [("truncated", "truncated or corrupt"), ("empty", "empty (0 bytes)"),
                                          ("not-zip", "not a .npz"), ("object", "object array"),
                                          ("tampered", "fails its SHA-256 check"),
                                          ("extra-array", "do not match the list in its metadata"),
                                          ("missing-array", "do not match the list in its metadata"),
                                          ("nan", "param.0.W holds NaN or infinity"),
                                          ("wrong-shape", "comes from another config")])
def test_damaged_checkpoints_are_refused_by_eval(tmp_path, best, kind, message, cli):
    result = cli("eval", damaged(tmp_path, best, kind))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def set_array(key, value):
    return lambda arrays, meta: arrays.__setitem__(key, value)


def drop_array(key):
    return lambda arrays, meta: arrays.pop(key)


@pytest.mark.parametrize("change,message", [
    (set_array("param.0.W", np.zeros((8, 1, 5, 5), np.float32)),  # the conv kernel transposed
     "array param.0.W has shape (8, 1, 5, 5) but the config's model needs (5, 5, 1, 8); the checkpoint comes from "
     "another config"),
    (set_array("param.9.W", np.zeros((784, 12), np.float32)),  # a dense layer of another width
     "array param.9.W has shape (784, 12) but the config's model needs (784, 10)"),
    (drop_array("param.9.b"), "has no array param.9.b, which the config's model needs; the checkpoint comes from "
                              "another config"),
    (set_array("notes", np.zeros(3, np.float32)), "has arrays the config's model has no place for (notes)"),
    (set_array("param.0.b", np.zeros((1, 1, 1, 8))), "array param.0.b holds float64 but the config's model needs "
                                                     "float32; the checkpoint was not written by mnistcnn: save its "
                                                     "arrays as float32"),
    (set_array("param.0.b", np.zeros((1, 1, 1, 8), np.int32)), "array param.0.b holds int32 but"),
    (set_array("param.0.b", np.zeros((1, 1, 1, 8), np.complex64)), "array param.0.b holds complex64 but"),
    (set_array("param.0.b", np.full((1, 1, 1, 8), "w")), "array param.0.b holds <U1 but"),
    (set_array("buffer.4.running_var", np.full(16, np.inf, np.float32)),
     "array buffer.4.running_var holds NaN or infinity: the training had diverged when it was saved. Use another "
     "checkpoint, or train the run again"),
])
def test_a_checkpoint_that_does_not_fit_its_model_is_refused_in_one_line(tmp_path, best, resaved_checkpoint, cli,
                                                                          change, message):
    from PIL import Image

    path = resaved_checkpoint(best, tmp_path / "best.npz", change)
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    for command in (("eval", path), ("inspect-layer", path, "0", "--no-images"), ("export", path),
                    ("predict", path, tmp_path / "digit.png")):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        assert result.output == f"error: {path}: {message}" + result.output.split(message, 1)[1]
        assert result.output.count("\n") == 1
    assert sorted(child.name for child in tmp_path.iterdir()) == ["best.npz", "digit.png"]  # nothing written


@pytest.mark.parametrize("change,message", [
    (drop_array("optim.steps"), "has no array optim.steps, which training with {config} needs"),
    (drop_array("optim.m.9.W"), "has no array optim.m.9.W, which training with {config} needs"),
    (set_array("optim.v.9.W", np.zeros((784, 12), np.float32)),
     "array optim.v.9.W has shape (784, 12) but training with {config} needs (784, 10)"),
    (set_array("optim.steps", np.array(3.0)), "array optim.steps holds float64 but training with {config} needs int64"),
    (set_array("optim.velocity.9.W", np.zeros((784, 10), np.float32)),  # SGD's state, in a run of Adam
     "has arrays training with {config} has no place for (optim.velocity.9.W)"),
    (lambda arrays, meta: arrays["optim.m.0.b"].fill(np.nan),
     "array optim.m.0.b holds NaN or infinity: the training had diverged when it was saved. A run goes on from its "
     "last checkpoint only"),
    (drop_array("param.0.b"), "has no array param.0.b, which training with {config} needs"),
])
def test_a_last_checkpoint_that_does_not_fit_the_training_is_not_resumed(run, resaved_checkpoint, cli, change,
                                                                          message):
    last = run / "checkpoints" / "last.npz"
    resaved_checkpoint(last, last, change)
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file() and path.name != ".training.lock"}
    result = cli("train", "--resume", run, "--epochs", "3")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {last}: {message.format(config=run / 'config.yaml')}")
    assert result.output.count("\n") == 1  # before the model's table
    assert {path: path.read_bytes() for path in before} == before


def test_a_run_whose_config_was_edited_to_another_model_is_not_resumed_and_told_why(run, cli):
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("filters: 8", "filters: 6"))
    result = cli("train", "--resume", run, "--epochs", "3")
    assert result.exit_code == 2
    assert result.output == (f"error: {run / 'checkpoints' / 'last.npz'}: array param.0.W has shape (5, 5, 1, 8) but "
                             f"training with {config} needs (5, 5, 1, 6); {config} was edited since the run trained "
                             f"(its model is another): undo the edit, or train it as a new run: mnistcnn train "
                             f"{config}\n")


def set_meta(key, value):
    return lambda arrays, meta: meta.__setitem__(key, value)


@pytest.mark.parametrize("change,message", [
    (lambda arrays, meta: meta.pop("iterator"), "its metadata lacks 'iterator'; not a complete mnistcnn checkpoint"),
    (lambda arrays, meta: meta.pop("rng"), "its metadata lacks 'rng'"),
    (lambda arrays, meta: meta.pop("config"), "its metadata lacks 'config'"),
    (set_meta("step", "many"), "its metadata is unreadable (invalid literal for int() with base 10: 'many')"),
    (set_meta("best", {"accuracy": 1}), "its metadata is unreadable (BestEpoch.__init__() got an unexpected"),
    (set_meta("epoch_sums", [1]), "its metadata is unreadable"),
    (set_meta("history", ["epoch 1"]), "its metadata is unreadable (history rows are not mappings)"),
    (set_meta("rng", {"augment": 3, "dropout": 3}), "its metadata is unreadable"),
])
def test_a_last_checkpoint_without_its_place_in_training_is_not_resumed(run, resaved_checkpoint, cli, change,
                                                                         message):
    last = run / "checkpoints" / "last.npz"
    resaved_checkpoint(last, last, change)
    result = cli("train", "--resume", run, "--epochs", "3")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {last}: {message}")
    assert result.output.endswith(f"A run goes on from its last checkpoint only: train its config again: mnistcnn "
                                  f"train {run / 'config.yaml'}\n")
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("change,message", [
    (set_meta("config", "small"), "its metadata is unreadable (its config is not a mapping)"),
    (set_meta("step", "many"), "its metadata is unreadable (invalid literal for int() with base 10: 'many')"),
    (set_meta("preprocess", {"type": "sharpen"}), "its metadata is unreadable (preprocess {'type': 'sharpen'} is "
                                                  "not the config's data.preprocess)"),
    (set_meta("preprocess", {"type": "standardize", "threshold": 0}), "its metadata is unreadable"),
    (lambda arrays, meta: meta.pop("preprocess"), "its metadata lacks 'preprocess'"),
])
def test_a_checkpoint_with_garbled_metadata_is_refused_by_eval(tmp_path, best, resaved_checkpoint, cli, change,
                                                                message):
    path = resaved_checkpoint(best, tmp_path / "best.npz", change)
    result = cli("eval", path)
    assert result.exit_code == 2, result.output
    assert result.output == (f"error: {path}: {message}" + result.output.split(message, 1)[1])
    assert result.output.endswith("not a complete mnistcnn checkpoint. Use another checkpoint, or train the run "
                                  "again\n")
    assert [child.name for child in tmp_path.iterdir()] == ["best.npz"]


def test_a_checkpoint_that_cannot_be_read_says_so_not_that_it_is_corrupt(tmp_path, best, cli, monkeypatch):
    import builtins
    import errno
    import os

    from mnistcnn import runs

    path = tmp_path / "best.npz"
    path.write_bytes(best.read_bytes())
    path.chmod(0)
    if os.geteuid() == 0:  # root reads it all the same: its open is refused as another user's would be
        def refused(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return builtins.open(file, *args, **kwargs)

        monkeypatch.setattr(runs, "open", refused, raising=False)
    result = cli("eval", path)
    assert result.exit_code == 2, result.output
    assert result.output == (f"error: {path}: cannot read the checkpoint (Permission denied); make it readable "
                             f"(chmod a+r {path}), or copy it to a file you can read\n")


def test_a_folder_where_a_checkpoint_belongs_is_called_a_folder_not_a_missing_checkpoint(run, cli):
    for which in ("best", "last"):
        (run / "checkpoints" / f"{which}.npz").unlink()
        (run / "checkpoints" / f"{which}.npz").mkdir()
    best, last = run / "checkpoints" / "best.npz", run / "checkpoints" / "last.npz"
    in_place = ("is a folder, not a checkpoint file; move it out of the way (the run keeps its {} checkpoint in a "
                "file of that name)\n")
    assert cli("eval", run).output == f"error: {best}: " + in_place.format("best")
    assert cli("train", "--resume", run, "--epochs", "3").output == f"error: {last}: " + in_place.format("last")
    given = cli("eval", best)
    assert given.exit_code == 2
    assert given.output == (f"error: {best}: is a folder, not a checkpoint file; give a run folder or one of its "
                            "checkpoints\n")


def test_a_damaged_best_checkpoint_points_at_the_runs_last_one(run, cli):
    (run / "checkpoints" / "best.npz").write_bytes(b"")
    for command in (("eval", run), ("inspect-layer", run, "0", "--no-images")):
        result = cli(*command)
        assert result.exit_code == 2 and "give the run with --checkpoint last" in result.output, result.output
        assert cli(*command, "--checkpoint", "last").exit_code == 0


def test_object_array_is_never_unpickled(tmp_path, monkeypatch):
    import pickle
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([object()], dtype=object))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(CheckpointError, match="object array"):
        load_checkpoint(path)


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])  # an error, or Ctrl-C: no Exception
def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, interruption):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"a": np.arange(3)}, {"note": 1})

    def explode(*args, **kwargs):
        raise interruption

    import numpy
    original = numpy.savez
    numpy.savez = explode
    try:
        with pytest.raises(interruption):
            save_checkpoint(path, {"a": np.arange(5)}, {"note": 2})
    finally:
        numpy.savez = original
    arrays, meta = load_checkpoint(path)
    assert meta["note"] == 1 and list(arrays["a"]) == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_a_signal_as_the_temp_file_is_made_leaves_no_temp_file(tmp_path, signal_as_made, signals_raise):
    # mkstemp names its file only once it exists: a Ctrl-C that came in between left the .tmp beside the checkpoint
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"a": np.arange(3)}, {"note": 1})
    signal_as_made(".tmp", signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"a": np.arange(5)}, {"note": 2})
    arrays, meta = load_checkpoint(path)
    assert meta["note"] == 1 and list(arrays["a"]) == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_random_bytes_give_only_checkpoint_errors(tmp_path, blob):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=300), st.integers(0, 10**6))
def test_random_zip_members_give_only_checkpoint_errors(tmp_path, blob, seed):
    path = tmp_path / "fuzz.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__meta__.npy", blob)
        z.writestr("x.npy", np.random.default_rng(seed).bytes(seed % 200))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_a_write_cut_short_leaves_a_temp_file_that_resume_discards(tmp_path):
    from mnistcnn.runs import RunDir

    run = RunDir.create(tmp_path, "cut")
    (run.checkpoints / "last.npz").write_bytes(b"the intact previous version")
    (run.checkpoints / ".last.npz.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    (run.path / ".metrics.csv.x.tmp").write_text("epoch,")
    run.discard_partial_writes()
    assert sorted(p.name for p in run.path.rglob("*") if p.is_file()) == ["last.npz"]


def npz_with_meta(path, meta, **arrays):
    """An .npz as np.savez writes it: ``arrays`` and ``meta`` (bytes as they are, else its JSON) as __meta__."""
    meta_bytes = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    np.savez(path, **arrays, __meta__=np.frombuffer(meta_bytes, np.uint8))
    return path


def hashed(**arrays):
    from mnistcnn.runs import array_sha256
    return {key: array_sha256(value) for key, value in arrays.items()}


FORMAT = "mnistcnn-checkpoint-1"
W = np.arange(6, dtype=np.float32).reshape(2, 3)


@pytest.mark.parametrize("make,message", [
    (lambda path: np.savez(path, w=W) or path, "not an mnistcnn checkpoint (no __meta__ entry)"),
    (lambda path: npz_with_meta(path, b"\xff not JSON", w=W), "its metadata is unreadable"),
    (lambda path: npz_with_meta(path, [FORMAT], w=W), "its metadata is unreadable (metadata is not a mapping)"),
    (lambda path: npz_with_meta(path, {"format": "other-tool-2", "sha256": hashed(w=W)}, w=W),
     "unknown checkpoint format 'other-tool-2' (expected mnistcnn-checkpoint-1)"),
    (lambda path: npz_with_meta(path, {"format": FORMAT}, w=W), "do not match the list in its metadata"),
    (lambda path: npz_with_meta(path, {"format": FORMAT, "sha256": "w"}, w=W), "do not match the list in its metadata"),
    # the same bytes in another shape are another array
    (lambda path: npz_with_meta(path, {"format": FORMAT, "sha256": hashed(w=W)}, w=W.reshape(3, 2)),
     "array w fails its SHA-256 check; the file was altered or damaged. Use another checkpoint"),
])
def test_a_foreign_or_altered_npz_is_refused_saying_what_is_wrong(tmp_path, make, message):
    path = make(tmp_path / "model.npz")
    with pytest.raises(CheckpointError, match="^" + str(path)) as refused:
        load_checkpoint(path)
    assert message in str(refused.value)


@pytest.mark.parametrize("name,content,message", [
    ("notes.txt", b"some notes", "is not a checkpoint (a run's checkpoints/best.npz or last.npz)"),
    ("notes.txt", b"", "empty (0 bytes)"),
    ("model.onnx", b"onnx bytes", "is an exported ONNX model"),
    ("MODEL.ONNX", b"onnx bytes", "is an exported ONNX model"),
])
def test_a_file_that_is_no_checkpoint_is_told_what_it_is(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_checkpoint(path)


def test_a_checkpoint_keeps_each_arrays_shape_a_count_included_and_never_holds_an_object_array(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"step": np.array(7), "w": W}, {})
    arrays, _ = load_checkpoint(path)
    assert arrays["step"].shape == () and arrays["w"].shape == (2, 3)
    with pytest.raises(TypeError, match="dtype object"):
        save_checkpoint(path, {"w": np.array([{"a": 1}], dtype=object)}, {})


def test_a_damaged_checkpoint_says_what_to_use_instead(tmp_path):
    from mnistcnn.runs import RunDir

    loose = tmp_path / "loose.npz"
    loose.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"corrupt\. Use another checkpoint, or train the run again$"):
        load_checkpoint(loose)
    with pytest.raises(CheckpointError, match=r"truncated or corrupt\. Resume it from scratch$"):
        load_checkpoint(loose, "Resume it from scratch")
    run = RunDir.create(tmp_path, "r")
    for name in ("best", "last", "other"):
        run.checkpoint(name).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"Use another checkpoint, or train the run again$"):
        load_checkpoint(run.checkpoint("other"))  # a third file in checkpoints/ has no partner
    with pytest.raises(CheckpointError, match="The run's other checkpoint, .*last.npz, may be intact"):
        load_checkpoint(run.checkpoint("best"))
    run.checkpoint("last").unlink()
    with pytest.raises(CheckpointError, match=r"Use another checkpoint, or train the run again$"):
        load_checkpoint(run.checkpoint("best"))  # no last.npz to point at
