"""YAML config -> a resolved, validated config with every default filled in.

Every error names the file, the key path (``model.layers[3].kernel``) and what would be
valid, and is raised before anything is written.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import math
import os
import re
from pathlib import Path

import numpy as np
import yaml

from .errors import ConfigError, UsageError, command_line
from .engine.layer_arguments import ACTIVATED_LAYERS, CONV_ALGORITHMS, SOFTMAX_IN_LOSS, LayerConfigError
from .engine.layers import LAYERS, unknown_layer_type
from .engine.optim import AVERAGES, OPTIMIZERS, SCHEDULES
from .folders import check_run_name
from .runs import RunDir

MAX_LAYERS = 256
EVAL_BATCH_SIZE = 1000  # images an evaluation runs at once: memory, not results
MAX_BATCH_SIZE = 65536  # images in one batch, a training step's or an evaluation's
# The data.augment settings that change an image (repeats only copies it): any of them set makes
# the augmentation active.
WARPS = ("shift", "rotate", "scale", "elastic")


def bound_words(bound) -> str:
    """A key's bound as people write it: 1e+12, not 1000000000000.0 (the bounds are round numbers)."""
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


class Only:
    """A condition under which a key acts: the key at ``switch`` holds one of ``values`` (the
    optimizer's type is sgd: momentum acts)."""

    def __init__(self, switch: str, *values):
        self.switch, self.values = switch, values

    @property
    def switches(self) -> tuple[str, ...]:
        """The keys whose values decide the condition."""
        return (self.switch,)

    def holds_in(self, value_of) -> bool:
        """Whether the condition holds where ``value_of`` maps a key path to its value."""
        return self.holds(value_of(self.switch))

    def holds(self, value) -> bool:
        return value in self.values

    def rule(self, path: str) -> str:
        return f"{path} acts only with {self.words()}"

    def refusal(self, path: str, value_of, instead: str) -> str:
        """Why the key at ``path``, set where the condition fails, is refused, and the fixes:
        ``instead`` (a Field's) names the key that does its job there."""
        chosen = value_of(self.switch)
        instead = f", or set {instead.format(chosen=_yaml_text(chosen))}" if instead else ""
        return (f"{self.rule(path)} (this config has {self.words([chosen])}); remove it{instead}, or set "
                f"{self.switch} to {self.met_by()}")

    def met_by(self) -> str:
        """The switch's values that meet the condition, as a fix names them: "sgd", "adam or adamw"."""
        return self.listed()

    def listed(self, values=None) -> str:
        """``values`` (by default the condition's) as YAML writes them: "constant, step or cosine"."""
        values = [_yaml_text(value) for value in (self.values if values is None else values)]
        return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"

    def words(self, values=None) -> str:
        """``listed`` with what they are: "optimizer adam or adamw", "train.schedule.cycle_momentum true"."""
        section, _, key = self.switch.rpartition(".")
        return f"{section.rpartition('.')[2] if key == 'type' else self.switch} {self.listed(values)}"


class OnlyAbove(Only):
    """A condition under which a key acts: the key at ``switch`` is above ``bound`` (not null): the
    smoothing of an elastic distortion acts only with a distortion."""

    def __init__(self, switch: str, bound=0):
        super().__init__(switch)
        self.bound = bound

    def holds(self, value) -> bool:
        return value is not None and value > self.bound

    def met_by(self) -> str:
        return f"a value above {self.bound}"

    def listed(self, values=None) -> str:
        return f"above {self.bound}" if values is None else super().listed(values)


class Unless:
    """A condition under which a key acts: not all of ``conditions`` hold, for where they all do
    another key does its job (onecycle with cycle_momentum sets the momentum every step).
    ``because`` says so, ``fix`` what to set instead."""

    def __init__(self, *conditions: Only, because: str, fix: str):
        self.conditions, self.because, self.fix = conditions, because, fix

    @property
    def switches(self) -> tuple[str, ...]:
        return tuple(switch for condition in self.conditions for switch in condition.switches)

    def holds_in(self, value_of) -> bool:
        return not all(condition.holds_in(value_of) for condition in self.conditions)

    def words(self) -> str:
        return " and ".join(condition.words() for condition in self.conditions)

    def rule(self, path: str) -> str:
        return f"{path} does nothing with {self.words()}"

    def refusal(self, path: str, value_of, instead: str) -> str:
        return f"{self.rule(path)}: {self.because}; remove it, {self.fix}"


def acting_words(conditions) -> str:
    """The conditions under which a key acts, as people read them: "only with optimizer sgd, not with
    schedule onecycle and train.schedule.cycle_momentum true"; "" for a key that always acts."""
    required = [condition.words() for condition in conditions if not isinstance(condition, Unless)]
    excluded = [f"not with {condition.words()}" for condition in conditions if isinstance(condition, Unless)]
    return ", ".join(([f"only with {' and '.join(required)}"] if required else []) + excluded)


