"""The sweep file: which config keys to search over, how, and for how many trials.

Loaded and checked like a config, before anything is written: every error names the file,
the key (``space[train.optimizer.lr].low``) and what would be valid. A trial's config is the
base config with the trial's values set at their key paths, validated as any config.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

from .. import config as cfg
from ..errors import ConfigError, command_line
from ..folders import check_run_name
from ..words import counted
from .folder import SweepDir
from .study import STALE_HEARTBEATS, Storage, folder_command, local_storage

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
PARAMETER_TYPES = ("float", "int", "choice")
MAX_GRID = 100_000


def goodness(direction: str, value: float) -> float:
    """``value`` turned so that higher is better: as is for a study that maximises, negated for
    one that minimises."""
    return value if direction == "maximize" else -value


SWEEP_KEYS = {
    "name": "the sweep's name: its folder is runs/<name>-<timestamp>",
    "base": "the config every trial starts from, relative to the sweep file",
    "objective": "{metric: val_acc | val_loss, direction: maximize | minimize}",
    "trials": "complete plus pruned trials to run (failed ones are retried, not counted)",
    "sampler": "tpe, random or grid",
    "seed": "seeds the sampler",
    "pruner": "{type: median | hyperband | none, warmup_epochs: N, startup_trials: N}",
    "storage": "null: a SQLite file in the sweep folder; else a PostgreSQL/MySQL/SQLite URL, a SQLite file "
               "(.db, .sqlite, .sqlite3) or a journal file",
    "study": "the study's name in the storage (null: the sweep's name)",
    "heartbeat": f"seconds between a running trial's signs of life; silent for {STALE_HEARTBEATS} of them, it is "
                 "retried",
    "space": "config key path -> {type: float | int | choice, ...}",
}


@dataclass(frozen=True)
class Parameter:
    """One searched key: a float or int range (optionally log-scaled or stepped) or a choice."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    values: tuple = ()

    def suggest(self, trial):
        """The trial's value, drawn by Optuna's sampler (or fixed by an enqueued trial)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)

    def grid_values(self) -> list:
        if self.kind == "choice":
            return list(self.values)
        count = int(round((self.high - self.low) / self.step)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) if self.kind == "int" else float(v) for v in values if v <= self.high + 1e-12]

    def extremes(self) -> list:
        """The values that prove the range valid in a config: its ends, or every choice."""
        return list(self.values) if self.kind == "choice" else [self.low, self.high]


@dataclass
class Sweep:
    """A checked sweep file: the base config resolved, the parameters and the study settings."""

    name: str
    path: Path
    base_path: Path
    base: dict
    metric: str
    direction: str
    trials: int
    sampler: str
    seed: int
    pruner: str
    warmup_epochs: int
    startup_trials: int
    storage: str | None
    study: str
    heartbeat: int
    parameters: list

    def goodness(self, value: float) -> float:
        return goodness(self.direction, value)

    def settings(self) -> dict:
        """The objective and the trials planned: what a study keeps, and a table of trials needs."""
        return {"metric": self.metric, "direction": self.direction, "trials": self.trials}

    def study_storage(self, given: str | None, sweep_dir: Path | None = None) -> Storage | None:
        """The study's storage: ``given`` (--storage), else the sweep file's, else the SQLite file in
        ``sweep_dir``; None for that file while there is no sweep folder yet."""
        if given is not None:
            return Storage.named(given, "--storage")
        if self.storage:
            return Storage.named(self.storage, f"{self.path}: storage:", self.path.parent)
        return local_storage(sweep_dir) if sweep_dir is not None else None

    def grid(self) -> dict:
        return {p.key: p.grid_values() for p in self.parameters}

    def acts(self, key: str, values: dict) -> bool:
        """Whether the searched ``key`` acts in a trial that drew ``values`` so far (the base config's
        value for a switch not drawn): momentum does in a trial that drew sgd, not in one that drew adam."""
        return key not in cfg.FIELDS or cfg.unmet_condition(
            key, lambda switch: values[switch] if switch in values else cfg.value_at(self.base, switch)) is None

    def drawn_only_with(self, key: str) -> str:
        """The searched switches' values ``key`` is drawn with ("only with optimizer sgd"), "" for a key
        drawn in every trial."""
        searched = {parameter.key for parameter in self.parameters}
        return cfg.acting_words([only for only in (cfg.FIELDS[key].only if key in cfg.FIELDS else ())
                                 if searched.intersection(only.switches)])

    def suggest(self, trial) -> dict:
        """The trial's values, define-by-run as Optuna's conditional examples: a key is drawn after
        the switches it acts with, and only where it acts (momentum only in the trials that drew sgd)."""
        values = {}
        for parameter in sorted(self.parameters, key=lambda parameter: _switches_above(parameter.key)):
            if self.acts(parameter.key, values):
                values[parameter.key] = parameter.suggest(trial)
        return values

    def trial_config(self, values: dict, name: str, threads: int, source: str | None = None) -> dict:
        """The base config with ``values`` at their keys and ``threads`` workers and BLAS threads,
        validated as any config (errors start with ``source``). A key that does not act with the
        trial's values (the base's sgd momentum in a trial that drew adam) is left at its default, so
        that the trial's config.yaml and best-trial.yaml train again as they are."""
        raw = copy.deepcopy(self.base)
        for key, value in values.items():
            cfg.set_path(raw, key, value, f"{self.path}: space[{key}]")
        raw["name"] = name
        raw["train"]["workers"] = threads
        raw["train"]["blas_threads"] = threads
        return cfg.idle_keys_at_defaults(cfg.validate(raw, source or f"{self.path} ({name}: {values})"))

    def to_yaml(self) -> dict:
        """The resolved sweep file, as written into the sweep folder (``--resume`` reads it)."""
        return {"name": self.name, "base": str(self.base_path), "objective": {"metric": self.metric,
                                                                             "direction": self.direction},
                "trials": self.trials, "sampler": self.sampler, "seed": self.seed,
                "pruner": {"type": self.pruner, "warmup_epochs": self.warmup_epochs,
                           "startup_trials": self.startup_trials},
                "storage": self.storage, "study": self.study, "heartbeat": self.heartbeat,
                "space": {p.key: _parameter_yaml(p) for p in self.parameters}}


