"""The study's construct axis: the solved ticket against the redundancy R, at one eps.

``lottery-jax study --construct --redundancy 5,10,21 --epsilon 0.01`` runs
:func:`lottery_jax.subsetsum.construct.construct` once per R on the same target, init and seed,
and records one row per R (:data:`CSV_COLUMNS`): the fraction of the target's weights within eps,
the largest error, the links kept, the test accuracy of the pruned random network beside the
target's, and, at the R values asked (``compare_at``), the accuracy of edge-popup masks trained
for ``compare_epochs`` epochs on the same random network at the solved ticket's per-tensor
sparsity (``construct --compare-epochs``). :func:`plot_construct_study` draws (a) accuracy and
(b) fraction within eps against R.

Each R is its own ``construct`` run directory under the study's (``construct-r{R}``, or
``construct-r{R}-edge-popup{N}`` where edge-popup is trained beside it), so an interrupted study
resumes where it stopped and a larger grid reuses the finished points.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lottery_jax.errors import UserError
from lottery_jax.nets.targets import DEFAULT_INPUTS
from lottery_jax.subsetsum import construct as cs

#: The solved ticket "matches" the target within this many accuracy points (issue 15's bar).
MATCH_POINTS = 0.2

#: One row per R, in this order (``study.csv``).
CSV_COLUMNS = (
    "redundancy", "epsilon", "init", "relu", "weights", "within_epsilon",
    "within_epsilon_fraction", "max_error", "remaining_params", "total_params",
    "target_accuracy", "ticket_accuracy", "max_logit_error", "edge_popup_epochs",
    "edge_popup_accuracy", "edge_popup_remaining_params", "edge_popup_seconds", "seconds",
    "compile_seconds",
)  # fmt: skip


@dataclass(frozen=True)
class ConstructStudySpec:
    """One construct-axis study: the target, the R grid at one eps, the init, and where (and for
    how many epochs) edge-popup is trained beside the solved ticket."""

    out: Path
    redundancies: tuple[int, ...]
    epsilon: float = 0.01
    target: str = "paper"
    init: str = "normal"
    relu: bool = False
    seed: int = 0
    compare_epochs: int = 0
    compare_at: tuple[int, ...] | None = None  # None: every R of the grid
    inputs: str | None = None  # None: the target file's own, else the paper's for its network
    data_dir: Path | None = None
    dataset: str = "mnist"
    evaluate: bool = True
    max_hours: float = 4.0
    command: str = "study --construct"

    def __post_init__(self) -> None:
        if not self.redundancies:
            raise UserError("the construct study needs at least one redundancy")
        if any(not isinstance(r, int) or r < 1 for r in self.redundancies):
            raise UserError(f"redundancies must be integers of at least 1: {self.redundancies}")
        extra = sorted(set(self.compare_at or ()) - set(self.redundancies))
        if extra:
            raise UserError(f"--compare-at {extra} is not in the --redundancy grid")
        if self.compare_epochs and not self.evaluate:
            raise UserError("edge-popup needs the data: drop --no-evaluate or --compare-epochs")

    def epochs_at(self, r: int) -> int:
        """Edge-popup epochs trained beside the solved ticket of redundancy ``r`` (0: none)."""
        wanted = self.compare_at is None or r in self.compare_at
        return self.compare_epochs if wanted else 0

    def point_dir(self, r: int) -> Path:
        epochs = self.epochs_at(r)
        return self.out / (f"construct-r{r}" + (f"-edge-popup{epochs}" if epochs else ""))


@dataclass(frozen=True)
class ConstructStudyOutcome:
    """What :func:`construct_study` committed: the ``study.json`` record and its rows."""

    out: Path
    results: dict[str, Any]
    rows: list[dict[str, Any]]


def point_row(results: dict[str, Any]) -> dict[str, Any]:
    """The study's row of one ``construct`` record (``results.json``)."""
    ep = results.get("edge_popup") or {}
    row = {k: results.get(k) for k in CSV_COLUMNS if k in results}
    row.update(
        edge_popup_epochs=ep.get("epochs", 0),
        edge_popup_accuracy=ep.get("ticket_accuracy"),
        edge_popup_remaining_params=ep.get("remaining_params"),
        edge_popup_seconds=ep.get("seconds"),
    )
    return row


