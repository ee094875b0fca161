"""Hardening round 2 (#23) for the image reader and the files layer: each hostile input is built here.

Truncated JPEGs with an end marker appended, trailing bytes after a complete file, TIFF sample types
that would cost gigabytes, grey+alpha TIFF, FIFOs and devices, names near the 255-byte limit, names
holding control characters.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from upscale_helpers import tiny_checkpoint

from srcli import decoderlog
from srcli.errors import CheckpointError, DownloadError, InputImageError, printable
from srcli.files import NAME_MAX, atomic_path, read_regular_file, require_regular_file, write_atomic
from srcli.imageio import read_image, write_image


def _noise(shape: tuple[int, ...] = (64, 96, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _jpeg(progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] + ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else [])
    return cv2.imencode(".jpg", _noise(), params)[1].tobytes()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _refused(path: Path, *words: str, **options) -> str:
    with pytest.raises(InputImageError) as caught:
        read_image(path, **options)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


# --- 1. decoder warnings that mean lost data refuse the image ------------------------------------------------


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline-cut-at-half", "progressive-cut-mid-scan"])
def test_a_truncated_jpeg_with_an_end_marker_appended_is_refused(tmp_path, progressive):
    data = _jpeg(progressive)
    cut = len(data) * 2 // 3 if progressive else len(data) // 2
    (tmp_path / "cut.jpg").write_bytes(data[:cut] + b"\xff\xd9")
    _refused(tmp_path / "cut.jpg", "cut.jpg: truncated or corrupt image data", "premature end")


def test_harmless_decoder_chatter_still_decodes(tmp_path):
    """One junk byte after APP0 makes libjpeg warn "extraneous bytes"; every pixel is still decoded."""
    data = _jpeg()
    (tmp_path / "junk.jpg").write_bytes(data[:20] + b"\x00" + data[20:])
    assert np.array_equal(read_image(tmp_path / "junk.jpg"), cv2.cvtColor(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB))


def test_png_with_a_bad_data_check_is_refused(tmp_path):
    """libpng's 'IDAT: incorrect data check' (zlib's Adler-32) already fails the decode: still one line."""
    raw = b"".join(b"\x00" + row.tobytes() for row in _noise((8, 8, 3)))
    stream = bytearray(zlib.compress(raw))
    stream[-2] ^= 0xFF
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", bytes(stream))
                                       + _png_chunk(b"IEND", b""))
    _refused(tmp_path / "bad.png", "bad.png: not a readable image")


def test_chatter_of_one_thread_does_not_refuse_another_threads_image(tmp_path):
    """Descriptor 2 is shared: decodes that overlapped a complaining one are rerun alone, not refused."""
    data = _jpeg()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    write_image(tmp_path / "good.png", _noise((32, 32, 3)))
    results: dict[str, list[str]] = {"cut": [], "good": []}

    def work(name: str, path: Path) -> None:
        for _ in range(20):
            try:
                read_image(path)
                results[name].append("ok")
            except InputImageError as error:
                results[name].append(str(error))

    threads = [threading.Thread(target=work, args=("cut", tmp_path / "cut.jpg")),
               threading.Thread(target=work, args=("good", tmp_path / "good.png"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["good"] == ["ok"] * 20
    assert all("premature end" in line for line in results["cut"])
    assert decoderlog._capture.users == 0 and decoderlog._capture.saved is None  # descriptor 2 is restored


# --- 2. TIFF samples are counted in bytes, from the header -------------------------------------------------------


def _tiff(width: int, height: int, samples: int, bits: int, body: bytes, *, sample_format: int = 1,
          extra: int | None = None, compression: int = 1) -> bytes:
    """A little-endian, one-strip TIFF with every tag written out (arrays past 4 bytes stored after the IFD)."""
    photometric = 2 if samples >= 3 else 1
    entries = [(256, 4, [width]), (257, 4, [height]), (258, 3, [bits] * samples), (259, 3, [compression]),
               (262, 3, [photometric]), (273, 4, [0]), (277, 3, [samples]), (278, 4, [height]),
               (279, 4, [len(body)]), *([(338, 3, [extra])] if extra is not None else []),
               (339, 3, [sample_format] * samples)]
    arrays_at = 8 + 2 + 12 * len(entries) + 4
    arrays, fields = b"", []
    for tag, kind, values in entries:
        raw = struct.pack("<" + ("H" if kind == 3 else "I") * len(values), *values)
        if len(raw) <= 4:
            fields.append((tag, kind, len(values), raw.ljust(4, b"\x00")))
        else:
            fields.append((tag, kind, len(values), struct.pack("<I", arrays_at + len(arrays))))
            arrays += raw
    strip_at = struct.pack("<I", arrays_at + len(arrays))
    ifd = b"".join(struct.pack("<HHI", tag, kind, count) + (strip_at if tag == 273 else value)
                   for tag, kind, count, value in fields)
    return b"II*\x00" + struct.pack("<IH", 8, len(entries)) + ifd + b"\x00" * 4 + arrays + body


def test_a_float64_rgba_tiff_is_refused_from_its_header(tmp_path):
    """Its strip is junk: only a refusal from the header can name the sample type (the decoder never runs)."""
    (tmp_path / "f64.tif").write_bytes(_tiff(300, 200, 4, 64, b"junk" * 10, sample_format=3, extra=2,
                                             compression=8))
    _refused(tmp_path / "f64.tif", "f64.tif: 64-bit floating-point samples are not supported")


def test_tiff_bytes_per_pixel_count_against_the_limit(tmp_path):
    """Eight 16-bit samples per pixel are 16 bytes: twice what the pixel limit allows (16-bit RGBA's 8)."""
    body = np.zeros((20, 30, 8), np.uint16).tobytes()
    (tmp_path / "wide.tif").write_bytes(_tiff(30, 20, 8, 16, body, extra=2))
    _refused(tmp_path / "wide.tif", "wide.tif: 30x20 with 8 16-bit samples", "over the", max_pixels=1000)


def test_16bit_rgba_png_at_the_limit_is_accepted(tmp_path):
    image = np.random.default_rng(1).integers(0, 65536, (25, 40, 4), dtype=np.uint16)
    write_image(tmp_path / "deep.png", image)
    assert np.array_equal(read_image(tmp_path / "deep.png", max_pixels=1000), image)
    write_image(tmp_path / "deep.tif", image)
    assert np.array_equal(read_image(tmp_path / "deep.tif", max_pixels=1000), image)


# --- 3. bytes after the end are ignored, as decoders do ------------------------------------------------------


def test_a_png_with_bytes_after_iend_is_read(tmp_path):
    image = _noise((16, 16, 3))
    data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    (tmp_path / "tail.png").write_bytes(data + os.urandom(5000))
    assert np.array_equal(read_image(tmp_path / "tail.png"), image)


def test_a_png_whose_last_chunk_is_cut_is_still_truncated(tmp_path):
    data = cv2.imencode(".png", _noise((16, 16, 3)))[1].tobytes()
    (tmp_path / "cut.png").write_bytes(data[:-6])  # IEND's type is there, its CRC is not
    _refused(tmp_path / "cut.png", "truncated PNG")


def test_a_jpeg_with_bytes_after_eoi_is_read(tmp_path):
    """The tail holds a start-of-scan marker and no end marker: the walk stops at the real end."""
    data = _jpeg()
    (tmp_path / "tail.jpg").write_bytes(data + b"\xff\xda\x00\x08" + bytes(range(256)) * 20)
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert np.array_equal(read_image(tmp_path / "tail.jpg"), expected)


def test_a_webp_with_bytes_after_its_riff_is_read(tmp_path):
    image = _noise((16, 16, 3))
    data = cv2.imencode(".webp", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 101])[1]
    (tmp_path / "tail.webp").write_bytes(data.tobytes() + os.urandom(5000))
    assert np.array_equal(read_image(tmp_path / "tail.webp"), image)


