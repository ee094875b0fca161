"""What a training run reports, one frozen dataclass per event, so a display matches on types, not strings.

Only rank 0 emits. `Progress` comes after the first step and then about every PROGRESS_SECONDS, so a live
display moves long before the first `Logged` (--log-every) line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Note:
    """Something about the data or the run worth a line (cache used, --max-minutes reached, init-from)."""

    kind: ClassVar[str] = "data"
    message: str


@dataclass(frozen=True)
class TrainWarning:
    """Something skipped that the user may want to fix (an unreadable image, one smaller than a patch)."""

    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class Started:
    """The run as it begins (or resumes at `step`), with the resolved config: what the user should check first."""

    kind: ClassVar[str] = "start"
    step: int
    steps: int
    device: str
    amp: str
    images: int
    parameters: int
    world: int
    threads: int
    epoch_steps: int
    config: dict[str, Any]


@dataclass(frozen=True)
class Progress:
    """The live panel's feed between log lines: the loss so far in this log window and the recent pace."""

    kind: ClassVar[str] = "progress"
    step: int
    steps: int
    loss: float
    steps_per_s: float
    eta_s: float


@dataclass(frozen=True)
class Logged:
    """One --log-every line; `record()` is exactly what log.jsonl stores."""

    kind: ClassVar[str] = "log"
    step: int
    loss: float
    lr: float
    steps_per_s: float
    time: float
    steps: int
    eta_s: float

    def record(self) -> dict[str, Any]:
        return _record(self, "steps", "eta_s")


@dataclass(frozen=True)
class Validated:
    """A validation pass; `record()` is the plain dict log.jsonl and checkpoints store."""

    kind: ClassVar[str] = "val"
    step: int
    set: str
    psnr: float
    ssim: float
    per_scale: dict[str, dict[str, float]]

    def record(self) -> dict[str, Any]:
        return _record(self)


@dataclass(frozen=True)
class Saved:
    """A checkpoint written (latest.pt, best.pt): full state, what --resume continues from."""

    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str


@dataclass(frozen=True)
class Finished:
    """The run's end: model.pt exported; `interrupted` when a stop request (Ctrl-C) ended it early."""

    kind: ClassVar[str] = "done"
    step: int
    interrupted: bool
    weights: str


def _record(event: Logged | Validated, *leave_out: str) -> dict[str, Any]:
    """The event's fields in declaration order, as log.jsonl has always stored them."""
    return {key: value for key, value in asdict(event).items() if key not in leave_out}


TrainEvent = Note | TrainWarning | Started | Progress | Logged | Validated | Saved | Finished
EventCallback = Callable[[TrainEvent], None]
