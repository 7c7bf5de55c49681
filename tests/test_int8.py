"""`reid export --int8`: static INT8 quantization calibrated on train crops, kept only when the
retrieval check passes; a doctored (all-black) calibration is refused; bad input is one line."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from reidcli import api
from reidcli.errors import ExportError, ParityError
from reidcli.export.metadata import sidecar_path
from reidcli.inference.runners import load_exported_runner
from tests.test_export import run_cli
from tests.train_support import write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset) -> Path:
    """OSNet x0.25 trained for 4 epochs on the synthetic dataset (its validation split is what
    the INT8 check scores)."""
    folder = tmp_path_factory.mktemp("int8")
    recipe = write_recipe(folder, dataset, train__epochs=4, train__eval_every=0)
    result = api.train(recipe, folder / "run", device="cpu")
    assert result.status == "completed"
    return folder / "run"


def doctored(dataset: Path, folder: Path, how: str) -> Path:
    """A copy of the prepared dataset whose train crops are all black, or not images at all."""
    from reidcli.data.manifest import load_manifest

    copy = folder / f"data-{how}"
    shutil.copytree(dataset, copy)
    manifest = copy / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(str(dataset), str(copy)))
    frame = load_manifest(copy)
    for path in frame[frame["split"] == "train"]["path"]:
        if how == "black":
            Image.new("RGB", Image.open(path).size).save(path)
        else:
            Path(path).write_bytes(b"not an image")
    return copy


def test_int8_file_passes_the_retrieval_check_and_says_what_it_cost(trained, dataset):
    result = api.export(
        trained, formats="onnx", int8=True, calibrate=str(dataset), max_map_drop=5.0
    ).to_json()
    (item,) = result["exports"]
    path = Path(item["path"])
    assert path.name.endswith("-int8.onnx") and item["precision"] == "int8"
    meta = json.loads(sidecar_path(path).read_text())
    quantized = meta["int8"]
    assert quantized["calibration"] == {
        "dataset": str(dataset), "split": "train", "images": 300, "seed": 0,
    }  # fmt: skip
    check = quantized["retrieval"]
    assert check["passed"] and check["split"] == "val" and check["queries"] > 0
    assert check["drop"]["mAP"] <= 5.0 and check["drop"]["rank1"] <= 5.0
    assert check["fp32"]["mAP"] > 0 and quantized["fp32_parity"]["passed"]
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized
    # reid embed runs it on real crops. How close each embedding stays is not the measure (on
    # this 4-epoch model the per-crop cosine to fp32 ranged 0.67-0.98); retrieval is, above.
    from reidcli.data.dataset import load_image
    from reidcli.data.manifest import load_manifest
    from reidcli.data.transforms import build_inference_transform

    frame = load_manifest(dataset)
    crops = frame[frame["split"] == "query"]["path"].to_numpy()[:8]
    transform = build_inference_transform((64, 32), meta["mean"], meta["std"])
    images = torch.stack([transform(load_image(str(p))) for p in crops])
    fp32 = api.export(trained, formats="onnx", out=trained / "fp32.onnx").to_json()
    a = load_exported_runner(fp32["exports"][0]["path"])(images)
    b = load_exported_runner(path)(images)
    assert a.shape == b.shape == (8, 512) and np.isfinite(b).all()
    assert np.abs(a - b).max() > 1e-4  # not the fp32 graph under another name


def test_an_int8_file_that_loses_retrieval_is_refused_and_nothing_is_written(
    trained, dataset, tmp_path, monkeypatch
):
    # What a calibration does to accuracy depends on the CPU's INT8 kernels (a black calibration
    # broke the file on AVX2 and did not on AVX-512 VNNI), so the INT8 file's features are made
    # worthless here: the refusal and the clean-up are what is tested, on every CPU.
    from reidcli.export import int8

    real = int8.retrieval_check
    rng = np.random.default_rng(0)

    def scrambled(fp32_run, int8_run, *args):
        def noise(batch):
            return rng.normal(size=np.asarray(fp32_run(batch)).shape).astype(np.float32)

        return real(fp32_run, noise, *args)

    monkeypatch.setattr(int8, "retrieval_check", scrambled)
    black = doctored(dataset, tmp_path, "black")
    out = tmp_path / "black-int8.onnx"
    with pytest.raises(ParityError, match=r"the INT8 file loses .* nothing written"):
        api.export(trained, formats="onnx", int8=True, calibrate=str(black), out=out)
    assert not out.exists() and not sidecar_path(out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_int8_requests_are_one_line_errors(trained, dataset, tmp_path, capsys):
    unreadable = doctored(dataset, tmp_path, "garbage")
    cases = [
        (["--int8"], 2, "int8 needs calibration data"),
        (
            ["--int8", "--calibrate", str(dataset), "--format", "pt2"],
            2,
            "onnx and openvino formats",
        ),
        (["--int8", "--calibrate", str(dataset), "--fp16"], 2, "not with fp16"),
        (["--int8", "--calibrate", str(tmp_path / "nothing")], 1, "--calibrate"),
        (["--int8", "--calibrate", str(unreadable)], 1, "none of the 300 chosen crops"),
    ]
    for args, code, message in cases:
        out = tmp_path / "m.onnx"
        got, _, stderr = run_cli(capsys, "export", str(trained), "--out", str(out), *args)
        assert got == code and message in stderr, (args, stderr)
        assert "Traceback" not in stderr and not out.exists()
    with pytest.raises(ExportError, match="none of the"):
        api.export(trained, formats="onnx", int8=True, calibrate=str(unreadable))
