"""Foreign architectures through spandrel (the `srcli[zoo]` extra): real spandrel classes with seeded random
weights, saved to files and loaded through srcli like a user's model zoo download."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from upscale_helpers import REPO, assert_one_error_line, run_cli, srcli_command, tiny_checkpoint, write_image

from srcli import zoo
from srcli.engine import UpscaleOptions, Upscaler
from srcli.errors import DeviceError
from srcli.imageio import read_image
from srcli.models import build
from srcli.weights import load_checkpoint

pytestmark = pytest.mark.skipif(not zoo.available(), reason='spandrel is not installed (pip install "srcli[zoo]")')


def _architectures() -> dict[str, torch.nn.Module]:
    """Small configurations of four architectures users download most (built from spandrel's own classes)."""
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    with warnings.catch_warnings():  # SwinIR's own meshgrid notice, as the test builds it with spandrel directly
        warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
        return {
            "esrgan_x4": ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=4),
            "compact_x2": Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=4, upscale=2),
            "span_x2": SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=2),
            "swinir_x2": SwinIR(img_size=32, window_size=8, embed_dim=24, depths=[2], num_heads=[2], mlp_ratio=2,
                                upscale=2, upsampler="pixelshuffle"),
        }


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory) -> dict[str, Path]:
    """Each model saved as a .pth (plain state dict) and a .safetensors file."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("zoo")
    files = {}
    for name, network in _architectures().items():
        state = {k: v.contiguous() for k, v in network.state_dict().items()}
        torch.save(state, folder / f"{name}.pth")
        save_file(state, str(folder / f"{name}.safetensors"))
        files[name] = folder / f"{name}.pth"
    return files


def _spandrel_reference(path: Path, image: np.ndarray) -> np.ndarray:
    """spandrel's own whole-image call on the same file: the result srcli must match within one level."""
    with warnings.catch_warnings():  # spandrel used directly, without srcli's scoped filter
        warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
        descriptor = zoo.spandrel().ModelLoader().load_from_file(str(path)).eval()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        y = descriptor(x)
    return np.rint(y[0].permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)


@pytest.mark.parametrize("name", ["esrgan_x4", "compact_x2", "span_x2", "swinir_x2"])
def test_cli_output_matches_spandrel_within_one_level(name, zoo_files, tmp_path, capsys, monkeypatch) -> None:
    source = write_image(tmp_path / "photo.png", seed=1, shape=(30, 38, 3))
    target = tmp_path / "out.png"
    code, _, err = run_cli(["upscale", str(source), "--weights", str(zoo_files[name]), "-o", str(target),
                            "--border", "zero"], capsys, monkeypatch)  # spandrel's own call pads with zeros
    assert code == 0, err
    ours = read_image(target)
    reference = _spandrel_reference(zoo_files[name], read_image(source))
    assert ours.shape == reference.shape
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_an_image_under_the_networks_minimum_size_is_extended_like_spandrel_does(zoo_files) -> None:
    """SwinIR takes at least 16 px: a 9x12 image is extended at the bottom and right, run, and cropped back."""
    model, spec = load_checkpoint(zoo_files["swinir_x2"])
    assert spec.architecture.size.minimum == 16
    image = np.random.default_rng(6).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    ours = Upscaler(model, 2, UpscaleOptions(device="cpu"), spec=spec).upscale(image).image
    reference = _spandrel_reference(zoo_files["swinir_x2"], image)
    assert ours.shape == reference.shape == (18, 24, 3)
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_a_zoo_model_loads_and_runs_without_the_meshgrid_notice_and_leaves_the_filters_alone(zoo_files) -> None:
    """SwinIR calls torch.meshgrid without `indexing`; srcli hides that notice only around its own calls."""
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, spec = load_checkpoint(zoo_files["swinir_x2"])
        image = np.random.default_rng(7).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Upscaler(model, 2, UpscaleOptions(device="cpu"), spec=spec).upscale(image)
    assert [str(w.message) for w in caught if "meshgrid" in str(w.message)] == []
    assert warnings.filters == before


@pytest.mark.parametrize("name", ["esrgan_x4", "compact_x2", "span_x2"])
def test_convolutional_zoo_models_tile_exactly(name, zoo_files) -> None:
    model, spec = load_checkpoint(zoo_files[name])
    scale = spec.scales[0]
    image = np.random.default_rng(2).integers(0, 256, (44, 50, 3), dtype=np.uint8)
    whole = Upscaler(model, scale, UpscaleOptions(device="cpu", tile=0), spec=spec)
    tiled, plan = Upscaler(model, scale, UpscaleOptions(device="cpu", tile=16), spec=spec).upscale(image)
    assert whole.exact and plan.tiles == 12 and plan.to_dict()["tiling"] == "exact"
    assert plan.pad == whole.receptive_field > 0
    assert np.array_equal(tiled, whole.upscale(image).image)


def test_window_attention_is_tiled_approximately_and_says_so(zoo_files, tmp_path, capsys, monkeypatch) -> None:
    source = write_image(tmp_path / "photo.png", seed=3, shape=(40, 44, 3))
    code, out, err = run_cli(["upscale", str(source), "--weights", str(zoo_files["swinir_x2"]), "--tile", "16", "-v",
                              "--json", "--border", "zero"], capsys, monkeypatch)
    assert code == 0, err
    assert "approximate tiling" in err
    plan = json.loads(out)["images"][0]["plan"]
    assert plan["tiling"] == "approximate" and plan["tiles"] == 9
    assert plan["measured_pad"] == plan["tile_pad"] and plan["measured_levels"] <= 2  # measured at load
    assert "pad measured: probe tiles within" in err
    tiled = read_image(tmp_path / "photo_x2.png").astype(int)
    whole = _spandrel_reference(zoo_files["swinir_x2"], read_image(source)).astype(int)
    assert np.abs(tiled - whole).mean() < 2.0  # cross-faded tiles stay close to the whole-image result


