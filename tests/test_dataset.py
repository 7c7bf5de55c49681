"""ImageDataset decoding and errors; training and evaluation loaders."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reidcli.data.dataset import ImageDataset, load_image
from reidcli.data.loaders import build_eval_loader, build_train_loader
from reidcli.errors import DatasetError
from reidcli.recipe.data import Data

# torchvision 0.29 warns on every decode (its decoders are deprecated for TorchCodec).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture
def frame(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        pid = i // 5
        array = rng.integers(0, 256, (24 + i % 3, 12, 3), dtype=np.uint8)
        suffix = ".png" if i % 2 else ".jpg"
        path = tmp_path / f"{pid:04d}_c{i % 3 + 1}s1_{i:06d}_00{suffix}"
        Image.fromarray(array).save(path)
        rows.append(
            {"path": str(path), "pid": pid + 10, "label": pid, "camid": i % 3, "split": "train"}
        )
    rows[-1]["split"] = "query"
    rows[-1]["label"] = -1
    return pd.DataFrame(rows)


def test_items_are_decoded_rgb_with_their_ids(frame):
    item = ImageDataset(frame)[3]
    expected = torch.from_numpy(np.array(Image.open(frame.path[3]).convert("RGB")))
    assert torch.equal(item["image"], expected.permute(2, 0, 1))
    assert (item["label"], item["pid"], item["camid"], item["index"]) == (0, 10, 0, 3)


def test_grey_images_become_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.zeros((8, 4), dtype=np.uint8)).save(path)
    assert load_image(str(path)).shape == (3, 8, 4)


@pytest.mark.parametrize("content", [None, b"not an image"])
def test_unreadable_files_name_the_path(tmp_path, content):
    path = tmp_path / "broken.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        load_image(str(path))


def test_missing_columns_are_a_dataset_error(frame):
    with pytest.raises(DatasetError, match="camid"):
        ImageDataset(frame.drop(columns="camid"))


def test_train_loader_gives_pk_batches_of_training_rows(frame):
    cfg = Data(height=16, width=8, p=2, k=3, workers=0)
    loader = build_train_loader(frame, cfg, seed=0)
    loader.batch_sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == len(loader) > 0
    for batch in batches:
        assert batch["image"].shape == (6, 3, 16, 8) and batch["image"].dtype == torch.float32
        assert (batch["label"] >= 0).all() and len(set(batch["label"].tolist())) == 2
    assert len(loader.dataset) == 29  # the query row is left out


def test_train_loader_refuses_unlabelled_training_rows(frame):
    frame.loc[0, "label"] = -1
    with pytest.raises(DatasetError, match="label"):
        build_train_loader(frame, Data(p=2, k=2, workers=0), seed=0)


def test_eval_loader_keeps_the_order(frame):
    cfg = Data(height=16, width=8, workers=0, eval_batch_size=7)
    batches = list(build_eval_loader(frame, cfg))
    assert [len(b["index"]) for b in batches] == [7, 7, 7, 7, 2]
    assert torch.cat([b["pid"] for b in batches]).tolist() == frame.pid.tolist()
    again = list(build_eval_loader(frame, cfg))
    assert torch.equal(batches[0]["image"], again[0]["image"])


def test_train_loader_with_workers(frame):
    cfg = Data(height=16, width=8, p=2, k=2, workers=1)
    loader = build_train_loader(frame, cfg, seed=1)
    loader.batch_sampler.set_epoch(0)
    first = next(iter(loader))
    assert first["image"].shape == (4, 3, 16, 8)
