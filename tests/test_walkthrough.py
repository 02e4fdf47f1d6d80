"""A user's first session at 80 columns: defaults that never block the next experiment, every
command naming its output, nothing cut in a table; and the message fixes one by one.

The walk-through runs the commands in one fresh process with ``COLUMNS=80`` in an empty working
directory (the default ``runs/`` folders land there), on a small synthetic dataset: the quickstart,
a second ``approximate`` with another epsilon (and the quickstart again: it resumes), ``train``
twice with other epochs, ``prune``, ``plot``, ``verify`` and ``study``. Later steps use the folders
earlier ones printed, as a user copying them would.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx_dir
from helpers import run_cli
from rich.console import Console

ELLIPSIS = "…"
#: A folder a command printed: the first ``runs/...`` path of its output.
PRINTED = re.compile(r"runs/[A-Za-z0-9._/-]*[A-Za-z0-9_-]")

#: Runs in the subprocess: ``argv`` lists of the steps (JSON) -> one JSON record per step.
#: ``{dir:N}`` in an argument is the folder step N printed (a file's folder for a file).
DRIVER = r"""
import contextlib, io, json, re, sys
from pathlib import Path
from lottery_jax.cli import main

printed, records = [], []
for argv in json.loads(sys.argv[1]):
    argv = [re.sub(r"\{dir:(\d+)\}", lambda m: printed[int(m.group(1))], a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["lottery-jax", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    text = out.getvalue() + err.getvalue()
    found = re.search(r"runs/[A-Za-z0-9._/-]*[A-Za-z0-9_-]", text)
    path = Path(found.group(0)) if found else Path("-")
    printed.append(str(path.parent if path.suffix in (".json", ".npz", ".png") else path))
    records.append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue(),
                    "dir": printed[-1]})
print(json.dumps(records))
"""


def small_target(path: Path) -> Path:
    """A 784-16-10 FC2 whose weights every subset-sum setting here fits (so every step exits 0)."""
    from lottery_jax.checkpoint import save_weights
    from lottery_jax.nets.targets import build_model, torch_state

    state = torch_state(build_model("fc2", seed=0, hidden=16))
    state["fc2.weight"] = state["fc2.weight"] * 0.3
    return save_weights(path, "fc2", state, {"hidden": 16, "inputs": "unit"})


def walk(tmp_path: Path, steps: list[list[str]], timeout: int) -> list[dict]:
    """Run ``steps`` in one fresh process at 80 columns in ``tmp_path``; one record per step."""
    data = write_idx_dir(tmp_path / "data")
    env = {**os.environ, "COLUMNS": "80", "LOTTERY_JAX_DATA": str(data),
           "LOTTERY_JAX_CACHE": str(tmp_path / "cache")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(steps)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_walk(
    tmp_path: Path, records: list[dict], also_ok: dict[int, int] | None = None
) -> dict[str, list[dict]]:
    """What every step must show: exit 0 (nothing refused; ``also_ok`` maps a step to another
    status it may end with), no cut cell, tables within 80 columns, and the folder it names
    exists. Returns the records by command."""
    by: dict[str, list[dict]] = {}
    for i, r in enumerate(records):
        text = r["out"] + r["err"]
        assert r["code"] in (0, (also_ok or {}).get(i, 0)), (r["argv"], text)
        assert ELLIPSIS not in text, (r["argv"], text)
        for line in text.splitlines():
            if line[:1] in "┏┃┡│└":
                assert len(line) <= 80, (r["argv"], line)
        assert r["dir"] != "-" and (tmp_path / r["dir"]).is_dir(), (r["argv"], text)
        by.setdefault(r["argv"][0], []).append(r)
    return by


def check_messages(by: dict[str, list[dict]]) -> None:
    """The steps' own messages: distinct folders, the resume line, one line per pruning run,
    the verdict of verify."""
    first, second, again = by["approximate"]
    assert first["dir"] != second["dir"]  # another epsilon: another folder, not refused
    assert again["dir"] == first["dir"]  # the same configuration resumes in its own folder
    assert re.search(r"resumed (\d+) of \1 chunks from an earlier run", again["err"]), again
    assert "chunks resumed / solved now" in again["out"]
    one, two = by["train"]
    assert one["dir"] != two["dir"] and "-e1-" in one["dir"] and "-e2-" in two["dir"]
    assert f"{one['dir']}/model.npz" in one["err"].replace("\n", " ")
    prune = by["prune"][0]
    runs = [line.split(":")[0] for line in prune["out"].splitlines() if "% test" in line]
    assert runs and all((prune["out"] + prune["err"]).count(f"{name}:") == 1 for name in runs)
    assert f"lottery-jax plot {prune['dir']}" in prune["out"]
    assert by["plot"][0]["out"].count("wrote ") == 2
    verdict = by["verify"][0]["out"].strip().splitlines()[-1]
    assert verdict.startswith("verified runs/approximate-") and "it reproduces, and all" in verdict
    assert "study.json" in by["study"][0]["err"]


def test_walkthrough_at_80_columns_small(tmp_path):
    """The walk-through on a small target (784-16-10) and a small pruned network (wide-fc2 at
    r = 1): 25 s of commands on 2 quiet cores, about a minute when they are busy."""
    target = str(small_target(tmp_path / "small.npz"))
    quick = ["approximate", "--target", target, "--epsilon", "0.1", "--no-progress"]
    steps = [
        quick,
        ["approximate", "--target", target, "--epsilon", "0.05", "--no-progress"],
        quick,
        ["train", "--hidden", "16", "--epochs", "1", "--no-progress"],
        ["train", "--hidden", "16", "--epochs", "2", "--no-progress"],
        ["prune", "--model", "wide-fc2", "--redundancy", "1", "--epochs", "1", "--no-progress"],
        ["plot", "{dir:5}"],
        ["verify", "{dir:0}/ticket.npz"],
        ["study", "--target", target, "--epsilon", "0.1", "--c", "1,3", "--no-progress"],
    ]
    records = walk(tmp_path, steps, timeout=300)
    by = check_walk(tmp_path, records)
    check_messages(by)
    assert by["approximate"][0]["dir"].startswith("runs/approximate-small-eps0.1-c3-min-error-")


@pytest.mark.slow
def test_walkthrough_at_80_columns_quickstart(tmp_path):
    """The walk-through as the README has it: the quickstart on the paper's target, the default
    networks (on 256 synthetic training images). About 2 minutes on 2 busy cores."""
    steps = [
        ["approximate", "--epsilon", "0.01"],
        ["approximate", "--epsilon", "0.03"],
        ["approximate", "--epsilon", "0.01"],
        ["train", "--epochs", "1"],
        ["train", "--epochs", "2"],
        ["prune", "--epochs", "1"],
        ["plot", "{dir:5}"],
        ["verify", "{dir:0}/ticket.npz"],
        ["study", "--epsilon", "0.1", "--c", "1,3"],
    ]
    records = walk(tmp_path, steps, timeout=900)
    # (at eps = 0.03 and c = 3 some weights of the paper's target have no subset within eps: the
    # run completes and exits 3, which is an outcome, not a refusal)
    by = check_walk(tmp_path, records, also_ok={1: 3})
    check_messages(by)
    assert by["approximate"][0]["dir"] == "runs/approximate-paper-eps0.01-c3-min-error-seed0"
    assert by["study"][0]["dir"] == "runs/study-paper-seed0"


# --- default folders ----------------------------------------------------------------------------


def test_default_run_dir_is_readable_distinct_and_stable():
    from lottery_jax.rundir import default_run_dir, number_label

    base = {"lr": 0.1, "bias": False}
    assert default_run_dir(["train", "fc2", "e1"], base, base) == Path("runs/train-fc2-e1")
    other = default_run_dir(["train", "fc2", "e1"], {**base, "lr": 0.05}, base)
    assert other.name.startswith("train-fc2-e1-") and len(other.name) == len("train-fc2-e1-") + 8
    assert other == default_run_dir(["train", "fc2", "e1"], {"bias": False, "lr": 0.05}, base)
    assert other != default_run_dir(["train", "fc2", "e1"], {**base, "lr": 0.02}, base)
    assert default_run_dir(["x", "a b/../c", "d"]).name == "x-a_b_.._c-d"  # (never a path)
    assert number_label(0.01) == "0.01" and number_label(-0.0) == "0"
    assert number_label(0.1234561) == "0.1234561" and number_label(1 / 3) == repr(1 / 3)


def test_default_folders_of_each_command_follow_their_settings(tmp_path):
    from lottery_jax.cli import approximate, construct, prune, train

    from lottery_jax import pruning
    from lottery_jax.runs import train_config
    from lottery_jax.subsetsum import ApproxConfig
    from lottery_jax.subsetsum.construct import ConstructConfig

    def approx(**kw):
        return approximate.default_out(ApproxConfig(**kw), None, 10, None, "mnist")

    assert approx() == Path("runs/approximate-paper-eps0.01-c3-min-error-seed0")
    assert approx(epsilon=0.1) == Path("runs/approximate-paper-eps0.1-c3-min-error-seed0")
    assert approx(zero_small=True).name.startswith("approximate-paper-eps0.01-c3-min-error-seed0-")
    assert approx(max_hours=1.0, scip_workers=4) == approx()  # (not part of the results)
    assert approximate.default_out(ApproxConfig(), Path("train"), 3, None, "mnist").name == (
        "approximate-train-e3-eps0.01-c3-min-error-seed0"
    )
    a, b = tmp_path / "a" / "model.npz", tmp_path / "b" / "model.npz"
    for i, path in enumerate((a, b)):
        path.parent.mkdir()
        path.write_bytes(bytes([i]) * 8)
    files = {approximate.default_out(ApproxConfig(), p, 10, None, "mnist") for p in (a, b)}
    assert len(files) == 2  # two files called model.npz: two folders

    def trained(**kw):
        return train.default_out(train_config(**{"model": "fc2", "epochs": 1, **kw}))

    assert trained() == Path("runs/train-fc2-e1-seed0")
    assert trained(epochs=2) == Path("runs/train-fc2-e2-seed0")
    assert trained(hidden=16, seed=3) == Path("runs/train-fc2-h16-e1-seed3")
    assert trained(lr=0.05) != trained() and trained(lr=0.1) == trained()  # (0.1: fc2's default)
    assert trained(data={"data_dir": "/d", "dataset": "mnist"}).name.startswith(
        "train-fc2-e1-seed0-"
    )

    cfg = ConstructConfig(redundancy=21)
    assert construct.default_out(cfg, "paper", None, 0) == Path(
        "runs/construct-paper-r21-eps0.01-normal-seed0"
    )
    relu = ConstructConfig(redundancy=5, epsilon=0.1, relu=True, init="uniform", seed=2)
    assert construct.default_out(relu, "paper-lenet5", None, 0) == Path(
        "runs/construct-paper-lenet5-r5-eps0.1-uniform-relu-seed2"
    )
    assert construct.default_out(cfg, "paper", None, 1) != construct.default_out(
        cfg, "paper", None, 0
    )

    assert prune.default_out(pruning.PruneConfig(model="red-fc2", epochs=3), "mnist") == Path(
        "runs/prune"
    )
    lr = prune.default_out(pruning.PruneConfig(model="red-fc2", lr=0.05), "mnist")
    assert lr.name.startswith("prune-") and lr != Path("runs/prune")


# --- messages -----------------------------------------------------------------------------------


def _render(table) -> str:
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def assert_fits(text: str) -> None:
    assert ELLIPSIS not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80, text


def test_tables_fit_80_columns_with_nothing_cut():
    from lottery_jax.cli import approximate, construct
    from lottery_jax.cli.tables import status_table

    counts = {"optimal-enumeration": 391_983, "optimal-scip": 3, "feasible": 40,
              "infeasible": 17, "unsolved": 2}  # fmt: skip
    rows = [
        {"layer": "fc1.weight", "shape": [500, 784], "tier": "exact", "weights": 392_000,
         "remaining_params": 3_845_576, "relative_size": 9.81, "max_error": 0.000441,
         "status_counts": counts},
        {"layer": "conv2.weight", "shape": [16, 6, 5, 5], "tier": "feasibility k=15",
         "weights": 2_400, "remaining_params": 16_413, "relative_size": 3.28, "max_error": 1.2e-5,
         "status_counts": {k: 0 for k in counts} | {"optimal-enumeration": 2_400}},
    ]  # fmt: skip
    text = _render(approximate.layer_table(rows)) + _render(status_table(rows))
    assert_fits(text)
    for cell in ("3,845,576", "fc1.weight", "conv2.weight", "0.000441", "391,983", "16x6x5x5"):
        assert cell in text
    same = [{"layer": "fc1.weight", "status_counts": {"optimal-enumeration": 5, "feasible": 0}}]
    assert status_table(same) is None  # one status: the summary's counts say it all
    links = [{"layer": "fc1", "sides": ["positive", "negative"], "weights": 392_000,
              "within_epsilon": 391_000, "max_error": 0.21,
              "remaining": {"weight1": 16_464, "weight2": 3_980_601}}]  # fmt: skip
    text = _render(construct.layers_table(links))
    assert_fits(text)
    assert "3,980,601" in text


def test_study_table_fits_80_columns(capsys, monkeypatch):
    from types import SimpleNamespace

    from lottery_jax.cli import study

    monkeypatch.setenv("COLUMNS", "80")
    rows = [{"epsilon": 0.0003, "n": 36, "n_over_log2": 2.57, "fraction_within": 1.0,
             "max_error": 4.41e-05, "relative_size_min_error": 10.15,
             "relative_size_min_count": 0.53, "accuracy_min_error": 97.19}]  # fmt: skip
    const = {"constant": {"level": 0.9999, "constant": 2.57}}
    study.show_study(SimpleNamespace(rows=rows, results=const, out=Path("runs/study-paper-seed0")))
    out = capsys.readouterr().out
    table = "\n".join(line for line in out.splitlines() if line[:1] in "┏┃┡│└")
    assert_fits(table)
    for header in ("eps", "within", "kept/", "min-count", "accuracy"):
        assert header in table
    assert "100.000%" in table and "0.0003" in table


def test_resumed_run_says_so_in_its_table():
    from lottery_jax.cli import approximate

    r = {"epsilon": 0.01, "c": 3.0, "n": 21, "target_accuracy": 97.19, "approx_accuracy": 97.19,
         "target_params": 397_000, "initial_params": 8_337_000, "remaining_params": 3_893_576,
         "relative_size": 9.81, "all_within_epsilon": True, "max_error": 4.4e-4,
         "status_counts": {"optimal-enumeration": 397_000}, "seconds": 3.5,
         "compile_seconds": 0.0, "resumed_chunks": 7, "solved_chunks": 0}  # fmt: skip
    text = _render(approximate.results_table(r))
    assert_fits(text)
    assert re.search(r"chunks resumed / solved now\s+│\s+7 / 0", text), text
    fresh = _render(approximate.results_table({**r, "resumed_chunks": 0, "solved_chunks": 7}))
    assert "chunks resumed" not in fresh


def test_verify_prints_a_verdict(tmp_path, capsys):
    import lottery_jax as lj

    w = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 6))
    path = lj.approximate(w, epsilon=0.01, c=3.0, seed=0).save(tmp_path / "t.npz")
    code, out, _ = run_cli(capsys, "verify", path)
    assert code == 0
    assert out.strip().splitlines()[-1] == (
        f"verified {path}: it reproduces, and all 24 weights are within eps=0.01"
    )
    code, out, _ = run_cli(capsys, "verify", path, "--epsilon", "1e-9")
    verdict = out.strip().splitlines()[-1]
    assert code == 3 and verdict.startswith(f"verified {path}: it reproduces, but ")
    assert "of 24 weights are not within eps=1e-09 (first: " in verdict


def test_saved_accuracy_reads_only_finite_numbers():
    from lottery_jax.cli.prune import saved_accuracy

    assert saved_accuracy({"test_accuracy": 97.123456}) == 97.123456
    for odd in ({"x": 1}, [1], "97", True, math.nan, math.inf, None):
        assert saved_accuracy({"test_accuracy": odd}) is None
    assert saved_accuracy({}) is None


@pytest.fixture(scope="module")
def wide_ticket(tmp_path_factory):
    """A wide-fc2 (r = 1) ticket whose metadata records an accuracy of 12.3456789%."""
    from lottery_jax import pruning
    from lottery_jax.nets.pruned import build_pruned

    cfg = pruning.PruneConfig(model="wide-fc2", redundancy=1, epochs=1)
    t = pruning.make_ticket(build_pruned("wide-fc2", seed=0, redundancy=1), cfg, 0, 0.5)
    path = tmp_path_factory.mktemp("ticket") / "t.npz"
    return pruning.save_ticket(path, t, {"test_accuracy": 12.3456789})


def test_evaluate_ticket_formats_the_saved_accuracy_and_names_its_file(
    wide_ticket, tiny_idx_dir, tmp_path, capsys
):
    code, out, err = run_cli(
        capsys, "evaluate-ticket", wide_ticket, "--data-dir", tiny_idx_dir, "--out", tmp_path
    )
    assert code == 0, err
    assert re.fullmatch(
        rf"test accuracy \d+\.\d\d% \(saved 12\.35%\); wrote {re.escape(str(tmp_path))}/results\.json\n",
        out,
    ), out


def test_export_ticket_names_the_network(wide_ticket, tmp_path, capsys):
    code, out, err = run_cli(capsys, "export-ticket", wide_ticket, "--out", tmp_path / "dense.npz")
    assert code == 0, err
    assert out.startswith(f"wrote {tmp_path / 'dense.npz'}: the dense fc2 network (hidden width ")
    assert "of the wide-fc2 ticket" in out and "seed 0, sparsity 0.5" in out
    assert f"lottery-jax evaluate --weights {tmp_path / 'dense.npz'}" in out


def test_evaluate_names_its_default_folder(tiny_idx_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = small_target(tmp_path / "small.npz")
    code, out, err = run_cli(capsys, "evaluate", "--weights", target, "--data-dir", tiny_idx_dir)
    assert code == 0, err
    found = re.search(r"; wrote (runs/evaluate-small-[0-9a-f]{8}/results\.json)$", out.strip())
    assert found and (tmp_path / found.group(1)).is_file(), out


@pytest.mark.parametrize(
    "command",
    ["approximate", "verify", "study", "construct", "train", "evaluate", "prune", "sweep", "plot",
     "evaluate-ticket", "export-ticket", "compare", "data fetch", "data info"],
)  # fmt: skip
def test_help_reads_at_80_columns(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli(capsys, *command.split(), "--help")
    assert code == 0 and "--help" in out
    assert_fits(out)