class Field:
    """A leaf of the schema: its default, what it accepts and a line of documentation."""

    def __init__(self, default, kind, doc, low=None, high=None, choices=None, optional=False, above_low=False,
                 only=(), instead=""):
        """``above_low``: ``low`` itself is refused (a learning rate of 0 trains nothing). ``only``:
        the conditions (``Only``, ``Unless``) under which the key acts; set to another value where one
        fails, it is refused. ``instead``: the key that does its job where an ``Only`` fails, with
        "{chosen}" for the switch's value ("train.optimizer.beta1 for {chosen}'s momentum")."""
        self.default, self.kind, self.doc = default, kind, doc
        self.low, self.high, self.choices, self.optional = low, high, choices, optional
        self.above_low, self.only, self.instead = above_low, only, instead

    def check(self, value, path):
        if value is None and self.optional:
            return None
        expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                    list: "a list"}[self.kind]
        if self.choices is not None:
            if value not in self.choices:
                raise _err(path, f"must be one of {', '.join(map(str, self.choices))}; got {value!r}; "
                                 f"{did_you_mean(value, map(str, self.choices))}".rstrip("; "))
            return value
        ok = {
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            bool: isinstance(value, bool),
            str: isinstance(value, str),
            list: isinstance(value, list),
        }[self.kind]
        if not ok:
            extra = " or null" if self.optional else ""
            read_as = " (YAML reads yes/no/on/off as true/false)" if isinstance(value, bool) else ""
            raise _err(path, f"must be {expected}{extra}; got {value!r} ({type(value).__name__}){read_as}")
        if self.kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise _err(path, f"must be a finite number; got {value!r}")
        if self.low is not None and (value <= self.low if self.above_low else value < self.low):
            raise _err(path, f"must be {'>' if self.above_low else '>='} {bound_words(self.low)}; got {value!r}")
        if self.high is not None and value > self.high:
            raise _err(path, f"must be <= {bound_words(self.high)}; got {value!r}")
        return value


class _PathError(Exception):
    def __init__(self, path, message):
        super().__init__(message)
        self.path, self.message = path, message


def _err(path, message):
    return _PathError(path, message)


LENET_LAYERS = [
    {"type": "conv2d", "filters": 32, "kernel": 5, "padding": 2},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "conv2d", "filters": 64, "kernel": 5, "padding": 2},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 128},
    {"type": "relu"},
    {"type": "dense", "units": 10},
]

SGD = Only("train.optimizer.type", "sgd")
ADAM = Only("train.optimizer.type", "adam", "adamw")
WARMED_UP = Only("train.schedule.type", "constant", "step", "cosine")
ONECYCLE = Only("train.schedule.type", "onecycle")
CYCLED = Only("train.schedule.cycle_momentum", True)
# As PyTorch's OneCycleLR, which documents it: the schedule overwrites momentum or beta1 every step.
CYCLING = Unless(ONECYCLE, CYCLED, because="the schedule sets it every step, from train.schedule.max_momentum to "
                 "base_momentum and back", fix="set train.schedule.base_momentum and max_momentum instead, or set "
                 "train.schedule.cycle_momentum to false")
AVERAGED = Only("train.average.type", "ema", "swa")

