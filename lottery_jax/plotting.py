"""The paper's Experiment 2 figure, and the house style of every figure the project draws.

Experiment 2: final test accuracy against remaining parameters (log x, reversed as in the paper:
the sparsest nets on the right), one curve per variant (redundant-linear, redundant-ReLU, wide)
and the trained baseline (a marker at its size and a dashed line at its accuracy). The sparsity
of the points is read off a top axis. Two ways to aggregate a results directory:

- ``aggregate="mean"``: one panel per epoch budget, the mean and standard deviation over seeds;
- ``aggregate="best"``: one panel per family, per sparsity the best run over every budget (and
  seed) present: the rule of the published figures (their notebook takes the max over result
  folders), so a full grid is drawn the way the paper drew it.

``published=True`` overlays the published records (:mod:`lottery_jax.pruning.published`, the
paper's own runs) as hollow markers in the colour of our variant, at our points' sizes: for the
same budget with ``mean``, the best over the same budgets with ``best``.

House style (:data:`HOUSE_RC`, :func:`house_style`): 7-8 pt text at a paper's column width
(:data:`COLUMN_WIDTH`; several panels span :data:`TEXT_WIDTH`), the Okabe-Ito colour-blind-safe
palette, constrained layout so nothing is clipped, the legend just below the axes, TrueType fonts
in PDF. The output format follows the file's extension (``.pdf``, ``.svg``: vector; ``.png``).

Figures are drawn on :class:`matplotlib.figure.Figure` objects, without ``pyplot``, inside a
temporary ``rc_context``: importing or calling this module never changes matplotlib's global
backend or state.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lottery_jax.errors import UserError

#: Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision
#: deficiency.
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7",
}  # fmt: skip
#: Inches: one column of a two-column paper, and the full text width.
COLUMN_WIDTH = 3.4
TEXT_WIDTH = 7.0
#: The smallest text in any figure (points).
MIN_FONT_PT = 7
HOUSE_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 9,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "lines.linewidth": 1.1,
    "lines.markersize": 4,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "pdf.fonttype": 42,  # TrueType in PDF: editable, and accepted by every publisher
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.dpi": 300,
}
FORMATS = ("pdf", "png", "svg")

CURVES = ("redundant-linear", "redundant-ReLU", "wide")
STYLE = {
    "redundant-linear": dict(color=OKABE_ITO["blue"], marker="o"),
    "redundant-ReLU": dict(color=OKABE_ITO["orange"], marker="*"),
    "wide": dict(color=OKABE_ITO["bluish green"], marker="^"),
    "baseline": dict(color=OKABE_ITO["black"], marker="D"),
}
LABELS = {
    "redundant-linear": "redundant, linear",
    "redundant-ReLU": "redundant, ReLU",
    "wide": "wide",
    "baseline": "baseline (trained)",
}
#: ``--variant`` names (as ``sweep`` spells them) -> curve names.
VARIANT_CURVES = {"red-linear": "redundant-linear", "red-relu": "redundant-ReLU", "wide": "wide"}
#: What ``variants`` may name.
PLOT_VARIANTS = (*VARIANT_CURVES, "baseline")
#: Commands whose results are trained baselines (``train``, or a sweep's own baseline).
BASELINE_COMMANDS = ("train", "sweep baseline")
AGGREGATES = ("mean", "best")
XSCALES = ("log", "linear")
#: Which sparsity labels the top axis keeps first when they would overlap.
LABEL_PRIORITY = (0.99, 0.5, 0.9, 0.0, 0.1, 0.75, 0.25, 0.95, 0.98, 0.05, 0.975, 0.02, 0.01, 0.025)


def house_style():
    """A context in which figures get the house style (restores matplotlib's settings after)."""
    from matplotlib import rc_context

    return rc_context(HOUSE_RC)


def new_figure(**kwargs) -> Figure:
    """A figure that belongs to no global pyplot state (save it with :func:`save_figure`)."""
    return Figure(**kwargs)


def figure_format(path: str | Path) -> str:
    """The output format a file name asks for (its extension): pdf, png or svg."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UserError(f"figure file {path}: use the extension .pdf, .png or .svg")
    return fmt


def save_figure(fig: Figure, path: str | Path, fmt: str | None = None) -> Path:
    """Render ``fig`` in ``fmt`` (default: by ``path``'s extension) and write it atomically."""
    from lottery_jax.rundir import ensure_dir, write_atomic

    ensure_dir(Path(path).parent)
    buf = io.BytesIO()
    with house_style():
        fig.savefig(buf, format=fmt or figure_format(path))
    return write_atomic(Path(path), buf.getvalue())


def draw_and_save(draw, path: str | Path, fmt: str | None = None) -> Path:
    """``draw()`` (a function returning a figure) in the house style, saved by
    :func:`save_figure` (format ``fmt``, else ``path``'s extension)."""
    with house_style():
        fig = draw()
    return save_figure(fig, Path(path), fmt)


def variant_of(curve: str) -> str:
    """Curve name -> variant name as ``sweep`` and the published records spell it."""
    return {c: v for v, c in VARIANT_CURVES.items()}.get(curve, curve)


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


def point_params(result: dict) -> int | None:
    """The x of a result: its remaining parameters (a baseline: its trainable ones)."""
    params = result.get("remaining_params") or result.get("trainable_params")
    params = params or result.get("total_params")
    return None if params is None else int(params)


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
        params = point_params(r)
        if params is None:
            continue
        sparsity = r.get("sparsity", r.get("config", {}).get("sparsity"))
        data[family][int(budget)][curve].append(
            (params, float(r["final_test_accuracy"]), r.get("seed"), sparsity)
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


def best_by_params(points: list[tuple]) -> list[tuple[int, float, float, int, object]]:
    """[(params, best accuracy, 0, number of runs, sparsity)] sorted by params: the max over the
    runs (budgets and seeds) of each point, as the published figures take it."""
    by: dict[int, list[tuple]] = defaultdict(list)
    for p in points:
        by[p[0]].append(p)
    return [(x, max(p[1] for p in by[x]), 0.0, len(by[x]), by[x][0][3]) for x in sorted(by)]


# ----------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class Panel:
    """What one axes shows: a family at one budget (mean) or over several budgets (best)."""

    family: str
    budgets: tuple[int, ...]
    aggregate: str
    #: curve -> [(params, accuracy, std, count, sparsity)] sorted by params.
    curves: dict[str, list[tuple]]

    @property
    def title(self) -> str:
        name = self.family.upper()
        if self.aggregate == "mean":
            (e,) = self.budgets
            seeds = max((r[3] for rows in self.curves.values() for r in rows), default=1)
            how = f"\nmean ± std of {seeds} seeds" if seeds > 1 else ""
            return f"{name}, {e} epoch{'' if e == 1 else 's'}{how}"
        b = self.budgets
        if len(b) == 1:
            return f"{name}, best run, {b[0]} epoch{'' if b[0] == 1 else 's'}"
        if len(b) <= 3:
            return f"{name}, best of {', '.join(map(str, b))} epochs"
        return f"{name}, best of {len(b)} budgets ({b[0]}-{b[-1]} epochs)"


def make_panels(data: dict, aggregate: str = "mean") -> dict[str, list[Panel]]:
    """family -> its panels, from :func:`figure_data`'s output."""
    if aggregate not in AGGREGATES:
        raise UserError(f"unknown aggregate {aggregate!r} (choose from {', '.join(AGGREGATES)})")
    out = {}
    for family in sorted(data):
        budgets = sorted(data[family])
        if aggregate == "mean":
            out[family] = [
                Panel(family, (b,), "mean",
                      {c: mean_std_by_params(pts) for c, pts in data[family][b].items()})
                for b in budgets
            ]  # fmt: skip
            continue
        merged: dict = defaultdict(list)
        for b in budgets:
            for c, pts in data[family][b].items():
                merged[c] += pts
        out[family] = [Panel(family, tuple(budgets), "best",
                             {c: best_by_params(pts) for c, pts in merged.items()})]  # fmt: skip
    return out


def published_points(panel: Panel, published) -> dict[str, list[tuple[int, float]]]:
    """curve -> [(our params, published accuracy)] at the sparsities the panel shows: the record
    of the same budget (mean), or the best over the panel's budgets (best)."""
    out = {}
    for curve, rows in panel.curves.items():
        variant = variant_of(curve)
        pts = []
        for x, _, _, _, s in rows:
            s = 0.0 if s is None else float(s)
            if panel.aggregate == "mean":
                rec = published.get(panel.family, variant, s, panel.budgets[0])
            else:
                rec = published.best(panel.family, variant, s, panel.budgets)
            if rec is not None:
                pts.append((x, rec.final_test_acc))
        if pts:
            out[curve] = pts
    return out


# ----------------------------------------------------------------------------- drawing


def _draw_curves(ax, panel: Panel, overlay: dict) -> None:
    for curve in CURVES:
        rows = panel.curves.get(curve)
        if not rows:
            continue
        xs, ys, sd = ([r[i] for r in rows] for i in range(3))
        ms = 6 if STYLE[curve]["marker"] == "*" else 4
        if panel.aggregate == "mean" and any(sd):
            ax.errorbar(xs, ys, yerr=sd, label=LABELS[curve], markersize=ms, capsize=1.5,
                        elinewidth=0.7, **STYLE[curve])  # fmt: skip
        else:
            ax.plot(xs, ys, label=LABELS[curve], markersize=ms, **STYLE[curve])
    if panel.curves.get("baseline"):
        rows = panel.curves["baseline"]
        ax.axhline(max(r[1] for r in rows), color=STYLE["baseline"]["color"], linestyle="--",
                   linewidth=0.7, zorder=1)  # fmt: skip
        ax.plot([r[0] for r in rows], [r[1] for r in rows], linestyle="none", markersize=4.5,
                label=LABELS["baseline"], **STYLE["baseline"])  # fmt: skip
    for curve, pts in overlay.items():
        style = STYLE[curve]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="none", marker=style["marker"],
                color=style["color"], markerfacecolor="none", markeredgecolor=style["color"],
                markeredgewidth=0.9,
                markersize=9 if style["marker"] == "*" else 7, zorder=3)  # fmt: skip


def _format_x(ax, xscale: str, narrow: bool = False) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    thousands = FuncFormatter(lambda x, _: f"{x / 1000:,.4g}")
    if xscale == "log":
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0) if narrow else (1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(thousands)
    ax.margins(x=0.06, y=0.06)
    if not ax.xaxis_inverted():
        ax.invert_xaxis()  # as the paper: the sparsest nets on the right
    ax.set_xlabel("remaining parameters (thousands)")


def _sparsity_ticks(panel: Panel) -> list[tuple[float, float]]:
    """[(x, sparsity)]: each sparsity of the panel's pruned curves at its mean size."""
    by: dict = defaultdict(list)
    for curve in CURVES:
        for x, _, _, _, s in panel.curves.get(curve, []):
            if s is not None:
                by[round(float(s), 6)].append(x)
    return [(float(np.mean(xs)), s) for s, xs in sorted(by.items())]


def _label_order(ticks: list[tuple[float, float]]) -> list[int]:
    def rank(i):
        s = ticks[i][1]
        return (LABEL_PRIORITY.index(s), 0) if s in LABEL_PRIORITY else (len(LABEL_PRIORITY), s)

    return sorted(range(len(ticks)), key=rank)


def _sparsity_axis(fig: Figure, ax, panel: Panel):
    """A top axis labelled with the points' sparsities; returns it (None without any)."""
    ticks = _sparsity_ticks(panel)
    if not ticks:
        return None
    top = ax.secondary_xaxis("top", functions=(lambda x: x, lambda x: x))
    top.set_xticks([x for x, _ in ticks], labels=[f"{s:g}" for _, s in ticks])
    top.minorticks_off()
    top.tick_params(labelsize=MIN_FONT_PT, pad=1.5, length=2.5)
    top.set_xlabel("sparsity", labelpad=4)
    return top, ticks


def _thin_sparsity_labels(fig: Figure, axes_ticks) -> None:
    """Keep, per top axis, the labels that fit without overlapping (by :data:`LABEL_PRIORITY`)."""
    fig.draw_without_rendering()
    for top, ticks in axes_ticks:
        labels = top.xaxis.get_ticklabels()
        boxes = [t.get_window_extent() for t in labels]
        pad = 3.0 * fig.dpi / 72
        kept: list[int] = []
        for i in _label_order(ticks):
            b = boxes[i]
            if all(b.x1 + pad < boxes[j].x0 or boxes[j].x1 + pad < b.x0 for j in kept):
                kept.append(i)
        kept.sort()
        top.set_xticks([ticks[i][0] for i in kept], labels=[f"{ticks[i][1]:g}" for i in kept])


def _legend(fig: Figure, axes, overlay_drawn: bool) -> None:
    from matplotlib.lines import Line2D

    handles: dict = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    order = [LABELS[c] for c in (*CURVES, "baseline") if LABELS[c] in handles]
    hs = [handles[label] for label in order]
    if overlay_drawn:
        hs.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="none",
                         markeredgecolor="0.3", markersize=5.5))  # fmt: skip
        order.append("hollow: published run")
    ncol = min(len(order), 2 if len(axes) == 1 else 5)
    fig.legend(hs, order, loc="outside lower center", ncol=ncol, frameon=False,
               handlelength=1.8, columnspacing=1.2, handletextpad=0.5)  # fmt: skip


