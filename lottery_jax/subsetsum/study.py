"""The logarithmic law, measured: how many random coefficients a weight needs for eps accuracy.

Pensia et al. (2020) prove that ``n = O(log(1/eps))`` random numbers suffice for a subset sum to
approximate any target within eps. :func:`run_study` measures it on a target network: for every
eps of a grid and every ``n = int(c round(log2(1/eps)))`` of a grid of ``c``, it approximates every
weight (per-row coefficients, both objectives) and records one row per ``(eps, n)``:

``epsilon, n, c, n_over_log2`` (``n / log2(1/eps)``), ``fraction_within`` (weights with a subset
within eps), ``mean_error``, ``max_error``, ``remaining_min_error`` / ``relative_size_min_error``
(coefficients kept, and per weight), the same for ``min_count``, ``accuracy_min_error`` /
``accuracy_min_count`` (the approximated network's test accuracy, when an evaluator is given),
``status_counts`` and ``seconds`` (solving, compile apart) / ``compile_seconds``.

If the law holds, ``fraction_within`` plotted against ``n / log2(1/eps)`` collapses onto one curve
for every eps (:func:`plot_study`, panel a), and the constant is where that curve reaches 1.

The coefficients are drawn nested (coefficient ``i`` of a row from its own key, so the draw for
``n`` is the first ``n`` of the draw for any larger ``n``): more coefficients can only help, and
the curves show the law, not the noise between independent draws. No MIP tier here: the exact tier decides each weight up to the measured ceiling, beyond it the
feasibility tier finds subsets for nearly all (a weight it cannot settle counts as not within eps:
the fraction is then a lower bound, marked by ``unsolved`` in ``status_counts``). Compiled solvers
are reused across cells (same shapes). Cells are saved one by one (sealed run-directory chunks),
so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax.errors import UserError
from lottery_jax.subsetsum import network as nw
from lottery_jax.subsetsum import search as ss

DEFAULT_EPSILONS = (0.1, 0.03, 0.01, 0.003, 0.001)
DEFAULT_CS = tuple(0.25 * i for i in range(1, 13))  # 0.25, 0.5, ..., 3

Evaluator = Callable[[dict[str, np.ndarray]], float]


def grid_cells(
    epsilons: Sequence[float], cs: Sequence[float], rounding: str = "published"
) -> list[tuple[float, int, float]]:
    """The distinct ``(eps, n, c)`` of a grid, in order (the smallest ``c`` giving each ``n``)."""
    if not epsilons or not cs:
        raise UserError("the study needs at least one epsilon and one c")
    cells: list[tuple[float, int, float]] = []
    seen: set[tuple[float, int]] = set()
    for eps in epsilons:
        if not 0 < eps < 1:
            raise UserError(f"epsilon must be in (0, 1), got {eps}")
        for c in sorted(cs):
            if not (math.isfinite(c) and c > 0):
                raise UserError(f"c must be positive, got {c}")
            n = ss.n_coefficients(c, eps, rounding)
            if (eps, n) not in seen:
                seen.add((eps, n))
                cells.append((float(eps), int(n), float(c)))
    return cells


def _cell_name(eps: float, n: int) -> str:
    return f"cell-eps{eps:.6g}-n{n}"


def run_cell(
    target: dict[str, np.ndarray],
    eps: float,
    n: int,
    c: float,
    *,
    seed: int = 0,
    rounding: str = "published",
    evaluate: Evaluator | None = None,
    max_hours: float = 4.0,
) -> dict[str, Any]:
    """One ``(eps, n)`` row: both objectives on every weight of ``target``."""
    row: dict[str, Any] = {
        "epsilon": eps,
        "n": n,
        "c": c,
        "log2_inv_eps": math.log2(1 / eps),
        "n_over_log2": n / math.log2(1 / eps),
        "seed": seed,
    }
    seconds = compile_seconds = 0.0
    for objective in ("min-error", "min-count"):
        cfg = nw.ApproxConfig(
            epsilon=eps, c=c, rounding=rounding, objective=objective, seed=seed, scip=False,
            max_hours=max_hours, draw="nested",
        )  # fmt: skip
        if cfg.n != n:  # (grid_cells computed it the same way)
            raise AssertionError(f"n mismatch {cfg.n} != {n}")
        res = nw.approximate_network(target, cfg)
        s = nw.summarize(res)
        errors = np.concatenate([r.errors.reshape(-1) for r in res.results.values()])
        key = objective.replace("-", "_")
        within = float((errors <= eps).mean())
        if objective == "min-error":
            row["fraction_within"] = within
            row["weights"] = int(errors.size)
            row["mean_error"] = float(errors.mean())
            row["max_error"] = float(errors.max())
            row["status_counts"] = s["status_counts"]
        row[f"fraction_within_{key}"] = within
        row[f"remaining_{key}"] = s["remaining_params"]
        row[f"relative_size_{key}"] = s["relative_size"]
        row[f"status_counts_{key}"] = s["status_counts"]
        row[f"accuracy_{key}"] = (
            None if evaluate is None else float(evaluate(nw.approximated_state(res, target)))
        )
        seconds += res.seconds
        compile_seconds += res.compile_seconds
    row["seconds"] = seconds
    row["compile_seconds"] = compile_seconds
    return row


def run_study(
    target: dict[str, np.ndarray],
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    cs: Sequence[float] = DEFAULT_CS,
    *,
    seed: int = 0,
    rounding: str = "published",
    evaluate: Evaluator | None = None,
    run=None,
    on_cell: Callable[[int, int, dict[str, Any], bool], None] | None = None,
    max_hours: float = 4.0,
) -> list[dict[str, Any]]:
    """Every cell of the grid, one row each (see the module docstring).

    ``run``: an open :class:`lottery_jax.rundir.RunDir` whose arguments (:func:`study_args`) are
    required: finished cells are read back from it, new ones saved to it as soon as they finish.
    ``on_cell(done, total, row, resumed)`` reports progress.
    """
    cells = grid_cells(epsilons, cs, rounding)
    rows = []
    for i, (eps, n, c) in enumerate(cells):
        name = _cell_name(eps, n)
        row = None
        if run is not None:
            got = run.load_chunk(name)
            if got is not None:
                row = json.loads(str(got["row"]))
        resumed = row is not None
        if row is None:
            t0 = time.perf_counter()
            row = run_cell(
                target, eps, n, c, seed=seed, rounding=rounding, evaluate=evaluate,
                max_hours=max_hours,
            )  # fmt: skip
            row["wall_seconds"] = time.perf_counter() - t0
            if run is not None:
                run.save_chunk(name, {"row": np.asarray(json.dumps(row))})
        rows.append(row)
        if on_cell:
            on_cell(i + 1, len(cells), row, resumed)
    return rows


def study_args(target_sha256: str, seed: int, rounding: str, inputs: str | None) -> dict:
    """What defines a study's cells (the grid itself may grow: cells are keyed by eps and n)."""
    return {
        "study": "subsetsum-log-law/1",
        "target_sha256": target_sha256,
        "seed": seed,
        "rounding": rounding,
        "inputs": inputs,
        "coefficients": "per-row",
        "range_mode": nw.ApproxConfig().range_mode,
        "draw": "nested",
    }


