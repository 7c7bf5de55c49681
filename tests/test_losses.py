"""Each loss against a brute-force per-sample reference, values and gradients."""

import math

import pytest
import torch

from reidcli.losses.center import center_loss
from reidcli.losses.cross_entropy import cross_entropy, focal
from reidcli.losses.multi_similarity import multi_similarity
from reidcli.losses.triplet import batch_hard_triplet, semihard_triplet

# Float results that differ between CPUs: `make test-portable` runs these under each kernel set.
pytestmark = pytest.mark.portable


@pytest.fixture(autouse=True)
def _float64():
    # References and losses are compared in float64 so that only the formulation can differ.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _dist(a, b):
    return (a - b).pow(2).sum().clamp_min(1e-12).sqrt()


def ref_cross_entropy(logits, labels, eps):
    total = 0
    n, c = logits.shape
    for i in range(n):
        log_p = logits[i] - torch.logsumexp(logits[i], 0)
        for j in range(c):
            q = (1 - eps) * (j == labels[i]) + eps / c
            total = total - q * log_p[j]
    return total / n


def ref_focal(logits, labels, alpha, gamma):
    total = 0
    for i in range(len(logits)):
        p = torch.softmax(logits[i], 0)[labels[i]]
        total = total - alpha * (1 - p) ** gamma * torch.log(p)
    return total / len(logits)


def ref_batch_hard(x, labels, margin):
    losses = []
    for a in range(len(x)):
        pos = [
            _dist(x[a], x[j]) if j != a else x.new_zeros(())
            for j in range(len(x))
            if labels[j] == labels[a]
        ]
        neg = [_dist(x[a], x[j]) for j in range(len(x)) if labels[j] != labels[a]]
        if not neg:
            continue
        gap = max(pos) - min(neg)
        losses.append(torch.log1p(torch.exp(gap)) if margin == 0 else torch.relu(gap + margin))
    return sum(losses) / len(losses) if losses else x.sum() * 0


def ref_semihard(x, labels, margin):
    losses = []
    for a in range(len(x)):
        neg = [_dist(x[a], x[j]) for j in range(len(x)) if labels[j] != labels[a]]
        for p in range(len(x)):
            if p == a or labels[p] != labels[a] or not neg:
                continue
            d_ap = _dist(x[a], x[p])
            farther = [d for d in neg if d > d_ap]
            d_an = min(farther) if farther else max(neg)
            losses.append(torch.relu(d_ap - d_an + margin))
    return sum(losses) / len(losses) if losses else x.sum() * 0


def ref_multi_similarity(x, labels, margin, alpha=2.0, beta=40.0, lam=0.5):
    x = x / x.norm(dim=1, keepdim=True)
    total = x.sum() * 0
    for i in range(len(x)):
        sims = [x[i] @ x[j] for j in range(len(x))]
        pos = [s for j, s in enumerate(sims) if labels[j] == labels[i] and s < 1 - 1e-5]
        neg = [s for j, s in enumerate(sims) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        neg_kept = [s for s in neg if s + margin > min(pos)]
        pos_kept = [s for s in pos if s - margin < max(neg)]
        if not neg_kept or not pos_kept:
            continue
        pos_loss = torch.log(1 + sum(torch.exp(-alpha * (s - lam)) for s in pos_kept)) / alpha
        neg_loss = torch.log(1 + sum(torch.exp(beta * (s - lam)) for s in neg_kept)) / beta
        total = total + pos_loss + neg_loss
    return total / len(x)


def ref_center(x, labels, centers):
    return sum(((x[i] - centers[labels[i]]) ** 2).sum() for i in range(len(x))) / len(x)


def pk_labels(p, k, gen):
    return torch.randperm(50, generator=gen)[:p].repeat_interleave(k)


def features(labels, spread, gen, dim=16):
    """Identity clusters: small `spread` keeps them apart (easy), large mixes them (hard)."""
    means = torch.randn(100, dim, generator=gen) * 3
    return means[labels] + spread * torch.randn(len(labels), dim, generator=gen)


SHAPES = [(2, 2), (4, 3), (6, 4), (3, 1)]
SPREADS = [0.1, 3.0, 30.0]


def assert_same(fn, ref, *inputs):
    """Values and gradients (w.r.t. every float input) of `fn` and `ref` agree."""
    ins_a = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    ins_b = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out_a, out_b = fn(*ins_a), ref(*ins_b)
    torch.testing.assert_close(out_a, out_b, rtol=1e-7, atol=1e-9)
    out_a.backward()
    out_b.backward()
    for a, b in zip(ins_a, ins_b, strict=True):
        if a.is_floating_point():
            ga = torch.zeros_like(a) if a.grad is None else a.grad
            gb = torch.zeros_like(b) if b.grad is None else b.grad
            torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-9)
    return out_a.item()


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(1, 3), (8, 5), (16, 751)])
def test_cross_entropy(eps, shape):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(*shape, generator=gen) * 4
    labels = torch.randint(0, shape[1], (shape[0],), generator=gen)
    assert_same(
        lambda z, y: cross_entropy(z, y, eps),
        lambda z, y: ref_cross_entropy(z, y, eps),
        logits,
        labels,
    )


