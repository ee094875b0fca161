"""The one atomic writer and the one sha256 helper (srcli.files)."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from srcli.errors import OutputError, OutputExistsError
from srcli.files import atomic_path, sha256_file, write_atomic


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_success_renames_into_place_with_the_umask_mode(tmp_path):
    target = tmp_path / "state.pt"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp != target and not target.exists()
        torch.save({"w": torch.ones(2)}, temp)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


@pytest.mark.parametrize("failure", [RuntimeError("encoder broke"), KeyboardInterrupt()])
def test_a_failure_or_ctrl_c_removes_the_temp_and_keeps_the_old_file(tmp_path, failure):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(failure)), atomic_path(target) as temp:
        temp.write_bytes(b"half a new fi")
        raise failure
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert target.read_bytes() == b"old"


def test_overwrite_switch(tmp_path):
    target = tmp_path / "out.bin"
    write_atomic(target, b"first", overwrite=False)
    with pytest.raises(OutputExistsError, match=r"out\.bin already exists .*--overwrite"):
        write_atomic(target, b"second", overwrite=False)
    assert target.read_bytes() == b"first"
    write_atomic(target, b"third")
    assert target.read_bytes() == b"third"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_an_unwritable_folder_is_one_output_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*file/out\.bin"):
        write_atomic(tmp_path / "file" / "out.bin", b"data")


def test_sha256_file_matches_hashlib_across_block_boundaries(tmp_path):
    data = os.urandom((1 << 20) * 2 + 17)
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
