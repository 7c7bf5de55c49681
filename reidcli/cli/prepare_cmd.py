"""`reid prepare DATASET`: write a dataset's manifest.csv and dataset.json."""

import difflib
from pathlib import Path

import typer

from reidcli.cli.options import build, json_option, option, parse_size, print_json
from reidcli.recipe.data import DATASETS
from reidcli.recipe.options import PrepareOptions

SYNTHETIC = "Synthetic dataset only"
FLAGS = {"synthetic.size": "--size", "synthetic.images_per_id": "--images-per-id"}


def _dataset(name: str) -> str:
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise typer.BadParameter(f"unknown dataset {name!r}; {hint}choices: {', '.join(DATASETS)}")
    return name


def prepare_cmd(
    dataset: str = typer.Argument(
        ...,
        callback=_dataset,
        metavar="DATASET",
        help=f"Dataset: {', '.join(DATASETS)}.",
        show_default=False,
    ),
    root: Path | None = option(PrepareOptions, "root", "--root"),
    out: Path | None = option(PrepareOptions, "out", "--out"),
    val_ids: int | None = option(PrepareOptions, "val_ids", "--val-ids"),
    seed: int | None = option(PrepareOptions, "seed", "--seed"),
    verify: bool | None = option(PrepareOptions, "verify", "--verify/--no-verify"),
    strict: bool | None = option(PrepareOptions, "strict", "--strict/--no-strict"),
    overwrite: bool | None = option(PrepareOptions, "overwrite", "--overwrite/--no-overwrite"),
    unlabeled: bool | None = option(PrepareOptions, "unlabeled", "--unlabeled/--labeled"),
    json_out: bool = json_option(),
    ids: int | None = option(PrepareOptions, "synthetic.ids", "--ids", rich_help_panel=SYNTHETIC),
    cams: int | None = option(
        PrepareOptions, "synthetic.cams", "--cams", rich_help_panel=SYNTHETIC
    ),
    images_per_id: int | None = option(
        PrepareOptions, "synthetic.images_per_id", "--images-per-id", rich_help_panel=SYNTHETIC
    ),
    size: str | None = option(
        PrepareOptions, "synthetic.size", "--size", callback=parse_size, rich_help_panel=SYNTHETIC
    ),
) -> None:
    """Prepare a dataset: parse its layout, drop junk, verify images, write the manifest."""
    from rich.console import Console

    from reidcli import api

    given = {
        "root": root, "out": out, "val_ids": val_ids, "seed": seed, "verify": verify,
        "strict": strict, "overwrite": overwrite, "unlabeled": unlabeled, "synthetic.ids": ids,
        "synthetic.cams": cams, "synthetic.images_per_id": images_per_id, "synthetic.size": size,
    }  # fmt: skip
    options = build(PrepareOptions, given, FLAGS)
    console = Console(stderr=True)
    with console.status(f"preparing {dataset}"):
        result = api.prepare(dataset, options)
    _render(console, result)
    if json_out:
        print_json(result.to_json())


def _render(console, result) -> None:
    """The summary table and notes, on stderr."""
    from rich.table import Table

    table = Table(title=f"{result.dataset} from {result.root}")
    for column in ("split", "images", "identities", "cameras"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, stats in result.splits.items():
        table.add_row(split, f"{stats.images:,}", f"{stats.identities:,}", f"{stats.cameras:,}")
    console.print(table)
    console.print(
        f"junk dropped: {result.junk_dropped:,}; distractors kept in the gallery: "
        f"{result.distractors_kept:,}; corrupt images skipped: {result.corrupt_skipped}; "
        f"non-image files ignored: {result.non_images_ignored}"
    )
    if result.official_status != "n/a":
        style = {"complete": "green", "partial": "yellow", "mismatch": "red"}[
            result.official_status
        ]
        console.print(f"[{style}]{result.official_message}[/{style}]", highlight=False)
    out = Path(result.out)
    if result.replaced_files:
        console.print(f"replaced the previous dataset in {out} ({result.replaced_files} files)")
    console.print(f"wrote {out / 'manifest.csv'} and {out / 'dataset.json'}")
