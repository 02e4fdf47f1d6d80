"""``benchmarks/reproduce_runs.py``: a rerun is 'identical' only when every recorded number and
every ticket array equals the committed run's; any difference, or a run not committed, fails."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_runs.py"


def _module():
    spec = importlib.util.spec_from_file_location("reproduce_runs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(root: Path, name: str, acc=(50.0, 60.0), mask=(1, 0, 1), ticket=True, seconds=(1.0, 2.0)):
    d = root / name
    d.mkdir(parents=True)
    record = {"test_accuracy": list(acc), "train_loss": [0.5, 0.4], "final_test_accuracy": acc[-1],
              "remaining_params": 2, "epoch_seconds": list(seconds)}  # fmt: skip
    (d / "results.json").write_text(json.dumps(record))
    if ticket:
        meta = json.dumps({"seconds": sum(seconds)})
        np.savez(d / "ticket.npz", __meta__=np.array(meta), **{"mask:fc1.weight": np.array(mask)})


def test_identical_reruns_pass_and_every_difference_is_named(tmp_path):
    mod = _module()
    old, new = tmp_path / "committed", tmp_path / "rerun"
    _run(old, "a")
    _run(new, "a", seconds=(9.0, 9.0))  # (timings differ; they are not results)
    _run(old, "b")
    _run(new, "b", acc=(50.0, 60.01))
    _run(old, "c")
    _run(new, "c", mask=(1, 1, 1))
    _run(old, "d", ticket=False)  # (only results.json committed)
    _run(new, "d")
    _run(new, "e")  # (not committed)
    _run(old, "f")
    _run(new, "f")
    (new / "f" / "ticket.npz").write_bytes(b"not a zip")
    _run(old, "g")
    _run(new, "g")
    (new / "g" / "results.json").write_text("{truncated")
    report = mod.compare(new, old)
    got = {r["run"]: (r["identical"], r["why"]) for r in report["runs"]}
    assert got["a"] == (True, "")
    assert got["b"] == (False, "test_accuracy, final_test_accuracy")
    assert got["c"] == (False, "ticket.npz different")
    assert got["d"] == (True, "ticket.npz not committed")
    assert got["e"] == (False, "not committed")
    assert got["f"] == (False, "ticket.npz unreadable")
    assert got["g"] == (False, "unreadable results.json")
    assert report["finished"] == 7 and report["identical"] == 2
    assert report["runs"][0]["seconds_per_epoch"] == 9.0
