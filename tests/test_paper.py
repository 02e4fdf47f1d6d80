"""The paper's networks built in, and the small things a new user meets first (--version, --help)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli as cli

from lottery_jax import checkpoint, paper
from lottery_jax.errors import UserError
from lottery_jax.nets.targets import build_model, infer_model, network_for, torch_state


def test_builtin_networks_carry_their_origin():
    for name, model in paper.MODELS.items():
        state, meta = checkpoint.load_weights(paper.paper_weights(name))
        assert meta["model"] == model and infer_model(state)[0] == model
        assert meta["licence"] == "Apache-2.0"
        assert meta["source"] == "https://github.com/acnagle/optimal-lottery-tickets"
        assert meta["published_test_accuracy"] == paper.PUBLISHED_ACCURACY[name]
        assert all(v.dtype == np.float32 for v in state.values())
    assert checkpoint.load_weights(paper.paper_weights("paper-fc2"))[1]["inputs"] == "unit"
    assert checkpoint.load_weights(paper.paper_weights("paper-lenet5"))[1]["inputs"] == "normalized"
    state, _ = checkpoint.load_weights(paper.paper_weights("paper-fc2"))
    lo = min(float(v.min()) for v in state.values())
    hi = max(float(v.max()) for v in state.values())
    assert (lo, hi) == (np.float32(-0.46423155), np.float32(0.54070216))  # the published range
    folder = paper.paper_weights("paper-fc2").parent
    notice = (folder / "NOTICE").read_text()
    assert "Apache License, Version 2.0" in notice and "acnagle/optimal-lottery-tickets" in notice
    assert "Apache License" in (folder / "LICENSE").read_text()


def test_resolve_weights():
    assert paper.resolve_weights("paper-lenet5").name == "lenet5_e50_h500.npz"
    assert str(paper.resolve_weights("runs/x/model.npz")) == "runs/x/model.npz"
    with pytest.raises(UserError, match="unknown built-in network 'paper-fc4'"):
        paper.paper_weights("paper-fc4")


@pytest.mark.parametrize(
    ("model", "hidden"), [("fc2", 8), ("fc4", 6), ("lenet5", 12), ("fc2", 500)]
)
def test_infer_model_from_shapes(model, hidden):
    state = torch_state(build_model(model, seed=0, hidden=hidden))
    assert infer_model(state)[0] == model


def test_infer_model_refuses_what_fits_nothing():
    # (The one infer_model: a state that fits no network is refused, by its layer count or,
    # once the network is built, by its shapes.)
    state = torch_state(build_model("fc2", seed=0, hidden=8))
    with pytest.raises(UserError):
        network_for({**state, "fc2.weight": np.zeros((9, 8), np.float32)})
    with pytest.raises(UserError, match="fit no layer"):
        infer_model({**state, "extra": np.zeros(1)})
    fc4 = torch_state(build_model("fc4", seed=0, hidden=8))
    del fc4["fc3.weight"]
    with pytest.raises(UserError, match="fit none"):
        infer_model(fc4)


def test_evaluate_without_metadata_infers_the_model(capsys, tmp_path, tiny_idx_dir):
    state = torch_state(build_model("fc4", seed=0, hidden=8))
    path = tmp_path / "bare.npz"
    np.savez(path, **state)  # no __meta__
    code, out, err = cli(
        capsys, "evaluate", "--weights", path, "--data-dir", tiny_idx_dir, "--out", tmp_path / "o"
    )
    assert code == 0, err
    assert "(fc4, normalized inputs)" in out
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{"fc1.weight": np.zeros((3, 5), np.float32)})
    code, _, err = cli(capsys, "evaluate", "--weights", bad, "--data-dir", tiny_idx_dir)
    assert code == 2 and "fit none of fc2, fc4, lenet5; pass --model" in err


@pytest.mark.parametrize(("name", "inputs", "want"), [
    ("paper-fc2", "unit", "97.19%"),
    ("paper-lenet5", None, "98.44%"),
])  # fmt: skip
def test_evaluate_builtin_networks_give_the_published_accuracy(
    capsys, tmp_path, mnist_dir, name, inputs, want
):
    extra = ["--inputs", inputs] if inputs else []
    code, out, err = cli(
        capsys, "evaluate", "--weights", name, *extra, "--data-dir", mnist_dir, "--out", tmp_path
    )
    assert code == 0, err
    assert f"test accuracy {want}" in out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["weights_meta"]["name"] == name


def test_version(capsys):
    from importlib.metadata import version

    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"lottery-jax {version('lottery-jax')}"


def test_command_list_has_one_line_per_command(capsys, monkeypatch):
    """No stray line breaks: every row of the Commands panel starts with a command's name."""
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if "Commands" in line and line.startswith("╭"))
    rows = []
    for line in lines[first + 1 :]:
        if line.startswith("╰"):
            break
        rows.append(line)
    names = [row[2:].split()[0] for row in rows]
    assert all(row[2] != " " for row in rows), rows
    assert {"approximate", "prune", "sweep", "export-ticket", "data"} <= set(names)


