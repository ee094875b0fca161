"""The papers' training recipes as plain settings, and the run configuration they fill in.

Every field of a recipe can be overridden; a run's TrainConfig holds only plain types so it can be stored
in a checkpoint that loads with weights_only=True.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from srcli.errors import TrainingError
from srcli.models import architecture

if TYPE_CHECKING:
    from srcli.training.degradation import DegradationRecipe

RECIPES = ("edsr-baseline", "edsr", "mdsr-baseline", "mdsr", "vdsr")
DEGRADATIONS = ("bicubic", "real")  # how a training patch's LR is made


@dataclass
class TrainConfig:
    """Everything that defines a run; defaults are the EDSR paper's, recipes change what differs."""

    recipe: str = "edsr-baseline"
    preset: str = "edsr-baseline"  # srcli.models preset that builds the network
    scales: list[int] = field(default_factory=lambda: [2])
    data: list[str] = field(default_factory=list)
    out: str = "runs/train"
    steps: int = 300_000
    batch: int = 16
    patch: int = 48  # LR patch side for EDSR/MDSR; input (= HR) patch side for VDSR
    loss: str = "l1"  # l1 | mse (VDSR: half the per-sample sum of squares, averaged over the batch)
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-4
    lr_schedule: str = "step"  # step | cosine
    lr_step: int = 200_000
    lr_gamma: float = 0.5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip: float = 0.0  # VDSR's theta: gradient norm clipped to clip / lr; 0 = no clipping
    epoch_steps: int = 0  # VDSR: steps in one epoch (derived from the data, see data.epoch_steps)
    lr_step_epochs: float = 0.0  # VDSR: lr_step expressed in epochs (20), resolved once data is known
    steps_epochs: float = 0.0  # VDSR: steps expressed in epochs (80), resolved once data is known
    seed: int = 0
    val_set: str | None = None
    data_dir: str | None = None  # where named sets (--data div2k, --val-set Set5) are found
    val_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 100
    max_minutes: float = 0.0  # stop (checkpoint + export) after this much training time; 0 = no limit
    device: str = "auto"
    amp: str = "auto"  # auto (bf16 on CUDA, none on CPU) | bf16 | fp16 | none
    workers: int = -1  # batch-building threads; -1 = auto
    channels_last: bool = True
    compile: bool = False
    init_from: str | None = None
    cache_dir: str | None = None
    export_fp16: bool = False
    degradation: str = "bicubic"  # bicubic: the cached MATLAB LR | real: degraded on the fly from each HR patch
    degradation_set: list[str] = field(default_factory=list)  # "name=value[,value]" overrides of the real ranges

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def multi_scale(self) -> bool:
        return len(self.scales) > 1


# Settings that may change when a run is resumed: they do not alter what is learned.
RUNTIME_FIELDS = frozenset(
    {"steps", "max_minutes", "val_set", "val_every", "checkpoint_every", "log_every", "device", "amp", "workers",
     "compile", "cache_dir", "export_fp16", "data", "data_dir", "out", "channels_last"}
)

_EDSR_FAMILY: dict[str, Any] = {
    "steps": 300_000, "batch": 16, "patch": 48, "loss": "l1", "optimizer": "adam", "lr": 1e-4,
    "lr_step": 200_000, "lr_gamma": 0.5, "weight_decay": 0.0, "clip": 0.0,
}

VDSR_CLIP = 0.01  # the paper's theta is 0.4; see the vdsr recipe below

_RECIPE_SETTINGS: dict[str, dict[str, Any]] = {
    "edsr-baseline": {**_EDSR_FAMILY, "preset": "edsr-baseline", "scales": [2]},
    "edsr": {**_EDSR_FAMILY, "preset": "edsr", "scales": [2]},
    "mdsr-baseline": {**_EDSR_FAMILY, "preset": "mdsr-baseline", "scales": [2, 3, 4]},
    "mdsr": {**_EDSR_FAMILY, "preset": "mdsr", "scales": [2, 3, 4]},
    # VDSR paper: 41x41 patches, batch 64, SGD 0.9, wd 1e-4, lr 0.1 / 10 every 20 epochs, 80 epochs,
    # adjustable clipping (here on the gradient norm, theta / lr), x2/x3/x4 mixed. One change: theta 0.01, not
    # the paper's 0.4. The loss (half the per-sample sum of squares) has gradient norms far above theta / lr,
    # so every step is clipped and moves the weights by lr * theta / lr = theta whatever the loss is; 0.4
    # (about 4 with momentum 0.9) kills the bias-free ReLUs within tens of steps and the residual stays 0
    # for good (Set5 exactly bicubic). The trainer also starts the output conv at zero (output = bicubic).
    "vdsr": {
        "preset": "vdsr", "scales": [2, 3, 4], "batch": 64, "patch": 41, "loss": "mse", "optimizer": "sgd",
        "lr": 0.1, "lr_gamma": 0.1, "lr_step_epochs": 20.0, "steps_epochs": 80.0, "momentum": 0.9,
        "weight_decay": 1e-4, "clip": VDSR_CLIP,
    },
}

