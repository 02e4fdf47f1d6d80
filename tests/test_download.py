"""Fetching datasets without TensorFlow: a loopback HTTP server on 127.0.0.1 stands in for mirrors.

Small generated IDX files (whose sha256 the tests pass in) exercise every path; the real MNIST
(when present beside the repository) checks the built-in checksums end to end.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_digits
from helpers import run_cli as cli

from lottery_jax import download
from lottery_jax.download import STEMS, DatasetSpec, IdxFile
from lottery_jax.errors import UserError


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self):  # noqa: N802
        srv = self.server
        name = self.path.rsplit("/", 1)[-1]
        with srv.lock:
            srv.requests.append(name)
        body = srv.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if srv.delay:
            time.sleep(srv.delay)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in srv.truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = dict(files)
        self.requests: list[str] = []
        self.truncate: set[str] = set()
        self.delay = 0.0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/data/"


@pytest.fixture
def serve():
    """Start loopback servers holding given files; each stops at the end of the test."""
    servers = []

    def start(files: dict[str, bytes]) -> _Server:
        srv = _Server(files)
        threading.Thread(
            target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, tmp_path):
    """No test here touches ~/.cache or reads the CI's data directory."""
    monkeypatch.delenv("LOTTERY_JAX_DATA", raising=False)
    monkeypatch.delenv(download.ENV_MIRROR, raising=False)
    monkeypatch.setenv(download.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-tfds"))  # no prepared TFDS copy


def _idx(array: np.ndarray) -> bytes:
    magic = 0x803 if array.ndim == 3 else 0x801
    return (
        magic.to_bytes(4, "big")
        + b"".join(d.to_bytes(4, "big") for d in array.shape)
        + (array.astype(np.uint8).tobytes())
    )


def tiny_dataset(name: str = "tiny", *, hash_of: str = "raw"):
    """(spec with the right checksums, {file.gz: bytes served}, {stem: raw bytes})."""
    tr_x, tr_y = synthetic_digits(64, 1)
    te_x, te_y = synthetic_digits(32, 2)
    raw = dict(zip(STEMS, (_idx(tr_x), _idx(tr_y), _idx(te_x), _idx(te_y)), strict=True))
    gz = {stem: gzip.compress(b, mtime=0) for stem, b in raw.items()}
    files = tuple(
        IdxFile(
            stem,
            hashlib.sha256(raw[stem] if hash_of == "raw" else gz[stem]).hexdigest(),
            hash_of,
            len(raw[stem]) if hash_of == "raw" else None,
        )  # fmt: skip
        for stem in STEMS
    )
    spec = DatasetSpec(name=name, mirrors=(), files=files)
    return spec, {f"{s}.gz": b for s, b in gz.items()}, raw


def _cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("hash_of", ["raw", "gz"])
def test_fetch_verifies_caches_and_reuses(serve, tmp_path, hash_of):
    spec, served, raw = tiny_dataset(hash_of=hash_of)
    srv = serve(served)
    events = []
    d = download.fetch_dataset("tiny", spec=spec, mirrors=(srv.url,), callback=events.append)
    assert d == tmp_path / "cache" / "tiny"
    for stem in STEMS:
        assert (d / stem).read_bytes() == raw[stem]
    assert sorted(srv.requests) == sorted(served)
    kinds = [e.kind for e in events]
    assert kinds.count("done") == 4 and kinds[-1] == "end" and "failed" not in kinds
    assert any(e.kind == "progress" and e.done == e.total for e in events)
    leftovers = [n for n in _cache_files(tmp_path / "cache") if ".part" in n]
    assert leftovers == []
    # Second run: served from the cache, no request at all.
    srv.requests.clear()
    assert download.fetch_dataset("tiny", spec=spec, mirrors=(srv.url,)) == d
    assert srv.requests == []
    assert all(s.verified for s in download.dataset_status("tiny", spec=spec))


def test_mirror_env_and_load_dataset_read_the_cache(serve, monkeypatch):
    from lottery_jax.data import load_dataset

    spec, served, raw = tiny_dataset("mnist")
    srv = serve(served)
    monkeypatch.setitem(download.DATASETS, "mnist", spec)
    monkeypatch.setenv(download.ENV_MIRROR, srv.url)
    d = load_dataset(None, dataset="mnist", inputs="unit")
    assert d.train_images.shape == (64, 28, 28, 1) and d.test_labels.shape == (32,)
    want = np.frombuffer(raw[STEMS[3]], np.uint8, offset=8)
    np.testing.assert_array_equal(np.asarray(d.test_labels), want)
    assert d.name.startswith("cache:mnist")


def test_corrupt_file_is_never_cached_and_next_mirror_is_tried(serve, tmp_path):
    spec, served, _ = tiny_dataset()
    bad = dict(served)
    name = f"{STEMS[0]}.gz"
    body = bytearray(gzip.decompress(served[name]))
    body[-1] ^= 0xFF  # one flipped pixel: a valid gzip, a valid IDX, the wrong data
    bad[name] = gzip.compress(bytes(body))
    corrupt = serve(bad)
    with pytest.raises(download.DownloadError) as e:
        download.fetch_dataset("tiny", spec=spec, mirrors=(corrupt.url,))
    msg = str(e.value)
    assert "checksum mismatch" in msg and corrupt.url + name in msg and "--data-dir" in msg
    assert "\n" not in msg
    assert not (tmp_path / "cache" / "tiny" / STEMS[0]).exists()
    assert not [n for n in _cache_files(tmp_path / "cache") if ".part" in n]
    # The corrupt mirror first, a good one second: the good copy lands.
    good = serve(served)
    events = []
    download.fetch_dataset(
        "tiny", spec=spec, mirrors=(corrupt.url, good.url), callback=events.append
    )
    assert any(e.kind == "failed" and "checksum" in e.message for e in events)
    assert all(s.verified for s in download.dataset_status("tiny", spec=spec))


def test_cached_file_damaged_later_is_fetched_again(serve):
    spec, served, raw = tiny_dataset()
    srv = serve(served)
    d = download.fetch_dataset("tiny", spec=spec, mirrors=(srv.url,))
    (d / STEMS[2]).write_bytes(raw[STEMS[2]][:-1] + b"\x00")
    status = {s.stem: s for s in download.dataset_status("tiny", spec=spec)}
    assert status[STEMS[2]].present and not status[STEMS[2]].verified
    srv.requests.clear()
    download.fetch_dataset("tiny", spec=spec, mirrors=(srv.url,))
    assert srv.requests == [f"{STEMS[2]}.gz"]
    assert (d / STEMS[2]).read_bytes() == raw[STEMS[2]]


def test_truncated_transfer(serve, tmp_path):
    spec, served, _ = tiny_dataset()
    srv = serve(served)
    srv.truncate.add(f"{STEMS[0]}.gz")
    with pytest.raises(download.DownloadError, match="cut short|not a complete gzip") as e:
        download.fetch_dataset("tiny", spec=spec, mirrors=(srv.url,))
    assert "tiny" in str(e.value)
    assert not (tmp_path / "cache" / "tiny" / STEMS[0]).exists()
    assert not [n for n in _cache_files(tmp_path / "cache") if ".part" in n]


def test_http_error_names_status(serve):
    spec, served, _ = tiny_dataset()
    srv = serve({k: v for k, v in served.items() if not k.startswith(STEMS[1])})
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        download.fetch_dataset("tiny", spec=spec, mirrors=(srv.url,))
    # The files before the missing one are cached and verified; nothing else is.
    status = {s.stem: s.verified for s in download.dataset_status("tiny", spec=spec)}
    assert status == {STEMS[0]: True, STEMS[1]: False, STEMS[2]: False, STEMS[3]: False}


def test_server_down_fails_fast_with_one_line(serve):
    spec, served, _ = tiny_dataset()
    srv = serve(served)
    url = srv.url
    srv.shutdown()
    srv.server_close()  # nothing listens on that port any more
    t0 = time.perf_counter()
    with pytest.raises(download.DownloadError) as e:
        download.fetch_dataset("tiny", spec=spec, mirrors=(url, url))
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert msg.startswith("cannot download tiny") and url in msg and "connection refused" in msg
    assert "--data-dir" in msg and "\n" not in msg


def test_offline_builtin_mirrors_fail_fast(monkeypatch, tmp_path):
    """The built-in mirrors, on a machine without network: a clear error well within 10 s."""
    import socket

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    t0 = time.perf_counter()
    with pytest.raises(download.DownloadError) as e:
        download.fetch_dataset("mnist")
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "mnist" in msg and download.DATASETS["mnist"].mirrors[-1] in msg
    assert "offline" in msg and "--data-dir" in msg
    assert not [n for n in _cache_files(tmp_path / "cache") if ".part" in n]


def test_concurrent_fetches_leave_one_valid_copy(serve, tmp_path):
    spec, served, raw = tiny_dataset()
    srv = serve(served)
    srv.delay = 0.05  # long enough for the two fetches to overlap
    errors: list[BaseException] = []

    def fetch():
        try:
            download.fetch_dataset("tiny", spec=spec, mirrors=(srv.url,))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert sorted(srv.requests) == sorted(served)  # each file downloaded once, under the lock
    d = tmp_path / "cache" / "tiny"
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == sorted(STEMS)
    for stem in STEMS:
        assert (d / stem).read_bytes() == raw[stem]


def test_concurrent_processes(serve, tmp_path):
    """Two processes fetching at once: one downloads, the other waits and reads its copy."""
    import subprocess
    import sys

    spec, served, raw = tiny_dataset()
    srv = serve(served)
    srv.delay = 0.1
    code = (
        "import sys, json; from lottery_jax import download as d\n"
        "spec = d.DatasetSpec('tiny', (), tuple(d.IdxFile(**f) for f in json.loads(sys.argv[1])))\n"
        "d.fetch_dataset('tiny', spec=spec, mirrors=(sys.argv[2],))\n"
    )
    import dataclasses
    import json

    arg = json.dumps([dataclasses.asdict(f) for f in spec.files])
    env = {**os.environ, download.ENV_CACHE: str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, arg, srv.url], env=env) for _ in range(2)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert sorted(srv.requests) == sorted(served)
    for stem in STEMS:
        assert (tmp_path / "cache" / "tiny" / stem).read_bytes() == raw[stem]


