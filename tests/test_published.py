"""The published Experiment 2 runs (built in), compare, and plot --published on a real sweep."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import tiny_block_data
from lottery_jax.cli import main

import lottery_jax as lj
from lottery_jax import pruning
from lottery_jax.errors import UserError
from lottery_jax.plotting import figure_data, make_panels, published_points
from lottery_jax.pruning import published as pub
from lottery_jax.pruning import sweep

RUNS = pub.load_published()


def test_the_built_in_records_are_the_published_file():
    path = pub.shipped_path()
    assert path.name == "published_runs.csv.gz" and path.parent.name == "paper"
    text = gzip.decompress(path.read_bytes())
    assert hashlib.sha256(text).hexdigest() == pub.PUBLISHED_SHA256
    assert len(RUNS) == 3077 == len(text.decode().strip().splitlines()) - 1
    notice = (path.parent / "NOTICE").read_text()
    assert "published_runs.csv.gz" in notice and "2298c254" in notice
    assert "Apache License, Version 2.0" in notice and pub.PUBLISHED_SHA256 in notice
    assert pub.load_published() is RUNS  # read once per process
    assert lj.load_published is pub.load_published and lj.compare_published is pub.compare


def test_what_the_records_hold():
    counts: dict = {}
    for r in RUNS:
        counts[r.family, r.variant] = counts.get((r.family, r.variant), 0) + 1
    assert counts[("fc2", "red-linear")] == 328 and counts[("lenet5", "wide")] == 344
    assert sum(v for (_, var), v in counts.items() if var == "baseline") == 75
    assert {r.seed for r in RUNS} == {1}
    assert {r.sparsity for r in RUNS} == {0.0, *pruning.PUBLISHED_SPARSITIES}
    assert RUNS.budgets("fc2", "red-linear", 0.5) == (*range(1, 21), 30, 50, 100, 125, 150)
    assert {r.lr for r in RUNS.select(family="lenet5")} == {0.01}
    assert {r.lr for r in RUNS.select(family="fc4")} == {0.1}


def _tensor_sizes(family: str, variant: str) -> list[int]:
    """Sizes of every masked tensor of the published network (scores and weights alike)."""
    from lottery_jax.nets.pruned import FC_SIZES, wide_sizes

    if variant == "wide":
        s = wide_sizes(family)
        return [a * b for a, b in zip(s[:-1], s[1:], strict=True)]
    s = FC_SIZES[family]
    return [n for a, b in zip(s[:-1], s[1:], strict=True) for n in (5 * a, b * a * 5)]


def test_published_remaining_params_are_bookkeeping_not_mask_counts():
    """The published ``remaining_params`` come from the published script's formula over the whole
    network (pruning/main.py at 2298c254): ``int(N (1 - s))`` for FC nets, ``total - int(N s)``
    for LeNet5 (its total counts the frozen conv weights too). Its masks remove ``int(s n)`` per
    tensor, as ours do, so the two counts differ by a few parameters at some sparsities."""
    from lottery_jax.nets.supermask import num_pruned

    differ = 0
    for r in RUNS.select():
        if r.variant == "baseline":
            continue
        sizes = _tensor_sizes(r.family, r.variant)
        n = sum(sizes)
        rule = (
            r.total_params - int(n * r.sparsity)
            if r.family == "lenet5"
            else int(n * (1 - r.sparsity))
        )
        assert r.remaining_params == rule, r
        conv = r.total_params - n  # (LeNet5's two frozen conv tensors; 0 for the FC nets)
        assert conv == (2550 if r.family == "lenet5" else 0)
        masks = conv + n - sum(num_pruned(r.sparsity, size) for size in sizes)
        assert abs(masks - rule) <= 8
        differ += masks != rule
    assert differ > 0  # e.g. red-FC2 s = 0.9: masks keep 199,142, the record says 199,141


def test_facts_from_the_records_readme():
    assert RUNS.find("fc2", "red-linear", 0.5, 30).final_test_acc == 97.2
    assert RUNS.find("fc2", "red-relu", 0.5, 30).final_test_acc == 94.04
    assert RUNS.find("fc2", "wide", 0.5, 30).final_test_acc == 97.94
    assert RUNS.find("fc2", "baseline", 0.0, 30).final_test_acc == 98.52
    longer = [RUNS.find("fc2", "red-linear", 0.5, e).final_test_acc
              for e in (30, 50, 100, 125, 150)]  # fmt: skip
    assert longer == [97.2, 96.94, 95.12, 95.35, 93.05]
    # The figure's rule: the best over the figure's budgets (FC2 s = 0.99).
    figure_budgets = pruning.PUBLISHED_EPOCHS
    best = {v: RUNS.best("fc2", v, 0.99, figure_budgets).final_test_acc
            for v in ("red-linear", "red-relu", "wide")}  # fmt: skip
    assert best == {"red-linear": 39.26, "red-relu": 18.18, "wide": 87.79}
    # Deterministic in the seed: epoch 1 of the 1-, 2- and 30-epoch runs is the same number.
    firsts = {RUNS.find("fc4", "wide", 0.9, e).test_acc_per_epoch[0] for e in (1, 2, 30)}
    assert len(firsts) == 1
    r = RUNS.find("fc2", "red-linear", 0.5, 30)
    assert (r.total_params, r.remaining_params, len(r.test_acc_per_epoch)) == (1991420, 995710, 30)
    assert r.test_acc_per_epoch[-1] == r.final_test_acc
    # The baseline has no sparsity: any sparsity finds it.
    assert RUNS.get("fc2", "baseline", 0.5, 30) is RUNS.get("fc2", "baseline", 0.0, 30)
    assert RUNS.get("fc2", "wide", 0.3, 30) is None


def test_lookup_errors_are_one_line():
    with pytest.raises(UserError, match=r"no published run for fc2 wide at sparsity 0.5 with 7"):
        RUNS.find("fc2", "wide", 0.5, 7_000)
    with pytest.raises(UserError, match="unknown variant 'deep'"):
        RUNS.find("fc2", "deep", 0.5, 30)
    with pytest.raises(UserError, match="unknown model family"):
        RUNS.find("fc3", "wide", 0.5, 30)


def _shipped_text() -> str:
    return gzip.decompress(pub.shipped_path().read_bytes()).decode()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("family,variant", "family,kind", 1), "expected the columns"),
        (lambda t: t.replace(",97.94,", ",high,", 1), r"line \d+: final_test_acc is not a number"),
        (lambda t: t.replace("fc2,wide,", "fc2,narrow,", 1), r"line \d+: unknown family/variant"),
        (lambda t: t.replace(",0.107,93.95\r\n", ",0.107\r\n", 1), r"line \d+: expected 12 fields"),
        (
            lambda t: t.replace(",0.107,93.95\r\n", ",0.107,93.95 94\r\n", 1),
            r"test_acc_per_epoch has 2",
        ),  # fmt: skip
        (lambda t: t.replace(",0.107,93.95\r\n", ",0.107,nan\r\n", 1), "not finite"),
        (lambda t: t.splitlines()[0] + "\n", "no records"),
        (lambda t: t + t.splitlines()[1] + "\n", "two records for fc2 baseline"),
    ],
)
def test_malformed_files_are_one_line_errors(tmp_path, edit, match):
    path = tmp_path / "runs.csv"
    path.write_text(edit(_shipped_text()))
    with pytest.raises(UserError, match=match) as e:
        pub.load_published(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read published runs"):
        pub.load_published(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"\x1f\x8b" + b"\x00" * 20)
    with pytest.raises(UserError, match="not a .gzipped. UTF-8 CSV"):
        pub.load_published(bad)
    plain = tmp_path / "plain.csv"
    plain.write_text(_shipped_text())  # an uncompressed copy reads the same
    assert pub.load_published(plain).runs == RUNS.runs


# ----------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A 1-epoch FC2 sweep written by the real sweep (wide, s = 0.5, seeds 0 and 1, baselines)."""
    out = tmp_path_factory.mktemp("published") / "sweep"
    sweep.run_sweep(
        "fc2", epochs=[1], sparsities=[0.5], variants=["wide"], seeds=[0, 1],
        data=tiny_block_data(64, 40, 0), out=out, base=pruning.PruneConfig(model="red-fc2"),
    )  # fmt: skip
    # The comparison's mechanics, on tiny runs relabelled as MNIST runs (runs on other data are
    # held against no record: test_compare_holds_only_mnist_runs_against_the_records).
    for path in out.rglob("results.json"):
        rec = json.loads(path.read_text())
        assert rec["config"]["data"] == "synthetic"
        rec["config"]["data"] = "tfds:mnist"
        path.write_text(json.dumps(rec))
    return out


