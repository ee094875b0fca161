"""Training: the papers' recipes (EDSR, MDSR, VDSR), patch data, the resumable loop, checkpoints, export."""

from __future__ import annotations

from srcli.training.learner import initialise_from
from srcli.training.loop import Trainer, TrainResult, configure
from srcli.training.recipes import RECIPES, TrainConfig, make_config

__all__ = ["RECIPES", "TrainConfig", "TrainResult", "Trainer", "configure", "initialise_from", "make_config"]
