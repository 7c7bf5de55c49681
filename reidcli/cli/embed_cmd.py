"""`reid embed`: features of images or of a prepared dataset, from a checkpoint or an export."""

import json
import sys
from pathlib import Path

import typer

from reidcli.cli.eval_cmd import Device

CONTRACT = "Files without metadata"


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"must be HEIGHTxWIDTH, e.g. 384x128; got {text!r}") from None
    if height < 1 or width < 1:
        raise typer.BadParameter(f"sides must be positive, got {text!r}")
    return height, width


def _triple(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"must be three numbers R,G,B; got {text!r}") from None
    if len(values) != 3:
        raise typer.BadParameter(f"must be three numbers R,G,B; got {text!r}")
    return values


def embed_cmd(
    model: Path = typer.Argument(
        ..., help="Run folder, checkpoint, or an exported .onnx / TorchScript file."
    ),
    inputs: list[Path] | None = typer.Argument(
        None, help="Images, folders (recursive) or text files listing image paths."
    ),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="Prepared dataset: write its query/gallery features file."
    ),
    out: Path = typer.Option(Path("features.npz"), "--out", help="Features .npz to write."),
    batch: int | None = typer.Option(
        None, "--batch", min=1, help="Images per batch (default: recipe's, 32 for exports)."
    ),
    device: Device = typer.Option("auto", "--device", help="Where a checkpoint or export runs."),
    workers: int | None = typer.Option(
        None, "--workers", min=0, help="Image-decoding processes (default: recipe's, 2)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Unreadable images are an error."),
    size: str | None = typer.Option(
        None, "--size", help="HEIGHTxWIDTH input size.", rich_help_panel=CONTRACT
    ),
    mean: str | None = typer.Option(
        None, "--mean", help="R,G,B normalisation mean.", rich_help_panel=CONTRACT
    ),
    std: str | None = typer.Option(
        None, "--std", help="R,G,B normalisation std.", rich_help_panel=CONTRACT
    ),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="Recipe of a weights file that carries none (LightMBN .pth)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Embed images (features + paths) or a prepared dataset (a `reid eval --features` file)."""
    from reidcli import api
    from reidcli.reporting import console_reporter

    size_hw = parse_size(size)
    result = api.embed(
        model,
        tuple(inputs or ()),
        dataset=dataset,
        out=out,
        batch_size=batch,
        device=device.value,
        workers=workers,
        strict=strict,
        size=size_hw,
        mean=_triple(mean),
        std=_triple(std),
        recipe=recipe,
        reporter=console_reporter(quiet),
    )
    for item in result["skipped"]:
        print(f"skipped unreadable image: {item['error']}", file=sys.stderr)
    if not quiet:
        print(
            f"embedded {result['num_images']} images ({result['embedding_dim']}-d) with "
            f"{result['backend']} in {result['seconds']:.1f}s ({result['images_per_second']:.1f} "
            f"images/s); wrote {result['out']}",
            file=sys.stderr,
        )
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
