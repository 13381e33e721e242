"""The ``mnistcnn`` command: parses options, calls the library, renders with rich.

Library errors are typed (``MnistCnnError``); here they become one line on stderr and an
exit code, never a traceback.
"""
from __future__ import annotations

import contextlib
import functools
import re
import signal
import sys
import time
from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich import box
from rich.columns import Columns
from rich.console import Group
from rich.padding import Padding
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from . import __version__
from . import config as cfg
from .errors import INTERRUPTED, MnistCnnError, Terminated, command_line, raise_terminated, stopped_exit_code
from .callbacks import RunLog, threads_words
from .colour_scale import Scale, colour_scale
from .data import CACHE_DIR, ENV_DATA_DIR, SPLITS, check_data_folder
from .download import TIMEOUT_SECONDS
from .export import DEFAULT_INPUT_KIND, DEFAULT_OPSET, INPUT_KINDS, LOWEST_OPSET
from .predict import DOUBT_ADVICE, MIN_CONFIDENCE, TOP
from .folders import RUNS_DIR
from .runs import CHECKPOINTS, PICTURE_SUFFIXES
from .words import counted

# names may hold [brackets] or :codes:; off a terminal (a pipe, a log) no line is wrapped at 80 columns,
# so that paths and table cells stay whole for grep
console = Console(highlight=False, markup=False, emoji=False, width=None if sys.stdout.isatty() else 200)
# Narrower than this, a table of keys becomes a list: each key on its line, its meaning below.
WIDE_TABLE = 120
PREVIEW_WIDTH = 28  # characters: an MNIST image pixel for pixel
PREVIEW_CHANNELS = 4  # feature maps inspect-layer shows in a terminal, side by side
PASSED_OVER_NAMED = 5  # files a line names when a folder's non-pictures are passed over


class GivenPath(click.Path):
    """A path argument or option, refused in one line when empty or blank (a shell variable that is
    unset): ``Path("")`` would quietly mean the current folder, to read a run from or write into."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            metavar = (param.metavar or "").strip("[]")  # an optional argument's: [DIR]
            name = param.opts[0] if isinstance(param, click.Option) else metavar or param.human_readable_name
            what = {"FILE": "a file's path", "DIR": "a folder's path"}.get(metavar, "a path")
            fail(f"{name}: is empty; give {what} (a shell variable that holds it may be unset in this shell)")
        return super().convert(value, param, ctx)


GIVEN_PATH = GivenPath(path_type=Path)


checkpoint_option = click.option("--checkpoint", "which", type=click.Choice(CHECKPOINTS),
                                 help="Which checkpoint of a run directory: best (the default) or last.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output only.")


def data_dir_option(help_suffix: str):
    """``--data-dir`` (or the MNISTCNN_DATA_DIR variable); ``help_suffix`` ends its help: what is
    read without it."""
    return click.option("--data-dir", cls=DataDirOption, type=GIVEN_PATH, envvar=ENV_DATA_DIR,
                        show_envvar=True, help=f"Folder of MNIST-layout IDX files{help_suffix}.")


class DataDirOption(click.Option):
    """--data-dir, which MNISTCNN_DATA_DIR gives too: a folder from the variable is checked as it is
    read, since only the parser knows that the variable named it, not the option."""

    def consume_value(self, ctx, opts):
        folder, source = super().consume_value(ctx, opts)
        if source is ParameterSource.ENVIRONMENT:
            try:
                check_data_folder(folder, from_variable=True)
            except MnistCnnError as err:
                fail(str(err), err.exit_code)
        return folder, source


def split_option(default: str):
    """``--split``: which of the SPLITS a command's images come from."""
    return click.option("--split", default=default, show_default=True, type=click.Choice(SPLITS),
                        help="Which images: the test split, the validation split held out of training, or the "
                             "training split.")


def fail(message: str, code: int = 2):
    """One clean line on stderr and an exit code."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(command):
    """Turn library errors (and OS errors such as a full disk) into one line and an exit code; a
    SIGTERM while the command runs stops it as Ctrl-C does (``Terminated``), with the shell's 143."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        previous = signal.signal(signal.SIGTERM, raise_terminated)
        try:
            return command(*args, **kwargs)
        except MnistCnnError as err:
            fail(str(err), err.exit_code)
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            fail(f"{where}{err.strerror or err}", 1)
        except KeyboardInterrupt:  # Ctrl-C outside training, which handles its own: the shell's code, not click's 1
            fail("interrupted", INTERRUPTED)
        except Terminated:
            fail("interrupted", stopped_exit_code(signal.SIGTERM))
        except MemoryError as err:  # outside training, which names its own fix
            fail(f"out of memory ({err}); fewer images at once (--batch-size, where the command has it) need less", 1)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


COMMAND_LINE = "mnistcnn.command_line"  # the key of the arguments in the context's meta, shared by every command
# click 8.2 and later show the group's help, when no command is given, by raising a usage error: kept as it is
HELP_FOR_NO_ARGUMENTS = ((click.exceptions.NoArgsIsHelpError,) if hasattr(click.exceptions, "NoArgsIsHelpError")
                         else ())


class UsageLine(click.UsageError):
    """A usage error shown as the tool's other errors are: one line on stderr, no usage block."""

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def usage_line(err: click.UsageError, ctx: click.Context) -> UsageLine:
    """click's usage error (a bad value, an unknown option, a missing or extra argument, an unknown
    command) as one line: the command, what is wrong and the fix. ``ctx``: the context the error
    arose in, when click did not attach one; its ``meta`` holds the command line."""
    ctx = err.ctx or ctx
    command, arguments = ctx.command_path, ctx.meta.get(COMMAND_LINE, [])
    message = _one_dash(err, ctx, arguments) or \
        (_unknown_option(err, ctx, arguments) or _a_key_not_an_option(err, ctx, arguments)
         if isinstance(err, click.NoSuchOption) else None) or \
        err.format_message().rstrip(".")
    if message[:1].isupper() and message[1:2].islower():  # click's sentences; not a metavar such as DIR
        message = message[0].lower() + message[1:]
    meant = _set_in_one_word(arguments) if "unexpected extra argument" in message else None
    if meant:
        message += f"; --set KEY=VALUE is one word, without spaces around '=' ({meant})"
    if "Did you mean" in message:  # click's guess is the fix
        return UsageLine(f"{command}: {message}", ctx)
    missing_argument = isinstance(err, click.MissingParameter) and isinstance(err.param, click.Argument)
    if isinstance(err, (click.BadParameter, click.BadOptionUsage, click.NoSuchOption)) and not missing_argument:
        fix = f"see {command}{' COMMAND' * isinstance(ctx.command, click.Group)} --help"
    elif missing_argument and ctx.info_name == "predict" and _pictures(arguments):  # the run left out
        fix = f"the run comes first, then the pictures: {command_line('predict', 'RUN', *_pictures(arguments))}"
    elif isinstance(ctx.command, click.Group):  # an unknown command
        fix = f"the commands: {', '.join(sorted(ctx.command.commands))} ({command} --help says what each does)"
    else:  # an argument missing or one too many: where each goes
        fix = f"usage: {' '.join(ctx.get_usage().split()[1:])}"
    return UsageLine(f"{command}: {message}; {fix}", ctx)


def _pictures(arguments: list[str]) -> list[str]:
    """The arguments named as pictures are (photo.jpg, scan.PNG)."""
    return [argument for argument in arguments if Path(argument).suffix.lower() in PICTURE_SUFFIXES]


def _set_in_one_word(arguments: list[str]) -> str | None:
    """The --set meant by one given as more words, which click reads as arguments too many:
    ``--set train.epochs = 3``, ``--set train.epochs 3``, ``--set train.epochs: 3`` as
    ``--set train.epochs=3``; None when every --set is one word."""
    for position, argument in enumerate(arguments[:-2]):
        key, rest = arguments[position + 1], arguments[position + 2:]
        if argument != "--set" or ("=" in key and not key.endswith("=")) or rest[0].startswith("-"):
            continue
        value = rest[1] if rest[0] == "=" and len(rest) > 1 else rest[0].lstrip("=")
        return f"--set {key.rstrip('=:')}={value}"
    return None


