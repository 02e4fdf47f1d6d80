"""Run directories (lottery_jax.rundir): lock, fingerprint, commits, sealed chunks, leftovers.

Each test stands for a defect of the reliability issue: a rerun after an interrupt while the last
epoch is saved must find one consistent run; two runs into one --out must not mix; a damaged or
foreign chunk/partial file must be recomputed, never reused or a traceback; a bad --out must be an
error before any work. The process-level fault tests (SIGKILL/SIGINT at a chosen write, two
processes started together) run in subprocesses; the longer ones are marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_block_data
from helpers import run_cli as cli

from lottery_jax import checkpoint, rundir
from lottery_jax import subsetsum as ap
from lottery_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    monkeypatch.delenv("LOTTERY_JAX_DATA", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def one_line_error(code: int, err: str, *needles: str) -> str:
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def tiny_train(data_dir, out, *extra):
    return ("train", "--model", "fc2", "--hidden", "16", "--epochs", "2", "--data-dir", data_dir,
            "--out", out, "--no-progress", *extra)  # fmt: skip


def small_target(seed: int = 0, hidden: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.normal(0, 0.05, (hidden, 784)).astype(np.float32),
        "fc2.weight": rng.normal(0, 0.2, (10, hidden)).astype(np.float32),
    }


SMALL = {"epsilon": 0.05, "c": 2.0, "rows_per_chunk": 2}


# --- the layer itself ---------------------------------------------------------------------------


def test_fingerprint_is_canonical_and_names_the_first_difference():
    a = {"lr": 0.1, "model": {"hidden": 16, "bias": False}, "out": Path("/x")}
    assert rundir.fingerprint(a) == rundir.fingerprint(dict(reversed(list(a.items()))))
    assert rundir.fingerprint(a) != rundir.fingerprint({**a, "lr": 0.05})
    assert rundir.first_difference(a, {**a, "lr": 0.05}) == ("lr", 0.1, 0.05)
    b = {**a, "model": {"hidden": 8, "bias": False}}
    assert rundir.first_difference(a, b) == ("model.hidden", 16, 8)
    assert rundir.first_difference(a, {**a, "extra": 1}) == ("extra", "(unset)", 1)
    assert rundir.first_difference(a, dict(a)) is None


def test_other_arguments_are_refused_naming_the_setting(tmp_path):
    with rundir.RunDir(tmp_path, args={"lr": 0.1, "epochs": 2}):
        pass
    with pytest.raises(UserError) as e:
        rundir.RunDir(tmp_path, args={"lr": 0.05, "epochs": 2}).open()
    assert f"{tmp_path} holds a run with lr=0.1; this run has lr=0.05" in str(e.value)
    assert "\n" not in str(e.value)
    with rundir.RunDir(tmp_path, args={"epochs": 2, "lr": 0.1}):  # the same settings: fine
        pass


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with rundir.RunDir(tmp_path, command="lottery-jax train --out x"):
        with pytest.raises(rundir.RunLocked) as e:
            rundir.RunDir(tmp_path).open()
        msg = str(e.value)
        assert str(tmp_path) in msg and f"pid {os.getpid()}" in msg
        assert "lottery-jax train --out x" in msg and "\n" not in msg
    with rundir.RunDir(tmp_path):  # released
        pass


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    code = (
        "import sys, time; from lottery_jax import rundir\n"
        f"r = rundir.RunDir({str(tmp_path)!r}).open(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(rundir.RunLocked, match=f"pid {proc.pid}"):
            rundir.RunDir(tmp_path).open()
    finally:
        proc.kill()
        proc.communicate()
    with rundir.RunDir(tmp_path):
        pass


def test_commit_is_all_or_nothing(tmp_path, monkeypatch):
    run = rundir.RunDir(tmp_path, args={"a": 1}).open()
    run.commit({"x.bin": b"one", "y.json": b"1"}, state={"epoch": 1})
    real = os.replace

    def crash_after(name):
        def replace(src, dst):
            if Path(dst).name == name:
                raise KeyboardInterrupt
            return real(src, dst)

        return replace

    # Interrupted before its journal: the previous commit stands, the temporaries go.
    monkeypatch.setattr(os, "replace", crash_after(rundir.JOURNAL_NAME))
    with pytest.raises(KeyboardInterrupt):
        run.commit({"x.bin": b"two", "y.json": b"2"}, state={"epoch": 2})
    monkeypatch.setattr(os, "replace", real)
    assert run.committed() == {"epoch": 1}
    assert (tmp_path / "x.bin").read_bytes() == b"one"
    assert not list(tmp_path.glob(".*.tmp"))

    # Interrupted after its journal, between the renames: the next opening completes it.
    monkeypatch.setattr(os, "replace", crash_after("y.json"))
    with pytest.raises(KeyboardInterrupt):
        run.commit({"x.bin": b"two", "y.json": b"2"}, state={"epoch": 2})
    monkeypatch.setattr(os, "replace", real)
    assert (tmp_path / "x.bin").read_bytes() == b"two" and (
        tmp_path / "y.json"
    ).read_bytes() == b"1"
    run.close()
    logs = []
    with rundir.RunDir(tmp_path, args={"a": 1}, log=logs.append) as again:
        assert again.committed() == {"epoch": 2}
        assert (tmp_path / "y.json").read_bytes() == b"2"
    assert any("completed the interrupted commit" in m for m in logs)

    # A committed file damaged afterwards is noticed (nothing is trusted).
    (tmp_path / "x.bin").write_bytes(b"tw0")
    with rundir.RunDir(tmp_path, args={"a": 1}, log=logs.append) as again:
        assert again.committed() is None
    assert any("does not match its commit record" in m for m in logs)


def test_leftover_temporaries_are_removed_on_the_next_run(tmp_path):
    (tmp_path / "chunks").mkdir()
    left = [tmp_path / ".model.npz.123-abcd.tmp", tmp_path / "chunks" / ".fc1-00000.npz.9-ff.tmp"]
    for p in left:
        p.write_bytes(b"half")
    (tmp_path / "sub").mkdir()  # a run folder of its own (it has a lock): left to its run
    (tmp_path / "sub" / rundir.LOCK_NAME).write_text("")
    theirs = tmp_path / "sub" / ".results.json.1-aa.tmp"
    theirs.write_text("{")
    keep = tmp_path / "notes.tmp"  # not one of ours (no leading dot)
    keep.write_text("mine")
    with rundir.RunDir(tmp_path):
        pass
    assert not any(p.exists() for p in left)
    assert theirs.exists() and keep.exists()


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "foreign", "garbage", "shape"])
def test_damaged_or_foreign_sealed_file_is_dropped(tmp_path, damage):
    path = tmp_path / "piece.npz"
    arrays = {"masks": np.arange(12).reshape(3, 4), "seconds": np.asarray(1.5)}
    rundir.write_sealed(path, arrays, "run-a/piece")
    raw = path.read_bytes()
    expect = {"masks": (3, 4)}
    seal = "run-a/piece"
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "bitflip":
        b = bytearray(raw)
        b[len(b) // 3] ^= 0x10
        path.write_bytes(bytes(b))
    elif damage == "foreign":
        seal = "run-b/piece"
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04 not a zip")
    elif damage == "shape":
        expect = {"masks": (4, 4)}
    logs = []
    assert rundir.read_sealed(path, seal, expect, logs.append) is None
    assert not path.exists() and len(logs) == 1 and "recomputing" in logs[0]
    # An intact one reads back exactly.
    rundir.write_sealed(path, arrays, "run-a/piece")
    back = rundir.read_sealed(path, "run-a/piece", {"masks": (3, 4)})
    np.testing.assert_array_equal(back["masks"], arrays["masks"])


def test_one_format_for_optimizer_state():
    import jax.numpy as jnp
    import optax

    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    state = optax.sgd(0.1, momentum=0.9).init(params)
    arrays = rundir.pack_tree(state)
    assert sorted(arrays) == [f"state/leaf{i:05d}" for i in range(len(arrays))]
    back = rundir.unpack_tree(arrays, state)
    for a, b in zip(jax_leaves(state), jax_leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)
    assert rundir.unpack_tree(arrays, optax.sgd(0.1).init({"w": jnp.ones((4, 2))})) is None


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


@pytest.mark.parametrize("where", ["file", "below-file"])
def test_prepare_dir_refuses_a_file(tmp_path, where):
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(UserError, match="exists and is not a directory"):
        rundir.prepare_dir(f if where == "file" else f / "below")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0500 directory")
def test_prepare_dir_refuses_an_unwritable_directory(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot write to"):
            rundir.prepare_dir(d)
    finally:
        d.chmod(0o700)


def test_prepare_dir_refuses_a_read_only_filesystem():
    """Root's case: a directory that no permission bit keeps root out of (procfs)."""
    target = Path("/proc/self")
    if not target.is_dir():
        pytest.skip("no /proc")
    with pytest.raises(UserError, match="cannot write to|cannot create"):
        rundir.prepare_dir(target)


