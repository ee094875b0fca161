"""Reading and writing images: 8/16-bit, grey, alpha, EXIF orientation, refusal of broken files, atomic writes.

Arrays handed to the rest of srcli are RGB(A) in HxW (grey) or HxWxC (C = 3 or 4), dtype uint8 or uint16.

Nothing reaches OpenCV's decoders unchecked: the content (never the file name) must be PNG, JPEG, WebP,
BMP or TIFF, a still image, whose header states a size within the pixel limit. Every other format OpenCV
could decode (GIF, PNM, PFM, HDR, EXR, JPEG 2000, Sun raster, AVIF...) is refused from its first bytes,
so a 35-byte GIF that claims 30000x30000 pixels costs nothing.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from srcli import limits, tiff
from srcli.decoderlog import data_loss, decode_capturing
from srcli.errors import InputImageError, OutputError
from srcli.files import open_regular_file, read_regular_file, write_atomic
from srcli.limits import DEFAULT_MAX_PIXELS

# OpenCV logs decoder warnings straight to stderr; srcli reports problems itself, as one line.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff")
ALPHA_EXTENSIONS = (".png", ".webp", ".tif", ".tiff", ".bmp")
SUPPORTED = "PNG, JPEG, WebP, BMP or TIFF"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# First bytes of formats OpenCV (or a viewer) may decode but srcli does not, to name them in the refusal.
_UNSUPPORTED = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
    (b"#?RADIANCE", "Radiance HDR"), (b"#?RGBE", "Radiance HDR"), (b"v/1\x01", "OpenEXR"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x59\xa6\x6a\x95", "Sun raster"), (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"PF\n", "PFM"), (b"Pf\n", "PFM"), (b"PF\r", "PFM"), (b"Pf\r", "PFM"),
    *((f"P{n}{space}".encode(), "PNM (PBM/PGM/PPM/PAM)") for n in range(1, 8) for space in " \t\r\n"),
)


def sniff(data: bytes) -> str | None:
    """'png', 'jpeg', 'webp', 'bmp' or 'tiff' from the content's first bytes; None for anything else."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def _unsupported_name(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return "AVIF/HEIF" if data[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1") else None
    return next((name for magic, name in _UNSUPPORTED if data.startswith(magic)), None)


