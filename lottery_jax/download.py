"""Datasets fetched by the tool itself: IDX files from public mirrors, verified, cached. No TensorFlow.

Each dataset (MNIST, Fashion-MNIST, KMNIST) is the four standard IDX files. They are downloaded as
``.gz`` from the mirrors tensorflow-datasets registers for the dataset (then other well-known mirrors,
in order), decompressed, checked against a pinned sha256, and written atomically into the cache as raw
IDX files that :func:`lottery_jax.data.read_idx_dir` reads.

- **What is verified.** For MNIST and Fashion-MNIST the pinned sha256 is that of the *decompressed*
  IDX file: a fixed fact of the dataset, so any mirror's gzip wrapper verifies. For KMNIST only the
  sha256 of the ``.gz`` files its publisher serves is on record (the checksums tensorflow-datasets
  registers), so a KMNIST mirror must serve those exact bytes; the decompressed file's hash is then
  written beside it (``<file>.sha256``) and checked on every later use.
- **Where.** ``LOTTERY_JAX_CACHE`` if set, else ``$XDG_CACHE_HOME/lottery-jax``, else
  ``~/.cache/lottery-jax`` (the platform's user cache folder elsewhere), one folder per dataset.
- **Mirrors.** ``LOTTERY_JAX_MIRROR`` (one base URL, or several separated by spaces, each holding the
  four ``.gz`` files) replaces the built-in ones.
- **Safety.** Downloads go to hidden ``.part`` files that are removed on any failure; only a file
  whose checksum matches is renamed into place. A lock file per dataset makes concurrent fetches
  (processes or threads) download each file once and leave one valid copy. A cached file that no
  longer verifies is downloaded again.
- **Bounds.** Each file may take at most its known size (a stream without a Content-Length cannot
  fill the disk), and a whole fetch at most :data:`FETCH_DEADLINE` seconds. A mirror that answers
  with an HTML page (a login or error page) is reported as such.
- **Failure.** When every mirror fails (offline, server down, truncated transfer, checksum mismatch) a
  :class:`DownloadError` (a :class:`~lottery_jax.errors.UserError`) names the dataset, the last URL,
  the reason and how to pass ``--data-dir`` instead. A refused connection or an unknown host fails
  at once; silent mirrors are abandoned once :data:`CONNECT_BUDGET` seconds are spent, so an offline
  machine fails within about ten seconds.

The library draws nothing: progress goes to a callback (see :class:`DownloadEvent`), passed to
:func:`fetch_dataset` or installed for a block with :func:`reporting`.
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import hashlib
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lottery_jax.errors import UserError

#: Seconds to wait for a connection to a mirror, and for each chunk of a transfer.
CONNECT_TIMEOUT = 3.0
#: Once failing to connect has taken this many seconds, the remaining mirrors are not tried (an
#: offline machine whose packets vanish, rather than being refused, still fails in about 10 s).
CONNECT_BUDGET = 8.0
READ_TIMEOUT = 30.0
#: Seconds one fetch (all of a dataset's files, every mirror) may take in all: a mirror that
#: trickles (one byte a second never trips the read timeout) fails with one line when it is spent.
FETCH_DEADLINE = 1800.0
#: Seconds to wait for another process that is fetching the same dataset.
LOCK_TIMEOUT = 900.0
CHUNK = 1 << 16
#: Largest decompressed file accepted when its size is not pinned (the IDX files are < 50 MB).
MAX_RAW_BYTES = 1 << 27
ENV_CACHE = "LOTTERY_JAX_CACHE"
ENV_MIRROR = "LOTTERY_JAX_MIRROR"
STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DownloadError(UserError):
    """No verified copy of a dataset file could be had: from the cache (missing, or unusable) or
    from any mirror."""


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a dataset: its name (without ``.gz``) and pinned checksum.

    ``hash_of`` says what ``sha256`` covers: ``"raw"`` the decompressed IDX file (mirror
    independent), ``"gz"`` the exact ``.gz`` bytes the publisher serves.
    """

    stem: str
    sha256: str
    hash_of: Literal["raw", "gz"] = "raw"
    size: int | None = None  # decompressed bytes, when known


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    mirrors: tuple[str, ...]
    files: tuple[IdxFile, ...]
    homepage: str = ""
    licence: str = ""


