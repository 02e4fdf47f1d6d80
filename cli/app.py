"""The Typer application and the options every command shares.

Each command module (``train.py``, ``approximate.py``, ``prune.py``) imports ``app`` from here and
decorates its functions with ``@app.command()``; ``lottery_jax.cli`` imports them all. Commands call
into the library and raise :class:`lottery_jax.errors.UserError` for bad input; ``main`` turns that
(and Click's usage errors) into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .options import SEED_MAX

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
    allow_unverified_data: Annotated[
        bool,
        typer.Option(
            "--allow-unverified-data", envvar="LOTTERY_JAX_ALLOW_UNVERIFIED_DATA",
            help="Use a --data-dir that contradicts a dataset whose files are known (MNIST, "
            "Fashion-MNIST: e.g. train and test swapped) instead of refusing it; recorded in "
            "every results.json.",
        ),
    ] = False,
) -> None:
    """Optimal lottery tickets via SubsetSum (Pensia et al., NeurIPS 2020) in JAX."""
    from lottery_jax import data

    data.CLI_ALLOW_UNVERIFIED[0] = allow_unverified_data  # (set on every invocation)


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
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed", min=0, max=SEED_MAX, help="Seed of every random draw (recorded), 0..2^32-1."
    ),
]
OutOpt = Annotated[
    Path, typer.Option("--out", help="Output directory (results.json and artifacts).")
]

# Several processes (hosts) on one job: JAX's distributed runtime (lottery_jax.distributed).
_PROCS = "Several processes (hosts)"
CoordinatorOpt = Annotated[
    str | None,
    typer.Option(
        "--coordinator", rich_help_panel=_PROCS,
        help="HOST:PORT of process 0 for JAX's distributed runtime (with --num-processes and "
        "--process-id); the processes share the work and write only their own runs.",
    ),
]  # fmt: skip
NumProcessesOpt = Annotated[
    int | None,
    typer.Option("--num-processes", rich_help_panel=_PROCS, help="Number of processes."),
]
ProcessIdOpt = Annotated[
    int | None,
    typer.Option("--process-id", rich_help_panel=_PROCS, help="This process: 0..N-1."),
]
DistributedOpt = Annotated[
    bool | None,
    typer.Option(
        "--distributed/--no-distributed", rich_help_panel=_PROCS, show_default=False,
        help="Let JAX detect the processes from the cluster (SLURM, Open MPI, TPU pods) "
        "\\[default: when srun or mpirun started several tasks]",
    ),
]  # fmt: skip


def start_processes(coordinator, num_processes, process_id, detect):
    """Start JAX's distributed runtime if this is one of several processes (before any JAX use);
    returns this process's place (:class:`lottery_jax.distributed.Processes`)."""
    from lottery_jax import distributed

    return distributed.initialize(coordinator, num_processes, process_id, detect=detect)