def _one_dash(err: click.UsageError, ctx: click.Context, arguments: list[str]) -> str | None:
    """A long name after one dash, the slip behind click's error: read as short options, its first
    letter that is none refused (-epochs as -e, -help as -h -e), or as a short option and its value
    (-output as -o utput), with an argument too many after it."""
    short = isinstance(err, click.NoSuchOption) and not err.option_name.startswith("--")
    if not short and "unexpected extra argument" not in err.format_message():
        return None
    known = {name for command in (main, *main.commands.values()) for param in command.get_params(ctx)
             for name in param.opts}
    for argument in arguments:
        name = "-" + argument.split("=", 1)[0]
        if argument[:1] == "-" and name in known and (not short or err.option_name[1] in argument):
            return f"{argument}: an option's name takes two dashes: {name}"
    return None


def _unknown_option(err: click.NoSuchOption, ctx: click.Context, arguments: list[str]) -> str | None:
    """What an unknown option is when click's guess (the closest spelling among this command's
    options: --data-dir for eval --runs-dir) misses it: an option of other commands, or of the
    command given after it."""
    owners = [name for name, command in sorted(main.commands.items())
              if any(err.option_name in param.opts for param in command.params)]
    if not owners:
        return None
    verb = "takes" if len(owners) == 1 else "take"
    if isinstance(ctx.command, click.Group):
        given = next((argument for argument in arguments if argument in owners), owners[0])
        return (f"no such option {err.option_name!r} before the command: an option goes after its command "
                f"(mnistcnn {given} ... {err.option_name}); {', '.join(owners)} {verb} it")
    return f"no such option {err.option_name!r}: {ctx.info_name} does not take it; {', '.join(owners)} {verb} it"


def _a_key_not_an_option(err: click.NoSuchOption, ctx: click.Context, arguments: list[str]) -> str | None:
    """An unknown option named as a key of the file the command reads (train --weight-decay 0.01,
    sweep --trials 4): where that setting goes; None when it is an option's other spelling
    (--batch_size), which click's guess names."""
    name = err.option_name.lstrip("-").replace("-", "_")
    if any(option.lstrip("-").replace("-", "_") == name for option in err.possibilities or ()):
        return None
    given = next((position for position, argument in enumerate(arguments)
                  if argument.split("=", 1)[0] == err.option_name), None)
    value = "VALUE"
    if given is not None and "=" in arguments[given]:
        value = arguments[given].split("=", 1)[1]
    elif given is not None and given + 1 < len(arguments) and not arguments[given + 1].startswith("-"):
        value = arguments[given + 1]
    if ctx.info_name == "sweep":
        from .sweep.space import SWEEP_KEYS

        return (f"no such option {err.option_name!r}: {name} is a key of the sweep file; write '{name}: {value}' "
                "in it") if name in SWEEP_KEYS else None
    if not any(param.name == "sets" for param in ctx.command.params):
        return None
    keys = [row[0] for row in cfg.describe_keys() if row[0].rsplit(".", 1)[-1] == name]
    if not keys:
        return None
    return f"no such option {err.option_name!r}: {name} is a config key; " + \
        " or ".join(f"--set {key}={value}" for key in keys) + " sets it"


class Command(click.Command):
    """A command whose usage errors are shown in one line; the parser's own (an option without its
    value) come without a context, so this one is given."""

    def parse_args(self, ctx, args):
        with usage_errors_in_one_line(ctx):
            return super().parse_args(ctx, args)


class CommandGroup(click.Group):
    """The mnistcnn group: its usage errors (an unknown command, an option before the command) and
    its commands' (those raised while they run too) are shown in one line."""

    command_class = Command

    def parse_args(self, ctx, args):
        ctx.meta[COMMAND_LINE] = list(args)
        with usage_errors_in_one_line(ctx):
            return super().parse_args(ctx, args)

    def invoke(self, ctx):
        with usage_errors_in_one_line(ctx):
            return super().invoke(ctx)


@contextlib.contextmanager
def usage_errors_in_one_line(ctx: click.Context):
    """click's usage errors raised within, as UsageLine (``ctx``: where they arise, for those without one)."""
    try:
        yield
    except (UsageLine, *HELP_FOR_NO_ARGUMENTS):
        raise
    except click.UsageError as err:
        raise usage_line(err, ctx) from None


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="""\b
First steps:
  mnistcnn train configs/quick.yaml            # a small net, about 10 seconds
  mnistcnn eval runs/quick-YYYYmmdd-HHMMSS     # the run folder that train printed
  mnistcnn predict runs/quick-YYYYmmdd-HHMMSS my-digit.png
  mnistcnn COMMAND --help                      # each command's options and examples""")
@click.version_option(__version__, prog_name="mnistcnn")
def main():
    """Train, evaluate and look inside convolutional networks on MNIST, in NumPy alone."""


def option_given(name: str) -> bool:
    """Whether the user gave the current command's option ``name``, rather than its default."""
    return click.get_current_context().get_parameter_source(name).name != "DEFAULT"


# -- rendering helpers --------------------------------------------------------------------
def fmt_int(n) -> str:
    return f"{n:,}"


class Probability(click.FloatRange):
    """A float from 0 to 1; a percentage given instead is refused with its fraction."""

    def __init__(self):
        super().__init__(0, 1)

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if 1 < number <= 100:
            self.fail(f"{number:g} is over 1: a probability from 0 to 1, e.g. {number / 100:g} for {number:g}%",
                      param, ctx)
        return super().convert(number, param, ctx)


def titled_table(title: str | None, **options) -> Table:
    """A table at least as wide as its title: a title longer than the rows (a checkpoint's path over
    one short picture name) is not folded onto more lines, which would cut a path in two."""
    return Table(title=title, min_width=cell_len(title) if title else None, **options)


def model_table(model, title="model") -> Table:
    table = titled_table(title, show_footer=True)
    table.add_column("#", footer="")
    table.add_column("layer", footer="total")
    table.add_column("type")
    table.add_column("output shape", footer=str(model.output_shape))
    table.add_column("parameters", justify="right", footer=fmt_int(model.num_params()))
    table.add_column("multiply-adds", justify="right", footer=fmt_int(model.macs()))
    table.add_row("", "input", "", str(model.input_shape), "", "")
    for i, layer in enumerate(model.layers):
        table.add_row(str(i), layer.name, layer.type_name, str(layer.output_shape), fmt_int(layer.num_params()),
                      fmt_int(layer.macs()))
    return table


def plan_table(plan) -> Table:
    """The steps the trainer runs (``engine/fast/plan.py``), then what evaluation does otherwise."""
    table = titled_table("plan: how the layers are computed")
    for column in ("when", "layers", "computed as"):
        table.add_column(column)
    for row in plan.describe():
        table.add_row(*row)
    return table


