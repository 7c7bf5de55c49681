"""Loading weights into catalog models: our checkpoints, LightMBN checkpoints, ImageNet backbones.

A file is read with `torch.load(weights_only=True)`. Container dicts are unwrapped (`model` for
our training checkpoints, `state_dict` for LightMBN's `model-latest.pth`), and `module.` (DDP /
DataParallel) and `model.` (LightMBN's wrapper) prefixes are stripped. The state dict is then
matched against the model's own layout and the foreign layouts it declares
(`ReIDModel.weight_layouts`); the one that explains every key wins. A key the layout does not know,
a part of the model the layout should cover but does not, or a shape mismatch is a
`CheckpointError` that lists the keys. Classifiers whose class count differs are re-initialised,
with a warning.

`pretrained: imagenet` looks for the backbone's file, in order, in `$REID_WEIGHTS_DIR`,
`$TORCH_HOME/checkpoints` and torch hub's cache `$TORCH_HOME/hub/checkpoints` (`TORCH_HOME`
defaults to `~/.cache/torch`); ResNet weights missing there are fetched through torchvision's
weights API, into the hub cache.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torchvision.models import ResNet50_Weights

from reidcli.errors import CheckpointError
from reidcli.models.base import Layout, ReIDModel, is_classifier_key

logger = logging.getLogger(__name__)

# torchvision's classic ImageNet weights (the ones re-ID papers start from).
_RESNET50_URL = ResNet50_Weights.IMAGENET1K_V1.url
# Backbone -> file name, and the URL for those that can be fetched.
IMAGENET_FILES = {
    "osnet_x1_0": "osnet_x1_0_imagenet.pth",
    "osnet_x0_75": "osnet_x0_75_imagenet.pth",
    "osnet_x0_5": "osnet_x0_5_imagenet.pth",
    "osnet_x0_25": "osnet_x0_25_imagenet.pth",
    "resnet50": _RESNET50_URL.rsplit("/", 1)[-1],
    "resnet50_ibn_a": "resnet50_ibn_a-d9d0bb7b.pth",
}
IMAGENET_URLS = {
    "resnet50": _RESNET50_URL,
    "resnet50_ibn_a": (
        "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth"
    ),
}
OSNET_SOURCE = "the torchreid model zoo (https://kaiyangzhou.github.io/deep-person-reid/MODEL_ZOO)"
OWN_LAYOUT = Layout("reid", lambda key: [key])
_LISTED = 12  # keys shown in an error message


@dataclass
class LoadReport:
    """What `load_weights` did.

    Attributes:
        source: file path or "<state dict>".
        layout: name of the matched layout ("reid", "lightmbn", "torchreid_osnet", ...).
        loaded: number of the model's state entries filled from the source.
        reinitialised: classifier keys kept at their initial values (class count differs/absent).
        ignored: source keys known to the layout but unused (e.g. an ImageNet classifier).
    """

    source: str
    layout: str
    loaded: int
    reinitialised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.source}: {self.loaded} tensors loaded ({self.layout} layout)"
        if self.reinitialised:
            text += f"; classifiers re-initialised: {', '.join(self.reinitialised)}"
        if self.ignored:
            text += f"; unused: {_listing(self.ignored)}"
        return text


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _LISTED else "")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Reads a weights file with `weights_only=True` and normalises it (see `unwrap_state_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    return unwrap_state_dict(load_torch_file(path), str(path))


def load_torch_file(path: Path) -> object:
    """`torch.load(path, weights_only=True)` onto the CPU, with errors that say what the file is.

    A file that is not a PyTorch checkpoint (a text file, a truncated download) is named as such.
    A checkpoint that holds pickled objects other than tensors and plain containers is refused:
    unpickling them could run code, and no option here turns that check off.

    Raises:
        CheckpointError: the file cannot be read safely as a PyTorch checkpoint.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
    # torch.save writes a zip archive; files from before PyTorch 1.6 are a pickle (protocol 2).
    if not (head.startswith(b"PK\x03\x04") or head[:2] == b"\x80\x02"):
        kind = "empty" if size == 0 else "not a PyTorch checkpoint"
        raise CheckpointError(f"{path}: {kind} ({size:,} bytes); expected a file from torch.save")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found:
            raise CheckpointError(
                f"{path}: the checkpoint holds pickled Python objects ({found.group(1)}) "
                "besides tensors; refused, because loading them could run arbitrary code. "
                "Re-save only its tensors (the model's state_dict) with torch.save, in an "
                "environment that trusts the file"
            ) from None
        if "Weights only load failed" in str(err):
            raise CheckpointError(
                f"{path}: the checkpoint holds data that only a full unpickler reads; refused, "
                "because that could run arbitrary code. Re-save only its tensors with torch.save"
            ) from None
        raise CheckpointError(
            f"{path}: truncated or corrupted PyTorch checkpoint ({size:,} bytes); "
            "download or copy it again"
        ) from None


