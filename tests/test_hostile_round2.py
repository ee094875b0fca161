"""Issue #23, engine/weights/training side: option values, memory before work, a batch that outlives one image,
non-finite training, odd weight files. Each test builds the hostile input itself."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import typing

import pytest
from upscale_helpers import REPO, assert_one_error_line, write_image

from srcli.errors import TrainingError

# --- option values: one line in srcli's words, before any work --------------------------------------------


def _float_options() -> list[tuple[str, str, object]]:
    """(command, parameter, typer option) for every float-typed option of every subcommand."""
    from srcli.cli import app

    found = []
    for info in app.registered_commands:
        hints = typing.get_type_hints(info.callback, include_extras=True)
        for name, parameter in inspect.signature(info.callback).parameters.items():
            hint = hints.get(name)
            annotated = typing.get_origin(hint) is typing.Annotated
            base = typing.get_args(hint)[0] if annotated else hint
            if base in (float, float | None):
                option = typing.get_args(hint)[1] if annotated else parameter.default
                found.append((info.name or info.callback.__name__, name, option))
    return found


def test_every_float_option_is_parsed_as_a_finite_number():
    """The mechanism, not the cases: a float option added later without `finite` fails here."""
    options = _float_options()
    assert {name for _, name, _ in options} >= {"outscale", "lr", "lr_gamma", "clip", "weight_decay", "max_minutes"}
    for command, name, option in options:
        parser = getattr(option, "parser", None)
        assert parser is not None and parser.__qualname__.startswith("finite."), f"{command} --{name}"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_a_non_finite_outscale_is_a_usage_error(cli, tmp_path, checkpoint, value):
    source = write_image(tmp_path / "a.png")
    code, _, err = cli("upscale", source, "-w", checkpoint, "--outscale", value)
    line = assert_one_error_line(code, err)
    assert "--outscale" in line and "Error" not in line
    assert not (tmp_path / "a_x2.png").exists()


def test_an_outscale_below_one_is_still_refused(cli, tmp_path, checkpoint):
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-w", checkpoint, "--outscale", "0.5")
    assert "it must be at least 1" in assert_one_error_line(code, err)


@pytest.mark.parametrize("value", ["inf", "1e400", "infG", "nan"])
def test_a_non_finite_max_pixels_is_refused_in_srclis_words(cli, tmp_path, checkpoint, value):
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-w", checkpoint, "--max-pixels", value)
    line = assert_one_error_line(code, err)
    assert "is not a pixel count" in line and "OverflowError" not in line


@pytest.mark.parametrize("flag", ["--lr", "--lr-gamma", "--clip", "--weight-decay", "--max-minutes"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_training_numbers_are_refused_before_any_work(cli, tmp_path, flag, value):
    code, _, err = cli("train", "--data", tmp_path, "--out", tmp_path / "run", flag, value)
    assert f"'{value}' is not a finite number" in assert_one_error_line(code, err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field", ["lr", "lr_gamma", "weight_decay", "max_minutes", "eps"])
def test_the_training_config_refuses_non_finite_numbers_from_the_api_too(field):
    from srcli.training.recipes import make_config

    with pytest.raises(TrainingError, match="must be a finite number"):
        make_config("edsr-baseline", **{field: float("nan")})


def test_train_out_naming_a_file_is_refused_in_srclis_words(cli, tmp_path):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    code, _, err = cli("train", "--data", tmp_path, "--out", blocker)
    line = assert_one_error_line(code, err)
    assert "cannot write to --out" in line and "is a file, not a folder" in line and "FileExistsError" not in line


def test_eval_save_dir_naming_a_file_is_refused_before_any_download(cli, tmp_path, srcli_home):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    for save_dir in (blocker, blocker / "sub"):
        code, _, err = cli("eval", "set5", "--model", "bicubic", "-s", "2", "--save-dir", save_dir)
        line = assert_one_error_line(code, err)
        assert "cannot write to --save-dir" in line and "NotADirectoryError" not in line
    assert not srcli_home.exists()


# --- memory: the output size is checked before work, and one image running out never stops a batch -------

# Runs a batch of [big, small] in a child whose address space is capped a little above what it already uses,
# so the big image's x60 output (972 MB) cannot be allocated while srcli's own check (free RAM) lets it start.
_CAPPED_BATCH = """
import json, resource, sys
from pathlib import Path
from srcli.batch import Job, run_jobs
from srcli.engine import Upscaler
from srcli.options import UpscaleOptions
from srcli.pipeline import ImagePipeline
from upscale_helpers import blur_edsr
big, small, out = map(Path, sys.argv[1:4])
pipeline = ImagePipeline(Upscaler(blur_edsr(2), 2, UpscaleOptions(device="cpu", backend="torch", outscale=60)))
run_jobs([Job(small, out / "warm.png")], pipeline)  # every lazy import and thread pool started before the cap
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 400 * 2**20, resource.RLIM_INFINITY))
results = run_jobs([Job(big, out / "big.png"), Job(small, out / "small.png")], pipeline)
print(json.dumps([(r.status, r.error) for r in results]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_an_image_that_runs_out_of_memory_fails_alone_and_the_batch_goes_on(tmp_path):
    big = write_image(tmp_path / "big.png", shape=(300, 300, 3))
    small = write_image(tmp_path / "small.png", shape=(8, 8, 3))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
                   "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _CAPPED_BATCH, big, small, out], capture_output=True,
                          text=True, env=environment, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (big_status, big_error), (small_status, _) = json.loads(done.stdout.strip().splitlines()[-1])
    assert big_status == "failed" and big_error.startswith(f"{big}: out of memory (")
    assert "\n" not in big_error
    assert small_status == "written", done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["small.png", "warm.png"]


@pytest.mark.parametrize("outscale", ["1e6", "1000000"])
def test_an_output_bigger_than_memory_is_refused_before_work_with_its_size(cli, tmp_path, checkpoint, outscale):
    source = write_image(tmp_path / "a.png")
    code, _, err = cli("upscale", source, "-w", checkpoint, "--outscale", outscale, "-o", tmp_path / "out.png")
    line = assert_one_error_line(code, err)
    assert line.startswith(f"error: {source}: its x1e+06 output would be 16000000x12000000 pixels (523.87 TiB); ")
    assert "is available" in line and "OpenCV" not in line and "error: error" not in line
    assert not (tmp_path / "out.png").exists()


def test_one_image_too_large_does_not_stop_the_others(cli, tmp_path, checkpoint):
    """The size check is per image: a 600x800 input at --outscale 3000 fails, a 1x1 one beside it is written."""
    huge = write_image(tmp_path / "in" / "huge.png", shape=(600, 800, 3))
    write_image(tmp_path / "in" / "tiny.png", shape=(1, 1, 3))
    code, _, err = cli("upscale", tmp_path / "in", "-w", checkpoint, "--outscale", "3000", "-o", tmp_path / "out")
    assert code == 1
    assert f"error: {huge}: its x3000 output would be 2400000x1800000 pixels" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny_x3000.png"]


def test_a_decoder_error_and_a_write_error_mid_batch_fail_alone(cli, tmp_path, checkpoint):
    """Neighbours: a truncated PNG between two good ones, and a target that turned out to be a folder."""
    folder = tmp_path / "in"
    write_image(folder / "a.png")
    data = write_image(folder / "b.png", shape=(40, 40, 3)).read_bytes()
    (folder / "b.png").write_bytes(data[: len(data) // 2])
    write_image(folder / "c.png")
    write_image(folder / "d.png")
    (tmp_path / "out" / "d_x2.png").mkdir(parents=True)  # --overwrite passes planning; the write then fails
    code, _, err = cli("upscale", folder, "-w", checkpoint, "-o", tmp_path / "out", "--overwrite")
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "b.png" in errors[0] and "d_x2.png" in errors[1], err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == ["a_x2.png", "c_x2.png"]


# --- training: non-finite weights are never saved or exported --------------------------------------------


@pytest.fixture
def hr_images(tmp_path):
    for index in range(2):
        write_image(tmp_path / "hr" / f"{index}.png", seed=index, shape=(64, 64, 3))
    return tmp_path / "hr"


def test_a_step_that_makes_the_weights_infinite_exports_nothing(cli, tmp_path, hr_images):
    """lr 1e36 is finite, but SGD's first update on a sum-of-squares loss overflows float32: the step's loss
    (computed before the update) is finite, the weights it leaves are not. Such a run exported them, exit 0."""
    run = tmp_path / "run"
    code, _, err = cli("train", "--data", hr_images, "--out", run, "--lr", "1e36", "--optimizer", "sgd", "--loss",
                       "mse", "--steps", "1", "--batch", "2", "--patch", "12", "--workers", "0")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1 and "Traceback" not in err, err
    assert "the weights became NaN or infinite at step 1" in errors[0] and "lower --lr" in errors[0]
    assert not (run / "model.pt").exists() and not (run / "latest.pt").exists()


def test_an_lr_beyond_float32_is_refused_before_any_work(cli, tmp_path, hr_images):
    """1e39 is a finite Python float that torch's optimiser could not hold (a RuntimeError about overflow)."""
    code, _, err = cli("train", "--data", hr_images, "--out", tmp_path / "run", "--lr", "1e39")
    assert "--lr must be a finite number (within float32's range)" in assert_one_error_line(code, err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value", [("--batch", "0"), ("--patch", "0"), ("--steps", "0")])
def test_training_sizes_below_one_are_refused(cli, tmp_path, hr_images, flag, value):
    code, _, err = cli("train", "--data", hr_images, "--out", tmp_path / "run", flag, value)
    assert f"{flag} must be at least 1, not 0" in assert_one_error_line(code, err)


# --- weight files: refused from what they declare, in srcli's words --------------------------------------


def _tiny_state(**config) -> dict:
    import torch

    from srcli.models import build

    torch.manual_seed(0)
    return build("edsr", **{"blocks": 1, "features": 8, "scale": 2, **config}).state_dict()


def _refused(cli, tmp_path, state) -> str:
    import torch

    path = tmp_path / "w.pt"
    torch.save(state, path)
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-w", path, "-o", tmp_path / "out.png")
    line = assert_one_error_line(code, err)
    assert "Warning" not in err and not (tmp_path / "out.png").exists()
    return line


def test_complex_weights_are_refused(cli, tmp_path):
    import torch

    line = _refused(cli, tmp_path, {k: v.to(torch.complex64) for k, v in _tiny_state().items()})
    assert "is complex64: network weights are real numbers" in line


def test_bool_weights_are_refused(cli, tmp_path):
    line = _refused(cli, tmp_path, {k: v > 0 for k, v in _tiny_state().items()})
    assert "is bool, where weights are floating point" in line


def test_integer_keys_are_refused_in_srclis_words(cli, tmp_path):
    line = _refused(cli, tmp_path, dict(enumerate(_tiny_state().values())))
    assert "holds the key 0 (int) where tensor names are text" in line and "AttributeError" not in line
    line = _refused(cli, tmp_path, {"state_dict": {("body", 0): next(iter(_tiny_state().values()))}})
    assert "holds the key ('body', 0) (tuple)" in line


def test_a_list_of_tensors_is_refused(cli, tmp_path):
    assert "holds a list, not a state dict" in _refused(cli, tmp_path, list(_tiny_state().values()))


def test_stride_zero_views_declaring_huge_convs_are_refused_before_allocating(cli, tmp_path):
    """2 KB on disk declaring 3000-feature convs (2.1 GiB): torch's allocator failed with 4.6 GB RSS."""
    import torch

    hostile = {}
    for key, value in _tiny_state().items():
        shape = [3000 if s == 8 else 12000 if s == 32 else s for s in value.shape]
        hostile[key] = torch.zeros(1).expand(*shape)
    line = _refused(cli, tmp_path, hostile)
    assert "its tensors declare 2,163.6 MiB of weights from 0.0 MiB of data (stride-0 or shared views)" in line


def test_sixty_thousand_shared_block_keys_are_refused_before_building(cli, tmp_path):
    """A 3 MB file whose 60,000 block keys view one storage: the 30,000-block network was built (333 s, 1.24 GB)
    before its missing keys were noticed."""
    import torch

    state = {k: v for k, v in _tiny_state(features=64).items() if not k.startswith("body.")}
    shared = torch.zeros(64, 64, 3, 3)
    for block in range(30000):
        state[f"body.{block}.body.0.weight"] = state[f"body.{block}.body.2.weight"] = shared
    line = _refused(cli, tmp_path, state)
    assert "its tensors declare 8,438.1 MiB of weights from 0.7 MiB" in line


def test_keys_and_shapes_are_checked_on_a_skeleton_before_the_network_is_built(tmp_path, monkeypatch):
    """Distinct tensors, so the storage check passes: the key check runs on the meta device, and the real
    network is never built for a file that does not fit it."""
    import torch

    from srcli.errors import CheckpointError
    from srcli.models.spec import ModelSpec
    from srcli.weights import load_checkpoint

    state = {k: v for k, v in _tiny_state().items() if not k.endswith("bias")}
    torch.save(state, tmp_path / "w.pt")
    devices = []
    build = ModelSpec.build
    monkeypatch.setattr(ModelSpec, "build", lambda self: devices.append(torch.empty(0).device.type) or build(self))
    with pytest.raises(CheckpointError, match=r"missing \['head.0.bias'"):
        load_checkpoint(tmp_path / "w.pt")
    assert devices == ["meta"]


def test_float64_weights_are_accepted_and_converted(tmp_path):
    """Neighbour: float64 is a real-valued dtype; the network runs fp32 with the same values rounded."""
    import torch

    from srcli.weights import load_checkpoint

    state = _tiny_state()
    torch.save({k: v.double() for k, v in state.items()}, tmp_path / "w.pt")
    model, _ = load_checkpoint(tmp_path / "w.pt")
    loaded = model.state_dict()
    assert all(loaded[k].dtype == torch.float32 and torch.equal(loaded[k], v) for k, v in state.items())


def test_non_finite_weights_are_still_found_by_name(tmp_path):
    import torch

    from srcli.errors import CheckpointError
    from srcli.weights import load_checkpoint
    from srcli.weights.checkpoints import non_finite_tensor

    state = _tiny_state()
    assert non_finite_tensor(state) is None
    assert non_finite_tensor({"huge": torch.full((4,), 3e38)}) is None  # a sum that overflows is not a NaN
    state["body.0.body.2.weight"][0, 0, 0, 0] = float("nan")
    assert non_finite_tensor(state) == "body.0.body.2.weight"
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"tensor body\.0\.body\.2\.weight holds NaN or infinite values"):
        load_checkpoint(tmp_path / "w.pt")


# --- neighbours that already held (kept so they keep holding) ----------------------------------------------


@pytest.mark.parametrize("flag", ["--tile-pad", "--quality", "--tile", "--batch"])
def test_integer_options_refuse_non_finite_text(cli, tmp_path, checkpoint, flag):
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-w", checkpoint, flag, "inf")
    assert "unable to parse string as an integer" in assert_one_error_line(code, err)


@pytest.mark.parametrize("outscale", [float("inf"), float("nan"), 0.0])
def test_the_engine_refuses_a_non_finite_outscale_from_the_api(outscale):
    from upscale_helpers import blur_edsr

    from srcli.engine import Upscaler
    from srcli.errors import ScaleError
    from srcli.options import UpscaleOptions

    with pytest.raises(ScaleError, match="outscale must be a positive finite number"):
        Upscaler(blur_edsr(2), 2, UpscaleOptions(device="cpu", outscale=outscale))


def test_a_training_checkpoint_with_an_optimisers_integer_keys_still_loads(tmp_path):
    """The integer-key check covers the containers a network's tensors come in, not an optimiser's state."""
    import torch

    from srcli.weights import read_state_dict

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    torch.save({"model": _tiny_state(), "optimizer": optimizer.state_dict(), "step": 1}, tmp_path / "latest.pt")
    assert set(read_state_dict(tmp_path / "latest.pt")) == {"model", "optimizer", "step"}
