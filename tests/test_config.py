"""Config errors: file, key path and the fix; exit code 2; no run directory."""

import pytest

from mnistcnn import config as cfg
from mnistcnn.errors import ConfigError


BASE = """name: t
model:
  layers:
    - {type: conv2d, filters: 4, kernel: 3}
    - {type: relu}
    - {type: flatten}
    - {type: dense, units: 10}
"""

BAD = {
    "unknown key": ("name: t\ntrian: {epochs: 1}\n", "trian: unknown key; did you mean 'train'?"),
    "nested unknown": ("train: {optimiser: {lr: 0.1}}\n", "train.optimiser: unknown key; did you mean 'optimizer'?"),
    "section left out": ("name: t\nepochs: 3\n", "epochs: unknown key; it belongs in train: did you mean "
                                                  "'train.epochs'?"),
    "activation on a pool": ("model: {layers: [{type: maxpool2d, activation: relu}, {type: flatten}, "
                             "{type: dense, units: 10}]}\n",
                             "model.layers[0].activation: maxpool2d takes no activation"),
    "key a level up": ("train: {lr: 0.1}\n", "train.lr: unknown key; it belongs in train.optimizer: did you mean "
                                             "'train.optimizer.lr'?"),
    "section a level up": ("name: t\noptimizer: {lr: 0.1}\n", "optimizer: unknown key; it belongs in train: did "
                                                                "you mean 'train.optimizer'?"),
    "key in another section": ("data: {epochs: 3}\n", "data.epochs: unknown key; it belongs in train: did you mean "
                                                       "'train.epochs'?"),
    "section in another section": ("train: {augment: {rotate: 5}}\n", "train.augment: unknown key; it belongs in "
                                                                     "data: did you mean 'data.augment'?"),
    "section a level down": ("model: {train: {epochs: 3}}\n", "model.train: unknown key; it belongs at the top "
                                                             "level: did you mean 'train'?"),
    "a list item's dash glued to it": ("model:\n  layers:\n    - {type: flatten}\n    -{type: dense, units: 10}\n",
                                       "(line 4, column 5): a list item's '-' needs a space after it; write "
                                       "'- {type: dense, units: 10}'"),
    "the first item's dash glued to it": ("model:\n  layers:\n    -type: flatten\n    - type: dense\n",
                                          "(line 3, column 5): a list item's '-' needs a space after it; write "
                                          "'- type: flatten'"),
    "wrong type": ("train: {epochs: ten}\n", "train.epochs: must be an integer"),
    "yes for a number": ("data: {validation: yes}\n", "data.validation: must be an integer; got True (bool) (YAML "
                                                       "reads yes/no/on/off as true/false)"),
    "negative size": ("train: {batch_size: -4}\n", "train.batch_size: must be >= 1"),
    "huge number": ("train: {epochs: 1e400}\n", "train.epochs"),
    "huge int": ("train: {epochs: 99999999999999999999999}\n", "train.epochs: must be <= 100000"),
    "zero lr": ("train: {optimizer: {lr: 0}}\n", "train.optimizer.lr: must be > 0; got 0.0"),
    "nan lr": ("train: {optimizer: {lr: .nan}}\n", "train.optimizer.lr: must be a finite number"),
    "bad choice": ("train: {optimizer: {type: adagrad}}\n", "train.optimizer.type: must be one of sgd, adam, adamw; "
                                                          "got 'adagrad'\n"),
    "choice typo": ("train: {optimizer: {type: adma}}\n", "train.optimizer.type: must be one of sgd, adam, adamw; "
                                                        "got 'adma'; did you mean 'adam'?\n"),
    "no space after a colon": ("train: {optimizer: {type:sgd}}\n", "train.optimizer.type:sgd: unknown key; YAML reads "
                               "'type:sgd' as one key: put a space after the colon (type: sgd); valid keys here"),
    "a layer without spaces": ("model: {layers: [{type:conv2d,filters:4}, {type: flatten}, "
                               "{type: dense, units: 10}]}\n",
                               "model.layers[0].type: unknown layer type None; YAML reads 'type:conv2d' as one key: "
                               "put a space after the colon (type: conv2d); valid types"),
    "unknown layer": ("model: {layers: [{type: conv}, {type: dense, units: 10}]}\n",
                      "model.layers[0].type: unknown layer type 'conv'"),
    "layer key typo": ("model: {layers: [{type: conv2d, filters: 2, kernal: 3}, {type: flatten}, "
                       "{type: dense, units: 10}]}\n", "model.layers[0].kernal: conv2d has no argument 'kernal'; "
                                                       "did you mean 'kernel'?"),
    "layer without filters": ("model: {layers: [{type: conv2d, kernel: 3}, {type: flatten}, "
                              "{type: dense, units: 10}]}\n",
                              "model.layers[0]: conv2d needs 'filters', e.g. {type: conv2d, filters: 32}"),
    "layer without units": ("model: {layers: [{type: flatten}, {type: dense}]}\n",
                            "model.layers[1]: dense needs 'units', e.g. {type: dense, units: 128}"),
    "kernel too big": ("model: {layers: [{type: relu}, {type: conv2d, filters: 2, kernel: 30}, {type: flatten}, "
                       "{type: dense, units: 10}]}\n", "model.layers[1].kernel: kernel 30 with padding 0 does not fit"),
    "dense unflattened": ("model: {layers: [{type: conv2d, filters: 2}, {type: dense, units: 10}]}\n",
                          "model.layers[1].type: dense needs a flat input"),
    "wrong output width": ("model: {layers: [{type: flatten}, {type: dense, units: 7}]}\n",
                           "there are 10 classes; end with {type: dense, units: 10}"),
    "empty": ("", "the config is empty"),
    "not a mapping": ("- a\n- b\n", "must be a mapping"),
    "duplicate keys": ("name: a\nname: b\n", "duplicate key 'name'"),
    "tabs": ("train:\n\tepochs: 3\n", "not valid YAML (line 2"),
    "unclosed brace": ("model:\n  layers:\n    - {type: conv2d, filters: 4\n    - {type: relu}\n",
                       "not valid YAML (line 4, column 7): expected ',' or '}', but got '{'; the { opened on line 3, "
                       "column 7 is not closed"),
    "python tag": ("name: !!python/object/apply:os.system ['echo hacked']\n", "not valid YAML"),
    "a key indented less than its section's": ("train:\n  epochs: 2\n batch_size: 3\n",
                                               "not valid YAML (line 3, column 2): indented differently from the lines "
                                               "above it; give the keys of one section, and the items of one list, "
                                               "the same indentation"),
    "a key indented deeper than its section's": ("train:\n  epochs: 2\n   batch_size: 3\n",
                                                 "not valid YAML (line 3, column 14): a ':' where a value goes: a key "
                                                 "indented deeper than the key above it"),
    "a key without its colon above another": ("train:\n  epochs 2\n  seed: 3\n",
                                              "not valid YAML (line 3, column 7): a ':' where a value goes: a key "
                                              "indented deeper than the key above it, a key above it without its ':'"),
    "a key without its colon": ("name: x\ntrain\n  epochs: 2\n",
                                "not valid YAML (line 2, column 1): a key without its ':'; write 'key: value'"),
    "many layers": ("model: {layers: [" + "{type: relu}, " * 10000 + "{type: flatten}]}\n",
                    "model.layers: has 10001 layers; at most 256"),
    "bad name": ("name: ../../etc\n", "name: run name '../../etc'"),
    "repeats of the same image": ("data: {augment: {repeats: 2}}\n", "data.augment.repeats: 2 copies of an image "
                                  "are the same image without augmentation; set data.augment.shift"),
    "sgd's momentum with adam": ("train: {optimizer: {type: adam, momentum: 0.5}}\n",
                                 "train.optimizer.momentum acts only with optimizer sgd (this config has optimizer "
                                 "adam); remove it, or set train.optimizer.beta1 for adam's momentum, or set "
                                 "train.optimizer.type to sgd"),
    "adam's beta2 with sgd": ("train: {optimizer: {type: sgd, beta2: 0.99}}\n",
                              "train.optimizer.beta2 acts only with optimizer adam or adamw (this config has "
                              "optimizer sgd); remove it, or set train.optimizer.type to adam or adamw"),
    "onecycle's pct_start with cosine": ("train: {schedule: {type: cosine, pct_start: 0.2}}\n",
                                         "train.schedule.pct_start acts only with schedule onecycle (this config has "
                                         "schedule cosine); remove it, or set train.schedule.warmup_epochs for "
                                         "cosine's warm-up"),
    "a binarize threshold when scaling": ("data: {preprocess: {type: scale, threshold: 100}}\n",
                                          "data.preprocess.threshold acts only with preprocess binarize"),
    "ema's decay with swa": ("train: {average: {type: swa, decay: 0.99}}\n",
                             "train.average.decay acts only with average ema (this config has average swa)"),
    "an elastic smoothing without elastic distortion": (
        "data: {augment: {rotate: 5, elastic_sigma: 6}}\n",
        "data.augment.elastic_sigma acts only with data.augment.elastic above 0 (this config has data.augment.elastic "
        "0.0); remove it, or set data.augment.elastic to a value above 0"),
    "sgd's momentum that onecycle overwrites": (
        "train: {optimizer: {type: sgd, momentum: 0.5}, schedule: {type: onecycle}}\n",
        "train.optimizer.momentum does nothing with schedule onecycle and train.schedule.cycle_momentum true: the "
        "schedule sets it every step, from train.schedule.max_momentum to base_momentum and back; remove it, set "
        "train.schedule.base_momentum and max_momentum instead, or set train.schedule.cycle_momentum to false"),
    "adam's beta1 that onecycle overwrites": (
        "train: {optimizer: {type: adam, beta1: 0.8}, schedule: {type: onecycle}}\n",
        "train.optimizer.beta1 does nothing with schedule onecycle and train.schedule.cycle_momentum true"),
    "nesterov without momentum": (
        "train: {optimizer: {type: sgd, momentum: 0, nesterov: true}}\n",
        "train.optimizer.nesterov acts only with train.optimizer.momentum above 0 (this config has "
        "train.optimizer.momentum 0.0); remove it, or set train.optimizer.momentum to a value above 0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_config_errors_name_file_and_key_and_write_nothing(tmp_path, case, cli):
    text, message = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    runs = tmp_path / "runs"
    result = cli("train", str(path), "--runs-dir", str(runs))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert str(path) in result.output
    assert "Traceback" not in result.output and result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1
    assert not runs.exists()


def test_missing_config_file(tmp_path, cli):
    result = cli("train", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "config file not found" in result.output


def test_name_flag_cannot_escape_runs(tmp_path, cli):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    for name in ["../x", "a/b", "..", "/abs"]:
        result = cli("train", str(path), "--name", name, "--runs-dir", str(tmp_path / "r"))
        assert result.exit_code == 2 and "run name" in result.output
    assert not (tmp_path / "r").exists()


def test_a_run_name_is_1_to_64_letters_digits_dots_underscores_or_dashes_with_no_dot_dot():
    from mnistcnn.folders import check_run_name

    for name in ("a" * 64, "v1.2_lr-0.01", "7"):
        assert check_run_name(name) == name
    for name in ("a" * 65, "", "lr..3", ".hidden", "-x", "a b"):
        with pytest.raises(ConfigError, match="use 1-64 letters, digits"):
            check_run_name(name)


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    config = cfg.load_config(path, ["train.optimizer.lr=0.05", "data.augment.shift=2"],
                             {"--epochs": ("train.epochs", 3)})
    assert config["train"]["optimizer"]["lr"] == 0.05 and config["train"]["epochs"] == 3
    assert config["data"]["augment"]["shift"] == 2 and config["train"]["batch_size"] == 64
    path.write_text(BASE + "train: {optimizer: {lr: 1e-3}, weight_decay: 5E-4}\n")  # YAML 1.2's floats
    config = cfg.load_config(path, ["train.label_smoothing=1e-1"])
    assert config["train"]["optimizer"]["lr"] == 0.001 and config["train"]["weight_decay"] == 0.0005
    assert config["train"]["label_smoothing"] == 0.1
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        cfg.load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"--set train.epoch=3: train.epoch: unknown key; did you mean .epochs."):
        cfg.load_config(path, ["train.epoch=3"])


def test_print_config_is_the_resolved_config(tmp_path, cli):
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    result = cli("train", str(path), "--print-config", "--lr", "0.3")
    assert result.exit_code == 0
    resolved = cfg.parse_yaml(result.output, "out")
    assert resolved == cfg.validate(resolved) and resolved["train"]["optimizer"]["lr"] == 0.3


def test_every_shipped_config_passes_dry_run(shipped_config, tmp_path, cli):
    result = cli("train", str(shipped_config), "--dry-run", "--runs-dir", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "total" in result.output and not (tmp_path / "r").exists()
    assert "workers: " in result.output and ("worker thread" in result.output or "worker process" in result.output)
    config = cfg.load_config(shipped_config)
    batch, epochs = config["train"]["batch_size"], config["train"]["epochs"]
    training = min(60000 - config["data"]["validation"], config["data"]["train_limit"] or 60000)  # bundled MNIST's
    steps = training // batch if config["train"]["drop_last"] else -(-training // batch)
    assert f"dry run: {epochs} epoch{'s' * (epochs != 1)} of {steps} steps (batches of {batch} from " in result.output


def test_shipped_configs_exist(configs):
    assert {path.stem for path in configs.glob("*.yaml")} >= {"lenet", "notebook", "quick", "best", "speedrun"}


@pytest.mark.parametrize("choice", ["im2col", "fft-gemm"])
def test_model_conv_algorithm_applies_where_it_can(choice, configs):
    notebook = cfg.load_config(configs / "notebook.yaml", [f"model.conv_algorithm={choice}"])
    # the notebook's stride-2 conv cannot run in the frequency domain: it takes im2col, not an error
    assert cfg.check_model(notebook).methods[0] == "im2col"
    lenet = cfg.load_config(configs / "lenet.yaml", [f"model.conv_algorithm={choice}"])
    assert list(cfg.check_model(lenet).methods.values()) == [choice, choice]


def bounded_keys(schema=cfg.SCHEMA, prefix=""):
    """``(key path, Field)`` of every key with a lower or upper bound."""
    for key, field in schema.items():
        if isinstance(field, dict):
            yield from bounded_keys(field, f"{prefix}{key}.")
        elif field.low is not None or field.high is not None:
            yield f"{prefix}{key}", field


def test_every_bounded_key_takes_the_ends_of_its_range():
    # config-keys gives each range as [low, high] ((low, high] when low itself is refused): both ends are values
    for key, field in bounded_keys():
        ends = (field.high,) if field.above_low else (field.low, field.high)
        for end in (end for end in ends if end is not None):
            raw = {"data": {"augment": {"shift": 1}}} if key == "data.augment.repeats" else {}  # repeats need a warp
            cfg.set_path(raw, key, end, "test")
            assert cfg.lookup(cfg.validate(raw), key, "test") == end, key


def test_each_use_of_the_seed_draws_from_its_own_stream():
    draws = [cfg.random_stream(7, use).integers(2**62) for use in cfg.RANDOM_STREAMS]
    assert len(set(draws)) == len(cfg.RANDOM_STREAMS)


def test_eval_batch_size_takes_the_range_of_the_config_key(tmp_path, cli):
    # eval --batch-size and a config's train.eval_batch_size both give the images per evaluation batch: one range
    field = cfg.SCHEMA["train"]["eval_batch_size"]
    assert (field.low, field.high) == (1, cfg.MAX_BATCH_SIZE)
    refused = cli("eval", tmp_path, "--batch-size", cfg.MAX_BATCH_SIZE + 1)  # refused as it is parsed: no run read
    assert refused.exit_code == 2 and f"1<=x<={cfg.MAX_BATCH_SIZE}" in refused.output, refused.output


LAYERS = [{"type": "conv2d", "filters": 2, "kernel": 3}, {"type": "relu"}, {"type": "flatten"},
          {"type": "dense", "units": 10}]

REFUSED = {
    "a key left empty": ({"train": {"epochs": None}}, "train.epochs: must be an integer; got None"),
    "a word for an optional number": ({"data": {"train_limit": "lots"}},
                                      "data.train_limit: must be an integer or null; got 'lots' (str)"),
    "no layers": ({"model": {"layers": []}}, "model.layers: must list at least one layer"),
    "a layer's argument not a number": ({"model": {"layers": [{"type": "dropout", "rate": float("nan")}, *LAYERS]}},
                                        "model.layers[0].rate: must be a finite number; got nan"),
    "an image too big": ({"model": {"input_shape": [5000, 28, 1]}}, "model.input_shape: must be [height, width, "
                         "channels] of positive integers; got [5000, 28, 1]"),
    "one class": ({"data": {"classes": ["cat"]}}, "data.classes: must list at least two distinct class names"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_config_refused_names_its_key_and_why(case):
    raw, message = REFUSED[case]
    with pytest.raises(ConfigError) as refused:
        cfg.validate(raw, "bad.yaml")
    assert f"bad.yaml: {message}" in str(refused.value)


def test_a_number_refused_is_not_said_to_be_a_yes_or_no():
    # the hint about YAML's yes/no is for true/false read where a number goes, not for a number where a word goes
    with pytest.raises(ConfigError) as refused:
        cfg.validate({"name": 3})
    assert str(refused.value) == "<config>: name: must be a string; got 3 (int)"


def test_a_section_left_empty_takes_its_defaults():
    # "train:" with nothing under it (YAML null) is an empty section, as when it is left out
    assert cfg.validate({"train": None, "data": {"augment": None}}) == cfg.validate({})


def test_the_most_layers_a_model_may_have_are_accepted():
    layers = [{"type": "relu"}] * (cfg.MAX_LAYERS - 2) + [{"type": "flatten"}, {"type": "dense", "units": 10}]
    assert len(cfg.validate({"model": {"layers": layers}})["model"]["layers"]) == cfg.MAX_LAYERS


def test_repeats_need_any_warp_elastic_alone_included():
    for warp, amount in zip(cfg.WARPS, (1, 5.0, 0.1, 8.0)):
        augment = {"repeats": 2, warp: amount}
        assert cfg.validate({"data": {"augment": augment}})["data"]["augment"]["repeats"] == 2, warp


def test_config_keys_says_which_keys_take_null():
    rows = {row[0]: row[1] for row in cfg.describe_keys()}
    assert rows["data.train_limit"] == "int in [1, 100000000] or null"
    assert rows["train.epochs"] == "int in [1, 100000]"


def test_onecycle_takes_no_warm_up_of_its_own():
    with pytest.raises(ConfigError) as refused:
        cfg.from_raw({"train": {"schedule": {"type": "onecycle", "warmup_epochs": 1}}}, "x.yaml")
    assert str(refused.value) == (
        "x.yaml: train.schedule.warmup_epochs acts only with schedule constant, step or cosine (this config has "
        "schedule onecycle); remove it, or set train.schedule.pct_start for onecycle's rise, or set "
        "train.schedule.type to constant, step or cosine")


def test_a_key_that_does_not_act_blames_the_option_that_set_it_or_its_switch():
    sgd = {"train": {"optimizer": {"type": "sgd", "momentum": 0.5}}}
    for given, overrides, blamed in ((sgd, ["train.optimizer.type=adam"], "--set train.optimizer.type=adam"),
                                     ({}, ["train.optimizer.nesterov=true"], "--set train.optimizer.nesterov=true")):
        with pytest.raises(ConfigError) as refused:
            cfg.from_raw(given, "x.yaml", overrides)
        assert str(refused.value).startswith(f"{blamed}: train.optimizer."), refused.value
    # momentum acts with onecycle where the schedule does not cycle it, and with any other schedule
    for schedule in ({"type": "onecycle", "cycle_momentum": False}, {"type": "cosine", "cycle_momentum": True}):
        raw = {"train": {"optimizer": {"type": "sgd", "momentum": 0.5, "nesterov": True}, "schedule": schedule}}
        assert cfg.from_raw(raw, "x.yaml")["train"]["optimizer"]["momentum"] == 0.5
    # base_momentum acts only while onecycle cycles the momentum
    with pytest.raises(ConfigError, match="base_momentum acts only with train.schedule.cycle_momentum true"):
        cfg.from_raw({"train": {"schedule": {"type": "onecycle", "cycle_momentum": False, "base_momentum": 0.8}}},
                     "x.yaml")


def test_resolved_configs_with_every_key_at_its_default_never_trip_the_acting_rule():
    # a run's config.yaml, --print-config and a sweep's best-trial.yaml hold every key, those that do not act at
    # their defaults: read again as a new config, each must pass, whatever the optimizer, schedule and average
    for optimizer in ("sgd", "adam", "adamw"):
        for schedule in ("constant", "step", "cosine", "onecycle"):
            for average in ("none", "ema", "swa"):
                raw = {"train": {"optimizer": {"type": optimizer}, "schedule": {"type": schedule},
                                 "average": {"type": average}}}
                resolved = cfg.validate(raw)
                assert cfg.from_raw(cfg.parse_yaml(cfg.dump(resolved), "config.yaml"), "config.yaml") == resolved


def test_a_run_trained_before_the_acting_rule_still_reads():
    old_run = {"train": {"optimizer": {"type": "adam", "momentum": 0.5}}}  # momentum was ignored without a word
    assert cfg.from_raw(old_run, "config.yaml", of_run=True)["train"]["optimizer"]["momentum"] == 0.5
    with pytest.raises(ConfigError, match="train.optimizer.momentum acts only with optimizer sgd"):
        cfg.from_raw(old_run, "config.yaml")  # trained afresh, it is told


def test_config_keys_says_what_a_key_acts_with_from_its_field():
    rows = {row[0]: row[3] for row in cfg.describe_keys()}
    assert rows["train.optimizer.momentum"] == ("only with optimizer sgd, not with schedule onecycle and "
                                                "train.schedule.cycle_momentum true: momentum")
    assert rows["train.optimizer.beta1"] == ("only with optimizer adam or adamw, not with schedule onecycle and "
                                             "train.schedule.cycle_momentum true: first-moment decay")
    assert rows["train.optimizer.nesterov"] == ("only with optimizer sgd and train.optimizer.momentum above 0: "
                                                "Nesterov momentum")
    assert rows["train.schedule.base_momentum"].startswith(
        "only with schedule onecycle and train.schedule.cycle_momentum true: ")
    assert rows["train.optimizer.lr"] == "base learning rate"
    assert cfg.FIELDS["train.optimizer.nesterov"].only[0].values == ("sgd",)
    # min_delta acts without early stopping too: it decides which epoch's checkpoint is the best
    assert rows["train.early_stopping.min_delta"] == "an improvement smaller than this does not count"


def test_set_of_a_list_entry_past_the_end_says_how_many_there_are():
    with pytest.raises(ConfigError) as refused:
        cfg.from_raw({"model": {"layers": LAYERS}}, "x.yaml", ["model.layers[4].units=3"])
    assert str(refused.value) == ("--set model.layers[4].units=3: model.layers has 4 entries (0 to 3); "
                                  "--print-config shows them")


def test_set_fills_a_section_left_empty_and_an_empty_value_is_null():
    config = cfg.from_raw({"train": None, "data": {"train_limit": 5}}, "x.yaml",
                          ["train.epochs=3", "data.train_limit="])
    assert config["train"]["epochs"] == 3 and config["data"]["train_limit"] is None


def test_only_a_run_s_onecycle_from_before_pct_start_reads_as_cosine():
    old = {"train": {"epochs": 2, "schedule": {"type": "onecycle"}}}
    today = {"train": {"epochs": 2, "schedule": {"type": "onecycle", "pct_start": 0.25}}}
    assert cfg.from_raw(old, "config.yaml", of_run=True)["train"]["schedule"]["type"] == "cosine"
    assert cfg.from_raw(today, "config.yaml", of_run=True)["train"]["schedule"]["type"] == "onecycle"


def test_a_quoted_key_with_a_colon_and_a_value_is_not_said_to_lack_a_space():
    # {type:sgd} is one key without a value; a key with a value was not glued to it
    with pytest.raises(ConfigError) as refused:
        cfg.validate({"train": {"optimizer:type": "sgd"}})
    assert "unknown key" in str(refused.value) and "put a space after the colon" not in str(refused.value)


def test_set_takes_a_value_that_holds_an_equals_sign():
    names = [f"{letter}=1" for letter in "abcdefghij"]
    config = cfg.from_raw({}, "x.yaml", [f"data.classes=[{', '.join(names)}]"])
    assert config["data"]["classes"] == names


def test_a_training_step_holds_each_image_of_a_batch_repeats_times():
    config = cfg.validate({"train": {"batch_size": 8}, "data": {"augment": {"shift": 1, "repeats": 3}}})
    assert cfg.step_images(config) == 24
