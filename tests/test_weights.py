"""Weight import: our checkpoints, LightMBN checkpoints, torchreid/torchvision ImageNet files.

Foreign checkpoints are synthesised from the reference layouts in tests/data/reference/*.tsv.
"""

import logging
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from reidcli.errors import CheckpointError
from reidcli.models import build_model, load_weights
from reidcli.models import weights as weights_module
from reidcli.models.baselines import build_osnet_baseline
from reidcli.models.lmbn import build_lmbn_n, build_lmbn_r
from reidcli.recipe.model import Model
from tests.conftest import REFERENCE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test reaches the network; weight folders are empty temporary ones."""

    def refuse(url, dst):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(weights_module, "download_url", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("REID_WEIGHTS_DIR", raising=False)


def synthetic_state(tsv: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the keys, shapes and dtypes listed in a reference layout file."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for line in tsv.read_text().splitlines():
        if line.startswith("#") or line.startswith("key\t") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")[:3]
        size = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
        if dtype == "int64":
            state[key] = torch.tensor(5)
        elif key.endswith("running_var"):
            state[key] = torch.rand(size, generator=gen) + 0.5
        else:
            state[key] = torch.randn(size, generator=gen) * 0.1
    return state


def tiny_osnet(num_classes: int = 5, name: str = "osnet_x0_25"):
    torch.manual_seed(0)
    return build_osnet_baseline(name, num_classes)


def assert_same_state(model, other):
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key


@pytest.mark.parametrize("wrap", ["bare", "module", "training_checkpoint", "state_dict"])
def test_own_checkpoint_round_trip(tmp_path, wrap):
    source = tiny_osnet()
    state = source.state_dict()
    if wrap == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "training_checkpoint":
        state = {"model": state, "epoch": 3, "optimizer": {"state": {}}}
    elif wrap == "state_dict":
        state = {"state_dict": state, "epoch": 3}
    torch.save(state, tmp_path / "w.pth")
    target = build_osnet_baseline("osnet_x0_25", 5)
    report = load_weights(target, tmp_path / "w.pth")
    assert report.layout == "reid" and report.loaded == len(source.state_dict())
    assert report.reinitialised == [] and report.ignored == []
    assert_same_state(source, target)


def test_classifier_of_other_class_count_is_reinitialised(caplog):
    source = tiny_osnet(num_classes=9)
    target = tiny_osnet(num_classes=5)
    before = target.head.classifier.weight.clone()
    with caplog.at_level(logging.WARNING):
        report = load_weights(target, source.state_dict())
    assert report.reinitialised == ["head.classifier.weight"]
    assert "head.classifier.weight" in caplog.text
    assert torch.equal(target.head.classifier.weight, before)
    assert torch.equal(target.head.bn.weight, source.head.bn.weight)
    with pytest.raises(CheckpointError, match=r"head\.classifier\.weight"):
        load_weights(target, source.state_dict(), strict_classifier=True)


def test_shape_mismatch_lists_keys():
    with pytest.raises(CheckpointError, match=r"shape mismatch: backbone\.conv1\.conv\.weight"):
        load_weights(tiny_osnet(name="osnet_x0_5"), tiny_osnet().state_dict())


def test_unknown_and_missing_keys_are_errors():
    state = tiny_osnet().state_dict()
    with pytest.raises(CheckpointError, match=r"surplus\.weight"):
        load_weights(tiny_osnet(), {**state, "surplus.weight": torch.zeros(1)})
    del state["backbone.conv5.bn.running_mean"]
    with pytest.raises(CheckpointError, match=r"missing .*backbone\.conv5\.bn\.running_mean"):
        load_weights(tiny_osnet(), state)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tiny_osnet(), tmp_path / "absent.pth")
    torch.save({"epoch": 1, "notes": {"a": 1}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="no 'model' or 'state_dict'"):
        load_weights(tiny_osnet(), tmp_path / "odd.pth")


def reference_lmbn_eval(state, template, x, *, glo_pool, cha_pool):
    """LightMBN's eval forward written against its own key names: (B, 512, 7) stacked features."""

    def run(prefix, module, inp):
        params = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        return functional_call(module, params, (inp,))

    def bnneck(prefix, vec):
        if f"{prefix}reduction.weight" in state:
            vec = F.conv2d(vec[:, :, None, None], state[f"{prefix}reduction.weight"]).flatten(1)
        bn = [state[f"{prefix}bn.{n}"] for n in ("running_mean", "running_var", "weight", "bias")]
        return F.batch_norm(vec, *bn, training=False)

    def pool(t, kind):
        return t.mean((2, 3)) if kind == "avg" else t.amax((2, 3))

    x = run("backone.", template.trunk, x)
    glo = run("global_branch.", template.global_branch, x)
    par = run("partial_branch.", template.part_branch, x)
    cha = pool(run("channel_branch.", template.channel_branch, x), cha_pool)
    feat = run("batch_drop_block.drop_batch_bottleneck.", template.global_block, glo)
    halves = [run("shared.", template.channel_shared, h[:, :, None, None]) for h in cha.chunk(2, 1)]
    stripes = F.adaptive_avg_pool2d(par, (2, 1))
    drop_head = "reduction_4." if "reduction_4.bn.weight" in state else "reduction_drop."
    return torch.stack(
        [
            bnneck("reduction_0.", pool(feat, glo_pool)),
            bnneck(drop_head, pool(feat, "max")),
            bnneck("reduction_1.", pool(par, "max")),
            bnneck("reduction_2.", stripes[:, :, 0, 0]),
            bnneck("reduction_3.", stripes[:, :, 1, 0]),
            bnneck("reduction_ch_0.", halves[0].flatten(1)),
            bnneck("reduction_ch_1.", halves[1].flatten(1)),
        ],
        dim=2,
    )


