"""``approximate`` and ``verify``: Experiment 1 (every weight of a target as a SubsetSum)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lottery_jax import checkpoint
from lottery_jax import subsetsum as ap
from lottery_jax.download import DownloadError
from lottery_jax.errors import UserError
from lottery_jax.nets import targets as models
from lottery_jax.paper import resolve_weights
from lottery_jax.results import device_summary, write_json_atomic

from .app import DataDirOpt, DatasetName, DatasetOpt, Inputs, SeedOpt, app

console = Console(stderr=True)


#: Exit status when the test data cannot be had: the ticket is written, accuracies are null.
EXIT_NO_DATA = 5


def _target_kind(target: Path | None) -> str:
    """``paper`` (the default: the paper's own FC2, built in), ``train`` or ``file``."""
    if target is None or str(target) == "paper":
        return "paper"
    return "train" if str(target) == "train" else "file"


class Objective(StrEnum):
    min_error = "min-error"
    min_count = "min-count"


class Coefficients(StrEnum):
    per_row = "per-row"
    per_weight = "per-weight"


class Rounding(StrEnum):
    published = "published"
    readme = "readme"


def model_for(state: dict[str, np.ndarray], source: str):
    """The foundation model a PyTorch-layout state fits (FC2 or FC4), loaded with it."""
    keys = set(state)
    if keys == {"fc1.weight", "fc2.weight"}:
        name = "fc2"
    elif keys == {"fc1.weight", "fc2.weight", "fc3.weight", "fc4.weight"}:
        name = "fc4"
    else:
        raise UserError(f"{source}: keys {sorted(keys)} fit neither FC2 nor FC4 (no biases)")
    return name, models.model_from_state(name, state, source=source)


def _accuracy(net, data) -> float:
    from lottery_jax.training import evaluate

    return evaluate(net, data.test_images, data.test_labels)


def _train_target(out: Path, epochs: int, seed: int, data, progress: bool) -> tuple[dict, Path]:
    """Train FC2 (the paper's recipe, unit inputs) unless ``out/target.npz`` already exists."""
    from lottery_jax.training import fit

    path = out / "target.npz"
    meta_want = {"epochs": epochs, "seed": seed, "recipe": "fc2 sgd lr 0.1 unit inputs"}
    if path.exists():
        state, meta = checkpoint.load_weights(path)
        if {k: meta.get(k) for k in meta_want} == meta_want:
            console.print(f"using the target trained before: {path}")
            return state, path
        raise UserError(f"{path} was trained with other settings; use another --out or delete it")
    net = models.build_model("fc2", seed=seed)
    fit(net, data, lr=0.1, epochs=epochs, seed=seed)
    state = models.torch_state(net)
    checkpoint.save_weights(path, "fc2", state, meta_want)
    return state, path


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )


def results_table(r: dict[str, Any]) -> Table:
    """The paper's Experiment 1 table."""
    t = Table(title=f"SubsetSum approximation (eps={r['epsilon']}, c={r['c']}, n={r['n']})")
    t.add_column("")
    t.add_column("value", justify="right")

    def pct(v):
        return "-" if v is None else f"{v:.2f}%"

    t.add_row("target accuracy", pct(r["target_accuracy"]))
    t.add_row("approximated accuracy", pct(r["approx_accuracy"]))
    t.add_row("target params", f"{r['target_params']:,}")
    t.add_row("initial params (n x target)", f"{r['initial_params']:,}")
    t.add_row("remaining params", f"{r['remaining_params']:,}")
    t.add_row("remaining / target", f"{r['relative_size']:.2f}x")
    t.add_row("all within eps", str(r["all_within_epsilon"]))
    t.add_row("max error", f"{r['max_error']:.3g}")
    for s, k in r["status_counts"].items():
        t.add_row(f"  {s}", f"{k:,}")
    t.add_row("solve seconds (compile excluded)", f"{r['seconds']:.2f}")
    t.add_row("compile seconds", f"{r['compile_seconds']:.2f}")
    return t


