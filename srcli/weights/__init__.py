"""Pretrained weights: the catalogue (`entries`), reading checkpoint files (`checkpoints`), and resolving what a
user names to a ready network (`selection`). Callers use `from srcli import weights; weights.X`; tests that
replace a value patch the module that reads it (e.g. `weights.entries.OFFICIAL`)."""

from __future__ import annotations

from srcli.weights import checkpoints, entries, selection
from srcli.weights.checkpoints import CHECKPOINT_SUFFIXES, load_checkpoint, read_state_dict
from srcli.weights.entries import (
    BUILTIN,
    BUILTINS,
    DEFAULT_SCALES,
    DIV2K_RGB,
    MANIFEST,
    MANIFEST_FORMAT,
    OFFICIAL,
    OFFICIAL_BASE,
    Score,
    Weights,
    cache_dir,
    catalogue,
    default_model,
    embed,
    embedded,
    embedded_dirs,
    find,
    read_manifest,
)
from srcli.weights.selection import (
    ResolvedModel,
    ensure_local,
    nearest_scale,
    own_scales,
    resolve,
    select,
    select_scales,
)

__all__ = [
    "BUILTIN", "BUILTINS", "CHECKPOINT_SUFFIXES", "DEFAULT_SCALES", "DIV2K_RGB", "MANIFEST", "MANIFEST_FORMAT",
    "OFFICIAL", "OFFICIAL_BASE", "ResolvedModel", "Score", "Weights", "cache_dir", "catalogue", "checkpoints",
    "default_model", "embed", "embedded", "embedded_dirs", "ensure_local", "entries", "find", "load_checkpoint",
    "nearest_scale", "own_scales", "read_manifest", "read_state_dict", "resolve", "select", "select_scales",
    "selection",
]
