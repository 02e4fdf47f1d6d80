"""Hostile files and directories (issue 17): trust only what verifies, bound what a small file can
cost, answer every malformed input with one line.

Downloads are tested against servers on 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import resource
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_block_data, write_idx_dir
from helpers import assert_one_line_error, run_cli

from lottery_jax import checkpoint, download, pruning, rundir
from lottery_jax.data import read_idx, read_idx_dir
from lottery_jax.download import STEMS, DatasetSpec, IdxFile
from lottery_jax.errors import UserError
from lottery_jax.pruning import sweep


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- prune/sweep trust only what verifies -----------------------------------------------------


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """One finished tiny prune run (wide-fc2, 1 epoch)."""
    out = tmp_path_factory.mktemp("pruned")
    data = tiny_block_data(64, 40)
    cfg = pruning.PruneConfig(model="wide-fc2", redundancy=1, epochs=1)
    sweep.run_prune(cfg, [0], [0.5], data, out)
    return out, data, cfg


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_prune_retrains_a_run_whose_ticket_does_not_verify(pruned, tmp_path, damage):
    src, data, cfg = pruned
    out = tmp_path / "out"
    import shutil

    shutil.copytree(src, out)
    run = out / cfg.run_name(0.5, 0)
    ticket = run / "ticket.npz"
    good = ticket.read_bytes()
    if damage == "truncate":
        ticket.write_bytes(good[: len(good) // 2])
    else:
        ticket.unlink()
    logs: list[str] = []
    sweep.run_prune(cfg, [0], [0.5], data, out, log=logs.append)
    assert not any("already finished" in m for m in logs), logs
    assert ticket.read_bytes() == good  # retrained: the same ticket again (seeded)
    assert pruning.load_ticket(ticket)["seed"] == 0


def test_prune_skips_a_run_that_verifies(pruned, tmp_path):
    src, data, cfg = pruned
    logs: list[str] = []
    sweep.run_prune(cfg, [0], [0.5], data, src, log=logs.append)
    assert any("already finished" in m for m in logs), logs


def test_sparsities_differing_in_the_7th_digit_get_their_own_folders():
    cfg = pruning.PruneConfig(model="wide-fc2", redundancy=1, epochs=1)
    a, b = cfg.run_name(0.1234561, 0), cfg.run_name(0.1234564, 0)
    assert a != b and "s0.1234561-" in a and "s0.1234564-" in b
    # The usual short names are kept (results directories of earlier runs still match).
    assert cfg.run_name(0.5, 0).endswith("-s0.5-seed0")
    assert cfg.run_name(1e-05, 3).endswith("-s1e-05-seed3")
    assert cfg.run_name(-0.0, 0) == cfg.run_name(0.0, 0) and "s-0" not in cfg.run_name(-0.0, 0)


def test_sparsity_minus_zero_makes_folder_s0(capsys, tmp_path, tiny_idx_dir):
    code, _, err = run_cli(capsys, "prune", "--model", "wide-fc2", "--redundancy", "1",
                           "--epochs", "0", "--sparsity", "-0", "--data-dir", tiny_idx_dir,
                           "--out", tmp_path, "--no-progress")  # fmt: skip
    assert code == 0, err
    names = [p.name for p in tmp_path.iterdir() if p.is_dir()]
    assert names == ["wide-fc2-r1-e0-s0-seed0"], names
    rec = json.loads((tmp_path / names[0] / "results.json").read_text())
    assert rec["sparsity"] == 0.0 and json.dumps(rec["sparsity"]) == "0.0"


def test_custom_sizes_that_do_not_fit_the_data_are_a_user_error():
    for sizes in [(100, 10, 10), (784, 10, 9)]:
        with pytest.raises(UserError, match="784 input pixels") as e:
            pruning.PruneConfig(model="red", sizes=sizes)  # (checked as it is built)
        one_line(e)
    pruning.PruneConfig(model="red", sizes=(784, 16, 10))


# --- results.json, run.json, .commit.json of the wrong type ----------------------------------


@pytest.mark.parametrize("content", ["[]", "3", '"x"', "null", "[" * 100000, '{"files": []}',
                                     '{"files": {"a": 3}}'])  # fmt: skip
def test_run_records_of_the_wrong_type(tmp_path, content):
    for name in (rundir.JOURNAL_NAME, rundir.RUN_NAME):
        d = tmp_path / name.strip(".")
        d.mkdir()
        (d / name).write_text(content)
        try:
            with rundir.RunDir(d, args={"a": 1}) as run:
                assert run.committed() is None
        except UserError as e:  # (run.json: refused with one line, never a traceback)
            assert name == rundir.RUN_NAME, e
            assert "\n" not in str(e)


@pytest.mark.parametrize("content", ["[]", "3", "[" * 100000, '{"config": 1}'])
def test_results_json_of_the_wrong_type(tmp_path, content):
    d = tmp_path / "r"
    d.mkdir()
    (d / "results.json").write_text(content)
    assert not sweep.is_finished(d / "results.json", {"a": 1})
    assert sweep.collect_results(tmp_path) == []


# --- npz and IDX bounds ---------------------------------------------------------------------------


def _npz_bomb(path: Path, gb: float = 1.0) -> Path:
    """A small .npz whose one member is gb GB of zeros (streamed: never in memory here)."""
    n = int(gb * 2**30) // 4
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (n,)}
    )
    zf = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1)
    with zf, zf.open("fc1.weight.npy", "w", force_zip64=True) as m:
        m.write(header.getvalue())
        block = bytes(1 << 24)
        left = n * 4
        while left:
            m.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    return path


@pytest.fixture(scope="module")
def npz_bomb(tmp_path_factory):
    return _npz_bomb(tmp_path_factory.mktemp("bomb") / "bomb.npz")


def test_npz_bomb_is_refused_before_loading(npz_bomb):
    rss = _rss_mb()
    assert npz_bomb.stat().st_size < 8 << 20
    for read in (checkpoint.load_weights, lambda p: pruning.load_ticket(p)):
        with pytest.raises(UserError, match="would take") as e:
            read(npz_bomb)
        one_line(e)
    assert _rss_mb() - rss < 300  # (the bomb declares 1 GB)
    assert rundir.read_sealed(npz_bomb, "x") is None


def test_npz_member_whose_header_lies_is_refused(tmp_path):
    """A header declaring 40 GB in a member of 168 bytes: refused from the zip directory."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(10, np.float32))
    raw = buf.getvalue().replace(b"(10,)", b"(9999999999,)")
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fc1.weight.npy", raw)
    with pytest.raises(UserError, match="declares") as e:
        checkpoint.load_weights(path)
    one_line(e)


