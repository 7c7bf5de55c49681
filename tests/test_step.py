"""The optimisation step's options against hand computations: gradient accumulation and clipping."""

import torch
import torch.nn.functional as F

from reidcli.engine.runtime import Runtime
from reidcli.engine.step import TrainStep


class CrossEntropy(torch.nn.Module):
    def forward(self, logits, labels):
        loss = F.cross_entropy(logits, labels)
        return loss, {"ce": loss}


def mlp() -> torch.nn.Module:
    """A model without batch statistics, so that split batches see the same function."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def step_once(micro_batches, grad_clip=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Parameters before and after one SGD step (lr 1, so the update is minus the gradient)."""
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    step = TrainStep(model, CrossEntropy(), optimizer, Runtime(torch.device("cpu")), grad_clip)
    step(micro_batches, 0)
    return before, [p.detach().clone() for p in model.parameters()]


def batch(n: int = 8):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def test_grad_accum_equals_one_batch_of_the_same_images():
    x, y = batch()
    _, whole = step_once([(x, y)])
    _, accumulated = step_once([(x[:4], y[:4]), (x[4:], y[4:])])
    for a, b in zip(whole, accumulated, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_grad_clip_bounds_the_global_gradient_norm():
    x, y = batch()
    before, free = step_once([(x, y)])
    norm = torch.cat([(a - b).flatten() for a, b in zip(before, free, strict=True)]).norm()
    clip = float(norm) / 4  # well below the gradient's norm: the clip is active
    before, clipped = step_once([(x, y)], grad_clip=clip)
    update = torch.cat([(a - b).flatten() for a, b in zip(before, clipped, strict=True)])
    assert abs(float(update.norm()) - clip) < 1e-5 * max(1.0, clip)
    # the direction is the unclipped gradient's
    direction = torch.cat([(a - b).flatten() for a, b in zip(before, free, strict=True)])
    assert F.cosine_similarity(update, direction, dim=0) > 1 - 1e-6
