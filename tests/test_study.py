"""The logarithmic-law study: grid, monotone fractions, the c = 3 claim, CLI, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import cli_code as run_cli

from lottery_jax.checkpoint import load_weights, save_weights
from lottery_jax.errors import UserError
from lottery_jax.paper import resolve_weights
from lottery_jax.subsetsum import study as st


def paper_slice(rows: int) -> dict[str, np.ndarray]:
    """The paper's FC2 target, its first ``rows`` hidden units (both layers)."""
    state, _ = load_weights(resolve_weights("paper-fc2"))
    return {"fc1.weight": state["fc1.weight"][:rows], "fc2.weight": state["fc2.weight"][:, :rows]}


def test_grid_cells_dedupe_and_refuse():
    cells = st.grid_cells([0.1], [0.25, 0.5, 1.0, 1.1])
    assert [(n, c) for _, n, c in cells] == [(1, 0.25), (3, 1.0)]
    with pytest.raises(UserError, match="epsilon"):
        st.grid_cells([2.0], [1.0])
    with pytest.raises(UserError, match="c must be positive"):
        st.grid_cells([0.1], [-1.0])


def check_monotone(rows, epsilons, weights):
    for eps in epsilons:
        fr = [
            r["fraction_within"] for r in sorted(rows, key=lambda r: r["n"]) if r["epsilon"] == eps
        ]
        assert len(fr) >= 3
        assert all(a <= b for a, b in zip(fr, fr[1:], strict=False)), (eps, fr)
        assert fr[0] < fr[-1]
    for r in rows:
        assert r["remaining_min_count"] <= r["remaining_min_error"]
        assert 0 <= r["fraction_within"] <= 1 and r["weights"] == weights


def test_fraction_within_is_non_decreasing_in_n():
    rows = st.run_study(paper_slice(10), [0.05], [1.0, 2.0, 3.0])  # n = 4, 8, 12
    check_monotone(rows, [0.05], 10 * 784 + 100)


@pytest.mark.slow
def test_fraction_within_is_non_decreasing_in_n_two_epsilons():
    rows = st.run_study(paper_slice(40), [0.1, 0.03], [0.5, 1.0, 1.5, 2.0, 3.0])
    check_monotone(rows, [0.1, 0.03], 40 * 784 + 400)


def test_c3_representative_paper_slice():
    # The default grid's c = 3 claim, fast: eps = 0.01 (n = 21) on 100 hidden units.
    (row,) = st.run_study(paper_slice(100), [0.01], [3.0])
    assert row["n"] == 21 and row["fraction_within"] >= 0.9999


@pytest.mark.slow
def test_c3_every_default_eps_on_the_paper_target():
    state, _ = load_weights(resolve_weights("paper-fc2"))
    rows = st.run_study(state, st.DEFAULT_EPSILONS, [3.0])
    assert len(rows) == len(st.DEFAULT_EPSILONS)
    for r in rows:
        assert r["fraction_within"] >= 0.9999, r


def test_cli_study_writes_table_figure_and_resumes(tmp_path, capsys):
    path = tmp_path / "t.npz"
    rng = np.random.default_rng(0)
    save_weights(
        path,
        "fc2",
        {
            "fc1.weight": rng.normal(0, 0.05, (6, 784)).astype(np.float32),
            "fc2.weight": rng.normal(0, 0.2, (10, 6)).astype(np.float32),
        },
        {"inputs": "unit"},
    )
    out = tmp_path / "study"
    args = ["study", "--target", str(path), "--no-evaluate", "--no-progress", "--out", str(out)]
    assert run_cli([*args, "--epsilon", "0.1", "--c", "1,2,...,3"]) == 0
    res = json.loads((out / "study.json").read_text())
    assert [(r["epsilon"], r["c"]) for r in res["rows"]][:3] == [(0.1, 1.0), (0.1, 2.0), (0.1, 3.0)]
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "study.csv").read_text().splitlines()[0].startswith("epsilon,n,c,")
    capsys.readouterr()
    # Same study again: every cell is read back, none recomputed.
    assert run_cli([*args, "--epsilon", "0.1", "--c", "1,2,...,3"]) == 0
    again = json.loads((out / "study.json").read_text())
    assert again["rows"] == res["rows"]
    capsys.readouterr()
    code = run_cli([*args, "--epsilon", "0.1", "--c", "1,...,3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "'...'" in err and "\n" not in err
