"""Issue #10, image side: hostile inputs built here byte by byte, refused in one line before any decoding.

Each input is crafted by the test (headers that lie about their size, junk between JPEG markers,
animations, a FIFO) and goes through the real CLI in a child process where stderr, the exit code or the
peak memory matters.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from upscale_helpers import REPO, assert_one_error_line, srcli_command, tiny_checkpoint

from srcli import imageio
from srcli.errors import InputImageError
from srcli.imageio import read_image

MB = 1 << 20


# Reaps the command and prints its peak RSS. Run from a small launcher because Linux counts the RSS a
# child had before exec (a fork of the big pytest process) in its ru_maxrss.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(*arguments: object) -> tuple[int, str, float]:
    """Run `srcli ARGUMENTS` in a child; (exit code, stderr, its peak RSS in MB from wait4)."""
    result = subprocess.run([sys.executable, "-c", _LAUNCHER, *srcli_command(*arguments)], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    return result.returncode, result.stderr, int(result.stdout) * 1024 / MB  # Linux: ru_maxrss in KiB


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims a size, with a few bytes of pixel data: what a decompression bomb looks like."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + _png_chunk(b"IEND", b"")


def _gif_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """35 bytes of GIF whose screen and image descriptors claim width x height (one LZW code of data)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00"
    return screen + image + b";"


