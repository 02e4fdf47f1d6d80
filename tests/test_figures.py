"""The figures' house style: nothing outside the canvas, 7 pt or more, colour-blind-safe colours,
vector PDF by extension, sparsity labels that do not collide."""

from __future__ import annotations

import pytest
from matplotlib.colors import to_hex, to_rgb
from matplotlib.text import Text

from lottery_jax import plotting
from lottery_jax.pruning import PUBLISHED_SPARSITIES
from lottery_jax.pruning.published import load_published
from lottery_jax.subsetsum import construct_study, study

PUBLISHED = load_published()
TOTALS = {"fc2": 1_991_420, "fc4": 4_496_420, "lenet5": 297_620}


def synthetic_results(family="fc2", budgets=(30,), seeds=(0, 1, 2)):
    """A full grid for one family (every variant and sparsity), accuracies near the records."""
    results = []
    variants = (("red", False, "red-linear"), ("red", True, "red-relu"), ("wide", False, "wide"))
    for e in budgets:
        for kind, relu, variant in variants:
            for s in PUBLISHED_SPARSITIES:
                rec = PUBLISHED.get(family, variant, s, e)
                if rec is None:  # (125 and 150 epochs were run at some sparsities only)
                    continue
                acc = rec.final_test_acc
                for seed in seeds:
                    results.append({
                        "command": "prune", "seed": seed, "sparsity": s,
                        "config": {"model": f"{kind}-{family}", "relu": relu, "epochs": e},
                        "remaining_params": TOTALS[family] - int(TOTALS[family] * s),
                        "final_test_accuracy": max(0.0, acc - 2.0 + seed),
                    })  # fmt: skip
        base = PUBLISHED.get(family, "baseline", 0.0, e)
        results.append({"command": "train", "config": {"model": family, "epochs": e}, "seed": 0,
                        "trainable_params": base.remaining_params,
                        "final_test_accuracy": base.final_test_acc})  # fmt: skip
    return results


def study_rows():
    rows = []
    for eps in (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001):
        for c in (1.0, 1.5, 2.0, 2.5, 3.0):
            rows.append({"epsilon": eps, "n": int(c * 10), "c": c, "n_over_log2": c,
                         "fraction_within": min(1.0, 0.35 * c), "relative_size_min_error":
                         2.0 + 3 * eps, "relative_size_min_count": 1.0 + eps})  # fmt: skip
    return rows


def construct_rows():
    """The construct axis at R = 5, 10, 21, edge-popup beside it at 5 and 21."""
    rows = []
    for r, acc, frac, ep in ((5, 84.48, 0.908, 95.91), (10, 94.0, 0.99, None),
                             (21, 97.10, 0.9997, 91.89)):  # fmt: skip
        rows.append({"redundancy": r, "epsilon": 0.01, "within_epsilon_fraction": frac,
                     "ticket_accuracy": acc, "target_accuracy": 97.19,
                     "edge_popup_epochs": 1 if ep else 0, "edge_popup_accuracy": ep})  # fmt: skip
    return rows


def construct_figure():
    with plotting.house_style():
        return construct_study.draw_construct_study(
            construct_rows(), "construct on red-fc2 (paper-fc2), normal init, seed 0"
        )


def pruning_figure(aggregate, budgets, published=True, family="fc2", xscale="log"):
    data = plotting.figure_data(synthetic_results(family, budgets))
    panels = plotting.make_panels(data, aggregate)[family]
    with plotting.house_style():
        return plotting.draw_family(panels, title="", published=PUBLISHED if published else None,
                                    xscale=xscale)  # fmt: skip


def study_figure():
    with plotting.house_style():
        return study.draw_study(study_rows(), "SubsetSum on FC2 (paper-fc2), per-row, seed 0")


def drawn_texts(fig):
    """Every text the renderer draws: titles, labels, legend, and the tick labels in view."""
    fig.draw_without_rendering()
    axes = [a for ax in fig.axes for a in (ax, *ax.child_axes)]
    texts = [t for t in fig.findobj(Text) if not _is_tick_label(t, axes)]
    for ax in axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            texts += _ticklabels_in_view(axis)
    return [t for t in texts if t.get_visible() and t.get_text().strip()
            and all(a.get_visible() for a in _owners(t))]  # fmt: skip


def _ticklabels_in_view(axis):
    """The tick labels the renderer draws: those of ticks inside the view interval."""
    axis.get_ticklabels()  # (places the ticks)
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    return [t.label1 for t in ticks if t.get_loc() is not None and lo <= t.get_loc() <= hi] + [
        t.label2 for t in ticks if t.get_loc() is not None and lo <= t.get_loc() <= hi
    ]


def _owners(t):
    a = t.axes
    return [a] if a is not None else []


def _is_tick_label(t, axes):
    labels = {id(lab) for ax in axes for axis in (ax.xaxis, ax.yaxis)
              for tick in axis.get_major_ticks() + axis.get_minor_ticks()
              for lab in (tick.label1, tick.label2)}  # fmt: skip
    return id(t) in labels


FIGURES = {
    "pruning-mean-1": lambda: pruning_figure("mean", (30,)),
    "pruning-mean-2": lambda: pruning_figure("mean", (30, 50)),
    "pruning-mean-5": lambda: pruning_figure("mean", (30, 50, 100, 125, 150), published=False),
    "pruning-best": lambda: pruning_figure("best", (30, 50, 100, 125, 150)),
    "pruning-best-linear": lambda: pruning_figure("best", (30, 50), xscale="linear"),
    "pruning-lenet5": lambda: pruning_figure("best", (1, 2), family="lenet5"),
    "study": study_figure,
    "construct-study": construct_figure,
}


