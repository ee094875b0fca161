"""batch: collecting inputs, naming outputs, refusing clashes, and sharding across real processes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import pytest
from loopback import free_port
from upscale_helpers import REPO, srcli_command, tiny_checkpoint, write_image

from srcli.batch import Found, Job, Shard, collect_inputs, plan_jobs, scale_label
from srcli.errors import OutputError

_image = write_image


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """photos/{a.png, b.jpg, notes.txt, .hidden.png, sub/c.webp, sub/deeper/d.bmp}"""
    root = tmp_path / "photos"
    for index, name in enumerate(["a.png", "b.jpg", ".hidden.png", "sub/c.webp", "sub/deeper/d.bmp"]):
        _image(root / name, index)
    (root / "notes.txt").write_text("not an image")
    return root


def _names(found: list[Found], root: Path) -> list[str]:
    return [str(item.path.relative_to(root)) for item in found]


def test_folder_takes_its_images_only(tree):
    found, problems = collect_inputs([str(tree)])
    assert _names(found, tree) == ["a.png", "b.jpg"] and problems == []


def test_recursive_folder_takes_sub_folders(tree):
    found, _ = collect_inputs([str(tree)], recursive=True)
    assert _names(found, tree) == ["a.png", "b.jpg", "sub/c.webp", "sub/deeper/d.bmp"]


def test_globs_files_and_duplicates(tree):
    found, problems = collect_inputs([str(tree / "*.png"), str(tree / "b.jpg"), str(tree / "a.png")])
    assert _names(found, tree) == ["a.png", "b.jpg"] and problems == []
    found, _ = collect_inputs([str(tree / "**" / "*.webp")], recursive=True)
    assert _names(found, tree) == ["sub/c.webp"]


def test_names_that_match_nothing_become_failures_not_exceptions(tree):
    (tree / "empty").mkdir()
    (tree / "notes.txt").write_text("not an image")
    found, problems = collect_inputs([str(tree / "*.tif"), str(tree / "empty"), str(tree / "x.png"),
                                      str(tree / "notes.txt")])
    assert _names(found, tree) == ["notes.txt"]  # a literal file is kept: reading it says what is wrong
    assert [p.status for p in problems] == ["failed", "failed", "failed"]
    assert "matches no image" in problems[0].error and "folder holds no image" in problems[1].error
    assert problems[2].error == f"{tree / 'x.png'}: no such file"


def test_empty_folder_hints_at_recursive(tmp_path):
    (tmp_path / "only_sub" / "sub").mkdir(parents=True)
    _image(tmp_path / "only_sub" / "sub" / "a.png")
    _, problems = collect_inputs([str(tmp_path / "only_sub")])
    assert "--recursive" in problems[0].error


def test_scale_label():
    assert [scale_label(s) for s in (2, 4.0, 2.5, 3.25)] == ["2", "4", "2.5", "3.25"]


def _targets(jobs: list[Job]) -> list[str]:
    return [str(job.target) for job in jobs]


def test_default_names_beside_files_and_in_a_sibling_folder_for_folders(tree):
    single, _ = collect_inputs([str(tree / "a.png")])
    assert _targets(plan_jobs(single, None, "2")) == [str(tree / "a_x2.png")]
    folder, _ = collect_inputs([str(tree)], recursive=True)
    assert _targets(plan_jobs(folder, None, "4", "png")) == [
        f"{tree}_x4/a_x4.png",
        f"{tree}_x4/b_x4.png",
        f"{tree}_x4/sub/c_x4.png",
        f"{tree}_x4/sub/deeper/d_x4.png",
    ]


def test_output_folder_mirrors_sub_folders_and_output_file_for_one_input(tree, tmp_path):
    folder, _ = collect_inputs([str(tree)], recursive=True)
    out = tmp_path / "out"
    assert _targets(plan_jobs(folder, out, "2"))[2:] == [f"{out}/sub/c_x2.webp", f"{out}/sub/deeper/d_x2.bmp"]
    single, _ = collect_inputs([str(tree / "b.jpg")])
    assert _targets(plan_jobs(single, tmp_path / "big.png", "2")) == [str(tmp_path / "big.png")]
    with pytest.raises(OutputError, match="names one file but there are 4 inputs"):
        plan_jobs(folder, tmp_path / "big.png", "2")


def test_two_inputs_onto_one_output_are_refused(tmp_path):
    found, _ = collect_inputs([str(_image(tmp_path / "a.png")), str(_image(tmp_path / "a.jpg"))])
    with pytest.raises(OutputError, match="would both be written to"):
        plan_jobs(found, None, "2", "png")


def test_an_input_is_never_overwritten_even_with_overwrite(tmp_path):
    source = _image(tmp_path / "a.png")
    found, _ = collect_inputs([str(source)])
    with pytest.raises(OutputError, match="is an input"):
        plan_jobs(found, source, "2", existing="overwrite")


def test_existing_outputs_refused_skipped_or_overwritten(tmp_path):
    found, _ = collect_inputs([str(_image(tmp_path / "a.png")), str(_image(tmp_path / "b.png"))])
    (tmp_path / "a_x2.png").write_bytes(b"old")
    with pytest.raises(OutputError, match=r"a_x2\.png already exists: pass --skip-existing or --overwrite"):
        plan_jobs(found, None, "2")
    assert [job.skip for job in plan_jobs(found, None, "2", existing="skip")] == [True, False]
    assert [job.skip for job in plan_jobs(found, None, "2", existing="overwrite")] == [False, False]


def test_output_under_a_regular_file_is_refused_before_work(tmp_path):
    found, _ = collect_inputs([str(_image(tmp_path / "a.png"))])
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(OutputError, match="blocker is a file, not a folder"):
        plan_jobs(found, tmp_path / "blocker" / "out", "2")


def test_unknown_format_refused(tmp_path):
    found, _ = collect_inputs([str(_image(tmp_path / "a.png"))])
    with pytest.raises(OutputError, match="--format gif is not supported"):
        plan_jobs(found, None, "2", "gif")


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_shards_are_disjoint_and_complete(world):
    jobs = [Job(Path(f"{i}.png"), Path(f"{i}_x2.png")) for i in range(10)]
    slices = [Shard(rank, world).take(jobs) for rank in range(world)]
    taken = [job for part in slices for job in part]
    assert sorted(taken, key=lambda job: str(job.source)) == sorted(jobs, key=lambda job: str(job.source))
    assert len(taken) == len(jobs)


@pytest.mark.slow
def test_two_processes_share_a_folder(tmp_path):
    """Two real ranks (torchrun's environment, gloo on CPU): each output written once, all written."""
    for index in range(5):
        _image(tmp_path / "in" / f"{index}.png", index)
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    port = str(free_port())
    command = srcli_command(
        "upscale", tmp_path / "in", "-o", tmp_path / "out", "--weights", checkpoint, "--device", "cpu", "--json"
    )
    processes = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        processes.append(
            subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert outputs[1][0] == ""  # only rank 0 reports on stdout
    report = json.loads(outputs[0][0])
    assert report["processes"] == 2 and report["written"] == 5 and report["failed"] == 0
    by_rank = {rank: sorted(Path(r["target"]).name for r in report["images"] if r["rank"] == rank) for rank in (0, 1)}
    assert by_rank == {0: ["0_x2.png", "2_x2.png", "4_x2.png"], 1: ["1_x2.png", "3_x2.png"]}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{i}_x2.png" for i in range(5)]
    assert all(cv2.imread(str(p)).shape == (24, 32, 3) for p in (tmp_path / "out").iterdir())
