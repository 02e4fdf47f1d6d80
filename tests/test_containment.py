"""Containment (issue 17): nothing outside ``--out`` is ever written or deleted.

Names from untrusted files (weight-file keys) never become paths; the leftover cleanup never follows
a link and removes only the temporaries the tool itself names; ``data fetch --force`` removes only
the cache files it wrote. The end-to-end test runs the commands with ``--out`` holding symbolic links
to a sentinel folder and asserts that the sentinel is byte-for-byte unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli

from lottery_jax import checkpoint, download, rundir
from lottery_jax import subsetsum as ap
from lottery_jax.errors import UserError


def small_target(seed: int = 0, hidden: int = 6, keys=("fc1.weight", "fc2.weight")):
    rng = np.random.default_rng(seed)
    return {
        keys[0]: rng.normal(0, 0.05, (hidden, 784)).astype(np.float32),
        keys[1]: rng.normal(0, 0.2, (10, hidden)).astype(np.float32),
    }


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` (links not followed): kind, bytes or link target, mode."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), st.st_mode)
            elif p.is_dir():
                out[rel] = ("dir", None, st.st_mode)
            else:
                out[rel] = ("file", p.read_bytes(), st.st_mode)
    return out


def make_sentinel(tmp_path: Path) -> Path:
    """A folder of files a careless tool would touch: dot-files ending in .tmp (in the tool's
    own old and new forms too), a chunks folder, results files."""
    s = tmp_path / "sentinel"
    (s / "chunks").mkdir(parents=True)
    for name in (".draft.tmp", ".model.npz.123-abcd.tmp", ".lottery-jax.x.1-deadbeef.tmp",
                 "results.json", "ticket.npz", ".commit.json", "chunks/.fc1-00000.npz.9-ff.tmp",
                 "chunks/fc1.weight-00000.npz", ".lock", ".lock.json"):  # fmt: skip
        (s / name).write_bytes(b"sentinel " + name.encode())
    return s


def linked_out(tmp_path: Path, sentinel: Path) -> Path:
    """An output folder holding links into the sentinel (a folder and files named like the
    tool's temporaries) and a user's own dot-files ending in .tmp."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(sentinel, target_is_directory=True)
    (out / "sub").mkdir()
    (out / "sub" / "deeper").symlink_to(sentinel, target_is_directory=True)
    (out / ".old.npz.42-beef.tmp").symlink_to(sentinel / ".model.npz.123-abcd.tmp")
    (out / ".lottery-jax.y.7-0badf00d.tmp").symlink_to(sentinel / ".lottery-jax.x.1-deadbeef.tmp")
    (out / ".draft.tmp").write_text("the user's own draft")
    (out / ".notes.md.swp.tmp").write_text("an editor's autosave")
    return out


# --- key names never become paths ------------------------------------------------------------


HOSTILE_KEYS = ["../../x/fc1.weight", "/abs/fc1.weight", "a/b.weight", "fc1..weight", "",
                "..\\x.weight", "x\n.weight"]  # fmt: skip


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_weight_file_with_hostile_keys_is_refused(tmp_path, key):
    path = tmp_path / "t.npz"
    np.savez(path, **{key: np.zeros((10, 784), np.float32), "fc2.weight": np.zeros((10, 10))})
    with pytest.raises(UserError, match="not a parameter name") as e:
        checkpoint.load_weights(path)
    assert "\n" not in str(e.value)


def test_nul_in_a_key_is_refused():  # (zip drops what follows a NUL: checked directly)
    with pytest.raises(UserError, match="not a parameter name"):
        checkpoint.check_state_keys(["fc1.weight\x00/../x"], "state")


def test_chunk_files_of_hostile_keys_stay_in_out(tmp_path):
    """The library path (a state dict handed over directly): chunk files are named by digest,
    inside OUT/chunks, whatever the key; resuming finds them again."""
    sentinel = make_sentinel(tmp_path)
    before = snapshot(tmp_path / "sentinel")
    out = tmp_path / "a" / "b" / "out"
    keys = ("../../../sentinel/fc1.weight", str(sentinel / "fc2.weight"))
    target = small_target(keys=keys)
    cfg = ap.ApproxConfig(epsilon=0.05, c=2.0, rows_per_chunk=2)
    with rundir.RunDir(out) as run:
        first = ap.approximate_network(target, cfg, run)
    assert snapshot(sentinel) == before
    files = sorted(p.name for p in (out / "chunks").iterdir())
    assert files and all(f.startswith("x-") for f in files), files
    made = {p for p in tmp_path.rglob("*.npz") if sentinel not in p.parents}
    assert made == {out / "chunks" / f for f in files}
    with rundir.RunDir(out) as run:
        again = ap.approximate_network(target, cfg, run)
    assert again.resumed_chunks == len(files)
    for k in keys:
        np.testing.assert_array_equal(first.results[k].masks, again.results[k].masks)


def test_plain_chunk_names_are_kept(tmp_path):
    with rundir.RunDir(tmp_path, args={}) as run:
        assert run.chunk_path("fc1.weight-00003").name == "fc1.weight-00003.npz"
        for hostile in ("../x-00000", "/etc/x", "a/b", ".hidden", "..", "x" * 300):
            p = run.chunk_path(hostile)
            assert p.parent == tmp_path / "chunks" and p.name.startswith("x-"), p


def test_approximate_refuses_a_target_with_hostile_keys(capsys, tmp_path):
    sentinel = make_sentinel(tmp_path)
    before = snapshot(sentinel)
    path = tmp_path / "t.npz"
    checkpoint.save_weights(path, "fc2", small_target(keys=("../../sentinel/fc1.weight",
                                                            "fc2.weight")))  # fmt: skip
    code, _, err = run_cli(capsys, "approximate", "--target", path, "--no-evaluate",
                           "--no-progress", "--epsilon", "0.05", "--c", "2", "--out",
                           tmp_path / "o1" / "o2")  # fmt: skip
    assert_one_line_error(code, err, "not a parameter name")
    assert snapshot(sentinel) == before


# --- the leftover cleanup ----------------------------------------------------------------------


def test_cleanup_never_follows_links_nor_removes_users_files(tmp_path):
    sentinel = make_sentinel(tmp_path)
    before = snapshot(sentinel)
    out = linked_out(tmp_path, sentinel)
    (out / "chunks").mkdir()
    (out / "chunks" / "deep").symlink_to(sentinel, target_is_directory=True)
    ours = [out / ".model.npz.123-abcd.tmp", out / ".lottery-jax.results.json.5-0123abcd.tmp",
            out / "chunks" / ".lottery-jax.fc1-00000.npz.5-0123abcd.tmp"]  # fmt: skip
    for p in ours:
        p.write_bytes(b"half")
    with rundir.RunDir(out):
        pass
    assert snapshot(sentinel) == before
    assert not any(p.exists() for p in ours)
    assert (out / ".draft.tmp").read_text() == "the user's own draft"
    assert (out / ".notes.md.swp.tmp").exists()
    assert (out / ".old.npz.42-beef.tmp").is_symlink()  # (a link is never removed either)


def test_cleanup_removes_only_in_the_folders_it_writes(tmp_path):
    (tmp_path / "notes").mkdir()
    theirs = tmp_path / "notes" / ".report.txt.12-ab.tmp"  # the old form, but not our folder
    theirs.write_text("x")
    assert rundir.clean_leftovers(tmp_path) == 0
    assert theirs.exists()


def test_temporaries_have_the_tools_prefix(tmp_path):
    name = rundir.tmp_name("results.json")
    assert name.startswith(".lottery-jax.results.json.") and rundir.is_tmp_name(name)
    assert not rundir.is_tmp_name(".draft.tmp") and not rundir.is_tmp_name(".x.tmp")


def test_a_linked_lock_or_chunks_folder_is_refused(tmp_path):
    sentinel = make_sentinel(tmp_path)
    before = snapshot(sentinel)
    for name in (rundir.LOCK_NAME, "chunks"):
        out = tmp_path / f"out-{name.strip('.')}"
        out.mkdir()
        (out / name).symlink_to(sentinel / ".lock" if name == rundir.LOCK_NAME else sentinel)
        with pytest.raises(UserError, match="symbolic link"):
            rundir.RunDir(out).open()
    assert snapshot(sentinel) == before


def test_a_journal_naming_paths_outside_is_ignored(tmp_path):
    """A hostile .commit.json cannot make recovery move files outside the directory."""
    import json

    sentinel = make_sentinel(tmp_path)
    before = snapshot(sentinel)
    out = tmp_path / "out"
    out.mkdir()
    victim = "../sentinel/results.json"
    pending = ".lottery-jax.x.1-deadbeef.tmp"
    sha = rundir.file_sha256(sentinel / pending)
    (out / rundir.JOURNAL_NAME).write_text(
        json.dumps(
            {"format": rundir.RUN_FORMAT, "files": {victim: {"sha256": sha, "pending": pending}}}
        )
    )
    with rundir.RunDir(out) as run:
        assert run.committed() is None
    assert snapshot(sentinel) == before


# --- data fetch --force ------------------------------------------------------------------------


def test_data_fetch_force_removes_only_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setenv(download.ENV_CACHE, str(tmp_path / "cache"))
    d = tmp_path / "cache" / "mnist"
    d.mkdir(parents=True)
    mine = d / "my-notes.txt"
    mine.write_text("keep me")
    (d / ".draft.part").write_text("not a name the tool gives its downloads")
    ours = [d / "train-images-idx3-ubyte", d / ".lock", d / ".t10k-labels-idx1-ubyte.gz.x1y2.part"]
    for p in ours:
        p.write_bytes(b"stale")
    assert download.remove_dataset("mnist") == len(ours)
    assert mine.read_text() == "keep me" and (d / ".draft.part").exists()
    assert not any(p.exists() for p in ours)


def test_data_fetch_force_refuses_a_linked_folder(capsys, tmp_path, monkeypatch):
    sentinel = make_sentinel(tmp_path)
    (sentinel / "train-images-idx3-ubyte").write_bytes(b"sentinel data")
    before = snapshot(sentinel)
    monkeypatch.setenv(download.ENV_CACHE, str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mnist").symlink_to(sentinel, target_is_directory=True)
    monkeypatch.setenv(download.ENV_MIRROR, "http://127.0.0.1:9/")
    code, _, err = run_cli(capsys, "data", "fetch", "--dataset", "mnist", "--force")
    assert_one_line_error(code, err, "symbolic link")
    assert snapshot(sentinel) == before


# --- every command, --out full of links ----------------------------------------------------------


def _commands(tmp_path: Path, data: Path, out: Path) -> list[tuple[str, list]]:
    target = tmp_path / "target.npz"
    checkpoint.save_weights(target, "fc2", small_target())
    prune_out = out / "prune"
    ticket = prune_out / "wide-fc2-r1-e1-s0.5-seed0" / "ticket.npz"
    return [
        ("train", ["train", "--model", "fc2", "--hidden", "16", "--epochs", "1", "--data-dir",
                   data, "--out", out / "train", "--no-progress"]),
        ("evaluate", ["evaluate", "--weights", out / "train" / "model.npz", "--data-dir", data,
                      "--out", out / "evaluate"]),
        ("approximate", ["approximate", "--target", target, "--no-evaluate", "--no-progress",
                         "--epsilon", "0.05", "--c", "2", "--rows-per-chunk", "2", "--out",
                         out / "approx"]),
        ("verify", ["verify", out / "approx" / "ticket.npz"]),
        ("prune", ["prune", "--model", "wide-fc2", "--redundancy", "1", "--epochs", "1",
                   "--data-dir", data, "--out", prune_out, "--no-progress"]),
        ("evaluate-ticket", ["evaluate-ticket", ticket, "--data-dir", data, "--out",
                             out / "evaluate-ticket"]),
        ("export-ticket", ["export-ticket", ticket, "--out", out / "dense.npz"]),
        ("plot", ["plot", prune_out, "--out", out / "figures"]),
        ("sweep", ["sweep", "--family", "fc2", "--no-baseline", "--epochs", "1", "--sparsity",
                   "0.5", "--variants", "wide", "--redundancy", "1", "--data-dir", data, "--out",
                   out / "sweep", "--no-progress"]),
        ("study", ["study", "--target", target, "--epsilon", "0.1", "--c", "1", "--no-evaluate",
                   "--out", out / "study", "--no-progress"]),
    ]  # fmt: skip


def _seed_links(folder: Path, sentinel: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "link").symlink_to(sentinel, target_is_directory=True)
    (folder / ".old.json.42-beef.tmp").symlink_to(sentinel / ".model.npz.123-abcd.tmp")
    (folder / ".draft.tmp").write_text("mine")


#: The fast representative in the default suite (the whole list is marked slow).
FAST = ("train", "approximate", "verify")


@pytest.mark.parametrize("which", [pytest.param("all", marks=pytest.mark.slow), "fast"])
def test_every_command_leaves_the_sentinel_unchanged(capsys, tmp_path, tiny_idx_dir, which):
    sentinel = make_sentinel(tmp_path)
    before = snapshot(sentinel)
    out = linked_out(tmp_path, sentinel)
    for folder in ("train", "approx", "prune", "evaluate", "figures", "sweep", "study"):
        _seed_links(out / folder, sentinel)
    for name, argv in _commands(tmp_path, tiny_idx_dir, out):
        if which == "fast" and name not in FAST:
            continue
        code, _, err = run_cli(capsys, *argv)
        assert code in (0, ap.EXIT_INFEASIBLE), (name, err)
        assert snapshot(sentinel) == before, name
        assert (out / ".draft.tmp").exists() and (out / "train" / ".draft.tmp").exists(), name