def _write_gz_idx(path, shape, *, blocks: int) -> None:
    """A gzipped IDX header for ``shape`` followed by ``blocks`` x 16 MiB of zeros."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(_idx_bytes(shape))
        for _ in range(blocks):
            f.write(bytes(1 << 24))


def _idx_bytes(dims: tuple[int, ...], body: bytes = b"") -> bytes:
    magic = 0x803 if len(dims) == 3 else 0x801
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + body


@pytest.mark.parametrize("dims", [(2**32 - 1, 2**32 - 1, 2**32 - 1), (2**31, 28, 28),
                                  (4_000_000, 28, 28), (2**32 - 1,)])  # fmt: skip
def test_idx_headers_with_huge_or_overflowing_dimensions(tmp_path, dims):
    path = tmp_path / "x"
    path.write_bytes(_idx_bytes(dims, bytes(64)))
    with pytest.raises(UserError) as e:
        read_idx(path)
    one_line(e)


def test_gz_idx_bomb_is_refused_without_decompressing_it(tmp_path):
    """2 GB of zeros declared and compressed into a few MB: refused from the header (and a
    header that tells the truth is read only as far as it says)."""
    d = write_idx_dir(tmp_path / "d")
    big = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    (tmp_path / "d" / "train-images-idx3-ubyte").unlink(missing_ok=True)
    _write_gz_idx(big, (2_000_000, 28, 28), blocks=8)  # 128 MB written (the header claims 1.5 GB)
    rss = _rss_mb()
    with pytest.raises(UserError, match="examples") as e:
        read_idx_dir(d)
    one_line(e)
    assert _rss_mb() - rss < 100


# --- downloads: a deadline, a size cap, HTML pages -----------------------------------------------


class _Trickle(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        mode = self.server.mode
        self.send_response(200)
        if mode == "html":
            body = b"<!DOCTYPE html><html><body>Please log in</body></html>"
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()  # (no Content-Length)
        try:
            if mode == "endless":
                block = bytes(1 << 16)
                while not self.server.stop.is_set():
                    self.wfile.write(block)
            else:  # trickle: one byte every 0.2 s, forever
                while not self.server.stop.is_set():
                    self.wfile.write(b"\x1f")
                    self.wfile.flush()
                    time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    servers = []

    def start(mode: str) -> str:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
        srv.daemon_threads = True
        srv.mode, srv.stop = mode, threading.Event()
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()  # fmt: skip
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/data/"

    yield start
    for srv in servers:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()


def _spec(size: int | None = 60016) -> DatasetSpec:
    files = tuple(IdxFile(s, "0" * 64, "raw", size) for s in STEMS)
    return DatasetSpec(name="tiny", mirrors=(), files=files)


def test_a_trickling_mirror_fails_within_the_deadline(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "FETCH_DEADLINE", 1.5)
    url = mirror("trickle")
    t0 = time.monotonic()
    with pytest.raises(download.DownloadError, match="deadline") as e:
        download.fetch_dataset("tiny", root=tmp_path, spec=_spec(), mirrors=(url, url))
    assert time.monotonic() - t0 < 6
    one_line(e)
    assert not list((tmp_path / "tiny").glob(".*.part"))


def test_a_stream_without_length_is_capped_at_the_files_size(mirror, tmp_path):
    url = mirror("endless")
    with pytest.raises(download.DownloadError, match="more than this file's") as e:
        download.fetch_dataset("tiny", root=tmp_path, spec=_spec(60016), mirrors=(url,))
    one_line(e)
    assert sum(p.stat().st_size for p in (tmp_path / "tiny").iterdir()) == 0


def test_an_html_page_is_reported_as_such(mirror, tmp_path):
    url = mirror("html")
    with pytest.raises(download.DownloadError, match="HTML page") as e:
        download.fetch_dataset("tiny", root=tmp_path, spec=_spec(), mirrors=(url,))
    assert "checksum" not in one_line(e)


# --- ticket metadata ----------------------------------------------------------------------------


def _supermask_ticket(tmp_path: Path, **meta_changes) -> Path:
    from lottery_jax.nets.pruned import build_pruned

    cfg = pruning.PruneConfig(model="wide-fc2", redundancy=1, epochs=1)
    net = build_pruned("wide-fc2", seed=0, redundancy=1)
    t = pruning.make_ticket(net, cfg, 0, 0.5)
    path = pruning.save_ticket(tmp_path / "t.npz", t)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__meta__"]))
    meta.update(meta_changes)
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("seed", [1.5, -1, True, 2**64, "0", None])
def test_ticket_seed_must_be_an_integer_in_range(tmp_path, seed):
    path = _supermask_ticket(tmp_path, seed=seed)
    with pytest.raises(UserError, match="seed") as e:
        pruning.load_ticket(path)
    one_line(e)


@pytest.mark.parametrize("shapes", [{"fc1.weight": [2**40, 2**40]}, {"fc1.weight": [-1]},
                                    {"fc1.weight": "x"}, [], {"fc1.weight": [2**64, 0]}])  # fmt: skip
def test_ticket_shapes_that_overflow_are_refused(tmp_path, shapes):
    path = _supermask_ticket(tmp_path, shapes=shapes)
    with pytest.raises(UserError) as e:
        pruning.load_ticket(path)
    one_line(e)


@pytest.mark.parametrize("config", [{"model": 5}, {"model": "wide-fc2", "redundancy": "x"},
                                    {"model": "red", "sizes": [100, 10, 10]},
                                    {"model": "wide-fc2", "method": []}])  # fmt: skip
def test_ticket_config_of_the_wrong_types(tmp_path, config):
    path = _supermask_ticket(tmp_path, config=config)
    with pytest.raises(UserError) as e:
        pruning.net_from_ticket(pruning.load_ticket(path))
    one_line(e)


def test_saved_accuracy_of_the_wrong_type_is_not_printed(capsys, tmp_path, tiny_idx_dir):
    path = _supermask_ticket(tmp_path, test_accuracy={"x": 1})
    code, out, err = run_cli(capsys, "evaluate-ticket", path, "--data-dir", tiny_idx_dir)
    assert code == 0, err
    assert "{'x': 1}" not in out and "saved" not in out, out


def test_deeply_nested_weight_metadata(tmp_path):
    path = tmp_path / "w.npz"
    state = {"fc1.weight": np.zeros((4, 784), np.float32), "fc2.weight": np.zeros((10, 4))}
    np.savez(path, **state, __meta__=np.asarray("[" * 100000 + "]" * 100000))
    with pytest.raises(UserError, match="nested") as e:
        checkpoint.load_weights(path)
    one_line(e)


@pytest.mark.parametrize("meta", [{"inputs": 5}, {"model": ["fc2"]}, {"seed": 1.5},
                                  {"hidden": -3}, {"inputs": "raw"}])  # fmt: skip
def test_weight_metadata_of_the_wrong_type(capsys, tmp_path, tiny_idx_dir, meta):
    path = tmp_path / "w.npz"
    state = {"fc1.weight": np.zeros((4, 784), np.float32), "fc2.weight": np.zeros((10, 4))}
    np.savez(path, **state, __meta__=np.asarray(json.dumps(meta)))
    code, _, err = run_cli(capsys, "evaluate", "--weights", path, "--data-dir", tiny_idx_dir,
                           "--out", tmp_path / "o")  # fmt: skip
    assert_one_line_error(code, err, str(path))


# --- SIGTERM and a full disk: one line, a resumable state -----------------------------------------


def _train_argv(data, out, epochs="2"):
    return ["train", "--model", "fc2", "--hidden", "16", "--epochs", epochs, "--data-dir", data,
            "--out", out, "--no-progress"]  # fmt: skip


def test_sigterm_is_like_ctrl_c(capsys, tmp_path, tiny_idx_dir, monkeypatch):
    import os
    import signal

    from lottery_jax import training

    real_fit = training.fit

    def fit_terminated_after_first_epoch(*args, on_epoch, **kwargs):
        def hook(epoch, *rest):
            on_epoch(epoch, *rest)
            os.kill(os.getpid(), signal.SIGTERM)

        return real_fit(*args, on_epoch=hook, **kwargs)

    monkeypatch.setattr(training, "fit", fit_terminated_after_first_epoch)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *_train_argv(tiny_idx_dir, out))
    assert code == 143
    assert_one_line_error(code, err, "SIGTERM", "resume")
    assert not (out / rundir.HOLDER_NAME).exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # (restored after the command)
    monkeypatch.setattr(training, "fit", real_fit)
    code, out_text, err = run_cli(capsys, *_train_argv(tiny_idx_dir, out))
    assert code == 0 and "resuming" in out_text + err, err
    assert json.loads((out / "results.json").read_text())["epochs_done"] == 2


def _disk_full_after(monkeypatch, name: str, nth: int = 1):
    """rundir's file writer raises ENOSPC from the ``nth`` write of a temporary of ``name`` on
    (earlier writes go through)."""
    import errno

    real = rundir._write_new
    seen = [0]

    def write_new(path, data, sync):
        if name in Path(path).name:
            seen[0] += 1
        if seen[0] >= nth:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, sync)

    monkeypatch.setattr(rundir, "_write_new", write_new)
    return real


def test_full_disk_in_train_is_one_line_and_resumes(capsys, tmp_path, tiny_idx_dir, monkeypatch):
    out = tmp_path / "run"
    real = _disk_full_after(monkeypatch, "resume.npz", 2)  # (epoch 1's commit goes through)
    code, _, err = run_cli(capsys, *_train_argv(tiny_idx_dir, out))
    assert_one_line_error(code, err, "No space left", "intact", "resume")
    assert not list(out.glob(".lottery-jax.*.tmp"))
    monkeypatch.setattr(rundir, "_write_new", real)
    code, out_text, err = run_cli(capsys, *_train_argv(tiny_idx_dir, out))
    assert code == 0 and "resuming" in out_text + err, err


def test_full_disk_in_approximate_is_one_line(capsys, tmp_path, monkeypatch):
    from test_containment import small_target

    path = tmp_path / "t.npz"
    checkpoint.save_weights(path, "fc2", small_target())
    argv = ["approximate", "--target", path, "--no-evaluate", "--no-progress", "--epsilon",
            "0.05", "--c", "2", "--rows-per-chunk", "2", "--out", tmp_path / "o"]  # fmt: skip
    real = _disk_full_after(monkeypatch, "fc2.weight-00001", 1)  # (fc1's chunks are written)
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, "No space left", "resume")
    monkeypatch.setattr(rundir, "_write_new", real)
    code, _, err = run_cli(capsys, *argv)
    assert code in (0, 3), err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["resumed_chunks"] >= 1


def test_full_disk_in_prune_is_one_line(capsys, tmp_path, tiny_idx_dir, monkeypatch):
    argv = ["prune", "--model", "wide-fc2", "--redundancy", "1", "--epochs", "0", "--data-dir",
            tiny_idx_dir, "--out", tmp_path / "p", "--no-progress"]  # fmt: skip
    real = _disk_full_after(monkeypatch, "results.json", 1)
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, "No space left", "resume", only=False)  # (after its log)
    monkeypatch.setattr(rundir, "_write_new", real)
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err


# --- output paths of the wrong kind ---------------------------------------------------------------


def test_export_ticket_out_is_an_existing_directory(capsys, tmp_path):
    path = _supermask_ticket(tmp_path)
    (tmp_path / "dense").mkdir()
    code, _, err = run_cli(capsys, "export-ticket", path, "--out", tmp_path / "dense")
    assert_one_line_error(code, err, "is a directory")


def test_plot_out_is_a_file_or_read_only(capsys, pruned, tmp_path):
    import os

    src, _, _ = pruned
    (tmp_path / "fig").write_text("a file")
    code, _, err = run_cli(capsys, "plot", src, "--out", tmp_path / "fig")
    assert_one_line_error(code, err, "not a directory")
    if os.geteuid() != 0:  # (root writes into a read-only folder)
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        code, _, err = run_cli(capsys, "plot", src, "--out", ro)
        assert_one_line_error(code, err, "cannot write")


def test_export_of_a_custom_depth_is_refused_not_labelled_fc2(tmp_path):
    from lottery_jax.nets.pruned import build_pruned

    net = build_pruned("wide", seed=0, redundancy=1, sizes=(784, 16, 16, 10))
    with pytest.raises(UserError, match="none of fc2, fc4, lenet5") as e:
        pruning.export_dense(net, tmp_path / "d.npz")
    one_line(e)
    net = build_pruned("wide", seed=0, redundancy=1, sizes=(784, 16, 10))
    state, meta = checkpoint.load_weights(pruning.export_dense(net, tmp_path / "d.npz"))
    assert meta["model"] == "fc2" and state["fc1.weight"].shape == (16, 784)


# --- approximate and verify: small things, up-front estimates --------------------------------------


def _approx_argv(tmp_path, *extra):
    from test_containment import small_target

    path = tmp_path / "t.npz"
    checkpoint.save_weights(path, "fc2", small_target())
    return ["approximate", "--target", path, "--no-progress", "--epsilon", "0.05", "--c", "2",
            "--out", tmp_path / "o", *extra]  # fmt: skip


def test_tiny_c_is_refused_not_n_1(capsys, tmp_path):
    argv = _approx_argv(tmp_path, "--no-evaluate")
    argv[argv.index("--c") + 1] = "1e-9"
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, "--c", "n = 0")


def test_empty_layers_is_refused_not_every_layer(capsys, tmp_path):
    code, _, err = run_cli(capsys, *_approx_argv(tmp_path, "--no-evaluate", "--layers", ""))
    assert_one_line_error(code, err, "--layers", "no pattern")
    code, _, err = run_cli(capsys, *_approx_argv(tmp_path, "--no-evaluate", "--layers", " , "))
    assert_one_line_error(code, err, "--layers")


def test_unusable_cache_is_like_offline(capsys, tmp_path, monkeypatch):
    """approximate still writes the ticket and exits 5 (no data), as offline."""
    from lottery_jax.subsetsum.experiment import EXIT_NO_DATA

    monkeypatch.delenv("LOTTERY_JAX_DATA", raising=False)
    (tmp_path / "not-a-folder").write_text("x")
    monkeypatch.setenv(download.ENV_CACHE, str(tmp_path / "not-a-folder"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-tfds"))
    code, _, err = run_cli(capsys, *_approx_argv(tmp_path))
    assert code in (EXIT_NO_DATA, 3), err  # (3: some weight not within eps, which comes first)
    assert (tmp_path / "o" / "ticket.npz").exists()
    assert (
        "data cache"
        in json.loads((tmp_path / "o" / "results.json").read_text())["accuracy_not_measured"]
    )


def test_verify_estimates_its_memory_up_front(tmp_path, monkeypatch):
    """A small per-weight ticket declaring n = 1024 for 392,000 weights (6.8 GB to check) is
    refused with one line before any work, on a machine of 1 GiB."""
    from test_containment import small_target

    from lottery_jax import resources
    from lottery_jax import subsetsum as ap

    target = small_target()
    res = ap.approximate_network(target, ap.ApproxConfig(epsilon=0.05, c=2.0))
    path = ap.save_ticket(tmp_path / "t.npz", res, target)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__meta__"]))
    meta.update(n=1024, c=1024 / 4, coefficients="per-weight", coefficients_stored=False)
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    arrays["fc1.weight.target"] = np.zeros((500, 784), np.float32)
    arrays.pop("fc1.weight.coefficients", None)
    arrays.pop("fc2.weight.coefficients", None)
    np.savez_compressed(path, **arrays)
    assert path.stat().st_size < 200_000
    monkeypatch.setattr(resources, "device_memory_bytes", lambda: 1 << 30)
    rss = _rss_mb()
    with pytest.raises(UserError, match="needs about") as e:
        ap.verify_ticket(path)
    one_line(e)
    assert _rss_mb() - rss < 200


# --- wrong data in --data-dir --------------------------------------------------------------------


@pytest.fixture
def swapped_mnist(tmp_path, mnist_dir):
    """The real MNIST with its train and test files swapped (links, renamed)."""
    d = tmp_path / "swapped"
    d.mkdir()
    pairs = {"train-images-idx3-ubyte": "t10k-images-idx3-ubyte",
             "train-labels-idx1-ubyte": "t10k-labels-idx1-ubyte"}  # fmt: skip
    for a, b in [*pairs.items(), *((b, a) for a, b in pairs.items())]:
        src = next(p for p in mnist_dir.iterdir() if p.name.startswith(a))
        (d / (b + src.name[len(a) :])).symlink_to(src)
    return d


def test_swapped_mnist_is_refused(swapped_mnist):
    from lottery_jax.data import load_dataset

    with pytest.raises(UserError, match="swapped") as e:
        load_dataset(swapped_mnist)
    assert "--allow-unverified-data" in one_line(e)


def test_swapped_mnist_allowed_explicitly_is_recorded(capsys, tmp_path, swapped_mnist):
    from lottery_jax import data

    w = tmp_path / "w.npz"
    state = {"fc1.weight": np.zeros((4, 784), np.float32), "fc2.weight": np.zeros((10, 4))}
    checkpoint.save_weights(w, "fc2", state)
    argv = ["evaluate", "--weights", w, "--data-dir", swapped_mnist, "--out", tmp_path / "e"]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, "swapped")
    try:
        code, _, err = run_cli(capsys, "--allow-unverified-data", *argv)
        assert code == 0, err
        rec = json.loads((tmp_path / "e" / "results.json").read_text())
        assert "swapped" in rec["device"]["unverified_data"][0]
    finally:
        data.UNVERIFIED_LOADS.clear()


def test_real_mnist_verifies_and_is_cached(mnist_dir):
    from lottery_jax import data

    _, raws = data._read_idx_dir(mnist_dir)
    data._VERDICTS.clear()
    t0 = time.perf_counter()
    assert data.check_known_dataset(raws) == "mnist"
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert data.check_known_dataset(raws) == "mnist"
    assert time.perf_counter() - t0 < first / 10


def test_other_data_is_accepted_unchecked(tiny_idx_dir):
    from lottery_jax import data

    _, raws = data._read_idx_dir(tiny_idx_dir)
    assert data.check_known_dataset(raws) == "unknown"


def test_gz_idx_declaring_far_more_than_it_can_hold_is_refused(tmp_path):
    """784 MB of zeros in a 0.8 MB .gz, within the example count: refused from the header."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    _write_gz_idx(path, (1_000_000, 28, 28), blocks=4)
    rss = _rss_mb()
    with pytest.raises(UserError, match="may hold") as e:
        read_idx(path)
    one_line(e)
    assert _rss_mb() - rss < 50


def test_prune_never_overwrites_a_finished_run_of_other_settings(pruned, tmp_path):
    """The run folder's name leaves lr, batch size, dataset... out: a run of other settings into
    the same folder is refused in one line (the earlier results untouched); --force replaces."""
    import shutil
    from dataclasses import replace

    src, data, cfg = pruned
    out = tmp_path / "out"
    shutil.copytree(src, out)
    run = out / cfg.run_name(0.5, 0)
    before = (run / "results.json").read_bytes()
    other = replace(cfg, lr=0.05)
    with pytest.raises(UserError) as e:
        sweep.run_prune(other, [0], [0.5], data, out)
    msg = one_line(e)
    assert str(run) in msg and "lr 0.1 there, 0.05 now" in msg and "--force" in msg
    assert (run / "results.json").read_bytes() == before
    sweep.run_prune(other, [0], [0.5], data, out, force=True)
    assert json.loads((run / "results.json").read_text())["config"]["lr"] == 0.05
