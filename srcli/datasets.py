"""Benchmark and DIV2K datasets: where they come from, how they are laid out, verified fetching.

A dataset is used from one of three places, first match wins: an explicit data directory
(`--data-dir`), the `SRCLI_DATA` environment variable, or srcli's own cache (`$SRCLI_HOME/datasets`,
else the platform's user data dir), which `prepare` fills by downloading the published archives.
Archives are md5-verified, then unpacked by srcli.archives (every member checked before a byte is
written, so an unsafe archive is refused whole and a half-extracted set is never seen).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srcli import imageio
from srcli.archives import extract
from srcli.download import Downloadable, data_home, fetch, register
from srcli.errors import DatasetError, InputImageError
from srcli.files import is_hidden, write_atomic
from srcli.resize import downscale

DATA_ENV = "SRCLI_DATA"
MIRROR_ENV = "SRCLI_DATASET_MIRROR"

Progress = Callable[[int, "int | None"], None]
"""Download progress: (bytes so far, total bytes or None)."""


# --- the catalogue ---------------------------------------------------------------------------------

BENCHMARK_URL = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
DIV2K_BASE = "http://data.vision.ee.ethz.ch/cvl/DIV2K/"


@dataclass(frozen=True)
class Archive:
    """One published archive file and what it unpacks to (relative to the cache folder `home`)."""

    file: str
    url: str
    md5: str
    home: str  # cache sub-folder it is extracted into: "benchmark" or "DIV2K"
    megabytes: float | None = None  # published size, about (for help text and totals; never checked)

    @property
    def name(self) -> str:
        """What `srcli download` calls it: the file name without its extension."""
        return self.file.rsplit(".", 1)[0]

    def folder(self, home: Path) -> Path:
        """The folder its images land in under the cache `home` (DIV2K LR: <split>_LR_<kind>/X<s>)."""
        prefix, _, scale = self.name.rpartition("_X")
        if "_LR_" in self.name and scale.isdigit():
            return home / self.home / prefix / f"X{scale}"
        return home / self.home / self.name


def _div2k(file: str, md5: str, megabytes: float) -> Archive:
    return Archive(file, DIV2K_BASE + file, md5, "DIV2K", megabytes)


ARCHIVES: dict[str, Archive] = {
    archive.file: archive
    for archive in (
        Archive("benchmark.tar", BENCHMARK_URL, "4ace41d33c2384b97e6b320cd0afd6ba", "."),
        _div2k("DIV2K_train_HR.zip", "bdc2d9338d4e574fe81bf7d158758658", 3530.6),
        _div2k("DIV2K_train_LR_bicubic_X2.zip", "9a637d2ef4db0d0a81182be37fb00692", 925.4),
        _div2k("DIV2K_train_LR_bicubic_X3.zip", "ad80b9fe40c049a07a8a6c51bfab3b6d", 427.8),
        _div2k("DIV2K_train_LR_bicubic_X4.zip", "76c43ec4155851901ebbe8339846d93d", 246.9),
        _div2k("DIV2K_train_LR_unknown_X2.zip", "1396d023072c9aaeb999c28b81315233", 734),
        _div2k("DIV2K_train_LR_unknown_X3.zip", "4e651308aaa54d917fb1264395b7f6fa", 377),
        _div2k("DIV2K_train_LR_unknown_X4.zip", "e3c7febb1b3f78bd30f9ba15fe8e3956", 209),
        _div2k("DIV2K_valid_HR.zip", "9fcdda83005c5e5997799b69f955ff88", 449),
        _div2k("DIV2K_valid_LR_bicubic_X2.zip", "1512c9a3f7bde2a1a21a73044e46b9cb", 118),
        _div2k("DIV2K_valid_LR_bicubic_X3.zip", "18b1d310f9f88c13618c287927b29898", 54.5),
        _div2k("DIV2K_valid_LR_bicubic_X4.zip", "21962de700c8d368c6ff83314480eff0", 31.5),
        _div2k("DIV2K_valid_LR_unknown_X2.zip", "d319bd9033573d21de5395e6454f34f8", 93.4),
        _div2k("DIV2K_valid_LR_unknown_X3.zip", "05184168e3608b5c539fbfb46bcade4f", 48.1),
        _div2k("DIV2K_valid_LR_unknown_X4.zip", "8ac3413102bb3d0adc67012efb8a6c94", 26.7),
    )
}


@dataclass(frozen=True)
class DatasetSpec:
    """A named image set: its folders (relative to a root holding the benchmark/DIV2K layout) and archives.

    `lr_dir` and the LR file name take `{s}` for the scale; `hr_archive`/`lr_archive` name the entries
    of ARCHIVES that hold them (`lr_archive` with `{s}`). `first` keeps only the first N images.
    """

    name: str
    home: str  # cache sub-folder ("benchmark" or "DIV2K")
    hr_dir: str
    lr_dir: str
    lr_name: str
    hr_archive: str
    lr_archive: str
    scales: tuple[int, ...]  # scales whose LR the published data holds
    description: str
    first: int | None = None
    aliases: tuple[str, ...] = ()

    def lr_file(self, stem: str, scale: int) -> str:
        return self.lr_name.format(name=stem, s=scale)


def _benchmark(name: str, description: str, aliases: tuple[str, ...] = ()) -> DatasetSpec:
    return DatasetSpec(
        name, "benchmark", f"{name}/HR", f"{name}/LR_bicubic/X{{s}}", "{name}x{s}.png",
        "benchmark.tar", "benchmark.tar", (2, 3, 4), description, aliases=aliases,
    )


def _div2k_set(split: str, description: str, first: int | None = None, name: str | None = None,
               aliases: tuple[str, ...] = ()) -> DatasetSpec:
    return DatasetSpec(
        name or f"DIV2K-{split}", "DIV2K", f"DIV2K_{split}_HR", f"DIV2K_{split}_LR_bicubic/X{{s}}",
        "{name}x{s}.png", f"DIV2K_{split}_HR.zip", f"DIV2K_{split}_LR_bicubic_X{{s}}.zip", (2, 3, 4),
        description, first=first, aliases=aliases,
    )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _benchmark("Set5", "5 images (Bevilacqua et al.)"),
        _benchmark("Set14", "14 images (Zeyde et al.)"),
        _benchmark("B100", "100 images of the BSD300 test split", aliases=("BSD100",)),
        _benchmark("Urban100", "100 urban scenes (Huang et al.)"),
        _div2k_set("valid", "DIV2K validation, 0801-0900", aliases=("DIV2K",)),
        _div2k_set("valid", "DIV2K validation 0801-0810 (the EDSR paper's Table 2)", first=10,
                   name="DIV2K-valid10"),
        _div2k_set("train", "DIV2K training, 0001-0800 (for training, never for scoring)"),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    """Case-insensitive lookup by name or alias; an unknown name lists the known ones."""
    wanted = name.strip().lower()
    for spec in DATASETS.values():
        if wanted in {spec.name.lower(), *(alias.lower() for alias in spec.aliases)}:
            return spec
    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


# --- archive groups: `srcli download div2k --part ...` ----------------------------------------------


def _div2k_parts() -> dict[str, str]:
    """Part name (train-hr, valid-lr-bicubic-x2, ...) -> archive file, in download order."""
    parts = {}
    for split in ("train", "valid"):
        parts[f"{split}-hr"] = f"DIV2K_{split}_HR.zip"
        for kind in ("bicubic", "unknown"):
            for scale in (2, 3, 4):
                parts[f"{split}-lr-{kind}-x{scale}"] = f"DIV2K_{split}_LR_{kind}_X{scale}.zip"
    return parts


DIV2K_PARTS = _div2k_parts()


def _div2k_split(split: str) -> tuple[str, ...]:
    return (f"{split}-hr", *(f"{split}-lr-bicubic-x{s}" for s in (2, 3, 4)))


DIV2K_GROUPS: dict[str, tuple[str, ...]] = {
    "paper": _div2k_split("train") + _div2k_split("valid"),  # what the EDSR paper trained and validated on
    "train": _div2k_split("train"),
    "valid": _div2k_split("valid"),
    "hr": ("train-hr", "valid-hr"),
    "unknown": tuple(part for part in DIV2K_PARTS if "-unknown-" in part),
    "all": tuple(DIV2K_PARTS),
}
DIV2K_DEFAULT = "paper"


def div2k_archives(parts: Iterable[str] = ()) -> list[Archive]:
    """The DIV2K archives for parts and groups (default: `paper`), once each, in download order."""
    chosen: set[str] = set()
    for part in list(parts) or [DIV2K_DEFAULT]:
        key = part.strip().lower()
        if key not in DIV2K_GROUPS and key not in DIV2K_PARTS:
            raise DatasetError(f"div2k has no part {part!r}; groups: {', '.join(DIV2K_GROUPS)}; "
                               f"parts: {', '.join(DIV2K_PARTS)}")
        chosen.update(DIV2K_GROUPS.get(key, (key,)))
    return [ARCHIVES[file] for part, file in DIV2K_PARTS.items() if part in chosen]


def megabytes(archives: Iterable[Archive]) -> float:
    """The published size of some archives together, about."""
    return sum(archive.megabytes or 0.0 for archive in archives)


def expand_download_names(names: Iterable[str], parts: Iterable[str] = ()) -> list[str]:
    """`srcli download` names with the groups opened into archive names: `div2k` by `parts`, `benchmark`.

    Other names pass through unchanged (weights); duplicates are dropped, order kept.
    """
    names, parts = list(names), list(parts)
    if parts and "div2k" not in {name.strip().lower() for name in names}:
        raise DatasetError("--part chooses parts of div2k; name div2k (benchmark is a single archive)")
    expanded: list[str] = []
    for name in names:
        key = name.strip().lower()
        if key == "div2k":
            expanded += [archive.name for archive in div2k_archives(parts)]
        elif key == "benchmark":
            expanded.append(ARCHIVES["benchmark.tar"].name)
        else:
            expanded.append(name)
    return list(dict.fromkeys(expanded))


# --- a dataset on disk -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePair:
    """One HR image and its LR input at one scale (`lr_generated`: made here by MATLAB bicubic)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray
    lr_generated: bool