def _files(hash_of: Literal["raw", "gz"], *hashes: str) -> tuple[IdxFile, ...]:
    """The four files (in :data:`STEMS` order) with their pinned sha256."""
    sizes = _RAW_SIZES if hash_of == "raw" else (None,) * 4
    return tuple(IdxFile(s, h, hash_of, n) for s, h, n in zip(STEMS, hashes, sizes, strict=True))


_RAW_SIZES = (47040016, 60008, 7840016, 10008)

#: The built-in datasets. Mirrors: first the URL tensorflow-datasets registers for the dataset,
#: then the others in common use (torchvision's, the original site).
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        mirrors=(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        files=_files(
            "raw",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        homepage="http://yann.lecun.com/exdb/mnist/",
        licence="CC BY-SA 3.0 (Yann LeCun, Corinna Cortes, Christopher J.C. Burges)",
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        # sha256 of the decompressed files as Debian's dataset-fashion-mnist package ships them.
        files=_files(
            "raw",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        licence="MIT (Zalando SE)",
    ),
    "kmnist": DatasetSpec(
        name="kmnist",
        mirrors=(
            "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ),
        # Only the .gz checksums are on record (the ones tensorflow-datasets registers).
        files=_files(
            "gz",
            "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
        ),
        homepage="http://codh.rois.ac.jp/kmnist/",
        licence="CC BY-SA 4.0 (ROIS-DS Center for Open Data in the Humanities)",
    ),
}


@dataclass(frozen=True)
class DownloadEvent:
    """What :func:`fetch_dataset` reports.

    ``kind``: ``"start"`` (a file's download from ``url`` begins; ``total`` bytes when the server
    says), ``"progress"`` (``done`` bytes so far), ``"done"`` (the file verified and is cached),
    ``"failed"`` (this mirror failed for this file, ``message`` says why, and the next one is
    tried; the last mirror's failure is the :class:`DownloadError` instead),
    ``"end"`` (the fetch is over, whatever its outcome: stop drawing).
    """

    kind: Literal["start", "progress", "done", "failed", "end"]
    dataset: str
    file: str = ""
    url: str = ""
    done: int = 0
    total: int | None = None
    message: str = ""


Callback = Callable[[DownloadEvent], None]
_REPORTER: contextvars.ContextVar[Callback | None] = contextvars.ContextVar(
    "lottery_jax_download_reporter", default=None
)


@contextlib.contextmanager
def reporting(callback: Callback | None) -> Iterator[None]:
    """Send the events of every fetch inside the block to ``callback`` (the CLI's progress bar)."""
    token = _REPORTER.set(callback)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def cache_root() -> Path:
    """``LOTTERY_JAX_CACHE``, else ``$XDG_CACHE_HOME/lottery-jax``, else ``~/.cache/lottery-jax``."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_path("lottery-jax", appauthor=False))


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(
            f"no download source for dataset {name!r} (built in: {', '.join(DATASETS)}); "
            "pass --data-dir with its four IDX files"
        ) from None


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return (Path(root) if root is not None else cache_root()) / name


def mirrors_for(spec: DatasetSpec) -> tuple[str, ...]:
    """``LOTTERY_JAX_MIRROR`` (space-separated base URLs) if set, else the dataset's mirrors."""
    env = os.environ.get(ENV_MIRROR, "").split()
    return tuple(env) if env else spec.mirrors


def _join(base: str, name: str) -> str:
    return base if base.endswith(name) else base.rstrip("/") + "/" + name


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _expected_raw_hash(directory: Path, f: IdxFile) -> str | None:
    if f.hash_of == "raw":
        return f.sha256
    side = directory / f"{f.stem}.sha256"
    try:
        return side.read_text().split()[0]
    except (OSError, IndexError):
        return None


@dataclass
class FileStatus:
    """One file of a cached dataset: where it is (or would be) and whether it verifies."""

    stem: str
    path: Path
    present: bool
    verified: bool
    reason: str = ""


def check_file(directory: Path, f: IdxFile) -> FileStatus:
    """Whether ``directory/f.stem`` is present and matches its checksum."""
    path = directory / f.stem
    if not path.is_file():
        return FileStatus(f.stem, path, False, False, "not downloaded")
    want = _expected_raw_hash(directory, f)
    if want is None:
        return FileStatus(
            f.stem, path, True, False, f"no record of its checksum ({path.name}.sha256)"
        )
    if f.size is not None and path.stat().st_size != f.size:
        reason = f"size {path.stat().st_size} bytes, expected {f.size}"
        return FileStatus(f.stem, path, True, False, reason)
    got = _sha256_file(path)
    if got != want:
        return FileStatus(
            f.stem, path, True, False, f"sha256 {got[:12]}... expected {want[:12]}..."
        )
    return FileStatus(f.stem, path, True, True)


def dataset_status(
    name: str, root: str | os.PathLike | None = None, spec: DatasetSpec | None = None
) -> list[FileStatus]:
    """The state of each of the dataset's files in the cache (no network)."""
    spec = spec or dataset_spec(name)
    directory = dataset_dir(spec.name, root)
    return [check_file(directory, f) for f in spec.files]


class _Sink:
    """The file object pooch's downloader writes to: counts, hashes and reports the bytes."""

    def __init__(self, fh, report: Callable[[int], None]):
        self.fh, self.report = fh, report
        self.done = 0
        self.sha = hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.fh.write(chunk)
        self.sha.update(chunk)
        self.done += len(chunk)
        self.report(self.done)
        return len(chunk)

    def flush(self) -> None:
        pass


class _Total:
    """pooch's progress-bar protocol, used only to learn the announced size of the transfer."""

    def __init__(self, on_total: Callable[[int], None]):
        self._on_total = on_total
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = value
        self._on_total(value)

    def update(self, n: int) -> None:
        pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def _reason(e: BaseException) -> str:
    import requests
    import urllib3.exceptions as u3

    if isinstance(e, u3.ReadTimeoutError | u3.ConnectTimeoutError):
        return "timed out"
    if isinstance(e, u3.ProtocolError | u3.DecodeError):
        return "transfer cut short"
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code} {e.response.reason}".strip()
    if isinstance(e, requests.Timeout):
        return "timed out"
    if isinstance(e, requests.exceptions.ChunkedEncodingError):
        return "transfer cut short"
    if isinstance(e, requests.ConnectionError):
        text = str(e)
        if "Failed to resolve" in text or "Name or service not known" in text:
            return "cannot resolve the host (offline?)"
        if "Connection refused" in text:
            return "connection refused"
        if "Network is unreachable" in text:
            return "network is unreachable"
        return "connection failed"
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg


class _Deadline(OSError):
    """The fetch's overall deadline passed (no further mirror is tried)."""


def _download(url: str, dest, on_total, on_bytes, cap: int | None = None,
              deadline: float | None = None) -> _Sink:  # fmt: skip
    """Stream ``url`` into ``dest``: at most ``cap`` bytes, until ``deadline`` (monotonic).

    Each read returns as soon as some bytes arrive (``read1``), so the deadline holds against a
    mirror that trickles; the read timeout holds against one that stops."""
    import requests

    sink = _Sink(dest, on_bytes)
    headers = {"Accept-Encoding": "identity"}  # the .gz bytes as stored, not re-encoded
    with requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                      headers=headers) as r:  # fmt: skip
        r.raise_for_status()
        try:
            total = max(0, int(r.headers.get("Content-Length") or 0))
        except ValueError:
            total = 0
        if cap is not None and total > cap:
            raise OSError(f"the mirror announces {total:,} bytes, more than this file's {cap:,}")
        on_total(total)
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise _Deadline(f"the fetch took longer than its deadline of {FETCH_DEADLINE:g} s")
            chunk = r.raw.read1(CHUNK, decode_content=True)
            if not chunk:
                break
            sink.write(chunk)
            if cap is not None and sink.done > cap:
                raise OSError(f"the mirror sent more than this file's {cap:,} bytes")
    return sink