def run_points(spec: ConstructStudySpec, data=None, on_point=None) -> list[dict[str, Any]]:
    """One ``construct`` per R (each in its own run directory, resumed when finished)."""
    rows = []
    for i, r in enumerate(sorted(set(spec.redundancies))):
        res = cs.construct(
            spec.target, redundancy=r, epsilon=spec.epsilon, relu=spec.relu, init=spec.init,
            seed=spec.seed, inputs=spec.inputs, data=data, evaluate=spec.evaluate,
            out=spec.point_dir(r), compare_epochs=spec.epochs_at(r), max_hours=spec.max_hours,
        )  # fmt: skip
        rows.append(point_row(res.results))
        if on_point is not None:
            on_point(i + 1, len(spec.redundancies), rows[-1], res.resumed)
    return rows


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The table as CSV (one row per R)."""
    lines = [",".join(CSV_COLUMNS)]
    for r in rows:
        lines.append(",".join("" if r.get(k) is None else f"{r[k]}" for k in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def draw_construct_study(rows: list[dict[str, Any]], title: str):
    """The figure (house style of :mod:`lottery_jax.plotting`, no pyplot): (a) test accuracy of
    the solved ticket, the target and edge-popup at the same sparsity; (b) fraction within eps."""
    from lottery_jax.plotting import OKABE_ITO, TEXT_WIDTH, new_figure

    rows = sorted(rows, key=lambda r: r["redundancy"])
    rs = [r["redundancy"] for r in rows]
    fig = new_figure(figsize=(TEXT_WIDTH, 2.9), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    scored = [r for r in rows if r.get("ticket_accuracy") is not None]
    ax1.plot([r["redundancy"] for r in scored], [r["ticket_accuracy"] for r in scored], "o-",
             color=OKABE_ITO["blue"], label="solved ticket (SubsetSum)")  # fmt: skip
    if scored:
        ax1.axhline(scored[0]["target_accuracy"], ls="--", color=OKABE_ITO["black"], lw=0.8,
                    label=f"target ({scored[0]['target_accuracy']:.2f}%)")  # fmt: skip
    ep = [r for r in rows if r.get("edge_popup_accuracy") is not None]
    if ep:
        epochs = "/".join(str(e) for e in sorted({r["edge_popup_epochs"] for r in ep}))
        ax1.plot([r["redundancy"] for r in ep], [r["edge_popup_accuracy"] for r in ep], "s",
                 color=OKABE_ITO["vermillion"], label=f"edge-popup, {epochs} epoch"
                 f"{'' if epochs == '1' else 's'}, same sparsity")  # fmt: skip
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("(a) pruned random network")
    ax1.legend(loc="best")
    ax2.plot(rs, [100 * r["within_epsilon_fraction"] for r in rows], "o-",
             color=OKABE_ITO["blue"])  # fmt: skip
    ax2.set_ylabel("weights within eps (%)")
    ax2.set_title(f"(b) fraction within eps = {rows[0]['epsilon']:g}" if rows else "(b)")
    for ax in (ax1, ax2):
        ax.set_xlabel("redundancy R (random links per target weight)")
        ax.set_xticks(rs)
        ax.grid(True)
    if title:
        fig.suptitle(title)
    return fig


def plot_construct_study(
    rows: list[dict[str, Any]], path: Path, *, title: str = "", fmt: str | None = None
) -> Path:
    """:func:`draw_construct_study`, saved (format ``fmt``, else ``path``'s extension)."""
    from lottery_jax.plotting import draw_and_save

    return draw_and_save(lambda: draw_construct_study(rows, title), path, fmt)


def study_title(results: dict[str, Any]) -> str:
    relu = ", ReLU" if results["relu"] else ""
    return (f"construct on {results['model']} ({results['target']}), {results['init']} init"
            f"{relu}, seed {results['seed']}")  # fmt: skip


def plan(spec: ConstructStudySpec) -> tuple[cs.RedundantForm, str, str]:
    """The target's redundant form, its name and input mode; every point's memory and time
    budget checked up front (a one-line refusal before any work)."""
    state, meta, source = cs.resolve_target(spec.target)
    form = cs.redundant_form(state, source, meta.get("model"))
    inputs = spec.inputs or meta.get("inputs") or DEFAULT_INPUTS[form.target_model]
    for r in spec.redundancies:
        cfg = cs.ConstructConfig(redundancy=r, epsilon=spec.epsilon, relu=spec.relu,
                                 init=spec.init, seed=spec.seed, max_hours=spec.max_hours)  # fmt: skip
        cs.check_budget(form, cfg, inputs)
    return form, source, inputs


def construct_study(
    spec: ConstructStudySpec,
    data: Any = None,
    on_point: Callable[[int, int, dict, bool], None] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> ConstructStudyOutcome:
    """Every R of ``spec`` (:func:`run_points`), then ``study.json``, ``study.csv``,
    ``study.png`` and ``study.pdf`` committed together in ``spec.out``. ``data``: the test (and,
    for edge-popup, training) data preprocessed as the target's inputs; loaded when None."""
    from lottery_jax import rundir
    from lottery_jax.results import device_summary

    form, source, inputs = plan(spec)
    args = {"study": "construct-axis/1", "target_sha256": cs.target_sha256(form),
            "epsilon": spec.epsilon, "init": spec.init, "relu": spec.relu, "seed": spec.seed,
            "inputs": inputs}  # fmt: skip
    with rundir.RunDir(spec.out, command=spec.command, args=args, log=log) as run:
        if spec.evaluate and data is None:
            from lottery_jax.data import load_dataset

            data = load_dataset(spec.data_dir, dataset=spec.dataset, inputs=inputs)
        spec = dataclasses.replace(spec, inputs=inputs)
        rows = run_points(spec, data if spec.evaluate else None, on_point)
        results = {
            "command": "study --construct", "target": source, "model": form.model,
            "inputs": inputs, "epsilon": spec.epsilon, "init": spec.init, "relu": spec.relu,
            "seed": spec.seed, "redundancies": sorted(set(spec.redundancies)),
            "compare_epochs": spec.compare_epochs, "rows": rows,
            "matches_target_at": matches_target_at(rows), "device": device_summary(),
        }  # fmt: skip
        title = study_title(results)
        run.commit({
            "study.json": rundir.json_bytes(results),
            "study.csv": csv_text(rows).encode(),
            "study.png": lambda p: plot_construct_study(rows, p, title=title, fmt="png"),
            "study.pdf": lambda p: plot_construct_study(rows, p, title=title, fmt="pdf"),
        })  # fmt: skip
    return ConstructStudyOutcome(spec.out, results, rows)


def matches_target_at(
    rows: Sequence[dict[str, Any]], tolerance: float = MATCH_POINTS
) -> int | None:
    """The smallest R whose solved ticket scores within ``tolerance`` points of the target
    (None: none of the grid, or accuracies not measured)."""
    for r in sorted(rows, key=lambda r: r["redundancy"]):
        acc, target = r.get("ticket_accuracy"), r.get("target_accuracy")
        if acc is not None and target is not None and abs(acc - target) <= tolerance:
            return int(r["redundancy"])
    return None
