"""Public third-party checkpoints worth offering a photo user, as data: srcli/zoo_catalogue.json.

The facts (address, sha256, size, licence, author) are copied from OpenModelDB records or, for the shared
test fixtures, from the repository commit that holds the file, so a download can be verified before spandrel
ever unpickles it. Only the name, tags, purpose and audience are srcli's own words. Pure stdlib: listing the
catalogue must not import torch or spandrel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

# Tags in the order `by_purpose` lists them; the JSON may use no others.
TAGS = ("photo", "anime", "jpeg", "denoise", "deblur", "1x", "real-world", "grey")
AUDIENCES = ("users", "tests")
# What a listing groups an entry under, first match wins: a 1x restorer runs before an upscaler whatever it
# restores, and an anime model is chosen for the content before the damage.
PURPOSES = {"1x": "1x, restore first (--pre)", "anime": "anime, drawings", "photo": "photos",
            "jpeg": "JPEG artefacts", "denoise": "noise"}
_PURPOSE_ORDER = ("1x", "anime", "photo", "jpeg", "denoise")


@dataclass(frozen=True)
class CatalogueEntry:
    """One downloadable checkpoint. `url[0]` is the primary address; the rest serve the same bytes."""

    name: str
    title: str
    author: str
    license: str
    architecture: str  # OpenModelDB's architecture id (esrgan, compact, swinir, span, dat, hat, realplksr, ...)
    scale: int
    tags: tuple[str, ...]
    purpose: str
    audience: tuple[str, ...]  # "users": offered to people; "tests": a shared fixture the tests hold locally
    url: tuple[str, ...]
    sha256: str
    bytes: int
    source: str  # the OpenModelDB record, or repository@commit:path of the file itself

    @classmethod
    def from_json(cls, raw: dict) -> CatalogueEntry:
        return cls(
            name=str(raw["name"]), title=str(raw["title"]), author=str(raw["author"]), license=str(raw["license"]),
            architecture=str(raw["architecture"]), scale=int(raw["scale"]), tags=tuple(raw["tags"]),
            purpose=str(raw["purpose"]), audience=tuple(raw["audience"]), url=tuple(raw["url"]),
            sha256=str(raw["sha256"]).lower(), bytes=int(raw["bytes"]), source=str(raw["source"]),
        )


@cache
def entries() -> tuple[CatalogueEntry, ...]:
    """Every entry, in the file's order (the order a listing shows them)."""
    text = resources.files("srcli").joinpath("zoo_catalogue.json").read_text(encoding="utf-8")
    return tuple(CatalogueEntry.from_json(raw) for raw in json.loads(text)["entries"])


def entry(name: str) -> CatalogueEntry | None:
    """The entry called `name` (case-insensitive), or None."""
    wanted = name.lower()
    return next((e for e in entries() if e.name == wanted), None)


def by_purpose(audience: str | None = "users") -> dict[str, tuple[CatalogueEntry, ...]]:
    """Entries grouped by tag, in `TAGS` order, so a listing can answer "what do I use for JPEG photos?".

    An entry appears under each of its tags; empty groups are left out. `audience=None` includes the
    test-only fixtures as well.
    """
    chosen = [e for e in entries() if audience is None or audience in e.audience]
    groups = {tag: tuple(e for e in chosen if tag in e.tags) for tag in TAGS}
    return {tag: group for tag, group in groups.items() if group}


def purpose(tags: tuple[str, ...] | list[str]) -> str:
    """The one group a listing shows an entry in (a `PURPOSES` key), or 'other'."""
    return next((tag for tag in _PURPOSE_ORDER if tag in tags), "other")