SCHEMA = {
    "name": Field("run", str, "run name: the run directory is runs/<name>-<timestamp>"),
    "data": {
        "dir": Field(None, str, "folder of MNIST-layout IDX files; null: the bundled, verified MNIST",
                     optional=True),
        "classes": Field(None, list, "class names; null: the digits 0-9", optional=True),
        "validation": Field(5000, int, "images of the official training set held out for validation", 1, 10**7),
        "split": Field("head", str, "head: validation is the first images (as TensorFlow); random: seeded, "
                                    "stratified", choices=("head", "random")),
        "train_limit": Field(None, int, "use only this many training images (quick runs)", 1, 10**8,
                             optional=True),
        "preprocess": {
            "type": Field("scale", str, "binarize (x > threshold), scale (x/255) or standardize",
                          choices=("binarize", "scale", "standardize")),
            "threshold": Field(0, int, "pixels above this uint8 value become 1", 0, 254,
                               only=(Only("data.preprocess.type", "binarize"),)),
        },
        "augment": {
            "shift": Field(0, int, "random shifts of up to this many pixels (training only)", 0, 8),
            "rotate": Field(0.0, float, "random rotations of up to this many degrees", 0, 45),
            "scale": Field(0.0, float, "random scaling by up to this fraction (0.1: 0.9x to 1.1x)", 0, 0.5),
            "elastic": Field(0.0, float, "elastic distortion's strength (Simard's alpha, e.g. 8 to 34); 0: none",
                             0, 100),
            "elastic_sigma": Field(4.0, float, "the smoothing of the elastic distortion's field, in pixels", 0.5, 20,
                                   only=(OnlyAbove("data.augment.elastic"),)),
            "repeats": Field(1, int, "each image of a batch this many times, each with its own augmentation (batch "
                                     "augmentation: a step trains on train.batch_size x repeats images)", 1, 16),
        },
    },
    "model": {
        "input_shape": Field([28, 28, 1], list, "image shape (H, W, C) the model takes"),
        "conv_algorithm": Field("auto", str, "how conv2d layers compute: auto (by shape), im2col or fft-gemm; "
                                "a layer's own algorithm: wins", choices=CONV_ALGORITHMS),
        "layers": Field(copy.deepcopy(LENET_LAYERS), list, "the layer stack: [{type: conv2d, ...}, ...]"),
    },
    "train": {
        "epochs": Field(10, int, "passes over the training split", 1, 100000),
        "batch_size": Field(64, int, "images per training step", 1, MAX_BATCH_SIZE),
        "drop_last": Field(False, bool, "drop the last, smaller batch of each epoch"),
        "seed": Field(0, int, "seeds initialisation, shuffling, augmentation and dropout", 0, 2**63 - 1),
        "optimizer": {
            "type": Field("adam", str, "sgd, adam or adamw", choices=tuple(OPTIMIZERS)),
            "lr": Field(0.001, float, "base learning rate", 0, 1e12, above_low=True),
            "momentum": Field(0.9, float, "momentum", 0, 0.9999, only=(SGD, CYCLING),
                              instead="train.optimizer.beta1 for {chosen}'s momentum"),
            "nesterov": Field(False, bool, "Nesterov momentum", only=(SGD, OnlyAbove("train.optimizer.momentum"))),
            "beta1": Field(0.9, float, "first-moment decay", 0, 0.9999, only=(ADAM, CYCLING),
                           instead="train.optimizer.momentum for {chosen}'s momentum"),
            "beta2": Field(0.999, float, "second-moment decay", 0, 0.999999, only=(ADAM,)),
            "eps": Field(1e-8, float, "denominator epsilon", 1e-12, 1, only=(ADAM,)),
        },
        "weight_decay": Field(0.0, float, "L2 (sgd, adam) or decoupled (adamw) decay of weights", 0, 1),
        "label_smoothing": Field(0.0, float, "label smoothing of the cross-entropy target", 0, 0.5),
        "schedule": {
            "type": Field("constant", str, "constant, step, cosine or onecycle (Smith and Topin's, as PyTorch's "
                                           "OneCycleLR)", choices=SCHEDULES),
            "warmup_epochs": Field(0.0, float, "linear warm-up over this many epochs, from lr / its steps up to "
                                               "lr; step and cosine count from its end", 0, 1000,
                                  only=(WARMED_UP,), instead="train.schedule.pct_start for {chosen}'s rise"),
            "step_epochs": Field(1, int, "multiply by gamma every this many epochs", 1, 100000,
                                 only=(Only("train.schedule.type", "step"),)),
            "gamma": Field(0.1, float, "the factor", 0, 1, only=(Only("train.schedule.type", "step"),)),
            "min_lr": Field(0.0, float, "the final learning rate", 0, 100,
                            only=(Only("train.schedule.type", "cosine"),)),
            "pct_start": Field(0.3, float, "the share of the run over which the rate rises to lr", 0.001, 0.999,
                               only=(ONECYCLE,), instead="train.schedule.warmup_epochs for {chosen}'s warm-up"),
            "div_factor": Field(25.0, float, "the rate starts at lr / div_factor", 1, 1e6, only=(ONECYCLE,)),
            "final_div_factor": Field(1e4, float, "the rate ends at lr / div_factor / final_div_factor", 1, 1e9,
                                      only=(ONECYCLE,)),
            "cycle_momentum": Field(True, bool, "move momentum (sgd) or beta1 (adam) against the rate",
                                    only=(ONECYCLE,)),
            "base_momentum": Field(0.85, float, "momentum or beta1 at the peak rate", 0, 0.9999,
                                   only=(ONECYCLE, CYCLED)),
            "max_momentum": Field(0.95, float, "momentum or beta1 at the start and the end", 0, 0.9999,
                                  only=(ONECYCLE, CYCLED)),
        },
        "average": {
            "type": Field("none", str, "evaluate and keep averaged weights: ema (every step) or swa (each epoch's "
                                       "end); none: the last weights", choices=AVERAGES),
            "decay": Field(0.999, float, "the average keeps this share of itself each step", 0, 0.999999,
                           only=(Only("train.average.type", "ema"),)),
            "start": Field(0.0, float, "the share of the run after which averaging begins", 0, 0.999,
                           only=(AVERAGED,)),
        },
        "early_stopping": {
            "patience": Field(None, int, "stop after this many epochs without a better validation accuracy; "
                                         "null: never", 1, 100000, optional=True),
            "min_delta": Field(0.0, float, "an improvement smaller than this does not count", 0, 1),
        },
        "checkpoint": {
            "every": Field(1, int, "write checkpoints/last.npz every this many epochs (and at the end)", 1, 100000),
        },
        "eval_batch_size": Field(EVAL_BATCH_SIZE, int, "images per evaluation batch", 1, MAX_BATCH_SIZE),
        "workers": Field(None, int, "workers that each take a share of every batch (BLAS limited to one thread "
                                    "each); null: as the model's size pays for", 1, 64, optional=True),
        "parallel": Field(None, str, "how the workers run: threads, or processes (a small net's many short "
                                     "NumPy calls do not wait for each other); null: as the model's size pays for",
                          choices=("threads", "processes"), optional=True),
        "blas_threads": Field(None, int, "BLAS threads when one worker computes a batch (more workers use one "
                                         "each); null: the BLAS library's default", 1, 256, optional=True),
    },
}


def schema_fields(schema=SCHEMA, prefix: str = "") -> dict[str, Field]:
    """Every key a config can set, by its path (``train.optimizer.lr``), with its Field."""
    fields = {}
    for key, field in schema.items():
        fields.update(schema_fields(field, f"{prefix}{key}.") if isinstance(field, dict) else {prefix + key: field})
    return fields


FIELDS = schema_fields()


def value_at(config: dict, path: str):
    """The value at a key path (``train.optimizer.type``) of a resolved config."""
    for key in path.split("."):
        config = config[key]
    return config


def unmet_condition(path: str, value_of) -> Only | Unless | None:
    """The first condition under which the key at ``path`` acts that ``value_of`` (a key path -> its
    value) does not meet; None when the key acts."""
    return next((only for only in FIELDS[path].only if not only.holds_in(value_of)), None)


