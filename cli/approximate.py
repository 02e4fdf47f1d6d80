"""``approximate`` and ``verify``: Experiment 1 (every weight of a target as a SubsetSum)."""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lottery_jax import checkpoint
from lottery_jax import subsetsum as ap
from lottery_jax.errors import UserError
from lottery_jax.paper import resolve_weights
from lottery_jax.rundir import default_run_dir, number_label
from lottery_jax.subsetsum.experiment import (
    ExperimentHooks,
    ExperimentOutcome,
    ExperimentSpec,
    SolveHooks,
    run_experiment,
)

from .app import (
    CoordinatorOpt,
    DataDirOpt,
    DatasetName,
    DatasetOpt,
    DistributedOpt,
    Inputs,
    NumProcessesOpt,
    ProcessIdOpt,
    SeedOpt,
    start_processes,
    target_parts,
)
from .options import FRACTION_OPEN, POSITIVE, POSITIVE_INT, Rule, check, parse_names
from .progress import console, progress_bar
from .tables import key_value_table, status_table, table
from .train import train_with_progress

#: The approximate command group, composed into the ``lottery-jax`` app by ``lottery_jax.cli``.
commands = typer.Typer()


class Objective(StrEnum):
    min_error = "min-error"
    min_count = "min-count"


class Coefficients(StrEnum):
    per_row = "per-row"
    per_weight = "per-weight"


class Rounding(StrEnum):
    published = "published"
    readme = "readme"