def read_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image the way a viewer shows it (EXIF orientation applied), refusing anything broken.

    Everything is checked before OpenCV sees a byte: a regular file (a FIFO would block), a supported
    format by content, complete, a still image, and a header size within `max_pixels` (None: no srcli
    limit) and within OpenCV's own limit. Each refusal is one InputImageError line naming the file.
    """
    path = Path(path)
    data = read_regular_file(path, "an image", InputImageError)
    kind = sniff(data)
    if kind is None:
        name = _unsupported_name(data)
        if name:
            raise InputImageError(f"{path}: {name} images are not supported ({SUPPORTED} expected)")
        raise InputImageError(f"{path}: not a readable image ({SUPPORTED} expected)")
    _check_complete(path, data)
    _check_still(path, kind, data)
    size = header_size(data)
    if size is None:
        raise InputImageError(f"{path}: not a readable image (its {kind.upper()} header states no size)")
    _check_pixels(path, *size, max_pixels)
    _check_pixels(path, *size, limits.opencv_limit, "OpenCV's decoder limit")
    image = None
    if kind == "tiff":
        tiff.check_samples(path, data, *size, max_pixels)
        image = tiff.decode_grey_alpha(path, data, lambda rewritten: _decode(path, rewritten))
    if image is None:
        image = _decode(path, data)
    _check_pixels(path, image.shape[1], image.shape[0], max_pixels)
    if image.dtype not in (np.uint8, np.uint16):
        raise InputImageError(f"{path}: {image.dtype} samples are not supported (8- or 16-bit integers only)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return orient(image, exif_orientation(data))


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None, what: str | None = None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        megapixels = f"{max_pixels / 1e6:g} MP"
        limit = f"{what} of {megapixels}" if what else f"the {megapixels} limit (raise it with --max-pixels)"
        raise InputImageError(f"{path}: {width}x{height} is {width * height / 1e6:.1f} MP, over {limit}")


def _decode(path: Path, data: bytes) -> np.ndarray:
    """cv2.imdecode with decoder chatter kept off the terminal, its failures as one line, and its warnings
    that mean lost data (a JPEG cut short with an end marker appended decodes with grey rows) as refusals."""
    try:
        image, said = decode_capturing(lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
    except cv2.error as error:
        reason = (error.err or str(error)).strip().splitlines()[0]
        raise InputImageError(f"{path}: not a readable image (OpenCV: {reason})") from None
    if image is None or image.size == 0:
        raise InputImageError(f"{path}: not a readable image ({SUPPORTED} expected)")
    problem = data_loss(said)
    if problem:
        raise InputImageError(f"{path}: truncated or corrupt image data (decoder: {problem})")
    return image


def _check_complete(path: Path, data: bytes) -> None:
    """Refuse files cut short: decoders would otherwise fill the missing rows with grey and carry on.

    The end is found by walking the structure, never by looking at the tail: bytes after a PNG's IEND
    or a JPEG's end-of-image are ignored by the decoders, and so here.
    """
    if data.startswith(_PNG_SIGNATURE) and not _png_ends(data):
        raise InputImageError(f"{path}: truncated PNG (no IEND chunk): the file was cut short")
    if data.startswith(b"\xff\xd8") and not _jpeg_ends(data):
        raise InputImageError(f"{path}: truncated JPEG (no end-of-image marker): the file was cut short")


def _png_ends(data: bytes) -> bool:
    """Whether the chunks, each within the file, reach an IEND."""
    position = 8
    while position + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IEND":
            return True
        position += 12 + length
    return False


# A marker as libjpeg's next_marker() finds one: fill 0xFF bytes skipped, and 0xFF 0x00 (a stuffed byte in
# entropy-coded data) and restart markers passed over; junk between segments is skipped as libjpeg does.
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")


def _jpeg_ends(data: bytes) -> bool:
    """Whether the file reaches an end-of-image marker: segments (tables, scan headers) are stepped over
    by their lengths, entropy-coded data is searched for the next marker (progressive files have many scans)."""
    position = 2
    while found := _JPEG_MARKER.search(data, position):
        marker, position = found.group(1)[0], found.end()
        if marker == 0xD9:
            return True
        if marker in (0x01, 0xD8):  # TEM, SOI: no length
            continue
        if position + 2 > len(data):
            return False
        position += struct.unpack(">H", data[position : position + 2])[0]
    return False


def _check_still(path: Path, kind: str, data: bytes) -> None:
    """Refuse animations: OpenCV would decode the first frame only and the rest would be lost silently."""
    animated = False
    if kind == "webp":
        animated = bool(data[12:16] == b"VP8X" and data[20] & 0x02) or any(
            chunk == b"ANMF" for chunk, _, _ in _riff_chunks(data)
        )
    elif kind == "png":
        animated = any(chunk == b"acTL" and struct.unpack(">I", data[start : start + 4])[0] > 1
                       for chunk, start, _ in _png_chunks(data))
    if animated:
        raise InputImageError(f"{path}: an animated {kind.upper()}; only still images are supported")


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, body length) of each PNG chunk up to the first IDAT."""
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        yield kind, position + 8, length
        if kind in (b"IDAT", b"IEND"):
            return
        position += 12 + length


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(fourcc, body start, body length) of each top-level chunk of a RIFF (WebP) file."""
    position = 12
    while position + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[position : position + 8])
        yield kind, position + 8, length
        position += 8 + length + (length & 1)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of any format srcli reads, before decoding, so huge images cost nothing.

    None when the header cannot be read; the decoded size is then checked instead.
    """
    try:
        for reader in (_png_size, _jpeg_size, _webp_size, _bmp_size, tiff.size):
            size = reader(data)
            if size is not None:
                return size
    except struct.error:
        return None
    return None