def acts(config: dict, path: str) -> bool:
    """Whether the key at ``path`` acts in a resolved config (momentum does with sgd, not with adam)."""
    return unmet_condition(path, lambda switch: value_at(config, switch)) is None


def idle_keys_at_defaults(config: dict) -> dict:
    """A resolved config with every key that does not act at its default: what it trains is the same,
    and written out (a sweep's trial that drew adam over a base config's sgd momentum), it passes
    the rule that refuses a key set where it does not act."""
    config = copy.deepcopy(config)
    for path, field in FIELDS.items():
        if not acts(config, path):
            *sections, key = path.split(".")
            value_at(config, ".".join(sections))[key] = copy.deepcopy(field.default)
    return config


def _check_acting(config: dict, source: str, origins: dict | None) -> None:
    """Refuse a key set to other than its default where it does not act (momentum with adam): a
    user of Keras or PyTorch expects the setting to count. Defaults never count, so a resolved
    config, which holds every key (a run's config.yaml, --print-config), passes."""
    def value_of(switch):
        return value_at(config, switch)

    for path, field in FIELDS.items():
        unmet = unmet_condition(path, value_of)
        if unmet is None or value_of(path) == field.default:
            continue
        blamed = _first_setter((path, *unmet.switches), source, origins)
        raise ConfigError(f"{blamed}: {unmet.refusal(path, value_of, field.instead)}")


def describe_keys() -> list[tuple[str, str, str, str]]:
    """``(key path, what it takes, default, meaning)`` for every key a config can set; the meaning
    of a key that acts only with some settings starts with them ("only with optimizer sgd: ")."""
    rows = []
    for path, field in FIELDS.items():
        takes = " | ".join(map(str, field.choices)) if field.choices else field.kind.__name__
        if field.low is not None or field.high is not None:
            low, high = ("" if bound is None else bound_words(bound) for bound in (field.low, field.high))
            takes += f" in {'(' if field.above_low else '['}{low}, {high}]"
        default = _yaml_text(field.default)
        default = "the LeNet stack" if path == "model.layers" else default
        only = f"{acting_words(field.only)}: " if field.only else ""
        rows.append((path, takes + (" or null" if field.optional else ""), default, only + field.doc))
    return rows


def describe_layers() -> list[tuple[str, str, str, str]]:
    """``describe_keys``' rows for the layer types: ``model.layers[i]: TYPE``, its arguments (with
    their defaults; one without must be given) and what the layer is."""
    rows = []
    for kind, layer in LAYERS.items():
        defaults = {name: p.default for name, p in inspect.signature(layer.__init__).parameters.items()}
        defaults["activation"] = None
        arguments = [name if defaults[name] is inspect.Parameter.empty else f"{name}={_yaml_text(defaults[name])}"
                     for name in layer_arguments(kind)]
        rows.append((f"model.layers[i]: {kind}", ", ".join(arguments), "", layer.__doc__.strip().splitlines()[0]))
    return rows


LAYER_ARGUMENT = re.compile(r"model\.layers\[i\]\.(\w*)")  # a layer's argument, as --set names it


def as_pattern(key: str) -> str:
    """A key as the list of keys spells it: a list index ([0], [-1]) read as [i]."""
    return re.sub(r"\[-?\d+\]", "[i]", key)


def key_rows(prefix: str = "") -> list[tuple[str, str, str, str]]:
    """The keys and layer types that start with ``prefix`` (a list index such as [0] read as [i]);
    for ``model.layers[i].ARGUMENT``, the layer types with an argument that starts so."""
    prefix = as_pattern(prefix)
    argument = LAYER_ARGUMENT.fullmatch(prefix)
    if argument:
        return [row for row, kind in zip(describe_layers(), LAYERS)
                if any(name.startswith(argument.group(1)) for name in layer_arguments(kind))]
    return [row for row in describe_keys() + describe_layers() if row[0].startswith(prefix)]


def search_keys(query: str) -> list[tuple[str, str, str, str]]:
    """``key_rows``' rows of the keys, and the layer types by their arguments, that hold each
    dot-separated part of ``query`` in order (``lr``: train.optimizer.lr; ``data.limit``:
    data.train_limit; ``filters``: conv2d)."""
    parts = [re.escape(part) for part in as_pattern(query).split(".") if part]
    if not parts:
        return []
    pattern = re.compile(".*".join(parts))
    return [row for row in describe_keys() + describe_layers() if pattern.search(f"{row[0]} {row[1]}")]


def _yaml_text(value) -> str:
    return dump(value).strip().removesuffix("...").strip()


def find_keys(query: str) -> tuple[list[tuple[str, str, str, str]], str]:
    """``(rows, title)`` of what ``mnistcnn config-keys QUERY`` lists: the keys that start with
    ``query``, or else those that hold it, as a search would find them."""
    rows = key_rows(query)
    if rows:
        return rows, "config keys"
    rows = search_keys(query)
    if rows:
        return rows, f"config keys with {query!r} in them"
    raise UsageError(no_key_message(query))


