"""Where srcli keeps its files: one place that reads $SRCLI_HOME and $SRCLI_CACHE, so the engine's converted-model
cache and the downloader agree without the engine importing the downloader."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SRCLI_HOME"
CACHE_ENV = "SRCLI_CACHE"


def data_home() -> Path:
    """srcli's data folder: $SRCLI_HOME, else the platform's user data dir (e.g. ~/.local/share/srcli)."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("srcli", appauthor=False))


def cache_home() -> Path:
    """Where srcli keeps what it can rebuild (converted models): $SRCLI_CACHE, else $SRCLI_HOME/cache, else the
    platform's user cache dir (e.g. ~/.cache/srcli)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("srcli", appauthor=False))


def shipped_dirs() -> list[Path]:
    """Where the files shipped with srcli (weights/) are: inside the installed package first, then the checkout."""
    package = Path(__file__).resolve().parent
    return [package / "_weights", package.parent / "weights"]
