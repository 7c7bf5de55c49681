"""Optimisers with parameter groups and centres; schedules against SPEC §6; exact resume."""

import itertools
import math

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from reidcli.engine.optim import ChainedOptimizer, build_optimizer, build_scheduler
from reidcli.losses.criterion import build_criterion
from reidcli.recipe.loss import Center, CrossEntropy
from reidcli.recipe.optim import Optim, Schedule

OPTIM = TypeAdapter(Optim)
SCHEDULE = TypeAdapter(Schedule)


def model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 5))
    net[1].bias.requires_grad_(False)  # frozen, as a BNNeck bias
    return net


def spec_cosine(lr, e, epochs=130, warm=10):
    """SPEC §6 written out: lr·(e+1)/10 for e < 10, then cosine to lr/1000."""
    if e < warm:
        return lr * (e + 1) / warm
    eta_min = lr / 1000
    t = epochs - warm
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (e - warm) / (t - 1))) / 2


def scheduler(schedule, lr=6e-4, epochs=130, iters=1, optim="adam"):
    opt = build_optimizer(OPTIM.validate_python({"name": optim, "lr": lr}), model())
    return build_scheduler(
        SCHEDULE.validate_python(schedule), opt, epochs=epochs, iters_per_epoch=iters
    ), opt


@pytest.mark.parametrize(
    ("published_epoch", "lr"), [(1, 6e-5), (10, 6e-4), (60, 3.82e-4), (130, 6.0e-7)]
)
def test_warmup_cosine_matches_the_published_values(published_epoch, lr):
    sched, _ = scheduler({"name": "warmup_cosine"})
    assert sched.lr_at(published_epoch - 1) == pytest.approx(lr, rel=2e-3)


def test_per_epoch_steps_follow_spec_for_the_whole_run():
    sched, opt = scheduler({"name": "warmup_cosine"})
    for e in range(130):
        assert opt.param_groups[0]["lr"] == pytest.approx(spec_cosine(6e-4, e), rel=1e-12)
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(6e-7)  # held at η_min past the end