# --- approximate: chunks ------------------------------------------------------------------------


def _chunk_files(out: Path) -> list[Path]:
    return sorted((out / "chunks").glob("*.npz"))


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "foreign"])
def test_approximate_recomputes_damaged_and_foreign_chunks(tmp_path, damage):
    target = small_target(6)
    cfg = ap.ApproxConfig(**SMALL)
    first = ap.approximate_network(target, cfg, tmp_path / "a")
    chunks = _chunk_files(tmp_path / "a")
    victim = chunks[2]
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "bitflip":
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        victim.write_bytes(bytes(raw))
    else:  # the same chunk of a run with other arguments, copied in
        ap.approximate_network(target, ap.ApproxConfig(**{**SMALL, "seed": 1}), tmp_path / "b")
        shutil.copy(tmp_path / "b" / "chunks" / victim.name, victim)
    again = ap.approximate_network(target, cfg, tmp_path / "a")
    assert again.resumed_chunks == len(chunks) - 1
    for k in target:
        np.testing.assert_array_equal(first.results[k].masks, again.results[k].masks)
        np.testing.assert_array_equal(first.results[k].status, again.results[k].status)
    assert len(_chunk_files(tmp_path / "a")) == len(chunks)


def test_approximate_cli_refused_while_another_run_holds_out(tmp_path, capsys):
    path = tmp_path / "t.npz"
    checkpoint.save_weights(path, "fc2", small_target(8))
    out = tmp_path / "run"
    argv = ["approximate", "--target", path, "--no-evaluate", "--no-progress", "--epsilon",
            "0.05", "--c", "2", "--out", out]  # fmt: skip
    with rundir.RunDir(out, command="lottery-jax approximate (the other one)"):
        code, _, err = cli(capsys, *argv)
        one_line_error(code, err, str(out), f"pid {os.getpid()}", "the other one")
    assert not (out / "results.json").exists()
    code, _, err = cli(capsys, *argv)
    assert code in (0, ap.EXIT_INFEASIBLE), err
    # The three result files were committed together, and approximated.npz names its inputs.
    journal = json.loads((out / rundir.JOURNAL_NAME).read_text())
    assert set(journal["files"]) == {"approximated.npz", "ticket.npz", "results.json"}
    _, meta = checkpoint.load_weights(out / "approximated.npz")
    assert meta["inputs"] == "unit"
    # Another setting into the same --out is refused, naming it.
    code, _, err = cli(capsys, *argv[:-3], "3", "--out", out)  # --c 3 instead of 2
    one_line_error(code, err, str(out), "c=2.0; this run has c=3.0")


