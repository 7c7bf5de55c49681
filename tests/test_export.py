"""`reid export`: every catalog model to ONNX and TorchScript (LMBN_n and OSNet also to a
`torch.export` program) with parity at two batch sizes,
the input contract, metadata, the exporters' fallback and failures, and the command's errors."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from reidcli import api
from reidcli.engine.checkpoint import save_checkpoint
from reidcli.errors import CheckpointError, ExportError, ParityError
from reidcli.export.metadata import BOXMOT_NAMES, sidecar_path
from reidcli.export.writers import export_onnx
from reidcli.inference.runners import load_exported_runner
from reidcli.models import build_model
from reidcli.recipe import validate_recipe
from reidcli.recipe.model import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")

# Smallest inputs every exporter handles: the stripes of PCB (3) and MGN (2 and 3) must divide
# the rows of their stride-1 feature maps (H / 16), so those two get 96 rows.
SIZES = {"pcb": (96, 32), "mgn": (96, 32)}


def make_checkpoint(folder: Path, name: str, **sections) -> Path:
    """A reid checkpoint of a freshly initialised catalog model (no training needed); the model
    is kept as `MODELS_BUILT[path]` for reference embeddings."""
    height, width = SIZES.get(name, (64, 32))
    raw = {
        "data": {"dataset": "synthetic", "root": str(folder / "no-data"), "height": height,
                 "width": width},
        "model": {"name": name, "feats": 64, "parts": 3},
        "eval": {"flip": True, "normalize": "per_branch"},
    }  # fmt: skip
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    recipe = validate_recipe(raw, source="test")
    torch.manual_seed(0)
    model = build_model(recipe.model, 5)
    # Non-trivial BatchNorm statistics, so that the eval-mode arithmetic is exercised.
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = folder / "last.pt"
    state = {"model": model.state_dict(), "recipe": json.dumps(recipe.to_dict()),
             "num_classes": 5, "epoch": 1, "step": 1}  # fmt: skip
    save_checkpoint(path, state)
    MODELS_BUILT[path] = (model.eval(), recipe)
    return path


MODELS_BUILT: dict[Path, tuple] = {}


def reference_embedding(checkpoint: Path, images: torch.Tensor) -> np.ndarray:
    model, recipe = MODELS_BUILT[checkpoint]
    with torch.no_grad():
        return model.embed(images, flip=recipe.eval.flip, normalize=recipe.eval.normalize).numpy()


@pytest.fixture(scope="module")
def osnet(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("osnet"), "osnet_x0_25")


@pytest.mark.portable
@pytest.mark.parametrize("name", MODELS)
def test_every_catalog_model_exports_with_parity(tmp_path, name):
    checkpoint = make_checkpoint(tmp_path, name)
    result = api.export(tmp_path, formats=("onnx", "torchscript"), exporter="legacy").to_json()
    assert [item["format"] for item in result["exports"]] == ["onnx", "torchscript"]
    for item, suffix in zip(result["exports"], (".onnx", ".torchscript"), strict=True):
        path = Path(item["path"])
        # named as BoxMOT recognises it: <model>_<dataset>[_<checkpoint>]
        assert path == tmp_path / f"{BOXMOT_NAMES.get(name, name)}_synthetic_last{suffix}"
        parity = item["parity"]
        assert parity["passed"] and [b["batch"] for b in parity["batches"]] == [1, 7]
        for row in parity["batches"]:
            assert row["max_abs"] <= 1e-4 and row["min_cos"] >= 0.9999
        meta = json.loads(sidecar_path(path).read_text())
        assert meta["model_name"] == BOXMOT_NAMES.get(name, name) and meta["reid_model"] == name
    # Independently of the built-in check: another batch size against model.embed (the
    # TorchScript side is checked the same way in test_embed).
    height, width = SIZES.get(name, (64, 32))
    images = torch.randn(3, 3, height, width, generator=torch.Generator().manual_seed(5))
    expected = reference_embedding(checkpoint, images)
    got = load_exported_runner(Path(result["exports"][0]["path"]), "cpu")(images)
    assert got.shape == expected.shape == (3, result["exports"][0]["embedding_dim"])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_metadata_in_file_and_sidecar(osnet):
    result = api.export(osnet, formats="onnx", exporter="legacy").to_json()
    path = Path(result["exports"][0]["path"])
    sidecar = json.loads(sidecar_path(path).read_text())
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["reid_metadata"]) == sidecar
    assert props["model_name"] == "osnet_x0_25" and json.loads(props["input_size"]) == [64, 32]
    # BoxMOT reads these three keys from PATH.metadata.json.
    assert sidecar["model_name"] == "osnet_x0_25"
    assert sidecar["model_kwargs"] == {"img_size": [64, 32]} and sidecar["preprocess"] == "resize"
    assert sidecar["color_order"] == "RGB" and sidecar["scale"] == pytest.approx(1 / 255)
    assert sidecar["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert sidecar["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert sidecar["interpolation"] == "bilinear" and sidecar["embedding_dim"] == 512
    assert sidecar["flip"] is True and sidecar["normalize"] == "per_branch"
    assert sidecar["l2_normalized"] is False and sidecar["opset"] == 18  # the recipe default
    assert sidecar["exporter"] == "legacy" and sidecar["torch_version"] == torch.__version__
    assert sidecar["checkpoint_sha256"] == result["checkpoint_sha256"]
    assert len(sidecar["checkpoint_sha256"]) == 64
    assert sidecar["parity"]["passed"] and len(sidecar["parity"]["batches"]) == 2
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import if not o.domain] == [18]
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "images" and graph_output.name == "features"
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 64, 32]


def test_torchscript_metadata_follows_the_recipe(tmp_path):
    make_checkpoint(tmp_path, "osnet_x0_25", eval={"flip": False, "normalize": "whole"})
    result = api.export(tmp_path, formats="torchscript", opset=13).to_json()
    meta = json.loads(sidecar_path(result["exports"][0]["path"]).read_text())
    assert meta["flip"] is False and meta["normalize"] == "whole" and meta["l2_normalized"]
    assert meta["opset"] is None and meta["format"] == "torchscript"
    extra = {"reid_metadata.json": ""}
    module = torch.jit.load(result["exports"][0]["path"], _extra_files=extra)
    assert json.loads(extra["reid_metadata.json"]) == meta
    with torch.no_grad():
        norms = module(torch.randn(2, 3, 64, 32)).norm(dim=1)
    np.testing.assert_allclose(norms.numpy(), 1.0, atol=1e-5)  # "whole": unit vectors


def test_pt2_program_round_trips_through_embed(tmp_path):
    # torch.export takes about a minute for LMBN_n on two cores, so the test captures OSNet;
    # the LMBN_n figures are in BENCHMARKS.md.
    checkpoint = make_checkpoint(tmp_path, "osnet_x0_25")
    result = api.export(tmp_path, formats="pt2").to_json()
    (item,) = result["exports"]
    path = Path(item["path"])
    assert path == checkpoint.with_name("osnet_x0_25_synthetic_last.pt2")
    assert item["exporter"] == "torch.export"
    assert item["parity"]["passed"] and [b["batch"] for b in item["parity"]["batches"]] == [1, 7]
    meta = json.loads(sidecar_path(path).read_text())
    extra = {"reid_metadata.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    assert json.loads(extra["reid_metadata.json"]) == meta and meta["format"] == "pt2"
    # The archive keeps the example it was captured with: made-up zeros, not the user's crops.
    (example,) = program.example_inputs[0]
    assert example.shape[1:] == (3, 64, 32) and not example.any()
    # The file through `reid embed`'s loader against the checkpoint, at a batch size the
    # built-in check did not use.
    images = torch.randn(5, 3, 64, 32, generator=torch.Generator().manual_seed(7))
    expected = reference_embedding(checkpoint, images)
    runner = load_exported_runner(path, "cpu")
    got = runner(images)
    assert runner.backend == "torch.export" and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)
    cosine = (
        (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.9999
    with pytest.raises(CheckpointError, match=r"takes inputs of shape \[batch, 3, 64, 32\]"):
        runner(torch.zeros(2, 3, 32, 32))


def test_a_damaged_pt2_is_one_line(osnet, tmp_path, capsys):
    api.export(osnet, formats="pt2", out=tmp_path / "m.pt2", check=False)
    data = (tmp_path / "m.pt2").read_bytes()
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt2").write_bytes(b"not an archive")
    crops = tmp_path / "crops"
    crops.mkdir()
    Image.new("RGB", (32, 64), (90, 30, 200)).save(crops / "a.png")
    for name, message in (("cut.pt2", "truncated or corrupted"), ("garbage.pt2", "garbage.pt2")):
        code, _, stderr = run_cli(capsys, "embed", str(tmp_path / name), str(crops))
        assert code == 1 and message in stderr and "Traceback" not in stderr, stderr
    import zipfile

    with (
        zipfile.ZipFile(tmp_path / "m.pt2") as src,
        zipfile.ZipFile(tmp_path / "bad.pt2", "w") as dst,
    ):
        for entry in src.infolist():
            body = src.read(entry)
            dst.writestr(entry, b"{" if entry.filename.endswith("models/model.json") else body)
    code, _, stderr = run_cli(capsys, "embed", str(tmp_path / "bad.pt2"), str(crops))
    assert code == 1 and "torch.export.load cannot load it" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1


def test_include_preprocessing_takes_uint8(osnet, tmp_path):
    out = tmp_path / "pre.onnx"
    result = api.export(osnet, formats="onnx", out=out, include_preprocessing=True,
                        exporter="legacy").to_json()  # fmt: skip
    assert result["exports"][0]["input_dtype"] == "uint8"
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    runner = load_exported_runner(out, "cpu")
    assert runner.contract.in_graph
    pixels = torch.randint(0, 256, (2, 3, 64, 32), dtype=torch.uint8)
    from reidcli.verbs.export import normalise

    expected = reference_embedding(osnet, normalise(pixels, runner.contract.mean,
                                                    runner.contract.std))  # fmt: skip
    np.testing.assert_allclose(runner(pixels), expected, atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_fp16_uses_the_fp16_tolerances(osnet, tmp_path, fmt):
    out = tmp_path / f"half.{fmt}"
    result = api.export(osnet, formats=fmt, out=out, fp16=True, exporter="legacy").to_json()
    item = result["exports"][0]
    assert item["precision"] == "fp16"
    assert item["parity"]["atol"] == 1e-2 and item["parity"]["min_cos"] == 0.999
    assert item["parity"]["passed"]
    # Half precision really ran: the output is not the fp32 embedding to the last bit.
    assert item["parity"]["worst"]["max_abs"] > 1e-6


def test_static_batch(osnet, tmp_path):
    out = tmp_path / "static.onnx"
    result = api.export(osnet, formats="onnx", out=out, static_batch=4, exporter="legacy").to_json()
    item = result["exports"][0]
    assert item["batch"] == 4 and [b["batch"] for b in item["parity"]["batches"]] == [4]
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 3, 64, 32]
    runner = load_exported_runner(out, "cpu")
    assert runner.contract.static_batch == 4
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        runner(torch.zeros(3, 3, 64, 32))


def test_no_check_skips_parity(osnet, tmp_path):
    result = api.export(osnet, formats="torchscript", out=tmp_path / "m.ts", check=False).to_json()
    assert result["exports"][0]["parity"] is None
    assert json.loads(sidecar_path(tmp_path / "m.ts").read_text())["parity"] is None


class DataDependent(torch.nn.Module):
    """A Python branch on tensor values: torch.export refuses it, tracing records one branch."""

    def forward(self, images):
        if images.mean() > -100:
            return images.flatten(1)[:, :8] * 2
        return images.flatten(1)[:, :8]


def test_dynamo_failure_falls_back_to_legacy_and_says_why(tmp_path):
    done = export_onnx(DataDependent(), torch.randn(2, 3, 4, 4), tmp_path / "m.onnx", opset=17,
                       dynamic_batch=True, exporter="auto")  # fmt: skip
    assert done.exporter == "legacy" and done.fallback_reason
    with pytest.raises(ExportError, match="dynamo"):
        export_onnx(DataDependent(), torch.randn(2, 3, 4, 4), tmp_path / "n.onnx", opset=17,
                    dynamic_batch=True, exporter="dynamo")  # fmt: skip


class Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, images):  # the input name the exporters declare
        return self.conv(images).flatten(1)


@pytest.mark.parametrize("opset", [17, 18])
def test_the_file_declares_the_asked_opset(tmp_path, opset):
    done = export_onnx(Conv().eval(), torch.randn(2, 3, 8, 8), tmp_path / "a.onnx", opset=opset,
                       dynamic_batch=True)  # fmt: skip
    model = onnx.load(str(tmp_path / "a.onnx"))
    assert [o.version for o in model.opset_import if not o.domain] == [opset] == [done.opset]
    # the dynamo exporter writes it, or the legacy one does and the reason says why
    assert done.exporter == "dynamo" or "wrote opset" in done.fallback_reason


def test_dynamo_writing_another_opset_falls_back_or_fails(tmp_path, monkeypatch):
    # What the dynamo exporter does with LMBN_n at opset 17: it writes 18.
    from reidcli.export import writers

    monkeypatch.setattr(writers, "_dynamo", lambda graph, example, path, opset, dyn: (
        writers._legacy(graph, example, path, 18, dyn)))  # fmt: skip
    done = export_onnx(Conv().eval(), torch.randn(2, 3, 8, 8), tmp_path / "b.onnx", opset=17,
                       dynamic_batch=True)  # fmt: skip
    assert (done.exporter, done.opset) == ("legacy", 17)
    assert done.fallback_reason == "the dynamo exporter wrote opset 18, not the 17 asked for"
    with pytest.raises(ExportError, match="ask for --opset 18 or use --exporter legacy"):
        export_onnx(Conv().eval(), torch.randn(2, 3, 8, 8), tmp_path / "c.onnx", opset=17,
                    dynamic_batch=True, exporter="dynamo")  # fmt: skip


class StripePool(torch.nn.Module):
    """3 stripes of a 4-row map: no ONNX pooling expresses it (MGN at 64x32 hits the same)."""

    def forward(self, images):
        return torch.nn.functional.adaptive_max_pool2d(images, (3, 1)).flatten(1)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_unexportable_operator_is_named(tmp_path, capfd, exporter):
    with pytest.raises(ExportError, match=r"operator [a-z_.]*adaptive_max_pool2d") as info:
        export_onnx(StripePool(), torch.randn(2, 3, 4, 4), tmp_path / "m.onnx", opset=17,
                    dynamic_batch=True, exporter=exporter)  # fmt: skip
    assert len(str(info.value)) < 1000
    assert len(capfd.readouterr().err) < 1000  # the legacy exporter's graph dump is held back


def test_failed_parity_exits_1_and_leaves_out_untouched(osnet, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")
    code, stdout, stderr = run_cli(
        capsys, "export", str(osnet), "--format", "onnx", "--exporter", "legacy", "--out",
        str(out), "--atol", "1e-12", "--json",
    )  # fmt: skip
    assert code == 1, stderr
    assert "parity check failed" in stderr and "sample" in stderr
    assert "Traceback" not in stderr and "FAILED" in stderr
    doc = json.loads(stdout)
    worst = doc["parity"]["worst"]
    assert not doc["parity"]["passed"] and worst["max_abs"] > 1e-12
    assert worst["worst_sample"]["source"] in stderr
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_api_parity_error_carries_the_report(osnet, tmp_path):
    with pytest.raises(ParityError) as info:
        api.export(osnet, formats="torchscript", out=tmp_path / "m.ts", min_cos=1.0, atol=1e-30,
                   fp16=True)  # fmt: skip
    assert not info.value.report.passed
    assert not (tmp_path / "m.ts").exists()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the `reid` entry point in this process: (exit code, stdout, stderr)."""
    from reidcli.cli import main

    argv = sys.argv
    sys.argv = ["reid", *args]
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_json_and_table(osnet, tmp_path, capsys):
    out = tmp_path / "cli.torchscript"
    code, stdout, stderr = run_cli(capsys, "export", str(osnet), "--format", "torchscript",
                                   "--out", str(out), "--json")  # fmt: skip
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["exports"][0]["path"] == str(out) and out.is_file()
    assert "parity with the PyTorch model" in stderr and " ok " in stderr
    assert "wrote" in stderr and "cli.torchscript.metadata.json" in stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--format", "tflite"], 2, "tflite"),
        (["--format", "onnx", "--format", "torchscript", "--out", "x.onnx"], 2, "one format"),
        (["--format", "torchscript", "--static-batch", "2"], 2, "--static-batch"),
        (["--format", "pt2", "--static-batch", "2"], 2, "--static-batch"),
        (["--format", "onnx", "--atol", "0"], 2, "--atol"),
        (["--format", "onnx", "--min-cos", "1.5"], 2, "--min-cos"),
        (["--format", "onnx", "--exporter", "jit"], 2, "jit"),
        (["--format", "torchscript", "--out", "CHECKPOINT"], 2, "is the checkpoint"),
    ],
)
def test_usage_errors(osnet, capsys, args, code, message):
    args = [str(osnet) if a == "CHECKPOINT" else a for a in args]
    got, _, stderr = run_cli(capsys, "export", str(osnet), *args)
    assert got == code, stderr
    assert message in stderr and "Traceback" not in stderr