def unwrap_state_dict(obj: object, source: str = "<state dict>") -> dict[str, Tensor]:
    """Finds the state dict in a checkpoint and strips `module.` and `model.` prefixes."""
    while isinstance(obj, dict) and not all(isinstance(v, Tensor) for v in obj.values()):
        inner = next(
            (obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), dict)), None
        )
        if inner is None:
            raise CheckpointError(
                f"{source}: not a state dict and no 'model' or 'state_dict' entry in it "
                f"(keys: {_listing(sorted(map(str, obj)))})"
            )
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source}: no tensors found")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    # LightMBN saves its wrapper module, whose network sits under `model.`.
    if all(k.startswith("model.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    return state


def _translate(layout: Layout, state: dict[str, Tensor], own: dict[str, Tensor]):
    mapped: dict[str, Tensor] = {}
    ignored: list[str] = []
    unexpected: list[str] = []
    for key, value in state.items():
        targets = layout.key_map(key)
        if targets == []:
            ignored.append(key)
        elif targets is None or any(t not in own for t in targets):
            unexpected.append(key)
        else:
            mapped.update(dict.fromkeys(targets, value))
    return mapped, ignored, unexpected


def _match_layout(model: ReIDModel, state: dict[str, Tensor], own: dict[str, Tensor]):
    """The layout explaining every key (most keys mapped first), or an error naming the strays."""
    results = [(lay, *_translate(lay, state, own)) for lay in (OWN_LAYOUT, *model.weight_layouts())]
    best = max(results, key=lambda r: (not r[3], len(r[1])))
    layout, mapped, ignored, unexpected = best
    if unexpected:
        raise CheckpointError(
            f"keys not in {type(model).__name__} (closest layout: {layout.name}): "
            f"{_listing(unexpected)}"
        )
    return layout, mapped, ignored


def _check_shapes(mapped, own, strict_classifier: bool) -> list[str]:
    """Drops classifier entries whose shape differs (unless strict); other mismatches are errors."""
    bad = [k for k, v in mapped.items() if v.shape != own[k].shape]
    wrong = [k for k in bad if strict_classifier or not is_classifier_key(k)]
    if wrong:
        details = [f"{k} {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong]
        raise CheckpointError(f"shape mismatch: {_listing(details)}")
    for key in bad:
        del mapped[key]
    return bad


def load_weights(model: ReIDModel, path_or_state, *, strict_classifier: bool = False) -> LoadReport:
    """Loads a weights file or state dict into `model` in place.

    Args:
        model: a catalog model.
        path_or_state: path to a `.pth`/`.pt` file, or a (possibly wrapped) state dict.
        strict_classifier: treat a classifier of another class count as an error (resume/eval)
            instead of re-initialising it (fine-tuning).

    Returns:
        A `LoadReport`.

    Raises:
        CheckpointError: unreadable file, unknown keys, missing keys, or shape mismatch.
    """
    if isinstance(path_or_state, str | os.PathLike):
        source = str(path_or_state)
        state = read_state_dict(path_or_state)
    else:
        source = "<state dict>"
        state = unwrap_state_dict(path_or_state, source)
    own = model.state_dict()
    layout, mapped, ignored = _match_layout(model, state, own)
    stale = _check_shapes(mapped, own, strict_classifier)
    required = [k for k in own if k.startswith(layout.covers)]
    missing = [k for k in required if k not in mapped and k not in stale]
    absent = [k for k in missing if strict_classifier or not is_classifier_key(k)]
    if absent:
        raise CheckpointError(
            f"{source}: missing from the {layout.name} weights: {_listing(absent)}"
        )
    model.load_state_dict({**own, **mapped})
    report = LoadReport(source, layout.name, len(mapped), sorted(stale + missing), ignored)
    if report.reinitialised:
        logger.warning("%s: re-initialised classifiers %s", source, _listing(report.reinitialised))
    logger.info("%s", report)
    return report


def weight_dirs() -> list[Path]:
    """Where ImageNet weight files are looked for, in order."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    dirs = [torch_home / "checkpoints", Path(torch.hub.get_dir()) / "checkpoints"]
    if os.environ.get("REID_WEIGHTS_DIR"):
        dirs.insert(0, Path(os.environ["REID_WEIGHTS_DIR"]))
    return list(dict.fromkeys(dirs))


def download_url(url: str, dst: Path) -> None:
    """Downloads `url` to `dst` (torch hub's downloader, with its hash check)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=dst.stem.rsplit("-", 1)[-1])


def find_imagenet_file(backbone: str) -> Path:
    """The ImageNet weights file of `backbone`, fetched into the hub cache when it has a URL.

    Raises:
        CheckpointError: when the file is absent and cannot be fetched (offline); the message
            names the file and where to place it.
    """
    if backbone not in IMAGENET_FILES:
        raise CheckpointError(f"no ImageNet weights are known for backbone {backbone!r}")
    name = IMAGENET_FILES[backbone]
    dirs = weight_dirs()
    for folder in dirs:
        if (folder / name).is_file():
            return folder / name
    url = IMAGENET_URLS.get(backbone)
    reason = f"it is distributed through {OSNET_SOURCE}"
    if url is not None:
        target = Path(torch.hub.get_dir()) / "checkpoints" / name
        try:
            download_url(url, target)
            return target
        except Exception as exc:  # offline: URLError, OSError, hash mismatch, ...
            reason = f"downloading {url} failed ({exc})"
    raise CheckpointError(
        f"pretrained: imagenet needs {name} for {backbone}, and {reason}; place the file in "
        f"{dirs[0]} (or set REID_WEIGHTS_DIR); searched: {', '.join(map(str, dirs))}"
    )
