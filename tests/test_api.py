"""The Python API (``import lottery_jax as lj``) and the installed layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lottery_jax as lj


def test_version_and_exports():
    assert lj.__version__ and lj.__version__[0].isdigit()
    for name in lj.__all__:
        assert getattr(lj, name) is not None, name
    with pytest.raises(AttributeError):
        lj.no_such_thing  # noqa: B018


def test_import_changes_no_global_state(tmp_path):
    # A fresh interpreter: umask, matplotlib's backend and the root/absl log levels are the same
    # before and after importing the library and its command line.
    code = r"""
import logging, os, sys
os.umask(0o027)
before = (os.umask(0o027), logging.getLogger().level)
import lottery_jax, lottery_jax.cli, lottery_jax.plotting, lottery_jax.data  # noqa
from lottery_jax.pruning import sweep  # noqa
after = (os.umask(0o027), logging.getLogger().level)
assert before == after, (before, after)
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported (it picks a global backend)"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_is_not_a_top_level_module(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "import cli"], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode != 0 and "No module named 'cli'" in out.stderr
    out = subprocess.run(
        [sys.executable, "-c", "import lottery_jax.cli as c; print(c.__name__)"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "lottery_jax.cli"


def test_approximate_any_shape_and_mapping(tmp_path):
    w = np.random.default_rng(0).uniform(-0.5, 0.5, (64, 3, 5, 5))
    r = lj.approximate(w, epsilon=0.01)
    assert r.report["all_within_epsilon"]
    assert r.weights.shape == w.shape and np.max(np.abs(r.weights - w)) <= 0.01
    weights = {"0.weight": w[:4, 0, 0, :].copy(), "head.bias": np.array([0.1, -0.2, 0.3])}
    r2 = lj.approximate(weights, epsilon=0.01, seed=1)
    assert set(r2.weights) == set(weights)
    for k, v in weights.items():
        assert r2.weights[k].shape == v.shape
        assert np.max(np.abs(r2.weights[k] - v)) <= 0.01
    path = lj.save_ticket(tmp_path / "ticket.npz", r2)
    t = lj.load_ticket(path)
    assert t.kind == "subsetsum" and t.meta["seed"] == 1 and t.meta["layers"] == list(weights)
    for k, v in weights.items():  # the ticket holds the target and one subset per weight
        np.testing.assert_array_equal(t.arrays[f"{k}.target"], v)
        assert t.arrays[f"{k}.subsets"].shape[:-1] == v.shape
    assert lj.verify_ticket(path).exit_code == 0
    assert r.report["scip"] == {} and r.report["scip_seconds"] == 0.0  # exact tier only


def test_approximate_callbacks_and_scip_report():
    """Progress in order (on_layer, then on_chunk up to the rows, then on_scip from 0 to the
    total) and the SCIP report: n = 8 coefficients in [0.5, 1) and the exact tier capped at 4,
    so 0.2 and 0.3 (no subset within eps, inside the bound) need SCIP, and with prove=True the
    feasible 0.0 (the empty subset) goes to SCIP too."""
    w = np.array([0.0, 0.2, 0.3])
    events = []
    r = lj.approximate(
        w, epsilon=0.05, c=2.0, max_enum_n=4, coef_range=(0.5, 1.0), scip_time_limit=5.0,
        prove=True, on_layer=lambda *a: events.append(("layer", *a)),
        on_chunk=lambda *a: events.append(("chunk", *a)),
        on_scip=lambda p: events.append(("scip", p.layer, p.done, p.total, p.resumed)),
    )  # fmt: skip
    kinds = [e[0] for e in events]
    assert kinds == sorted(kinds, key=["layer", "chunk", "scip"].index), kinds
    assert events[0] == ("layer", "weight", 3)
    chunks = [e for e in events if e[0] == "chunk"]
    assert chunks and chunks[-1] == ("chunk", "weight", 3)
    scip = [e for e in events if e[0] == "scip"]
    assert scip == [("scip", "weight", done, 3, 0) for done in range(4)]
    rep = r.report["scip"]["weight"]
    assert rep["instances"] == 3 and rep["resumed"] == 0 and rep["workers"] == 1
    assert rep["time_limit"] == 5.0 and rep["seconds"] > 0
    assert rep["statuses"] == {"optimal": 1, "feasible": 0, "infeasible": 2, "unknown": 0}
    assert r.report["scip_seconds"] == rep["seconds"]
    assert r.report["status_counts"]["optimal-scip"] == 1
    assert r.report["status_counts"]["infeasible"] == 2


def test_custom_sizes_supermask_and_both_ticket_kinds(tmp_path):
    import jax.numpy as jnp

    from lottery_jax.data import Dataset

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(128, 28, 28, 1)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, 128).astype(np.int32))
    data = Dataset(x, y, x[:32], y[:32], "toy")
    cfg = lj.PruneConfig(model="red", sizes=(784, 16, 10), redundancy=3, epochs=1)
    batch = lj.make_batch(cfg, [(0, 0.5), (0, 0.9)])
    chunks = []
    hist = lj.train_batch(batch, data, on_chunk=lambda *a: chunks.append(a))
    assert len(hist["test_accuracy"]) == 2 and chunks
    total, remaining = batch.totals[0]
    assert total == 3 * 784 + 16 * 784 * 3 + 3 * 16 + 10 * 16 * 3
    assert remaining == sum(n - int(0.5 * n) for n in (3 * 784, 16 * 784 * 3, 3 * 16, 10 * 16 * 3))
    made = lj.member_ticket(batch, 1)
    assert (made.seed, made.sparsity, made.config) == (0, 0.9, cfg.as_dict())
    path = lj.save_ticket(tmp_path / "t.npz", made)
    assert lj.load_ticket(path).kind == "supermask"
    loaded = lj.load_supermask_ticket(path)
    assert isinstance(loaded, lj.SupermaskTicket)
    assert (loaded.seed, loaded.sparsity) == (made.seed, made.sparsity)
    assert loaded.config == json.loads(json.dumps(made.config))  # (JSON: tuples become lists)
    assert set(loaded.masks) == set(made.masks)
    for k, m in made.masks.items():
        np.testing.assert_array_equal(loaded.masks[k], m)
    rebuilt = lj.net_from_ticket(loaded)
    acc = lj.evaluate(rebuilt, data.test_images, data.test_labels)
    assert acc == hist["test_accuracy"][1][-1]
    with pytest.raises(lj.UserError, match="not a supermask ticket"):
        lj.load_supermask_ticket(
            lj.save_ticket(tmp_path / "s.npz", lj.approximate([0.1], epsilon=0.1))
        )
    with pytest.raises(lj.UserError, match="is no ticket"):
        lj.save_ticket(tmp_path / "x.npz", {"masks": {}})
    with pytest.raises(lj.UserError, match="member 2 is not in the batch"):
        lj.member_ticket(batch, 2)
    with pytest.raises(lj.UserError, match="needs layer sizes"):
        lj.PruneConfig(model="wide")


# Slow (about 20 s); the default run keeps test_custom_sizes_supermask_and_both_ticket_kinds.
@pytest.mark.slow
def test_example_script_runs(tmp_path, mnist_dir):
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LOTTERY_JAX_DATA": str(mnist_dir)}
    out = subprocess.run(
        [sys.executable, str(repo / "examples" / "api_tour.py"), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "all within eps: True" in out.stdout
    assert "a subsetsum ticket" in out.stdout and "a supermask ticket" in out.stdout
    assert f"writing the tickets to {tmp_path}" in out.stdout
    assert (tmp_path / "kernel-ticket.npz").is_file()
    assert (tmp_path / "supermask-ticket.npz").is_file()