@pytest.mark.parametrize("gamma", [0.0, 2.0, 3.5])
@pytest.mark.parametrize("shape", [(1, 3), (8, 5), (16, 40)])
def test_focal(gamma, shape):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(*shape, generator=gen) * 4
    labels = torch.randint(0, shape[1], (shape[0],), generator=gen)
    assert_same(
        lambda z, y: focal(z, y, 0.25, gamma),
        lambda z, y: ref_focal(z, y, 0.25, gamma),
        logits,
        labels,
    )


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, labels = torch.randn(6, 9), torch.arange(6)
    torch.testing.assert_close(focal(logits, labels, 1.0, 0.0), cross_entropy(logits, labels, 0))


@pytest.mark.parametrize("margin", [0.0, 0.3, 1.2])
@pytest.mark.parametrize("spread", SPREADS)
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_hard_triplet(margin, spread, shape):
    gen = torch.Generator().manual_seed(2)
    labels = pk_labels(*shape, gen)
    x = features(labels, spread, gen)
    assert_same(
        lambda f, y: batch_hard_triplet(f, y, margin),
        lambda f, y: ref_batch_hard(f, y, margin),
        x,
        labels,
    )


def test_batch_hard_triplet_easy_batch_is_zero_and_hard_batch_positive():
    gen = torch.Generator().manual_seed(3)
    labels = pk_labels(4, 4, gen)
    assert batch_hard_triplet(features(labels, 0.01, gen), labels, 0.3).item() == 0
    assert batch_hard_triplet(features(labels, 30.0, gen), labels, 0.3).item() > 0


@pytest.mark.parametrize("margin", [0.1, 0.3, 1.2])
@pytest.mark.parametrize("spread", SPREADS)
@pytest.mark.parametrize("shape", SHAPES)
def test_semihard_triplet(margin, spread, shape):
    gen = torch.Generator().manual_seed(4)
    labels = pk_labels(*shape, gen)
    x = features(labels, spread, gen)
    assert_same(
        lambda f, y: semihard_triplet(f, y, margin),
        lambda f, y: ref_semihard(f, y, margin),
        x,
        labels,
    )


@pytest.mark.parametrize("fn", [batch_hard_triplet, semihard_triplet, multi_similarity])
def test_metric_losses_without_negatives_are_zero_with_gradient(fn):
    x = torch.randn(4, 8, requires_grad=True)
    loss = fn(x, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("margin", [0.1, 0.7])
@pytest.mark.parametrize("spread", SPREADS)
@pytest.mark.parametrize("shape", SHAPES)
def test_multi_similarity(margin, spread, shape):
    gen = torch.Generator().manual_seed(5)
    labels = pk_labels(*shape, gen)
    x = features(labels, spread, gen)
    assert_same(
        lambda f, y: multi_similarity(f, y, margin),
        lambda f, y: ref_multi_similarity(f, y, margin),
        x,
        labels,
    )


def test_multi_similarity_mining_changes_the_value():
    gen = torch.Generator().manual_seed(6)
    labels = pk_labels(4, 4, gen)
    x = features(labels, 3.0, gen)
    assert multi_similarity(x, labels, 0.1).item() != pytest.approx(
        multi_similarity(x, labels, 0.7).item()
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_center_loss(shape):
    gen = torch.Generator().manual_seed(7)
    labels = pk_labels(*shape, gen)
    x = features(labels, 1.0, gen)
    centers = torch.randn(50, 16, generator=gen)
    value = assert_same(center_loss, ref_center, x, labels, centers)
    assert value > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_inputs_are_computed_in_float32(dtype):
    gen = torch.Generator().manual_seed(8)
    labels = pk_labels(4, 4, gen)
    x = features(labels, 3.0, gen).float()
    for fn in (batch_hard_triplet, semihard_triplet, multi_similarity):
        low = fn(x.to(dtype), labels)
        assert low.dtype == torch.float32 and math.isfinite(low.item())
        assert low.item() == pytest.approx(fn(x.to(dtype).float(), labels).item(), rel=1e-6)
