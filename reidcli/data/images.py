"""Image verification: decode every image once so that training never meets a broken file."""

from concurrent.futures import ProcessPoolExecutor

from PIL import Image, UnidentifiedImageError

FORMATS = ("JPEG", "PNG")
CHUNK = 512


def check_image(path: str) -> str | None:
    """Decode one image fully.

    Returns:
        None when the image decodes, otherwise the reason it cannot be used.
    """
    try:
        with Image.open(path) as image:
            if image.format not in FORMATS:
                return f"{image.format} image, expected JPEG or PNG"
            image.load()
    except UnidentifiedImageError:
        return "not an image"
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
