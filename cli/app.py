"""The Typer application and the options every command shares.

Each command module (``train.py``, ``approximate.py``, ``prune.py``) imports ``app`` from here and
decorates its functions with ``@app.command()``; ``lottery_jax.cli`` imports them all. Commands call
into the library and raise :class:`lottery_jax.errors.UserError` for bad input; ``main`` turns that
(and Click's usage errors) into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

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
            "--allow-unverified-data",
            envvar="LOTTERY_JAX_ALLOW_UNVERIFIED_DATA",
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


def target_parts(target: str | Path) -> tuple[str, dict[str, Any]]:
    """How a default output folder (:func:`lottery_jax.rundir.default_run_dir`) names a target: a
    built-in network by its name (``paper`` is the paper's FC2), a weight file by its stem, with
    the sha256 of its bytes among the settings (two files called model.npz never share a
    folder)."""
    from lottery_jax.paper import NETWORKS
    from lottery_jax.rundir import file_sha256

    text = str(target)
    if text == "paper" or text in NETWORKS:
        return text, {}
    return Path(text).stem or "target", {"target_file_sha256": file_sha256(text)}


def start_processes(coordinator, num_processes, process_id, detect):
    """Start JAX's distributed runtime if this is one of several processes (before any JAX use);
    returns this process's place (:class:`lottery_jax.distributed.Processes`)."""
    from lottery_jax import distributed

    return distributed.initialize(coordinator, num_processes, process_id, detect=detect)


# ----------------------------------------------------------------------------- help at 80 columns

#: Help panels of the long option lists (option name -> panel); the rest stay under "Options".
_SOLVER = "Solver tiers and budget"
_DATA = "Target and data"
_OUTPUT = "Output"
_TRAINING = "Training"
HELP_PANELS = {
    "target": _DATA, "epochs": _TRAINING, "inputs": _DATA, "data_dir": _DATA, "dataset": _DATA,
    "evaluate": _DATA, "conv_from": _DATA, "max_enum_n": _SOLVER, "feasibility_groups": _SOLVER,
    "prove": _SOLVER, "max_hours": _SOLVER, "scip_time_limit": _SOLVER, "scip_workers": _SOLVER,
    "rows_per_chunk": _SOLVER, "out": _OUTPUT, "progress": _OUTPUT, "force": _OUTPUT,
    "lr": _TRAINING, "batch_size": _TRAINING, "momentum": _TRAINING, "weight_decay": _TRAINING,
    "schedule": _TRAINING, "mask_method": _TRAINING, "members": _TRAINING,
    "max_members": _TRAINING,
}  # fmt: skip
#: Commands whose options are grouped into :data:`HELP_PANELS` (long option lists), with their own
#: placements first.
PANELLED = {
    "approximate": {"seed": "Coefficient draw", "range_low": "Coefficient draw",
                    "range_high": "Coefficient draw", "range_mode": "Coefficient draw",
                    "zero_small": "Small weights"},
    "prune": {"seed": _TRAINING}, "sweep": {"seed": _TRAINING}, "train": {"seed": _TRAINING},
    "study": {k: "Construct axis (--construct)" for k in
              ("construct", "redundancy", "init", "relu", "compare_epochs", "compare_at")},
    "construct": {"redundancy": "Random network", "relu": "Random network",
                  "init": "Random network", "seed": "Random network", "compare_epochs": _TRAINING},
}  # fmt: skip


def _metavar(param: Any) -> tuple[str, list[str]]:
    """A short metavar for an option, from its Python type: ``X`` (a number), ``N`` (an
    integer), ``PATH``, ``NAME`` (a choice, with the choices), ``LIST`` (repeatable), ``TEXT``;
    none for a flag."""
    import types
    import typing

    if param.is_flag:
        return "", []
    kind = param.type_descriptor.annotation
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is list or param.multiple:
        return "LIST", []
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        return "NAME", [e.value for e in kind]
    return {int: "N", float: "X", Path: "PATH"}.get(kind, "TEXT"), []


def readable_help(command: Any, name: str = "") -> Any:
    """Options that read at 80 columns, on the click command tree Typer builds: short metavars
    (``X``, ``N``, ``PATH``, ``NAME`` with the choices listed in the help, nothing for flags) and,
    for the long option lists, help panels. Typer's defaults (``<float>``, ``<list[str]>``,
    ``<red-fc2|red-fc4|...>``) squeeze the help column into one-word lines. Returns ``command``."""
    for sub_name, sub in (getattr(command, "commands", None) or {}).items():
        readable_help(sub, sub_name)
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option":
            continue
        if param.metavar is None:
            param.metavar, choices = _metavar(param)
            if choices and param.help:
                param.help = f"{param.help} (one of {', '.join(map(str, choices))})"
        if name in PANELLED and param.rich_help_panel is None:
            panels = {**HELP_PANELS, **PANELLED[name]}
            param.rich_help_panel = panels.get(param.name or "")
    return command