def make_config(recipe: str, **overrides: Any) -> TrainConfig:
    """A recipe's settings with the given overrides (None means 'the recipe's value'), checked for sense."""
    if recipe not in _RECIPE_SETTINGS:
        raise TrainingError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    settings = {**_RECIPE_SETTINGS[recipe], **{k: v for k, v in overrides.items() if v is not None}}
    if "steps" in overrides and overrides["steps"] is not None:
        settings["steps_epochs"] = 0.0
    if "lr_step" in overrides and overrides["lr_step"] is not None:
        settings["lr_step_epochs"] = 0.0
    config = replace(TrainConfig(), recipe=recipe, **settings)
    check_config(config)
    return config


_FLOAT32_MAX = 3.4028234663852886e38


def _check_finite(config: TrainConfig) -> None:
    """NaN passes every comparison the checks below make, an infinite lr or decay trains NaN weights, and torch's
    optimisers hold these numbers as float32 (1e39 is a Python float, not a float32)."""
    for item in fields(config):
        value = getattr(config, item.name)
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(n, float) and not abs(n) <= _FLOAT32_MAX for n in numbers):
            flag = item.name.replace("_", "-")
            raise TrainingError(f"--{flag} must be a finite number (within float32's range), not {value}")


def check_config(config: TrainConfig) -> None:
    """Refuse combinations that make no sense, with one line that says what to do instead."""
    record = architecture(config.preset)
    if not config.scales:
        raise TrainingError("give at least one --scale")
    bad = [s for s in config.scales if s not in record.training.scales]
    if bad:
        allowed = "/".join(f"x{s}" for s in record.training.scales)
        raise TrainingError(f"recipe {config.recipe} cannot train x{bad[0]}; it supports {allowed}")
    if len(set(config.scales)) != len(config.scales):
        raise TrainingError(f"--scale lists a scale twice: {config.scales}")
    if not record.multi_scale and len(config.scales) > 1:
        raise TrainingError(
            f"recipe {config.recipe} is single-scale; train one scale at a time or use mdsr-baseline for several"
        )
    positive = {"steps": config.steps, "batch": config.batch, "patch": config.patch}
    for name, value in positive.items():
        if value < 1:
            raise TrainingError(f"--{name} must be at least 1, not {value}")
    _check_finite(config)
    if not config.lr > 0:
        raise TrainingError(f"--lr must be positive, not {config.lr}")
    if config.lr_step < 1:
        raise TrainingError(f"--lr-step must be at least 1 step, not {config.lr_step}")
    if config.amp not in ("auto", "bf16", "fp16", "none"):
        raise TrainingError(f"--amp must be auto, bf16, fp16 or none, not {config.amp!r}")
    if config.lr_schedule not in ("step", "cosine"):
        raise TrainingError(f"--lr-schedule must be step or cosine, not {config.lr_schedule!r}")
    if config.optimizer not in ("adam", "sgd"):
        raise TrainingError(f"--optimizer must be adam or sgd, not {config.optimizer!r}")
    if config.loss not in ("l1", "mse"):
        raise TrainingError(f"--loss must be l1 or mse, not {config.loss!r}")
    _check_degradation(config, record.bicubic_input)


def _check_degradation(config: TrainConfig, bicubic_input: bool) -> None:
    if config.degradation not in DEGRADATIONS:
        raise TrainingError(f"--degradation must be {' or '.join(DEGRADATIONS)}, not {config.degradation!r}")
    if config.degradation == "bicubic" and config.degradation_set:
        raise TrainingError("--degradation-set changes the real degradations: add --degradation real")
    if config.degradation == "real" and bicubic_input:
        raise TrainingError(f"--degradation real makes LR patches for networks that upscale inside; {config.recipe} "
                            "is fed a bicubic-upscaled image: train edsr or mdsr recipes instead")
    degradation_recipe(config)  # a bad setting fails here, before any data is read


def degradation_recipe(config: TrainConfig) -> DegradationRecipe | None:
    """The real degradations' recipe with the run's `--degradation-set` overrides; None for bicubic."""
    if config.degradation != "real":
        return None
    from srcli.training.degradation import DegradationRecipe

    return DegradationRecipe.from_overrides(dict(_parse_setting(text) for text in config.degradation_set))


def _parse_setting(text: str) -> tuple[str, Any]:
    """'jpeg_range=40,95' -> ('jpeg_range', [40, 95]); one value stays a scalar unless the setting is a tuple."""
    from srcli.training.degradation import DegradationRecipe, PassRecipe

    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not value.strip():
        raise TrainingError(f"--degradation-set {text!r}: write NAME=VALUE, e.g. jpeg_range=40,95")
    items = [_number(item.strip()) for item in value.split(",")]
    per_pass = {item.name for item in fields(PassRecipe)}
    base = name[:-1] if name.endswith("2") and name[:-1] in per_pass else name
    default = getattr(DegradationRecipe.first if base in per_pass else DegradationRecipe, base, None)
    if len(items) == 1 and not isinstance(default, tuple):
        return name, items[0]
    return name, items


def _number(text: str) -> Any:
    """An int, a float, a bool (true/false) or the text itself (a resize mode)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