def test_prune_lenet5_without_conv_from_warns_and_paper_convs_are_used(
    capsys, tmp_path, tiny_idx_dir
):
    from lottery_jax import pruning

    base = ["prune", "--model", "wide-lenet5", "--epochs", "0", "--data-dir", tiny_idx_dir]
    code, _, err = cli(capsys, *base, "--out", tmp_path / "random", "--no-progress")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: wide-lenet5 without --conv-from has random conv layers (the published runs use "
        "the paper's trained LeNet5: --conv-from paper)"
    ]
    code, _, err = cli(
        capsys, *base, "--conv-from", "paper", "--out", tmp_path / "paper", "--no-progress"
    )
    assert code == 0, err
    assert "warning:" not in err
    (ticket,) = (tmp_path / "paper").rglob("ticket.npz")
    t = pruning.load_ticket(ticket)
    state, _ = checkpoint.load_weights(paper.paper_weights("paper-lenet5"))
    for k in ("conv1.weight", "conv2.weight"):
        np.testing.assert_array_equal(np.asarray(t["conv"][k]), state[k])
    assert t["config"]["conv_from"] == "paper-lenet5"
    code, _, err = cli(capsys, "prune", "--model", "red-fc2", "--conv-from", "paper")
    assert code == 2 and "LeNet5 variants only" in err


@pytest.mark.parametrize(("extra", "want"), [
    ([], "paper-lenet5"),
    (["--conv-from", "paper"], "paper-lenet5"),
    (["--conv-from", "baseline"], None),
])  # fmt: skip
def test_sweep_lenet5_takes_the_paper_convs_by_default(
    capsys, monkeypatch, tmp_path, tiny_idx_dir, extra, want
):
    seen = {}

    def fake_run_sweep(family, **kw):
        seen.update(kw, family=family)
        return {"runs": 0, "trained": 0, "baselines": 0}

    monkeypatch.setattr("lottery_jax.cli.prune.sweep.run_sweep", fake_run_sweep)
    code, _, err = cli(
        capsys, "sweep", "--family", "lenet5", "--epochs", "1", "--data-dir", tiny_idx_dir,
        "--out", tmp_path, "--no-progress", *extra,
    )  # fmt: skip
    assert code == 0, err
    assert seen["family"] == "lenet5"
    assert (str(seen["conv_from"]) if seen["conv_from"] else None) == want


@pytest.mark.parametrize(("command", "option", "choices"), [
    ("prune", "--model", "red-fc2|red-fc4|red-lenet5|wide-fc2|wide-fc4|wide-lenet5"),
    ("sweep", "--family", "fc2|fc4|lenet5"),
    ("prune", "--mask-method", "auto|radix|bisect|sort"),
    ("sweep", "--members", "auto|unroll|vmap"),
    ("train", "--dataset", "mnist|fashion_mnist|kmnist"),
])  # fmt: skip
def test_help_lists_the_choices(capsys, monkeypatch, command, option, choices):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    (line,) = [row for row in out.splitlines() if row.split()[1:2] == [option]]
    assert f"(one of {choices.replace('|', ', ')})" in line  # (the metavar is NAME)


def test_command_descriptions_have_no_hard_line_breaks(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = cli(capsys, "approximate", "--help")
    assert code == 0
    (line,) = [row for row in out.splitlines() if "Writes results.json" in row]
    assert "resumes from the finished chunks." in line  # the whole paragraph on one line
