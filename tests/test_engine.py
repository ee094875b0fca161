"""The engine: exact tiling, folding, self-ensemble, precision fallback, memory planning and back-off."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from srcli.engine import (
    MIN_TILE,
    YCBCR_MATRIX,
    YCBCR_OFFSET,
    UpscaleOptions,
    Upscaler,
    choose_device,
    choose_dtype,
)
from srcli.engine.tiling import window_size, windows
from srcli.errors import DeviceError, ScaleError
from srcli.models import build, folding, spec_of
from srcli.resize import imresize
from srcli.weights import load_checkpoint

CPU = "cpu"


def _torch(**options) -> UpscaleOptions:
    """The torch backend on the CPU, what these tests are about (the OpenVINO backend: tests/test_openvino.py)."""
    return UpscaleOptions(device=CPU, backend="torch", **options)


def _set14_crop(benchmark_dir: Path, rows: slice, cols: slice) -> np.ndarray:
    image = cv2.imread(str(benchmark_dir / "Set14" / "HR" / "baboon.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.ascontiguousarray(image[rows, cols])


def _seeded(arch: str, **config) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(arch, **config).eval()


def _random_image(height: int, width: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    peak = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, peak + 1, (height, width, 3), dtype=dtype)


# --- exact tiling on real images ----------------------------------------------------------------------


def test_tiled_output_is_byte_identical_to_whole_image_edsr_baseline(benchmark_dir: Path) -> None:
    image = _set14_crop(benchmark_dir, slice(100, 160), slice(40, 240))  # 60 x 200: interior column seams
    model = _seeded("edsr-baseline", scale=2)
    whole = Upscaler(model, 2, _torch(tile=0)).upscale(image).image
    upscaler = Upscaler(model, 2, _torch(tile=40))
    calls: list[tuple[int, int]] = []
    tiled, plan = upscaler.upscale(image, lambda done, total: calls.append((done, total)))
    assert plan.pad == upscaler.receptive_field == 36
    assert calls[-1] == (10, 10) and plan.tiles == 10  # 2 x 5 windows
    assert tiled.shape == (120, 400, 3) and tiled.dtype == np.uint8
    assert np.array_equal(tiled, whole)


def test_tiled_output_is_byte_identical_to_whole_image_vdsr(benchmark_dir: Path, vdsr_checkpoint: Path) -> None:
    image = _set14_crop(benchmark_dir, slice(60, 100), slice(0, 120))
    model, _ = load_checkpoint(vdsr_checkpoint)
    whole = Upscaler(model, 3, _torch(tile=0)).upscale(image).image
    upscaler = Upscaler(model, 3, _torch(tile=30, batch=2))
    tiled = upscaler.upscale(image).image
    assert upscaler.receptive_field == 10  # ceil(20 / 3) network + 3 bicubic
    assert np.array_equal(tiled, whole)


def test_a_pad_below_the_receptive_field_changes_the_output(benchmark_dir: Path) -> None:
    """The overlap is what makes tiles exact: with none, the seams show."""
    image = _set14_crop(benchmark_dir, slice(0, 24), slice(0, 96))
    model = _seeded("edsr-baseline", scale=2)
    whole = Upscaler(model, 2, _torch(tile=0)).upscale(image).image
    seamed = Upscaler(model, 2, _torch(tile=24, tile_pad=0)).upscale(image).image
    assert (seamed != whole).sum() > 100


# --- folding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "config", "scale"),
    [
        ("edsr", {"scale": 4, "blocks": 3, "features": 32}, 4),  # res_scale 0.1 folded
        ("edsr-baseline", {"scale": 3, "blocks": 2}, 3),
        ("edsr-baseline", {"scale": 2, "blocks": 1}, 2),  # the tail composed into one conv
        ("mdsr-baseline", {"blocks": 2}, 3),
        ("mdsr-baseline", {"blocks": 1}, 4),
        ("vdsr", {"layers": 6}, 2),
        ("vdsr-rgb", {"layers": 6}, 2),
    ],
)
def test_folded_network_equals_the_model(arch: str, config: dict, scale: int) -> None:
    model = _seeded(arch, **config)
    with torch.no_grad():  # non-trivial mean shifts, so the output fold is exercised
        for name in ("sub_mean", "add_mean"):
            if hasattr(model, name):
                getattr(model, name).bias.add_(torch.tensor([3.0, -5.0, 7.0]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, model.channels, 19, 23, generator=torch.Generator().manual_seed(1)) * model.pixel_max
    with torch.inference_mode():
        expected = model(x, scale)
    folded = Upscaler(model, scale, _torch()).network_forward(x)
    tolerance = 1e-3 * model.pixel_max / 255 * 10
    assert folded.shape == expected.shape
    assert torch.allclose(folded, expected, atol=tolerance, rtol=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model untouched


@pytest.mark.parametrize(("scale", "channels", "ring"), [(2, 12, 1), (3, 27, 1), (4, 48, 3)])
def test_the_linear_tail_is_one_conv_with_its_border_from_the_tail_as_written(scale: int, channels: int,
                                                                               ring: int) -> None:
    """EDSR's upsampler and last conv fold into one 5x5 conv; it differs from them only in the outer `ring`
    output pixels (where their own zero padding acts), which the edge strips put back."""
    model = _seeded("edsr-baseline", scale=scale, blocks=1)
    [step] = spec_of(model).architecture.fold(model, scale).tail
    assert isinstance(step, folding.Composed) and step.ring == ring
    assert tuple(step.conv.weight.shape) == (channels, 64, 5, 5)
    features = torch.randn(1, 64, 9, 11, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        exact = folding.run_reference(step.exact, features)
        composed = folding.run_reference([step.conv, folding.Shuffle(scale)], features)
        inner = (..., slice(ring, -ring), slice(ring, -ring))
        assert torch.allclose(composed[inner], exact[inner], atol=1e-3, rtol=0)
        assert (composed - exact).abs()[..., :ring, :].amax() > 0.01  # the ring does differ
        patched = folding.exact_edges(step, features, composed, folding.run_reference)
    assert torch.allclose(patched, exact, atol=1e-3, rtol=0)


# --- self-ensemble -------------------------------------------------------------------------------------


def _manual_ensemble(upscaler: Upscaler, image: np.ndarray) -> np.ndarray:
    """The eight dihedral transforms one by one with numpy, undone, averaged in float, quantized."""
    outputs = []
    for flip in (False, True):
        for k in range(4):
            transformed = np.rot90(image[:, ::-1] if flip else image, k)
            x = torch.from_numpy(np.ascontiguousarray(transformed)).permute(2, 0, 1)[None].float()
            out = upscaler.network_forward(x)[0].permute(1, 2, 0).numpy()
            out = np.rot90(out, -k)
            outputs.append(out[:, ::-1] if flip else out)
    return np.clip(np.round(np.mean(outputs, axis=0)), 0, 255)


@pytest.mark.parametrize("shape", [(20, 20), (18, 26)])  # square: one batch of 8; else two of 4
def test_ensemble_is_the_average_of_the_eight_transforms(shape: tuple[int, int]) -> None:
    model = _seeded("edsr-baseline", scale=2, blocks=2)
    image = _random_image(*shape)
    upscaler = Upscaler(model, 2, _torch(ensemble=True, tile=0))
    got = upscaler.upscale(image).image.astype(np.float64)
    expected = _manual_ensemble(upscaler, image)
    plain = Upscaler(model, 2, _torch(tile=0)).upscale(image).image
    assert np.abs(got - expected).max() <= 1  # float summation order only
    assert (got != expected).mean() < 1e-3
    assert (got != plain).mean() > 0.3  # the ensemble really changed the result


def test_ensemble_combines_with_tiling_exactly() -> None:
    model = _seeded("edsr-baseline", scale=2, blocks=2)  # receptive field 8
    image = _random_image(30, 30, seed=3)
    whole = Upscaler(model, 2, _torch(ensemble=True, tile=0)).upscale(image).image
    tiled = Upscaler(model, 2, _torch(ensemble=True, tile=12, batch=8)).upscale(image).image
    assert np.array_equal(tiled, whole)


# --- output size and dtype -----------------------------------------------------------------------------


@pytest.mark.parametrize(("outscale", "expected"), [(3.0, (51, 66)), (1.5, (26, 33)), (2.0, (34, 44))])
def test_outscale_gives_the_rounded_size(outscale: float, expected: tuple[int, int]) -> None:
    model = _seeded("edsr-baseline", scale=2, blocks=1)
    out = Upscaler(model, 2, _torch(outscale=outscale)).upscale(_random_image(17, 22)).image
    assert out.shape == (*expected, 3) and out.dtype == np.uint8


def test_uint16_keeps_sixteen_bit_precision() -> None:
    model = _seeded("edsr-baseline", scale=2, blocks=2)
    image = _random_image(16, 20, np.uint16, seed=5)
    out = Upscaler(model, 2, _torch()).upscale(image).image
    assert out.dtype == np.uint16 and out.shape == (32, 40, 3)
    x = torch.from_numpy(image.astype(np.float64) * 255 / 65535).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        reference = model(x).clamp(0, 255)[0].permute(1, 2, 0).double().numpy() * 65535 / 255
    assert np.abs(out - reference).max() <= 2.0  # 8-bit output would be off by up to 128
    assert (out % 257 != 0).mean() > 0.9


def test_vdsr_y_channel_reassembles_colour_exactly() -> None:
    """A VDSR whose residual is zero must return the MATLAB double bicubic image: Y in, Cb/Cr beside it."""
    model = _seeded("vdsr", layers=4)
    with torch.no_grad():
        model.output.weight.zero_()
    image = _random_image(14, 18, seed=7)
    upscaler = Upscaler(model, 3, _torch())
    bicubic = imresize(image.astype(np.float64) / 255, scale=3) * 255
    assert np.array_equal(upscaler.upscale(image).image, np.clip(np.round(bicubic), 0, 255).astype(np.uint8))
    luma = upscaler.upscale_luma(image)
    expected_luma = YCBCR_OFFSET[0] + bicubic @ YCBCR_MATRIX[0] / 255
    assert luma.shape == (42, 54) and np.allclose(luma, expected_luma, atol=1e-4)


# --- precision -----------------------------------------------------------------------------------------


def _cpu_half_convs_work() -> bool:
    try:
        torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3, dtype=torch.float16), torch.ones(1, 1, 3, 3).half())
    except RuntimeError:
        return False
    return True


@pytest.mark.skipif(not _cpu_half_convs_work(), reason="this torch build has no fp16 convolution on CPU")
def test_half_precision_overflow_falls_back_to_fp32() -> None:
    model = _seeded("edsr-baseline", scale=2, blocks=1)
    with torch.no_grad():
        model.head[0].weight.mul_(2000.0)  # activations beyond fp16's 65504: Inf in half precision
    image = _random_image(12, 12, seed=2)
    half = Upscaler(model, 2, _torch(precision="fp16"))
    out, plan = half.upscale(image)
    full = Upscaler(model, 2, _torch(precision="fp32")).upscale(image).image
    assert plan.fallbacks == 1
    assert np.array_equal(out, full)


def test_precision_and_device_choice() -> None:
    assert choose_dtype("auto", torch.device("cpu")) == torch.float32
    assert choose_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert choose_device("cpu").type == "cpu"
    with pytest.raises(DeviceError):
        choose_dtype("fp8", torch.device("cpu"))
    with pytest.raises(DeviceError):
        choose_device("tpu:0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        choose_device("cuda")


def test_a_scale_the_model_lacks_is_refused() -> None:
    with pytest.raises(ScaleError, match="x2"):
        Upscaler(_seeded("edsr-baseline", scale=2, blocks=1), 4, _torch())


# --- memory --------------------------------------------------------------------------------------------


def test_tile_size_follows_the_memory_budget() -> None:
    upscaler = Upscaler(_seeded("edsr-baseline", scale=4), 4, _torch())
    pad = upscaler.receptive_field
    small = upscaler.choose_tile(3000, 4000, pad, 256 * 2**20)
    large = upscaler.choose_tile(3000, 4000, pad, 1024 * 2**20)
    assert 0 < small < large

    def window(tile: int) -> int:
        return window_size(3000, tile, pad) * window_size(4000, tile, pad)

    def computed(tile: int) -> int:
        return len(windows(3000, 4000, tile, pad)) * window(tile)

    for budget, tile in ((256 * 2**20, small), (1024 * 2**20, large)):
        assert upscaler.bytes_per_window(window(tile)) <= budget
        fitting = [t for t in range(MIN_TILE, 4001) if upscaler.bytes_per_window(window(t)) <= budget]
        assert computed(tile) == min(computed(t) for t in fitting)  # the least overlap that fits
    assert upscaler.choose_tile(64, 64, pad, 1024 * 2**20) == 0  # fits whole


def test_a_budget_for_half_an_image_cuts_it_in_two() -> None:
    """Not square tiles of the largest size (2 x 2 windows here) but the cut that computes the fewest pixels."""
    upscaler = Upscaler(_seeded("edsr-baseline", scale=4), 4, _torch())
    pad = upscaler.receptive_field
    halves = window_size(1200, 1200, pad) * window_size(1600, 1200, pad)  # 1200 x (800 + 2 pad)
    tile = upscaler.choose_tile(1200, 1600, pad, upscaler.bytes_per_window(halves))
    assert len(windows(1200, 1600, tile, pad)) == 2


def test_out_of_memory_backs_off_to_smaller_tiles_with_the_same_result() -> None:
    model = _seeded("edsr-baseline", scale=2, blocks=2)
    image = _random_image(48, 64, seed=4)
    whole = Upscaler(model, 2, _torch(tile=0)).upscale(image).image
    probe = Upscaler(model, 2, _torch())
    budget = probe.bytes_per_window(40 * 40)  # the whole 48x64 image does not fit; a 16+2*8 window does
    upscaler = Upscaler(model, 2, _torch(tile=0, batch=4, memory_budget=budget))
    out, plan = upscaler.upscale(image)
    assert plan.backoffs >= 2 and plan.batch == 1 and 0 < plan.tile < 48
    assert np.array_equal(out, whole)
    with pytest.raises(DeviceError, match="not enough memory"):
        Upscaler(model, 2, _torch(tile=0, memory_budget=1000)).upscale(image)


# --- CUDA (the lead runs these on a GPU machine) -------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precision_is_close_to_fp32(precision: str) -> None:
    model = _seeded("edsr-baseline", scale=2)
    image = _random_image(64, 80, seed=6)
    full = Upscaler(model, 2, UpscaleOptions(device="cuda", precision="fp32")).upscale(image).image.astype(int)
    half = Upscaler(model, 2, UpscaleOptions(device="cuda", precision=precision)).upscale(image).image.astype(int)
    assert np.abs(half - full).max() <= (2 if precision == "fp16" else 6)


@needs_cuda
def test_cuda_auto_precision_is_fp16_and_tiles_match_whole() -> None:
    model = _seeded("edsr-baseline", scale=2, blocks=4)
    upscaler = Upscaler(model, 2, UpscaleOptions(device="cuda", precision="fp32", tile=24))
    assert choose_dtype("auto", upscaler.device) == torch.float16
    image = _random_image(50, 70, seed=8)
    whole = Upscaler(model, 2, UpscaleOptions(device="cuda", precision="fp32", tile=0)).upscale(image).image
    assert np.abs(upscaler.upscale(image).image.astype(int) - whole).max() <= 1


def test_device_precision_and_backend_resolve_in_one_call():
    from srcli.engine.devices import Placement, resolve_placement

    assert resolve_placement("cpu", "auto", "torch")[:3] == Placement(torch.device("cpu"), torch.float32, "torch")[:3]
    assert resolve_placement("cpu", "fp16", "torch").dtype == torch.float16  # the engine may; a user is refused:
    with pytest.raises(DeviceError, match="needs a GPU"):
        resolve_placement("cpu", "fp16", "torch", asked_on_command_line=True)
    record = dataclasses.replace(spec_of(build("edsr-baseline", scale=2)).architecture, half_precision=False)
    with pytest.raises(DeviceError, match="does not support fp16"):
        resolve_placement("cpu", "fp16", "torch", architecture=record)