def fitted_constant(rows: list[dict[str, Any]], level: float = 0.9999) -> dict[str, Any]:
    """The measured constant: per eps, the smallest ``n / log2(1/eps)`` whose fraction within eps
    reaches ``level``, and the largest of them over eps (the law's constant for this target)."""
    per_eps: dict[str, float | None] = {}
    for eps in sorted({r["epsilon"] for r in rows}, reverse=True):
        ok = [
            r["n_over_log2"] for r in rows if r["epsilon"] == eps and r["fraction_within"] >= level
        ]
        per_eps[f"{eps:g}"] = min(ok) if ok else None
    found = [v for v in per_eps.values() if v is not None]
    return {
        "level": level,
        "per_epsilon": per_eps,
        "constant": max(found) if found and len(found) == len(per_eps) else None,
    }


#: The study's colour map, sampled only where it keeps at least 3:1 contrast against white (the
#: light end of cividis/viridis is nearly invisible on paper): dark blue to olive grey.
STUDY_CMAP = "cividis"
STUDY_CMAP_RANGE = (0.0, 0.6)


def study_colors(count: int) -> list[tuple[float, ...]]:
    """``count`` colours from :data:`STUDY_CMAP` over :data:`STUDY_CMAP_RANGE` (dark first)."""
    from matplotlib import colormaps

    lo, hi = STUDY_CMAP_RANGE
    cmap = colormaps[STUDY_CMAP]
    return [cmap(lo + (hi - lo) * i / max(1, count - 1)) for i in range(count)]


