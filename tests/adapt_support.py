"""Two synthetic camera networks for the `reid adapt` tests: the second sees the same kind of
people as the first through other optics (a colour cast and a blur), as new cameras would."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from tests.conftest import reid

FOLDERS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
GAIN = np.array([1.3, 0.85, 0.65], dtype=np.float32)  # a warm cast: red up, blue down
BLUR = 1.2


def shifted_network(folder: Path, seed: int, ids: int = 100, images_per_id: int = 8) -> Path:
    """A synthetic dataset (other identities than seed 1's) seen through other optics, as a
    `folder` layout: train/ query/ gallery/ of PID_cCAM_... crops. Returns its folder."""
    raw = folder / "raw"
    done = reid(
        "prepare", "synthetic", "--out", str(raw), "--ids", str(ids), "--cams", "3",
        "--images-per-id", str(images_per_id), "--size", "64x32", "--seed", str(seed),
        "--no-verify",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = folder / "shifted"
    for source, split in FOLDERS.items():
        (out / split).mkdir(parents=True)
        for path in sorted((raw / "images" / source).glob("*.jpg")):
            image = Image.open(path).convert("RGB").filter(ImageFilter.GaussianBlur(BLUR))
            pixels = np.clip(np.asarray(image, dtype=np.float32) * GAIN, 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(out / split / path.name, quality=90)
    return out