def png_file_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a PNG file from its first 24 bytes, without reading the rest; None for anything else."""
    with open(path, "rb") as handle:
        return _png_size(handle.read(24))


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (DHT, JPG, DAC are not)


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, body start, body length) of each JPEG header segment, up to the start of scan.

    Walks as libjpeg's next_marker() does: bytes before a 0xFF are junk and skipped (libjpeg only warns
    "extraneous bytes before marker" and decodes), repeated 0xFF are fill; so no file libjpeg would
    decode in full can hide its frame size from this walk.
    """
    position = 2
    while True:
        position = data.find(b"\xff", position)
        while 0 <= position < len(data) and data[position] == 0xFF:
            position += 1
        if position < 0 or position + 2 >= len(data):
            return
        marker = data[position]
        position += 1
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD8:  # stuffed zero, TEM, RSTn, SOI: no length
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            return
        length = struct.unpack(">H", data[position : position + 2])[0]
        if length < 2:
            return
        yield marker, position + 2, length - 2
        position += length


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    for marker, start, length in _jpeg_segments(data):
        if marker in _SOF_MARKERS and length >= 5:
            height, width = struct.unpack(">HH", data[start + 1 : start + 5])
            return width, height
    return None


# The IJG (libjpeg) luminance quantisation table at quality 50, in zigzag order as a DQT segment stores it.
_IJG_LUMINANCE = (
    16, 11, 12, 14, 12, 10, 16, 14, 13, 14, 18, 17, 16, 19, 24, 40, 26, 24, 22, 22, 24, 49, 35, 37, 29, 40, 58, 51,
    61, 60, 57, 51, 56, 55, 64, 72, 92, 78, 64, 68, 87, 69, 55, 56, 80, 109, 81, 87, 95, 98, 103, 104, 103, 62, 77,
    113, 121, 112, 100, 120, 92, 101, 103, 99,
)