def draw_study(rows: list[dict[str, Any]], title: str):
    """The figure (in the house style of :mod:`lottery_jax.plotting`, no pyplot)."""
    from lottery_jax.plotting import OKABE_ITO, TEXT_WIDTH, new_figure

    epsilons = sorted({r["epsilon"] for r in rows}, reverse=True)
    fig = new_figure(figsize=(TEXT_WIDTH, 2.9), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for color, eps in zip(study_colors(len(epsilons)), epsilons, strict=True):
        rs = sorted((r for r in rows if r["epsilon"] == eps), key=lambda r: r["n"])
        ax1.plot(
            [r["n_over_log2"] for r in rs],
            [r["fraction_within"] for r in rs],
            "o-", ms=3, color=color, label=f"eps = {eps:g}",
        )  # fmt: skip
    ax1.set_xlabel("n / log2(1/eps)")
    ax1.set_ylabel("fraction of weights within eps")
    ax1.set_title("(a) fraction within eps")
    ax1.grid(True)
    ax1.legend(loc="lower right", ncol=2 if len(epsilons) > 4 else 1)
    best = [max((r for r in rows if r["epsilon"] == e), key=lambda r: r["n"]) for e in epsilons]
    for key, label, marker, color in (
        ("relative_size_min_error", "min-error", "o-", OKABE_ITO["blue"]),
        ("relative_size_min_count", "min-count", "s--", OKABE_ITO["vermillion"]),
    ):
        ax2.plot([r["epsilon"] for r in best], [r[key] for r in best], marker, ms=3.5,
                 color=color, label=label)  # fmt: skip
    ax2.set_xscale("log")
    ax2.invert_xaxis()
    ax2.set_xlabel("eps (largest c of the grid)")
    ax2.set_ylabel("coefficients kept per weight")
    ax2.set_title("(b) relative size")
    ax2.grid(True)
    ax2.legend(loc="best")
    if title:
        fig.suptitle(title)
    return fig


def plot_study(
    rows: list[dict[str, Any]], path: Path, *, title: str = "", fmt: str | None = None
) -> Path:
    """Two panels: (a) fraction within eps against ``n / log2(1/eps)``, one curve per eps; (b)
    relative size (coefficients kept per weight, both objectives) against eps at the largest c.
    The format is ``fmt`` or else ``path``'s extension (``.pdf``/``.svg``: vector; ``.png``)."""
    from lottery_jax.plotting import draw_and_save

    return draw_and_save(lambda: draw_study(rows, title), path, fmt)


CSV_COLUMNS = (
    "epsilon", "n", "c", "n_over_log2", "weights", "fraction_within", "mean_error", "max_error",
    "remaining_min_error", "relative_size_min_error", "remaining_min_count",
    "relative_size_min_count", "accuracy_min_error", "accuracy_min_count", "seconds",
    "compile_seconds",
)  # fmt: skip


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The table as CSV (one row per ``(eps, n)``)."""
    lines = [",".join(CSV_COLUMNS)]
    for r in rows:
        lines.append(",".join("" if r.get(k) is None else f"{r[k]}" for k in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class StudySpec:
    """One ``lottery-jax study``: the target (``"paper"`` or a weight file), the grid, the data
    (``inputs`` None: the file's own, else the paper's for its network) and the run directory."""

    out: Path
    target: str = "paper"
    epsilons: tuple[float, ...] = (0.1, 0.03, 0.01, 0.003, 0.001)
    cs: tuple[float, ...] = (3.0,)
    seed: int = 0
    inputs: str | None = None
    data_dir: Path | None = None
    dataset: str = "mnist"
    evaluate: bool = True
    max_hours: float = 4.0
    command: str = "study"


@dataclass(frozen=True)
class StudyOutcome:
    """What :func:`study_experiment` committed: the ``study.json`` record and its rows."""

    out: Path
    results: dict[str, Any]
    rows: list[dict[str, Any]]
    data_error: str | None


def study_experiment(
    spec: StudySpec,
    on_cell: Callable[[int, int, dict, bool], None] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> StudyOutcome:
    """Resolve the target and its inputs, hold the run directory, load the data (or record why
    not), run every cell (:func:`run_study`, resuming finished ones), and commit ``study.json``,
    ``study.csv``, ``study.png`` and ``study.pdf`` together."""
    from lottery_jax import rundir
    from lottery_jax.nets import targets as models
    from lottery_jax.results import device_summary

    state, meta, path = _study_target(spec.target)
    model_name, _ = models.network_for(state, source=str(path), model=meta.get("model"))
    inputs = spec.inputs or meta.get("inputs") or models.DEFAULT_INPUTS[model_name]
    layers = nw.target_layers(state)
    args = study_args(nw.target_fingerprint(state, layers), spec.seed, "published", inputs)
    with rundir.RunDir(spec.out, command=spec.command, args=args, log=log) as run:
        evaluator, data_error = _evaluator(spec, inputs, model_name, log)
        rows = run_study(
            state, list(spec.epsilons), list(spec.cs), seed=spec.seed, evaluate=evaluator,
            run=run, on_cell=on_cell, max_hours=spec.max_hours,
        )  # fmt: skip
        results = {
            "command": "study",
            "target": "paper-fc2" if spec.target == "paper" else str(path),
            "model": model_name,
            "inputs": inputs,
            "epsilons": list(spec.epsilons),
            "cs": list(spec.cs),
            "seed": spec.seed,
            "rows": rows,
            "constant": fitted_constant(rows),
            "seconds": sum(r["seconds"] for r in rows),
            "compile_seconds": sum(r["compile_seconds"] for r in rows),
            "device": device_summary(),
            "accuracy_not_measured": data_error,
        }
        title = (
            f"SubsetSum on {model_name.upper()} ({results['target']}), per-row, seed {spec.seed}"
        )
        run.commit({
            "study.json": rundir.json_bytes(results),
            "study.csv": csv_text(rows).encode(),
            "study.png": lambda p: plot_study(rows, p, title=title, fmt="png"),
            "study.pdf": lambda p: plot_study(rows, p, title=title, fmt="pdf"),
        })  # fmt: skip
    return StudyOutcome(spec.out, results, rows, data_error)


def _study_target(target: str) -> tuple[dict[str, np.ndarray], dict, Path]:
    from lottery_jax import checkpoint
    from lottery_jax.paper import resolve_weights

    path = resolve_weights("paper-fc2" if target == "paper" else target)
    state, meta = checkpoint.load_weights(path)
    return {k: np.asarray(v) for k, v in state.items()}, meta or {}, path


def _evaluator(spec: StudySpec, inputs: str, model_name: str, log) -> tuple[Any, str | None]:
    """The test accuracy of an approximated state, or (None, why) when the data cannot be had."""
    if not spec.evaluate:
        return None, None
    from lottery_jax.data import load_dataset
    from lottery_jax.download import DownloadError
    from lottery_jax.nets import targets as models
    from lottery_jax.training import evaluate as eval_net

    try:
        data = load_dataset(spec.data_dir, dataset=spec.dataset, inputs=inputs)
    except DownloadError as e:
        log(f"accuracy not measured: {e}")
        return None, str(e)

    def evaluator(approx_state: dict[str, np.ndarray]) -> float:
        _, net = models.network_for(approx_state, source="approximation", model=model_name)
        return eval_net(net, data.test_images, data.test_labels)

    return evaluator, None
