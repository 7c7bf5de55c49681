"""`reid prepare`: parse a dataset, apply the rules, verify images, write the manifest."""

import logging
from pathlib import Path

from reidcli import __version__
from reidcli.data.archive import extract_zip
from reidcli.data.images import verify_images
from reidcli.data.layouts import Layout, Scan, get_layout, parse_market_folders
from reidcli.data.manifest import (
    INFO,
    MANIFEST,
    build_manifest,
    carve_validation,
    check_query_gallery,
    save_prepared,
    split_stats,
)
from reidcli.data.synthetic import SyntheticSpec, write_synthetic
from reidcli.data.unlabeled import parse_unlabeled, unlabeled_manifest
from reidcli.errors import DatasetError
from reidcli.recipe.options import PrepareOptions
from reidcli.outputs import OutputFolder

log = logging.getLogger(__name__)
SHOWN = 10


def prepare(dataset: str, options: PrepareOptions) -> dict:
    """Prepare a dataset: write `manifest.csv` and `dataset.json` into the output folder.

    Args:
        dataset: a name from `LAYOUTS`.
        options: where it comes from and goes (`root`: the dataset folder, the release `.zip`
            or a CSV for `folder`, default `data/raw/DATASET`, unused for `synthetic`; `out`:
            default `data/DATASET`, which must be new, empty or a folder `reid prepare` wrote,
            see `reidcli.outputs`), the validation identities, the checks, and what
            `synthetic` generates.

    Returns:
        The dataset description also written to `dataset.json`; `replaced_files` counts the
        files of a previous dataset in `out` that it replaced.

    Raises:
        DatasetError: anything wrong with the input, with a message naming the file or folder.
        OutputError: `out` is a file, holds files reid did not write, or holds a prepared
            dataset and `overwrite` is not set.
    """
    layout = get_layout(dataset)
    if options.unlabeled and dataset != "folder":
        raise DatasetError(
            f"--unlabeled prepares a folder (or CSV) of crops without identities: "
            f"`reid prepare folder --root DIR --unlabeled`, not {dataset}"
        )
    out = Path(options.out if options.out is not None else Path("data") / dataset).absolute()
    spec = None
    if dataset == "synthetic":
        spec = SyntheticSpec.from_options(options.synthetic, options.seed)
        spec.check(out.parent)
    root = options.root if options.root is not None else Path("data") / "raw" / dataset
    adopt = (MANIFEST, INFO)  # what reid prepare wrote before folders carried a record
    with OutputFolder.open(out, "dataset", overwrite=options.overwrite, adopt=adopt) as folder:
        return _prepare_into(folder, layout, Path(root).absolute(), spec, options)


def _prepare_into(folder, layout, source, spec, options: PrepareOptions) -> dict:
    """The body of `prepare`, writing into the claimed output folder."""
    out, replaced = folder.path, len(folder.previous)
    if options.unlabeled:
        return _prepare_unlabeled(folder, source, options)
    if spec is not None:
        folder.check_replaceable("images")
        partial = out / ".images.partial"
        write_synthetic(partial, spec)
        folder.replace_tree("images", partial)
        source = out / "images"
        scan = parse_market_folders(source, spec.cams)
    else:
        scan = _scan(layout, source, folder)
    df, dropped = build_manifest(scan.records)
    df, corrupt = _drop_corrupt(df, options)
    verify, strict, val_ids, seed = options.verify, options.strict, options.val_ids, options.seed
    for split in ("train", "query", "gallery"):
        if not (df.split == split).any():
            raise DatasetError(f"the {split} split of {scan.root} has no usable images")
    check_query_gallery(df)
    stats = split_stats(df)
    official = check_official(layout, stats)
    if strict and official["status"] == "mismatch":
        raise DatasetError(official["message"] + " (strict)")
    df = carve_validation(df, val_ids, seed)
    if val_ids:
        check_query_gallery(df, "val_query", "val_gallery")
    info = {
        "dataset": layout.name,
        "root": str(scan.root),
        "source": str(source),
        "manifest": "manifest.csv",
        "splits": split_stats(df),
        "junk_dropped": dropped["junk"],
        "distractors_kept": int(((df.split == "gallery") & (df.pid == 0)).sum()),
        "distractors_dropped_outside_gallery": dropped["distractor_outside_gallery"],
        "non_images_ignored": sorted(scan.ignored),
        "corrupt_skipped": [{"path": path, "reason": reason} for path, reason in corrupt],
        "verified": verify,
        "val_ids": val_ids,
        "seed": seed,
        "official": official,
        "replaced_files": replaced,
        "reid_version": __version__,
    }
    if spec is not None:
        info["synthetic"] = spec.__dict__
    folder.own(MANIFEST, INFO)
    save_prepared(df, info, out)
    return info


