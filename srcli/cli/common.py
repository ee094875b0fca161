"""What every subcommand shares: consoles, the one-line error contract, small parsers, the options that several
commands take and the checks and bars they run. No subcommand module imports another; what two need lives here."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from srcli.cli.hints import usage_hint
from srcli.errors import SrcliError, printable

if TYPE_CHECKING:  # the core (and torch) loads when a command runs, never for --help
    from srcli import download
    from srcli.options import UpscaleOptions

# Human output goes to stderr so stdout stays clean for --json and pipes.
console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


@dataclass
class _State:
    debug: bool = False


STATE = _State()


def print_error(message: str) -> None:
    """One `error:` line. The message is text, never markup: it quotes file names such as
    `holiday [draft].png` or `a[/i]b.png`, which rich would otherwise eat or choke on."""
    console.print(f"[bold red]error:[/] {escape(printable(message))}", soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line and return the Exit to raise."""
    print_error(message)
    return typer.Exit(code)


def _click_exceptions() -> tuple[type[Exception], type[Exception]]:
    """Click's error base and usage-error classes; recent Typer releases vendor click as typer._click."""
    try:
        from click.exceptions import ClickException, UsageError
    except ImportError:
        from typer._click.exceptions import ClickException, UsageError
    return ClickException, UsageError


def _show_click_error(error: Exception) -> None:
    """A usage error (bad or missing option) as one line that points at --help; anything else as click shows it."""
    _, usage_error = _click_exceptions()
    if not isinstance(error, usage_error) or type(error).__name__ == "NoArgsIsHelpError":
        error.show()
        return
    context = getattr(error, "ctx", None)
    message = error.format_message()
    if message.endswith(".") and not message.endswith("..."):
        message = message[:-1]
    hint = f" (see `{context.command_path} --help`)" if context is not None else ""
    habit = usage_hint(error)
    fail(f"{message}; {habit}{hint}" if habit else f"{message}{hint}")


def _tidy_help(command: Any) -> None:
    """Help that says what to type: a flag shows no `<bool>` (it takes no value), an argument that already has a
    name (`INPUT...`) no `<list[str]>`. Applied to the built click tree, so every command gets it."""
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif param.param_type_name == "argument" and param.metavar is not None:
            param.display_type_rich = lambda ctx: None
        elif getattr(param, "multiple", False) and param.metavar is None:  # repeatable: one value per flag
            param.display_type_rich = lambda ctx, p=param: p.display_type(ctx).replace("<list[", "<").replace("]>", ">")
    help_option = command.get_help_option

    def flag_help_option(ctx: Any) -> Any:  # click makes -h/--help per context, after the tree is built
        option = help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = flag_help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


def build(app: typer.Typer) -> Any:
    """The click command tree of `app`, its help tidied."""
    from typer.main import get_command

    command = get_command(app)
    _tidy_help(command)
    return command


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`--debug` is accepted anywhere before `--` (after the subcommand too): it is moved to the front."""
    end = list(argv).index("--") if "--" in argv else len(argv)
    rest = [token for token in argv[:end] if token != "--debug"] + list(argv[end:])
    debug = len(rest) != len(argv)
    return (["--debug", *rest] if debug else rest), debug


def run(app: typer.Typer, argv: Sequence[str]) -> None:
    """Run the app on `argv` so that no user error ever shows a traceback (unless --debug)."""
    argv, debug = split_debug(argv)
    returned = None
    try:
        returned = build(app)(args=argv, standalone_mode=False)
    except SystemExit as stop:
        raise stop
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: nothing partial was left behind")
        sys.exit(130)
    except SrcliError as error:
        if debug:
            raise
        fail(str(error), error.exit_code)
        sys.exit(error.exit_code)
    except Exception as error:  # click usage errors and anything unexpected
        if isinstance(error, _click_exceptions()[0]):
            _show_click_error(error)
            sys.exit(error.exit_code)
        if isinstance(error, typer.Abort):
            sys.exit(130)
        if debug:
            raise
        fail(f"{type(error).__name__}: {error} (run with --debug for the traceback)", 1)
        sys.exit(1)
    # With standalone_mode=False, Typer returns the code of a raised typer.Exit instead of exiting.
    if isinstance(returned, int) and returned != 0:
        sys.exit(returned)


def parse_scales(text: str) -> list[int]:
    """'2,3,4' (or 'x2,x3,x4', as the papers write them) -> [2, 3, 4]."""
    try:
        scales = [int(part.lstrip("xX")) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a comma-separated list of scales (examples: 2, 2,3,4)", param_hint="'--scale'"
        ) from None
    if not scales or any(s < 1 for s in scales):
        raise typer.BadParameter(f"{text!r} holds no valid scale", param_hint="'--scale'")
    return scales


def finite(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """The parser of every float option: Python's float() takes 'inf', 'nan' and '1e400', which no option means,
    so they are refused here, as a usage error, before any work (a bound is checked here too: typer skips its own
    min/max for a parsed option)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise typer.BadParameter(f"{text!r} is not a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}" if low is not None \
                else f"at most {high:g}"
            raise typer.BadParameter(f"{text!r} is out of range: it must be {bounds}")
        return value

    return parse


class Border(str, Enum):
    """How images are extended past their edges before the network (srcli.engine.BORDERS)."""

    reflect = "reflect"
    replicate = "replicate"
    zero = "zero"


_FLAG_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def refuse_flag_values(inputs: list[str]) -> None:
    """`--ensemble true`: click reads `true` as an input; say that flags take no value instead of 'no such file'."""
    for word in inputs:
        if word.lower() in _FLAG_WORDS and not Path(word).exists():
            raise SrcliError(f"{word!r} is not an input: flags such as --ensemble, --json and --recursive take no "
                             "value (write the flag alone)")


# One flag that several commands take with the same meaning and help.
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Precision = Annotated[str, typer.Option(
    "--precision", help="auto (fp16 on CUDA; bf16 on a CPU where it measured faster, else fp32), fp32, bf16, "
    "fp16 (GPU only), int8 (CPU with OpenVINO: the shipped int8 networks, see srcli models; ~3.5x fp32).",
)]


def check_placement(options: UpscaleOptions) -> None:
    """Refuse an absent device, a precision that cannot help or a backend that cannot run, before any input is
    looked at (the engine resolves the same options again once it knows the network); say in one line where an
    asked-for precision measured slower here."""
    from srcli.engine.devices import resolve_placement

    placement = resolve_placement(options.device, options.precision, options.backend, asked_on_command_line=True)
    if placement.warning:
        console.print(f"[yellow]warning:[/] {escape(placement.warning)}", soft_wrap=True, highlight=False)


@contextmanager
def download_progress() -> Iterator[Callable[[str], download.Progress]]:
    """A rich byte progress bar (size, speed, ETA); yields `track(label)` -> a download callback.

    A line appears only once bytes move, so wrapping a `weights.resolve` that finds the file cached
    shows nothing: `with download_progress() as track: resolve(name, scale, progress=track(name))`.
    """
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    # Transient in logs and pipes: the summary that follows says the same, and an interrupted download must
    # leave only its one `interrupted:` line, not a frozen bar above it.
    with Progress(*columns, console=console, transient=not console.is_terminal) as bar:

        def track(label: str) -> download.Progress:
            tasks: list[TaskID] = []

            def update(done: int, total: int | None) -> None:
                if not tasks:
                    tasks.append(bar.add_task(label, total=total))
                bar.update(tasks[0], completed=done, total=total)

            return update

        yield track