def _switches_above(key: str) -> int:
    """How deep ``key`` stands below the keys it acts with (its switches, and theirs): 0 for the
    optimizer's type, 1 for momentum, 2 for onecycle's base_momentum (schedule type, then cycle_momentum)."""
    field = cfg.FIELDS.get(key)
    switches = [switch for only in field.only for switch in only.switches] if field else []
    return max((1 + _switches_above(switch) for switch in switches), default=0)


def _check_acting(sweep: Sweep) -> None:
    """A searched key must act in some trial: with its switch's value in the base config, or with one
    of the values the space searches the switch over. The grid sampler cannot leave a key out of some
    trials: it would train each of those once for each of the key's values."""
    searched = {parameter.key: parameter for parameter in sweep.parameters}
    for parameter in sweep.parameters:
        where = f"{sweep.path}: space[{parameter.key}]"
        for only in cfg.FIELDS[parameter.key].only if parameter.key in cfg.FIELDS else ():
            # every pairing of the switches' values: a range's ends prove a bound, as a choice's values do
            possible = {switch: searched[switch].extremes() if switch in searched
                        else [cfg.value_at(sweep.base, switch)] for switch in only.switches}
            pairings = [dict(zip(possible, values)) for values in itertools.product(*possible.values())]
            idle = [pairing for pairing in pairings if not only.holds_in(pairing.__getitem__)]
            if len(idle) == len(pairings):
                raise ConfigError(f"{where}: {_idle_everywhere(only, parameter.key, possible, searched)}")
            if idle and sweep.sampler == "grid":
                idle_words = (only.words([pairing[only.switch] for pairing in idle]) if isinstance(only, cfg.Only)
                              else only.words())
                raise ConfigError(f"{where}: {only.rule(parameter.key)}, so the grid sampler would train each trial "
                                  f"with {idle_words} once for each of its values; use sampler: tpe or random")


def _idle_everywhere(only, key: str, possible: dict, searched: dict) -> str:
    """Why the searched ``key`` acts in no trial, ``only`` failing with each of its switches'
    ``possible`` values, and the fixes."""
    if isinstance(only, cfg.Unless):
        return f"{only.rule(key)} in any trial: {only.because}; remove it from the space, or {only.fix}"
    values = possible[only.switch]
    if only.switch in searched:
        return (f"{only.rule(key)} (the space searches {only.switch} over {only.listed(values)}); remove it from the "
                f"space, or add {only.met_by()} to space[{only.switch}].values")
    return (f"{only.rule(key)} (the base config has {only.words(values)}); remove it from the space, or set "
            f"{only.switch} to {only.met_by()} in the base config, or search it")