def did_you_mean(key, options) -> str:
    close = difflib.get_close_matches(str(key), list(options), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def glued_key(mapping: dict) -> str:
    """A hint for a key that YAML read with its value glued on (``{type:sgd}``: no space after
    the colon, so one key 'type:sgd' without a value), else ""; it ends in "; "."""
    glued = next((key for key, value in mapping.items() if isinstance(key, str) and ":" in key and value is None), None)
    if glued is None:
        return ""
    name, _, value = glued.partition(":")
    return f"YAML reads {glued!r} as one key: put a space after the colon ({name}: {value}); "


def no_key_message(prefix: str) -> str:
    """What to say when no key starts with ``prefix``: the closest key (cut to as many parts), or
    for a layer's argument the closest argument of any layer."""
    argument = LAYER_ARGUMENT.fullmatch(as_pattern(prefix))
    if argument:
        given = argument.group(1)
        hint = did_you_mean(given, {name for kind in LAYERS for name in layer_arguments(kind)})
        hint = hint.replace("did you mean '", f"did you mean '{prefix[:len(prefix) - len(given)]}", 1)
        return (f"no layer takes an argument that starts with {given!r}; {hint}`mnistcnn config-keys model.layers` "
                "lists every layer type's arguments")
    depth = prefix.count(".") + 1
    hint = did_you_mean(prefix, {".".join(row[0].split(".")[:depth]) for row in describe_keys()})
    return f"no config key starts with or holds {prefix!r}; {hint}the sections are name, data, model and train"


def unknown_key_hint(key, here, value=None) -> str:
    """What to say of a key unknown where it stands (``here``: the keys there), ending in "; " or
    "": the section of the config that holds such a key or such a section (lr: or optimizer:
    outside train:), else a colon without its space (``value`` None), else the nearest spelling."""
    homes = list(dict.fromkeys(name[1:name.rindex(f".{key}.")] for name in
                               (f".{row[0]}." for row in describe_keys()) if f".{key}." in name))
    if len(homes) > 1:
        return f"it belongs in one of {', '.join(homes)}; "
    if homes:
        where, meant = (f"in {homes[0]}", f"{homes[0]}.{key}") if homes[0] else ("at the top level", key)
        return f"it belongs {where}: did you mean '{meant}'? "
    return glued_key({key: value}) or did_you_mean(key, here)


def _resolve(schema: dict, given, path: str) -> dict:
    if not isinstance(given, dict):
        spelled = f"; did you mean {{type: {given}}}?" if "type" in schema and isinstance(given, str) else ""
        raise _err(path, f"must be a mapping of keys ({', '.join(schema)}); got {given!r}{spelled}")
    out = {}
    for key in given:
        if key not in schema:
            raise _err(f"{path}.{key}" if path else str(key),
                       f"unknown key; {unknown_key_hint(key, schema, given[key])}valid keys here: {', '.join(schema)}")
    for key, spec in schema.items():
        sub = f"{path}.{key}" if path else key
        if isinstance(spec, dict):
            out[key] = _resolve(spec, given.get(key, {}) if given.get(key) is not None else {}, sub)
        else:
            out[key] = spec.check(given[key], sub) if key in given else copy.deepcopy(spec.default)
    return out


# Values that show a required layer argument in an error's example.
LAYER_EXAMPLES = {"filters": 32, "units": 128}


def layer_arguments(kind: str) -> list[str]:
    """The arguments a layer type takes in a config: its constructor's, and ``activation`` for
    the layers that take one (conv2d and dense)."""
    accepted = [p for p in inspect.signature(LAYERS[kind].__init__).parameters if p != "self"]
    return accepted + (["activation"] if kind in ACTIVATED_LAYERS else [])


def _check_layers(layers):
    """The entries of ``model.layers``, each a layer type with the arguments it takes."""
    path = "model.layers"
    if not layers:
        raise _err(path, "must list at least one layer")
    if len(layers) > MAX_LAYERS:
        raise _err(path, f"has {len(layers)} layers; at most {MAX_LAYERS} are supported")
    for i, spec in enumerate(layers):
        where = f"{path}[{i}]"
        if not isinstance(spec, dict):
            raise _err(where, f"must be a mapping like {{type: conv2d, filters: 32}}; got {spec!r}")
        kind = spec.get("type")
        if kind == "softmax":
            raise _err(f"{where}.type", SOFTMAX_IN_LOSS.format(what="this layer"))
        if kind not in LAYERS:
            raise _err(f"{where}.type", unknown_layer_type(kind, glued_key(spec) or did_you_mean(kind, LAYERS)))
        accepted = layer_arguments(kind)
        required = [name for name, parameter in inspect.signature(LAYERS[kind].__init__).parameters.items()
                    if name != "self" and parameter.default is inspect.Parameter.empty]
        missing = [name for name in required if name not in spec]
        if missing:
            example = ", ".join(f"{name}: {LAYER_EXAMPLES.get(name, 'N')}" for name in required)
            raise _err(where, f"{kind} needs {' and '.join(repr(name) for name in missing)}, "
                              f"e.g. {{type: {kind}, {example}}}")
        for key in spec:
            if key not in ("type", "activation") and key not in accepted:  # the model checks activation
                raise _err(f"{where}.{key}", f"{kind} has no argument {key!r}; {did_you_mean(key, accepted)}"
                                             f"valid: {', '.join(accepted)}")
        for key, value in spec.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise _err(f"{where}.{key}", f"must be a finite number; got {value!r}")


def _source_of(path: str, source: str, origins: dict | None) -> str:
    """The option that set ``path``, else one that set a section holding it or a key inside it, else
    the file."""
    origins = origins or {}
    if path in origins:
        return origins[path]
    for key, option in origins.items():
        if path.startswith((key + ".", key + "[")) or key.startswith((path + ".", path + "[")):
            return option
    return source


def _first_setter(paths, source: str, origins: dict | None) -> str:
    """``_source_of`` the first of ``paths`` that an option set, else the file."""
    return next((option for option in (_source_of(path, source, origins) for path in paths) if option != source),
                source)


def validate(raw: dict, source: str = "<config>", origins: dict | None = None) -> dict:
    """Fill defaults into ``raw`` and check it all, including that the layer stack fits.
    ``origins`` maps key paths to the options that set them (``--lr -1``), named in errors."""
    try:
        config = _resolve(SCHEMA, raw, "")
        try:
            check_run_name(config["name"])
        except ConfigError as err:
            raise _err("name", str(err)) from None
        shape = config["model"]["input_shape"]
        if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 4096
                                      for n in shape):
            raise _err("model.input_shape", f"must be [height, width, channels] of positive integers; got {shape!r}")
        classes = config["data"]["classes"]
        if classes is not None and (len(classes) < 2 or len(set(map(str, classes))) != len(classes)):
            raise _err("data.classes", f"must list at least two distinct class names; got {classes!r}")
        _check_layers(config["model"]["layers"])
        augment = config["data"]["augment"]
        if augment["repeats"] > 1 and not any(augment[key] for key in WARPS):
            raise _err("data.augment.repeats", f"{augment['repeats']} copies of an image are the same image "
                       f"without augmentation; set data.augment.{', '.join(WARPS[:-1])} or {WARPS[-1]}, "
                       "or repeats: 1")
    except _PathError as err:
        raise ConfigError(f"{_source_of(err.path, source, origins)}: {err.path}: {err.message}") from None
    check_model(config, source, origins)
    return config