# --- 4. grey + alpha TIFF keeps its alpha, laid out as PNG's -------------------------------------------------


def _grey_alpha(dtype=np.uint8) -> np.ndarray:
    peak = np.iinfo(dtype).max
    grey = np.random.default_rng(7).integers(0, peak + 1, (5, 6), dtype=dtype)
    alpha = np.full((5, 6), peak, dtype)
    alpha[0, :3] = 0
    return np.dstack([grey, alpha])


def _png_grey_alpha(la: np.ndarray) -> bytes:
    bits = 16 if la.dtype == np.uint16 else 8
    raw = b"".join(b"\x00" + row.astype(">u2" if bits == 16 else np.uint8).tobytes() for row in la)
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", la.shape[1], la.shape[0], bits, 4, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_alpha_tiff_reads_as_grey_alpha_png_does(tmp_path, dtype):
    la = _grey_alpha(dtype)
    (tmp_path / "la.png").write_bytes(_png_grey_alpha(la))
    (tmp_path / "la.tif").write_bytes(_tiff(6, 5, 2, la.itemsize * 8, la.tobytes(), extra=2))
    from_png = read_image(tmp_path / "la.png")
    assert from_png.shape == (5, 6, 4) and from_png.dtype == dtype
    assert np.array_equal(from_png[..., 3], la[..., 1])
    assert np.array_equal(read_image(tmp_path / "la.tif"), from_png)