def _drop_corrupt(df, options: PrepareOptions):
    """The manifest without the images that do not decode (an error with `strict`), and those."""
    corrupt = verify_images(df.path.tolist(), options.workers) if options.verify else []
    if corrupt:
        listing = "; ".join(f"{path}: {reason}" for path, reason in corrupt[:SHOWN])
        message = f"{len(corrupt)} images cannot be decoded: {listing}"
        if options.strict:
            raise DatasetError(message + " (strict)")
        log.warning("%s; skipped", message)
        df = df[~df.path.isin({path for path, _ in corrupt})].reset_index(drop=True)
    return df, corrupt


def _prepare_unlabeled(folder: OutputFolder, source: Path, options: PrepareOptions) -> dict:
    """Crops without identities: a train split with pid -1 (see `reidcli.data.unlabeled`)."""
    scan = parse_unlabeled(source)
    df, corrupt = _drop_corrupt(unlabeled_manifest(scan), options)
    if df.empty:
        raise DatasetError(f"{source}: no image of the {len(scan.records)} found decodes")
    train = df[df.split == "train"]
    cameras = int(train.camid[train.camid > 0].nunique())
    info = {
        "dataset": "folder",
        "unlabeled": True,
        "root": str(scan.root),
        "source": str(source),
        "manifest": "manifest.csv",
        "splits": {"train": {"images": len(df), "identities": 0, "cameras": cameras}},
        "junk_dropped": 0,
        "distractors_kept": 0,
        "distractors_dropped_outside_gallery": 0,
        "non_images_ignored": sorted(scan.ignored),
        "corrupt_skipped": [{"path": path, "reason": reason} for path, reason in corrupt],
        "verified": options.verify,
        "val_ids": 0,
        "seed": options.seed,
        "official": {"status": "n/a", "expected": None, "message": "unlabeled crops"},
        "replaced_files": len(folder.previous),
        "reid_version": __version__,
    }
    folder.own(MANIFEST, INFO)
    save_prepared(df, info, folder.path)
    return info


def _scan(layout: Layout, source: Path, folder: OutputFolder) -> Scan:
    """Parse the dataset, extracting a release `.zip` into `OUT/source` first."""
    if source.is_file() and source.suffix.lower() == ".zip":
        folder.check_replaceable("source")
        partial = folder.path / ".source.partial"
        extract_zip(source, partial)
        folder.replace_tree("source", partial)
        return layout.parse(folder.path / "source")
    return layout.parse(source)


def check_official(layout: Layout, stats: dict[str, dict[str, int]]) -> dict:
    """Compare the prepared counts (before any validation split) with the official statistics.

    Returns:
        {"status": "complete" | "partial" | "mismatch" | "n/a", "expected": ..., "message": ...};
        "partial" means every count is at most the official one (a subset), "mismatch" that some
        count exceeds it.
    """
    if layout.official is None:
        return {"status": "n/a", "expected": None, "message": "no official statistics"}
    found = {split: (stats[split]["images"], stats[split]["identities"]) for split in stats}
    parts, over, under = [], False, False
    for split, (images, ids) in layout.official.items():
        got_images, got_ids = found.get(split, (0, 0))
        over |= got_images > images or got_ids > ids
        under |= got_images < images or got_ids < ids
        parts.append(f"{split} {got_images:,} of {images:,} images ({got_ids:,} of {ids:,} ids)")
    expected = {split: {"images": i, "identities": n} for split, (i, n) in layout.official.items()}
    counts = ", ".join(parts)
    if over:
        status, message = "mismatch", f"counts differ from the official {layout.title}: {counts}"
    elif under:
        status, message = "partial", f"partial copy of {layout.title}: {counts}"
    else:
        status, message = "complete", f"complete {layout.title}: {counts}"
    return {"status": status, "expected": expected, "message": message}
