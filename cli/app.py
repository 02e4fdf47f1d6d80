"""The Typer application and the options every command shares.

Each command module (``train.py``, ``approximate.py``, ``prune.py``) imports ``app`` from here and
decorates its functions with ``@app.command()``; ``lottery_jax.cli`` imports them all. Commands call
into the library and raise :class:`lottery_jax.errors.UserError` for bad input; ``main`` turns that
(and Click's usage errors) into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="lottery-jax",
    help="Optimal lottery tickets via SubsetSum (Pensia et al., NeurIPS 2020) in JAX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"lottery-jax {version('lottery-jax')}")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            typer.echo("lottery-jax (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Optimal lottery tickets via SubsetSum (Pensia et al., NeurIPS 2020) in JAX."""


class Inputs(StrEnum):
    """Input preprocessing: ``unit`` = pixels in [0, 1] (Experiment 1); ``normalized`` = mean/std."""

    unit = "unit"
    normalized = "normalized"


class DatasetName(StrEnum):
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    kmnist = "kmnist"


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="LOTTERY_JAX_DATA",
        help="Directory with the four IDX files (raw or .gz). Without it, --dataset is read from a "
        "tensorflow-datasets copy if prepared, else from the cache (downloaded and verified on first "
        "use; see `lottery-jax data info`).",
        show_default=True,
    ),
]
DatasetOpt = Annotated[
    DatasetName,
    typer.Option("--dataset", help="Dataset to use when no --data-dir is given."),
]
SEED_MAX = 2**32 - 1
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed", min=0, max=SEED_MAX, help="Seed of every random draw (recorded), 0..2^32-1."
    ),
]
OutOpt = Annotated[
    Path, typer.Option("--out", help="Output directory (results.json and artifacts).")
]


def default_data_dir() -> Path | None:
    value = os.environ.get("LOTTERY_JAX_DATA")
    return Path(value) if value else None
