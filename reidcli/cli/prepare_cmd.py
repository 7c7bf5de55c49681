"""`reid prepare DATASET`: write a dataset's manifest.csv and dataset.json."""

import difflib
import json
import sys
from pathlib import Path

import typer

from reidcli.recipe.data import DATASETS

SYNTHETIC = "Synthetic dataset only"


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
    root: Path | None = typer.Option(
        None,
        help="Dataset folder, release .zip, or (folder) a CSV path,pid,camid,split. "
        "Default data/raw/DATASET.",
        show_default=False,
    ),
    out: Path | None = typer.Option(None, help="Output folder. Default data/DATASET."),
    val_ids: int = typer.Option(0, min=0, help="Training identities moved to validation."),
    seed: int = typer.Option(0, help="Seed for the validation draw and the synthetic data."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Decode every image."),
    strict: bool = typer.Option(
        False, help="Fail on corrupt images and on counts above the official statistics."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a dataset prepared in --out before (reid's files only)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print dataset.json to stdout."),
    ids: int = typer.Option(100, help="Identities.", rich_help_panel=SYNTHETIC),
    cams: int = typer.Option(6, help="Cameras.", rich_help_panel=SYNTHETIC),
    images_per_id: int = typer.Option(8, help="Images per identity.", rich_help_panel=SYNTHETIC),
    size: str = typer.Option("128x64", help="HEIGHTxWIDTH.", rich_help_panel=SYNTHETIC),
) -> None:
    """Prepare a dataset: parse its layout, drop junk, verify images, write the manifest."""
    from rich.console import Console

    from reidcli import api
    from reidcli.data.synthetic import parse_size

    console = Console(stderr=True)
    with console.status(f"preparing {dataset}"):
        info = api.prepare(
            dataset, root, out, val_ids=val_ids, seed=seed, verify=verify, strict=strict,
            ids=ids, cams=cams, images_per_id=images_per_id, size=parse_size(size),
            overwrite=overwrite,
        )  # fmt: skip
    _render(console, info, out if out is not None else Path("data") / dataset)
    if json_out:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")


def _render(console, info: dict, out: Path) -> None:
    """The summary table and notes, on stderr."""
    from rich.table import Table

    table = Table(title=f"{info['dataset']} from {info['root']}")
    for column in ("split", "images", "identities", "cameras"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, stats in info["splits"].items():
        table.add_row(split, *(f"{stats[key]:,}" for key in ("images", "identities", "cameras")))
    console.print(table)
    console.print(
        f"junk dropped: {info['junk_dropped']:,}; distractors kept in the gallery: "
        f"{info['distractors_kept']:,}; corrupt images skipped: {len(info['corrupt_skipped'])}; "
        f"non-image files ignored: {len(info['non_images_ignored'])}"
    )
    official = info["official"]
    if official["status"] != "n/a":
        style = {"complete": "green", "partial": "yellow", "mismatch": "red"}[official["status"]]
        console.print(f"[{style}]{official['message']}[/{style}]", highlight=False)
    if info["replaced_files"]:
        console.print(f"replaced the previous dataset in {out} ({info['replaced_files']} files)")
    console.print(f"wrote {out / 'manifest.csv'} and {out / 'dataset.json'}")
