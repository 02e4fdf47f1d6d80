"""``study``: the logarithmic law of SubsetSum approximation, measured on a grid of eps and c;
with ``--construct``, the solved ticket of ``construct`` against the redundancy R at one eps."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lottery_jax.errors import UserError
from lottery_jax.rundir import default_run_dir
from lottery_jax.subsetsum import construct_study as cst
from lottery_jax.subsetsum import study as st

from .app import DataDirOpt, DatasetName, DatasetOpt, Inputs, SeedOpt, target_parts
from .construct import Init
from .options import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check, parse_floats, parse_ints
from .progress import console, progress_bar
from .tables import table

#: The study command group, composed into the ``lottery-jax`` app by ``lottery_jax.cli``.
commands = typer.Typer()


def _floats(text: str, what: str) -> list[float]:
    values = parse_floats([text], f"--{what}", POSITIVE)
    if not values:
        raise UserError(f"--{what} is empty")
    return values


def _cs(text: str) -> list[float]:
    """``0.25,0.5,...,3``: an arithmetic progression from its first two terms up to the last."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if "..." in parts:
        i = parts.index("...")
        if i < 2 or i != len(parts) - 2:
            raise UserError(
                "--c with '...' needs two terms before it and one after: 0.25,0.5,...,3"
            )
        a, b, last = float(parts[i - 2]), float(parts[i - 1]), float(parts[i + 1])
        step = b - a
        if step <= 0 or last < b:
            raise UserError(f"--c {text}: not an increasing progression")
        count = int(round((last - a) / step)) + 1
        if count > 1000:
            raise UserError(f"--c {text}: {count} values (at most 1000)")
        return [float(parts[j]) for j in range(i - 2)] + [a + step * k for k in range(count)]
    return _floats(text, "c")


