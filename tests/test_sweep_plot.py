"""Sweeps into a results directory (resume), and the figure from a tiny grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_block_data
from lottery_jax.cli import main

from lottery_jax import pruning
from lottery_jax.checkpoint import load_weights
from lottery_jax.data import Dataset
from lottery_jax.errors import UserError
from lottery_jax.plotting import classify, figure_data, mean_std_by_params, plot_results
from lottery_jax.pruning import batched, sweep


def tiny_data(n_train: int = 64, n_test: int = 40, seed: int = 0) -> Dataset:
    return tiny_block_data(n_train, n_test, seed)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    data = tiny_data()
    base = pruning.PruneConfig(model="red-lenet5")
    logged = []
    counts = sweep.run_sweep(
        "lenet5", epochs=[1], sparsities=[0.5, 0.9], variants=["red-linear", "wide"], seeds=[0],
        data=data, out=out, base=base, log=logged.append,
    )  # fmt: skip
    counts["log"] = logged
    return out, data, base, counts


def test_sweep_writes_every_run_and_a_baseline(tiny_sweep):
    out, _, _, counts = tiny_sweep
    assert counts["runs"] == 4 and counts["baselines"] == 1
    # Each finished run is reported with its accuracy and size.
    done = [m for m in counts["log"] if "% with " in m]
    assert len(done) == 4 and all("parameters" in m for m in done)
    names = sorted(p.parent.name for p in out.rglob("results.json"))
    assert names == [
        "baseline-lenet5-e1-seed0",
        "red-lenet5-r5-linear-e1-s0.5-seed0",
        "red-lenet5-r5-linear-e1-s0.9-seed0",
        "wide-lenet5-r5-e1-s0.5-seed0",
        "wide-lenet5-r5-e1-s0.9-seed0",
    ]
    r = json.loads((out / "wide-lenet5-r5-e1-s0.9-seed0" / "results.json").read_text())
    for key in ("config", "total_params", "remaining_params", "test_accuracy",
                "final_test_accuracy", "epoch_seconds", "compile_seconds", "seed", "device"):  # fmt: skip
        assert key in r
    assert r["config"]["conv_from"] == "baseline"
    # The LeNet5 variants share the baseline's conv weights.
    baseline_state = np.load(out / "baseline-lenet5-e1-seed0" / "model.npz")
    ticket = pruning.load_ticket(out / "red-lenet5-r5-linear-e1-s0.5-seed0" / "ticket.npz")
    np.testing.assert_array_equal(ticket["conv"]["conv1.weight"], baseline_state["conv1.weight"])
    # The baseline is a training run directory like train's, and its weight file names its inputs.
    _, meta = load_weights(out / "baseline-lenet5-e1-seed0" / "model.npz")
    assert meta["inputs"] == "normalized" and meta["model"] == "lenet5"
    base_res = json.loads((out / "baseline-lenet5-e1-seed0" / "results.json").read_text())
    assert base_res["command"] == "train" and base_res["epochs_done"] == 1


def test_sweep_resumes_without_retraining(tiny_sweep, monkeypatch):
    out, data, base, _ = tiny_sweep

    def boom(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(batched, "train_batch", boom)
    monkeypatch.setattr("lottery_jax.training.fit", boom)
    counts = sweep.run_sweep(
        "lenet5", epochs=[1], sparsities=[0.9, 0.5], variants=["wide", "red-linear"], seeds=[0],
        data=data, out=out, base=base,
    )  # fmt: skip
    assert counts["runs"] == 4  # all four finished: nothing trained


def test_sweep_runs_only_missing_members(tiny_sweep, monkeypatch):
    out, data, base, _ = tiny_sweep
    seen = []
    real = pruning.make_batch

    def spy(cfg, members, **kw):
        seen.append(list(members))
        return real(cfg, members, **kw)

    monkeypatch.setattr(batched, "make_batch", spy)
    sweep.run_sweep(
        "lenet5", epochs=[1], sparsities=[0.5, 0.75], variants=["wide"], seeds=[0], data=data,
        out=out, base=base,
    )  # fmt: skip
    assert seen == [[(0, 0.75)]]


def test_plot_from_the_tiny_sweep(tiny_sweep, tmp_path):
    out, *_ = tiny_sweep
    results = sweep.collect_results(out)
    data = figure_data(results)
    curves = data["lenet5"][1]
    assert set(curves) == {"redundant-linear", "wide", "baseline"}
    assert [p[0] for p in curves["wide"]] == sorted(p[0] for p in curves["wide"])
    assert {p[3] for p in curves["wide"]} >= {0.5, 0.9}  # the sparsity travels with each point
    paths = plot_results(results, tmp_path)
    assert sorted(p.name for p in paths) == ["pruning-lenet5.pdf", "pruning-lenet5.png"]
    for p in paths:
        assert p.stat().st_size > 1000
    assert (tmp_path / "pruning-lenet5.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "pruning-lenet5.pdf").read_bytes()[:4] == b"%PDF"


def test_plot_cli(tiny_sweep, tmp_path, capsys):
    out, *_ = tiny_sweep
    assert main(["plot", str(out), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "pruning-lenet5.pdf").is_file()
    # The published figures' linear axis; an unknown scale is one line and nothing written.
    assert main(["plot", str(out), "--xscale", "linear", "--out", str(tmp_path / "l.png")]) == 0
    with pytest.raises(SystemExit) as e:
        main(["plot", str(out), "--xscale", "cubic", "--out", str(tmp_path / "c.png")])
    assert e.value.code == 2 and not (tmp_path / "c.png").exists()
    assert "unknown x scale 'cubic'" in capsys.readouterr().err


def test_plot_empty_dir_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["plot", str(tmp_path)])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: no pruning")


def test_classify():
    acc = {"final_test_accuracy": 90.0}
    assert classify({"command": "prune", "config": {"model": "red-fc2", "relu": True,
                                                    "epochs": 30}, **acc}) == ("fc2", "redundant-ReLU", 30)  # fmt: skip
    assert classify({"command": "train", "config": {"model": "fc4", "epochs": 50}, **acc}) == (
        "fc4", "baseline", 50
    )  # fmt: skip
    assert classify({"command": "evaluate", "config": {}, **acc}) is None
    # Not part of a sweep's figure: no accuracy, custom sizes, approximate/study records.
    assert classify({"command": "prune", "config": {"model": "red-fc2", "epochs": 3}}) is None
    custom = {"model": "red", "sizes": [784, 32, 10], "epochs": 3}
    assert classify({"command": "prune", "config": custom, **acc}) is None
    assert (
        classify({"command": "approximate", "config": {"model": "fc2", "epochs": 1}, **acc}) is None
    )


def test_plot_filters_mean_std_and_labels(tmp_path, capsys):
    import json

    def rec(model, relu, e, s, seed, acc):
        return {"command": "prune", "config": {"model": model, "relu": relu, "epochs": e},
                "remaining_params": 1000 - int(1000 * s), "final_test_accuracy": acc,
                "seed": seed, "sparsity": s}  # fmt: skip

    results = [rec("red-fc2", False, 30, 0.5, seed, 90.0 + 2 * seed) for seed in (0, 1, 2)]
    results += [rec("wide-fc2", False, 30, 0.5, 0, 80.0), rec("red-fc2", False, 50, 0.5, 0, 95.0)]
    results.append({"command": "train", "config": {"model": "fc2", "epochs": 30},
                    "trainable_params": 397_000, "final_test_accuracy": 98.5})  # fmt: skip
    data = figure_data(results, epochs=[30], variants=["red-linear", "baseline"])
    assert sorted(data["fc2"]) == [30]
    assert set(data["fc2"][30]) == {"redundant-linear", "baseline"}
    (row,) = mean_std_by_params(data["fc2"][30]["redundant-linear"])
    assert row[:2] == (500, 92.0) and row[2] == pytest.approx(np.std([90.0, 92.0, 94.0]))
    assert row[3:] == (3, 0.5)
    with pytest.raises(UserError, match="unknown variant"):
        figure_data(results, variants=["deep"])
    for i, r in enumerate(results):  # the same through the CLI, from a directory of records
        (tmp_path / "runs" / str(i)).mkdir(parents=True)
        (tmp_path / "runs" / str(i) / "results.json").write_text(json.dumps(r))
    args = ["plot", str(tmp_path / "runs"), "--out", str(tmp_path / "fig"), "--epochs", "50",
            "--variant", "wide"]  # fmt: skip
    with pytest.raises(SystemExit) as e:  # no wide run at 50 epochs
        main(args)
    assert e.value.code == 2 and "after the filters" in capsys.readouterr().err
    assert main([*args[:-1], "red-linear", "--model", "fc2"]) == 0
    assert (tmp_path / "fig" / "pruning-fc2.png").is_file()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--family", "fc3"], "'fc3' is not one of 'fc2'"),
        (["--sparsity", "1"], "sparsity"),
        (["--variants", "deep"], "unknown variant"),
        (["--redundancy", "0"], "redundancy"),
        (["--epochs", "0"], "epochs"),
    ],
)
def test_sweep_bad_input(args, match, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lottery_jax.cli.prune.load_dataset", lambda *a, **k: tiny_data(8, 8))
    with pytest.raises(SystemExit) as e:
        main(["sweep", *args, "--out", str(tmp_path), "--no-baseline"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and match in err[0]


def test_plot_all_curves_and_budgets_from_synthetic_results(tmp_path):
    results = []
    for e in (30, 50):
        for model, relu in (("red-fc2", False), ("red-fc2", True), ("wide-fc2", False)):
            for s in pruning.PUBLISHED_SPARSITIES:
                results.append({
                    "command": "prune", "config": {"model": model, "relu": relu, "epochs": e},
                    "remaining_params": 1_991_420 - int(1_991_420 * s),
                    "final_test_accuracy": 98.0 - 10 * s, "seed": 0,
                })  # fmt: skip
        results.append({"command": "train", "config": {"model": "fc2", "epochs": e},
                        "trainable_params": 397_000, "final_test_accuracy": 98.5})  # fmt: skip
    data = figure_data(results)
    assert sorted(data["fc2"]) == [30, 50]
    assert set(data["fc2"][30]) == {"redundant-linear", "redundant-ReLU", "wide", "baseline"}
    paths = plot_results(results, tmp_path, title="synthetic")
    assert {p.suffix for p in paths} == {".png", ".pdf"}


def test_interrupted_prune_resumes_exactly(tmp_path):
    data = tiny_data()
    cfg = pruning.PruneConfig(model="wide-lenet5", epochs=2)
    full = sweep.run_prune(cfg, [0], [0.5], data, tmp_path / "full")

    def stop_after_first(epoch, accs, seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.run_prune(cfg, [0], [0.5], data, tmp_path / "cut", on_epoch=stop_after_first)
    assert not list((tmp_path / "cut").rglob("results.json"))
    assert len(list((tmp_path / "cut" / ".partial").glob("*.npz"))) == 1
    logs = []
    resumed = sweep.run_prune(cfg, [0], [0.5], data, tmp_path / "cut", log=logs.append)
    assert any("resuming after epoch 1" in m for m in logs)
    assert not any("% with " in m for m in logs)  # (prune returns the records: printed once)
    assert resumed[0]["test_accuracy"] == full[0]["test_accuracy"]
    assert resumed[0]["final_test_accuracy"] == full[0]["final_test_accuracy"]
    a = pruning.load_ticket(tmp_path / "full" / full[0]["name"] / "ticket.npz")["masks"]
    b = pruning.load_ticket(tmp_path / "cut" / full[0]["name"] / "ticket.npz")["masks"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not list((tmp_path / "cut" / ".partial").glob("*.npz"))
