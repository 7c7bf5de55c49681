"""Training and evaluation transforms on uint8 CHW images."""

import pytest
import torch
import torch.nn.functional as F

from reidcli.data.transforms import build_eval_transform, build_train_transform
from reidcli.recipe.data import Data

MEAN = torch.tensor(Data().mean)[:, None, None]
STD = torch.tensor(Data().std)[:, None, None]


def image(seed=0, h=40, w=20):
    return torch.randint(
        0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def cfg(**augment):
    base = {"flip": 0, "crop": {"mode": "none"}, "erasing": {"p": 0}, "cutout": {"p": 0}}
    return Data(height=32, width=16, augment={**base, **augment})


def normalised(x):
    return (x.float() / 255 - MEAN) / STD


def test_eval_transform_resizes_and_normalises_without_randomness():
    t = build_eval_transform(Data(height=32, width=16))
    out = t(image())
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    assert torch.equal(out, t(image()))
    flat = torch.full((3, 50, 30), 0, dtype=torch.uint8) + (MEAN * 255).round().to(torch.uint8)
    assert t(flat).abs().max() < 0.01  # the mean colour maps to 0


def test_train_transform_without_augmentation_equals_eval():
    c = cfg()
    torch.testing.assert_close(build_train_transform(c)(image()), build_eval_transform(c)(image()))


def test_flip():
    out = build_train_transform(cfg(flip=1.0))(image())
    torch.testing.assert_close(out, build_eval_transform(cfg())(image()).flip(-1))


def _is_window(out, big):
    """`out` equals some (32, 16) window of `big`."""
    h, w = out.shape[1:]
    for top in range(big.shape[1] - h + 1):
        for left in range(big.shape[2] - w + 1):
            if torch.allclose(out, big[:, top : top + h, left : left + w], atol=1e-6):
                return True
    return False


def test_resize_crop_is_a_window_of_the_enlarged_image():
    c = cfg(crop={"mode": "resize_crop", "p": 1.0, "scale": 1.25})
    big = build_eval_transform(Data(height=40, width=20))(image())
    outs = []
    for seed in range(4):
        torch.manual_seed(seed)
        outs.append(build_train_transform(c)(image()))
        assert _is_window(outs[-1], big)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_pad_crop_is_a_window_of_the_padded_image():
    c = cfg(crop={"mode": "pad_crop", "p": 1.0, "padding": 3})
    resized = build_eval_transform(cfg())(image())
    # Padding is zero in pixel space: after normalisation that is −mean/std.
    padded = F.pad(resized * STD + MEAN, (3, 3, 3, 3))
    padded = (padded - MEAN) / STD
    torch.manual_seed(1)
    assert _is_window(build_train_transform(c)(image()), padded)


@pytest.mark.parametrize("fill", ["mean", "zero", "random"])
def test_random_erasing_fills_one_rectangle(fill):
    c = cfg(erasing={"p": 1.0, "area": (0.1, 0.3), "aspect": 0.5, "fill": fill})
    clean = build_eval_transform(c)(image())
    torch.manual_seed(3)
    out = build_train_transform(c)(image())
    changed = (out != clean).any(0)
    ys, xs = changed.nonzero(as_tuple=True)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert 0.05 * 512 <= box <= 0.35 * 512 and changed.sum() >= 0.9 * box
    region = out[:, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if fill == "mean":
        assert torch.equal(region, torch.zeros_like(region))
    elif fill == "zero":
        torch.testing.assert_close(region, (-MEAN / STD).expand_as(region).float())
    else:
        assert region.std() > 0.5


def test_cutout_zeroes_square_holes():
    c = cfg(cutout={"p": 1.0, "holes": 1, "size": 0.25})
    torch.manual_seed(0)
    out = build_train_transform(c)(image())
    zero = (out == 0).all(0)
    ys, xs = zero.nonzero(as_tuple=True)
    # One 8×8 square (side 0.25·32), clipped at the border.
    assert 1 <= ys.max() - ys.min() + 1 <= 8 and 1 <= xs.max() - xs.min() + 1 <= 8
    assert zero.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    clean = build_eval_transform(c)(image())
    torch.testing.assert_close(out[:, ~zero], clean[:, ~zero])


def test_lightmbn_defaults_are_reproducible_under_a_seed():
    t = build_train_transform(Data(height=32, width=16))
    torch.manual_seed(5)
    a = t(image())
    torch.manual_seed(5)
    assert torch.equal(a, t(image())) and a.shape == (3, 32, 16)