def _download_cap(f: IdxFile) -> int:
    """The most bytes a download of ``f`` may take: its decompressed size (a ``.gz`` is smaller;
    a mirror may serve it uncompressed) plus room for gzip's framing."""
    raw = f.size or MAX_RAW_BYTES
    return raw + raw // 100 + 4096


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))


def _decompress(src: Path, dst: Path, limit: int) -> tuple[str, int]:
    """Gunzip ``src`` into ``dst`` (a file that is not gzip is copied as is): (sha256, bytes).
    More than ``limit`` bytes is an error (a wrong file, not filling the disk)."""
    h = hashlib.sha256()
    n = 0
    with open(src, "rb") as f:
        is_gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gz else open
    with opener(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
            if n > limit:
                raise OSError(f"decompresses to more than the expected {limit} bytes")
            fout.write(chunk)
    return h.hexdigest(), n


class _MirrorFailed(Exception):
    """One mirror gave no verified copy of a file: why (``reason``), whether it failed before any
    byte arrived (``connecting``: counts against :data:`CONNECT_BUDGET`), and whether the fetch's
    deadline passed (``final``: no further mirror is tried)."""

    def __init__(self, reason: str, connecting: bool, final: bool):
        super().__init__(reason)
        self.reason, self.connecting, self.final = reason, connecting, final


def _fetch_file(
    spec: DatasetSpec,
    f: IdxFile,
    directory: Path,
    mirrors: tuple[str, ...],
    report: Callback,
    deadline: float | None = None,
) -> Path:
    """Download one file from the first mirror that gives a verified copy; atomically cache it."""
    last_url, last_reason = "", "no mirror configured"
    connect_seconds = 0.0
    for i, base in enumerate(mirrors):
        if connect_seconds > CONNECT_BUDGET:
            break  # (the error names the last mirror tried and why)
        last_url = _join(base, f.stem + ".gz")
        t0 = time.monotonic()
        try:
            return _fetch_from(spec, f, directory, last_url, report, deadline)
        except _MirrorFailed as e:
            if e.connecting:
                connect_seconds += time.monotonic() - t0
            last_reason = e.reason
            if e.final:
                break
            if i < len(mirrors) - 1 and connect_seconds <= CONNECT_BUDGET:
                message = f"{last_reason}; trying the next mirror"
                report(DownloadEvent("failed", spec.name, f.stem, last_url, message=message))
    raise DownloadError(
        f"cannot download {spec.name} ({f.stem}.gz): {last_url or '-'}: {last_reason}; "
        f"pass --data-dir DIR (or set LOTTERY_JAX_DATA) with the four IDX files, "
        f"or set {ENV_MIRROR} to a reachable mirror"
    )


def _fetch_from(spec: DatasetSpec, f: IdxFile, directory: Path, url: str, report: Callback,
                deadline: float | None) -> Path:  # fmt: skip
    """One mirror's copy of ``f``: downloaded and verified into ``.part`` temporaries (named as
    :func:`_is_part_name` knows them), then cached; :class:`_MirrorFailed` when it does not
    verify. The temporaries are removed whatever happens."""
    gz_fd, gz_tmp = tempfile.mkstemp(prefix=f".{f.stem}.gz.", suffix=".part", dir=directory)
    raw_fd, raw_tmp = tempfile.mkstemp(prefix=f".{f.stem}.", suffix=".part", dir=directory)
    os.close(raw_fd)
    try:
        done, raw_sha = _download_verified(spec, f, url, gz_fd, Path(gz_tmp), Path(raw_tmp),
                                           report, deadline)  # fmt: skip
        final = _install(f, directory, Path(raw_tmp), raw_sha)
        report(DownloadEvent("done", spec.name, f.stem, url, done, done))
        return final
    finally:
        for p in (gz_tmp, raw_tmp, directory / f".{f.stem}.sha256.part"):
            Path(p).unlink(missing_ok=True)


def _download_verified(spec: DatasetSpec, f: IdxFile, url: str, gz_fd: int, gz_tmp: Path,
                       raw_tmp: Path, report: Callback,
                       deadline: float | None) -> tuple[int, str]:  # fmt: skip
    """Download ``url`` into ``gz_tmp`` (an open ``gz_fd``, closed here) and decompress it into
    ``raw_tmp``, checking size, content and checksum: (bytes downloaded, sha256 of the raw file).
    Any failure (requests', urllib3's, gzip's, ours) is a :class:`_MirrorFailed`."""
    import requests

    total: list[int | None] = [None]

    def on_total(n: int) -> None:
        total[0] = n or None
        report(DownloadEvent("start", spec.name, f.stem, url, 0, total[0]))

    def on_bytes(n: int) -> None:
        report(DownloadEvent("progress", spec.name, f.stem, url, n, total[0]))

    try:
        with os.fdopen(gz_fd, "wb") as fh:
            sink = _download(url, fh, on_total, on_bytes, _download_cap(f), deadline)
        _check_download(f, gz_tmp, sink, total[0])
        raw_sha, _ = _decompress(gz_tmp, raw_tmp, f.size or MAX_RAW_BYTES)
        if f.hash_of == "raw" and raw_sha != f.sha256:
            raise OSError(
                f"checksum mismatch: sha256 of the decompressed file is {raw_sha[:12]}..., "
                f"expected {f.sha256[:12]}..."
            )
    except Exception as e:  # (the next mirror is tried)
        connecting = isinstance(e, requests.ConnectionError | requests.Timeout) and not total[0]
        raise _MirrorFailed(_failure_reason(e), connecting, isinstance(e, _Deadline)) from None
    return sink.done, raw_sha


def _check_download(f: IdxFile, gz_tmp: Path, sink: _Sink, total: int | None) -> None:
    """The downloaded bytes are the file: no HTML page, all announced bytes, the pinned ``.gz``
    checksum where that is what is on record."""
    if _looks_like_html(gz_tmp):
        raise OSError("the mirror sent an HTML page, not the file (an error or login page?)")
    if total is not None and sink.done != total:
        raise OSError(f"transfer cut short ({sink.done} of {total} bytes)")
    if f.hash_of == "gz" and sink.sha.hexdigest() != f.sha256:
        raise OSError(
            f"checksum mismatch: sha256 of the .gz is {sink.sha.hexdigest()[:12]}..., "
            f"expected {f.sha256[:12]}..."
        )


def _failure_reason(e: BaseException) -> str:
    if isinstance(e, EOFError | zlib.error | gzip.BadGzipFile):
        return f"not a complete gzip file ({e})"
    return _reason(e)


def _install(f: IdxFile, directory: Path, raw_tmp: Path, raw_sha: str) -> Path:
    """Rename the verified raw file into the cache (with its ``.sha256`` record when only the
    ``.gz`` checksum is pinned)."""
    final = directory / f.stem
    if f.hash_of == "gz":
        side = directory / f"{f.stem}.sha256"
        side_tmp = directory / f".{f.stem}.sha256.part"
        side_tmp.write_text(f"{raw_sha}  {f.stem}\n")
        os.replace(side_tmp, side)
    os.chmod(raw_tmp, 0o644)
    os.replace(raw_tmp, final)
    return final


def fetch_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    spec: DatasetSpec | None = None,
    mirrors: tuple[str, ...] | None = None,
    callback: Callback | None = None,
) -> Path:
    """The cache folder holding the dataset's four verified raw IDX files, downloading what is
    missing (or no longer verifies). No request is made when the cache is complete.

    Args:
      name: ``mnist``, ``fashion_mnist`` or ``kmnist`` (or the name of ``spec``).
      root: cache root (default :func:`cache_root`).
      spec: the files and checksums to use instead of the built-in ones (tests pass their own).
      mirrors: base URLs (default ``LOTTERY_JAX_MIRROR``, else the dataset's).
      callback: receives :class:`DownloadEvent` s (default: the one installed by :func:`reporting`).
    """
    spec = spec or dataset_spec(name)
    directory = dataset_dir(spec.name, root)
    report = callback or _REPORTER.get() or (lambda event: None)
    statuses = [check_file(directory, f) for f in spec.files]
    if all(s.verified for s in statuses):
        return directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"cannot create the data cache {directory}: {e.strerror or e}; set {ENV_CACHE} to a "
            "writable folder or pass --data-dir"
        ) from None
    from filelock import FileLock, Timeout

    lock = FileLock(str(directory / ".lock"), timeout=LOCK_TIMEOUT)
    deadline = time.monotonic() + FETCH_DEADLINE
    try:
        with lock:
            _sweep_parts(directory, spec)
            for f in spec.files:
                if check_file(directory, f).verified:  # (another process may have fetched it)
                    continue
                (directory / f.stem).unlink(missing_ok=True)
                _fetch_file(spec, f, directory, mirrors or mirrors_for(spec), report, deadline)
    except Timeout:
        raise DownloadError(
            f"another process is still fetching {spec.name} into {directory} after "
            f"{LOCK_TIMEOUT:.0f} s of waiting; try again when it is done"
        ) from None
    except OSError as e:  # the cache itself (downloads' own errors are handled per mirror)
        raise DownloadError(
            f"cannot write the data cache {directory}: {e.strerror or e}; set {ENV_CACHE} to a "
            "writable folder or pass --data-dir"
        ) from None
    finally:
        report(DownloadEvent("end", spec.name))
    return directory


