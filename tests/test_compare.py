"""`srcli compare`: the grid's layout, its labels, its scores and where its crop goes."""

from __future__ import annotations

import numpy as np
import pytest
from upscale_helpers import assert_one_error_line, tiny_checkpoint, write_image

from srcli import metrics
from srcli.compare import LABEL, MARGIN, PANEL, Panel, baselines, choose_crop, make_grid, scored
from srcli.imageio import read_image
from srcli.imageio import write_image as save
from srcli.resize import downscale


def _photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth image with some texture: scores are finite and differ between methods."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(x / 5.0)[..., None] * np.cos(y / 7.0)[..., None]
    return np.clip(base + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)


def test_crop_auto_choice_finds_the_region_of_largest_difference():
    a = np.full((60, 80, 3), 100, np.uint8)
    b = a.copy()
    b[30:40, 50:60] = 200  # the only place where the two methods disagree
    b[5, 5] = 110  # a small disagreement elsewhere must not win
    x, y, w, h = choose_crop([a, b], 16)
    assert (w, h) == (16, 16)
    assert x <= 50 and x + w >= 60 and y <= 30 and y + h >= 40


def test_grid_size_labels_and_scores():
    hr = _photo()
    lr = downscale(hr, 2)
    sr = np.clip(baselines(lr, 2)[1].image.astype(int) + 3, 0, 255).astype(np.uint8)  # a stand-in "model"
    panels = [scored(p, hr, 2) for p in [*baselines(lr, 2), Panel("model", sr)]]
    grid = make_grid(panels, hr, crop=(8, 8, 16, 16))
    rows, columns, cell = 2, 3, PANEL + LABEL
    overview = round(64 * (rows * cell - MARGIN) / 48)
    assert grid.image.shape == (rows * cell + MARGIN, 2 * MARGIN + overview + columns * (PANEL + MARGIN), 3)
    for panel in grid.panels:  # the panels' scores are srcli.metrics on the same images (Y, shave = scale)
        assert panel.psnr == metrics.psnr(panel.image, hr, 2)
        assert panel.ssim == metrics.ssim(panel.image, hr, 2)
    left = 2 * MARGIN + overview
    for index in range(4):  # 3 methods + HR: each label strip holds dark text pixels
        top = MARGIN + (index // columns) * cell + PANEL
        x0 = left + (index % columns) * (PANEL + MARGIN)
        assert grid.image[top : top + LABEL, x0 : x0 + PANEL].min() < 100
    empty = grid.image[MARGIN + cell + PANEL :, left + 2 * (PANEL + MARGIN) :]  # no sixth panel: blank
    assert empty.min() == 255
    # the zoomed panel is the crop, blown up by nearest neighbour
    zoom = grid.image[MARGIN : MARGIN + PANEL, left : left + PANEL]
    assert np.array_equal(zoom[:: PANEL // 16, :: PANEL // 16], panels[0].image[8:24, 8:24])


def test_cli_writes_the_grid(cli, tmp_path):
    hr = _photo()
    save(tmp_path / "hr.png", hr)
    save(tmp_path / "lr.png", downscale(hr, 2))
    checkpoint = tiny_checkpoint(tmp_path / "tiny_x2.pt")
    code, _, err = cli("compare", tmp_path / "lr.png", "--hr", tmp_path / "hr.png", "-m", "bicubic",
                       "-w", checkpoint, "-o", tmp_path / "grid.png")
    assert code == 0, err
    assert err.startswith(f"wrote {tmp_path / 'grid.png'} (") and "bicubic " in err and "tiny_x2.pt " in err
    assert read_image(tmp_path / "grid.png").shape[0] == 2 * (PANEL + LABEL) + MARGIN  # 4 panels + HR: two rows
    assert "bicubic (" not in err  # -m bicubic is the bicubic panel, not a second one


def test_cli_takes_an_upscaled_image_made_elsewhere(cli, tmp_path):
    hr = _photo()
    save(tmp_path / "hr.png", hr)
    save(tmp_path / "lr.png", downscale(hr, 2))
    made = np.clip(hr.astype(int) - 2, 0, 255).astype(np.uint8)  # as if `srcli eval --save-dir` wrote it
    (tmp_path / "sr" / "x2").mkdir(parents=True)
    save(tmp_path / "sr" / "x2" / "lr.png", made)
    code, _, err = cli("compare", tmp_path / "lr.png", "--hr", tmp_path / "hr.png", "-m", "bicubic",
                       "--sr", tmp_path / "sr" / "x2" / "lr.png", "-o", tmp_path / "grid.png")
    assert code == 0, err
    assert f"x2/lr.png {metrics.psnr(made, hr, 2):.2f} dB" in err
    code, _, err = cli("compare", tmp_path / "lr.png", "--sr", tmp_path / "hr.png", "-s", 3, "-m", "bicubic",
                       "-o", tmp_path / "bad.png")
    assert "was it made from this image at this scale?" in assert_one_error_line(code, err)


@pytest.mark.parametrize(("crop", "message"), [("1,2,3", "is not x,y,w,h"), ("60,60,32,32", "is not inside")])
def test_cli_bad_crop_is_one_line(cli, tmp_path, crop, message):
    source = write_image(tmp_path / "lr.png", shape=(24, 32, 3))
    code, _, err = cli("compare", source, "-m", "bicubic", "-s", 2, "--crop", crop)
    assert message in assert_one_error_line(code, err)