@dataclass(frozen=True)
class Dataset:
    """A set found on disk: its HR files, and the LR folder per scale where the data holds one."""

    spec: DatasetSpec
    root: Path
    hr_paths: tuple[Path, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return len(self.hr_paths)

    def lr_path(self, stem: str, scale: int) -> Path | None:
        """The published LR file, or None when this copy has no LR folder for the scale."""
        folder = self.root / self.spec.lr_dir.format(s=scale)
        return folder / self.spec.lr_file(stem, scale) if folder.is_dir() else None

    def check_scale(self, scale: int) -> None:
        """An LR folder that exists must hold every image: say which are missing, before any work."""
        folder = self.root / self.spec.lr_dir.format(s=scale)
        if not folder.is_dir():
            return
        missing = [self.spec.lr_file(p.stem, scale) for p in self.hr_paths
                   if not (folder / self.spec.lr_file(p.stem, scale)).is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise DatasetError(f"{self.name}: {folder} lacks {shown}")
        for hr_path in self.hr_paths:
            hr_size = imageio.png_file_size(hr_path)
            lr_size = imageio.png_file_size(folder / self.spec.lr_file(hr_path.stem, scale))
            if hr_size and lr_size:  # (width, height) -> (height, width), as an image's shape
                self._check_sizes(hr_path.stem, hr_size[::-1], lr_size[::-1], scale)

    def _check_sizes(self, stem: str, hr: tuple[int, ...], lr: tuple[int, ...], scale: int) -> None:
        expected = (hr[0] // scale, hr[1] // scale)
        if tuple(lr[:2]) != expected:
            raise DatasetError(
                f"{self.name}/{stem}: LR is {lr[1]}x{lr[0]} but HR {hr[1]}x{hr[0]} at x{scale} "
                f"needs LR {expected[1]}x{expected[0]}"
            )

    def pairs(self, scale: int) -> Iterator[ImagePair]:
        """HR/LR pairs at `scale`; LR made with MATLAB bicubic where the copy has none for that scale."""
        self.check_scale(scale)
        for hr_path in self.hr_paths:
            hr = read_image(hr_path)
            lr_path = self.lr_path(hr_path.stem, scale)
            if lr_path is None:
                yield ImagePair(hr_path.stem, hr, downscale(hr, scale), True)
                continue
            lr = read_image(lr_path)
            self._check_sizes(hr_path.stem, hr.shape, lr.shape, scale)
            yield ImagePair(hr_path.stem, hr, lr, False)


def read_image(path: Path) -> np.ndarray:
    """An 8-bit image as RGB HxWx3 (alpha dropped), or HxW when it is single-channel (scored as it is).

    Decoded by imageio's one reader (header checks, EXIF orientation); its errors become DatasetError.
    """
    try:
        image = imageio.read_image(path)
    except InputImageError as error:
        raise DatasetError(str(error)) from None
    if image.dtype != np.uint8:
        raise DatasetError(f"{path}: {image.dtype} image; benchmark images are 8-bit")
    if image.ndim == 3:
        image = np.ascontiguousarray(image[:, :, :3])
    return image


def _listed(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """A set's images, sorted; dotfiles skipped as `upscale` skips them (macOS `._bird.png` resource forks
    are not images, and would otherwise be asked for an LR partner)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and not is_hidden(p) and p.is_file())


_LAYOUT_HINT = "expected <Set>/HR/<name>.png and <Set>/LR_bicubic/X<s>/<name>x<s>.png"


def open_dataset(spec: DatasetSpec, root: Path) -> Dataset:
    """The set under `root` (which holds `Set5/`... or `benchmark/Set5/`...), or an error saying what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data directory {root} does not exist")
    # the set's own folder too (`--data-dir .../benchmark/Set5`): its parent holds the layout
    own = (root.parent,) if root.name == Path(spec.hr_dir).parts[0] else ()
    for base in (root, root / spec.home, *own):
        if (base / spec.hr_dir).is_dir():
            break
    else:
        hint = _LAYOUT_HINT if spec.home == "benchmark" else f"expected {spec.hr_dir}/ (the DIV2K archive layout)"
        raise DatasetError(f"{root} has no {spec.hr_dir}/ folder for {spec.name} ({hint})")
    hr_paths = _listed(base / spec.hr_dir, (".png",))
    if spec.first is not None:
        hr_paths = hr_paths[: spec.first]
    if not hr_paths:
        raise DatasetError(f"{base / spec.hr_dir} holds no .png images")
    return Dataset(spec, base, tuple(hr_paths))


_HR_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def folder_dataset(folder: Path) -> Dataset:
    """A folder scored as a set: benchmark layout (HR/ beside LR_bicubic/X<s>/), DIV2K layout
    (<name>_HR/ beside <name>_LR_bicubic/X<s>/), or plain images (their LR made by MATLAB bicubic)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    if (folder / "HR").is_dir():
        root, hr_dir, lr_dir = folder, "HR", "LR_bicubic/X{s}"
    elif folder.name.endswith("_HR"):
        root, hr_dir, lr_dir = folder.parent, folder.name, folder.name[: -len("HR")] + "LR_bicubic/X{s}"
    else:
        root, hr_dir, lr_dir = folder, ".", "LR_bicubic/X{s}"
    spec = DatasetSpec(folder.name, ".", hr_dir, lr_dir, "{name}x{s}.png", "", "", (2, 3, 4), f"the images in {folder}")
    hr_paths = _listed(root / hr_dir, _HR_SUFFIXES)
    if not hr_paths:
        raise DatasetError(f"{root / hr_dir} holds no image")
    return Dataset(spec, root, tuple(hr_paths))


# --- fetching and safe extraction ------------------------------------------------------------------


def datasets_home() -> Path:
    """Where downloaded datasets are extracted: `<srcli data home>/datasets`."""
    return data_home() / "datasets"


def _marker(home: Path, archive: Archive) -> Path:
    return home / ".extracted" / f"{archive.file}.md5"


def is_extracted(archive: Archive, home: Path | None = None) -> bool:
    """Whether the archive was fully extracted into the cache (a marker written after the rename)."""
    marker = _marker(home or datasets_home(), archive)
    return marker.is_file() and marker.read_text().strip() == archive.md5


def archives_for(spec: DatasetSpec, scales: tuple[int, ...] = ()) -> list[Archive]:
    """The archives a set needs: its HR, and its published LR for each of `scales` it has."""
    files = [spec.hr_archive] + [spec.lr_archive.format(s=s) for s in scales if s in spec.scales]
    return [ARCHIVES[file] for file in dict.fromkeys(files)]


def _archive_url(archive: Archive, mirror: str | None) -> str:
    mirror = os.environ.get(MIRROR_ENV) if mirror is None else mirror
    return mirror.rstrip("/") + "/" + archive.file if mirror else archive.url


def download_archive(
    archive: Archive, *, mirror: str | None = None, home: Path | None = None, progress: Progress | None = None
) -> Path:
    """Fetch (resuming, md5-checked), extract safely into the cache, drop the archive; returns the cache."""
    home = home or datasets_home()
    if is_extracted(archive, home):
        return home
    downloads = home / ".downloads"
    path = fetch(_archive_url(archive, mirror), downloads / archive.file, md5=archive.md5, progress=progress)
    extract(path, home / archive.home)
    marker = _marker(home, archive)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, (archive.md5 + "\n").encode())
    path.unlink()
    return home


def prepare(
    name: str,
    data_dir: Path | str | None = None,
    progress: Progress | None = None,
    *,
    scales: tuple[int, ...] = (),
    mirror: str | None = None,
    download: bool = True,
) -> Dataset:
    """A ready dataset: from `data_dir`, else $SRCLI_DATA, else the cache (downloaded when absent).

    `scales` says which published LR archives are wanted (DIV2K ships one per scale); a scale the
    data lacks is made on the fly by MATLAB bicubic. `progress` reports download bytes. With
    `download=False` a set missing from the cache is an error naming the `srcli download` command.
    """
    spec = dataset_spec(name)
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    if chosen is not None:
        return open_dataset(spec, Path(chosen).expanduser())
    home = datasets_home()
    missing = [archive for archive in archives_for(spec, scales) if not is_extracted(archive, home)]
    if not download:
        missing = [archive for archive in missing if archive.file == spec.hr_archive]  # LR: made here instead
        if missing:
            command = "div2k" if spec.home == "DIV2K" else "benchmark"
            raise DatasetError(f"{spec.name} is not in srcli's data folder {home}: run `srcli download {command}`, "
                               f"or point --data-dir (or ${DATA_ENV}) at a copy")
    for archive in missing:
        download_archive(archive, mirror=mirror, home=home, progress=progress)
    return open_dataset(spec, home)


def _downloadables():
    """Each archive as a thing `srcli download NAME` can fetch (name: the file without its extension)."""
    for archive in ARCHIVES.values():
        yield Downloadable(
            name=archive.name, kind="dataset", size=None,
            describe=f"dataset archive {archive.file}, extracted into {archive.folder(datasets_home())}",
            present=lambda archive=archive: is_extracted(archive),
            fetch=lambda mirror, progress, archive=archive: archive.folder(
                download_archive(archive, mirror=mirror, progress=progress)
            ),
        )


register("dataset", _downloadables)