def _sweep_parts(directory: Path, spec: DatasetSpec | None = None) -> None:
    """Remove the ``.part`` files a killed fetch left behind (the caller holds the lock): only
    regular files named as :func:`_fetch_file` names them (``.<stem>[.gz].XXXX.part``)."""
    for p in directory.glob(".*.part"):
        if _is_part_name(p.name, spec) and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()


def _is_part_name(name: str, spec: DatasetSpec | None) -> bool:
    stems = [f.stem for f in spec.files] if spec is not None else list(STEMS)
    return any(
        name.startswith((f".{s}.gz.", f".{s}.")) and name.endswith(".part") for s in stems
    ) or name in {f".{s}.sha256.part" for s in stems}


def owned_files(directory: Path, spec: DatasetSpec) -> list[Path]:
    """The files of ``directory`` the tool wrote for ``spec``: the IDX files, their ``.sha256``
    records, the lock and download temporaries (nothing else there is the tool's)."""
    names = {".lock"} | {f.stem for f in spec.files} | {f"{f.stem}.sha256" for f in spec.files}
    out = []
    for p in sorted(directory.iterdir()) if directory.is_dir() else []:
        if p.name in names or _is_part_name(p.name, spec):
            out.append(p)
    return out


def remove_dataset(name: str, root: str | os.PathLike | None = None,
                   spec: DatasetSpec | None = None) -> int:  # fmt: skip
    """Delete the files the tool wrote for a dataset in its cache folder (used by tests and
    ``data fetch --force``), and the folder when nothing else is left in it; returns how many
    files. A user's own files there stay; a folder that is a symbolic link is refused (one line),
    as is any file of ours that is not a regular file."""
    spec = spec or dataset_spec(name)
    directory = dataset_dir(spec.name, root)
    if directory.is_symlink():
        raise UserError(
            f"the data cache folder {directory} is a symbolic link; not deleting through it "
            "(remove the files yourself, or set LOTTERY_JAX_CACHE to a real folder)"
        )
    if not directory.exists():
        return 0
    files = owned_files(directory, spec)
    for p in files:
        if p.is_symlink() or not p.is_file():
            raise UserError(f"{p} is not a regular file; not deleting it (remove it yourself)")
    try:
        for p in files:
            p.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()  # (only when empty: a user's files keep it)
    except OSError as e:
        raise UserError(f"cannot delete {directory}: {e.strerror or e}") from None
    return len(files)
