"""Issue #10, CLI and model side: markup in names, two processes on one output, damaged weights, wording."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import threading

import numpy as np
import pytest
import torch
from loopback import saved
from upscale_helpers import REPO, assert_one_error_line, srcli_command, write_image

from srcli import download, weights
from srcli.errors import CheckpointError, DownloadError
from srcli.models import build

# --- 4. file names are text, never rich markup -------------------------------------------------------------


def test_brackets_in_a_file_name_are_printed_as_they_are(cli, tmp_path, checkpoint):
    source = write_image(tmp_path / "holiday [draft].png")
    code, _, err = cli("upscale", source, "-w", checkpoint)
    assert code == 0, err
    assert f"wrote {tmp_path / 'holiday [draft]_x2.png'} (16x12 -> 32x24" in err
    (tmp_path / "notes [v2].png").write_text("not an image\n")
    code, _, err = cli("upscale", tmp_path / "notes [v2].png", "-w", checkpoint)
    assert "notes [v2].png: not a readable image" in assert_one_error_line(code, err)


def test_a_closing_tag_in_a_path_cannot_break_the_batch(cli, tmp_path, checkpoint):
    """`a[/i]b.png` (folder `a[`, file `i]b.png`) crashed rich with a MarkupError and lost the summary."""
    good = write_image(tmp_path / "good.png")
    (tmp_path / "a[").mkdir()
    (tmp_path / "a[" / "i]b.png").write_text("not an image\n")
    code, _, err = cli("upscale", good, tmp_path / "a[/i]b.png", "-o", tmp_path / "out", "-w", checkpoint)
    assert code == 1
    assert "Traceback" not in err and "MarkupError" not in err
    assert f"error: {tmp_path / 'a[/i]b.png'}: not a readable image" in err
    assert "upscale summary" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_x2.png"]


def test_usage_errors_quoting_markup_are_printed_whole(cli, tmp_path, checkpoint):
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-w", checkpoint, "--device", "[bold]x[/bold]")
    assert "[bold]x[/bold]" in assert_one_error_line(code, err)


# --- 5. never overwrite silently, between processes too ---------------------------------------------------

# Runs `srcli ARGS` with one hook: after upscaling (so after planning found the target free) and before
# writing, say "ready" on one pipe and wait for "go" on another. Two such processes on one output are
# then both past planning before either writes: a deterministic race, no sleeps.
_RACE = """
import os, sys
from srcli import pipeline
ready, go = int(os.environ["RACE_READY"]), int(os.environ["RACE_GO"])
upscale = pipeline.ImagePipeline.upscale
def held(self, image, progress=None):
    out = upscale(self, image, progress)
    os.write(ready, b"r")
    os.read(go, 1)
    return out
pipeline.ImagePipeline.upscale = held
sys.argv = ["srcli", *sys.argv[1:]]
from srcli.cli import main
main()
"""

_WRITER = """
import os, sys
from srcli.errors import OutputExistsError
from srcli.files import atomic_path
ready, go = int(os.environ["RACE_READY"]), int(os.environ["RACE_GO"])
try:
    with atomic_path(__import__("pathlib").Path(sys.argv[1]), overwrite=False) as temp:
        temp.write_bytes(sys.argv[2].encode())
        os.write(ready, b"r")
        os.read(go, 1)
    print("written")
except OutputExistsError as error:
    print(error)
