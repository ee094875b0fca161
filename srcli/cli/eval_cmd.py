"""`srcli eval` (being built)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the app."""

    @app.command("eval")
    def eval_command() -> None:
        """Not built yet."""
        raise typer.Exit(3)
