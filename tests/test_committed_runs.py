"""The committed Experiment 2 numbers are those of this code: rerunning a committed run's recorded
configuration gives its final accuracy and its per-epoch losses again, to the last digit (CPU runs
are deterministic; ``benchmarks/exp2_panel.py`` wrote these runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lottery_jax.cli import main

RUNS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "runs"

#: One committed one-epoch run per FC2 variant (seconds each on a CPU).
COMMITTED = [
    "fc2_e1/red-fc2-r5-linear-e1-s0.5-seed0",
    "fc2_e1/red-fc2-r5-relu-e1-s0.9-seed0",
    "fc2_e1/wide-fc2-r5-e1-s0.99-seed0",
]


def _argv(config: dict) -> list[str]:
    """The ``prune`` command line of a recorded configuration."""
    argv = ["prune", "--model", config["model"], "--sparsity", repr(config["sparsity"]),
            "--seed", str(config["seed"]), "--epochs", str(config["epochs"]),
            "--lr", repr(config["lr"]), "--batch-size", str(config["batch_size"]),
            "--redundancy", str(config["redundancy"]), "--mask-method", config["method"],
            "--no-progress"]  # fmt: skip
    return [*argv, "--relu" if config["relu"] else "--no-relu"]


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("run", COMMITTED)
def test_a_committed_run_reproduces(run, mnist_dir, tmp_path):
    committed = json.loads((RUNS / run / "results.json").read_text())
    config = committed["config"]
    assert config["data"].startswith("idx:") and config["inputs"] == "normalized"
    # The recorded optimiser settings are the defaults prune uses (so the command line is whole).
    assert (config["momentum"], config["weight_decay"], config["conv_from"]) == (0.9, 5e-4, None)
    out = tmp_path / "again"
    assert main([*_argv(config), "--data-dir", str(mnist_dir), "--out", str(out)]) == 0
    (again_path,) = out.rglob("results.json")
    again = json.loads(again_path.read_text())
    assert again_path.parent.name == committed["name"]
    assert {**again["config"], "data": None} == {**config, "data": None}
    assert again["remaining_params"] == committed["remaining_params"]
    assert again["train_loss"] == committed["train_loss"]
    assert again["test_accuracy"] == committed["test_accuracy"]
