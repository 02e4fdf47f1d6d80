"""The study's construct axis (`study --construct`): one `construct` per R on a tiny target."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_block_data
from helpers import assert_one_line_error, run_cli

from lottery_jax.checkpoint import save_weights
from lottery_jax.errors import UserError
from lottery_jax.subsetsum import construct_study as cst


def tiny_target(path):
    """A 784-6-10 FC2 target without biases (unit inputs)."""
    rng = np.random.default_rng(0)
    state = {
        "fc1.weight": rng.normal(0, 0.05, (6, 784)).astype(np.float32),
        "fc2.weight": rng.normal(0, 0.2, (10, 6)).astype(np.float32),
    }
    return save_weights(path, "fc2", state, {"inputs": "unit"})


# Slow (about 20 s); the default run keeps test_cli_construct_axis_writes_and_resumes.
@pytest.mark.slow
def test_rows_per_r_with_edge_popup_where_asked(tmp_path):
    spec = cst.ConstructStudySpec(
        tmp_path / "s", (3, 12), epsilon=0.02, target=str(tiny_target(tmp_path / "t.npz")),
        init="uniform", compare_epochs=1, compare_at=(3,),
    )  # fmt: skip
    out = cst.construct_study(spec, data=tiny_block_data(64, 40))
    rows = out.rows
    assert [r["redundancy"] for r in rows] == [3, 12]
    assert rows[0]["within_epsilon_fraction"] < rows[1]["within_epsilon_fraction"]
    assert rows[1]["within_epsilon_fraction"] > 0.99
    assert all(r["target_accuracy"] is not None and r["ticket_accuracy"] is not None for r in rows)
    # edge-popup at R = 3 only, at exactly the solved ticket's size
    assert rows[0]["edge_popup_epochs"] == 1 and rows[0]["edge_popup_accuracy"] is not None
    assert rows[0]["edge_popup_remaining_params"] == rows[0]["remaining_params"]
    assert rows[1]["edge_popup_epochs"] == 0 and rows[1]["edge_popup_accuracy"] is None
    assert (tmp_path / "s" / "construct-r3-edge-popup1" / "edge-popup-ticket.npz").exists()
    csv = (tmp_path / "s" / "study.csv").read_text().splitlines()
    assert csv[0].split(",") == list(cst.CSV_COLUMNS) and len(csv) == 3
    assert (tmp_path / "s" / "study.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_construct_axis_writes_and_resumes(tmp_path, capsys):
    target = tiny_target(tmp_path / "t.npz")
    out = tmp_path / "s"
    args = ["study", "--construct", "--target", target, "--redundancy", "4,8", "--epsilon",
            "0.02", "--init", "uniform", "--no-evaluate", "--no-progress", "--out", out]  # fmt: skip
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "accuracies not measured" in text
    res = json.loads((out / "study.json").read_text())
    assert [r["redundancy"] for r in res["rows"]] == [4, 8]
    assert res["rows"][0]["ticket_accuracy"] is None
    code, text, err = run_cli(capsys, *args)  # every point read back
    assert code == 0, err
    assert json.loads((out / "study.json").read_text())["rows"] == res["rows"]


def test_cli_construct_axis_bad_input(tmp_path, capsys):
    target = tiny_target(tmp_path / "t.npz")
    base = ["study", "--construct", "--target", target, "--no-evaluate", "--out", tmp_path / "o"]
    code, _, err = run_cli(capsys, *base, "--epsilon", "0.1,0.01")
    assert_one_line_error(code, err, "one --epsilon")
    code, _, err = run_cli(capsys, *base, "--redundancy", "0")
    assert_one_line_error(code, err, "--redundancy")
    code, _, err = run_cli(capsys, *base, "--redundancy", "5", "--compare-at", "6")
    assert_one_line_error(code, err, "--compare-at")
    code, _, err = run_cli(capsys, *base, "--redundancy", "5", "--compare-epochs", "1")
    assert_one_line_error(code, err, "no-evaluate")
    code, _, err = run_cli(capsys, *base, "--redundancy", "5000", "--max-hours", "1e-6")
    assert_one_line_error(code, err, "budget")
    code, _, err = run_cli(capsys, "study", "--compare-epochs", "1", "--out", tmp_path / "o2")
    assert_one_line_error(code, err, "--construct")
    with pytest.raises(UserError, match="at least one"):
        cst.ConstructStudySpec(tmp_path, ())
