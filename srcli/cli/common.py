"""What every subcommand shares: consoles, the one-line error contract, small parsers."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import typer
from rich.console import Console
from rich.markup import escape

from srcli.errors import SrcliError

# Human output goes to stderr so stdout stays clean for --json and pipes.
console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


@dataclass
class _State:
    debug: bool = False


STATE = _State()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line and return the Exit to raise (the message as written: `srcli[openvino]` is no markup)."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
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
    fail(f"{message}{hint}")


def run(app: typer.Typer) -> None:
    """Run the app so that no user error ever shows a traceback (unless --debug)."""
    debug = "--debug" in sys.argv[1:]
    returned = None
    try:
        returned = app(standalone_mode=False)
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