def test_unknown_dataset_and_cache_rules(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="no download source for dataset 'emnist'"):
        download.fetch_dataset("emnist")
    monkeypatch.delenv(download.ENV_CACHE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.cache_root() == tmp_path / "xdg" / "lottery-jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert download.cache_root() == tmp_path / "home" / ".cache" / "lottery-jax"
    monkeypatch.setenv(download.ENV_MIRROR, "http://a/ http://b/")
    assert download.mirrors_for(download.DATASETS["mnist"]) == ("http://a/", "http://b/")


# --- the real MNIST, served from the loopback mirror -------------------------------------------


@pytest.fixture
def mnist_mirror(serve, mnist_dir):
    """A loopback mirror serving the real MNIST's four .gz files (gzipped here if stored raw)."""
    files = {}
    for stem in STEMS:
        gz, raw = Path(mnist_dir) / f"{stem}.gz", Path(mnist_dir) / stem
        files[gz.name] = gz.read_bytes() if gz.exists() else gzip.compress(raw.read_bytes(), 1)
    return serve(files)


def test_real_mnist_verifies_with_the_builtin_checksums(mnist_mirror, monkeypatch, tmp_path):
    monkeypatch.setenv(download.ENV_MIRROR, mnist_mirror.url)
    d = download.fetch_dataset("mnist")
    assert d == tmp_path / "cache" / "mnist"
    assert all(s.verified for s in download.dataset_status("mnist"))
    mnist_mirror.requests.clear()
    download.fetch_dataset("mnist")
    assert mnist_mirror.requests == []


# --- a fresh machine: no data directory, nothing cached, the mirror stands in for the network ----


def test_fresh_machine_evaluate_builtin_target(mnist_mirror, monkeypatch, tmp_path, capsys):
    """The fast representative of the fresh-machine run: download, verify, 97.19%."""
    monkeypatch.setenv(download.ENV_MIRROR, mnist_mirror.url)
    code, out, err = cli(capsys, "evaluate", "--weights", "paper-fc2", "--out", tmp_path / "ev")
    assert code == 0, err
    assert "test accuracy 97.19% (fc2, unit inputs)" in out
    assert sorted(mnist_mirror.requests) == sorted(f"{s}.gz" for s in STEMS)
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["config"]["data_dir"] is None and res["test_accuracy"] == pytest.approx(97.19)


def test_approximate_defaults_to_the_paper_target(monkeypatch, capsys, tmp_path):
    from lottery_jax import checkpoint
    from lottery_jax.paper import paper_weights

    seen = {}

    class Stop(Exception):
        pass

    def fake(state, cfg, run, **kw):
        seen["state"] = state
        raise Stop

    monkeypatch.setattr("lottery_jax.subsetsum.network.approximate_network", fake)
    with pytest.raises(Stop):
        cli(capsys, "approximate", "--no-evaluate", "--no-progress", "--out", tmp_path / "o")
    want, _ = checkpoint.load_weights(paper_weights("paper-fc2"))
    assert set(seen["state"]) == set(want)
    for k in want:
        np.testing.assert_array_equal(seen["state"][k], want[k])


def test_approximate_without_data_still_writes_its_ticket(monkeypatch, capsys, tmp_path):
    """No data to be had: solve, write the ticket, say why accuracy is missing, exit 5."""
    from lottery_jax.checkpoint import save_weights

    rng = np.random.default_rng(0)
    target = {"fc1.weight": rng.normal(0, 0.05, (4, 784)).astype(np.float32),
              "fc2.weight": rng.normal(0, 0.2, (10, 4)).astype(np.float32)}  # fmt: skip
    path = save_weights(tmp_path / "t.npz", "fc2", target)
    monkeypatch.setenv(download.ENV_MIRROR, "http://127.0.0.1:9/")  # refused at once
    out = tmp_path / "o"
    code, _, err = cli(
        capsys, "approximate", "--target", path, "--epsilon", "0.05", "--c", "3",
        "--no-progress", "--out", out,
    )  # fmt: skip
    assert code == 5, err
    lines = [line for line in err.splitlines() if line.startswith("accuracy not measured")]
    assert len(lines) == 1 and "http://127.0.0.1:9/" in lines[0] and "--data-dir" in lines[0]
    res = json.loads((out / "results.json").read_text())
    assert res["target_accuracy"] is None and res["approx_accuracy"] is None
    assert "connection refused" in res["accuracy_not_measured"] and res["exit_status"] == 5
    assert (out / "ticket.npz").is_file() and res["all_within_epsilon"]
    assert not [n for n in _cache_files(tmp_path / "cache") if ".part" in n]


def test_approximate_target_train_needs_the_data(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(download.ENV_MIRROR, "http://127.0.0.1:9/")
    code, _, err = cli(capsys, "approximate", "--target", "train", "--out", tmp_path / "o")
    assert code == 2 and err.startswith("error: cannot download mnist") and err.count("\n") == 1


@pytest.mark.slow
def test_fresh_machine_reproduces_the_paper_table(mnist_mirror, tmp_path):
    """The README's quickstart on a fresh machine: no data directory, an empty cache, the
    loopback mirror for the network; `approximate --target paper` gives 97.19% both ways."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LOTTERY_JAX_DATA"}
    env.update({download.ENV_CACHE: str(tmp_path / "cache"), download.ENV_MIRROR: mnist_mirror.url,
                "HOME": str(tmp_path / "home"), "TFDS_DATA_DIR": str(tmp_path / "tfds")})  # fmt: skip
    exe = Path(sys.executable).with_name("lottery-jax")
    run = subprocess.run(
        [str(exe), "approximate", "--target", "paper", "--epsilon", "0.01", "--no-progress",
         "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["target_accuracy"] == pytest.approx(97.19)
    assert res["approx_accuracy"] == pytest.approx(97.19)
    assert res["all_within_epsilon"] and res["initial_params"] == 8_337_000
    assert "97.19%" in run.stdout


def test_data_fetch_and_info_commands(serve, monkeypatch, capsys, tmp_path):
    spec, served, _ = tiny_dataset("mnist")
    srv = serve(served)
    monkeypatch.setitem(download.DATASETS, "mnist", spec)
    monkeypatch.setenv(download.ENV_MIRROR, srv.url)
    code, out, _ = cli(capsys, "data", "info", "--dataset", "mnist")
    assert code == 0
    assert f"mnist: {tmp_path / 'cache' / 'mnist'} (0 of 4 files verified)" in out
    assert "not downloaded" in out and srv.url in out and "lottery-jax data fetch" in out
    code, out, err = cli(capsys, "data", "fetch", "--dataset", "mnist")
    assert code == 0, err
    assert out.strip() == f"mnist: verified in {tmp_path / 'cache' / 'mnist'}"
    assert "mnist/train-images-idx3-ubyte" in err  # the download bar
    code, out, _ = cli(capsys, "data", "info", "--dataset", "mnist")
    assert "(4 of 4 files verified)" in out and "not downloaded" not in out
    srv.requests.clear()
    code, _, err = cli(capsys, "data", "fetch", "--dataset", "mnist", "--force")
    assert code == 0, err
    assert len(srv.requests) == 4
    srv.files.pop(f"{STEMS[3]}.gz")
    (tmp_path / "cache" / "mnist" / STEMS[3]).unlink()
    code, out, err = cli(capsys, "data", "fetch", "--dataset", "mnist")
    assert code == 2 and err.startswith("error: cannot download mnist") and "HTTP 404" in err
    assert err.count("\n") == 1


def test_download_bar_draws_every_event(capsys):
    from lottery_jax.cli.data import DownloadBar

    bar = DownloadBar()
    for kind, kw in [
        ("start", {"total": 100}), ("progress", {"done": 50, "total": 100}),
        ("failed", {"message": "transfer cut short; trying the next mirror"}),
        ("start", {"total": 100}), ("progress", {"done": 100, "total": 100}),
        ("done", {"done": 100, "total": 100}), ("end", {}),
    ]:  # fmt: skip
        bar(download.DownloadEvent(kind, "mnist", "f", "http://127.0.0.1:1/f.gz", **kw))
    assert bar.progress is None and bar.tasks == {}
    err = capsys.readouterr().err
    assert "http://127.0.0.1:1/f.gz: transfer cut short; trying the next mirror" in err


def test_cache_that_cannot_be_a_folder(monkeypatch, tmp_path):
    spec, _, _ = tiny_dataset()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(download.ENV_CACHE, str(blocker))
    with pytest.raises(UserError, match="cannot create the data cache .*LOTTERY_JAX_CACHE"):
        download.fetch_dataset("tiny", spec=spec, mirrors=("http://127.0.0.1:9/",))


def test_file_larger_than_pinned_is_refused_early(serve, tmp_path):
    spec, served, raw = tiny_dataset()
    big = dict(served)
    big[f"{STEMS[1]}.gz"] = gzip.compress(raw[STEMS[1]] + bytes(1 << 20))
    srv = serve(big)
    with pytest.raises(download.DownloadError, match="decompresses to more than the expected"):
        download.fetch_dataset("tiny", spec=spec, mirrors=(srv.url,))
    assert not [n for n in _cache_files(tmp_path / "cache") if ".part" in n]


def test_silent_mirrors_stop_after_the_connect_budget(monkeypatch):
    """Mirrors that accept but never answer (as a network that drops packets): the fetch gives up
    once the budget is spent instead of waiting on every mirror."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel completes connections; nobody ever answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    monkeypatch.setattr(download, "READ_TIMEOUT", 0.4)
    monkeypatch.setattr(download, "CONNECT_BUDGET", 1.0)
    spec, _, _ = tiny_dataset()
    events = []
    t0 = time.perf_counter()
    try:
        with pytest.raises(download.DownloadError, match="timed out"):
            download.fetch_dataset("tiny", spec=spec, mirrors=(url,) * 10, callback=events.append)
    finally:
        listener.close()
    assert time.perf_counter() - t0 < 3.5
    assert 2 <= sum(e.kind == "failed" for e in events) + 1 <= 4  # 3 tries, not 10
