"""Training data: HR folders decoded once, LR made once with the MATLAB bicubic, random aligned patches.

Epochs never decode an image: the decoded HR and the LR of every scale are held in memory as numpy arrays
and cached on disk (.npz, keyed by the files' paths, sizes and mtimes) so the next run or a resume starts
at once. A batch is a pure function of (seed, rank, step), which makes resume exact, lets several threads
build batches ahead in any order, and shards the patch stream between DDP ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from srcli.datasets import prepare
from srcli.errors import InputImageError, TrainingError
from srcli.files import atomic_path, is_hidden, write_atomic
from srcli.imageio import read_image, to_8bit
from srcli.metrics import rgb_to_y
from srcli.resize import downscale, imresize, modcrop
from srcli.training.events import EventCallback, Note, TrainWarning

if TYPE_CHECKING:
    from srcli.training.degradation import DegradationRecipe

IMAGE_SUFFIXES = frozenset({".png", ".bmp", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"})
CACHE_VERSION = 2



def _is_lr_folder(relative: Path) -> bool:
    """Inside a set's LR folders (DIV2K_train_LR_bicubic/, LR_bicubic/): those are inputs, not HR."""
    return any(part.startswith("LR_") or "_LR_" in part for part in relative.parts[:-1])


def _skipped(relative: Path) -> bool:
    """LR folders, and dotfiles or dot-folders (macOS `._name` resource forks, `.thumbnails/`): not HR images."""
    return _is_lr_folder(relative) or any(is_hidden(Path(part)) for part in relative.parts)


def find_images(folders: Iterable[str | Path]) -> list[Path]:
    """Every PNG/BMP/JPEG under the folders (recursive; LR folders skipped), sorted so runs see one order."""
    images: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if not root.exists():
            raise TrainingError(f"data folder {root} does not exist")
        if root.is_file():
            candidates = [root]
        else:
            candidates = [p for p in root.rglob("*") if p.is_file() and not _skipped(p.relative_to(root))]
        found = sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise TrainingError(f"data folder {root} holds no PNG, BMP, JPEG, WebP or TIFF image")
        images.extend(found)
    return images


TRAINING_SETS = {"div2k": "DIV2K-train", "div2k-train": "DIV2K-train"}  # names --data takes for a folder


def resolve_data_folders(entries: list[str], data_dir: str | Path | None = None) -> list[str]:
    """--data entries as paths: `div2k` is DIV2K's train HR folder, found like `srcli eval` finds sets
    (`data_dir`, else $SRCLI_DATA, else srcli's cache: never downloaded here, 3.5 GB); paths pass as they are."""
    resolved = []
    for entry in entries:
        if entry.strip().lower() in TRAINING_SETS and not Path(entry).exists():
            dataset = prepare(TRAINING_SETS[entry.strip().lower()], data_dir, download=False)
            entry = str(dataset.root / dataset.spec.hr_dir)
        resolved.append(entry)
    return resolved


def read_rgb(path: Path) -> np.ndarray:
    """An image as 8-bit RGB HxWx3 (grey replicated, alpha dropped, 16-bit rounded), read by imageio's reader.

    Raises InputImageError (one line naming the file) when it cannot be read.
    """
    image = to_8bit(read_image(path))
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    return np.ascontiguousarray(image[:, :, :3])


@dataclass
class TrainingData:
    """Decoded images. `mode` 'lr': hr uint8 HxWx3, lr[s] uint8 LR. 'ilr' (VDSR): hr float32 Y in 0..1,
    lr[s] the bicubic-upscaled LR's Y in 0..1 at the size of the HR cropped to a multiple of s."""

    mode: str
    names: list[str]
    hr: list[np.ndarray]
    lr: dict[int, list[np.ndarray]]

    def __len__(self) -> int:
        return len(self.hr)


