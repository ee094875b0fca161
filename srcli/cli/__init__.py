"""The Typer application: parses, calls the core, renders. Each subcommand lives in its own module."""

from __future__ import annotations

import sys

import typer

from srcli import __version__
from srcli.cli import common, compare_cmd, eval_cmd, models_cmd, train_cmd, upscale_cmd
from srcli.limits import load_opencv

HELP = """Image super-resolution with EDSR, MDSR and VDSR: upscale photos, reproduce the papers' scores, train.

Works offline: srcli ships trained models and picks the best for the scale.

Errors are one line; human output goes to stderr, --json output to stdout.

[bold]Examples[/]

  srcli upscale photo.png --scale 4             (-> photo_x4.png)

  srcli upscale holiday/ -o holiday_x2/ --scale 2 --ensemble

  srcli eval set5 set14 --model bicubic --scale 2,3,4

  srcli train --recipe edsr-baseline --data my_photos/ --out runs/x2

  srcli compare bird_lr.png --hr bird.png -m bicubic   (a labelled grid)

  srcli models                                  (what --model can name)
"""

app = typer.Typer(
    name="srcli",
    help=HELP,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"srcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(
        False, "--debug", help="Show full tracebacks instead of one-line errors (also after the subcommand)."
    ),
    version: bool = typer.Option(False, "-V", "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """srcli: EDSR-family super-resolution for the command line."""
    common.STATE.debug = debug


for module in (upscale_cmd, compare_cmd, eval_cmd, train_cmd, models_cmd):
    module.register(app)


def main() -> None:
    """Console-script entry point: every user-caused error becomes one line and a non-zero exit."""
    argv = sys.argv[1:]
    load_opencv(argv)  # before any command imports cv2, so its decoders load with srcli's pixel limit
    common.run(app, argv)
