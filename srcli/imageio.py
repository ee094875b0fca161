"""Reading and writing images: 8/16-bit, grey, alpha, EXIF orientation, refusal of broken files, atomic writes.

Arrays handed to the rest of srcli are RGB(A) in HxW (grey) or HxWxC (C = 3 or 4), dtype uint8 or uint16.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from srcli.errors import InputImageError, OutputError
from srcli.files import write_atomic

# OpenCV logs decoder warnings straight to stderr; srcli reports problems itself, as one line.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")
SIXTEEN_BIT_EXTENSIONS = (".png", ".tif", ".tiff")
ALPHA_EXTENSIONS = (".png", ".webp", ".tif", ".tiff", ".bmp")

# 120 MP covers the largest camera sensors sold (about 102 MP, medium format) while refusing decompression
# bombs: a few-KB PNG that claims 100000x100000 pixels would otherwise ask for 30 GB before anything fails.
# The x4 output of such an input is 1.9 GP (5.8 GB as 8-bit RGB), about the most a workstation holds.
DEFAULT_MAX_PIXELS = 120_000_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def read_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image the way a viewer shows it (EXIF orientation applied), refusing anything broken."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputImageError(f"{path}: is a directory, not an image") from None
    except OSError as error:
        raise InputImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not data:
        raise InputImageError(f"{path}: empty file (0 bytes)")
    _check_complete(path, data)
    size = header_size(data)
    if size is not None:
        _check_pixels(path, *size, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputImageError(f"{path}: not a readable image (PNG, JPEG, WebP, BMP or TIFF expected)")
    _check_pixels(path, image.shape[1], image.shape[0], max_pixels)
    if image.dtype not in (np.uint8, np.uint16):
        raise InputImageError(f"{path}: {image.dtype} samples are not supported (8- or 16-bit integers only)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return orient(image, exif_orientation(data))


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise InputImageError(
            f"{path}: {width}x{height} is {width * height / 1e6:.1f} MP, over the {max_pixels / 1e6:g} MP limit "
            f"(raise it with --max-pixels)"
        )


def _check_complete(path: Path, data: bytes) -> None:
    """Refuse files cut short: decoders would otherwise fill the missing rows with grey and carry on."""
    if data.startswith(_PNG_SIGNATURE) and _PNG_END not in data[-4096:]:
        raise InputImageError(f"{path}: truncated PNG (no IEND chunk): the file was cut short")
    # In JPEG entropy-coded data 0xFF is always stuffed, so the last start-of-scan must be followed by an end.
    if data.startswith(b"\xff\xd8") and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise InputImageError(f"{path}: truncated JPEG (no end-of-image marker): the file was cut short")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of any format srcli reads, before decoding, so huge images cost nothing.

    None when the header cannot be read; the decoded size is then checked instead.
    """
    try:
        for reader in (_png_size, _jpeg_size, _webp_size, _bmp_size, _tiff_size):
            size = reader(data)
            if size is not None:
                return size
    except struct.error:
        return None
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    position = 2
    while position + 9 < len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            position += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + length
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


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth and ImageLength of the first image (IFD) of a classic TIFF."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    found: dict[int, int] = {}
    for index in range(count):
        tag, kind = struct.unpack(order + "HH", data[ifd + 2 + 12 * index : ifd + 6 + 12 * index])
        value_at = ifd + 10 + 12 * index
        if tag in (256, 257) and kind in (3, 4):  # SHORT or LONG, stored in the entry itself
            width = 2 if kind == 3 else 4
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), data[value_at : value_at + width])[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


# --- EXIF orientation --------------------------------------------------------------------------------------


def _exif_block(data: bytes) -> bytes | None:
    """The TIFF-structured EXIF block of a JPEG (APP1), PNG (eXIf) or WebP (EXIF chunk), if any."""
    if data.startswith(b"\xff\xd8"):
        position = 2
        while position + 4 <= len(data) and data[position] == 0xFF:
            marker = data[position + 1]
            if marker == 0xDA:  # start of scan: no metadata after this
                return None
            length = struct.unpack(">H", data[position + 2 : position + 4])[0]
            body = data[position + 4 : position + 2 + length]
            if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
                return body[6:]
            position += 2 + length
        return None
    if data.startswith(_PNG_SIGNATURE):
        position = 8
        while position + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[position : position + 8])
            if kind == b"eXIf":
                return data[position + 8 : position + 8 + length]
            if kind in (b"IDAT", b"IEND"):
                return None
            position += 12 + length
        return None
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        position = 12
        while position + 8 <= len(data):
            kind, length = struct.unpack("<4sI", data[position : position + 8])
            if kind == b"EXIF":
                block = data[position + 8 : position + 8 + length]
                return block[6:] if block.startswith(b"Exif\x00\x00") else block
            position += 8 + length + (length & 1)
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