def test_grey_alpha_tiff_upscales_with_its_alpha(cli, tmp_path):
    """Through `srcli upscale`, the TIFF gives what the same pixels as grey + alpha PNG give."""
    la = _grey_alpha()
    (tmp_path / "la.tif").write_bytes(_tiff(6, 5, 2, 8, la.tobytes(), extra=2))
    (tmp_path / "la.png").write_bytes(_png_grey_alpha(la))
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    for name in ("la.tif", "la.png"):
        code, _, err = cli("upscale", tmp_path / name, "-o", tmp_path / f"{name}.out.png", "-w", checkpoint)
        assert code == 0, err
    out = read_image(tmp_path / "la.tif.out.png")
    assert out.shape == (10, 12, 4)
    assert (out[:2, :6, 3] == 0).all()  # the transparent corner stays transparent
    assert np.array_equal(out, read_image(tmp_path / "la.png.out.png"))


# --- 5. FIFOs and devices are named as what they are, for any input file -----------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_named_as_a_fifo_for_any_kind_of_input(tmp_path):
    os.mkfifo(tmp_path / "pipe.pt")
    with pytest.raises(CheckpointError, match=r"pipe.pt: is a FIFO \(named pipe\), not a regular file"):
        require_regular_file(tmp_path / "pipe.pt", "a weights file", CheckpointError)
    with pytest.raises(CheckpointError, match="is a directory, not a weights file"):
        require_regular_file(tmp_path, "a weights file", CheckpointError)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_or_a_device_as_weights_is_named_by_the_cli(cli, tmp_path):
    os.mkfifo(tmp_path / "pipe.pt")
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    for weights, words in ((tmp_path / "pipe.pt", "is a FIFO (named pipe), not a regular file"),
                           (Path("/dev/zero"), "is a character device, not a regular file")):
        for argv in (("upscale", image, "--weights", weights), ("models", "--inspect", weights)):
            code, _, err = cli(*argv)
            assert code != 0 and words in err and "directory" not in err
            assert len(err.strip().splitlines()) == 1


def test_an_error_naming_a_newline_is_one_line_through_the_cli(cli, tmp_path):
    code, _, err = cli("upscale", tmp_path / "no\nsuch.png")
    assert code != 0 and "no\\nsuch.png" in err
    assert len(err.strip().splitlines()) == 1


def test_a_character_device_is_named_as_one(tmp_path):
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null here")
    with pytest.raises(InputImageError, match="/dev/null: is a character device, not a regular file"):
        read_regular_file(Path("/dev/null"), "an image", InputImageError)
    _refused(Path("/dev/zero"), "/dev/zero: is a character device")


# --- 6. temp names fit the 255-byte name limit -------------------------------------------------------------------


def test_an_output_name_of_253_bytes_is_written(tmp_path):
    path = tmp_path / ("é" * 60 + "b" * 127 + "x4.png")  # 120 + 133 bytes: legal, but a temp beside it is not
    assert len(os.fsencode(path.name)) == 253
    write_atomic(path, b"data")
    assert path.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_the_temp_name_keeps_a_recognisable_prefix_within_the_limit(tmp_path):
    path = tmp_path / ("é" * 120 + ".png")
    with atomic_path(path) as temp:
        assert len(os.fsencode(temp.name)) <= NAME_MAX
        assert temp.name.startswith(".éé") and temp.name.endswith(".part")
        os.fsencode(temp.name).decode("utf-8")  # cut between characters, never inside one


# --- 10. control characters in names never split the error line ------------------------------------------------


def test_a_name_holding_a_newline_stays_on_one_line(tmp_path):
    path = tmp_path / "evil\nname\x1b[31m.png"
    path.write_bytes(b"not an image")
    message = _refused(path, "evil\\nname\\x1b[31m.png: not a readable image")
    assert "\x1b" not in message


def test_printable_keeps_ordinary_text_and_is_idempotent():
    assert printable("holiday [draft] é 日本.png") == "holiday [draft] é 日本.png"
    escaped = printable("a\rb\tc\u202ed\udcff")
    assert escaped == "a\\rb\\tc\\u202ed\\xff"
    assert printable(escaped) == escaped


# --- 7. a mirror that trickles is cut off ---------------------------------------------------------------------


