"""The `reid` command: a thin Typer skin over `reidcli.api` (torch is imported lazily).

One module per command: it fills the verb's options model from the flags that were given
(`reidcli.cli.options`), calls one `reidcli.api` function and renders the typed result. A new
command is a module here registered below; its flags come from the model's fields, so no
default or choice list is written in this package.
"""

import logging
import os
import sys

import typer

from reidcli import __version__, allocator
from reidcli.cli.adapt_cmd import adapt_cmd
from reidcli.cli.bench_cmd import bench_cmd
from reidcli.cli.calibrate_cmd import calibrate_cmd
from reidcli.cli.embed_cmd import embed_cmd
from reidcli.cli.eval_cmd import eval_cmd
from reidcli.cli.export_cmd import export_cmd
from reidcli.cli.index_cmd import index_app, search_cmd
from reidcli.cli.prepare_cmd import prepare_cmd
from reidcli.cli.recipe_cmd import recipe_app
from reidcli.cli.rerank_cmd import rerank_cmd
from reidcli.cli.train_cmd import train_cmd
from reidcli.errors import ReidError

app = typer.Typer(
    name="reid",
    help=(
        "Person re-identification: prepare data, train LightMBN and baselines, evaluate, "
        "re-rank, export, embed, benchmark, index and search galleries, calibrate thresholds."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(recipe_app, name="recipe")
app.add_typer(index_app, name="index")
app.command("prepare")(prepare_cmd)
app.command("train")(train_cmd)
app.command("adapt")(adapt_cmd)
app.command("eval")(eval_cmd)
app.command("rerank")(rerank_cmd)
app.command("export")(export_cmd)
app.command("embed")(embed_cmd)
app.command("bench")(bench_cmd)
app.command("search")(search_cmd)
app.command("calibrate")(calibrate_cmd)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reid {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Person re-identification toolkit."""


class _LevelFormatter(logging.Formatter):
    """`warning: message`, as the rest of the CLI's output reads."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def describe_system_error(err: BaseException) -> str:
    """One line for an operating-system error: what failed, and on which file."""
    if isinstance(err, MemoryError):
        return "out of memory (try a smaller batch, input size or gallery)"
    reason = err.strerror or str(err) or type(err).__name__
    names = [n for n in (err.filename, err.filename2) if n is not None]
    return f"{reason}: {' -> '.join(map(str, names))}" if names else reason


def main() -> None:
    """Console entry point: run the app, turning `ReidError`s into messages and exit codes."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    package_log = logging.getLogger("reidcli")
    level = package_log.level
    package_log.addHandler(handler)
    package_log.setLevel(logging.WARNING)
    try:
        allocator.apply_requested()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        app()
    except ReidError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (OSError, MemoryError) as err:
        # What no verb anticipated of the machine (a full disk, a permission, memory): one line,
        # exit 1. REID_DEBUG=1 shows the traceback.
        if os.environ.get("REID_DEBUG") == "1":
            raise
        print(f"error: {describe_system_error(err)}", file=sys.stderr)
        sys.exit(1)
    finally:
        package_log.removeHandler(handler)  # main() may run again in the same process
        package_log.setLevel(level)
