"""Foreign architectures through spandrel (the optional `srcli[zoo]` extra): ESRGAN, Real-ESRGAN, SwinIR, HAT,
SPAN, OmniSR and about 40 more, recognised from a state dict and given an srcli record so the engine, eval and
the CLI treat them like srcli's own (srcli's records are always tried first).

spandrel imports torchvision when it is imported, for two architectures that are not super-resolution
(LaMa inpainting and RestoreFormer face restoration) and that use it only inside their forward. Where
torchvision cannot be imported beside this torch (absent, or a build for another torch: PyPI's CUDA
torchvision next to the CPU torch wheel fails with "operator torchvision::nms does not exist"), srcli lets
spandrel import against a stand-in that exists only during that import and raises if those two
architectures are ever run; no installed file is changed, and `import torchvision` elsewhere still fails
as it would have.
"""

from __future__ import annotations

import enum
import importlib
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from torch import nn

from srcli.errors import CheckpointError, UnknownArchitectureError
from srcli.models.spec import Architecture, Evaluation, KeyCondition, ModelSpec, SizeRequirements

INSTALL_HINT = 'pip install "srcli[zoo]"'
_TORCHVISION_NAMES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


class ZooMissing(CheckpointError):
    """spandrel is not installed: a foreign model file cannot be read."""


def _needs_torchvision(*args: object, **kwargs: object) -> None:
    raise RuntimeError("this architecture needs torchvision, which cannot be imported beside this torch; "
                       "install torch and torchvision as a matching pair")


def _stand_in() -> dict[str, types.ModuleType]:
    """What spandrel's import reads from torchvision: InterpolationMode, rotate (LaMa), normalize (RestoreFormer)."""
    modules = {name: types.ModuleType(name) for name in _TORCHVISION_NAMES}
    functional = modules["torchvision.transforms.functional"]
    functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")  # type: ignore[attr-defined]
    functional.rotate = _needs_torchvision  # type: ignore[attr-defined]
    functional.normalize = _needs_torchvision  # type: ignore[attr-defined]
    modules["torchvision"].transforms = modules["torchvision.transforms"]  # type: ignore[attr-defined]
    modules["torchvision.transforms"].functional = functional  # type: ignore[attr-defined]
    return modules


@cache
def spandrel() -> types.ModuleType:
    """spandrel, imported once; ZooMissing (one line with the install hint) when it is not installed."""
    try:
        importlib.import_module("torchvision")
    except (ImportError, RuntimeError, OSError):
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # a half-imported broken build must not shadow the stand-in
        stand_in = _stand_in()
        sys.modules.update(stand_in)
        try:
            return _import_spandrel()
        finally:
            for name in stand_in:
                sys.modules.pop(name, None)
    return _import_spandrel()


def _import_spandrel() -> types.ModuleType:
    try:
        return importlib.import_module("spandrel")
    except ImportError:
        raise ZooMissing(f"foreign model files need spandrel: {INSTALL_HINT}") from None


def available() -> bool:
    try:
        spandrel()
    except ZooMissing:
        return False
    return True


@contextmanager
def _no_meshgrid_notice() -> Iterator[None]:
    """Some zoo architectures call torch.meshgrid without `indexing` as they build or run: torch's deprecation
    notice is not the user's. Scoped, so srcli changes no warning filter of the process it runs in."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
        yield


def _quiet(call: Callable[[nn.Module, torch.Tensor], Any] | None) -> Callable[[nn.Module, torch.Tensor], Any]:
    """Run the module (by spandrel's own call where it has one) without the meshgrid notice."""

    def run(model: nn.Module, x: torch.Tensor) -> Any:
        with _no_meshgrid_notice():
            return call(model, x) if call is not None else model(x)

    return run


def _record(descriptor: Any) -> Architecture:
    """srcli's record for a spandrel architecture, from what its descriptor says."""
    size = descriptor.size_requirements
    tiling = getattr(descriptor.tiling, "name", "SUPPORTED")
    source = f"spandrel {getattr(spandrel(), '__version__', '')}".strip()
    if tiling != "SUPPORTED":  # spandrel's own advice; srcli measures exactness itself at load
        source += f", tiling {tiling.lower()}"

    def unusable(state: Mapping[str, torch.Tensor]) -> Any:
        raise CheckpointError(f"{descriptor.architecture.name} files are read by spandrel, not by this record")

    return Architecture(
        name=str(descriptor.architecture.id),
        module=type(descriptor.model),
        presets={},
        recognise=KeyCondition.has_any(),  # never: spandrel's detector does this, after srcli's own records
        detect=unusable,
        scales=lambda config: (int(config["scale"]),),
        channels=lambda config: int(config["channels"]),
        pixel_max=1.0,
        half_precision=bool(descriptor.supports_half),
        bf16_precision=bool(descriptor.supports_bfloat16),
        size=SizeRequirements(int(size.minimum), int(size.multiple_of), bool(size.square)),
        call=_quiet(getattr(descriptor, "_call_fn", None)),  # spandrel's own way to run it (some return tuples)
        source=source,
        evaluation=Evaluation(ensemble_column=False),
    )


def load(state: dict[str, Any]) -> tuple[nn.Module, ModelSpec]:
    """A state dict of an architecture spandrel knows -> (network in eval mode on the CPU, its spec)."""
    module = spandrel()
    canonical = module.canonicalize_state_dict(state)  # unwrapped: {'params_ema': {...}} names its inner keys
    try:
        with _no_meshgrid_notice():
            descriptor = module.ModelLoader().load_from_state_dict(canonical)
    except module.UnsupportedModelError:
        sample = ", ".join(sorted(k for k in canonical if isinstance(k, str))[:4])
        raise UnknownArchitectureError(f"unknown architecture: keys like {sample} match no architecture srcli or "
                                       "spandrel knows") from None
    except (KeyError, ValueError, RuntimeError, IndexError, AssertionError) as error:
        raise CheckpointError(f"spandrel recognised the file but cannot build it ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if not isinstance(descriptor, module.ImageModelDescriptor) or descriptor.purpose not in ("SR", "Restoration"):
        raise CheckpointError(f"{descriptor.architecture.name} is a {descriptor.purpose} model, not image-to-image")
    if (descriptor.input_channels, descriptor.output_channels) not in ((3, 3), (1, 1)):
        raise CheckpointError(f"{descriptor.architecture.name} maps {descriptor.input_channels} channels to "
                              f"{descriptor.output_channels}; srcli runs RGB-to-RGB models, and grey ones on luma")
    config = {"scale": int(descriptor.scale), "channels": int(descriptor.input_channels),
              "tags": list(descriptor.tags)}
    return descriptor.model.eval(), ModelSpec(_record(descriptor), config, layout="spandrel")