# --- train: lock, commits, bad --out ------------------------------------------------------------


def test_train_refused_while_another_run_holds_out(capsys, tmp_path, tiny_idx_dir):
    out = tmp_path / "run"
    with rundir.RunDir(out, command="lottery-jax train (first)"):
        code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, out))
        one_line_error(code, err, "in use by", f"pid {os.getpid()}", "(first)")
    assert not (out / "results.json").exists()


def test_train_removes_leftovers_and_commits_three_files(capsys, tmp_path, tiny_idx_dir):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".model.npz.4242-dead.tmp"
    stale.write_bytes(b"half a file")
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, out, "--epochs", "1"))
    assert code == 0, err
    assert not stale.exists() and not list(out.glob(".*.tmp"))
    journal = json.loads((out / rundir.JOURNAL_NAME).read_text())
    assert set(journal["files"]) == {"model.npz", "results.json", "resume.npz"}
    assert journal["state"]["epochs_done"] == 1


def _bad_outs(tmp_path: Path) -> list[Path]:
    f = tmp_path / "a-file"
    f.write_text("x")
    return [f, f / "below"]


def _no_data(*args, **kwargs):
    raise AssertionError("the data was loaded before --out was checked")


def test_bad_out_is_refused_before_any_work(capsys, tmp_path, tiny_idx_dir, monkeypatch):
    import lottery_jax.cli.prune as cli_prune
    import lottery_jax.cli.train as cli_train

    monkeypatch.setattr(cli_train, "load_dataset", _no_data)
    monkeypatch.setattr(cli_prune, "load_dataset", _no_data)
    monkeypatch.setattr("lottery_jax.data.load_dataset", _no_data)
    target = tmp_path / "t.npz"
    checkpoint.save_weights(target, "fc2", small_target())
    for out in _bad_outs(tmp_path):
        for argv in (
            tiny_train(tiny_idx_dir, out),
            ("approximate", "--target", target, "--no-progress", "--out", out),
            ("prune", "--model", "wide-fc2", "--epochs", "1", "--data-dir", tiny_idx_dir,
             "--no-progress", "--out", out),
            ("sweep", "--family", "fc2", "--epochs", "1", "--sparsity", "0.5", "--variants",
             "wide", "--data-dir", tiny_idx_dir, "--no-progress", "--out", out),
        ):  # fmt: skip
            code, _, err = cli(capsys, *argv)
            one_line_error(code, err, "a-file", "not a directory")