class TrainReporter(RunLog):
    """Trainer callbacks that show train.log's lines (``callbacks.RunLog``) and a progress bar, or
    plain lines off a terminal."""

    def __init__(self, quiet: bool):
        super().__init__()
        self.quiet = quiet
        self.interactive = console.is_terminal and not quiet
        self.progress = None
        self.task = None

    def show(self, message: str) -> None:
        if not self.quiet:
            console.print(message, soft_wrap=True)

    def close(self):
        if self.progress:
            self.progress.stop()
        super().close()

    def on_epoch_start(self, epoch, batches, done):
        self.last_plain = done
        if self.interactive:
            self.progress = Progress(
                TextColumn(f"epoch {epoch + 1}/{self.epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.2%} "
                           "{task.fields[images_per_s]:,.0f} img/s"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("train", total=batches, completed=done, loss=0.0, acc=0.0,
                                               images_per_s=0.0)

    def on_batch(self, epoch, batch, batches, loss, acc, images_per_s):
        if self.interactive:
            self.progress.update(self.task, completed=batch, loss=loss, acc=acc, images_per_s=images_per_s)
        elif not self.quiet and (batch - self.last_plain >= max(batches // 5, 1)) and batch < batches:
            self.last_plain = batch
            console.print(f"epoch {epoch + 1}/{self.epochs} batch {batch}/{batches} loss {loss:.4f} "
                          f"acc {acc:.2%} {images_per_s:,.0f} img/s", soft_wrap=True)

    def on_epoch_end(self, row):
        if self.progress:
            self.progress.stop()
            self.progress = None
        super().on_epoch_end(row)


def results_table(summary: dict, run_path) -> Table:
    """A finished run's figures, its folder and the picture of its curves, which a person would
    rather look at than read the epochs' lines."""
    from .runs import RunDir, summary_rows

    table = titled_table("results", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for row in [*summary_rows(summary), ("run directory", str(run_path)),
                ("loss and accuracy per epoch", str(RunDir(run_path).curves_file))]:
        table.add_row(*row)
    return table


# -- train ------------------------------------------------------------------------------
@main.command(short_help="Train a model from a YAML config; write a run folder.", epilog="""\b
Examples:
  mnistcnn train configs/quick.yaml
  mnistcnn train configs/lenet.yaml --seed 1 --set train.optimizer.lr=0.002
  mnistcnn train --resume runs/lenet-20260101-000000           # continue after Ctrl-C
  mnistcnn train --resume runs/lenet-20260101-000000 --epochs 15   # train a finished run longer""")
@click.argument("config_path", metavar="[CONFIG]", required=False, type=GIVEN_PATH)
@click.option("--epochs", type=int, help="Override train.epochs.")
@click.option("--batch-size", type=int, help="Override train.batch_size.")
@click.option("--lr", type=float, help="Override train.optimizer.lr.")
@click.option("--seed", type=int, help="Override train.seed.")
@data_dir_option(" (default: the bundled MNIST)")
@click.option("--runs-dir", type=GIVEN_PATH, default=RUNS_DIR, show_default=True,
              help="Parent folder of run directories.")
@click.option("--name", help="Run name (default: the config's name).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any key, e.g. train.optimizer.lr=0.01 (repeatable; one word: no spaces around =; "
                   "`mnistcnn config-keys` lists the keys).")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("--dry-run", is_flag=True,
              help="Validate, build the model, print it and the plan that runs it, and exit.")
@click.option("--resume", type=GIVEN_PATH, metavar="RUN_DIR",
              help="Continue the run in RUN_DIR from checkpoints/last.npz.")
@click.option("--quiet", is_flag=True, help="Print only the final result.")
@handle_errors
def train(config_path, epochs, batch_size, lr, seed, data_dir, runs_dir, name, sets, print_config, dry_run, resume,
          quiet):
    """Train the model described by CONFIG (a YAML file; configs/ holds ready-made ones) on MNIST,
    or continue a run with --resume. `mnistcnn config-keys` lists every key a config can set."""
    from .folders import check_runs_folder
    from .data import check_data, prepare_data
    from .trainer import last_checkpoint, train_run, training_threads

    flags = {"--epochs": ("train.epochs", epochs), "--batch-size": ("train.batch_size", batch_size),
             "--lr": ("train.optimizer.lr", lr), "--seed": ("train.seed", seed),
             **cfg.data_dir_flag(data_dir), "--name": ("name", name)}
    runs_dir_given = option_given("runs_dir")
    config, source, run = _train_config(config_path, resume, sets, flags, runs_dir_given)
    if print_config:
        click.echo(cfg.dump(config), nl=False)
        return
    if run is None:  # before anything is printed
        check_runs_folder(runs_dir, given=runs_dir_given)
    else:  # a resumed run stays in its own folder
        run.check_writable()
    plan = cfg.check_model(config, source)
    if dry_run:
        sizes = check_data(config, source)
    else:
        data = prepare_data(config, source=source)  # fails before anything is printed or written
    if not quiet:
        console.print(model_table(plan.model, f"model: {config['name']}"))
    if dry_run:
        console.print(plan_table(plan))
        console.print(f"workers: {threads_words(*training_threads(config, plan.model))} (train.workers, "
                      "train.parallel and train.blas_threads; null: as the model's size pays for)",
                      soft_wrap=True)
        epochs, steps = config["train"]["epochs"], sizes["steps_per_epoch"]
        resumes = ""
        if run is not None:  # the place a resume goes on from, as training says it
            position = last_checkpoint(run, config, source)[2]
            resumes = f"resumes {run.path} at epoch {position.epoch + 1}, batch {position.batch}/{steps} of "
        console.print(f"dry run: {resumes}{counted(epochs, 'epoch')} of {counted(steps, 'step')} "
                      f"(batches of {config['train']['batch_size']} from {sizes['training']:,} training images; "
                      f"{sizes['validation']:,} validate); nothing was written. Without --dry-run it trains.",
                      soft_wrap=True)
        return
    reporter = TrainReporter(quiet)
    try:
        outcome = train_run(config, data, reporter, runs_dir=runs_dir, resume=run, config_path=config_path,
                            overrides=cfg.given_options(sets, flags), stop_on_signals=True)
    finally:
        reporter.close()
    if outcome.summary is None:
        _report_stop(outcome)
    if outcome.signal is not None:  # it came in the last batch or after the summary: nothing was cut short
        click.echo("the signal came as the run was finishing: it finished, and its files are whole", err=True)
    if quiet:
        summary = outcome.summary
        click.echo(f"test accuracy {summary['test_acc']:.2%} (best val {summary['best_val_acc']:.2%}, "
                   f"epoch {summary['best_epoch']}); run directory {outcome.run.path}")
    else:
        console.print(results_table(outcome.summary, outcome.run.path))
        console.print(next_steps(outcome.run.path), soft_wrap=True)


def next_steps(run_path) -> str:
    return (f"next: {command_line('eval', run_path)}\n"
            f"      {command_line('inspect-layer', run_path, '--list')}\n"
            f"      {command_line('predict', run_path, 'YOUR-DIGIT.png')}")


def _train_config(config_path, resume, sets, flags, runs_dir_given: bool):
    """``(config, where it came from, the RunDir to resume or None)`` from the train options."""
    from .trainer import config_to_resume

    if resume:
        config, source, run = config_to_resume(resume, flags, config_path, sets, runs_dir_given)
        return config, str(source), run
    if config_path is None:
        fail("give a CONFIG file (e.g. configs/lenet.yaml), or --resume RUN_DIR")
    config = cfg.load_config(config_path, sets, flags)
    return config, str(config_path), None


def _report_stop(outcome) -> None:
    """A run stopped by a signal: where its checkpoint is, how to resume, and the shell's exit code."""
    if outcome.checkpoint is not None:
        click.echo(f"interrupted: checkpoint written to {outcome.checkpoint}", err=True)
    else:
        click.echo(f"aborted; the last checkpoint in {outcome.run.checkpoints} is intact", err=True)
    click.echo(f"resume with: {command_line('train', '--resume', outcome.run.path)}", err=True)
    sys.exit(stopped_exit_code(outcome.signal))


# -- config-keys ---------------------------------------------------------------------------
@main.command("config-keys", short_help="List every key a config can set: type, default, meaning.", epilog="""\b
Examples:
  mnistcnn config-keys
  mnistcnn config-keys train.optimizer
  mnistcnn config-keys 'model.layers[0]'                # the layer types and their arguments
  mnistcnn train configs/quick.yaml --print-config     # a config with every key's default filled in""")
@click.argument("prefix", required=False, default="")
@json_option
@handle_errors
def config_keys(prefix, as_json):
    """List every key a config can set (those starting with PREFIX, or else those that hold it:
    `config-keys lr`), what it takes, its default and what it means, then every layer type with
    its arguments. A layer's argument is set as model.layers[INDEX].ARGUMENT."""
    rows, title = cfg.find_keys(prefix)
    if as_json:
        _json_out([dict(zip(("key", "takes", "default", "meaning"), row)) for row in rows])
        return
    if console.width < WIDE_TABLE:  # four columns would leave the meaning a few letters wide
        console.print(f"{title}:")
        for key, takes, default, meaning in rows:
            console.print(f"{key}  {takes}" + (f"  (default {default})" if default else ""),
                          style="bold")
            console.print(Padding(meaning, (0, 0, 1, 4)))
        return
    table = titled_table(title, box=box.SIMPLE_HEAD)
    table.add_column("key", no_wrap=True)
    for column in ("takes", "default"):
        table.add_column(column, overflow="fold")
    table.add_column("meaning")
    for row in rows:
        table.add_row(*row)
    console.print(table)


# -- eval -------------------------------------------------------------------------------
def _json_out(data) -> None:
    import json
    click.echo(json.dumps(data, indent=2))


@main.command("eval", short_help="Score a trained model: accuracy, per class, confusion matrix.", epilog="""\b
Examples:
  mnistcnn eval runs/lenet-20260101-000000
  mnistcnn eval runs/lenet-20260101-000000 --split validation --checkpoint last
  mnistcnn eval /shared/runs/lenet-20260101-000000 --out my-eval     # a run folder you cannot write in
  mnistcnn eval runs/lenet-20260101-000000/checkpoints/best.npz --json""")
@click.argument("target", metavar="RUN|CHECKPOINT", type=GIVEN_PATH)
@split_option("test")
@checkpoint_option
@data_dir_option(" (default: the run's own data)")
@click.option("--batch-size", type=click.IntRange(1, cfg.MAX_BATCH_SIZE),
              help="Images per evaluation batch (memory, not results; default: the run's train.eval_batch_size).")
@click.option("--out", "out_dir", type=GIVEN_PATH, metavar="DIR",
              help="The folder the report and pictures go into, made if missing (default: the run's folder; for a "
                   "checkpoint outside a run, its folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON and write no files.")
@click.option("--quiet", is_flag=True, help="Print only the accuracy line.")
@handle_errors
def eval_command(target, split, which, data_dir, batch_size, out_dir, as_json, quiet):
    """Score a trained model on a split: loss, accuracy, precision, recall and F1 per class, a
    confusion matrix and the most confidently misclassified images. The report (JSON) and the
    pictures are written into the run's folder, or --out; the scores are printed first, so a
    folder that cannot be written loses none of them."""
    from .evaluation import eval_target, write_report

    if as_json and out_dir is not None:
        fail("--json prints the report and writes no files; give --json or --out DIR, not both")
    result, images = eval_target(target, split, which, data_dir, batch_size, out_dir)
    if as_json:
        _json_out(result)
        return
    trained = (f"after {result['steps']:,} training steps" if result["steps"] else
               "saved before any training step: the initial weights")
    line = (f"{split}: accuracy {result['accuracy']:.2%}, loss {result['loss']:.4f}, {result['images']:,} images, "
            f"{result['images_per_s']:,.0f} img/s ({result['checkpoint']}, {trained})")
    if quiet:
        click.echo(line)
    else:
        console.print(line, soft_wrap=True)
        console.print(per_class_table(result))
        console.print(confusion_table(result))
    report_path = write_report(result, images, out_dir)
    if not quiet:
        console.print(f"wrote {report_path} and pictures {', '.join(result['pictures'])}", soft_wrap=True)


def per_class_table(result: dict) -> Table:
    table = titled_table(f"per class ({result['split']})")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="right")
    for name, row in zip(result["classes"], result["per_class"]):
        table.add_row(name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                      fmt_int(row["support"]))
    return table


def confusion_table(result: dict) -> Table:
    """Counts with the diagonal (correct) in bold and zeros dimmed."""
    table = titled_table("confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for name in result["classes"]:
        table.add_column(name, justify="right")
    for true, (name, row) in enumerate(zip(result["classes"], result["confusion"])):
        styles = ["bold" if true == predicted else "" if count else "dim" for predicted, count in enumerate(row)]
        table.add_row(name, *[Text(str(count), style=style) for count, style in zip(row, styles)])
    return table


# -- predict and runs -------------------------------------------------------------------------
@main.command(short_help="Classify your own digit pictures: files, folders, globs.", epilog="""
Exit codes: 0 every picture predicted (doubts flagged, not failing); 1 some file could not be
read (the rest are still predicted); 2 usage; 3 some prediction in doubt, with --fail-on-doubt.

\b
Examples:
  mnistcnn predict runs/quick-20260101-000000 photo.jpg
  mnistcnn predict runs/lenet-20260101-000000 my-digits/ 'scans/*.png' --save-inputs seen/
  mnistcnn predict best.npz digit.png --json --fail-on-doubt
  mnistcnn predict runs/lenet-20260101-000000/model.onnx digit.png   # an exported model""")
@click.argument("target", metavar="RUN|CHECKPOINT|MODEL.onnx", type=GIVEN_PATH)
@click.argument("images", metavar="IMAGE|FOLDER|GLOB...", nargs=-1, required=True)
@checkpoint_option
@click.option("--top", type=click.IntRange(1, 10), default=TOP, show_default=True, help="How many classes to show.")
@click.option("--min-confidence", type=Probability(), default=MIN_CONFIDENCE, show_default=True,
              help="Flag a prediction whose probability is below this as 'low confidence'.")
@click.option("--fail-on-doubt", is_flag=True,
              help="Exit 3 when any picture is blank, not a single digit or below --min-confidence.")
@click.option("--save-inputs", type=GIVEN_PATH, metavar="DIR",
              help="Write the 28x28 image the model saw for each picture to DIR, named after the picture.")
@json_option
@handle_errors
def predict(target, images, which, top, min_confidence, fail_on_doubt, save_inputs, as_json):
    """Classify your own digit pictures: files, folders of pictures or globs (PNG, JPEG...; photos
    of ink on paper, either polarity) and say which answers not to trust (blank, no single digit,
    low confidence)."""
    from .predict import predict_target, save_inputs as write_inputs

    path, results, passed_over = predict_target(target, images, which, top, min_confidence, save_inputs)
    not_saved = None
    if save_inputs:
        try:
            write_inputs(results, save_inputs)
        except MnistCnnError as err:  # a full disk, say: the predictions are made, and shown before it is said
            not_saved = err
    unreadable = any("error" in result for result in results)
    doubtful = any(result.get("doubt") for result in results)
    if as_json:
        _json_out({"checkpoint": str(path), "predictions": [{key: value for key, value in result.items()
                                                             if key != "image"} for result in results],
                   "passed_over": list(map(str, passed_over))})
    else:
        _predictions_table(results, path, top, save_inputs)
        if passed_over:
            names = ", ".join(p.name for p in passed_over[:PASSED_OVER_NAMED]) + ", ..." * (
                len(passed_over) > PASSED_OVER_NAMED)
            whose = "whose name is not a picture's" if len(passed_over) == 1 else "whose names are not pictures'"
            console.print(f"passed over {counted(len(passed_over), 'file')} {whose} ({names}); predict reads "
                          f"{', '.join(sorted(PICTURE_SUFFIXES))}: save a picture of another format (HEIC, SVG) as "
                          "JPEG or PNG", style="dim", highlight=False, soft_wrap=True)
    if not_saved is not None:
        fail(str(not_saved), not_saved.exit_code)
    if unreadable:
        sys.exit(1)
    if doubtful and fail_on_doubt:
        sys.exit(3)


def _answer(result: dict) -> str:
    """A picture's prediction as shown: a prediction in doubt is a guess, marked so (7?), not to be
    read as the answer; none at all (a blank picture) a dash."""
    return "-" if result["prediction"] is None else result["prediction"] + "?" * bool(result["doubt"])


def _predictions_table(results, path, top, saved) -> None:
    seen = [result for result in results if "image" in result]
    if console.is_terminal and seen:  # side by side, and first: the answers end the output, where the eye is
        console.print("as the model sees them:" if len(seen) > 1 else "as the model sees it:")
        console.print(Columns([Group(Text(f"{_answer(result)} {Path(result['path']).name}", no_wrap=True,
                                          overflow="ellipsis"), half_block_preview(result["image"]))
                               for result in seen], width=PREVIEW_WIDTH, padding=(0, 2)))
    table = titled_table(f"predictions ({path})")
    # the paths fold onto more lines in a narrow terminal: cut short, no row would say which picture it is
    table.add_column("image", overflow="fold")
    table.add_column("prediction", justify="center", no_wrap=True)
    for rank in range(top):
        table.add_column(f"#{rank + 1}", justify="right", no_wrap=True)
    table.add_column("doubt")
    if saved:
        table.add_column("model saw", overflow="fold")
    for result in results:
        if "error" in result:
            click.echo(f"error: {result['error']}", err=True)
            continue
        choices = [f"{choice['class']} {choice['probability']:.1%}" for choice in result["top"]]
        row = [result["path"], Text(_answer(result), style="bold"),
               *(choices + [""] * (top - len(choices))), Text(result["doubt"] or "", style="yellow")]
        table.add_row(*row, *([result.get("input_image", "not saved")] if saved else []))
    if table.row_count:
        notes = [f"{doubt}: {advice}" for doubt, advice in DOUBT_ADVICE.items()
                 if any(result.get("doubt") == doubt for result in results)]
        if any(result.get("doubt") and result.get("prediction") is not None for result in results):
            notes.insert(0, "?: a guess, for the reason in the doubt column")
        console.print(table)
        for note in notes:
            console.print(note, style="dim", highlight=False)


@main.command(short_help="List the runs in a folder: epochs, accuracy, time, status.", epilog="""\b
Examples:
  mnistcnn runs
  mnistcnn runs /data/experiments --json
  mnistcnn runs --runs-dir /data/experiments""")
@click.argument("folder", metavar="[DIR]", required=False, type=GIVEN_PATH)
@click.option("--runs-dir", type=GIVEN_PATH,
              help="The same as DIR: the folder train --runs-dir wrote to.")
@json_option
@handle_errors
def runs(folder, runs_dir, as_json):
    """A table of the run directories in DIR (default: runs), with the trials of the sweeps there;
    given a sweep folder, its trials; given a run directory, that run."""
    from .runlist import folder_name, list_runs, sweep_folders
    from .sweep.study import folder_command

    if folder is not None and runs_dir is not None and folder.resolve() != runs_dir.resolve():
        fail(f"DIR {folder} and --runs-dir {runs_dir} name two folders; give one of them")
    folder = folder or runs_dir or RUNS_DIR
    rows = list_runs(folder)
    if as_json:
        _json_out(rows)
        return
    if not rows:
        console.print(f"no run directories in {folder}")
        return
    colours = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red", "diverged": "red",
               "pruned": "magenta"}
    # Run names are whole (a folded name is hard to copy); in a terminal under 100 columns the
    # start time and config go, since a default run name carries both: NAME-YYYYMMDD-HHMMSS, and
    # what changed each run's config is listed below the table. Columns are two spaces apart, not
    # three: a trial's name (trial-000-STAMP) leaves its scores and status whole in 80 columns.
    wide = console.width >= 100
    table = titled_table(f"run directories in {folder.resolve()}", box=box.SIMPLE_HEAD, pad_edge=False,
                         collapse_padding=True)
    table.add_column("run", no_wrap=True)
    for column in (("started", "config") if wide else ()) + ("epochs", "best val", "test", "train time", "status"):
        table.add_column(column, justify="right" if column in ("epochs", "best val", "test", "train time") else "left",
                         no_wrap=True)
    if wide:
        table.add_column("changed by", overflow="fold")
    for row in rows:
        epochs = str(row["epochs"]) + (f"/{row['epochs_planned']}" if row["epochs_planned"] else "")
        config = Path(row["config"]).stem if row["config"] else "-"  # configs/lenet.yaml -> lenet
        config = f"sweep {row['sweep']}" if row["sweep"] else config
        started = row["started"].replace("T", " ")[5:16] if row["started"] else "-"  # MM-DD HH:MM
        table.add_row(row["run"], *((started, config) if wide else ()), epochs,
                      f"{row['best_val_acc']:.2%}" if row["best_val_acc"] is not None else "-",
                      f"{row['test_acc']:.2%}" if row["test_acc"] is not None else "-",
                      _duration(row["wall_seconds"]),
                      Text(row["status"], style=colours.get(row["status"], "white")),
                      *((" ".join(row["overrides"]) or "-",) if wide else ()))
    console.print(table)
    for sweep_dir in sweep_folders(rows):
        kept = sweep_dir.kept_storage  # a study other machines may have run trials of too
        shared = (f"; those run here, of a study kept in {kept}: all of them with "
                  f"{folder_command('--status', sweep_dir.path, kept)}") if kept else ""
        console.print(f"sweep {folder_name(sweep_dir.path)}: its trials are in {sweep_dir.trials}/{shared}",
                      soft_wrap=True)
    changed = [row for row in rows if row["overrides"]]
    if not wide and changed:
        console.print("changed by:")
        for row in changed:
            console.print(f"  {row['run']}: {' '.join(row['overrides'])}")


def _duration(seconds) -> str:
    if not seconds:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


# -- export ----------------------------------------------------------------------------------
@main.command(short_help="Export a trained model as ONNX, checked equal to the engine.", epilog="""
Needs the export extra: pip install -e '.[export]' in the mnistcnn checkout. The file takes raw pixels (NCHW,
as the training images are: for MNIST a white digit on black), the run's preprocessing inside it, and
gives logits and probabilities; it is kept only if onnxruntime agrees with the engine on the
run's test split. What it takes is in its doc string and metadata too.

\b
Examples:
  mnistcnn export runs/lenet-20260101-000000                  # -> runs/lenet-.../model.onnx
  mnistcnn export runs/lenet-20260101-000000 -o digits.onnx --input float
  mnistcnn predict digits.onnx my-digit.png                   # the exported model, on your pictures""")
@click.argument("target", metavar="RUN|CHECKPOINT", type=GIVEN_PATH)
@click.option("-o", "--output", type=GIVEN_PATH, metavar="FILE",
              help="Where to write, its folder made if missing (default: model.onnx in the run folder; "
                   "model-last.onnx with --checkpoint last).")
@checkpoint_option
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True,
              help=f"The ONNX opset: {LOWEST_OPSET} up to the newest the installed onnx knows.")
@click.option("--input", "input_kind", type=click.Choice(list(INPUT_KINDS)), default=DEFAULT_INPUT_KIND,
              show_default=True, help=f"What the graph takes: {INPUT_KINDS['uint8']}, or {INPUT_KINDS['float']}.")
@data_dir_option(" for the check (default: the run's own data)")
@handle_errors
def export(target, output, which, opset, input_kind, data_dir):
    """Write a trained model as an ONNX file with its preprocessing inside, then check it: the
    ONNX checker, and onnxruntime against the engine on the run's test split."""
    from .export import export_run

    exported = export_run(target, which, data_dir, output, input_kind, opset)
    comparison, output, (height, width, channels) = exported.comparison, exported.output, exported.input_shape
    table = titled_table("exported as ONNX", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    rows = [
        ("checkpoint", str(exported.checkpoint)),
        ("file", f"{output} ({exported.size_bytes / 1e6:.2f} MB, opset {opset})"),
        ("input", f"{INPUT_KINDS[input_kind]} [N, {channels}, {height}, {width}]"),
        ("preprocessing", f"{exported.preprocessing}, inside the graph"),
        ("outputs", "logits, probabilities"),
        ("batchnorm", "folded into the layer before it" if exported.folded else "-"),
        ("largest logit difference", f"{comparison.largest_difference:.2e} (tolerance {comparison.tolerance:.2e})"),
        ("predictions that differ", f"{comparison.ties} (ties within the tolerance)"),
        ("test accuracy: engine", f"{comparison.engine_accuracy:.2%} ({comparison.images:,} images)"),
        ("test accuracy: onnxruntime", f"{comparison.onnx_accuracy:.2%}"),
        ("images/s: engine", f"{comparison.engine_images_per_s:,.0f}"),
        ("images/s: onnxruntime", f"{comparison.onnx_images_per_s:,.0f}"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if exported.training_run is not None:
        click.echo(f"warning: {exported.training_run} is being trained now: {output} holds its "
                   f"{exported.checkpoint.stem} checkpoint so far, not its final one; export again when training ends",
                   err=True)
    console.print(f"next: {command_line('predict', output, 'YOUR-DIGIT.png')}", soft_wrap=True)


# -- serve ------------------------------------------------------------------------------------
@main.command(short_help="Draw a digit in the browser and watch every layer respond.", epilog="""
Needs the serve extra: pip install -e '.[serve]' in the mnistcnn checkout. The page works offline (no CDN)
and listens on this machine only unless --host says otherwise.

\b
Examples:
  mnistcnn serve runs/lenet-20260101-000000 --open
  mnistcnn serve runs/lenet-20260101-000000/checkpoints/last.npz --port 8080
  mnistcnn serve runs/lenet-20260101-000000 --host 0.0.0.0     # reachable from other machines""")
@click.argument("target", metavar="RUN|CHECKPOINT", type=GIVEN_PATH)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="The port to listen on (0: a free one, which is printed).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on; anything but loopback lets other machines in (no login).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also answer requests addressed to NAME (a proxy's or another DNS name of this machine); "
                   "IP addresses, localhost and, beyond loopback, this machine's name are always answered.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
@checkpoint_option
@data_dir_option(" for the run tab (default: the run's own data)")
@handle_errors
def serve(target, port, host, allow_hosts, open_browser, which, data_dir):
    """A local web page for a trained model: draw a digit (or upload a picture) and see the
    probabilities, every layer's activations, the arithmetic behind any conv value and the
    gradients; a run tab shows the curves, the confusion matrix and the worst test images."""
    from .serve.server import (browser_url, host_names, is_loopback, listening_socket, network_address, require_web,
                               run, url_of)

    require_web()
    from .serve.app import create_app
    from .serve.inside import open_model

    names = host_names(host, allow_hosts)  # before anything is loaded or printed: a bad --allow-host is refused
    served = open_model(target, which, data_dir)
    sock = listening_socket(host, port)
    url = url_of(host, sock.getsockname()[1])  # the port the system gave, for --port 0
    address = network_address(host)
    if address:  # the machine's name may not resolve on another machine; its address does
        url += f" or {url_of(address, sock.getsockname()[1])}"
    if not is_loopback(host):
        click.echo(f"warning: --host {host} lets other machines reach this page, which has no login; "
                   "the default 127.0.0.1 keeps it to this machine", err=True)
    console.print(f"serving {served.meta['config']['name']} ({served.checkpoint}) at {url}\nCtrl-C stops",
                  soft_wrap=True)
    if open_browser:
        import webbrowser

        page = browser_url(host, sock.getsockname()[1])
        if not webbrowser.open(page):
            click.echo(f"no browser to open here; open {page} yourself", err=True)
    run(create_app(served, names), sock)


# -- sweep ------------------------------------------------------------------------------------
@main.command(short_help="Search hyperparameters with Optuna: pruning, many machines.", epilog="""
Needs the sweep extra: pip install -e '.[sweep]' in the mnistcnn checkout.

\b
Examples:
  mnistcnn sweep configs/sweeps/quick-lr.yaml                  # 8 small trials, about a minute
  mnistcnn sweep configs/sweeps/lenet-search.yaml --dry-run    # what it searches, and how
  mnistcnn sweep configs/sweeps/lenet-search.yaml --jobs 2
  mnistcnn sweep --resume runs/lenet-search-20260101-000000    # continue after Ctrl-C
  mnistcnn sweep configs/sweeps/lenet-search.yaml --storage postgresql://USER:PASSWORD@HOST/DB --study s1
  mnistcnn sweep --status --storage postgresql://USER:PASSWORD@HOST/DB --study s1
  mnistcnn sweep --status runs/lenet-search-20260101-000000""")
@click.argument("sweep_path", metavar="[SWEEP.yaml]", required=False, type=GIVEN_PATH)
@click.option("--jobs", type=int, help="Trials at once on this machine, each in its own process with an equal "
                                       "share of the cores (default: one per core; with --resume, as many as "
                                       "the sweep ran here before).")
@click.option("--resume", type=GIVEN_PATH, metavar="SWEEP_DIR",
              help="Continue the sweep in SWEEP_DIR: interrupted trials resume from their checkpoints.")
@click.option("--storage", metavar="URL", help="A shared study: a PostgreSQL, MySQL or SQLite URL, a SQLite file "
                                               "(.db, .sqlite, .sqlite3), or else a journal file on a shared "
                                               "filesystem (default: a SQLite file in the sweep folder).")
@click.option("--study", metavar="NAME", help="The study's name in --storage (default: the sweep's name).")
@click.option("--status", is_flag=True, help="Print the study's trials (from --storage and --study, or a sweep "
                                             "folder given as the argument) and exit.")
@click.option("--runs-dir", type=GIVEN_PATH, default=RUNS_DIR, show_default=True,
              help="Parent folder of the sweep folder.")
@click.option("--dry-run", is_flag=True, help="Check the sweep file, print what it searches and how, and exit.")
@handle_errors
def sweep(sweep_path, jobs, resume, storage, study, status, runs_dir, dry_run):
    """Search the config keys that SWEEP.yaml lists with Optuna: each trial is an ordinary run
    (under the sweep's folder), the pruner stops poor trials early, and every machine that runs
    the same command with the same --storage and --study joins the same search."""
    from .sweep.launch import SweepRun, plan_jobs, study_status
    from .sweep.report import metric_words, run_place
    from .sweep.space import load_sweep
    from .sweep.study import check_storage_folder, folder_command, require_optuna, study_name

    require_optuna()
    if dry_run and (status or resume is not None):
        fail("--dry-run checks a sweep file before it starts; give SWEEP.yaml, without --status or --resume")
    if status:
        settings, rows, done = study_status(sweep_path, storage, study)
        done_words = f"{done} of {settings['trials']} trials" if settings["trials"] else counted(done, "trial")
        console.print(sweep_table(rows, settings, f"study {settings['study']}: {done_words} done"))
        return
    if resume is not None:
        if sweep_path is not None or study is not None:
            fail("--resume continues a sweep with its own sweep file and study; give only --jobs (and --storage)")
        run = SweepRun.resume(resume, storage)
        jobs, threads = plan_jobs(jobs, run.sweep.trials, run.sweep_dir.jobs_before)
    elif sweep_path is None:
        fail("give a SWEEP.yaml file (configs/sweeps/ holds examples), or --resume SWEEP_DIR, or --status")
    else:
        from .folders import check_runs_folder

        check_runs_folder(runs_dir, given=option_given("runs_dir"))
        sweep_file = load_sweep(sweep_path)
        jobs, threads = plan_jobs(jobs, sweep_file.trials)
        if dry_run:
            study_name(study)  # what the sweep would refuse, the check refuses
            study_storage = sweep_file.study_storage(storage)
            check_storage_folder(study_storage)
            _show_sweep_plan(sweep_file, jobs, threads, study_storage)
            return
        run = SweepRun.start(sweep_file, runs_dir, storage, study)
    console.print(f"sweep folder: {run.sweep_dir.path}\n{_jobs_text(jobs, threads)}, study {run.sweep.study!r}",
                  soft_wrap=True)
    started, view = time.monotonic(), SweepView(run.sweep)
    try:
        snapshot, stopped = run.run_workers(jobs, threads, view.show)
    finally:
        view.close()
    console.print(f"{sweep_headline(run.sweep, snapshot)}; {_duration(time.monotonic() - started)}",
                  soft_wrap=True)
    for message in run.worker_errors():
        click.echo(f"error: {message}", err=True)
    if snapshot.best is not None:  # the table ranks complete trials: none, no table
        console.print(sweep_table(snapshot.rows, run.sweep.settings(), "top trials", top=10))
        console.print(f"best: trial {snapshot.best['number']}, {run.sweep.metric} "
                      f"{metric_words(run.sweep.metric, snapshot.best['value'])} "
                      f"(its run: {run_place(snapshot.best)})\n"
                      f"train it: {command_line('train', run.sweep_dir.best_trial)}", soft_wrap=True)
    pictures = run.sweep_dir.pictures
    if pictures:  # the study at a glance, which the lines above do not give
        console.print(f"pictures: {', '.join(map(str, pictures))}", soft_wrap=True)
    resume = folder_command("--resume", run.sweep_dir.path, run.storage.url)
    if stopped is not None and not snapshot.finished:
        click.echo(f"interrupted; resume with: {resume}", err=True)
        sys.exit(stopped_exit_code(stopped))
    if run.worker_errors():
        if not snapshot.finished:  # a worker killed (or failing): its trial goes on from its checkpoint
            click.echo(f"the sweep is not finished; resume with: {resume}", err=True)
        sys.exit(1)


def sweep_headline(sweep, snapshot) -> str:
    """Trials done of the planned, by state, and the best so far."""
    from .sweep.report import metric_words

    counts, best = snapshot.counts, snapshot.best
    line = (f"{snapshot.done}/{sweep.trials} trials done ({counts['complete']} complete, {counts['pruned']} pruned"
            + (f", {counts['diverged']} diverged" if counts["diverged"] else "")
            + f"), {counts['running']} running, {counts['failed']} failed"
            + (f", {counts['stopped']} stopped by a signal and queued again" if counts["stopped"] else ""))
    if best is None:
        return line
    return line + f"; best {sweep.metric} {metric_words(sweep.metric, best['value'])} (trial {best['number']})"


class SweepView:
    """Trials done / running / pruned / failed and the best so far: a live panel in a terminal,
    a line per trial that ends off one."""

    def __init__(self, sweep):
        from rich.live import Live

        from .sweep.report import parameter_names

        self.sweep = sweep
        # every searched key, beside the table's columns: a line names a key as the table does, trial after trial
        self.names = parameter_names([parameter.key for parameter in sweep.parameters], _trial_columns(sweep.metric))
        self.live = Live(console=console, transient=True) if console.is_terminal else None
        self.trials_printed = set()  # the numbers of the trials whose line is printed
        if self.live:
            self.live.start()

    def show(self, snapshot) -> None:
        if self.live:
            recent = [row for row in snapshot.rows if row["status"] == "running"] + \
                [row for row in snapshot.rows if row["status"] != "running"][-8:]
            self.live.update(Group(sweep_headline(self.sweep, snapshot),
                                   sweep_table(recent, self.sweep.settings(), "")))
            return
        from .sweep.report import assignment, metric_words
        from .sweep.study import ENDED

        ended = [row for row in snapshot.rows
                 if row["status"] in ENDED and row["number"] not in self.trials_printed]
        for row in ended:
            self.trials_printed.add(row["number"])
            outcome = (f"{self.sweep.metric} {metric_words(self.sweep.metric, row['value'])}"
                       if row["value"] is not None else row["reason"])
            values = ", ".join(assignment(self.names[key], value) for key, value in row["params"].items())
            console.print(f"trial {row['number']} {row['status']} after {counted(row['epochs'], 'epoch')}, "
                          f"{_duration(row['seconds'])}" + (f": {outcome}" if outcome else "") + f" ({values})",
                          soft_wrap=True)
        if ended:
            console.print(sweep_headline(self.sweep, snapshot), soft_wrap=True)

    def close(self) -> None:
        if self.live:
            self.live.stop()


def _jobs_text(jobs: int, threads: int) -> str:
    return f"{counted(jobs, 'job')} x {counted(threads, 'thread')}"


def _show_sweep_plan(sweep, jobs: int, threads: int, storage) -> None:
    """What ``sweep --dry-run`` prints: each searched key's range, and the study's settings
    (``storage`` None: the SQLite file in the sweep folder)."""
    from .sweep.study import storage_words

    table = titled_table(f"sweep {sweep.name}: {sweep.trials} trials of {sweep.base_path}", box=box.SIMPLE_HEAD)
    for column in ("key", "type", "values"):
        table.add_column(column, overflow="fold")
    for parameter in sweep.parameters:
        values = (", ".join(map(str, parameter.values)) if parameter.kind == "choice" else
                  f"{parameter.low} to {parameter.high}" + (", log scale" if parameter.log else "")
                  + (f", step {parameter.step}" if parameter.step else ""))
        only = sweep.drawn_only_with(parameter.key)
        table.add_row(parameter.key, parameter.kind, values + (f"; {only}" if only else ""))
    console.print(table)
    pruner = "none" if sweep.pruner == "none" else f"{sweep.pruner} (warm-up {counted(sweep.warmup_epochs, 'epoch')})"
    console.print(f"objective: {sweep.direction} {sweep.metric}; sampler {sweep.sampler} (seed {sweep.seed}); "
                  f"pruner {pruner}\n{_jobs_text(jobs, threads)}; "
                  f"storage: {storage_words(storage)}",
                  soft_wrap=True)


def _trial_columns(metric: str) -> tuple[str, ...]:
    """A trials table's columns before the searched keys'."""
    return ("trial", "status", metric, "epochs", "trial time", "test")


def sweep_table(rows: list[dict], settings: dict, title: str, top: int | None = None) -> Table:
    """Trials as a table: the best first when ``top`` is given, else in trial order."""
    from .sweep.report import last_value, metric_words, parameter_names, ranked

    metric = settings["metric"]
    # every searched key names the shown ones, as the trial lines name them
    searched = sorted({key for row in rows for key in row["params"]} | set(settings.get("space") or ()))
    if top is not None:
        rows = ranked(rows, settings["direction"])[:top]
    keys = sorted({key for row in rows for key in row["params"]})
    columns = _trial_columns(metric)
    names = parameter_names(searched, columns)
    table = titled_table(title or None, box=box.SIMPLE_HEAD)
    for column in (*columns, *[names[key] for key in keys]):
        table.add_column(column, justify="left" if column == "status" else "right", no_wrap=True)
    for row in rows:
        value = last_value(row)
        number = f"{row['number']} (resumes {row['retry_of']})" if row["retry_of"] is not None else str(row["number"])
        table.add_row(number, row["status"], metric_words(metric, value) if value is not None else "-",
                      str(row["epochs"]), _duration(row["seconds"]),
                      f"{row['test_acc']:.2%}" if row["test_acc"] is not None else "-",
                      *[f"{row['params'][key]:.4g}" if isinstance(row["params"].get(key), float)
                        else str(row["params"].get(key, "-")) for key in keys])
    return table


# -- inspect-layer ---------------------------------------------------------------------------
class NegativeLayerCommand(Command):
    """A command whose last argument may be a negative index (-1, the last layer), which click
    would read as an option: it is moved behind a ``--``."""

    def parse_args(self, ctx, args):
        if "--" not in args:
            takes_value = {name for param in self.params if isinstance(param, click.Option) and not param.is_flag
                           for name in param.opts}  # an option's value may be negative too: --index -1
            negative = [i for i, arg in enumerate(args) if re.fullmatch(r"-\d+", arg)
                        and (i == 0 or args[i - 1] not in takes_value)]
            args = [arg for i, arg in enumerate(args) if i not in negative] + \
                (["--", *(args[i] for i in negative)] if negative else [])
        return super().parse_args(ctx, args)


def half_block_preview(image: np.ndarray, scale: Scale | None = None):
    """A feature map as terminal art, at most PREVIEW_WIDTH characters wide: each character
    shows two pixels (upper and lower half). ``scale`` (default: the image's own) is shared by
    the maps shown together, as in inspect-layer's pictures: grey from low to high, or, when
    signed, blue below 0, white at 0 and red above."""
    step = max(1, int(np.ceil(image.shape[1] / PREVIEW_WIDTH)))
    pixels = image[::step, ::step].astype(np.float64)
    low, high, signed = scale or colour_scale(pixels)
    if signed:
        towards_red = np.clip(pixels / high, -1, 1) if high > 0 else np.zeros_like(pixels)
        fade = np.rint(255 * (1 - np.abs(towards_red))).astype(int)
        full = np.full(pixels.shape, 255)
        rgb = np.where(towards_red[..., None] < 0, np.stack([fade, fade, full], -1), np.stack([full, fade, fade], -1))
    else:
        grey = ((np.clip(pixels, low, high) - low) / (high - low) * 255).astype(int) if high > low else pixels * 0
        rgb = np.repeat(grey.astype(int)[..., None], 3, axis=-1)
    if len(rgb) % 2:  # the last character's lower half: the background, black
        rgb = np.concatenate([rgb, np.zeros((1, *rgb.shape[1:]), int)])
    colours = np.char.add(np.char.add("rgb(", np.char.add(np.char.add(rgb[..., 0].astype(str), ","),
                                                          np.char.add(np.char.add(rgb[..., 1].astype(str), ","),
                                                                      rgb[..., 2].astype(str)))), ")")
    # each character: the upper pixel's colour as its colour, the lower one's as its background
    cells = np.char.add(np.char.add(np.char.add("[", colours[0::2]), " on "), colours[1::2])
    rows = np.concatenate([np.char.add(cells, "]\u2580[/]"), np.full((len(cells), 1), "\n")], axis=1)
    return Text.from_markup("".join(rows.ravel()))


@main.command("inspect-layer", short_help="Look inside one layer: statistics, gradients, feature maps.",
              cls=NegativeLayerCommand, epilog="""\b
Examples:
  mnistcnn inspect-layer runs/lenet-20260101-000000 --list
  mnistcnn inspect-layer runs/lenet-20260101-000000 0 --index 7
  mnistcnn inspect-layer configs/lenet.yaml 3_conv2d        # an untrained model
  mnistcnn inspect-layer runs/lenet-20260101-000000 flatten  # its one flatten layer
  mnistcnn inspect-layer runs/lenet-20260101-000000 -1       # the last layer""")
@click.argument("target", metavar="RUN|CHECKPOINT|CONFIG", type=GIVEN_PATH)
@click.argument("layer", required=False)
@click.option("--list", "list_layers", is_flag=True, help="List the layers and exit.")
@split_option("validation")
@click.option("--index", type=int, help="One image of the split.")
@click.option("--indices", help="A range of images, START:STOP (default 0:16).")
@click.option("--out", "out_dir", type=GIVEN_PATH, metavar="DIR",
              help="The folder the pictures go into (default: inspect/ in the run's folder; "
                   f"{RUNS_DIR / 'inspect'}/NAME for a config).")
@data_dir_option(" (default: the run's own data)")
@json_option
@click.option("--no-images", is_flag=True, help="Write no pictures.")
@checkpoint_option
@handle_errors
def inspect_layer_command(target, layer, list_layers, split, index, indices, out_dir, data_dir, as_json, no_images,
                          which):
    """Run images through the model and show LAYER (an index, a name, or a type that names one
    layer, such as flatten) from inside: its output's statistics, the gradients reaching it, its
    feature maps and filters. A CONFIG gives the model untrained, as initialised."""
    from .layer_report import load_target, report_layer

    loaded = load_target(target, data_dir, which)
    if list_layers or layer is None:
        _show_layers(loaded.model, as_json, target)
        return
    report, output = report_layer(target, loaded, layer, split, index, indices, out_dir, not no_images, which)
    if as_json:
        _json_out(report)
        return
    _show_layer_report(report, output)


def _show_layers(model, as_json: bool, target) -> None:
    """The layers, then the command that looks inside one (the first conv layer, where there is one)."""
    if as_json:
        _json_out([{"index": i, "name": layer.name, "type": layer.type_name, "output_shape": list(layer.output_shape)}
                   for i, layer in enumerate(model.layers)])
        return
    console.print(model_table(model, "layers"))
    example = next((layer.name for layer in model.layers if layer.type_name == "conv2d"), "0")
    console.print(f"next: {command_line('inspect-layer', target, example)}   # a layer by its # or its name",
                  soft_wrap=True)


def _show_layer_report(report: dict, output: np.ndarray) -> None:
    from .layer_report import index_words, layer_words, param_shape_words, shape_words

    first, _ = report["images"]["indices"]
    split, chosen = report["images"]["split"], report["images"]["described"]
    console.print(f"model: {report['model']}")
    console.print(layer_words(report), style="bold")
    console.print(f"input {shape_words(report['input_shape'])} -> output {shape_words(report['output_shape'])}; "
                  f"{chosen}")
    if report["params"]:
        for key, param in report["params"].items():
            console.print(f"  parameter {key}: {param_shape_words(report['type'], key, param['shape'])}, "
                          f"{fmt_int(param['count'])} values")
    else:
        console.print("  this layer has no parameters")
    gradients = " and ".join(f"d{key}" for key in report["params"])
    # no vertical rules and 3 significant digits: seven columns fit 80 characters uncut
    table = titled_table(f"statistics over {chosen}", box=box.SIMPLE_HEAD,
                         caption="the loss's gradient: dA_prev at the layer's input"
                                 + (f"; {gradients} at its parameters" if gradients else ""))
    for column in ("what", "mean", "std", "min", "max", "norm", "zeros"):
        table.add_column(column, justify="right")
    rows = [("output Z", report["forward"])] + [(key, stats) for key, stats in report["backward"].items()
                                                if stats is not None]
    for name, stats in rows:
        table.add_row(name, *(f"{stats[key]:.3g}" for key in ("mean", "std", "min", "max", "norm")),
                      f"{stats['zero_fraction']:.1%}")
    console.print(table)
    sample = report["sample"]
    where = index_words(sample["index"], report["output_shape"], split, first)
    console.print(f"output Z[{where}] = {np.round(np.asarray(sample['value']), 5).tolist()}")
    if "dead_channel_fraction" in report["forward"]:
        console.print(f"dead channels (zero for every image): {report['forward']['dead_channel_fraction']:.1%}")
    for key, stats in report["backward"].items():
        if stats is not None and "grad_to_weight_norm" in stats:
            ratio = stats["grad_to_weight_norm"]
            console.print(f"|{key}| / |{key[1:]}| = "
                          + (f"{ratio:.3g}" if ratio is not None else f"n/a ({key[1:]} is all zeros)"))
    if output.ndim == 4 and console.is_terminal:
        channels = min(PREVIEW_CHANNELS, output.shape[-1])
        scale = colour_scale(output[0, :, :, :channels])
        colours = (f"blue {scale.low:.3g}, white 0, red {scale.high:.3g}" if scale.signed
                   else f"black {scale.low:.3g} to white {scale.high:.3g}")
        console.print(f"feature maps of {split} image {first}, channels 0 to {channels - 1} ({colours}):")
        console.print(Columns([half_block_preview(output[0, :, :, channel], scale) for channel in range(channels)]))
    for path in report["pictures"]:
        console.print(f"wrote {path}", soft_wrap=True)


# -- inspect-data ---------------------------------------------------------------------------
@main.command("inspect-data", short_help="Picture training images as the config augments them.", epilog="""\b
Examples:
  mnistcnn inspect-data configs/best.yaml
  mnistcnn inspect-data configs/best.yaml --count 32 --seed 3 --out pictures/best-augmented.png
  mnistcnn inspect-data configs/best.yaml --set data.augment.rotate=20   # try a stronger augmentation
  mnistcnn inspect-data runs/best-20260101-000000          # the data as that run trained on it""")
@click.argument("config_path", metavar="CONFIG|RUN", type=GIVEN_PATH)
@click.option("--count", type=click.IntRange(1, 64), default=16, show_default=True, help="How many images.")
@click.option("--out", "out_path", type=GIVEN_PATH,
              help=f"The PNG to write (default: {RUNS_DIR}/NAME-augmented.png, NAME the config's name; for a RUN, "
                   "augmented.png in it; --set changes add to the name: augmented-rotate20.png).")
@click.option("--seed", type=click.IntRange(cfg.SCHEMA["train"]["seed"].low, cfg.SCHEMA["train"]["seed"].high),
              default=0, show_default=True, help="Seed of the random augmentation (as train.seed takes one).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the CONFIG, e.g. data.augment.rotate=20 (repeatable; one word: no spaces "
                   "around =).")
@data_dir_option(" (default: the bundled MNIST)")
@handle_errors
def inspect_data(config_path, count, out_path, seed, sets, data_dir):
    """Write a PNG grid of training images as the config (or a run's config) preprocesses and
    augments them."""
    from .augment import picture_training_images
    from .trainer import config_of_target

    config, source, run = config_of_target(config_path, sets, data_dir)
    console.print(f"wrote {picture_training_images(config, source, run, count, seed, out_path, sets)}")


# -- download ---------------------------------------------------------------------------
@main.command(short_help="Fetch MNIST from public mirrors, checked by SHA-256.", epilog="""
MNIST already ships inside the package: this is for a fresh copy, or another folder.

\b
Examples:
  mnistcnn download
  mnistcnn download --to data/mnist --force""")
@click.option("--to", "folder", type=GIVEN_PATH, help=f"Destination (default {CACHE_DIR}).")
@click.option("--mirror", "mirrors", multiple=True,
              help="Mirror base URL to try (repeatable; default: the public ones).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=TIMEOUT_SECONDS, show_default=True,
              help="Seconds per connection.")
@click.option("--force", is_flag=True, help="Download again even when a genuine file is there.")
@handle_errors
def download(folder, mirrors, timeout, force):
    """Fetch MNIST from public mirrors, verifying each file's SHA-256."""
    from .download import MIRRORS, download_mnist

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), console=console, disable=not console.is_terminal) as progress:

        def progress_bar(name):
            task = progress.add_task(name, total=None)
            return lambda done, total: progress.update(task, completed=done, total=total or None)

        try:
            paths = download_mnist(folder, tuple(mirrors) or MIRRORS, timeout, progress_bar,
                                   log=console.print, force=force)
        except BaseException:  # the error names the file: its bar, stopped part way, is taken off the screen
            for task in progress.tasks:
                if not task.finished:
                    progress.remove_task(task.id)
            raise
    for path in paths:
        console.print(f"ok {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
