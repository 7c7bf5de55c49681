"""`reid embed`: features of images or of a prepared dataset, from a checkpoint or an export."""

import os
import sys
from pathlib import Path

import typer

from reidcli.cli.options import (
    build,
    choices,
    json_option,
    option,
    parse_rgb,
    parse_size,
    print_json,
    quiet_option,
)
from reidcli.recipe.options import EmbedOptions

CONTRACT = "Files without metadata"
Device = choices(EmbedOptions, "device")
Runner = choices(EmbedOptions, "runner")


def embed_cmd(
    model: Path = typer.Argument(
        ..., help="Run folder, checkpoint, or an exported .onnx / TorchScript file."
    ),
    inputs: list[Path] | None = typer.Argument(
        None, help="Images, folders (recursive) or text files listing image paths."
    ),
    dataset: Path | None = option(EmbedOptions, "dataset", "--dataset"),
    out: Path | None = option(EmbedOptions, "out", "--out"),
    batch: int | None = option(EmbedOptions, "batch", "--batch"),
    device: Device | None = option(EmbedOptions, "device", "--device"),
    runner: Runner | None = option(EmbedOptions, "runner", "--runner"),
    workers: int | None = option(EmbedOptions, "workers", "--workers"),
    strict: bool | None = option(EmbedOptions, "strict", "--strict/--no-strict"),
    size: str | None = option(
        EmbedOptions, "size", "--size", callback=parse_size, rich_help_panel=CONTRACT
    ),
    mean: str | None = option(
        EmbedOptions, "mean", "--mean", callback=parse_rgb, rich_help_panel=CONTRACT
    ),
    std: str | None = option(
        EmbedOptions, "std", "--std", callback=parse_rgb, rich_help_panel=CONTRACT
    ),
    recipe: Path | None = option(EmbedOptions, "recipe", "--recipe"),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """Embed images (features + paths) or a prepared dataset (a `reid eval --features` file)."""
    from reidcli import api
    from reidcli.reporting import console_reporter

    given = {
        "dataset": dataset, "out": out, "batch": batch, "device": device, "workers": workers,
        "strict": strict, "size": size, "mean": mean, "std": std, "recipe": recipe,
        "runner": runner,
    }  # fmt: skip
    options = build(EmbedOptions, given)
    result = api.embed(model, tuple(inputs or ()), options, reporter=console_reporter(quiet))
    for item in result.skipped:
        print(f"skipped unreadable image: {item.error}", file=sys.stderr)
    if result.parts is not None and os.environ.get("RANK", "0") != "0":
        return  # rank 0 reports for every rank
    if not quiet:
        print(
            f"embedded {result.num_images} images ({result.embedding_dim}-d) with "
            f"{result.backend} in {result.seconds:.1f}s ({result.images_per_second:.1f} "
            f"images/s); wrote {result.out}",
            file=sys.stderr,
        )
    if as_json:
        print_json(result.to_json())
