"""Typed errors: one class per failure a user can cause.

The core raises these and never prints or exits; the CLI turns each into one line and a non-zero exit.
"""

from __future__ import annotations


class SrcliError(Exception):
    """Base class for every failure the user can fix; the message is the one line shown."""

    exit_code = 2


class InputImageError(SrcliError):
    """An input image is missing, empty, unreadable, truncated or too large."""


class OutputError(SrcliError):
    """An output path cannot be written, or writing would overwrite an input."""


class OutputExistsError(OutputError):
    """An output that was free when the batch was planned exists when it is written (another process)."""


class CheckpointError(SrcliError):
    """A weights file is corrupt, of an unknown architecture, or fails its checksum."""


class UnknownArchitectureError(CheckpointError):
    """A weights file whose tensors match no known architecture."""


class UnknownModelError(SrcliError):
    """A model name is not in the catalogue."""


class ScaleError(SrcliError):
    """The requested scale is one the model cannot produce."""


class DownloadError(SrcliError):
    """A download failed: network, HTTP status, or checksum mismatch."""


class DatasetError(SrcliError):
    """A dataset is unknown, missing, or laid out wrongly."""


class TrainingError(SrcliError):
    """A training configuration or its data makes no sense."""


class DeviceError(SrcliError):
    """The asked-for device or precision is unavailable, or memory is short even for the smallest tile."""


class OutputTooLargeError(SrcliError):
    """An image's output (at --scale / --outscale) would not fit in memory: refused before any work."""


class NonFiniteOutputError(SrcliError):
    """A network's output holds NaN or Inf even in fp32: writing it would give a black or white image."""


class BackendError(SrcliError):
    """The asked-for inference backend is not installed, or cannot run on the chosen device."""