@pytest.mark.parametrize("no_length", [False, True], ids=["with-length", "without-length"])
def test_a_trickling_mirror_is_cut_off_as_stalled(file_server, tmp_path, no_length):
    """One byte every 0.2 s never trips a 30 s read timeout; the stall watch (1 s here) ends the transfer.
    100 bytes: were the watch to fail, the server would be done in 20 s and the test fail, not hang."""
    from srcli import download

    data = os.urandom(100)
    url = file_server.add("slow.bin", data, trickle=0.2, no_length=no_length)
    with pytest.raises(DownloadError) as caught:
        download.fetch(url, tmp_path / "slow.bin", retries=0, stall=1.0)
    message = str(caught.value)
    assert "\n" not in message
    assert "slow.bin: stalled (not 64 KB in 1 s)" in message
    assert not (tmp_path / "slow.bin").exists()  # nothing half-written under the final name


def test_a_slow_but_steady_mirror_is_not_stalled(file_server, tmp_path):
    from srcli import download

    data = os.urandom(300_000)
    url = file_server.add("steady.bin", data)
    assert download.fetch(url, tmp_path / "steady.bin", stall=1.0, retries=0).read_bytes() == data


def test_a_part_name_beside_a_long_destination_fits(file_server, tmp_path):
    """The `.part` of a 253-byte name would be 258 bytes: cut, and still resumed by the next run."""
    from srcli import download

    data = os.urandom(150_000)
    name = "w" * 250 + ".pt"
    url = file_server.add("w.pt", data, drop_after=50_000)
    with pytest.raises(DownloadError, match="run again to resume"):
        download.fetch(url, tmp_path / name, retries=0)
    (part,) = tmp_path.iterdir()
    assert len(os.fsencode(part.name)) <= NAME_MAX and part.name.endswith(".part")
    assert download.fetch(url, tmp_path / name).read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == [name]


# --- 8. a damaged training cache entry is rebuilt ------------------------------------------------------------


def _training_images(folder: Path) -> Path:
    folder.mkdir()
    for index in range(3):
        write_image(folder / f"{index}.png", _noise((24, 30, 3), seed=index))
    return folder


def _damage(entry: Path, how: str) -> None:
    if how == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif how == "zero-bytes":
        entry.write_bytes(b"")
    else:  # a complete archive whose arrays have the wrong shape
        with open(entry, "wb") as handle:
            np.savez(handle, *[np.zeros((5, 5, 3), np.uint8)] * 3)


@pytest.mark.parametrize("how", ["truncated", "zero-bytes", "wrong-shape"])
@pytest.mark.parametrize("which", ["hr", "x2"])
def test_a_damaged_cache_entry_is_rebuilt_once(tmp_path, how, which):
    from srcli.training.data import load_training_data

    images, cache = _training_images(tmp_path / "hr"), tmp_path / "cache"
    first = load_training_data([str(images)], [2], "lr", cache)
    (entry,) = cache.glob(f"*-{which}.npz")
    _damage(entry, how)
    events: list[dict] = []
    again = load_training_data([str(images)], [2], "lr", cache, on_event=events.append)
    assert any(e["kind"] == "warning" and "damaged" in e["message"] and "rebuilding" in e["message"] for e in events)
    assert all(np.array_equal(a, b) for a, b in zip(first.hr + first.lr[2], again.hr + again.lr[2], strict=True))
    events.clear()
    load_training_data([str(images)], [2], "lr", cache, on_event=events.append)  # the rebuilt entry is used
    assert [e["kind"] for e in events] == ["data"] and "from the cache" in events[0]["message"]


# --- 9. dotfiles are not images, in eval sets as in training folders ----------------------------------------------


def test_a_macos_resource_fork_in_an_eval_set_is_ignored(tmp_path):
    from srcli.datasets import folder_dataset

    hr = _noise((16, 20, 3))
    (tmp_path / "set" / "HR").mkdir(parents=True)
    (tmp_path / "set" / "LR_bicubic" / "X4").mkdir(parents=True)
    write_image(tmp_path / "set" / "HR" / "bird.png", hr)
    write_image(tmp_path / "set" / "LR_bicubic" / "X4" / "birdx4.png", hr[::4, ::4])
    (tmp_path / "set" / "HR" / "._bird.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # AppleDouble header
    dataset = folder_dataset(tmp_path / "set")
    assert [p.name for p in dataset.hr_paths] == ["bird.png"]
    dataset.check_scale(4)
    assert [pair.name for pair in dataset.pairs(4)] == ["bird"]


def test_dotfiles_in_training_folders_are_not_listed(tmp_path):
    from srcli.training.data import find_images

    images = _training_images(tmp_path / "hr")
    (images / "._0.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (images / ".thumbnails").mkdir()
    write_image(images / ".thumbnails" / "0.png", _noise((4, 4, 3)))
    assert [p.name for p in find_images([images])] == ["0.png", "1.png", "2.png"]
