"""The Python API (``import lottery_jax as lj``) and the installed layout."""

from __future__ import annotations

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
    path = r2.save(tmp_path / "ticket.npz")
    t = lj.load_ticket(path)
    assert t.kind == "subsetsum"
    assert lj.verify_ticket(path).exit_code == 0


def test_custom_sizes_supermask_and_both_ticket_kinds(tmp_path):
    import jax.numpy as jnp

    from lottery_jax.data import Dataset
    from lottery_jax.pruning import ticket

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
    net = lj.member_net(batch, 0)
    path = ticket.save_ticket(tmp_path / "t.npz", ticket.make_ticket(net, cfg, 0, 0.5))
    t = lj.load_ticket(path)
    assert t.kind == "supermask"
    rebuilt = ticket.net_from_ticket(ticket.load_ticket(path))
    acc = ticket.net_accuracy(rebuilt, data.test_images, data.test_labels)
    assert acc == hist["test_accuracy"][0][-1]
    with pytest.raises(lj.UserError, match="needs layer sizes"):
        lj.PruneConfig(model="wide")


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
    assert (tmp_path / "kernel-ticket.npz").is_file()
