"""``compare``: a results directory held against the published Experiment 2 runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lottery_jax.errors import UserError

HEADER = ("family", "variant", "epochs", "points", "mean|d|", "mean d", ">T", "worst: s ours/paper")
WIDTHS = (6, 10, 6, 7, 7, 7, 3)


def _points(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary_lines(comparison, threshold: float) -> list[str]:
    """The per-(family, variant, epochs) summary as plain lines of at most 80 characters."""

    def row(cells) -> str:
        fixed = [f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in
                 enumerate(zip(cells, WIDTHS, strict=False))]  # fmt: skip
        return "  ".join([*fixed, *cells[len(WIDTHS) :]]).rstrip()

    over = f">{threshold:g}"
    lines = [row((*HEADER[:6], over, *HEADER[7:]))]
    for s in comparison.summarize(threshold):
        w = s.worst
        worst = "-" if w is None else f"{w.sparsity:g} {w.mean:.1f}/{w.published_acc:.1f}"
        cells = (s.family, s.variant, str(s.epochs), f"{s.matched}/{s.points}",
                 _points(s.mean_abs_diff), _points(s.mean_diff), str(s.over_threshold), worst)  # fmt: skip
        lines.append(row(cells))
    return lines


commands = typer.Typer()


@commands.command()
def compare(
    runs_dir: Annotated[
        Path, typer.Argument(help="Results directory of sweep/prune (results.json files).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="CSV to write (a .json and a -runs.csv go beside it) "
            "\\[default: RUNS_DIR/vs-published.csv]"
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Count the points that differ by more than this (points).")
    ] = 5.0,
) -> None:
    """Hold every Experiment 2 run in RUNS_DIR against the published runs (built in).

    One row per family, variant, sparsity and budget with our mean, std and count over seeds,
    the published accuracy and the difference; prints a summary per variant."""
    from lottery_jax.pruning.published import compare as compare_runs

    if not runs_dir.is_dir():
        raise UserError(f"results directory {runs_dir} does not exist")
    if not threshold >= 0:
        raise UserError(f"--threshold must be non-negative, got {threshold}")
    comparison = compare_runs(runs_dir)
    written = comparison.write(out or runs_dir / "vs-published.csv")
    for line in summary_lines(comparison, threshold):
        typer.echo(line)
    matched = sum(r.published is not None for r in comparison.rows)
    typer.echo(f"{len(comparison.runs)} runs; {matched} of {len(comparison.rows)} points have a "
               "published record; d = ours - published (points)")  # fmt: skip
    if comparison.duplicates:
        typer.echo(f"left out {comparison.duplicates} duplicate run(s) (same settings and seed)")
    for path in written:
        typer.echo(f"wrote {path}")
