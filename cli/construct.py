"""``construct``: prune a random redundant network to a target by SubsetSum (the theorem)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lottery_jax.data import load_dataset
from lottery_jax.rundir import default_run_dir, number_label, prepare_dir
from lottery_jax.subsetsum import construct as cs
from lottery_jax.subsetsum.links import DEFAULT_MAX_ENUM_N

from .app import DataDirOpt, DatasetName, DatasetOpt, Inputs, SeedOpt, target_parts
from .options import FRACTION_OPEN, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check
from .progress import console, progress_bar
from .tables import key_value_table, status_table, table

Init = StrEnum("Init", {m: m for m in cs.INITS})


class Objective(StrEnum):
    min_error = "min-error"
    min_count = "min-count"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}%"


def summary_table(r: dict[str, Any]) -> Table:
    title = (f"construct {r['model']} r={r['redundancy']} eps={r['epsilon']} "
             f"({r['init']} init{', relu' if r['relu'] else ''})")  # fmt: skip
    mle = r["max_logit_error"]
    rows = [
        ("target accuracy", _pct(r["target_accuracy"])),
        ("pruned random network", _pct(r["ticket_accuracy"])),
        ("max |logit difference|", "-" if mle is None else f"{mle:.3g}"),
        ("weights within eps", f"{r['within_epsilon']:,} of {r['weights']:,} "
                               f"({100 * r['within_epsilon_fraction']:.3f}%)"),
        ("max error", f"{r['max_error']:.3g}"),
        ("remaining params", f"{r['remaining_params']:,} of {r['total_params']:,}"),
        ("solve seconds (compile excluded)", f"{r['seconds']:.2f}"),
        ("compile seconds", f"{r['compile_seconds']:.2f}"),
    ]  # fmt: skip
    ep = r.get("edge_popup")
    if ep:
        rows += [
            (f"edge-popup, {ep['epochs']} epoch(s), same sparsity", _pct(ep["ticket_accuracy"])),
            ("edge-popup remaining / seconds", f"{ep['remaining_params']:,} / "
                                               f"{ep['seconds']:.1f}"),
        ]  # fmt: skip
    return key_value_table(title, rows)


def layers_table(rows: list[dict[str, Any]]) -> Table:
    """Per layer: sides solved, weights, within eps, max error, kept links (the statuses:
    :func:`status_table`)."""
    cols = ["layer", "sides", "weights", "within", "max\nerror", "kept w1", "kept w2"]
    t = table("per layer", cols, left=["layer", "sides"])
    for row in rows:
        t.add_row(
            row["layer"], "+\n".join(row["sides"]), f"{row['weights']:,}",
            f"{row['within_epsilon']:,}", f"{row['max_error']:.3g}",
            f"{row['remaining']['weight1']:,}", f"{row['remaining']['weight2']:,}",
        )  # fmt: skip
    return t


commands = typer.Typer()


@commands.command()
def construct(
    target: Annotated[
        str,
        typer.Option(
            help="paper: the paper's FC2 (built in, 97.19%); paper-lenet5 (its fc "
            "layers, 98.44%); or a weight file (FC2/FC4 of any width, LeNet5; no biases)."
        ),
    ] = "paper",
    redundancy: Annotated[int, typer.Option(help="Random links r per target weight.")] = 21,
    relu: Annotated[
        bool,
        typer.Option(
            help="The redundant layers' extra ReLU: a link passes x >= 0 only through "
            "w1 > 0 and x < 0 only through w1 < 0. Layers whose inputs are "
            "non-negative (hidden layers, LeNet5's conv features, unit pixels) solve "
            "the positive-w1 side only; the first layer of FC2/FC4 fed normalized "
            "(signed) inputs solves both sides (r >= 2)."
        ),
    ] = False,
    epsilon: Annotated[float, typer.Option("--epsilon", help="Allowed error per weight.")] = 0.01,
    objective: Annotated[
        Objective, typer.Option(help="min-error (the paper's) or min-count (fewest links).")
    ] = Objective.min_error,
    init: Annotated[
        Init,
        typer.Option(
            help="Frozen random weights: normal = Experiment 2's, exactly what `prune "
            "--model red-... --redundancy R --seed S` draws; uniform = U[-1, 1], the "
            "paper's proof."
        ),
    ] = Init.normal,
    seed: SeedOpt = 0,
    inputs: Annotated[
        Inputs | None,
        typer.Option(
            help="The target's input mode \\[default: the file's __meta__; else unit "
            "for FC2/FC4, normalized for LeNet5]"
        ),
    ] = None,
    compare_epochs: Annotated[
        int,
        typer.Option(
            help="Also train edge-popup masks on the same random network at the "
            "solved ticket's per-tensor sparsity for this many epochs (0: no)."
        ),
    ] = 0,
    max_enum_n: Annotated[
        int,
        typer.Option(
            help="Most usable links a weight's exact search takes; beyond it the feasibility tier."
        ),
    ] = DEFAULT_MAX_ENUM_N,
    feasibility_groups: Annotated[
        int, typer.Option(help="Link groups the feasibility tier tries per weight.")
    ] = 8,
    max_hours: Annotated[float, typer.Option(help="Refuse up front work estimated longer.")] = 4.0,
    evaluate: Annotated[bool, typer.Option(help="Measure test accuracies.")] = True,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = DatasetName.mnist,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run directory \\[default: runs/construct-..., named after the target, r, eps, "
            "init, relu and seed, plus a digest of the other settings that differ from their "
            "defaults]"
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Prune a random redundant network to a target by SubsetSum (Pensia et al. 2020, Thm. 1).

    For every target weight W(o, j) it keeps the subset of its r links whose products
    w2(o, j r + k) * w1(k, j) best sum to W (exact meet-in-the-middle search), masks the other
    links and every w1 entry no kept link uses. Writes a standard supermask ticket (ticket.npz:
    evaluate-ticket and export-ticket read it) and results.json; the same command resumes an
    interrupted run. Exit status 3 when some weight has no subset within eps (listed).
    """
    _check_options(redundancy, epsilon, compare_epochs, max_enum_n, feasibility_groups, max_hours)
    cfg = cs.ConstructConfig(
        redundancy=redundancy, epsilon=epsilon, objective=objective.value, relu=relu,
        init=init.value, seed=seed, max_enum_n=max_enum_n, feasibility_groups=feasibility_groups,
        max_hours=max_hours,
    )  # fmt: skip
    out = out or default_out(cfg, target, inputs.value if inputs else None, compare_epochs)
    prepare_dir(out)
    state, meta, _ = cs.resolve_target(target)
    form = cs.redundant_form(state, target)
    mode = inputs.value if inputs else (meta.get("inputs") or
                                        cs.DEFAULT_INPUTS[form.target_model])  # fmt: skip
    cs.check_budget(form, cfg, mode)  # (refused before the data is loaded or a bar is drawn)
    data = None
    if evaluate or compare_epochs:
        data = load_dataset(data_dir, dataset=dataset.value, inputs=mode)
    with progress_bar(progress, elapsed=True) as bar:
        tasks: dict[str, Any] = {}

        def on_epoch(epoch, accs, seconds):
            console.print(f"edge-popup epoch {epoch}: {accs[0]:.2f}% ({seconds:.1f} s)")

        res = cs.construct(
            target, redundancy=redundancy, epsilon=epsilon, objective=objective.value, relu=relu,
            init=init.value, seed=seed, inputs=mode, data=data, evaluate=evaluate, out=out,
            compare_epochs=compare_epochs, max_enum_n=max_enum_n,
            feasibility_groups=feasibility_groups, max_hours=max_hours,
            on_layer=lambda n, total: tasks.setdefault(n, bar.add_task(n, total=total)),
            on_chunk=lambda n, done: bar.update(tasks[n], completed=done), on_epoch=on_epoch,
        )  # fmt: skip
    _show(res, out, epsilon)