def layer_table(rows: list[dict[str, Any]]) -> Table:
    """The per-layer table: shape, tier, weights, remaining coefficients, relative size, max
    error (the statuses: :func:`status_table`)."""
    cols = ["layer", "shape", "tier", "weights", "remaining", "relative", "max\nerror"]
    t = table("per layer", cols, left=["layer", "tier"])
    for r in rows:
        t.add_row(
            r["layer"],
            "x".join(map(str, r["shape"])),
            (r.get("tier") or "-").replace("feasibility ", "feas.\n"),
            f"{r['weights']:,}",
            f"{r['remaining_params']:,}",
            f"{r['relative_size']:.2f}x",
            f"{r['max_error']:.3g}",
        )
    return t


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _scip_reporter(bar: Progress):
    """The ``on_scip`` callback: warn once per layer before its SCIP phase (instances, resumed,
    worst case), then keep a bar with a time estimate."""
    tasks: dict[str, Any] = {}

    def on_scip(p) -> None:
        if p.layer not in tasks:
            left = p.total - p.resumed
            resumed = f" ({p.resumed:,} resumed from an interrupted run)" if p.resumed else ""
            bar.console.print(
                f"SCIP tier, {p.layer}: {left:,} instances{resumed} on {p.workers} worker(s), "
                f"time limit {p.time_limit:g} s each: worst case {_hours(p.worst_case_seconds)}",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip
            tasks[p.layer] = bar.add_task(f"{p.layer} SCIP", total=p.total, completed=p.done)
        bar.update(tasks[p.layer], completed=p.done)

    return on_scip


def results_table(r: dict[str, Any]) -> Table:
    """The paper's Experiment 1 table."""

    def pct(v):
        return "-" if v is None else f"{v:.2f}%"

    resumed = r.get("resumed_chunks") or 0
    rows = [
        ("target accuracy", pct(r["target_accuracy"])),
        ("approximated accuracy", pct(r["approx_accuracy"])),
        ("target params", f"{r['target_params']:,}"),
        ("initial params (n x target)", f"{r['initial_params']:,}"),
        ("remaining params", f"{r['remaining_params']:,}"),
        ("remaining / target", f"{r['relative_size']:.2f}x"),
        ("all within eps", str(r["all_within_epsilon"])),
        ("max error", f"{r['max_error']:.3g}"),
        *((f"  {s}", f"{k:,}") for s, k in r["status_counts"].items()),
        ("solve seconds (compile excluded)", f"{r['seconds']:.2f}"),
        ("compile seconds", f"{r['compile_seconds']:.2f}"),
    ]
    if resumed:  # (their solve seconds are the earlier run's, and nothing of theirs compiled)
        rows.append(("chunks resumed / solved now", f"{resumed:,} / {r.get('solved_chunks', 0):,}"))
    title = f"SubsetSum approximation (eps={r['epsilon']}, c={r['c']}, n={r['n']})"
    return key_value_table(title, rows)


def _check_n(c: float, epsilon: float, rounding: str) -> None:
    """--c and --epsilon must give at least one coefficient (never silently n = 1)."""
    from lottery_jax.subsetsum import search as ss

    if ss.raw_n_coefficients(c, epsilon, rounding) < 1:
        raise UserError(
            f"--c {c:g} with --epsilon {epsilon:g} gives n = 0 coefficients ({rounding} "
            "rounding); raise --c"
        )


def _layer_patterns(layers: str | None) -> tuple[str, ...] | None:
    """--layers: None (not given) is every layer; given, it must name at least one pattern."""
    if layers is None:
        return None
    patterns = tuple(parse_names([layers], "--layers"))
    if not patterns:
        raise UserError(f"--layers {layers!r} names no pattern (leave it out for every layer)")
    return patterns


@commands.command()
def approximate(
    epsilon: Annotated[float, typer.Option("--epsilon", help="Allowed error per weight.")] = 0.01,
    c: Annotated[float, typer.Option("--c", help="n = c * log2(1/eps) coefficients.")] = 3.0,
    rounding: Annotated[
        Rounding,
        typer.Option(
            help="published: n = int(c*round(log2(1/eps))) (21); readme: round(c*log2(1/eps))"
        ),
    ] = Rounding.published,
    target: Annotated[
        Path | None,
        typer.Option(
            help="paper: the paper's own FC2 target (built in, 97.19%); train: train a new FC2 "
            "first (--epochs); or a weight file (.npz, PyTorch layout: FC2, FC4 or LeNet5, with "
            "or without biases, any key names, float16/32/64). \\[default: paper]"
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Epochs when training the target.")] = 10,
    objective: Annotated[
        Objective, typer.Option(help="min-error (the paper's) or min-count (fewest coefficients).")
    ] = Objective.min_error,
    coefficients: Annotated[
        Coefficients,
        typer.Option(
            help="per-row: one coefficient set per row, a row being a slice along a tensor's "
            "leading axis (an output neuron's weights, a conv kernel's output channel; each "
            "element of a bias is its own row); the published run. per-weight: one set per weight."
        ),
    ] = Coefficients.per_row,
    zero_small: Annotated[
        bool, typer.Option(help="|w| <= eps becomes 0 with no coefficients (check_w_lt_eps).")
    ] = False,
    range_low: Annotated[
        float | None, typer.Option(help="Fixed coefficient range low (default: from the target).")
    ] = None,
    range_high: Annotated[float | None, typer.Option(help="Fixed coefficient range high.")] = None,
    range_mode: Annotated[
        str,
        typer.Option(
            help="Coefficient range from the target: published \\[min(0,min w), max(0,max w)] "
            "(the published code), symmetric \\[-max|w|, max|w|], or auto: published unless one "
            "side is under half the other (then symmetric; e.g. LeNet5)."
        ),
    ] = "auto",
    inputs: Annotated[
        Inputs | None,
        typer.Option(
            help="Input preprocessing for the accuracies \\[default: the weight file's "
            "__meta__ inputs; without one unit for FC2/FC4 (Experiment 1), normalized for LeNet5 "
            "(Experiment 2)]"
        ),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated glob patterns of the tensors to approximate (e.g. 'fc*.weight'); "
            "the others stay exact. \\[default: every weight and bias]"
        ),
    ] = None,
    seed: SeedOpt = 0,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = DatasetName.mnist,
    evaluate: Annotated[
        bool, typer.Option(help="Measure test accuracy of the target and the approximation.")
    ] = True,
    max_enum_n: Annotated[
        int | None,
        typer.Option(
            help="Largest n solved by exact meet-in-the-middle enumeration (at most 34). Default: "
            "per layer, the largest n whose measured exact cost stays under ~55 us a weight on a "
            "2-core CPU: 26 for rows of 784 weights (the paper's FC2), 25 for 500, at least 22. "
            "Beyond it: the feasibility tier (exact search over groups of ~log2(range/eps)+5 "
            "coefficients: `feasible`), then SCIP for the weights it leaves."
        ),
    ] = None,
    feasibility_groups: Annotated[
        int, typer.Option(help="Coefficient groups the feasibility tier tries per weight.")
    ] = 8,
    prove: Annotated[
        bool,
        typer.Option(help="Ask SCIP to prove optimality of the feasible weights too (slow)."),
    ] = False,
    max_hours: Annotated[
        float,
        typer.Option(
            help="Refuse up front a run estimated to take longer (JAX tiers + SCIP worst case)."
        ),
    ] = 4.0,
    scip_time_limit: Annotated[float, typer.Option(help="SCIP seconds per weight.")] = 60.0,
    scip_workers: Annotated[int, typer.Option(help="SCIP worker processes.")] = 2,
    rows_per_chunk: Annotated[
        int | None, typer.Option(help="Instances per chunk (default: sized for bounded memory).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory \\[default: runs/approximate-..., named after the target, "
            "eps, c, objective and seed, plus a digest of the other settings that differ from "
            "their defaults]"
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    coordinator: CoordinatorOpt = None,
    num_processes: NumProcessesOpt = None,
    process_id: ProcessIdOpt = None,
    distributed: DistributedOpt = None,
) -> None:
    """Approximate every weight of a target by a subset sum of n random numbers (Experiment 1).

    Writes results.json, ticket.npz (check it with `lottery-jax verify`) and approximated.npz.
    Exit status 3 when some weight has no subset within eps (the run still completes); 5 when the
    test data cannot be had (the ticket is still written; results.json has null accuracies and
    the reason). Re-running the same command with the same --out resumes from the finished chunks.
    """
    cfg = _approx_config(
        epsilon, c, rounding, objective, coefficients, zero_small, seed, range_low, range_high,
        max_enum_n, scip_time_limit, scip_workers, rows_per_chunk, layers, range_mode,
        feasibility_groups, prove, max_hours,
    )  # fmt: skip
    check("--epochs", epochs, POSITIVE_INT)
    inputs_mode = None if inputs is None else inputs.value
    spec = ExperimentSpec(
        cfg, out or default_out(cfg, target, epochs, inputs_mode, dataset.value),
        target="paper" if target is None else target, epochs=epochs, inputs=inputs_mode,
        data_dir=data_dir, dataset=dataset.value, evaluate=evaluate,
        command=" ".join(["lottery-jax", *sys.argv[1:]]),
    )  # fmt: skip
    procs = start_processes(coordinator, num_processes, process_id, distributed)
    outcome = run_experiment(spec, procs, _hooks(progress))
    if outcome.results is None:  # a secondary process: it solved its share of the chunks
        console.print(f"{outcome.process}: solved {outcome.solved_chunks} chunk(s)")
        return
    if outcome.solved_chunks is not None:
        console.print(f"{outcome.process}: solved {outcome.solved_chunks} chunk(s)")
    show_outcome(outcome, cfg)
    if outcome.exit_status:
        raise typer.Exit(outcome.exit_status)


def default_out(
    cfg: ap.ApproxConfig, target: Path | None, epochs: int, inputs: str | None, dataset: str
) -> Path:
    """``runs/approximate-TARGET-epsE-cC-OBJECTIVE-seedS`` and, when other settings that shape the
    results (the fingerprinted ones, the target file's bytes, --inputs, --dataset) differ from
    their defaults, a digest of them (:func:`lottery_jax.rundir.default_run_dir`)."""
    from lottery_jax.subsetsum.experiment import TRAIN_TARGET
    from lottery_jax.subsetsum.network import fingerprint_config

    text = "paper" if target is None else str(target)
    name, settings = (f"train-e{epochs}", {}) if text == TRAIN_TARGET else target_parts(text)
    base = ap.ApproxConfig(epsilon=cfg.epsilon, c=cfg.c, objective=cfg.objective, seed=cfg.seed)
    return default_run_dir(
        ["approximate", name, f"eps{number_label(cfg.epsilon)}", f"c{number_label(cfg.c)}",
         cfg.objective, f"seed{cfg.seed}"],
        {**settings, **fingerprint_config(cfg), "inputs": inputs, "dataset": dataset},
        {**fingerprint_config(base), "inputs": None, "dataset": "mnist"},
    )  # fmt: skip


def _approx_config(
    epsilon, c, rounding, objective, coefficients, zero_small, seed, range_low, range_high,
    max_enum_n, scip_time_limit, scip_workers, rows_per_chunk, layers, range_mode,
    feasibility_groups, prove, max_hours,
) -> ap.ApproxConfig:  # fmt: skip
    """The options as an :class:`ApproxConfig`, each value checked and named by its flag."""
    if (range_low is None) != (range_high is None):
        raise UserError("give both --range-low and --range-high, or neither")
    for flag, value, rule in (
        ("--epsilon", epsilon, FRACTION_OPEN), ("--c", c, POSITIVE),
        ("--range-low", range_low, Rule()), ("--range-high", range_high, Rule()),
        ("--max-enum-n", max_enum_n, POSITIVE_INT),
        ("--feasibility-groups", feasibility_groups, POSITIVE_INT),
        ("--max-hours", max_hours, POSITIVE), ("--scip-time-limit", scip_time_limit, POSITIVE),
        ("--scip-workers", scip_workers, POSITIVE_INT),
        ("--rows-per-chunk", rows_per_chunk, POSITIVE_INT),
    ):  # fmt: skip
        check(flag, value, rule)
    _check_n(c, epsilon, rounding.value)
    return ap.ApproxConfig(
        epsilon=epsilon, c=c, rounding=rounding.value, objective=objective.value,
        coefficients=coefficients.value, zero_small=zero_small, seed=seed,
        coef_range=None if range_low is None else (range_low, range_high),
        max_enum_n=max_enum_n, scip_time_limit=scip_time_limit, scip_workers=scip_workers,
        rows_per_chunk=rows_per_chunk,
        layers=_layer_patterns(layers),
        range_mode=range_mode, feasibility_groups=feasibility_groups, prove=prove,
        max_hours=max_hours,
    )  # fmt: skip


def _hooks(progress: bool) -> ExperimentHooks:
    """Progress bars for the solving phases and the training of a target."""

    @contextlib.contextmanager
    def solving():
        with progress_bar(progress, elapsed=True) as bar:
            tasks: dict[str, Any] = {}

            def on_layer(name: str, total: int) -> None:
                tasks[name] = bar.add_task(f"{name}", total=total)

            def on_chunk(name: str, done: int) -> None:
                bar.update(tasks[name], completed=done)

            yield SolveHooks(on_layer, on_chunk, _scip_reporter(bar))

    def train(out: Path, config: dict, data) -> Any:
        return train_with_progress(out, config, data, progress)

    return ExperimentHooks(solving=solving, train=train, log=console.print)


def show_outcome(outcome: ExperimentOutcome, cfg: ap.ApproxConfig) -> None:
    """The paper's table, the per-layer table, where the files went, and what is missing."""
    results, outside, out = outcome.results, outcome.outside, outcome.out
    Console().print(results_table(results))
    Console().print(layer_table(results["layers"]))
    statuses = status_table(results["layers"])
    if statuses is not None:
        Console().print(statuses)
    resumed, solved = results["resumed_chunks"], results["solved_chunks"]
    if resumed and outcome.solved_chunks is None:  # (several processes: all resumed, theirs)
        console.print(
            f"resumed {resumed:,} of {resumed + solved:,} chunks from an earlier run in {out} "
            "(their solve seconds are that run's)", markup=False, highlight=False,
        )  # fmt: skip
    console.print(f"wrote {out / 'results.json'}, {out / 'ticket.npz'}, {out / 'approximated.npz'}")
    if outcome.data_error:
        console.print(f"accuracy not measured: {outcome.data_error}", markup=False, soft_wrap=True)
    if outside["total"]:
        console.print(
            f"[bold red]{outside['total']:,} weights are not within eps={cfg.epsilon}[/] "
            f"({results['infeasible']:,} infeasible: proved; {results['unsolved']:,} unsolved: "
            f"SCIP's time limit) and keep their best approximation; exit status "
            f"{ap.EXIT_INFEASIBLE}. The first {min(outside['shown'], 10)} (results.json lists "
            f"{'all ' if outside['shown'] == outside['total'] else 'the first '}"
            f"{outside['shown']:,} under not_within_epsilon):"
        )
        for row in outside["weights"][:10]:
            at = ", ".join(map(str, row["index"]))
            console.print(
                f"  {row['layer']}[{at}]  w={row['w']:.6g}  best error={row['error']:.3g}  "
                f"{row['status']}", markup=False, highlight=False,
            )  # fmt: skip


@commands.command()
def verify(
    ticket: Annotated[Path, typer.Argument(help="ticket.npz written by `approximate`.")],
    target: Annotated[
        Path | None,
        typer.Option(
            help="Check against this target (a weight file, or paper / paper-fc2: the built-in "
            "target) instead of the ticket's copy."
        ),
    ] = None,
    epsilon: Annotated[
        float | None,
        typer.Option(
            "--epsilon",
            help="The tolerance every weight must meet (default: the ticket's own epsilon).",
        ),
    ] = None,
) -> None:
    """Recompute everything a SubsetSum ticket states and check it.

    n from (c, epsilon, rounding), the coefficients from the seed, every subset's float64 error,
    every status against its error (and every `infeasible` again by exhaustive search), the layers
    and weight count against the target. Exit status 0: every weight within eps; 3: some are not
    (as the ticket says); 4: the ticket does not reproduce (one line names the first bad entry and
    the count of bad entries).
    """
    if epsilon is not None and not (epsilon > 0 and epsilon < float("inf")):
        raise UserError(f"--epsilon must be a positive number, got {epsilon}")
    tstate = None
    if target is not None:
        tstate, _ = checkpoint.load_weights(
            resolve_weights("paper-fc2" if str(target) == "paper" else target)
        )
    rep = ap.verify_ticket(ticket, tstate, epsilon=epsilon)
    if rep.mismatches:
        console.print(
            f"mismatch: {rep.summary_line}", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(rep.exit_code)
    rows = [
        ("layers", ", ".join(rep.layers)),
        ("weights", f"{rep.weights:,}"),
        (f"within eps={rep.epsilon}", f"{rep.within:,}"),
        ("max error", f"{rep.max_error:.3g}"),
        ("initial params", f"{rep.initial_params:,}"),
        ("remaining params", f"{rep.remaining_params:,}"),
        *((f"  {s}", f"{k:,}") for s, k in rep.status_counts.items()),
        ("infeasible proved again", f"{rep.infeasible_proved:,}"),
    ]
    if rep.infeasible_unchecked:
        rows.append(("infeasible not re-proved", f"{rep.infeasible_unchecked:,}"))
    Console().print(key_value_table(f"verify {ticket.name}", rows))
    typer.echo(verdict(ticket, rep))
    if rep.exit_code:
        raise typer.Exit(rep.exit_code)


def verdict(ticket: Path, rep: Any) -> str:
    """The one line ``verify`` ends with when the ticket reproduces: every weight within eps,
    or how many are not (and the first)."""
    if not rep.exit_code:
        return (
            f"verified {ticket}: it reproduces, and all {rep.weights:,} weights are within "
            f"eps={rep.epsilon}"
        )
    first = f" (first: {rep.not_within[0]})" if rep.not_within else ""
    return (
        f"verified {ticket}: it reproduces, but {rep.weights - rep.within:,} of {rep.weights:,} "
        f"weights are not within eps={rep.epsilon}{first}"
    )