@commands.command()
def study(
    target: Annotated[
        str,
        typer.Option(help="paper: the paper's FC2 (built in); or a weight file (.npz)."),
    ] = "paper",
    epsilon: Annotated[
        str | None,
        typer.Option(
            "--epsilon",
            help="Comma-separated eps values \\[default: 0.1,0.03,0.01,0.003,0.001; with "
            "--construct one value, 0.01]",
        ),
    ] = None,
    c: Annotated[
        str,
        typer.Option(
            "--c", help="Comma-separated c values (n = int(c round(log2(1/eps)))); a,b,...,z spans."
        ),
    ] = "0.25,0.5,...,3",
    seed: SeedOpt = 0,
    inputs: Annotated[
        Inputs | None,
        typer.Option(help="Input preprocessing for accuracies \\[default: from the file]"),
    ] = None,
    data_dir: DataDirOpt = None,
    dataset: DatasetOpt = DatasetName.mnist,
    evaluate: Annotated[
        bool, typer.Option(help="Measure the approximated networks' test accuracy.")
    ] = True,
    max_hours: Annotated[
        float, typer.Option(help="Refuse a cell estimated to take longer than this.")
    ] = 4.0,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory \\[default: runs/study-TARGET-seedS, plus a digest of the "
            "target file's bytes and --inputs when given; every grid of a target shares it; "
            "--construct: runs/study-construct-TARGET-... with eps, init and seed]"
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    construct: Annotated[
        bool,
        typer.Option(
            "--construct",
            help="The construct axis instead: prune the random redundant network to the target "
            "by SubsetSum (`construct`) at each --redundancy, one eps; accuracy and fraction "
            "within eps against R.",
        ),
    ] = False,
    redundancy: Annotated[str, typer.Option(help="Comma-separated redundancies R.")] = "5,10,21",
    init: Annotated[
        Init, typer.Option(help="The frozen weights (as construct's --init).")
    ] = Init.normal,
    relu: Annotated[bool, typer.Option(help="The extra ReLU (as construct's).")] = False,
    compare_epochs: Annotated[
        int,
        typer.Option(
            help="Also train edge-popup masks for this many epochs at the solved "
            "ticket's per-tensor sparsity (0: no)."
        ),
    ] = 0,
    compare_at: Annotated[
        str | None,
        typer.Option(help="The R values edge-popup is trained at \\[default: all]"),
    ] = None,
) -> None:
    """Measure the logarithmic law: the fraction of weights within eps against n / log2(1/eps).

    For every eps and every n = int(c round(log2(1/eps))) of the grid, approximates every weight of
    the target (per-row coefficients, min-error and min-count; exact up to the measured ceiling,
    the feasibility tier beyond, no SCIP) and writes one row per (eps, n) to study.json and
    study.csv, and the figure study.png: (a) fraction within eps against n / log2(1/eps), one curve
    per eps (the curves collapse if the law holds), (b) coefficients kept per weight against eps.
    Finished cells are kept: the same command resumes, and a larger grid reuses them.

    With --construct: one `construct` per --redundancy R at one eps (each in its own run
    directory under --out, resumed when finished); study.csv/json/png hold per R the fraction of
    weights within eps, the pruned random network's accuracy beside the target's and, with
    --compare-epochs, edge-popup's at the same per-tensor sparsity.
    """
    command = " ".join(["lottery-jax", *sys.argv[1:]])
    mode = None if inputs is None else inputs.value
    name, settings = target_parts(target)
    settings = {**settings, "inputs": mode}
    if not construct and (compare_epochs or compare_at or relu):
        raise UserError("--compare-epochs, --compare-at and --relu go with --construct")
    if construct:
        eps = _one_epsilon(epsilon)
        parts = ["study-construct", name, f"eps{eps:g}", init.value, "relu" * relu, f"seed{seed}"]
        spec = cst.ConstructStudySpec(
            out or default_run_dir(parts, settings, {"inputs": None}),
            _ints(redundancy, "--redundancy"), epsilon=eps, target=target, init=init.value,
            relu=relu, seed=seed,
            compare_epochs=int(check("--compare-epochs", compare_epochs, NON_NEGATIVE_INT)),
            compare_at=None if compare_at is None else _ints(compare_at, "--compare-at"),
            inputs=mode, data_dir=data_dir, dataset=dataset.value, evaluate=evaluate,
            max_hours=max_hours, command=command,
        )  # fmt: skip
        return run_construct_axis(spec, progress)
    epsilons = st.DEFAULT_EPSILONS if epsilon is None else tuple(_floats(epsilon, "epsilon"))
    out = out or default_run_dir(["study", name, f"seed{seed}"], settings, {"inputs": None})
    spec = st.StudySpec(
        out, target=target, epsilons=epsilons, cs=tuple(_cs(c)), seed=seed,
        inputs=mode, data_dir=data_dir, dataset=dataset.value, evaluate=evaluate,
        max_hours=max_hours, command=command,
    )  # fmt: skip
    cells = st.grid_cells(list(spec.epsilons), list(spec.cs))  # (a bad grid: before any work)
    with progress_bar(progress, elapsed=True) as bar:
        task = bar.add_task("study", total=len(cells))

        def on_cell(done: int, total: int, row: dict[str, Any], resumed: bool) -> None:
            bar.update(
                task,
                completed=done,
                description=f"eps={row['epsilon']:g} n={row['n']}"
                + (" (resumed)" if resumed else ""),
            )

        outcome = st.study_experiment(spec, on_cell, log=_log)
    show_study(outcome)


def _log(msg: str) -> None:
    console.print(msg, markup=False, soft_wrap=True)


def show_study(outcome: st.StudyOutcome) -> None:
    """The grid's table, the fitted constant and where the files went."""
    rows, const, out = outcome.rows, outcome.results["constant"], outcome.out
    cols = ["eps", "n", "n/log2\n(1/eps)", "within\neps", "max\nerror", "kept/\nweight",
            "min-count\nkept", "accuracy"]  # fmt: skip
    t = table("fraction of weights within eps (min-error), by n / log2(1/eps)", cols)
    for r in rows:
        acc = r.get("accuracy_min_error")
        t.add_row(
            f"{r['epsilon']:g}", str(r["n"]), f"{r['n_over_log2']:.2f}",
            f"{100 * r['fraction_within']:.3f}%", f"{r['max_error']:.2g}",
            f"{r['relative_size_min_error']:.2f}", f"{r['relative_size_min_count']:.2f}",
            "-" if acc is None else f"{acc:.2f}%",
        )  # fmt: skip
    Console().print(t)
    level = const["level"]
    c_txt = "not reached" if const["constant"] is None else f"{const['constant']:.2f}"
    Console().print(
        f"measured constant: every eps reaches {100 * level:g}% within eps at "
        f"n / log2(1/eps) = {c_txt}"
    )
    names = ", ".join(str(out / n) for n in ("study.json", "study.csv", "study.png", "study.pdf"))
    console.print(f"wrote {names}")


def _one_epsilon(text: str | None) -> float:
    values = _floats(text or "0.01", "epsilon")
    if len(values) != 1:
        raise UserError(f"--construct takes one --epsilon, got {len(values)}: {text}")
    return values[0]


def _ints(text: str, option: str) -> tuple[int, ...]:
    values = parse_ints([text], option, POSITIVE_INT)
    if not values:
        raise UserError(f"{option} is empty")
    return tuple(values)


def run_construct_axis(spec: cst.ConstructStudySpec, progress: bool) -> None:
    """The construct axis: every R (a progress bar over them), then the table."""
    cst.plan(spec)  # (a target without a redundant form, or over the budget: before the bar)
    with progress_bar(progress, elapsed=True) as bar:
        task = bar.add_task("construct", total=len(spec.redundancies))

        def on_point(done: int, total: int, row: dict[str, Any], resumed: bool) -> None:
            bar.update(task, completed=done, description=f"R={row['redundancy']}"
                       + (" (resumed)" if resumed else ""))  # fmt: skip

        outcome = cst.construct_study(spec, on_point=on_point, log=_log)
    show_construct_axis(outcome)


def show_construct_axis(outcome: cst.ConstructStudyOutcome) -> None:
    """One row per R, the smallest R that matches the target, where the files went."""
    res = outcome.results
    t = table(f"construct: {cst.study_title(res)}, eps={res['epsilon']:g}",
              ["R", "within\neps", "max\nerror", "kept links", "accuracy", "target",
               "edge-\npopup"])  # fmt: skip
    for r in outcome.rows:
        t.add_row(str(r["redundancy"]), f"{100 * r['within_epsilon_fraction']:.3f}%",
                  f"{r['max_error']:.3g}", f"{r['remaining_params']:,}",
                  *(_pct(r.get(k)) for k in ("ticket_accuracy", "target_accuracy",
                                             "edge_popup_accuracy")))  # fmt: skip
    Console().print(t)
    at, pts = res["matches_target_at"], cst.MATCH_POINTS
    if all(r.get("ticket_accuracy") is None for r in outcome.rows):
        Console().print("accuracies not measured (--no-evaluate)")
    elif at is None:
        Console().print(f"the solved ticket is not within {pts} points of the target at any R")
    else:
        Console().print(f"the solved ticket is within {pts} points of the target from R = {at}")
    names = ", ".join(str(outcome.out / n) for n in ("study.json", "study.csv", "study.png"))
    console.print(f"wrote {names}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}%"
