"""imageio: every format round-trips, 16-bit/grey/alpha survive, EXIF orientation, broken files refused."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from srcli.errors import InputImageError, OutputError
from srcli.imageio import exif_orientation, header_size, read_image, write_image


def _smooth(height: int = 24, width: int = 32, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """A smooth colour image: lossy codecs keep it close, so their round-trip can be bounded tightly."""
    peak = np.iinfo(dtype).max
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [(x / width), (y / height), 0.5 + 0.4 * np.sin(x / 5 + y / 7), 0.3 + 0.7 * (x > width / 2)]
    return np.rint(np.dstack(planes[:channels]) * peak).astype(dtype)


@pytest.mark.parametrize("extension", [".png", ".webp", ".bmp", ".tif", ".tiff"])
def test_lossless_formats_round_trip_exactly(tmp_path, extension):
    image = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    path = tmp_path / f"a{extension}"
    write_image(path, image)
    assert np.array_equal(read_image(path), image)


@pytest.mark.parametrize("extension", [".jpg", ".jpeg"])
def test_jpeg_round_trip_is_close_and_quality_matters(tmp_path, extension):
    image = _smooth()
    write_image(tmp_path / f"high{extension}", image, quality=95)
    write_image(tmp_path / f"low{extension}", image, quality=10)
    back = read_image(tmp_path / f"high{extension}")
    assert back.shape == image.shape
    assert np.abs(back.astype(int) - image.astype(int)).mean() < 3
    assert (tmp_path / f"low{extension}").stat().st_size < (tmp_path / f"high{extension}").stat().st_size


def test_lossy_webp_when_a_quality_is_given(tmp_path):
    image = _smooth()
    write_image(tmp_path / "lossless.webp", image)
    write_image(tmp_path / "lossy.webp", image, quality=20)
    assert np.array_equal(read_image(tmp_path / "lossless.webp"), image)
    assert not np.array_equal(read_image(tmp_path / "lossy.webp"), image)


def test_channel_order_is_rgb(tmp_path):
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    write_image(tmp_path / "red.png", red)
    assert cv2.imread(str(tmp_path / "red.png"))[0, 0].tolist() == [0, 0, 255]  # BGR on disk
    blue_in_bgr = np.zeros((4, 4, 3), np.uint8)
    blue_in_bgr[..., 0] = 255
    cv2.imwrite(str(tmp_path / "blue.png"), blue_in_bgr)
    assert read_image(tmp_path / "blue.png")[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("extension", [".png", ".tif"])
def test_sixteen_bit_stays_sixteen_bit(tmp_path, extension):
    image = _smooth(dtype=np.uint16) | 1  # odd values: not 8-bit values scaled by 257
    write_image(tmp_path / f"deep{extension}", image)
    back = read_image(tmp_path / f"deep{extension}")
    assert back.dtype == np.uint16
    assert np.array_equal(back, image)


def test_sixteen_bit_to_an_eight_bit_format_rounds(tmp_path):
    image = np.array([[[0, 128, 65535], [257 * 100 + 128, 257 * 100 + 129, 300]]], np.uint16)
    write_image(tmp_path / "deep.bmp", image)
    assert read_image(tmp_path / "deep.bmp").tolist() == [[[0, 0, 255], [100, 101, 1]]]


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".tif"])
def test_grey_stays_grey(tmp_path, extension):
    grey = _smooth(channels=1)[..., 0]
    write_image(tmp_path / f"grey{extension}", grey)
    back = read_image(tmp_path / f"grey{extension}")
    assert back.ndim == 2 and back.shape == grey.shape
    assert np.abs(back.astype(int) - grey.astype(int)).max() <= (6 if extension == ".jpg" else 0)


@pytest.mark.parametrize("extension", [".png", ".webp", ".tif"])
def test_alpha_is_kept(tmp_path, extension):
    image = _smooth(channels=4)
    write_image(tmp_path / f"alpha{extension}", image)
    assert np.array_equal(read_image(tmp_path / f"alpha{extension}"), image)


def test_sixteen_bit_alpha_png(tmp_path):
    image = _smooth(channels=4, dtype=np.uint16)
    write_image(tmp_path / "alpha16.png", image)
    assert np.array_equal(read_image(tmp_path / "alpha16.png"), image)


def test_alpha_into_jpeg_is_flattened_on_white(tmp_path):
    image = np.zeros((16, 16, 4), np.uint8)
    image[..., 3] = 0  # fully transparent black
    write_image(tmp_path / "flat.jpg", image)
    assert read_image(tmp_path / "flat.jpg").min() >= 250


# --- EXIF orientation --------------------------------------------------------------------------------------


def _exif(orientation: int, order: str = ">") -> bytes:
    """A minimal TIFF-structured EXIF block holding only the Orientation tag."""
    mark = b"MM" if order == ">" else b"II"
    entry = struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return mark + struct.pack(order + "HI", 42, 8) + struct.pack(order + "H", 1) + entry + b"\x00\x00\x00\x00"


def _jpeg_with_orientation(image_bgr: np.ndarray, orientation: int, order: str = ">") -> bytes:
    jpeg = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    body = b"Exif\x00\x00" + _exif(orientation, order)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_matches_opencvs_upright_view(tmp_path, orientation):
    bgr = cv2.cvtColor(_smooth(20, 30), cv2.COLOR_RGB2BGR)
    data = _jpeg_with_orientation(bgr, orientation, "<" if orientation % 2 else ">")
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    assert exif_orientation(data) == orientation
    upright = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    ours = read_image(path)
    assert ours.shape == ((30, 20, 3) if orientation >= 5 else (20, 30, 3))
    assert np.array_equal(ours, upright)


def test_orientation_six_is_a_clockwise_quarter_turn(tmp_path):
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:6, :6] = 255  # a white block in the stored top-left corner
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg_with_orientation(stored, 6))
    upright = read_image(path)
    assert upright.shape == (30, 20, 3)
    assert upright[:5, -5:].mean() > 240 and upright[-5:, :5].mean() < 15  # now in the top-right corner


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_png_exif_chunk_orientation(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    ihdr_end = 8 + 8 + 13 + 4
    path = tmp_path / "turned.png"
    path.write_bytes(png[:ihdr_end] + _png_chunk(b"eXIf", _exif(3)) + png[ihdr_end:])
    assert np.array_equal(read_image(path), image[::-1, ::-1])


def _tiff(rgb: np.ndarray, orientation: int = 1, order: str = "<", long_sizes: bool = False) -> bytes:
    """A minimal uncompressed RGB TIFF written field by field, so the Orientation tag can be set."""
    height, width, _ = rgb.shape
    pixels = rgb.tobytes()
    bits_at = 8 + 2 + 12 * 10 + 4  # header, the IFD's 10 entries and its next-IFD link, then (8, 8, 8)
    size_kind = 4 if long_sizes else 3
    # (tag, type: 3 SHORT / 4 LONG, count, value or offset)
    entries = [(256, size_kind, 1, width), (257, size_kind, 1, height), (258, 3, 3, bits_at), (259, 3, 1, 1),
               (262, 3, 1, 2), (273, 4, 1, bits_at + 6), (274, 3, 1, orientation), (277, 3, 1, 3),
               (278, 3, 1, height), (279, 4, 1, len(pixels))]
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, count, value in entries:
        inline_short = kind == 3 and count == 1
        field = struct.pack(order + "HH", value, 0) if inline_short else struct.pack(order + "I", value)
        ifd += struct.pack(order + "HHI", tag, kind, count) + field
    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    return header + ifd + struct.pack(order + "I", 0) + struct.pack(order + "HHH", 8, 8, 8) + pixels


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_tag_gives_the_upright_view(tmp_path, orientation):
    rgb = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    path = tmp_path / "turned.tif"
    path.write_bytes(_tiff(rgb, orientation, "<" if orientation % 2 else ">"))
    upright = {1: rgb, 2: rgb[:, ::-1], 3: rgb[::-1, ::-1], 4: rgb[::-1], 5: rgb.swapaxes(0, 1),
               6: rgb.swapaxes(0, 1)[:, ::-1], 7: rgb.swapaxes(0, 1)[::-1, ::-1], 8: rgb.swapaxes(0, 1)[::-1]}
    assert np.array_equal(read_image(path), upright[orientation])


def test_header_size_reads_every_format_without_decoding():
    image = np.random.default_rng(5).integers(0, 256, (21, 34, 3), dtype=np.uint8)
    alpha = np.dstack([image, np.full((21, 34), 128, np.uint8)])
    encoded = {
        "png": cv2.imencode(".png", image)[1],
        "bmp": cv2.imencode(".bmp", image)[1],
        "tiff": cv2.imencode(".tif", image)[1],
        "webp-lossy": cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 90])[1],
        "webp-lossless": cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1],
        "webp-alpha": cv2.imencode(".webp", alpha, [cv2.IMWRITE_WEBP_QUALITY, 90])[1],
    }
    sizes = {name: header_size(data.tobytes()) for name, data in encoded.items()}
    sizes["jpeg"] = header_size(_jpeg_with_orientation(image, 1))
    sizes["tiff-long"] = header_size(_tiff(image, order=">", long_sizes=True))
    assert sizes == dict.fromkeys(sizes, (34, 21))
    assert header_size(b"II*\x00\xff\xff\xff\x00") is None  # an IFD past the end: unknown, not an error


# --- refusals ----------------------------------------------------------------------------------------------


def _refused(path: Path, match: str, **kwargs) -> None:
    with pytest.raises(InputImageError, match=match) as caught:
        read_image(path, **kwargs)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path):
    _refused(tmp_path / "nope.png", "no such file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    _refused(tmp_path / "empty.png", "empty file")


def test_text_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n")
    _refused(tmp_path / "notes.png", "not a readable image")


def test_directory(tmp_path):
    _refused(tmp_path, "directory")


def test_truncated_png(tmp_path):
    data = cv2.imencode(".png", np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))[1]
    data = data.tobytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) * 2 // 3])
    _refused(tmp_path / "cut.png", "truncated PNG")


def test_truncated_jpeg(tmp_path):
    data = cv2.imencode(".jpg", np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8))[1]
    data = data.tobytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    _refused(tmp_path / "cut.jpg", "truncated JPEG")


def test_pixel_limit_and_raising_it(tmp_path):
    write_image(tmp_path / "big.png", np.zeros((30, 40, 3), np.uint8))
    _refused(tmp_path / "big.png", "over the .* limit", max_pixels=1000)
    assert read_image(tmp_path / "big.png", max_pixels=1200).shape == (30, 40, 3)
    assert read_image(tmp_path / "big.png", max_pixels=None).shape == (30, 40, 3)


def test_tiff_bomb_refused_from_its_header(tmp_path):
    """A TIFF whose first image claims 70000 x 70000 pixels but holds a few bytes is refused unread."""
    data = bytearray(_tiff(np.zeros((2, 2, 3), np.uint8), long_sizes=True))
    data[8 + 2 + 8 : 8 + 2 + 12] = struct.pack("<I", 70000)
    data[8 + 14 + 8 : 8 + 14 + 12] = struct.pack("<I", 70000)
    (tmp_path / "bomb.tif").write_bytes(bytes(data))
    assert header_size(bytes(data)) == (70000, 70000)
    _refused(tmp_path / "bomb.tif", "70000x70000 is 4900.0 MP, over the 120 MP limit")


def test_decompression_bomb_refused_from_its_header(tmp_path):
    """A 60-byte PNG claiming 100000 x 100000 pixels is refused before any memory is asked for."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IEND", b""))
    _refused(tmp_path / "bomb.png", "10000.0 MP, over the 120 MP limit")


# --- atomic writes -----------------------------------------------------------------------------------------


def test_write_leaves_no_temp_files_and_a_normal_mode(tmp_path):
    write_image(tmp_path / "out.png", np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    (tmp_path / "taken.png").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OutputError, match="cannot write"):
        write_image(tmp_path / "taken.png", np.zeros((4, 4, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["taken.png"]
    assert (tmp_path / "taken.png").is_dir()


def test_write_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_image(tmp_path / "file" / "out.png", np.zeros((4, 4, 3), np.uint8))


def test_unknown_output_extension(tmp_path):
    with pytest.raises(OutputError, match=r"cannot write \.gif"):
        write_image(tmp_path / "out.gif", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