def test_safetensors_load_for_zoo_and_for_srcli_architectures(zoo_files, tmp_path) -> None:
    from safetensors.torch import save_file

    pth, _ = load_checkpoint(zoo_files["compact_x2"])
    safe, spec = load_checkpoint(zoo_files["compact_x2"].with_suffix(".safetensors"))
    assert spec.arch == "Compact" and spec.scales == (2,)
    assert all(torch.equal(a, b) for a, b in zip(pth.state_dict().values(), safe.state_dict().values(), strict=True))
    torch.manual_seed(0)
    edsr = build("edsr-baseline", scale=3, blocks=2)
    save_file(edsr.state_dict(), str(tmp_path / "edsr.safetensors"))
    _, own = load_checkpoint(tmp_path / "edsr.safetensors")
    assert (own.arch, own.scales, own.architecture.source) == ("edsr", (3,), "srcli")


def test_half_precision_only_where_the_descriptor_allows(zoo_files) -> None:
    model, spec = load_checkpoint(zoo_files["swinir_x2"])
    assert not spec.architecture.half_precision
    with pytest.raises(DeviceError, match="does not support fp16"):
        Upscaler(model, 2, UpscaleOptions(device="cpu", precision="fp16"), spec=spec)
    esrgan, esrgan_spec = load_checkpoint(zoo_files["esrgan_x4"])
    assert Upscaler(esrgan, 4, UpscaleOptions(device="cpu", precision="fp16"), spec=esrgan_spec).dtype == torch.float16


def test_every_upscale_feature_works_with_a_zoo_model(zoo_files, tmp_path, capsys, monkeypatch) -> None:
    """A folder with a 16-bit RGBA image, self-ensemble and outscale: layout, dtype and size survive."""
    folder = tmp_path / "in"
    write_image(folder / "logo.png", seed=4, shape=(20, 24, 4), dtype=np.uint16)
    write_image(folder / "grey.png", seed=5, shape=(18, 16))
    code, out, err = run_cli(["upscale", str(folder), "--weights", str(zoo_files["compact_x2"]), "--ensemble",
                              "--outscale", "3", "--json"], capsys, monkeypatch)
    assert code == 0, err
    assert json.loads(out)["written"] == 2
    logo = read_image(tmp_path / "in_x3" / "logo_x3_ensemble.png")
    grey = read_image(tmp_path / "in_x3" / "grey_x3_ensemble.png")
    assert (logo.shape, logo.dtype, grey.shape) == ((60, 72, 4), np.uint16, (54, 48))


def test_models_inspect_describes_a_zoo_file(zoo_files, capsys, monkeypatch) -> None:
    code, out, err = run_cli(["models", "--inspect", str(zoo_files["esrgan_x4"]), "--json"], capsys, monkeypatch)
    assert code == 0, err
    record = json.loads(out)
    expected = sum(p.numel() for p in _architectures()["esrgan_x4"].parameters())
    assert (record["architecture"], record["scales"], record["parameters"]) == ("ESRGAN", [4], expected)
    assert record["tiling"] == "exact" and record["read_by"].startswith("spandrel")


def test_eval_scores_a_zoo_model_under_the_paper_protocol(zoo_files, benchmark_dir, capsys, monkeypatch) -> None:
    code, out, err = run_cli(["eval", "set5", "--weights", str(zoo_files["compact_x2"]), "--scale", "2",
                              "--data-dir", str(benchmark_dir), "--json"], capsys, monkeypatch)
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    assert (result["images"], result["scale"], result["reference"]) == (5, 2, None)
    assert 5.0 < result["psnr"] < 40.0


def test_without_spandrel_a_foreign_file_names_the_extra(zoo_files, tmp_path) -> None:
    """A real child process in which `import spandrel` fails, as on an install without the extra."""
    blocker = tmp_path / "blocked" / "spandrel"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('spandrel is not installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(REPO)])}
    source = write_image(tmp_path / "photo.png")
    result = subprocess.run(srcli_command("upscale", source, "--weights", zoo_files["esrgan_x4"]), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    line = assert_one_error_line(result.returncode, result.stderr)
    assert 'pip install "srcli[zoo]"' in line and "unknown architecture" in line
    assert not (tmp_path / "photo_x4.png").exists()
    own = tiny_checkpoint(tmp_path / "tiny_x2.pt")  # srcli's own architectures need no spandrel
    result = subprocess.run(srcli_command("upscale", source, "--weights", own), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert read_image(tmp_path / "photo_x2.png").shape == (24, 32, 3)


def test_spandrel_imports_beside_a_broken_torchvision(zoo_files, tmp_path) -> None:
    """PyPI's CUDA torchvision beside the CPU torch fails at import; srcli still loads zoo models, and a later
    `import torchvision` still fails as it would have (the stand-in lives only during spandrel's import)."""
    broken = tmp_path / "broken" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    code = (
        "import sys\n"
        "from srcli.weights import load_checkpoint\n"
        f"model, spec = load_checkpoint({str(zoo_files['compact_x2'])!r})\n"
        "print(spec.arch, spec.scales)\n"
        "try:\n"
        "    import torchvision\n"
        "except RuntimeError as error:\n"
        "    print('torchvision still fails:', error)\n"
        "from spandrel.architectures.LaMa.__arch import LaMa as lama\n"
        "try:\n"
        "    lama.rotate(None, 0)\n"
        "except RuntimeError as error:\n"
        "    print('LaMa:', str(error).split(',')[0])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken.parent), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Compact (2,)",
        "torchvision still fails: operator torchvision::nms does not exist",
        "LaMa: this architecture needs torchvision",
    ]