def _parameter_yaml(parameter: Parameter) -> dict:
    if parameter.kind == "choice":
        return {"type": "choice", "values": list(parameter.values)}
    out = {"type": parameter.kind, "low": parameter.low, "high": parameter.high, "log": parameter.log}
    return out if parameter.step is None else {**out, "step": parameter.step}


def _number(where: str, value, integer: bool = False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{where}: must be {'an integer' if integer else 'a number'}; got {value!r}")
    return value


def _mapping(where: str, value, keys: dict) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping with keys {', '.join(keys)}; got {value!r}")
    for key in value:
        if key not in keys:
            path = f"{where}.{key}" if ": " in where else f"{where}: {key}"  # a section's key, or the file's
            raise ConfigError(f"{path}: unknown key; {cfg.did_you_mean(key, keys)}valid keys here: "
                              f"{', '.join(keys)}")
    return value


def _optional_text(source: str, raw: dict, key: str) -> str | None:
    """The sweep file's ``key``: text, or null (missing)."""
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{source}: {key}: must be text or null ({SWEEP_KEYS[key]}); got {value!r}")
    if value is not None and not value.strip():
        raise ConfigError(f"{source}: {key}: is empty; give a value ({SWEEP_KEYS[key]}), or leave the key out")
    return value


def _sweep_name(source: str, name) -> str:
    try:
        return check_run_name(str(name), "name: lr-search")
    except ConfigError as err:
        raise ConfigError(f"{source}: name: {err}") from None


def _choose(where: str, value, choices) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: must be one of {', '.join(choices)}; got {value!r}")
    return value


def parse_parameter(source: str, key: str, spec, base: dict) -> Parameter:
    """One entry of ``space``, checked against the base config's value at ``key``."""
    where = f"{source}: space[{key}]"
    current = cfg.lookup(base, key, where)
    spec = _mapping(where, spec, {"type": "", "low": "", "high": "", "log": "", "step": "", "values": ""})
    kind = _choose(f"{where}.type", spec.get("type"), PARAMETER_TYPES)
    if kind == "choice":
        values = spec.get("values")
        extra = [k for k in spec if k not in ("type", "values")]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values: a choice needs a non-empty list of values; got {values!r}")
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: a choice takes only values")
        return Parameter(key, kind, values=tuple(values))
    if "values" in spec:
        raise ConfigError(f"{where}.values: only a choice takes values; a {kind} takes low and high")
    integer = kind == "int"
    if kind == "float" and isinstance(current, int) and not isinstance(current, bool):
        raise ConfigError(f"{where}.type: {key} takes whole numbers (it is {current} in the base config); "
                          "use type: int")
    low = _number(f"{where}.low", spec.get("low"), integer)
    high = _number(f"{where}.high", spec.get("high"), integer)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: must be true or false; got {log!r}")
    step = spec.get("step")
    if step is not None and (_number(f"{where}.step", step, integer) <= 0 or log):
        raise ConfigError(f"{where}.step: must be above 0, and not with log: true; got {step!r}")
    if low >= high:
        raise ConfigError(f"{where}: low must be below high; got low {low}, high {high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0 (a log scale never reaches 0); got low {low}")
    return Parameter(key, kind, low=low, high=high, log=log, step=step)


def _check_values(sweep: Sweep) -> None:
    """Each parameter's extremes, one at a time, must make a valid config (bounds, types)."""
    for parameter in sweep.parameters:
        for value in parameter.extremes():
            source = f"{sweep.path}: space[{parameter.key}] = {value!r}"
            sweep.trial_config({parameter.key: value}, sweep.name, 1, source)


def load_sweep(path, of_folder: bool = False) -> Sweep:
    """Read and check a sweep file (and its base config); nothing is written. ``of_folder``: it is a
    sweep folder's resolved copy, perhaps from an older mnistcnn, whose base is read as a run's config."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: sweep file not found; {cfg.ready_made('sweeps/')} holds examples")
    if SweepDir(path).sweep_file.is_file():
        kept = SweepDir(path).kept_storage
        raise ConfigError(f"{path}: is a sweep folder, not a sweep file; go on with it: "
                          f"{folder_command('--resume', path, kept)}, or see its trials: "
                          f"{folder_command('--status', path, kept)}")
    raw = cfg.load_raw(path)
    source = str(path)
    if isinstance(raw, dict) and "model" in raw and "space" not in raw:
        raise ConfigError(f"{source}: is a training config, not a sweep file; train it with "
                          f"{command_line('train', path)}, or name it as the base of a sweep file "
                          f"({cfg.ready_made('sweeps/')} holds examples)")
    _mapping(source, raw, SWEEP_KEYS)
    for key in ("base", "trials", "space"):
        if key not in raw:
            raise ConfigError(f"{source}: {key}: missing; it is {SWEEP_KEYS[key]}")
    name = raw.get("name", path.stem)
    if not isinstance(raw["base"], str):
        raise ConfigError(f"{source}: base: must be the path of a config file; got {raw['base']!r}")
    base_path = (path.parent / raw["base"]).resolve()
    if not base_path.exists():
        raise ConfigError(f"{source}: base: {base_path}: config file not found; base {raw['base']!r} is read from "
                          f"the sweep file's folder, {path.parent.resolve()}")
    try:
        base = cfg.load_config(base_path, of_run=of_folder)
    except ConfigError as err:
        raise ConfigError(f"{source}: base: {err}") from None
    objective = _mapping(f"{source}: objective", raw.get("objective", {}), {"metric": "", "direction": ""})
    metric = _choose(f"{source}: objective.metric", objective.get("metric", "val_acc"), tuple(METRICS))
    direction = _choose(f"{source}: objective.direction", objective.get("direction", METRICS[metric]),
                        ("maximize", "minimize"))
    trials = _number(f"{source}: trials", raw["trials"], integer=True)
    if not 1 <= trials <= 100_000:
        raise ConfigError(f"{source}: trials: must be 1 to 100000; got {trials}")
    pruner = _mapping(f"{source}: pruner", raw.get("pruner", {}),
                      {"type": "", "warmup_epochs": "", "startup_trials": ""})
    space = raw["space"]
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{source}: space: give at least one config key to search, e.g. "
                          "train.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    sweep = Sweep(
        name=_sweep_name(source, name),
        path=path, base_path=base_path, base=base, metric=metric, direction=direction, trials=trials,
        sampler=_choose(f"{source}: sampler", raw.get("sampler", "tpe"), SAMPLERS),
        seed=_number(f"{source}: seed", raw.get("seed", 0), integer=True),
        pruner=_choose(f"{source}: pruner.type", pruner.get("type", "median"), PRUNERS),
        warmup_epochs=_number(f"{source}: pruner.warmup_epochs", pruner.get("warmup_epochs", 1), integer=True),
        startup_trials=_number(f"{source}: pruner.startup_trials", pruner.get("startup_trials", 5), integer=True),
        storage=_optional_text(source, raw, "storage"), study=_optional_text(source, raw, "study") or name,
        heartbeat=_number(f"{source}: heartbeat", raw.get("heartbeat", 30), integer=True),
        parameters=[parse_parameter(source, str(key), spec, base) for key, spec in space.items()])
    for key in ("warmup_epochs", "startup_trials", "heartbeat"):
        if getattr(sweep, key) < (1 if key == "heartbeat" else 0):
            raise ConfigError(f"{source}: {key}: must be {'1 or more' if key == 'heartbeat' else '0 or more'}")
    if sweep.sampler == "grid":
        _check_grid(sweep)
    _check_values(sweep)
    if not of_folder:  # a sweep started before keys were checked for acting goes on as it began
        _check_acting(sweep)
    epochs = base["train"]["epochs"]
    if sweep.pruner != "none" and sweep.warmup_epochs >= epochs:
        given = "" if "warmup_epochs" in pruner else " (the default)"
        raise ConfigError(f"{source}: pruner.warmup_epochs: {sweep.warmup_epochs}{given} leaves nothing to prune in "
                          f"the base config's {counted(epochs, 'epoch')}; set pruner.warmup_epochs under {epochs}, or "
                          "pruner: {type: none}")
    return sweep


def _check_grid(sweep: Sweep) -> None:
    size = 1
    for parameter in sweep.parameters:
        if parameter.kind != "choice" and parameter.step is None:
            raise ConfigError(f"{sweep.path}: space[{parameter.key}]: the grid sampler takes choices, or ranges with "
                              "a step; add step: or use sampler: tpe")
        size *= len(parameter.grid_values())
    if size > MAX_GRID:
        raise ConfigError(f"{sweep.path}: space: the grid has {size:,} points, over {MAX_GRID:,}; use fewer values "
                          "or sampler: tpe")
    sweep.trials = min(sweep.trials, size)  # a grid has nothing more to try