# --- prune / sweep: partial files, run locks ----------------------------------------------------


def _interrupt_after_first_epoch(epoch, accs, seconds):
    raise KeyboardInterrupt


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_prune_recomputes_a_damaged_partial_file(tmp_path, damage):
    from lottery_jax import pruning
    from lottery_jax.pruning import sweep

    data = tiny_block_data(64, 40)
    cfg = pruning.PruneConfig(model="wide-fc2", epochs=2)
    full = sweep.run_prune(cfg, [0], [0.5], data, tmp_path / "full")
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        sweep.run_prune(cfg, [0], [0.5], data, cut, on_epoch=_interrupt_after_first_epoch)
    (partial,) = (cut / ".partial").glob("*.npz")
    raw = partial.read_bytes()
    if damage == "truncate":
        partial.write_bytes(raw[: len(raw) - 200])
    else:
        b = bytearray(raw)
        b[len(b) // 2] ^= 0x04
        partial.write_bytes(bytes(b))
    (cut / ".partial" / f".{partial.name}.77-beef.tmp").write_bytes(b"left over")
    logs: list[str] = []
    again = sweep.run_prune(cfg, [0], [0.5], data, cut, log=logs.append)
    assert any("recomputing" in m for m in logs), logs
    assert not any("resuming" in m for m in logs)
    assert again[0]["test_accuracy"] == full[0]["test_accuracy"]
    assert again[0]["final_test_accuracy"] == full[0]["final_test_accuracy"]
    assert not list((cut / ".partial").iterdir())
    journal = json.loads((cut / full[0]["name"] / rundir.JOURNAL_NAME).read_text())
    assert set(journal["files"]) == {"ticket.npz", "results.json"}


def test_prune_refused_while_another_process_writes_the_run(tmp_path, capsys, tiny_idx_dir):
    from lottery_jax import pruning

    out = tmp_path / "out"
    name = pruning.PruneConfig(model="wide-fc2", epochs=1).run_name(0.5, 0)
    argv = ("prune", "--model", "wide-fc2", "--epochs", "1", "--data-dir", tiny_idx_dir,
            "--no-progress", "--out", out)  # fmt: skip
    with rundir.claim(out, [name], command="lottery-jax prune (first)"):
        code, _, err = cli(capsys, *argv)
        one_line_error(code, err, name, "in use by", "(first)")
    assert not (out / name / "results.json").exists()


# --- processes: SIGKILL / SIGINT at a chosen write; two runs started together -------------------

HOOK = """
import os, signal, sys, time
from pathlib import Path
name, nth, action = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real, seen = os.replace, [0]
def replace(src, dst, *a, **k):
    if Path(dst).name == name:
        seen[0] += 1
        if seen[0] == nth:
            if action == "hold":  # until the test creates the file RELEASE
                print("holding", flush=True)
                t0 = time.time()
                while not Path(os.environ["RELEASE"]).exists() and time.time() - t0 < 120:
                    time.sleep(0.05)
            else:
                os.kill(os.getpid(), getattr(signal, action))
    return real(src, dst, *a, **k)
os.replace = replace
from lottery_jax.cli import main
main(sys.argv[4:])
"""


def _hooked(
    name: str, nth: int, action: str, argv, release: Path | None = None
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "LOTTERY_JAX_DATA"}
    env["RELEASE"] = str(release)
    cmd = [sys.executable, "-c", HOOK, name, str(nth), action, *map(str, argv)]
    return subprocess.Popen(cmd, env=env, cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip


def _assert_consistent_finished(out: Path, straight: Path) -> None:
    res = json.loads((out / "results.json").read_text())
    ref = json.loads((straight / "results.json").read_text())
    assert res["epochs_done"] == 2 and res["test_accuracy"] == ref["test_accuracy"]
    a, _ = checkpoint.load_weights(straight / "model.npz")
    b, _ = checkpoint.load_weights(out / "model.npz")
    arrays = checkpoint.read_npz(out / "resume.npz")
    assert int(arrays["epoch"]) == 2
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(arrays[f"{checkpoint.WEIGHT_PREFIX}{k}"], b[k])


def _kill_then_rerun(tmp_path, tiny_idx_dir, capsys, name: str, action: str) -> None:
    straight, out = tmp_path / "straight", tmp_path / "killed"
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, straight))
    assert code == 0, err
    proc = _hooked(name, 2, action, tiny_train(tiny_idx_dir, out))  # the 2nd epoch's save
    _, perr = proc.communicate(timeout=300)
    assert proc.returncode != 0, perr
    code, _, err = cli(capsys, *tiny_train(tiny_idx_dir, out))
    assert code == 0, err
    _assert_consistent_finished(out, straight)
    assert not list(out.glob(".*.tmp"))