def _records(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.rglob("results.json")}


def _published_csv(family, variant, sparsity, epochs) -> float:
    """The record read with the csv module straight from the shipped file (not the loader)."""
    for row in csv.DictReader(_shipped_text().splitlines()):
        if (row["family"], row["variant"], float(row["sparsity"]), int(row["epochs"])) == (
            family, variant, sparsity, epochs
        ):  # fmt: skip
            return float(row["final_test_acc"])
    raise AssertionError("no such record")


def test_compare_a_sweep_directory(sweep_dir):
    recs = _records(sweep_dir)
    wide = [recs[f"wide-fc2-r5-e1-s0.5-seed{s}"]["final_test_accuracy"] for s in (0, 1)]
    base = [recs[f"baseline-fc2-e1-seed{s}"]["final_test_accuracy"] for s in (0, 1)]
    c = pub.compare(sweep_dir)
    assert [(r.family, r.variant, r.sparsity, r.epochs) for r in c.rows] == [
        ("fc2", "wide", 0.5, 1), ("fc2", "baseline", 0.0, 1)
    ]  # fmt: skip
    row, brow = c.rows
    assert row.seeds == (0, 1) and row.count == 2 and row.settings == ""
    assert row.mean == pytest.approx(sum(wide) / 2)
    assert row.std == pytest.approx(abs(wide[0] - wide[1]) / 2)
    assert row.published_acc == _published_csv("fc2", "wide", 0.5, 1) == 95.31
    assert row.diff == pytest.approx(row.mean - 95.31)
    assert row.remaining_params == recs["wide-fc2-r5-e1-s0.5-seed0"]["remaining_params"]
    assert row.published.remaining_params == row.remaining_params == 995676
    assert brow.mean == pytest.approx(sum(base) / 2) and brow.published_acc == 93.95
    (s_wide,) = [s for s in c.summary if s.variant == "wide"]
    assert s_wide.matched == s_wide.points == 1 and s_wide.worst is row
    assert s_wide.mean_abs_diff == pytest.approx(abs(row.diff))
    assert s_wide.over_threshold == int(abs(row.diff) > 5)
    assert c.summarize(threshold=1000)[0].over_threshold == 0
    assert c.summarize(min_sparsity=0.6) == ()
    assert len(pub.compare(sweep_dir, families=["fc2"], epochs=[1]).runs) == 4
    with pytest.raises(UserError, match="no pruning or baseline results"):
        pub.compare(sweep_dir, epochs=[30])
    # The long-form table: one row per run.
    runs = c.run_rows()
    assert len(runs) == 4
    by = {(r[1], r[4]): r for r in runs}
    assert by[("wide", 1)][5:8] == (995676, wide[1], 95.31)
    assert json.loads(json.dumps(c.to_json()))["rows"][0]["published_final_test_acc"] == 95.31


