"""The paper's Experiment 2 figure: final test accuracy vs remaining parameters (log x).

One figure per model family, one panel per epoch budget, one curve per variant (redundant-linear,
redundant-ReLU, wide) with the mean and standard deviation over seeds at each sparsity (each point
labelled with its sparsity), and the trained baseline as a dashed line with a marker at its size.
Optionally the published points (Pensia et al. 2020, Fig. 2, digitised, see
:mod:`lottery_jax.paper`) are drawn as hollow markers for comparison.

Figures are drawn on :class:`matplotlib.figure.Figure` objects, without ``pyplot``: importing or
calling this module never changes matplotlib's global backend or state.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lottery_jax.errors import UserError

CURVES = ("redundant-linear", "redundant-ReLU", "wide")
STYLE = {
    "redundant-linear": dict(color="tab:blue", marker="o"),
    "redundant-ReLU": dict(color="tab:orange", marker="s"),
    "wide": dict(color="tab:green", marker="^"),
    "baseline": dict(color="black", marker="*"),
}
#: ``--variant`` names (as ``sweep`` spells them) -> curve names.
VARIANT_CURVES = {"red-linear": "redundant-linear", "red-relu": "redundant-ReLU", "wide": "wide"}
#: What ``variants`` may name.
PLOT_VARIANTS = (*VARIANT_CURVES, "baseline")
#: Commands whose results are trained baselines (``train``, or a sweep's own baseline).
BASELINE_COMMANDS = ("train", "sweep baseline")


def new_figure(**kwargs) -> Figure:
    """A figure that belongs to no global pyplot state (save it with ``fig.savefig``)."""
    return Figure(**kwargs)


def classify(result: dict) -> tuple[str, str, int] | None:
    """(family, curve, epochs) of a results.json, or None if it is not part of the figure: other
    commands, custom-size networks, runs without an epoch budget or a final accuracy."""
    cfg = result.get("config", {})
    model = str(cfg.get("model", ""))
    epochs = cfg.get("epochs")
    if result.get("final_test_accuracy") is None or not epochs:
        return None
    if result.get("command") == "prune":
        if cfg.get("sizes"):
            return None
        kind, _, family = model.partition("-")
        if kind == "red":
            return family, "redundant-ReLU" if cfg.get("relu") else "redundant-linear", epochs
        if kind == "wide":
            return family, "wide", epochs
        return None
    if result.get("command") in BASELINE_COMMANDS and model in ("fc2", "fc4", "lenet5"):
        return model, "baseline", epochs
    return None


def figure_data(
    results: list[dict],
    *,
    epochs: list[int] | None = None,
    families: list[str] | None = None,
    variants: list[str] | None = None,
) -> dict[str, dict[int, dict[str, list[tuple]]]]:
    """family -> epochs -> curve -> sorted [(remaining params, accuracy, seed, sparsity)], keeping
    only the given epoch budgets, families and variants (``red-linear``, ``red-relu``, ``wide``,
    ``baseline``) when those filters are given."""
    curves = None
    if variants:
        unknown = [v for v in variants if v not in PLOT_VARIANTS]
        if unknown:
            choices = ", ".join(PLOT_VARIANTS)
            raise UserError(f"unknown variant {unknown[0]!r} (choose from {choices})")
        curves = {VARIANT_CURVES.get(v, v) for v in variants}
    data: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        c = classify(r)
        if c is None:
            continue
        family, curve, budget = c
        if epochs and int(budget) not in epochs:
            continue
        if families and family not in families:
            continue
        if curves is not None and curve not in curves:
            continue
        params = r.get("remaining_params") or r.get("trainable_params") or r.get("total_params")
        if params is None:
            continue
        sparsity = r.get("sparsity", r.get("config", {}).get("sparsity"))
        data[family][int(budget)][curve].append(
            (int(params), float(r["final_test_accuracy"]), r.get("seed"), sparsity)
        )
    for fam in data.values():
        for cs in fam.values():
            for pts in cs.values():
                pts.sort(key=lambda p: (p[0], p[1]))
    return data


def mean_std_by_params(points: list[tuple]) -> list[tuple[int, float, float, int, object]]:
    """[(params, mean accuracy, std over seeds, number of seeds, sparsity)] sorted by params."""
    by: dict[int, list[tuple]] = defaultdict(list)
    for p in points:
        by[p[0]].append(p)
    out = []
    for x in sorted(by):
        accs = np.array([p[1] for p in by[x]], float)
        sparsity = by[x][0][3] if len(by[x][0]) > 3 else None
        out.append((x, float(accs.mean()), float(accs.std()), len(accs), sparsity))
    return out


def plot_results(
    results: list[dict],
    out_dir: Path,
    *,
    title: str = "",
    epochs: list[int] | None = None,
    families: list[str] | None = None,
    variants: list[str] | None = None,
    published: dict | None = None,
    label_sparsity: bool = True,
) -> list[Path]:
    """Draw one figure per family into ``out_dir`` as PNG and PDF; returns the written paths.

    ``published`` (family -> epochs -> curve -> [(params, accuracy)]) overlays reference points.
    """
    data = figure_data(results, epochs=epochs, families=families, variants=variants)
    if not data:
        raise UserError("no pruning or baseline results to plot (after the filters)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for family in sorted(data):
        budgets = sorted(data[family])
        fig = new_figure(figsize=(4.2 * len(budgets), 3.9))
        axes = fig.subplots(1, len(budgets), squeeze=False, sharex=True, sharey=True)[0]
        for ax, budget in zip(axes, budgets, strict=True):
            curves = data[family][budget]
            for curve in CURVES:
                if curve not in curves:
                    continue
                rows = mean_std_by_params(curves[curve])
                xs, ys, sd = ([r[i] for r in rows] for i in range(3))
                ax.errorbar(xs, ys, yerr=sd, label=curve, markersize=4, capsize=2,
                            **STYLE[curve])  # fmt: skip
                if label_sparsity:
                    for x, y, _, _, s in rows:
                        if s is not None:
                            ax.annotate(f"{s:g}", (x, y), textcoords="offset points",
                                        xytext=(3, 3), fontsize=5, color=STYLE[curve]["color"])  # fmt: skip
            if "baseline" in curves:
                rows = mean_std_by_params(curves["baseline"])
                ax.axhline(rows[-1][1], color="black", linestyle="--", linewidth=0.8)
                ax.errorbar([r[0] for r in rows], [r[1] for r in rows], yerr=[r[2] for r in rows],
                            linestyle="none", label="baseline", markersize=9,
                            **STYLE["baseline"])  # fmt: skip
            for curve, pts in ((published or {}).get(family, {}).get(budget, {}) or {}).items():
                if pts and curve in STYLE:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=":",
                            markerfacecolor="none", label=f"{curve} (published)", markersize=5,
                            color=STYLE[curve]["color"], marker=STYLE[curve]["marker"])  # fmt: skip
            ax.set_xscale("log")
            ax.set_xlabel("remaining parameters")
            ax.set_title(f"{family.upper()}, {budget} epoch{'' if budget == 1 else 's'}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("final test accuracy (%), mean ± std over seeds")
        handles: dict = {}
        for ax in axes:
            for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, h)
        order = sorted(handles, key=lambda c: (c.split(" ")[0] not in STYLE, c))
        fig.legend([handles[c] for c in order], order, loc="lower center",
                   ncol=min(len(order), 4), fontsize=8, frameon=False)  # fmt: skip
        if title:
            fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        for ext in ("png", "pdf"):
            path = out_dir / f"pruning-{family}.{ext}"
            tmp = path.with_name(f".{path.name}.tmp.{ext}")
            fig.savefig(tmp, dpi=150)
            tmp.replace(path)
            written.append(path)
    return written
