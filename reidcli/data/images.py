"""Image verification: decode every image once so that training never meets a broken file;
the size limit that keeps a hostile file from taking the machine's memory."""

import struct
from concurrent.futures import ProcessPoolExecutor

from PIL import Image, UnidentifiedImageError

FORMATS = ("JPEG", "PNG")
CHUNK = 512
# Pixels an image may have: 8192 x 8192, far beyond any person crop. A larger one (a
# "decompression bomb": a small file that decodes to gigabytes) is refused before decoding.
MAX_PIXELS = 1 << 26
HEADER_BYTES = 1 << 16  # where a JPEG's frame header is found (after its EXIF and ICC blocks)


def pixel_limit_error(path: str, width: int, height: int) -> str | None:
    """Why an image of this size is refused, or None."""
    if width * height > MAX_PIXELS:
        return (
            f"{width}x{height} pixels exceed the limit of {MAX_PIXELS:,} "
            "(reidcli.data.images.MAX_PIXELS; a decompression bomb?)"
        )
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG or JPEG header without decoding; None for other data."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:  # JPEG segments: 0xFF, marker, 2-byte length; the frame header has the size
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 1 if marker == 0xFF else 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def check_image(path: str) -> str | None:
    """Decode one image fully.

    Returns:
        None when the image decodes, otherwise the reason it cannot be used.
    """
    try:
        with open(path, "rb") as handle:
            size = header_size(handle.read(HEADER_BYTES))
        if size is not None and (too_large := pixel_limit_error(path, *size)):
            return too_large
        with Image.open(path) as image:
            if image.format not in FORMATS:
                return f"{image.format} image, expected JPEG or PNG"
            image.load()
    except UnidentifiedImageError:
        return "not an image"
    except Image.DecompressionBombError as err:
        return f"refused: {err}"
    except (OSError, SyntaxError, ValueError) as err:
        return f"corrupt ({err})"
    return None


def _check_chunk(paths: list[str]) -> list[tuple[str, str]]:
    return [(path, reason) for path in paths if (reason := check_image(path)) is not None]


def verify_images(paths: list[str], workers: int | None = None) -> list[tuple[str, str]]:
    """Decode every image, optionally in worker processes.

    One process is the default: on the 2-core development machine, shared with other jobs, two
    worker processes were slower (benchmarks/prepare.py, BENCHMARKS.md); small Market-style
    JPEGs decode in about 0.1 ms each, so the pool's overhead is not repaid.

    Args:
        paths: image files.
        workers: processes to use (default 1).

    Returns:
        (path, reason) for each image that cannot be used, in the order of `paths`.
    """
    if workers is None or workers <= 1:
        return _check_chunk(list(paths))
    chunks = [list(paths[i : i + CHUNK]) for i in range(0, len(paths), CHUNK)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [bad for found in pool.map(_check_chunk, chunks) for bad in found]