def _cache_key(files: list[Path], mode: str, scales: list[int]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": CACHE_VERSION, "mode": mode, "scales": sorted(scales)}).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _save_npz(path: Path, arrays: list[np.ndarray]) -> None:
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        np.savez(handle, *arrays)


def _load_npz(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def _load_cached(index: Path, paths: dict, mode: str, scales: list[int]) -> TrainingData | None:
    """The cached data, or None when any file of the entry is unreadable (a run killed mid-write on a file
    system without atomic rename, a full disk, a copy cut short) or its arrays do not fit together:
    a damaged entry is rebuilt instead of failing every later run the same way."""
    try:
        names = json.loads(index.read_text())["names"]
        data = TrainingData(mode, names, _load_npz(paths["hr"]), {s: _load_npz(paths[s]) for s in scales})
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zlib.error):
        return None
    return data if _fits(data) else None


def _fits(data: TrainingData) -> bool:
    """Whether every LR is the size its HR asks for, in the dtype and layout the mode stores."""
    if not data.hr or any(len(lows) != len(data.hr) for lows in data.lr.values()) or len(data.names) != len(data.hr):
        return False
    kind, ndim = (np.float32, 2) if data.mode == "ilr" else (np.uint8, 3)
    for scale, lows in data.lr.items():
        for hr, lr in zip(data.hr, lows, strict=True):
            height, width = hr.shape[:2]
            wanted = (height - height % scale, width - width % scale) if data.mode == "ilr" else (
                height // scale, width // scale, 3)
            if hr.dtype != kind or lr.dtype != kind or hr.ndim != ndim or lr.shape != wanted:
                return False
            if ndim == 3 and hr.shape[2] != 3:
                return False
    return True


def own_lr_path(hr_path: Path, scale: int) -> Path | None:
    """The LR a set ships beside its HR: DIV2K (X_HR/0001.png -> X_LR_bicubic/X2/0001x2.png) or the
    benchmark layout (HR/a.png -> LR_bicubic/X2/ax2.png); None when there is none."""
    folder = hr_path.parent
    if folder.name == "HR":
        lr_folder = folder.parent / "LR_bicubic"
    elif folder.name.endswith("_HR"):
        lr_folder = folder.parent / (folder.name[: -len("HR")] + "LR_bicubic")
    else:
        return None
    candidate = lr_folder / f"X{scale}" / f"{hr_path.stem}x{scale}{hr_path.suffix}"
    return candidate if candidate.is_file() else None


def _lr_for(hr: np.ndarray, path: Path, scale: int) -> np.ndarray:
    """The set's own LR where present and of the right size, else the MATLAB bicubic of the HR."""
    own = own_lr_path(path, scale)
    if own is not None:
        try:
            lr = read_rgb(own)
        except InputImageError:
            return downscale(hr, scale)
        if lr.shape[:2] == (hr.shape[0] // scale, hr.shape[1] // scale):
            return lr
    return downscale(hr, scale)


def _prepare_one(path: Path, mode: str, scales: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray]] | str:
    """(HR, LR per scale), or why the image was skipped (one line naming it)."""
    try:
        hr = read_rgb(path)
    except InputImageError as error:
        return str(error)
    lows = {}
    for scale in scales:
        lr = _lr_for(hr, path, scale)
        if mode == "ilr":
            cropped = modcrop(hr, scale)
            upscaled = imresize(lr.astype(np.float64), size=cropped.shape[:2])
            lows[scale] = (rgb_to_y(upscaled) / 255.0).astype(np.float32)
        else:
            lows[scale] = lr
    if mode == "ilr":
        hr = (rgb_to_y(hr) / 255.0).astype(np.float32)
    return hr, lows


def load_training_data(
    folders: list[str],
    scales: list[int],
    mode: str,
    cache_dir: Path | None,
    threads: int = 0,
    on_event: EventCallback | None = None,
) -> TrainingData:
    """Decode the folders' images and make their LR once (or read both from the cache)."""
    files = find_images(folders)
    emit = on_event or (lambda _event: None)
    key = _cache_key(files, mode, scales)
    cache_paths = None
    if cache_dir is not None:
        cache_paths = {"hr": cache_dir / f"{key}-hr.npz", **{s: cache_dir / f"{key}-x{s}.npz" for s in scales}}
        index = cache_dir / f"{key}.json"
        if index.exists() and all(p.exists() for p in cache_paths.values()):
            cached = _load_cached(index, cache_paths, mode, scales)
            if cached is not None:
                emit(Note(f"loaded {len(cached)} decoded images from the cache {cache_dir}"))
                return cached
            emit(TrainWarning(f"the cache entry {index.with_suffix('')}-* is damaged (cut short or of the wrong "
                              "shape): rebuilding it"))
    emit(Note(f"decoding {len(files)} images and making x{'/x'.join(map(str, scales))} LR"))
    workers = threads if threads > 0 else max(1, min(16, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        prepared = list(pool.map(lambda p: _prepare_one(p, mode, scales), files))
    names, hrs, lows = [], [], {s: [] for s in scales}
    for path, item in zip(files, prepared, strict=True):
        if isinstance(item, str):
            emit(TrainWarning(f"skipped {item}"))
            continue
        names.append(str(path))
        hrs.append(item[0])
        for scale in scales:
            lows[scale].append(item[1][scale])
    if not hrs:
        raise TrainingError("no readable image in the data folders")
    if cache_dir is not None and cache_paths is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _save_npz(cache_paths["hr"], hrs)
        for scale in scales:
            _save_npz(cache_paths[scale], lows[scale])
        write_atomic(cache_dir / f"{key}.json", json.dumps({"names": names, "mode": mode, "scales": scales}).encode())
    return TrainingData(mode, names, hrs, lows)


def drop_small(data: TrainingData, patch: int, on_event: EventCallback | None = None) -> TrainingData:
    """Keep the images that hold a whole patch at every scale; warn about the rest, fail if none is left."""
    emit = on_event or (lambda _event: None)
    keep = []
    for index in range(len(data)):
        sizes = [data.lr[s][index].shape[:2] for s in data.lr]
        if all(min(size) >= patch for size in sizes):
            keep.append(index)
        else:
            smallest = min((size for size in sizes), key=min)
            side = "input" if data.mode == "ilr" else "LR"
            emit(TrainWarning(f"skipped {data.names[index]}: its {side} {smallest[1]}x{smallest[0]} is smaller "
                              f"than the {patch}x{patch} patch"))
    if not keep:
        raise TrainingError(f"every training image is smaller than a {patch}x{patch} patch; lower --patch")
    return TrainingData(
        data.mode,
        [data.names[i] for i in keep],
        [data.hr[i] for i in keep],
        {s: [lows[i] for i in keep] for s, lows in data.lr.items()},
    )


def epoch_steps(data: TrainingData, patch: int, batch: int) -> int:
    """VDSR's epoch: the non-overlapping patches the images hold at every trained scale, in batches.

    The paper samples 41x41 patches with stride 41 from each image at each scale; an epoch is one pass.
    """
    patches = sum((lr.shape[0] // patch) * (lr.shape[1] // patch) for lows in data.lr.values() for lr in lows)
    return max(1, -(-patches // batch))


def _augment(patch: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 flips/rotations: bit 0 mirrors columns, bit 1 mirrors rows, bit 2 transposes."""
    if code & 1:
        patch = patch[:, ::-1]
    if code & 2:
        patch = patch[::-1]
    if code & 4:
        patch = patch.swapaxes(0, 1)
    return patch


def minibatch_scale(scales: list[int], seed: int, step: int) -> int:
    """MDSR's scale for a whole minibatch; drawn from seed and step only, so every DDP rank agrees."""
    if len(scales) == 1:
        return scales[0]
    return scales[int(np.random.default_rng([seed, 7, step]).integers(len(scales)))]


def real_lr(hr_patch: np.ndarray, scale: int, recipe: DegradationRecipe, seed: int, rank: int, step: int,
            index: int) -> np.ndarray:
    """A patch's LR by the real degradations (uint8), drawn from its own seed: the run's seed, the rank, the step
    and the patch's place in the batch, so a resumed run makes the very same LR."""
    from srcli.training.degradation import degrade

    rng = np.random.default_rng([seed, rank, step, index, 0x5EA1])
    return np.rint(degrade(hr_patch, scale, rng, recipe) * 255.0).astype(np.uint8)


class PatchSampler:
    """Random aligned patches with flips and 90° rotations; `batch(step)` depends only on seed, rank, step.

    EDSR/MDSR: one scale per batch (drawn from seed and step only, so every DDP rank agrees), LR patch
    `patch`, HR patch `patch * scale`; with a degradation `recipe` the LR is made from the HR patch (`real_lr`)
    instead of cut from the cached bicubic LR. VDSR ('ilr'): each sample its own scale, input and target
    `patch` x `patch`.
    """

    def __init__(self, data: TrainingData, patch: int, batch: int, seed: int, rank: int = 0, augment: bool = True,
                 recipe: DegradationRecipe | None = None):
        self.data = data
        self.patch = patch
        self.batch_size = batch
        self.seed = seed
        self.rank = rank
        self.augment = augment
        self.recipe = recipe
        self.scales = sorted(data.lr)

    def scale_for(self, step: int) -> int:
        return minibatch_scale(self.scales, self.seed, step)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(input, target, scale) as uint8 NHWC (EDSR/MDSR) or float32 NHW (VDSR); scale 0 = mixed."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        count, p = self.batch_size, self.patch
        images = rng.integers(len(self.data), size=count)
        offsets = rng.random((count, 2))
        codes = rng.integers(8, size=count) if self.augment else np.zeros(count, dtype=np.int64)
        if self.data.mode == "ilr":
            scales = [self.scales[i] for i in rng.integers(len(self.scales), size=count)]
            inputs = np.empty((count, p, p), np.float32)
            targets = np.empty((count, p, p), np.float32)
            for i in range(count):
                source = self.data.lr[scales[i]][images[i]]
                y = int(offsets[i, 0] * (source.shape[0] - p + 1))
                x = int(offsets[i, 1] * (source.shape[1] - p + 1))
                inputs[i] = _augment(source[y : y + p, x : x + p], codes[i])
                targets[i] = _augment(self.data.hr[images[i]][y : y + p, x : x + p], codes[i])
            return inputs, targets, 0
        scale = self.scale_for(step)
        hp = p * scale
        channels = self.data.hr[0].shape[2]
        inputs = np.empty((count, p, p, channels), np.uint8)
        targets = np.empty((count, hp, hp, channels), np.uint8)
        lows = self.data.lr[scale]
        for i in range(count):
            lr = lows[images[i]]
            y = int(offsets[i, 0] * (lr.shape[0] - p + 1))
            x = int(offsets[i, 1] * (lr.shape[1] - p + 1))
            targets[i] = _augment(self.data.hr[images[i]][y * scale : y * scale + hp, x * scale : x * scale + hp],
                                  codes[i])
            if self.recipe is None:
                inputs[i] = _augment(lr[y : y + p, x : x + p], codes[i])
            else:
                inputs[i] = real_lr(targets[i], scale, self.recipe, self.seed, self.rank, step, i)
        return inputs, targets, scale


def degradation_preview(folders: list[str], scale: int, patch: int, count: int, recipe: DegradationRecipe,
                        seed: int = 0) -> np.ndarray:
    """`count` HR patches (`patch * scale` square, from the folders' images in turn) beside their real LR, as
    training makes them (`real_lr`): the grid `srcli train --preview-degradation` writes."""
    from srcli.training.degradation import preview_grid

    if count < 1:
        raise TrainingError(f"--preview-degradation needs at least 1 pair, not {count}")
    files = find_images(folders)
    side = patch * scale
    pairs = []
    for index in range(count):
        hr = read_rgb(files[index % len(files)])
        if min(hr.shape[:2]) < side:
            raise TrainingError(f"{files[index % len(files)]} is smaller than a {side}x{side} HR patch; lower --patch")
        rng = np.random.default_rng([seed, 0x9E, index])
        y, x = (int(rng.integers(size - side + 1)) for size in hr.shape[:2])
        crop = np.ascontiguousarray(hr[y : y + side, x : x + side])
        pairs.append((crop, real_lr(crop, scale, recipe, seed, 0, 0, index)))
    return preview_grid(pairs)


class Prefetcher:
    """Builds the batches of steps start, start+1, ... ahead of use in `threads` threads (0 = inline).

    Thread i makes the steps congruent to i modulo the thread count, so order never depends on timing.
    """

    def __init__(self, make: Callable[[int], Any], start: int, threads: int, depth: int = 3):
        self.make = make
        self.start = start
        self.threads = threads
        self._stop = threading.Event()
        self._queues: list[queue.Queue] = [queue.Queue(maxsize=depth) for _ in range(threads)]
        self._workers = [
            threading.Thread(target=self._work, args=(i,), daemon=True, name=f"srcli-batches-{i}")
            for i in range(threads)
        ]
        for worker in self._workers:
            worker.start()

    def _work(self, index: int) -> None:
        step = self.start + index
        while not self._stop.is_set():
            try:
                item: Any = ("ok", self.make(step))
            except Exception as error:  # surfaced in get() on the main thread
                item = ("error", error)
            while not self._stop.is_set():
                try:
                    self._queues[index].put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[0] == "error":
                return
            step += self.threads

    def get(self, step: int) -> Any:
        if self.threads == 0:
            return self.make(step)
        status, value = self._queues[(step - self.start) % self.threads].get()
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=5)