"""


def _race(script: str, *arguments: object) -> list[subprocess.CompletedProcess]:
    """Start two processes running `script`, let both reach the hook, then release both; their results."""
    processes, go_ends = [], []
    for index in range(2):
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        env = {**os.environ, "RACE_READY": str(ready_w), "RACE_GO": str(go_r), "COLUMNS": "200"}
        extra = [f"writer {index}"] if script is _WRITER else []
        processes.append((subprocess.Popen([*srcli_command()[:1], "-c", script, *map(str, arguments), *extra],
                                           cwd=REPO, env=env, pass_fds=(ready_w, go_r), text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE), ready_r))
        os.close(ready_w)
        os.close(go_r)
        go_ends.append(go_w)
    try:
        for process, ready_r in processes:  # both are now past planning / inside the writer
            assert os.read(ready_r, 1) == b"r", process.communicate()
        for go_w in go_ends:
            os.write(go_w, b"g")
        results = []
        for process, _ in processes:
            out, err = process.communicate(timeout=300)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
        return results
    finally:
        for (process, ready_r), go_w in zip(processes, go_ends, strict=True):
            os.close(ready_r)
            os.close(go_w)
            if process.poll() is None:
                process.kill()
                process.wait()


def test_the_writer_lets_exactly_one_of_two_processes_create_a_file(tmp_path):
    target = tmp_path / "out.bin"
    outcomes = sorted(result.stdout.strip() for result in _race(_WRITER, target))
    assert outcomes[1] == "written"
    assert outcomes[0].endswith("out.bin already exists (another process wrote it meanwhile): pass --overwrite "
                                "to replace it")
    assert target.read_bytes() in (b"writer 0", b"writer 1")
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_two_upscale_runs_on_one_output_exactly_one_succeeds(tmp_path, checkpoint):
    source = write_image(tmp_path / "in.png")
    results = _race(_RACE, "upscale", source, "-o", tmp_path / "out.png", "-w", checkpoint)
    codes = sorted(result.returncode for result in results)
    assert codes == [0, 1], [result.stderr for result in results]
    loser = next(result for result in results if result.returncode == 1)
    line = assert_one_error_line(loser.returncode, loser.stderr)
    assert "out.png already exists (another process wrote it meanwhile): pass --overwrite" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png", "tiny_x2.pt"]


@pytest.mark.parametrize("flag, code, replaced", [(None, 1, False), ("--skip-existing", 0, False),
                                                   ("--overwrite", 0, True)])
def test_an_output_that_appears_after_planning_follows_the_existing_rule(cli, tmp_path, checkpoint, monkeypatch,
                                                                          flag, code, replaced):
    from srcli import pipeline

    target = tmp_path / "out.png"
    upscale = pipeline.ImagePipeline.upscale

    def another_process_writes_first(self, image, progress=None):
        target.write_bytes(b"theirs")
        return upscale(self, image, progress)

    monkeypatch.setattr(pipeline.ImagePipeline, "upscale", another_process_writes_first)
    argv = ["upscale", write_image(tmp_path / "in.png"), "-o", target, "-w", checkpoint, *([flag] if flag else [])]
    result, _, err = cli(*argv)
    assert result == code, err
    assert (target.read_bytes() != b"theirs") is replaced


# --- 6. non-finite weights ---------------------------------------------------------------------------------


def test_nan_weights_are_refused_at_load_naming_the_file(cli, tmp_path):
    """A checkpoint full of NaN wrote an all-black image and exited 0."""
    model = build("edsr", blocks=1, features=8, scale=2)
    torch.save({key: torch.full_like(value, float("nan")) for key, value in model.state_dict().items()},
               tmp_path / "nan.pt")
    source = write_image(tmp_path / "a.png")
    code, _, err = cli("upscale", source, "-o", tmp_path / "out.png", "-w", tmp_path / "nan.pt")
    line = assert_one_error_line(code, err)
    assert f"{tmp_path / 'nan.pt'}: tensor " in line and "holds NaN or infinite values" in line
    assert not (tmp_path / "out.png").exists()


# --- 7. a cached official file is hashed before use ---------------------------------------------------------


def test_a_cached_file_of_the_right_size_but_other_bytes_is_refused(served_entry, baseline_x2, file_server, cli,
                                                                     tmp_path):
    torch.manual_seed(1)
    impostor = saved(build("edsr-baseline", scale=2).state_dict())  # same keys and shapes: same size
    assert len(impostor) == served_entry.bytes and impostor != baseline_x2[1]
    cached = served_entry.local_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(impostor)
    assert served_entry.status() == "cached"  # the size alone looks right
    code, _, err = cli("upscale", write_image(tmp_path / "a.png"), "-o", tmp_path / "out.png", "-m", served_entry.name)
    line = assert_one_error_line(code, err)
    assert f"{cached}: the cached {served_entry.name} fails its sha256 check" in line
    assert not (tmp_path / "out.png").exists()
    code, _, err = cli("download", served_entry.name, "--mirror", file_server.url("mirror"))  # the repair it names
    assert code == 0, err
    assert cached.read_bytes() == baseline_x2[1]


# --- 8. downloads stop at their expected size ---------------------------------------------------------------


def test_a_download_announced_too_big_is_refused_at_once(file_server, tmp_path):
    url = file_server.add("big.bin", bytes(200_000))
    refusal = r"announces 200000 bytes, more than the expected 100000; refused before downloading"
    with pytest.raises(DownloadError, match=refusal) as caught:
        download.fetch(url, tmp_path / "big.bin", size=100_000)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_server_streaming_past_the_size_is_cut_off_and_discarded(file_server, tmp_path):
    """No Content-Length and 64 MB of body for a 100 kB file: the download stops at the first extra byte."""
    url = file_server.add("endless.bin", os.urandom(1 << 16), no_length=True, repeat=1024)
    with pytest.raises(DownloadError, match=r"sent more than the expected 100000 bytes; the download was discarded"):
        download.fetch(url, tmp_path / "endless.bin", size=100_000, retries=0)
    assert list(tmp_path.iterdir()) == []


# --- 10. wording ------------------------------------------------------------------------------------------


def test_random_bytes_are_not_a_checkpoint_and_only_real_pickled_objects_could_run_code(tmp_path):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as caught:
        weights.read_state_dict(tmp_path / "random.pt")
    assert str(caught.value) == f"{tmp_path / 'random.pt'}: not a PyTorch checkpoint"
    torch.save({"weight": torch.ones(1), "args": argparse.Namespace(lr=1e-4)}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match=r"objects\.pt: it holds Python objects beyond tensors, and loading "
                                              r"them could run code"):
        weights.read_state_dict(tmp_path / "objects.pt")


def test_ctrl_c_during_download_says_the_partial_file_is_kept(file_server, tmp_path):
    """The first request drops after 200 kB; the resume request proves the .part holds what arrived, and the
    server answers it with SIGINT to the downloader."""
    entry = weights.OFFICIAL[0]
    started = threading.Event()
    holder: dict[str, subprocess.Popen] = {}

    def interrupt() -> None:
        started.wait(60)
        holder["process"].send_signal(signal.SIGINT)

    file_server.add(f"mirror/{entry.filename}", bytes(entry.bytes), drop_after=200_000, on_resume=interrupt)
    env = {**os.environ, "SRCLI_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("SRCLI_MIRROR", None)
    holder["process"] = process = subprocess.Popen(
        srcli_command("download", entry.name, "--mirror", file_server.url("mirror")), cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background runner may ignore it
    )
    started.set()
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == [f"interrupted: {entry.name} is partly downloaded; the partial file is kept "
                                        "and running the same command again resumes it"]
    resumed_from = int(file_server.requests[-1].range.removeprefix("bytes=").rstrip("-"))
    part = tmp_path / "home" / "weights" / f"{entry.filename}.part"
    assert part.stat().st_size == resumed_from > 0
