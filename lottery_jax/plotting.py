"""The paper's Experiment 2 figure: final test accuracy vs remaining parameters (log x).

One figure per model family, one panel per epoch budget, one curve per variant (redundant-linear,
redundant-ReLU, wide) and the trained baseline as a dashed line with a marker at its size.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from lottery_jax.errors import UserError  # noqa: E402

STYLE = {
    "redundant-linear": dict(color="tab:blue", marker="o"),
    "redundant-ReLU": dict(color="tab:orange", marker="s"),
    "wide": dict(color="tab:green", marker="^"),
    "baseline": dict(color="black", marker="*"),
}


def classify(result: dict) -> tuple[str, str, int] | None:
    """(family, curve, epochs) of a results.json, or None if it is not part of the figure."""
    cfg = result.get("config", {})
    model = str(cfg.get("model", ""))
    epochs = cfg.get("epochs")
    if result.get("command") == "prune":
        kind, _, family = model.partition("-")
        if kind == "red":
            return family, "redundant-ReLU" if cfg.get("relu") else "redundant-linear", epochs
        if kind == "wide":
            return family, "wide", epochs
        return None
    if result.get("command") == "train" and model in ("fc2", "fc4", "lenet5"):
        return model, "baseline", epochs
    return None


def figure_data(results: list[dict]) -> dict[str, dict[int, dict[str, list[tuple]]]]:
    """family -> epochs -> curve -> sorted [(remaining params, accuracy, seed)]."""
    data: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results:
        c = classify(r)
        if c is None or c[2] is None:
            continue
        family, curve, epochs = c
        params = r.get("remaining_params") or r.get("trainable_params") or r.get("total_params")
        if params is None:
            continue
        data[family][int(epochs)][curve].append(
            (int(params), float(r["final_test_accuracy"]), r.get("seed"))
        )
    for fam in data.values():
        for curves in fam.values():
            for pts in curves.values():
                pts.sort()
    return data


def _mean_by_params(points: list[tuple]) -> tuple[list[int], list[float]]:
    by: dict[int, list[float]] = defaultdict(list)
    for p, a, _ in points:
        by[p].append(a)
    xs = sorted(by)
    return xs, [sum(by[x]) / len(by[x]) for x in xs]


def plot_results(results: list[dict], out_dir: Path, *, title: str = "") -> list[Path]:
    """Draw one figure per family into ``out_dir`` as PNG and PDF; returns the written paths."""
    data = figure_data(results)
    if not data:
        raise UserError("no pruning or baseline results to plot")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for family in sorted(data):
        budgets = sorted(data[family])
        fig, axes = plt.subplots(
            1, len(budgets), figsize=(4.2 * len(budgets), 3.9), squeeze=False, sharex=True,
            sharey=True,
        )  # fmt: skip
        for ax, epochs in zip(axes[0], budgets, strict=True):
            curves = data[family][epochs]
            for curve in ("redundant-linear", "redundant-ReLU", "wide"):
                if curve in curves:
                    xs, ys = _mean_by_params(curves[curve])
                    ax.plot(xs, ys, label=curve, markersize=4, **STYLE[curve])
            if "baseline" in curves:
                xs, ys = _mean_by_params(curves["baseline"])
                ax.axhline(ys[-1], color="black", linestyle="--", linewidth=0.8)
                ax.plot(xs, ys, linestyle="none", label="baseline", markersize=9,
                        **STYLE["baseline"])  # fmt: skip
            ax.set_xscale("log")
            ax.set_xlabel("remaining parameters")
            ax.set_title(f"{family.upper()}, {epochs} epoch{'' if epochs == 1 else 's'}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("final test accuracy (%)")
        handles: dict = {}
        for ax in axes[0]:
            for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, h)
        order = [c for c in STYLE if c in handles]
        fig.legend([handles[c] for c in order], order, loc="lower center", ncol=len(order),
                   fontsize=8, frameon=False)  # fmt: skip
        if title:
            fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        for ext in ("png", "pdf"):
            path = out_dir / f"pruning-{family}.{ext}"
            tmp = path.with_name(f".{path.name}.tmp.{ext}")
            fig.savefig(tmp, dpi=150)
            tmp.replace(path)
            written.append(path)
        plt.close(fig)
    return written