def step_images(config: dict) -> int:
    """Images in one training step: a batch, each image ``data.augment.repeats`` times."""
    return config["train"]["batch_size"] * config["data"]["augment"]["repeats"]


def num_classes(config: dict) -> int:
    return len(class_names(config))


def class_names(config: dict) -> list[str]:
    classes = config["data"]["classes"]
    return [str(d) for d in range(10)] if classes is None else [str(c) for c in classes]


# The random streams one train.seed starts, each its own: a change in how one is used (more
# augmentation, say) leaves the others' numbers as they were. The shuffle of epoch e draws from
# [seed, e] (data.BatchIterator), so epochs 0-3 share these generators' seeds, and data.split=random
# from seed, which NumPy seeds as [seed, 0] (the weights'): harmless, as the uses differ, and kept
# so that recorded runs train again as they did.
RANDOM_STREAMS = ("weights", "augmentation", "dropout", "batchnorm recompute")


def random_stream(seed: int, use: str) -> np.random.Generator:
    return np.random.default_rng([seed, RANDOM_STREAMS.index(use)])


def build_model(config: dict, rng=None, dtype=np.float32):
    """The Sequential of a config's model section, its weights drawn from ``rng``."""
    from .engine.model import Sequential

    return Sequential.from_config(config["model"]["layers"], config["model"]["input_shape"], rng, dtype)


def fast_plan(model, config: dict):
    """The plan that trains and evaluates ``model`` fast, with the config's conv algorithm."""
    from .engine.fast.plan import Plan

    return Plan(model, config["model"]["conv_algorithm"])


def check_model(config: dict, source: str = "<config>", origins: dict | None = None):
    """Build the model and the fast plan that will run it (shapes only matter) to prove the
    stack fits; returns the plan (``plan.model`` is the model)."""
    try:
        model = build_model(config, np.random.default_rng(0))
        try:
            plan = fast_plan(model, config)
        except LayerConfigError as err:  # numbered by the model's layers: the config's entry instead
            raise err.at(model.spec_index[err.index]) if err.index is not None else err
    except LayerConfigError as err:
        index = err.index
        where = ("model.layers" if index is None else f"model.layers[{index}]") + (f".{err.key}" if err.key else "")
        raise ConfigError(f"{_source_of(where, source, origins)}: {where}: {err}") from None
    classes = num_classes(config)
    if model.output_shape != (classes,):
        # who set the last layer, the classes or any layer
        where = f"model.layers[{len(config['model']['layers']) - 1}]"
        blamed = _first_setter((where, "data.classes", "model.layers"), source, origins)
        raise ConfigError(f"{blamed}: model.layers[-1]: the model ends with shape {model.output_shape} but there are "
                          f"{classes} classes; end with {{type: dense, units: {classes}}}")
    return plan


# -- YAML -----------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """Safe loading (no Python objects) that also refuses duplicate keys."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
# YAML 1.1 reads 1e-3 (no dot) as a string; YAML 1.2, Python and every user read it as a number.
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


# what PyYAML's "while parsing a flow mapping" and the like mean to someone who wrote the file
UNCLOSED = {"flow mapping": "the {", "flow sequence": "the [", "quoted scalar": "the quoted string"}
# PyYAML's words for the slips of indentation and colons (the start of its problem), in the words of someone
# who wrote the file, with the fix
SLIPS = {
    "expected <block end>": "indented differently from the lines above it; give the keys of one section, and the "
                            "items of one list, the same indentation",
    "mapping values are not allowed here": "a ':' where a value goes: a key indented deeper than the key above it, a "
                                           "key above it without its ':', or two keys on one line; write one "
                                           "'key: value' a line (a value holding ': ' in quotes)",
    "could not find expected ':'": "a key without its ':'; write 'key: value'",
}
# A list item's dash glued to the item (-{type: relu}, -type: relu), not a negative number nor ---: PyYAML
# reads it as text and fails on it or on the next item, in words of indentation or colons
GLUED_DASH = re.compile(r"^(\s*)-[^\s\d.-]")


