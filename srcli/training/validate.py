"""Validation during training, through srcli.evaluate's own scoring loop and engine setup.

`srcli eval --weights RUN/model.pt` of an exported run therefore prints the numbers the run logged:
same pairs (srcli.datasets), same engine options, same quantisation, same protocol. The set is decoded
once; each validation folds the live model into a fresh engine copy, so the training module (its
mode, device, memory format, gradients) is never touched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from srcli.datasets import DATASETS, Dataset, dataset_spec, folder_dataset, prepare
from srcli.errors import DatasetError, TrainingError
from srcli.evaluate import SetResult, score_pairs, scoring_upscaler

PROTOCOL = "paper"  # Y channel, shave = scale: the EDSR paper's Table 3


def resolve_val_set(name_or_path: str, data_dir: str | Path | None, scales: list[int]) -> Dataset:
    """A folder (benchmark or DIV2K layout, or plain images), or a set name (Set5, B100, DIV2K-valid10, ...)
    found the way `srcli eval` finds it: --data-dir, else $SRCLI_DATA, else srcli's cache (not downloaded here)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return folder_dataset(path)
    try:
        spec = dataset_spec(name_or_path)
    except DatasetError:
        raise TrainingError(
            f"--val-set {name_or_path!r} is neither a folder nor a known set ({', '.join(DATASETS)})"
        ) from None
    if spec.name == "DIV2K-train":
        raise TrainingError("--val-set DIV2K-train is training data; validate on DIV2K-valid10 or a benchmark")
    return prepare(spec.name, data_dir, scales=tuple(scales), download=False)


class Validator:
    """Scores a model under training on one set at each trained scale (mean PSNR/SSIM per scale)."""

    def __init__(self, dataset: Dataset, scales: list[int], device: torch.device):
        for scale in scales:  # a broken LR folder fails the run at its start, not at step 1000
            dataset.check_scale(scale)
        self.name = dataset.name
        self.pairs = {scale: list(dataset.pairs(scale)) for scale in scales}
        self.device = str(device)

    def __call__(self, model: nn.Module) -> dict[int, SetResult]:
        results = {}
        for scale, pairs in self.pairs.items():
            upscaler = scoring_upscaler(model, scale, device=self.device)
            result = SetResult(self.name, scale, "training", PROTOCOL, False)
            results[scale] = score_pairs(result, pairs, len(pairs), upscaler)
        return results