def test_compare_settings_and_duplicates(sweep_dir, tmp_path):
    out = tmp_path / "runs"
    shutil.copytree(sweep_dir, out)
    shutil.copytree(out / "wide-fc2-r5-e1-s0.5-seed0", out / "again" / "wide-fc2-r5-e1-s0.5-seed0")
    # A real record whose run used another learning rate and batch size: compared apart.
    path = out / "wide-fc2-r5-e1-s0.5-seed1" / "results.json"
    rec = json.loads(path.read_text())
    rec["config"]["lr"], rec["config"]["batch_size"] = 0.05, 128
    path.write_text(json.dumps(rec))
    c = pub.compare(out)
    assert c.duplicates == 1
    wide = [r for r in c.rows if r.variant == "wide"]
    assert [(r.settings, r.count) for r in wide] == [("", 1), ("batch_size=128 lr=0.05", 1)]
    assert all(r.published_acc == 95.31 for r in wide)  # still held against the record
    rec["config"]["redundancy"] = 3  # another network: no record to compare with
    path.write_text(json.dumps(rec))
    (other,) = [r for r in pub.compare(out).rows if "redundancy=3" in r.settings]
    assert other.published is None and other.diff is None


@pytest.mark.parametrize(
    "data, compared",
    [("tfds:mnist", True), ("cache:mnist:/somewhere", True), ("idx:/no/such/folder", True),
     ("synthetic", False), ("tfds:fashion_mnist", False), ("idx:{synthetic}", False),
     ("idx:{folder} (unverified)", False)],
)  # fmt: skip
def test_compare_holds_only_mnist_runs_against_the_records(
    sweep_dir, tmp_path, monkeypatch, data, compared
):
    """A run on other data than MNIST (in memory, another TFDS dataset, an IDX folder that is
    not MNIST's files, data used unverified) gets ``data=...`` in its settings and no record; an
    IDX folder recorded by another path than the data folder named here is never opened (a
    record cannot make compare read elsewhere) and is compared."""
    from conftest import write_idx_dir

    synthetic = write_idx_dir(tmp_path / "idx")
    monkeypatch.setenv("LOTTERY_JAX_DATA", str(synthetic))  # the data folder named here
    out = tmp_path / "runs"
    shutil.copytree(sweep_dir, out)
    path = out / "wide-fc2-r5-e1-s0.5-seed1" / "results.json"
    rec = json.loads(path.read_text())
    rec["config"]["data"] = data.format(synthetic=synthetic, folder=tmp_path)
    path.write_text(json.dumps(rec))
    rows = [r for r in pub.compare(out).rows if r.variant == "wide"]
    if compared:
        assert [(r.settings, r.count, r.published_acc) for r in rows] == [("", 2, 95.31)]
    else:
        other = [r for r in rows if r.settings]
        assert [r.settings for r in other] == [f"data={rec['config']['data']}"]
        assert other[0].published is None and other[0].diff is None
        (same,) = [r for r in rows if not r.settings]
        assert same.count == 1 and same.published_acc == 95.31


