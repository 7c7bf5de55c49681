"""`reid eval RUN` of an LMBN_n checkpoint through PyTorch and through ONNX Runtime, as processes.

Usage: python benchmarks/eval_runner.py [--data ../shared/data/market1501_subset] [--val-ids 50]
       [--out /tmp/reid-evalspeed]

Prepares the real Market-1501 subset with `--val-ids` validation identities, writes an LMBN_n
checkpoint with fresh (seeded) weights and the LMBN recipes' settings (384x128, channels_last,
flip TTA), then times whole `reid eval CKPT --split val` processes: `--runner pytorch`, then
`--runner onnxruntime` twice (the first run exports and caches the file, the second uses the
cache). Prints the CPU, each run's wall time and images/s (validation query + gallery crops per
second of the whole process, start-up and scoring included), and checks that both runners give
the same mAP to 1e-4.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/market1501_subset"))
    parser.add_argument("--val-ids", type=int, default=50)
    parser.add_argument("--out", default="/tmp/reid-evalspeed")
    args = parser.parse_args()

    import torch

    from reidcli import api
    from reidcli.data.manifest import load_manifest
    from reidcli.engine.checkpoint import save_checkpoint
    from reidcli.models import build_model
    from reidcli.recipe import load_recipe
    from reidcli.verbs.bench.system import cpu_name

    out = Path(args.out)
    prepared = out / "data"
    api.prepare("market1501", root=args.data, out=str(prepared), val_ids=args.val_ids,
                overwrite=True)  # fmt: skip
    frame = load_manifest(prepared)
    images = int(frame["split"].isin(["val_query", "val_gallery"]).sum())
    recipe = load_recipe(ROOT / "recipes" / "lmbn_n.yaml", [f"data.root={prepared}",
                         "model.pretrained=none"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(recipe.model, 751)
    ckpt = out / "run" / "last.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, {"model": model.state_dict(), "recipe": json.dumps(recipe.to_dict()),
                           "num_classes": 751, "epoch": 0, "step": 0})  # fmt: skip
    cache = ckpt.parent / ".reid-cache"
    if cache.exists():
        for path in cache.iterdir():
            path.unlink()
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {images} validation crops")
    maps = {}
    for label, runner in (("pytorch", "pytorch"), ("onnxruntime (exports, caches)",
                          "onnxruntime"), ("onnxruntime (cached)", "onnxruntime")):  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "reidcli", "eval", str(ckpt), "--split", "val", "--runner",
             runner, "--json"], cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"reid eval --runner {runner} failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout[done.stdout.index("{") :])  # an indented document
        maps[label] = result["metrics"]["mAP"] if "metrics" in result else result["mAP"]
        print(f"{label}: {seconds:.1f} s, {images / seconds:.1f} images/s, mAP {maps[label]:.6f}",
              flush=True)  # fmt: skip
    values = list(maps.values())
    print("same mAP to 1e-4:", max(values) - min(values) <= 1e-4)


if __name__ == "__main__":
    main()