def parse_yaml(text: str, source: str):
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        opened = getattr(err, "context_mark", None)
        slip = next((words for start, words in SLIPS.items() if problem.startswith(start)), None)
        glued = [number for number, line in enumerate(text.splitlines()[:mark.line + 1] if mark else [])
                 if GLUED_DASH.match(line)]
        if glued:
            line = text.splitlines()[glued[-1]]
            indent = len(GLUED_DASH.match(line).group(1))
            where = f" (line {glued[-1] + 1}, column {indent + 1})"
            problem = f"a list item's '-' needs a space after it; write '- {line[indent + 1:].strip()}'"
        elif slip:
            if problem.startswith("could not find expected ':'") and opened:  # found a line later: the key's line
                where = f" (line {opened.line + 1}, column {opened.column + 1})"
            problem = slip
        elif getattr(err, "context", None) and opened and mark and opened.line != mark.line:  # e.g. an unclosed {
            what = next((name for kind, name in UNCLOSED.items() if kind in err.context), "the construct")
            problem += f"; {what} opened on line {opened.line + 1}, column {opened.column + 1} is not closed"
        tab = "\t" in text and ("tab" in str(err).lower() or "'\\t'" in str(err))
        hint = "; indent with spaces, not tabs" if tab else ""
        if "could not determine a constructor" in problem:  # !!python/object and the like
            hint = "; a config holds plain values (numbers, words, lists, mappings): remove the tag"
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}{hint}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None


READY_MADE = Path(__file__).resolve().parent.parent / "configs"  # in the repository, beside the package


def ready_made(name: str = "") -> str:
    """Where the repository's ready-made configs are (``name`` inside them), as a path that works
    from the current folder; a hint for a config that was not found."""
    folder = READY_MADE
    if not folder.is_dir():  # installed without the repository
        return f"configs/{name} in the mnistcnn repository"
    try:
        folder = folder.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"{folder}/{name}"


def ready_made_like(path: Path) -> str:
    """The ready-made config named nearest to a config not found, as a question ("did you mean
    configs/quick.yaml? "), for a slip: the name alone (quick), without its folder, a letter
    missing, .yml; "" when no ready-made config's name is near."""
    near = difflib.get_close_matches(path.stem, sorted(p.stem for p in READY_MADE.glob("*.yaml")), n=1, cutoff=0.8)
    return f"did you mean {ready_made(near[0] + '.yaml')}? " if near else ""


def load_raw(path, of_run: bool = False) -> dict:
    """The YAML mapping in ``path``; ``of_run``: it is a run's config.yaml, whose checkpoints keep a copy."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; {ready_made_like(path)}see {ready_made()} for ready-made "
                          "ones") from None
    except IsADirectoryError:
        run = RunDir(path)
        if run.config_file.is_file():
            go_on = ("train it longer with " + command_line('train', '--resume', path, '--epochs', 'N') if run.finished
                     else "continue it with " + command_line('train', '--resume', path))
            raise ConfigError(f"{path}: is a run directory, not a config; {go_on}, or train its config afresh: "
                              f"{command_line('train', run.config_file)}") from None
        raise ConfigError(f"{path}: is a folder; give a YAML config file") from None
    except UnicodeDecodeError:
        what = "a checkpoint" if path.suffix == ".npz" else "not a text file"
        raise ConfigError(f"{path}: is {what}, not a YAML config; {ready_made()} holds ready-made ones") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        fix = ("move it away, and the copy the run's checkpoints keep is read, or put its settings back" if of_run
               else f"start from {ready_made('lenet.yaml')}")
        raise ConfigError(f"{path}: the config is empty; {fix}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping with sections name, data, model, train; "
                          f"got a {type(raw).__name__}")
    return raw


_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[-?\d+\])*)")


def _key_steps(key: str, option: str) -> list:
    """``model.layers[0].filters`` as ``["model", "layers", 0, "filters"]``."""
    steps = []
    for part in key.strip().split("."):
        match = _KEY_PART.fullmatch(part)
        if not match:
            example = ("model.layers[0].filters=4 (a list entry in brackets)" if part.isdigit()
                       else "train.optimizer.lr=0.01")
            raise ConfigError(f"{option}: {part!r} is not a key name; e.g. {example}")
        steps.append(match.group(1))
        steps.extend(int(index) for index in re.findall(r"-?\d+", match.group(2)))
    return steps


def _step_path(node, step, where: str, option: str, hint: str = "") -> str:
    """The key path one ``step`` (a list index or a key) below ``node``, found at ``where``; a
    ConfigError when ``node`` has no such entry or is not a section."""
    if isinstance(step, int):
        if not isinstance(node, list) or not -len(node) <= step < len(node):
            what = f"has {len(node)} entries (0 to {len(node) - 1})" if isinstance(node, list) else "is not a list"
            raise ConfigError(f"{option}: {where} {what}{hint}")
        return f"{where}[{step % len(node)}]"
    if not isinstance(node, dict):
        raise ConfigError(f"{option}: {where} is a value, not a section with keys")
    return f"{where}.{step}" if where else step


def set_path(raw: dict, key: str, value, option: str) -> str:
    """Set ``key`` (dots between sections, ``[i]`` for a list entry) in a raw config; a step
    that leads nowhere says what is there. Returns the key's path, list indices counted from 0."""
    steps = _key_steps(key, option)
    node, where = raw, ""
    for step, following in zip(steps, steps[1:] + [None]):
        here = _step_path(node, step, where, option, "; --print-config shows them")
        if isinstance(step, int):
            step %= len(node)
        if following is None:
            node[step] = value
            return here
        if isinstance(node, dict) and node.get(step) is None:
            if isinstance(following, int):
                raise ConfigError(f"{option}: {here} is not in the config file; write the list there to "
                                  "change one of its entries (--print-config prints the whole config, the "
                                  "default list included, to copy it from)")
            node[step] = {}
        node, where = node[step], here