@app.command()
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
            "first (--epochs); or a weight file (.npz, PyTorch layout: FC2 or FC4). \\[default: "
            "paper]"
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Epochs when training the target.")] = 10,
    objective: Annotated[
        Objective, typer.Option(help="min-error (the paper's) or min-count (fewest coefficients).")
    ] = Objective.min_error,
    coefficients: Annotated[
        Coefficients,
        typer.Option(help="One coefficient set per output row (published run) or per weight."),
    ] = Coefficients.per_row,
    zero_small: Annotated[
        bool, typer.Option(help="|w| <= eps becomes 0 with no coefficients (check_w_lt_eps).")
    ] = False,
    range_low: Annotated[
        float | None, typer.Option(help="Fixed coefficient range low (default: from the target).")
    ] = None,
    range_high: Annotated[float | None, typer.Option(help="Fixed coefficient range high.")] = None,
    inputs: Annotated[Inputs, typer.Option(help="Input preprocessing (the paper: unit).")] = (
        Inputs.unit
    ),
    seed: SeedOpt = 0,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = DatasetName.mnist,
    evaluate: Annotated[
        bool, typer.Option(help="Measure test accuracy of the target and the approximation.")
    ] = True,
    max_enum_n: Annotated[
        int, typer.Option(help="Largest n solved by exact enumeration; beyond it SCIP.")
    ] = 30,
    scip_time_limit: Annotated[float, typer.Option(help="SCIP seconds per weight.")] = 60.0,
    scip_workers: Annotated[int, typer.Option(help="SCIP worker processes.")] = 2,
    rows_per_chunk: Annotated[
        int | None, typer.Option(help="Instances per chunk (default: sized for bounded memory).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory \\[default: runs/approximate-OBJ-seedS]")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Approximate every weight of a target by a subset sum of n random numbers (Experiment 1).

    Writes results.json, ticket.npz (check it with `lottery-jax verify`) and approximated.npz.
    Exit status 3 when some weight has no subset within eps (the run still completes); 5 when the
    test data cannot be had (the ticket is still written; results.json has null accuracies and
    the reason). Re-running the same command with the same --out resumes from the finished chunks.
    """
    if (range_low is None) != (range_high is None):
        raise UserError("give both --range-low and --range-high, or neither")
    if epochs <= 0:
        raise UserError(f"--epochs must be positive, got {epochs}")
    cfg = ap.ApproxConfig(
        epsilon=epsilon,
        c=c,
        rounding=rounding.value,
        objective=objective.value,
        coefficients=coefficients.value,
        zero_small=zero_small,
        seed=seed,
        coef_range=None if range_low is None else (range_low, range_high),
        max_enum_n=max_enum_n,
        scip_time_limit=scip_time_limit,
        scip_workers=scip_workers,
        rows_per_chunk=rows_per_chunk,
    )
    out = out or Path("runs") / f"approximate-{objective.value}-seed{seed}"
    data = None
    target_kind, data_error = _target_kind(target), None
    if evaluate or target_kind == "train":
        from lottery_jax.data import load_dataset

        try:
            data = load_dataset(data_dir, dataset=dataset.value, inputs=inputs.value)
        except DownloadError as e:  # solve anyway; say so at the end and exit EXIT_NO_DATA
            if target_kind == "train":
                raise
            data_error = str(e)
    if target_kind == "train":
        state, target_path = _train_target(out, epochs, seed, data, progress)
    else:
        target_path = resolve_weights("paper-fc2" if target_kind == "paper" else target)
        state, _ = checkpoint.load_weights(target_path)
    state = {k: np.asarray(v) for k, v in state.items()}
    model_name, net = model_for(state, str(target_path))

    with _progress(progress) as bar:
        tasks: dict[str, Any] = {}

        def on_layer(name: str, total: int) -> None:
            tasks[name] = bar.add_task(f"{name}", total=total)

        def on_chunk(name: str, done: int) -> None:
            bar.update(tasks[name], completed=done)

        res = ap.approximate_network(state, cfg, out, on_layer=on_layer, on_chunk=on_chunk)

    summary = ap.summarize(res)
    approx_state = ap.approximated_state(res, state)
    target_acc = approx_acc = None
    if evaluate and data is not None:
        target_acc = _accuracy(net, data)
        _, approx_net = model_for(approx_state, "approximation")
        approx_acc = _accuracy(approx_net, data)
    config = {
        **ap.config_dict(cfg),
        "target": "paper-fc2" if target_kind == "paper" else str(target_path),
        "model": model_name,
        "inputs": inputs.value,
        "data_dir": str(data_dir) if data_dir else None,
        "dataset": dataset.value,
        "epochs": epochs if target_kind == "train" else None,
    }
    results = {
        "command": "approximate",
        "target_accuracy": target_acc,
        "approx_accuracy": approx_acc,
        **summary,
        "seconds": res.seconds,
        "compile_seconds": res.compile_seconds,
        "scip_seconds": res.scip_seconds,
        "resumed_chunks": res.resumed_chunks,
        "n": cfg.n,
        "epsilon": cfg.epsilon,
        "c": cfg.c,
        "objective": cfg.objective,
        "coefficients": cfg.coefficients,
        "zero_small": cfg.zero_small,
        "coefficient_range": [res.low, res.high],
        "seed": cfg.seed,
        "device": device_summary(),
        "config": config,
        "exit_status": (
            ap.EXIT_INFEASIBLE if summary["infeasible"] else EXIT_NO_DATA if data_error else 0
        ),
        "accuracy_not_measured": data_error,
    }
    checkpoint.save_weights(out / "approximated.npz", model_name, approx_state, {"config": config})
    ap.save_ticket(out / "ticket.npz", res, state)
    write_json_atomic(out / "results.json", results)
    Console().print(results_table(results))
    console.print(f"wrote {out / 'results.json'}, {out / 'ticket.npz'}, {out / 'approximated.npz'}")
    if data_error:
        console.print(f"accuracy not measured: {data_error}", markup=False, soft_wrap=True)
    if summary["infeasible"]:
        console.print(
            f"[bold red]{summary['infeasible']} weights have no subset within eps={cfg.epsilon}"
            f"[/] (kept at their best approximation); exit status {ap.EXIT_INFEASIBLE}"
        )
        raise SystemExit(ap.EXIT_INFEASIBLE)  # (main() drops typer.Exit codes)
    if data_error:
        raise SystemExit(EXIT_NO_DATA)


@app.command()
def verify(
    ticket: Annotated[Path, typer.Argument(help="ticket.npz written by `approximate`.")],
    target: Annotated[
        Path | None,
        typer.Option(help="Check against this target file instead of the ticket's copy."),
    ] = None,
) -> None:
    """Recompute every approximation of a ticket in float64 and check it against eps.

    Exit status 0: every weight within eps; 3: some are not (as the ticket says); 4: the ticket
    does not reproduce its own records (errors or statuses).
    """
    tstate = None
    if target is not None:
        tstate, _ = checkpoint.load_weights(target)
    rep = ap.verify_ticket(ticket, tstate)
    t = Table(title=f"verify {ticket}")
    t.add_column("")
    t.add_column("value", justify="right")
    t.add_row("layers", ", ".join(rep.layers))
    t.add_row("weights", f"{rep.weights:,}")
    t.add_row(f"within eps={rep.epsilon}", f"{rep.within:,}")
    t.add_row("max error", f"{rep.max_error:.3g}")
    t.add_row("initial params", f"{rep.initial_params:,}")
    t.add_row("remaining params", f"{rep.remaining_params:,}")
    for s, k in rep.status_counts.items():
        t.add_row(f"  {s}", f"{k:,}")
    Console().print(t)
    for m in rep.mismatches:
        console.print(f"[bold red]mismatch:[/] {m}")
    if rep.exit_code:
        raise SystemExit(rep.exit_code)