def test_compare_checks_an_idx_folder_by_its_files(mnist_dir, tmp_path, monkeypatch):
    from lottery_jax.data import dataset_identity

    monkeypatch.setenv("LOTTERY_JAX_DATA", str(mnist_dir))
    assert dataset_identity(f"idx:{mnist_dir}") == "mnist"
    assert dataset_identity("train-from-memory") == "unknown"
    # A fifo where a record says MNIST is: never opened (the call would hang if it were).
    (tmp_path / "train-images-idx3-ubyte").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "train-images-idx3-ubyte")
    assert dataset_identity(f"idx:{tmp_path}") == "unchecked"


def test_compare_cli_end_to_end(sweep_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    target = tmp_path / "cmp" / "fc2_e1_vs_published.csv"
    assert main(["compare", str(sweep_dir), "--out", str(target)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if not line.startswith("wrote ")]  # (paths are paths)
    assert len(table) == 4 and all(len(line) <= 80 and "…" not in line for line in table)
    assert lines[0].split()[:4] == ["family", "variant", "epochs", "points"]
    assert lines[1].split()[:4] == ["fc2", "wide", "1", "1/1"]
    written = [line.removeprefix("wrote ") for line in lines if line.startswith("wrote ")]
    assert written == [str(target), str(target.with_suffix(".json")),
                       str(target.with_name("fc2_e1_vs_published-runs.csv"))]  # fmt: skip
    rows = list(csv.DictReader(target.read_text().splitlines()))
    assert [(r["variant"], r["count"], r["published_final_test_acc"]) for r in rows] == [
        ("wide", "2", "95.31"), ("baseline", "2", "93.95")
    ]  # fmt: skip
    runs = list(csv.DictReader(Path(written[2]).read_text().splitlines()))
    assert len(runs) == 4 and set(pub.RUN_COLUMNS) == set(runs[0])
    doc = json.loads(target.with_suffix(".json").read_text())
    assert doc["command"] == "compare" and doc["matched"] == 2 and len(doc["run_rows"]) == 4
    assert not list(target.parent.glob(".*tmp"))  # atomic writes leave nothing behind
    # Default output: beside the runs, never named results.json (so plot/compare skip it).
    assert main(["compare", str(sweep_dir)]) == 0
    assert (sweep_dir / "vs-published.csv").is_file() and len(sweep.collect_results(sweep_dir)) == 4


@pytest.mark.parametrize("make", ["missing", "empty", "bad-out"])
def test_compare_cli_one_line_errors(make, tmp_path, sweep_dir, capsys):
    args = {"missing": [str(tmp_path / "nope")], "empty": [str(tmp_path)],
            "bad-out": [str(sweep_dir), "--out", str(tmp_path / "x.txt")]}[make]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(["compare", *args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and err.startswith("error: ")
    assert {"missing": "does not exist", "empty": "no pruning or baseline results",
            "bad-out": "give a .csv file"}[make] in err  # fmt: skip


def test_plot_published_best_on_the_sweep(sweep_dir, tmp_path):
    fig = tmp_path / "fig" / "fc2.pdf"
    assert main(["plot", str(sweep_dir), "--out", str(fig), "--published", "--aggregate",
                 "best"]) == 0  # fmt: skip
    assert fig.read_bytes()[:4] == b"%PDF"
    # What the overlay draws: the published records, at our points' sizes.
    (panel,) = make_panels(figure_data(sweep.collect_results(sweep_dir)), "best")["fc2"]
    assert panel.budgets == (1,) and panel.aggregate == "best"
    overlay = published_points(panel, RUNS)
    assert overlay == {"wide": [(995676, 95.31)], "baseline": [(397000, 93.95)]}
    best_ours = max(r["final_test_accuracy"] for n, r in _records(sweep_dir).items()
                    if n.startswith("wide"))  # fmt: skip
    assert panel.curves["wide"][0][1] == best_ours