def lookup(config: dict, key: str, option: str):
    """The value at ``key`` (as ``--set`` writes it) in a resolved config, or a ConfigError that
    says which step leads nowhere and what is there instead."""
    node, where = config, ""
    for step in _key_steps(key, option):
        here = _step_path(node, step, where, option)
        if not isinstance(step, int) and step not in node:
            raise ConfigError(f"{option}: {here}: unknown key; {unknown_key_hint(step, node)}valid keys here: "
                              f"{', '.join(node)}")
        node, where = node[step], here
    return node


def option_words(option: str, value) -> str:
    """An option as it was given, as errors name it and a run's status.json lists it:
    ``--set train.epochs=3``, ``--lr 0.01``."""
    return f"{option} {value}"


def given_options(sets, flags: dict) -> list[str]:
    """The ``--set`` assignments and the flags (as ``load_config`` takes them) that were given,
    each in ``option_words``: what a run records as having changed its config."""
    return [option_words("--set", assignment) for assignment in sets] + [
        option_words(option, value) for option, (_, value) in flags.items() if value is not None]


def apply_override(raw: dict, assignment: str) -> str:
    """Apply ``--set a.b[i].c=value`` (value parsed as YAML) to a raw config in place; returns
    the key path."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.optimizer.lr=0.01")
    key, text = assignment.split("=", 1)
    where = option_words("--set", assignment)
    value = parse_yaml(text, where) if text.strip() else None
    return set_path(raw, key, value, where)


def upgrade_run_config(raw: dict) -> dict:
    """A run's config written by an older mnistcnn, in today's terms: its ``onecycle`` (from before
    ``pct_start``) was a warm-up then a cosine, which is ``cosine`` now."""
    schedule = raw.get("train", {}).get("schedule") if isinstance(raw.get("train"), dict) else None
    if isinstance(schedule, dict) and schedule.get("type") == "onecycle" and "pct_start" not in schedule:
        return {**raw, "train": {**raw["train"], "schedule": {**schedule, "type": "cosine"}}}
    return raw


def data_dir_flag(data_dir) -> dict:
    """The ``flags`` entry (see ``load_config``) of the --data-dir option."""
    return {"--data-dir": ("data.dir", str(data_dir) if data_dir else None)}


def load_config(path, overrides=(), flags: dict | None = None, of_run: bool = False) -> dict:
    """Read a YAML file, apply ``--set`` overrides, then flags (``{"--epochs": ("train.epochs",
    3)}``), validate and resolve. An error about a key that an option set names the option.
    ``of_run``: the file is a run's config.yaml, perhaps from an older mnistcnn."""
    raw = load_raw(path, of_run)
    if "space" in raw and "model" not in raw:  # a sweep file, whose keys a config's check would only call unknown
        base = raw.get("base")
        train_base = (f", or train its base config: {command_line('train', os.path.normpath(Path(path).parent / base))}"
                      if isinstance(base, str) else "")
        raise ConfigError(f"{path}: is a sweep file, not a training config; run it with "
                          f"{command_line('sweep', path)}{train_base}")
    return from_raw(raw, str(path), overrides, flags, of_run)


def from_raw(raw: dict, source: str, overrides=(), flags: dict | None = None, of_run: bool = False) -> dict:
    """``load_config`` for a config already read (``source`` names where from, for errors)."""
    raw = copy.deepcopy(raw)
    if of_run:
        raw = upgrade_run_config(raw)
    origins = {}
    for assignment in overrides:
        origins[apply_override(raw, assignment)] = option_words("--set", assignment)
    for option, (key, value) in (flags or {}).items():
        if value is not None:
            try:
                set_path(raw, key, value, option_words(option, value))
            except ConfigError:
                setter = _source_of(key, "", origins)  # a --set that made a section holding the key a value
                if not setter:
                    raise
                raise ConfigError(f"{setter}: {key.rsplit('.', 1)[0]} must be a section with keys; {option} sets "
                                  f"{key} in it") from None
            origins[key] = option_words(option, value)
    config = validate(raw, source, origins)
    if not of_run:  # a run trained so already stays readable
        _check_acting(config, source, origins)
        _check_warm_up(config, source, origins)
    return config


def _check_warm_up(config: dict, source: str, origins: dict) -> None:
    warm_up, epochs = config["train"]["schedule"]["warmup_epochs"], config["train"]["epochs"]
    if warm_up > epochs:
        blamed = _first_setter(("train.schedule.warmup_epochs", "train.epochs"), source, origins)
        raise ConfigError(f"{blamed}: train.schedule.warmup_epochs: a warm-up of {warm_up:g} epochs does not end "
                          f"within train.epochs ({epochs}), so the rate never reaches lr; give fewer warm-up epochs "
                          "or more epochs")


def dump(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
