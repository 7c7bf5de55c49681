"""`reid export --format openvino`: the IR folder, its parity, `reid embed` of it, `reid bench
--backend openvino`, and every bad input as a one-line error that writes nothing."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reidcli import api
from reidcli.errors import OutputError
from reidcli.inference.runners import load_exported_runner
from tests.test_export import make_checkpoint, reference_embedding, run_cli

pytest.importorskip("openvino")
# In a process where OpenVINO ran, later unrelated tests were seen to crash (a corrupted heap):
# `make test` runs this module in a process of its own.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.openvino]

STEM = "osnet_x0_25_synthetic_last"  # the default name of the export below


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """An OSNet checkpoint and its OpenVINO folder, written by `reid export`."""
    folder = tmp_path_factory.mktemp("openvino")
    checkpoint = make_checkpoint(folder, "osnet_x0_25")
    result = api.export(folder, formats="openvino", exporter="legacy").to_json()
    return checkpoint, Path(result["exports"][0]["path"])


def test_the_folder_holds_the_ir_and_its_metadata(exported):
    import openvino as ov

    checkpoint, folder = exported
    # named as BoxMOT recognises it: <model>_<dataset>[_<checkpoint>]_openvino_model
    assert folder == checkpoint.parent / "osnet_x0_25_synthetic_last_openvino_model"
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{STEM}.bin", f"{STEM}.xml", f"{STEM}.xml.metadata.json",
    ]  # fmt: skip
    sidecar = json.loads((folder / f"{STEM}.xml.metadata.json").read_text())
    assert sidecar["format"] == "openvino" and sidecar["exporter"] == "legacy + openvino"
    assert sidecar["model_name"] == "osnet_x0_25" and sidecar["input_size"] == [64, 32]
    assert sidecar["openvino_version"] == ov.__version__ and sidecar["precision"] == "fp32"
    parity = sidecar["parity"]
    assert parity["passed"] and [b["batch"] for b in parity["batches"]] == [1, 7]
    core = ov.Core()
    core.set_property({"ENABLE_MMAP": False})  # the folder is replaced by a later test
    model = core.read_model(str(folder / f"{STEM}.xml"))
    assert json.loads(model.get_rt_info("reid_metadata").astype(str)) == sidecar
    assert model.input(0).get_any_name() == "images"


def test_embed_of_the_folder_equals_the_checkpoint(exported):
    checkpoint, folder = exported
    images = torch.randn(5, 3, 64, 32, generator=torch.Generator().manual_seed(3))
    expected = reference_embedding(checkpoint, images)
    for path in (folder, folder / f"{STEM}.xml"):  # the folder, or its .xml file
        runner = load_exported_runner(path, "cpu")
        got = runner(images)
        assert runner.backend == "openvino" and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)
        cosine = (got * expected).sum(1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
        )
        assert cosine.min() >= 0.9999


def test_cli_embeds_with_the_folder(exported, tmp_path, capsys):
    from PIL import Image

    _, folder = exported
    crops = tmp_path / "crops"
    crops.mkdir()
    for index in range(3):
        Image.new("RGB", (32, 64), (40 * index, 90, 200)).save(crops / f"{index}.png")
    out = tmp_path / "feats.npz"
    code, _, stderr = run_cli(capsys, "embed", str(folder), str(crops), "--out", str(out))
    assert code == 0, stderr
    assert np.load(out)["features"].shape == (3, 512)


def test_a_second_export_replaces_its_own_folder_and_keeps_anyone_elses(exported, capsys):
    checkpoint, folder = exported
    before = (folder / f"{STEM}.xml.metadata.json").stat().st_mtime_ns
    api.export(checkpoint, formats="openvino", exporter="legacy", check=False)
    assert (folder / f"{STEM}.xml.metadata.json").stat().st_mtime_ns != before
    other = checkpoint.parent / "theirs_openvino_model"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        api.export(checkpoint, formats="openvino", out=other, check=False)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    code, _, stderr = run_cli(
        capsys, "export", str(checkpoint), "--format", "openvino", "--out", str(other)
    )
    assert code == 2 and "did not write" in stderr and "Traceback" not in stderr
    assert not [p for p in checkpoint.parent.iterdir() if p.name.endswith(".tmp")]


def test_bad_ir_inputs_are_one_line_errors(exported, tmp_path, capsys):
    from PIL import Image

    _, folder = exported
    crops = tmp_path / "crops"
    crops.mkdir()
    Image.new("RGB", (32, 64)).save(crops / "a.png")
    garbage = tmp_path / "garbage_openvino_model"
    garbage.mkdir()
    (garbage / "garbage.xml").write_text("<net><layers>")
    (garbage / "garbage.bin").write_bytes(b"\0" * 16)
    no_bin = tmp_path / "nobin_openvino_model"
    no_bin.mkdir()
    (no_bin / "nobin.xml").write_bytes((folder / f"{STEM}.xml").read_bytes())
    empty = tmp_path / "empty_openvino_model"
    empty.mkdir()
    cases = {
        garbage: "OpenVINO cannot read it",
        no_bin: "nobin.bin is missing",
        empty: "no .xml file",
    }
    for path, message in cases.items():
        code, _, stderr = run_cli(capsys, "embed", str(path), str(crops))
        assert code == 1 and message in stderr, stderr
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_missing_openvino_names_the_extra(exported, monkeypatch, capsys):
    checkpoint, _ = exported
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises
    code, _, stderr = run_cli(capsys, "export", str(checkpoint), "--format", "openvino")
    assert code == 1 and "pip install 'reidcli[openvino]'" in stderr, stderr


def test_bench_times_the_openvino_backend():
    report = api.bench(
        overrides={"model.name": "osnet_x0_25", "data.height": 64, "data.width": 32,
                   "bench.batch": [2], "bench.warmup": 0, "bench.iters": 1,
                   "bench.backend": ["onnxruntime", "openvino", "openvino-int8"]},
    ).to_json()  # fmt: skip
    rows = {r["backend"]: r for r in report["results"]}
    for backend in ("openvino", "openvino-int8"):  # the INT8 row runs the quantized ONNX graph
        assert rows[backend]["error"] is None and rows[backend]["images_per_s"] > 0
    assert rows["onnxruntime"]["error"] is None
    assert report["env"]["openvino"]


def test_an_int8_ir_folder_is_checked_by_retrieval_under_openvino(dataset, tmp_path):
    import openvino as ov

    make_checkpoint(tmp_path, "osnet_x0_25", data={"root": str(dataset)})
    # fresh weights: the check is run and recorded, its bound opened (the ONNX INT8 tests
    # check refusals with a trained model)
    result = api.export(tmp_path, formats="openvino", int8=True, calibrate=str(dataset),
                        calibration_images=32, max_map_drop=100.0,
                        exporter="legacy").to_json()  # fmt: skip
    (item,) = result["exports"]
    folder = Path(item["path"])
    assert folder.name == "osnet_x0_25_synthetic_last_int8_openvino_model"
    stem = folder.name[: -len("_openvino_model")]
    sidecar = json.loads((folder / f"{stem}.xml.metadata.json").read_text())
    assert sidecar["precision"] == "int8" and sidecar["format"] == "openvino"
    quantized = sidecar["int8"]
    assert quantized["retrieval"]["passed"] and quantized["fp32_parity"]["passed"]
    assert quantized["calibration"]["images"] == 32
    assert set(quantized["retrieval"]["int8"]) == {"mAP", "rank1"}
    # the IR holds the quantization (OpenVINO's FakeQuantize, run in int8 on the CPU)
    core = ov.Core()
    core.set_property({"ENABLE_MMAP": False})
    ops = {op.get_type_name() for op in core.read_model(str(folder / f"{stem}.xml")).get_ops()}
    assert "FakeQuantize" in ops
    crops = sorted((dataset / "images").rglob("*.jpg"))[:6]
    done = api.embed(folder, tuple(crops), out=tmp_path / "f.npz", device="cpu", workers=0)
    assert done.num_images == 6 and done.backend == "openvino"
