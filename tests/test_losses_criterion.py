"""Criterion: weighted terms over every head, named parts, centres, recipe errors."""

from types import SimpleNamespace

import pytest
import torch
from pydantic import TypeAdapter

from reidcli.errors import RecipeError
from reidcli.losses.criterion import build_criterion
from reidcli.recipe.loss import (
    Center,
    CrossEntropy,
    LossTerm,
    MultiSimilarity,
    Triplet,
    parse_loss_string,
)
from tests.test_losses import ref_center, ref_cross_entropy, ref_multi_similarity

# Float results that differ between CPUs: `make test-portable` runs these under each kernel set.
pytestmark = pytest.mark.portable


def lmbn_output(gen, batch=24, classes=30, dim=32, dtype=torch.float64):
    labels = torch.arange(batch // 4).repeat_interleave(4)
    logits = [torch.randn(batch, classes, generator=gen, dtype=dtype) * 3 for _ in range(7)]
    feats = [torch.randn(batch, dim, generator=gen, dtype=dtype) for _ in range(3)]
    return SimpleNamespace(logits=logits, features=feats), labels


def test_lightmbn_composite_equals_hand_written_sum():
    terms = TypeAdapter(list[LossTerm]).validate_python(
        parse_loss_string("0.5*CrossEntropy+0.5*MSLoss")
    )
    criterion = build_criterion(terms, num_classes=30, feat_dim=32)
    output, labels = lmbn_output(torch.Generator().manual_seed(0))
    total, parts = criterion(output, labels)
    ce = sum(ref_cross_entropy(z, labels, 0.1) for z in output.logits)
    ms = sum(ref_multi_similarity(f, labels, 0.1) for f in output.features)
    torch.testing.assert_close(parts["cross_entropy"], 0.5 * ce)
    torch.testing.assert_close(parts["multi_similarity"], 0.5 * ms)
    torch.testing.assert_close(total, 0.5 * ce + 0.5 * ms)
    assert list(parts) == ["cross_entropy", "multi_similarity"]


def test_bf16_heads_give_a_float32_total():
    criterion = build_criterion([CrossEntropy(), MultiSimilarity(margin=0.7)], 30, 32)
    output, labels = lmbn_output(torch.Generator().manual_seed(1), dtype=torch.bfloat16)
    total, _ = criterion(output, labels)
    assert total.dtype == torch.float32 and torch.isfinite(total)


def test_unknown_term_is_a_recipe_error():
    with pytest.raises(RecipeError, match="unknown loss term 'arcface'"):
        build_criterion([{"name": "arcface", "weight": 1.0}], 10, 8)
    with pytest.raises(RecipeError, match="did you mean 'triplet'"):
        build_criterion([{"name": "triplett"}], 10, 8)
    with pytest.raises(RecipeError, match="no term"):
        build_criterion([], 10, 8)


def test_mapping_terms_are_validated():
    criterion = build_criterion([{"name": "triplet", "margin": 0.0}], 10, 8)
    assert criterion.terms[0].fn.keywords == {"margin": 0.0}
    with pytest.raises(RecipeError, match="invalid loss term"):
        build_criterion([{"name": "triplet", "margin": -1}], 10, 8)


def test_a_term_without_heads_of_its_kind_is_an_error():
    criterion = build_criterion([CrossEntropy(), Triplet()], 10, 8)
    output = SimpleNamespace(logits=[], features=[torch.randn(4, 8)])
    with pytest.raises(RecipeError, match="needs logits"):
        criterion(output, torch.tensor([0, 0, 1, 1]))


def test_repeated_terms_log_apart():
    criterion = build_criterion([Triplet(margin=0.3), Triplet(margin=0.0, weight=2.0)], 10, 8)
    output = SimpleNamespace(logits=[], features=[torch.randn(4, 8), torch.randn(4, 8)])
    total, parts = criterion(output, torch.tensor([0, 0, 1, 1]))
    assert set(parts) == {"triplet", "triplet_2"}
    torch.testing.assert_close(total, parts["triplet"] + parts["triplet_2"])


@pytest.mark.parametrize("seed", range(3))
def test_center_terms_hold_one_centre_set_per_feature_width(seed):
    torch.manual_seed(seed)
    criterion = build_criterion([Center(weight=0.0005)], num_classes=5, feat_dim=(8, 4, 8))
    assert set(criterion.state_dict()) == {"centers.4", "centers.8"}
    assert criterion.center_lr == 0.5
    labels = torch.tensor([0, 0, 3, 3])
    feats = [torch.randn(4, 8), torch.randn(4, 4)]
    total, parts = criterion(SimpleNamespace(logits=[], features=feats), labels)
    expected = sum(ref_center(f, labels, criterion.centers[str(f.shape[1])]) for f in feats)
    torch.testing.assert_close(parts["center"], 0.0005 * expected)
    total.backward()
    # The centre gradient is that of the unweighted loss: the weight does not slow the centres.
    c8 = criterion.centers["8"]
    grad = -2 * (feats[0] - c8.detach()[labels]) / 4
    torch.testing.assert_close(c8.grad[[0, 3]], torch.stack([grad[:2].sum(0), grad[2:].sum(0)]))
    with pytest.raises(RecipeError, match="width 4, 8"):
        criterion(SimpleNamespace(logits=[], features=[torch.randn(4, 6)]), labels)


def test_without_center_there_are_no_parameters():
    criterion = build_criterion([CrossEntropy()], 10, 8)
    assert list(criterion.parameters()) == [] and criterion.center_lr is None
