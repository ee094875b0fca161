"""ImagePipeline: grey, alpha (no dark halo) and 16-bit around one RGB upscaler."""

from __future__ import annotations

import numpy as np
import pytest
from upscale_helpers import blur_edsr

from srcli.engine import UpscaleOptions, Upscaler
from srcli.pipeline import ImagePipeline, bleed_into_transparent


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    return Upscaler(blur_edsr(2), 2, UpscaleOptions(device="cpu", tile=0))


def test_blur_model_is_a_real_upscaler(upscaler):
    flat = np.full((8, 8, 3), 120, np.uint8)
    out = upscaler.upscale(flat).image
    assert out.shape == (16, 16, 3)
    assert np.array_equal(out[2:-2, 2:-2], np.full((12, 12, 3), 120, np.uint8))


def test_rgb_passes_straight_through(upscaler):
    image = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    assert np.array_equal(ImagePipeline(upscaler).upscale(image).image, upscaler.upscale(image).image)


def test_grey_in_gives_grey_out(upscaler):
    grey = np.random.default_rng(1).integers(0, 256, (10, 12), dtype=np.uint8)
    out = ImagePipeline(upscaler).upscale(grey).image
    assert out.shape == (20, 24) and out.dtype == np.uint8
    reference = upscaler.upscale(np.repeat(grey[:, :, None], 3, axis=2)).image.astype(np.float32).mean(axis=2)
    assert np.abs(out.astype(np.float32) - reference).max() <= 0.5


def test_sixteen_bit_keeps_its_precision(upscaler):
    ramp = (np.arange(40 * 40, dtype=np.uint32).reshape(40, 40) * 13 + 20000).astype(np.uint16)
    image = np.dstack([ramp, ramp, ramp])
    out = ImagePipeline(upscaler).upscale(image).image
    assert out.dtype == np.uint16 and out.shape == (80, 80, 3)
    assert len(np.unique(out)) > 1000  # far more levels than 8 bits could hold
    assert out[40, 40, 0] == pytest.approx(image[20, 20, 0], abs=40 * 13)


def test_constant_alpha_is_kept_without_a_second_pass(upscaler):
    image = np.dstack([np.full((6, 6, 3), 77, np.uint8), np.full((6, 6), 200, np.uint8)])
    calls = []
    out = ImagePipeline(upscaler).upscale(image, lambda done, total: calls.append((done, total))).image
    assert out.shape == (12, 12, 4)
    assert np.all(out[..., 3] == 200)
    assert calls[-1][0] == calls[-1][1]


def _half_transparent(dtype=np.uint8) -> np.ndarray:
    """Left: opaque red. Right: fully transparent, with black hidden underneath (what editors often store)."""
    peak = np.iinfo(dtype).max
    image = np.zeros((16, 16, 4), dtype)
    image[:, :8, 0] = peak
    image[:, :8, 3] = peak
    return image


def test_transparent_black_does_not_darken_the_visible_edge(upscaler):
    image = _half_transparent()
    out = ImagePipeline(upscaler).upscale(image).image
    assert out.shape == (32, 32, 4)
    inner = out[4:-4, 4:]  # away from the image borders, where the network's zero padding darkens anything
    edge_red = inner[..., 0][inner[..., 3] >= 128]
    assert edge_red.size > 0 and edge_red.min() >= 250  # red stays red right up to the edge
    naive = upscaler.upscale(np.ascontiguousarray(image[..., :3])).image
    assert np.all(naive[4:-4, 14:16, 0] < 200)  # what the halo would look like: the test can tell the difference


def test_alpha_is_upscaled_with_sharp_edges(upscaler):
    out = ImagePipeline(upscaler).upscale(_half_transparent()).image
    alpha = out[8:-8, :, 3]
    assert np.all(alpha[:, 4:12] == 255) and np.all(alpha[:, 20:28] == 0)
    assert np.all(np.diff(alpha[:, 4:28].astype(int), axis=1) <= 0)  # monotone opaque -> transparent


def test_sixteen_bit_alpha(upscaler):
    out = ImagePipeline(upscaler).upscale(_half_transparent(np.uint16)).image
    assert out.dtype == np.uint16
    assert out[16, 4, 0] == 65535 and out[16, 4, 3] == 65535 and out[16, 28, 3] == 0


def test_bleed_fills_hidden_pixels_with_the_nearest_visible_colour():
    rgb = np.zeros((5, 9, 3), np.uint8)
    rgb[:, :2] = (0, 0, 255)
    rgb[:, 7:] = (0, 255, 0)
    alpha = np.zeros((5, 9), np.uint8)
    alpha[:, :2] = alpha[:, 7:] = 255
    filled = bleed_into_transparent(rgb, alpha)
    assert np.array_equal(filled[:, :4], np.broadcast_to((0, 0, 255), (5, 4, 3)))
    assert np.array_equal(filled[:, 5:], np.broadcast_to((0, 255, 0), (5, 4, 3)))
    assert np.array_equal(filled[alpha > 0], rgb[alpha > 0])


def test_fully_transparent_image_is_left_alone():
    rgb = np.full((4, 4, 3), 9, np.uint8)
    assert np.array_equal(bleed_into_transparent(rgb, np.zeros((4, 4), np.uint8)), rgb)