def test_missing_checkpoint(tmp_path, capsys):
    code, _, stderr = run_cli(capsys, "export", str(tmp_path / "nothing"), "--format", "onnx")
    assert code == 1
    assert "no such run folder or checkpoint" in stderr and stderr.startswith("error: ")


@pytest.mark.parametrize("blocked", ["onnx", "onnxruntime"])
def test_missing_export_extra_names_the_install_command(osnet, capsys, monkeypatch, blocked):
    monkeypatch.setitem(sys.modules, blocked, None)  # `import onnx` now raises ImportError
    code, _, stderr = run_cli(capsys, "export", str(osnet), "--format", "onnx")
    assert code == 1, stderr
    assert "pip install 'reidcli[export]'" in stderr and blocked in stderr


def test_cli_flags_reach_the_file(osnet, tmp_path, capsys):
    out = tmp_path / "flags.onnx"
    code, stdout, stderr = run_cli(
        capsys, "export", str(osnet), "--format", "onnx", "--exporter", "legacy", "--out",
        str(out), "--opset", "13", "--static-batch", "2", "--include-preprocessing",
        "--no-check", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    item = json.loads(stdout)["exports"][0]
    assert item["parity"] is None and "parity with" not in stderr
    model = onnx.load(str(out))
    assert [o.version for o in model.opset_import if not o.domain] == [13]
    tensor = model.graph.input[0].type.tensor_type
    assert tensor.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in tensor.shape.dim] == [2, 3, 64, 32]
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["opset"] == 13 and meta["batch"] == 2 and meta["preprocessing_in_graph"]

    out = tmp_path / "half.torchscript"
    code, stdout, stderr = run_cli(
        capsys, "export", str(osnet), "--format", "torchscript", "--out", str(out), "--fp16",
        "--atol", "0.05", "--min-cos", "0.99", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    parity = json.loads(stdout)["exports"][0]["parity"]
    assert parity["atol"] == 0.05 and parity["min_cos"] == 0.99 and parity["passed"]


def test_recipe_for_weights_without_one(osnet, tmp_path, capsys):
    weights = tmp_path / "model-best.pth"
    torch.save(torch.load(osnet, weights_only=True)["model"], weights)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps(MODELS_BUILT[osnet][1].to_dict()))  # JSON is YAML
    code, _, stderr = run_cli(capsys, "export", str(weights), "--format", "torchscript")
    assert code == 1 and "--recipe" in stderr
    code, stdout, stderr = run_cli(capsys, "export", str(weights), "--format", "torchscript",
                                   "--recipe", str(recipe), "--json")  # fmt: skip
    assert code == 0, stderr
    assert json.loads(stdout)["exports"][0]["path"] == str(
        tmp_path / "osnet_x0_25_synthetic_model-best.torchscript"
    )


def test_export_leaves_the_output_of_other_threads_alone(osnet, tmp_path, capfd):
    """The library never redirects the process's streams: a thread that prints meanwhile (a
    server's log, a notebook) keeps every line."""
    import threading
    import time

    stop, printed = threading.Event(), []

    def chatter() -> None:
        while not stop.is_set():
            print(f"line {len(printed)}", flush=True)
            printed.append(len(printed))
            time.sleep(0.002)

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        api.export(osnet, formats="onnx", out=tmp_path / "m.onnx", exporter="legacy")
    finally:
        stop.set()
        thread.join()
    out, _ = capfd.readouterr()
    assert [line for line in out.splitlines() if line.startswith("line ")] == [
        f"line {i}" for i in printed
    ]
    assert len(printed) > 10  # the thread printed during the export