def _small_image(seed: int = 0, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _jpeg_with_junk_after_app0(size: tuple[int, int] | None = None) -> bytes:
    """A real JPEG with one stray byte after its APP0 segment (libjpeg warns and decodes it), its frame
    header optionally claiming `size` (width, height)."""
    data = cv2.imencode(".jpg", _small_image())[1].tobytes()
    assert data[2:4] == b"\xff\xe0"
    end_of_app0 = 4 + int.from_bytes(data[4:6], "big")
    data = data[:end_of_app0] + b"\x00" + data[end_of_app0:]
    if size is not None:
        sof = data.index(b"\xff\xc0")
        data = data[: sof + 5] + struct.pack(">HH", size[1], size[0]) + data[sof + 9 :]
    return data


# --- 1. every format OpenCV decodes is size-checked or refused before decoding -------------------------


def test_gif_bomb_is_refused_from_its_content_with_little_memory(tmp_path, checkpoint):
    """The issue's bomb: peak RSS of the whole srcli process (torch included) stays under 500 MB (was 7.2 GB)."""
    bomb = _gif_bomb()
    assert len(bomb) == 35
    for name in ("bomb.gif", "bomb.png"):  # the extension does not matter: the content is sniffed
        (tmp_path / name).write_bytes(bomb)
        code, err, peak = run_measured("upscale", tmp_path / name, "-o", tmp_path / "out.png", "-w", checkpoint)
        line = assert_one_error_line(code, err)
        assert f"{name}: GIF images are not supported" in line
        assert peak < 500, f"peak RSS {peak:.0f} MB"
    assert not (tmp_path / "out.png").exists()


def _pnm() -> bytes:
    return b"P6\n30000 30000\n255\n" + bytes(64)


UNSUPPORTED = {
    "GIF": _gif_bomb(),
    "PNM (PBM/PGM/PPM/PAM)": _pnm(),
    "PFM": b"PF\n30000 30000\n-1.0\n" + bytes(64),
    "Radiance HDR": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + bytes(64),
    "OpenEXR": b"v/1\x01\x02\x00\x00\x00" + bytes(64),
    "JPEG 2000": b"\xff\x4f\xff\x51\x00\x2f\x00\x00" + struct.pack(">II", 30000, 30000) + bytes(64),
    "Sun raster": b"\x59\xa6\x6a\x95" + struct.pack(">III", 30000, 30000, 24) + bytes(64),
    "AVIF/HEIF": b"\x00\x00\x00\x1cftypavif" + bytes(64),
    "BigTIFF": b"II+\x00\x08\x00\x00\x00" + bytes(64),
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_formats_srcli_does_not_support_never_reach_the_decoder(tmp_path, monkeypatch, name):
    def decoder_reached(*_args):
        raise AssertionError("cv2.imdecode was called")

    monkeypatch.setattr(imageio.cv2, "imdecode", decoder_reached)
    (tmp_path / "claims.png").write_bytes(UNSUPPORTED[name])
    with pytest.raises(InputImageError, match=rf"claims\.png: {re.escape(name)} images are not supported") as caught:
        read_image(tmp_path / "claims.png", max_pixels=None)
    assert "\n" not in str(caught.value)


def test_a_header_without_a_size_is_refused_not_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda *_: pytest.fail("cv2.imdecode was called"))
    (tmp_path / "odd.tif").write_bytes(b"II*\x00\xff\xff\xff\x00" + bytes(32))  # first IFD past the end
    with pytest.raises(InputImageError, match=r"odd\.tif: not a readable image \(its TIFF header states no size\)"):
        read_image(tmp_path / "odd.tif")


def test_opencv_loads_with_srcli_pixel_limit_and_the_environment_is_left_alone():
    """The second wall: in a fresh process, the API's first use loads cv2 with OPENCV_IO_MAX_IMAGE_PIXELS at
    120 MP, so cv2.imdecode itself refuses a 121 MP header; the variable is not left for child processes."""
    script = (
        "import os, srcli, sys\n"
        "srcli.load  # the API's first use: OpenCV loads here, with srcli's pixel limit\n"
        "import cv2, numpy as np\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_hostile_images import _png_claiming\n"
        "print(os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS'))\n"
        "try:\n"
        "    cv2.imdecode(np.frombuffer(_png_claiming(11000, 11000), np.uint8), cv2.IMREAD_UNCHANGED)\n"
        "    print('decoded')\n"
        "except cv2.error as error:\n"
        "    print('refused' if 'CV_IO_MAX_IMAGE_PIXELS' in str(error) else error)\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    result = subprocess.run([*srcli_command()[:1], "-c", script], cwd=REPO, capture_output=True, text=True,
                            env=environment, timeout=120)
    assert result.stdout.split() == ["None", "refused"], result.stderr


# --- 2. JPEG header walk skips junk as libjpeg does; no decoder chatter ---------------------------------


def test_jpeg_bomb_with_junk_after_app0_is_refused_from_its_header(tmp_path, checkpoint):
    (tmp_path / "junk.jpg").write_bytes(_jpeg_with_junk_after_app0((11000, 11000)))
    assert imageio.header_size((tmp_path / "junk.jpg").read_bytes()) == (11000, 11000)
    code, err, _ = run_measured("upscale", tmp_path / "junk.jpg", "-o", tmp_path / "out.png", "-w", checkpoint)
    line = assert_one_error_line(code, err)  # stderr holds this line only: no "Corrupt JPEG data"
    assert "junk.jpg: 11000x11000 is 121.0 MP, over the 120 MP limit" in line


def test_a_small_jpeg_with_junk_decodes_without_chatter(tmp_path, checkpoint):
    (tmp_path / "junk.jpg").write_bytes(_jpeg_with_junk_after_app0())
    code, err, _ = run_measured("upscale", tmp_path / "junk.jpg", "-o", tmp_path / "out.png", "-w", checkpoint)
    assert code == 0, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("wrote "), err
    assert cv2.imread(str(tmp_path / "out.png")).shape == (32, 32, 3)


# --- 3. over OpenCV's own limit with srcli's limit off: one line ----------------------------------------


def test_no_limit_on_a_huge_png_header_is_one_line(tmp_path, checkpoint):
    (tmp_path / "huge.png").write_bytes(_png_claiming(50000, 50000))
    code, err, peak = run_measured("upscale", tmp_path / "huge.png", "-o", tmp_path / "o.png", "-w", checkpoint,
                                   "--max-pixels", "0")
    line = assert_one_error_line(code, err)
    assert "huge.png: 50000x50000 is 2500.0 MP, over OpenCV's decoder limit of 1073.74 MP" in line
    assert peak < 500


def test_an_opencv_assertion_becomes_one_input_error(tmp_path):
    """2 MP, under every pixel limit, but wider than OpenCV's 2^20 columns: its assertion is one line."""
    header = struct.pack("<IiiHHIIiiII", 40, 2_000_000, 1, 1, 24, 0, 0, 2835, 2835, 0, 0)
    (tmp_path / "wide.bmp").write_bytes(b"BM" + struct.pack("<IHHI", 70, 0, 0, 54) + header + bytes(16))
    with pytest.raises(InputImageError, match=r"wide\.bmp: not a readable image \(OpenCV: .*WIDTH") as caught:
        read_image(tmp_path / "wide.bmp")
    assert "\n" not in str(caught.value)


# --- 9. animations and files that are not regular -------------------------------------------------------


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _animated_webp(frames: list[np.ndarray]) -> bytes:
    """A real animated WebP (VP8X with the animation flag, ANIM, one ANMF per lossless frame)."""
    height, width = frames[0].shape[:2]
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunks = _riff_chunk(b"VP8X", b"\x02\x00\x00\x00" + size) + _riff_chunk(b"ANIM", bytes(6))
    for frame in frames:
        still = cv2.imencode(".webp", frame, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
        chunks += _riff_chunk(b"ANMF", bytes(6) + size + (100).to_bytes(3, "little") + b"\x00" + still[12:])
    body = b"WEBP" + chunks
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _animated_png(image: np.ndarray) -> bytes:
    """A PNG with an acTL chunk announcing two frames (APNG): decoders that ignore it show frame one."""
    still = cv2.imencode(".png", image)[1].tobytes()
    return still[:33] + _png_chunk(b"acTL", struct.pack(">II", 2, 0)) + still[33:]


@pytest.mark.parametrize("name, data", [
    ("anim.webp", _animated_webp([_small_image(1), _small_image(2)])),
    ("anim.png", _animated_png(_small_image(3))),
])
def test_animations_are_refused_before_any_work(tmp_path, checkpoint, name, data):
    (tmp_path / name).write_bytes(data)
    code, err, _ = run_measured("upscale", tmp_path / name, "-o", tmp_path / "out.png", "-w", checkpoint)
    line = assert_one_error_line(code, err)
    assert f"{name}: an animated" in line and "only still images are supported" in line
    assert not (tmp_path / "out.png").exists()


def test_a_fifo_as_input_is_refused_instead_of_hanging(tmp_path, checkpoint):
    os.mkfifo(tmp_path / "pipe.png")
    result = subprocess.run(srcli_command("upscale", tmp_path / "pipe.png", "-o", tmp_path / "o.png", "-w",
                                          checkpoint), cwd=REPO, capture_output=True, text=True, timeout=120)
    line = assert_one_error_line(result.returncode, result.stderr)
    assert "pipe.png: is a FIFO (named pipe), not a regular file" in line