def draw_family(
    panels: list[Panel],
    *,
    title: str = "",
    published=None,
    label_sparsity: bool = True,
    xscale: str = "log",
) -> Figure:
    """One family's figure (call inside :func:`house_style`)."""
    if xscale not in XSCALES:
        raise UserError(f"unknown x scale {xscale!r} (choose from {', '.join(XSCALES)})")
    n = len(panels)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    width = COLUMN_WIDTH if n == 1 else TEXT_WIDTH
    fig = new_figure(figsize=(width, 2.55 * nrows + 0.55), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:
        ax.set_visible(False)
    tops, overlay_drawn = [], False
    for ax, panel in zip(axes, panels, strict=False):
        overlay = published_points(panel, published) if published is not None else {}
        overlay_drawn |= bool(overlay)
        _draw_curves(ax, panel, overlay)
        _format_x(ax, xscale, narrow=ncols >= 3)
        ax.set_title(panel.title, loc="center")
        ax.grid(True, which="major")
        if label_sparsity and (top := _sparsity_axis(fig, ax, panel)) is not None:
            tops.append(top)
    for row in grid:
        row[0].set_ylabel("final test accuracy (%)")
    _legend(fig, axes[:n], overlay_drawn)
    if title:
        fig.suptitle(title)
    if tops:
        _thin_sparsity_labels(fig, tops)
    return fig


def _targets(out: Path, families: list[str]) -> dict[str, list[Path]]:
    """Output files per family: ``out`` as a file (by its extension; the family is added to the
    name when there are several), or a directory that gets ``pruning-<family>.png`` and ``.pdf``."""
    if out.suffix.lower().lstrip(".") in FORMATS:
        if len(families) == 1:
            return {families[0]: [out]}
        return {f: [out.with_name(f"{out.stem}-{f}{out.suffix}")] for f in families}
    return {f: [out / f"pruning-{f}.png", out / f"pruning-{f}.pdf"] for f in families}


def plot_results(
    results: list[dict],
    out_dir: Path,
    *,
    title: str = "",
    epochs: list[int] | None = None,
    families: list[str] | None = None,
    variants: list[str] | None = None,
    published=None,
    aggregate: str = "mean",
    label_sparsity: bool = True,
    xscale: str = "log",
) -> list[Path]:
    """Draw one figure per family; returns the written paths.

    ``out_dir`` is a directory (``pruning-<family>.png`` and ``.pdf`` in it) or a figure file
    (``.pdf``/``.svg``/``.png``: that format; with several families the family joins its name).
    ``published``: True (the built-in published runs), a
    :class:`lottery_jax.pruning.published.PublishedRuns`, or None (no overlay).
    ``aggregate``: ``mean`` (a panel per budget, mean ± std over seeds) or ``best`` (per
    sparsity the best over the budgets present, one panel per family: the published rule).
    """
    if aggregate not in AGGREGATES:
        raise UserError(f"unknown aggregate {aggregate!r} (choose from {', '.join(AGGREGATES)})")
    data = figure_data(results, epochs=epochs, families=families, variants=variants)
    if not data:
        raise UserError("no pruning or baseline results to plot (after the filters)")
    if published is True:
        from lottery_jax.pruning.published import load_published

        published = load_published()
    elif published is False:
        published = None
    targets = _targets(Path(out_dir), sorted(data))
    from lottery_jax.rundir import prepare_dir

    for folder in sorted({p.parent for paths in targets.values() for p in paths}):
        prepare_dir(folder, "figure folder")  # (a file or a read-only folder: one line, up front)
    written = []
    for family, panels in make_panels(data, aggregate).items():
        with house_style():
            fig = draw_family(panels, title=title, published=published,
                              label_sparsity=label_sparsity, xscale=xscale)  # fmt: skip
        for path in targets[family]:
            written.append(save_figure(fig, path))
    return written