def test_sigkill_while_the_last_epoch_is_saved(tmp_path, tiny_idx_dir, capsys):
    """Killed between the files of the last epoch (before the old code's model.npz, after the new
    code's journal): the rerun finds one consistent, finished run (the old code reported the run
    finished with epoch 1's weights)."""
    _kill_then_rerun(tmp_path, tiny_idx_dir, capsys, "model.npz", "SIGKILL")


@pytest.mark.slow
@pytest.mark.parametrize("name", [rundir.JOURNAL_NAME, "resume.npz", "model.npz", "results.json"])
@pytest.mark.parametrize("action", ["SIGKILL", "SIGINT"])
def test_interrupt_at_every_write_of_the_last_epoch(tmp_path, tiny_idx_dir, capsys, name, action):
    _kill_then_rerun(tmp_path, tiny_idx_dir, capsys, name, action)


@pytest.mark.slow
def test_two_train_runs_started_together(tmp_path, tiny_idx_dir):
    out, release = tmp_path / "run", tmp_path / "release"
    first = _hooked("model.npz", 1, "hold", tiny_train(tiny_idx_dir, out), release)
    assert first.stdout.readline().strip() == "holding"  # it holds --out, mid-commit
    second = _hooked("none", 0, "none", tiny_train(tiny_idx_dir, out))
    _, err2 = second.communicate(timeout=300)
    release.touch()
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 2
    one_line_error(2, err2, "in use by", f"pid {first.pid}")
    assert json.loads((out / "results.json").read_text())["epochs_done"] == 2


@pytest.mark.slow
def test_two_approximate_runs_started_together(tmp_path):
    path = tmp_path / "t.npz"
    checkpoint.save_weights(path, "fc2", small_target(8))
    out, release = tmp_path / "run", tmp_path / "release"
    argv = ["approximate", "--target", path, "--no-evaluate", "--no-progress", "--epsilon",
            "0.05", "--c", "2", "--rows-per-chunk", "2", "--out", out]  # fmt: skip
    first = _hooked("fc1.weight-00001.npz", 1, "hold", argv, release)
    assert first.stdout.readline().strip() == "holding"  # chunks half written
    second = _hooked("none", 0, "none", argv)
    _, err2 = second.communicate(timeout=300)
    release.touch()
    _, err1 = first.communicate(timeout=300)
    assert first.returncode in (0, ap.EXIT_INFEASIBLE), err1
    assert second.returncode == 2
    one_line_error(2, err2, "in use by", f"pid {first.pid}")
    res = json.loads((out / "results.json").read_text())
    ref = ap.summarize(ap.approximate_network(small_target(8), ap.ApproxConfig(**SMALL)))
    assert res["status_counts"] == ref["status_counts"]
    assert res["remaining_params"] == ref["remaining_params"]


@pytest.mark.slow
def test_sigkill_mid_chunk_then_resume(tmp_path):
    path = tmp_path / "t.npz"
    checkpoint.save_weights(path, "fc2", small_target(8))
    out = tmp_path / "run"
    argv = ["approximate", "--target", path, "--no-evaluate", "--no-progress", "--epsilon",
            "0.05", "--c", "2", "--rows-per-chunk", "2", "--out", out]  # fmt: skip
    proc = _hooked("fc2.weight-00002.npz", 1, "SIGKILL", argv)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert list((out / "chunks").glob(".*.tmp"))  # the chunk being written, left behind
    again = _hooked("none", 0, "none", argv)
    _, err = again.communicate(timeout=300)
    assert again.returncode in (0, ap.EXIT_INFEASIBLE), err
    res = json.loads((out / "results.json").read_text())
    assert res["resumed_chunks"] == 3 + 2  # fc1: 3 chunks, fc2: the first 2 of 5
    assert not list((out / "chunks").glob(".*.tmp"))