def _ijg_table(quality: int) -> tuple[int, ...]:
    """The luminance table libjpeg writes at `quality` (jpeg_quality_scaling; baseline: at most 255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(max((value * scale + 50) // 100, 1), 255) for value in _IJG_LUMINANCE)


def _luminance_table(data: bytes) -> tuple[int, ...] | None:
    """Quantisation table 0 (luma, by convention) from the DQT segments, in stored (zigzag) order."""
    for marker, start, length in _jpeg_segments(data):
        body = data[start : start + length]
        while marker == 0xDB and len(body) >= 65:
            precision, table = body[0] >> 4, body[0] & 0x0F
            size = 128 if precision else 64
            if len(body) < 1 + size:
                break
            values = body[1 : 1 + size]
            if table == 0:
                return tuple(struct.unpack(">64H", values)) if precision else tuple(values)
            body = body[1 + size :]
    return None


def jpeg_quality(data: bytes) -> int | None:
    """The libjpeg quality (1-100) whose luminance table is nearest the file's, or None for anything that is not
    a JPEG with a luminance table. Why: a low figure says the image carries JPEG artefacts that a model trained
    only on bicubic downscaling will sharpen rather than remove."""
    if not data.startswith(b"\xff\xd8"):
        return None
    table = _luminance_table(data)
    if table is None:
        return None
    return min(range(1, 101), key=lambda q: (sum(abs(a - b) for a, b in zip(_ijg_table(q), table, strict=True)), -q))


def jpeg_file_quality(path: Path, limit: int = 1 << 18) -> int | None:
    """`jpeg_quality` of a file from its header (the tables come before the image data); None when unreadable."""
    try:  # opened as every input is: a FIFO or a device named as an input must not block this look
        with os.fdopen(open_regular_file(path, "an image", InputImageError), "rb") as handle:
            head = handle.read(2)
            return jpeg_quality(head + handle.read(limit)) if head == b"\xff\xd8" else None
    except (OSError, InputImageError):
        return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """The first chunk says it all: VP8X (extended) and VP8L (lossless) hold the size minus one, VP8 the size."""
    if not (data.startswith(b"RIFF") and data[8:12] == b"WEBP"):
        return None
    kind = data[12:16]
    if kind == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if kind == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"BM") or len(data) < 26:
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # the old OS/2 header: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means rows stored top-down


# --- EXIF orientation --------------------------------------------------------------------------------------


def _exif_block(data: bytes) -> bytes | None:
    """The TIFF-structured EXIF block of a JPEG (APP1), PNG (eXIf) or WebP (EXIF chunk), if any."""
    if data.startswith(b"\xff\xd8"):
        for marker, start, length in _jpeg_segments(data):
            body = data[start : start + length]
            if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
                return body[6:]
        return None
    if data.startswith(_PNG_SIGNATURE):
        return next((data[start : start + length] for kind, start, length in _png_chunks(data) if kind == b"eXIf"),
                    None)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        for kind, start, length in _riff_chunks(data):
            if kind == b"EXIF":
                block = data[start : start + length]
                return block[6:] if block.startswith(b"Exif\x00\x00") else block
    return None


def exif_orientation(data: bytes) -> int:
    """The EXIF Orientation tag (1..8) of an encoded image; 1 (as stored) when absent or unreadable."""
    block = _exif_block(data)
    if not block or len(block) < 8 or block[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if block[:2] == b"II" else ">"
    try:
        ifd = struct.unpack(order + "I", block[4:8])[0]
        (count,) = struct.unpack(order + "H", block[ifd : ifd + 2])
        for index in range(count):
            entry = block[ifd + 2 + 12 * index : ifd + 14 + 12 * index]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112 and kind == 3:
                value = struct.unpack(order + "H", entry[8:10])[0]
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF `orientation` into the upright view (the tag's eight cases)."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transpose; then mirror as the case needs
    flip_rows = orientation in (3, 4, 7, 8)
    flip_columns = orientation in (2, 3, 6, 7)
    if flip_rows:
        image = image[::-1]
    if flip_columns:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


# --- writing -----------------------------------------------------------------------------------------------


def encode_image(image: np.ndarray, extension: str, quality: int | None = None) -> bytes:
    """Encode RGB(A)/grey for a format, adapting what the format cannot hold (16-bit, alpha)."""
    extension = extension.lower()
    if extension not in IMAGE_EXTENSIONS:
        known = ", ".join(IMAGE_EXTENSIONS)
        raise OutputError(f"cannot write {extension or 'files without an extension'}: use {known}")
    if image.dtype == np.uint16 and extension not in SIXTEEN_BIT_EXTENSIONS:
        image = to_8bit(image)
    if image.ndim == 3 and image.shape[2] == 4 and extension not in ALPHA_EXTENSIONS:
        image = _over_white(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    params: list[int] = []
    if quality is not None and extension in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif quality is not None and extension == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    try:
        ok, encoded = cv2.imencode(extension, image, params)
    except cv2.error as error:
        raise OutputError(f"cannot encode a {image.shape} {image.dtype} image as {extension}: {error.err}") from None
    if not ok:
        raise OutputError(f"cannot encode a {image.shape} {image.dtype} image as {extension}")
    return encoded.tobytes()


def to_8bit(image: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by rounding v * 255 / 65535 (65535 -> 255 exactly); uint8 passes unchanged."""
    if image.dtype == np.uint8:
        return image
    return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _over_white(image: np.ndarray) -> np.ndarray:
    """Flatten RGBA onto white for formats without alpha (what viewers show for transparent areas)."""
    peak = np.iinfo(image.dtype).max
    alpha = image[..., 3:].astype(np.float32) / peak
    flat = image[..., :3].astype(np.float32) * alpha + peak * (1.0 - alpha)
    return np.clip(np.rint(flat), 0, peak).astype(image.dtype)


def write_image(path: Path, image: np.ndarray, quality: int | None = None, *, overwrite: bool = True) -> None:
    """Write atomically (see srcli.files): encoded first, so a bad format fails before any file exists."""
    path = Path(path)
    write_atomic(path, encode_image(image, path.suffix, quality), overwrite=overwrite)
