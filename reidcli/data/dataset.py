"""Images listed in a manifest, decoded with torchvision.io."""

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.utils.data
from torchvision.io import ImageReadMode, decode_image

from reidcli.data.images import header_size, pixel_limit_error
from reidcli.errors import DatasetError

# torchvision 0.29 deprecates its decoders in favour of TorchCodec, which is not a dependency;
# decode_image is 2.6x faster than PIL on Market-1501 crops (BENCHMARKS.md), so keep it quietly.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)


def load_image(path: str) -> torch.Tensor:
    """Decode an image file to a (3, H, W) uint8 RGB tensor.

    A PNG or JPEG larger than `MAX_PIXELS` is refused from its header, before decoding.

    Raises:
        DatasetError: the file cannot be read or decoded, or is too large; the message names
            the path.
    """
    try:
        with open(path, "rb") as handle:
            data = bytearray(handle.read())
        size = header_size(data) or _other_format_size(data)
        too_large = pixel_limit_error(path, *size) if size is not None else None
        if too_large:
            raise DatasetError(f"cannot read image {path}: {too_large}")
        return decode_image(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise DatasetError(f"cannot read image {path}: {reason}") from err


def _other_format_size(data: bytearray) -> tuple[int, int] | None:
    """Width and height of a format other than JPEG and PNG (WebP, ...), read by PIL."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None  # the decoder says what is wrong with it


class ImageDataset(torch.utils.data.Dataset):
    """Rows of a manifest (columns path, pid, label, camid) as transformed images.

    Columns are held as numpy arrays (paths as fixed-width strings), so forked loader workers
    share them without copy-on-access growth.

    Args:
        frame: manifest rows, in the order of the dataset indices.
        transform: applied to the (3, H, W) uint8 image; None keeps it as decoded.

    Raises:
        DatasetError: a required column is missing.
    """

    def __init__(self, frame: pd.DataFrame, transform: Callable | None = None):
        missing = {"path", "pid", "label", "camid"} - set(frame.columns)
        if missing:
            raise DatasetError(f"manifest rows lack column(s) {', '.join(sorted(missing))}")
        self.paths = np.asarray(frame["path"].astype(str).to_numpy(), dtype=np.str_)
        self.pids = frame["pid"].to_numpy(dtype=np.int64)
        self.labels = frame["label"].to_numpy(dtype=np.int64)
        self.camids = frame["camid"].to_numpy(dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return `{"image", "label", "pid", "camid", "index"}`; the image is transformed."""
        image = load_image(str(self.paths[index]))
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "label": int(self.labels[index]),
            "pid": int(self.pids[index]),
            "camid": int(self.camids[index]),
            "index": int(index),
        }
