"""`srcli compare`: one PNG grid of nearest, bicubic and models on a zoomed crop (srcli.compare does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from srcli.cli.common import Device, console
from srcli.errors import OutputError, SrcliError

if TYPE_CHECKING:
    import numpy as np

    from srcli.compare import Panel

_Image = Annotated[Path, typer.Argument(metavar="IMAGE", help="The low-resolution image to upscale.")]
_Hr = Annotated[Path | None, typer.Option(
    "--hr", help="Its high-resolution original: adds an HR panel and PSNR/SSIM (Y, shave = scale) to each label."
)]
_Models = Annotated[list[str] | None, typer.Option(
    "-m", "--model", metavar="NAME", help="A catalogue model; repeat for more. Default: srcli's default model."
)]
_Weights = Annotated[list[Path] | None, typer.Option(
    "-w", "--weights", metavar="FILE", help="A checkpoint file (any --weights srcli upscale takes); repeatable."
)]
_Sr = Annotated[list[Path] | None, typer.Option(
    "--sr", metavar="FILE",
    help="An upscaled image made elsewhere (e.g. by `srcli eval --save-dir`) shown as one more panel; repeatable.",
)]
_Scale = Annotated[int | None, typer.Option(
    "-s", "--scale", metavar="2|3|4", help="Default: the first --weights file's own scale, else 4."
)]
_Crop = Annotated[str | None, typer.Option(
    "--crop", metavar="X,Y,W,H", help="The zoomed region in output pixels. Default: where the methods differ most."
)]
_Output = Annotated[Path | None, typer.Option("-o", "--output", help="The grid (PNG). Default: <stem>_compare.png.")]
_Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the grid if it exists.")]


def compare_command(
    image: _Image,
    hr: _Hr = None,
    models: _Models = None,
    weights_files: _Weights = None,
    sr_files: _Sr = None,
    scale: _Scale = None,
    crop: _Crop = None,
    output: _Output = None,
    overwrite: _Overwrite = False,
    device: Device = "auto",
) -> None:
    """Compare upscalers by eye: one PNG grid in the manner of the EDSR paper's figures.

    The image with a box, then the boxed region for nearest, bicubic, each model and the HR (PSNR/SSIM with --hr).

    [bold]Examples[/]

      srcli compare bird_lr.png --hr bird.png --model bicubic -o bird.png

      srcli compare photo.png -w RealESRGAN_x4plus.pth --crop 120,80,64,64

      srcli compare lr.png --hr hr.png -m edsr-baseline-x2 -w my.pt -s 2

      srcli compare birdx2.png --hr bird.png --sr sr/Set5/x2/bird.png -m bicubic
    """
    from srcli.compare import make_grid, parse_crop, scored
    from srcli.imageio import read_image, write_image

    target = output or image.with_name(f"{image.stem}_compare.png")
    if target.exists() and not overwrite:
        raise OutputError(f"{target} already exists: pass --overwrite to replace it")
    box = parse_crop(crop) if crop is not None else None
    lr = read_image(image)
    original = read_image(hr) if hr is not None else None
    if sr_files and not weights_files and scale is None:
        scale = _scale_of(lr, read_image(sr_files[0]))
    scale, panels = _panels(lr, models or [], weights_files or [], scale, device, bool(sr_files))
    panels += [_made_elsewhere(path, read_image(path), panels[0].image.shape) for path in sr_files or []]
    grid = make_grid([scored(panel, original, scale) for panel in panels], original, box)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_image(target, grid.image)
    x, y, w, h = grid.crop
    scores = ", ".join(f"{p.name} {p.psnr:.2f} dB" for p in grid.panels if p.psnr is not None)
    console.print(f"wrote {escape(str(target))} ({grid.image.shape[1]}x{grid.image.shape[0]}, x{scale}, crop "
                  f"{x},{y},{w},{h}{'; ' + escape(scores) if scores else ''})", soft_wrap=True)


def _scale_of(lr: np.ndarray, sr: np.ndarray) -> int:
    """The scale an upscaled image was made at, from the two sizes."""
    return max(1, round(sr.shape[0] / lr.shape[0]))


def _made_elsewhere(path: Path, image: np.ndarray, shape: tuple[int, ...]) -> Panel:
    from srcli.compare import Panel, as_rgb8

    if image.shape[:2] != shape[:2]:
        raise SrcliError(f"--sr {path} is {image.shape[1]}x{image.shape[0]}, not the {shape[1]}x{shape[0]} of the "
                         "other panels: was it made from this image at this scale?")
    return Panel(f"{path.parent.name}/{path.name}" if path.parent.name else path.name, as_rgb8(image))


def _panels(lr: np.ndarray, models: list[str], files: list[Path], scale: int | None,
            device: str, others: bool = False) -> tuple[int, list[Panel]]:
    """Nearest, bicubic, then each model's output; the scale they all ran at."""
    from srcli import api
    from srcli.compare import Panel, as_rgb8, baselines

    loaded = []
    for file in files:  # first: a file's own scale decides when --scale is not given
        loaded.append(api.load(file, scale, device=device))
        scale = loaded[-1].scale
    named = models or ([] if (files or others) and scale not in (2, 3, 4) else [None])
    named = [name for name in named if name != "bicubic"]  # always a panel of its own
    loaded = [api.load(name, scale, device=device) for name in named] + loaded
    scale = loaded[0].scale if loaded else scale or 4
    if any(model.scale != scale for model in loaded):
        raise SrcliError("the models run at different scales: pass --scale")
    panels = baselines(lr, scale)
    names = [p.name for p in panels]
    for model in loaded:
        name = Path(model.name).name
        names.append(name if name not in names else f"{name} ({len(names)})")
        panels.append(Panel(names[-1], as_rgb8(model.upscale(lr))))
    return scale, panels


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the app."""
    app.command("compare")(compare_command)