@pytest.mark.parametrize("name", FIGURES)
def test_every_text_lies_inside_the_canvas(name):
    fig = FIGURES[name]()
    canvas = fig.bbox
    texts = drawn_texts(fig)
    assert len(texts) > 15
    for t in texts:
        box = t.get_window_extent()
        inside = (box.x0 >= canvas.x0 - 0.5 and box.y0 >= canvas.y0 - 0.5
                  and box.x1 <= canvas.x1 + 0.5 and box.y1 <= canvas.y1 + 0.5)  # fmt: skip
        assert inside, f"{t.get_text()!r} at {box} is outside the canvas {canvas}"
        assert t.get_fontsize() >= plotting.MIN_FONT_PT, t.get_text()
    # Titles, axis labels and the legend do not run into each other's panels: no two texts of
    # a figure overlap (tick labels included).
    boxes = [
        (t.get_text(), t.get_window_extent().expanded(1.0, 1.0).padded(1.0)) for t in texts
    ]  # (1 px apart at least)
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1 :]:
            assert not ba.overlaps(bb) or ba.width * ba.height == 0, f"{a!r} overlaps {b!r}"


def test_the_pruning_figure_fits_a_column_and_keeps_sparsity_labels():
    fig = pruning_figure("mean", (30,))
    width, _ = fig.get_size_inches()
    assert width == plotting.COLUMN_WIDTH
    fig.draw_without_rendering()
    (ax,) = [a for a in fig.axes if a.get_visible()]
    (top,) = ax.child_axes
    labels = [t.get_text() for t in top.xaxis.get_ticklabels()]
    # The sparsities that fit without colliding, always the ones that matter most.
    assert {"0.99", "0.5", "0.9"} <= set(labels) and len(labels) >= 6
    assert all(float(s) in PUBLISHED_SPARSITIES for s in labels)
    # The y label is whole (not clipped) and the legend sits right below the axes.
    assert ax.yaxis.label.get_window_extent().y0 >= 0
    legend = fig.legends[0].get_window_extent()
    assert legend.y1 <= ax.get_window_extent().y0 and legend.y0 >= 0


def test_colours_are_colour_blind_safe():
    fig = pruning_figure("best", (30, 50))
    (ax,) = [a for a in fig.axes if a.get_visible()]
    palette = {c.lower() for c in plotting.OKABE_ITO.values()}
    used = {to_hex(line.get_color()) for line in ax.get_lines()}
    used |= {to_hex(line.get_markeredgecolor()) for line in ax.get_lines()}
    assert used <= palette and len(used) == 4
    # Published records: hollow markers in our variant's colour.
    hollow = [ln for ln in ax.get_lines() if ln.get_markerfacecolor() == "none"]
    assert {to_hex(ln.get_markeredgecolor()) for ln in hollow} == used


def _contrast_with_white(rgb) -> float:
    def lin(u):
        return u / 12.92 if u <= 0.03928 else ((u + 0.055) / 1.055) ** 2.4

    r, g, b = rgb[:3]
    return 1.05 / (0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b) + 0.05)


def test_study_curves_stay_visible_on_white():
    fig = study_figure()
    ax1 = fig.axes[0]
    colours = [to_rgb(line.get_color()) for line in ax1.get_lines()]
    assert len(set(colours)) == 7
    # WCAG's 3:1 for graphics: the yellow end of viridis (1.3:1) is gone.
    assert min(_contrast_with_white(c) for c in colours) >= 3.0
    assert _contrast_with_white(study.study_colors(2)[-1]) < _contrast_with_white(
        study.study_colors(2)[0]
    )


@pytest.mark.parametrize("ext", ["pdf", "svg", "png"])
def test_the_format_follows_the_extension(tmp_path, ext):
    magic = {"pdf": b"%PDF", "svg": b"<?xml", "png": b"\x89PNG"}[ext]
    (path,) = plotting.plot_results(synthetic_results(), tmp_path / f"fig.{ext}")
    assert path == tmp_path / f"fig.{ext}" and path.read_bytes()[:5].startswith(magic)
    out = study.plot_study(study_rows(), tmp_path / f"study.{ext}")
    assert out.read_bytes()[:5].startswith(magic)
    if ext == "pdf":  # vector, with TrueType fonts (editable text)
        data = path.read_bytes()
        assert b"/FontFile2" in data and b"/Subtype /Image" not in data
    with pytest.raises(plotting.UserError, match="extension"):
        study.plot_study(study_rows(), tmp_path / "study.jpeg")


def test_several_families_into_one_file_name(tmp_path):
    results = synthetic_results("fc2") + synthetic_results("lenet5", budgets=(1,), seeds=(0,))
    paths = plotting.plot_results(results, tmp_path / "fig.pdf", aggregate="best")
    assert sorted(p.name for p in paths) == ["fig-fc2.pdf", "fig-lenet5.pdf"]


def test_drawing_changes_no_global_matplotlib_state():
    import matplotlib

    before = dict(matplotlib.rcParams)
    pruning_figure("mean", (30,))
    study_figure()
    construct_figure()
    assert dict(matplotlib.rcParams) == before
