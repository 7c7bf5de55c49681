"""Time `reid prepare` on a synthetic dataset the size of the full Market-1501 (about 36,000 files).

Usage: .venv/bin/python benchmarks/prepare.py [--dir /tmp/reid-bench-prepare] [--keep]

Generates the images once (not timed as part of prepare), then prepares them with verification
in one process (the default), in one worker process per CPU, and without verification.
"""

import argparse
import os
import shutil
import time
from pathlib import Path

from reidcli.data.layouts import parse_market_folders
from reidcli.data.prepare import prepare
from reidcli.data.synthetic import SyntheticSpec, generate_synthetic
from reidcli.recipe.options import PrepareOptions

# 1,501 identities of 20 images with Market-1501's shares of junk and distractors: the same
# order of files as the 36,036 of the original release.
SPEC = SyntheticSpec(ids=1501, images_per_id=20, junk_share=0.29, distractor_share=0.21)


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:7.2f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/reid-bench-prepare"))
    parser.add_argument("--keep", action="store_true", help="keep the generated images")
    args = parser.parse_args()
    images = args.dir / "images"
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    print(f"cpus: {os.cpu_count()}")
    if not images.is_dir():
        timed("generate synthetic images", lambda: generate_synthetic(images, SPEC))
    files = len(parse_market_folders(images, None).records)
    print(f"files: {files:,}")
    runs = [
        ("prepare, verify, 1 process (default)", dict(verify=True)),
        (f"prepare, verify, {os.cpu_count()} processes", dict(verify=True, workers=os.cpu_count())),
        ("prepare, --no-verify", dict(verify=False)),
    ]
    for label, options in runs:
        out = args.dir / "out"
        options = PrepareOptions(root=str(images), out=str(out), overwrite=True, **options)
        timed(label, lambda o=options: prepare("market1501", o))
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    if not args.keep:
        shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
