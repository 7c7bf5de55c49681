"""Catalog models: the training/eval contract, embedding, exact sizes, Top-DropBlock."""

import pytest
import torch
import torch.nn.functional as F

from reidcli.errors import RecipeError
from reidcli.models import (
    MODEL_BUILDERS,
    ReIDOutput,
    build_model,
    count_macs,
    count_parameters,
    get_builder,
)
from reidcli.models.lmbn import build_lmbn_n, build_lmbn_r, top_drop_rows
from reidcli.models.osnet import OSNET_WIDTHS, build_osnet
from reidcli.models.resnet import ResNet50
from reidcli.recipe.model import MIN_INPUT_SIDE, MODELS, Model

NUM_CLASSES = 7
_cache: dict[str, torch.nn.Module] = {}


pytestmark = pytest.mark.usefixtures("one_thread")


def catalog_model(name: str) -> torch.nn.Module:
    """One instance per name for the whole module (the ResNet-50 models take a while to build)."""
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = build_model(Model(name=name, feats=64, parts=3), NUM_CLASSES)
    return _cache[name]


def images(batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 32, generator=torch.Generator().manual_seed(seed))


def test_catalog_matches_schema():
    assert tuple(MODEL_BUILDERS) == MODELS


def test_unknown_name_lists_choices_and_closest():
    with pytest.raises(RecipeError, match=r"did you mean 'lmbn_n'") as info:
        get_builder("lmbn-n")
    assert "osnet_x0_25" in str(info.value)


def test_fixed_stride_models_refuse_last_stride():
    with pytest.raises(RecipeError, match="last_stride"):
        build_model(Model(name="osnet_x0_25", last_stride=1), NUM_CLASSES)


@pytest.mark.parametrize("name", MODELS)
def test_training_outputs_and_gradients(name):
    model = catalog_model(name).train()
    out = model(images())
    assert isinstance(out, ReIDOutput)
    assert out.logits and out.features
    for logits in out.logits:
        assert logits.shape == (4, NUM_CLASSES)
    for feature in out.features:
        assert feature.ndim == 2 and feature.shape[0] == 4
    # the embedding evaluation computes, from the training pass (what reid adapt learns on)
    assert out.embedding.shape == (4, model.embedding_dim)
    loss = sum(F.cross_entropy(x, torch.arange(4)) for x in out.logits)
    loss = loss + sum(f.pow(2).mean() for f in out.features) + out.embedding.pow(2).mean()
    model.zero_grad()
    loss.backward()
    # Every trainable parameter gets a finite gradient: DDP needs no find_unused_parameters.
    for key, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, key
            assert torch.isfinite(param.grad).all(), key


@pytest.mark.parametrize("name", MODELS)
def test_eval_embedding(name):
    model = catalog_model(name).eval()
    x = images(2, seed=2)
    with torch.no_grad():
        raw = model(x)
        assert raw.shape == (2, sum(model.branch_dims)) == (2, model.embedding_dim)
        assert torch.equal(raw, model(x))  # deterministic in eval mode
        flipped = raw + model(x.flip(-1))
        emb = model.embed(x)
        whole = model.embed(x, flip=False, normalize="whole")
        none = model.embed(x, flip=False, normalize="none")
    expected = torch.cat([F.normalize(b, dim=1) for b in flipped.split(model.branch_dims, 1)], 1)
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-5)
    for branch in emb.split(model.branch_dims, 1):
        torch.testing.assert_close(branch.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(whole, F.normalize(raw, dim=1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(none, raw)


def _computes_at(model: torch.nn.Module, side: int) -> bool:
    images = torch.rand(2, 3, side, side)
    try:
        with torch.no_grad():
            model.eval().embed(images, flip=False, normalize="per_branch")
            model.train()(images)
    except (RuntimeError, ValueError):
        return False
    finally:
        model.eval()
    return True


@pytest.mark.parametrize("name", MODELS)
def test_smallest_input_side_is_the_schema_bound(name):
    smallest = MIN_INPUT_SIDE[name]
    model = catalog_model(name)
    assert _computes_at(model, smallest)
    if smallest > 1:
        assert not _computes_at(model, smallest - 1)


def test_embed_refuses_training_mode():
    model = catalog_model("osnet_x0_25").train()
    with pytest.raises(RuntimeError, match="eval"):
        model.embed(images(2))


@pytest.mark.parametrize("name", ["lmbn_n", "osnet_x0_25"])
def test_bf16_autocast_and_channels_last(name):
    model = catalog_model(name).eval()
    x = images(2, seed=3)
    with torch.no_grad():
        reference = model.embed(x)
        model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.embed(x.to(memory_format=torch.channels_last))
        model.to(memory_format=torch.contiguous_format)
    assert torch.isfinite(low).all()
    # Unit branches: bf16 rounding keeps them close in cosine terms.
    cos = (low.float() * reference).split(model.branch_dims, 1)
    assert min(c.sum(1).min().item() for c in cos) > 0.95


@pytest.mark.parametrize(
    ("builder", "total", "without"),
    [(build_lmbn_n, 9_152_280, 6_460_696), (build_lmbn_r, 77_538_880, 74_847_296)],
)
def test_lmbn_parameter_counts(builder, total, without):
    model = builder(751)
    assert count_parameters(model) == total
    assert count_parameters(model, exclude_classifier=True) == without


@pytest.mark.parametrize(("builder", "gmacs"), [(build_lmbn_n, 2.43), (build_lmbn_r, 12.10)])
def test_lmbn_macs(builder, gmacs):
    assert count_macs(builder(751), 384, 128) == pytest.approx(gmacs * 1e9, rel=0.01)


@pytest.mark.parametrize(
    ("name", "params", "mmacs"),
    [
        ("osnet_x1_0", 2_169_508, 978.9),
        ("osnet_x0_75", 1_285_754, 571.8),
        ("osnet_x0_5", 630_034, 272.9),
        ("osnet_x0_25", 201_864, 82.3),
    ],
)
def test_osnet_sizes(name, params, mmacs):
    assert name in OSNET_WIDTHS
    backbone = build_osnet(name)
    assert count_parameters(backbone) == params
    assert count_macs(backbone, 256, 128) == pytest.approx(mmacs * 1e6, rel=0.01)


@pytest.mark.parametrize(("last_stride", "gmacs"), [(2, 2.67), (1, 4.05)])
def test_resnet50_sizes(last_stride, gmacs):
    backbone = ResNet50(last_stride)
    assert count_parameters(backbone) == 23_508_032
    assert count_macs(backbone, 256, 128) == pytest.approx(gmacs * 1e9, rel=0.01)


def test_count_parameters_counts_shared_modules_once():
    layer = torch.nn.Linear(3, 3)
    assert count_parameters(torch.nn.Sequential(layer, layer)) == 12


@pytest.mark.parametrize(("height", "ratio", "rows"), [(24, 0.33, 8), (12, 0.33, 4), (5, 0.1, 0)])
def test_top_drop_rows_matches_per_sample_loop(height, ratio, rows):
    x = torch.randn(3, 6, height, 4, generator=torch.Generator().manual_seed(height))
    dropped = top_drop_rows(x, ratio)
    for i in range(3):
        # Brute force: a row's energy is the peak over width of the channel-summed squares.
        energy = [max((x[i, :, r, c] ** 2).sum().item() for c in range(4)) for r in range(height)]
        top = sorted(range(height), key=lambda r: energy[r], reverse=True)[:rows]
        for r in range(height):
            expected = torch.zeros_like(x[i, :, r]) if r in top else x[i, :, r]
            assert torch.equal(dropped[i, :, r], expected)