def default_out(cfg: cs.ConstructConfig, target: str, inputs: str | None,
                compare_epochs: int) -> Path:  # fmt: skip
    """``runs/construct-TARGET-rR-epsE-INIT[-relu]-seedS`` and, when the other settings of the
    run's fingerprint (objective, search limits, the target file's bytes, --inputs,
    --compare-epochs) differ from their defaults, a digest of them."""
    name, settings = target_parts(target)
    base = cs.ConstructConfig(redundancy=cfg.redundancy, epsilon=cfg.epsilon, relu=cfg.relu,
                              init=cfg.init, seed=cfg.seed)  # fmt: skip
    parts = ["construct", name, f"r{cfg.redundancy}", f"eps{number_label(cfg.epsilon)}", cfg.init,
             *(["relu"] if cfg.relu else []), f"seed{cfg.seed}"]  # fmt: skip
    return default_run_dir(
        parts,
        {**settings, **cfg.fingerprint_args(), "inputs": inputs, "compare": compare_epochs},
        {**base.fingerprint_args(), "inputs": None, "compare": 0},
    )


def _check_options(redundancy, epsilon, compare_epochs, max_enum_n, feasibility_groups,
                   max_hours) -> None:  # fmt: skip
    check("--redundancy", redundancy, POSITIVE_INT)
    check("--epsilon", epsilon, FRACTION_OPEN)
    check("--compare-epochs", compare_epochs, NON_NEGATIVE_INT)
    check("--max-enum-n", max_enum_n, POSITIVE_INT)
    check("--feasibility-groups", feasibility_groups, POSITIVE_INT)
    check("--max-hours", max_hours, POSITIVE)


def _show(res, out: Path, epsilon: float) -> None:
    """The summary and per-layer tables, where the files went, and the weights not within eps
    (exit status 3 when there are any)."""
    r = res.results
    if res.resumed:
        console.print(f"{out} holds this finished construction; its results:")
    Console().print(summary_table(r))
    Console().print(layers_table(r["layers"]))
    statuses = status_table(r["layers"])
    if statuses is not None:
        Console().print(statuses)
    if not res.resumed:
        names = ["results.json", "ticket.npz", *(["edge-popup-ticket.npz"] if r.get("edge_popup")
                                                 else [])]  # fmt: skip
        console.print(f"wrote {', '.join(str(out / n) for n in names)}")
    outside = r["not_within_epsilon"]
    if outside["total"]:
        console.print(f"[bold red]{outside['total']:,} weights are not within eps={epsilon}[/] "
                      "and keep their best subset; the first ones (results.json lists "
                      f"{outside['shown']:,}):")  # fmt: skip
        for row in outside["weights"][:10]:
            console.print(f"  {row['layer']}[{row['index'][0]}, {row['index'][1]}]  "
                          f"w={row['w']:.6g}  best error={row['error']:.3g}  {row['status']}",
                          markup=False, highlight=False)  # fmt: skip
        raise typer.Exit(cs.EXIT_NOT_WITHIN)