@pytest.mark.parametrize(
    ("variant", "builder", "pools"),
    [("lmbn_n", build_lmbn_n, ("avg", "avg")), ("lmbn_r", build_lmbn_r, ("max", "max"))],
)
@pytest.mark.parametrize("saved_as", ["model-best.pth", "model-latest.pth"])
def test_lightmbn_checkpoint(tmp_path, variant, builder, pools, saved_as):
    state = synthetic_state(REFERENCE / f"lightmbn_{variant}.tsv")
    # LightMBN saves its wrapper's state (keys under `model.`); -latest nests it in a dict.
    saved = {f"model.{k}": v for k, v in state.items()}
    if saved_as == "model-latest.pth":
        saved = {"state_dict": saved, "epoch": 130, "log": torch.zeros(3, 2)}
    torch.save(saved, tmp_path / saved_as)
    model = builder(751)
    report = load_weights(model, tmp_path / saved_as, strict_classifier=True)
    assert report.layout == "lightmbn" and report.ignored == []
    assert report.loaded == len(state) == len(model.state_dict())
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model.eval()(x)
        ref = reference_lmbn_eval(state, model, x, glo_pool=pools[0], cha_pool=pools[1])
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(ours, ref.transpose(1, 2).flatten(1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("width", ["osnet_x1_0", "osnet_x0_5"])
def test_torchreid_osnet_imagenet_checkpoint(tmp_path, width):
    state = synthetic_state(REFERENCE / f"torchreid_{width}.tsv")
    model = tiny_osnet(name=width)
    report = load_weights(model, state)
    assert report.layout == "torchreid_osnet"
    assert report.ignored == ["classifier.weight", "classifier.bias"]
    assert report.loaded == len(state) - 2
    for key, value in state.items():
        if not key.startswith("classifier."):
            assert torch.equal(model.state_dict()[f"backbone.{key}"], value), key


def test_osnet_imagenet_found_in_weights_dir(tmp_path, monkeypatch):
    state = synthetic_state(REFERENCE / "torchreid_osnet_x1_0.tsv")
    with pytest.raises(CheckpointError, match=r"osnet_x1_0_imagenet\.pth"):
        build_model(Model(name="lmbn_n", pretrained="imagenet"), 11)
    monkeypatch.setenv("REID_WEIGHTS_DIR", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    torch.save(state, tmp_path / "weights" / "osnet_x1_0_imagenet.pth")
    model = build_model(Model(name="lmbn_n", pretrained="imagenet"), 11)
    # Each branch holds its own copy of conv3[1:], conv4 and conv5.
    for branch in ("global_branch", "part_branch", "channel_branch"):
        own = model.state_dict()
        assert torch.equal(
            own[f"{branch}.1.0.conv1.conv.weight"], state["conv4.0.conv1.conv.weight"]
        )
        assert torch.equal(own[f"{branch}.0.2.0.conv.weight"], state["conv3.2.0.conv.weight"])
    assert torch.equal(model.trunk[3].conv1.conv.weight, state["conv3.0.conv1.conv.weight"])


def test_resnet_imagenet_offline_error_names_file_and_place(tmp_path):
    with pytest.raises(CheckpointError, match=r"resnet50-0676ba61\.pth") as info:
        build_model(Model(name="bot_r50", pretrained="imagenet"), 11)
    assert str(tmp_path / "torch_home" / "checkpoints") in str(info.value)
    assert "network disabled" in str(info.value)


def test_resnet_imagenet_from_hub_cache(tmp_path):
    state = synthetic_state(REFERENCE / "torchvision_resnet50.tsv")
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "resnet50-0676ba61.pth")
    model = build_model(Model(name="mgn", feats=32, pretrained="imagenet"), 11)
    own = model.state_dict()
    assert torch.equal(own["trunk.0.weight"], state["conv1.weight"])
    for branch in ("p1", "p2", "p3"):
        assert torch.equal(own[f"{branch}.0.4.bn3.weight"], state["layer3.5.bn3.weight"])
        assert torch.equal(own[f"{branch}.1.2.conv3.weight"], state["layer4.2.conv3.weight"])
    report = load_weights(build_model(Model(name="resnet50"), 11), state)
    assert report.ignored == ["fc.weight", "fc.bias"] and report.loaded == len(state) - 2