def test_per_iteration_steps_meet_per_epoch_values_at_epoch_boundaries():
    sched, opt = scheduler({"name": "warmup_cosine", "per": "iteration"}, epochs=20, iters=7)
    assert sched.per == "iteration"
    seen = []
    for i in range(20 * 7):
        if i % 7 == 0:
            assert opt.param_groups[0]["lr"] == pytest.approx(spec_cosine(6e-4, i // 7, 20))
        seen.append(opt.param_groups[0]["lr"])
        sched.step()
    warmup, decay = seen[: 9 * 7 + 1], seen[10 * 7 : 19 * 7 + 1]
    assert all(a < b for a, b in itertools.pairwise(warmup))
    assert all(a > b for a, b in itertools.pairwise(decay))


def test_warmup_multistep():
    cfg = {
        "name": "warmup_multistep",
        "warmup_epochs": 4,
        "milestones": [6, 9],
        "gamma": 0.1,
        "warmup_factor": 0.01,
    }
    sched, _ = scheduler(cfg, lr=0.1, epochs=12)
    expected = [0.001, 0.02575, 0.0505, 0.07525, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001]
    assert [sched.lr_at(e) for e in range(11)] == pytest.approx(expected)


def test_constant_with_and_without_warmup():
    sched, _ = scheduler({"name": "constant"}, lr=0.01, epochs=5)
    assert [sched.lr_at(e) for e in range(5)] == pytest.approx([0.01] * 5)
    sched, _ = scheduler({"name": "constant", "warmup_epochs": 2}, lr=0.01, epochs=5)
    assert [sched.lr_at(e) for e in range(4)] == pytest.approx([0.005, 0.01, 0.01, 0.01])


def test_scheduler_resumes_exactly():
    cfg = {"name": "warmup_cosine", "per": "iteration"}
    a, opt_a = scheduler(cfg, epochs=30, iters=5)
    for _ in range(37):
        a.step()
    b, opt_b = scheduler(cfg, epochs=30, iters=5)
    b.load_state_dict(a.state_dict())
    for _ in range(20):
        assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]
        a.step()
        b.step()


def _groups(opt):
    return {g["name"]: g for g in opt.param_groups}


def test_no_decay_on_norms_and_biases_when_configured():
    net = model()
    opt = build_optimizer(
        OPTIM.validate_python({"name": "sgd", "weight_decay": 1e-3, "no_decay_norm_bias": True}),
        net,
    )
    groups = _groups(opt)
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    decay = {id(p) for p in groups["decay"]["params"]}
    assert no_decay == {id(net[0].bias), id(net[1].weight), id(net[3].bias)}
    assert decay == {id(net[0].weight), id(net[3].weight)}
    assert groups["no_decay"]["weight_decay"] == 0 and groups["decay"]["weight_decay"] == 1e-3
    plain = build_optimizer(OPTIM.validate_python({"name": "sgd"}), net)
    assert [g["name"] for g in plain.param_groups] == ["decay"]
    assert len(plain.param_groups[0]["params"]) == 5  # the frozen BN bias is left out


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_centres_get_their_own_plain_sgd_group_outside_the_schedule(name):
    net = model()
    criterion = build_criterion([CrossEntropy(), Center(weight=0.01, lr=0.5)], 5, 4)
    opt = build_optimizer(OPTIM.validate_python({"name": name}), net, criterion)
    assert isinstance(opt, ChainedOptimizer)
    centers = _groups(opt)["centers"]
    assert centers["params"] == [criterion.centers["4"]] and centers["weight_decay"] == 0
    sched = build_scheduler(
        SCHEDULE.validate_python({"name": "warmup_cosine"}), opt, epochs=20, iters_per_epoch=1
    )
    before = criterion.centers["4"].detach().clone()
    criterion.centers["4"].grad = torch.ones_like(before)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(criterion.centers["4"].detach(), before - 0.5)
    sched.step()
    base = OPTIM.validate_python({"name": name}).lr
    assert centers["lr"] == 0.5  # not scheduled
    assert _groups(opt)["decay"]["lr"] == pytest.approx(base * 0.2)  # epoch 1 of the warmup


def test_chained_optimizer_steps_like_its_parts_and_resumes():
    def run(steps, state=None):
        net = model()
        criterion = build_criterion([Center()], 5, 4)
        torch.manual_seed(1)
        nn.init.normal_(criterion.centers["4"])
        opt = build_optimizer(OPTIM.validate_python({"name": "adam", "lr": 0.01}), net, criterion)
        if state is not None:
            opt.load_state_dict(state["opt"])
            net.load_state_dict(state["net"])
            criterion.load_state_dict(state["crit"])
        x = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(2))
        labels = torch.tensor([0, 0, 1, 1, 2, 2])
        for _ in range(steps):
            opt.zero_grad()
            feats = net(x)[:, :4]
            loss = criterion(type("O", (), {"logits": [], "features": [feats]})(), labels)[0]
            loss.backward()
            opt.step()
        return net, criterion, opt

    net, crit, opt = run(3)
    state = {"opt": opt.state_dict(), "net": net.state_dict(), "crit": crit.state_dict()}
    net_a, crit_a, _ = run(2, state)
    net_b, crit_b, _opt_b = run(5)
    torch.testing.assert_close(net_a.state_dict(), net_b.state_dict())
    torch.testing.assert_close(crit_a.state_dict(), crit_b.state_dict())
    # After loading, lr changes through the chained groups still reach the parts.
    _net_c, _crit_c, opt_c = run(0, state)
    for group in opt_c.param_groups:
        group["lr"] = 0.0
    assert all(g["lr"] == 0.0 for o in opt_c.optimizers for g in o.param_groups)
