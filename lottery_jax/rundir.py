"""Run directories: how every command persists its work, and why a rerun can trust what it finds.

One module owns it, so that ``train``, ``approximate``, ``prune`` and ``sweep`` behave alike:

- **Up front.** :func:`prepare_dir` creates the output directory and proves it writable (it
  writes and removes a probe file) before any work, so a bad ``--out`` is a one-line error, not a
  traceback after an epoch of training.
- **One writer.** A run holds an exclusive lock (``.lock``, an OS file lock from :mod:`filelock`)
  while it writes; the holder (pid, host, command, start time) is recorded beside it in
  ``.lock.json``, so a second run is refused with one line naming the holder. The OS drops the lock
  when its process dies, so a killed run never blocks the next one.
- **Same arguments.** ``run.json`` records the run's arguments and their fingerprint (sha256 of the
  canonical JSON). A rerun with other arguments is refused, naming the first setting that differs.
- **Files that belong together commit together.** :meth:`RunDir.commit` writes every file to a
  temporary sibling, then writes the journal ``.commit.json`` (each file's sha256 and temporary name)
  atomically: that rename is the commit point. The temporaries are then renamed into place; a run
  killed in between is completed (rolled forward) by the next one, and a run killed before the
  journal leaves the previous commit untouched. A rerun therefore finds the files of one commit,
  never a mix of two epochs.
- **Sealed pieces.** Chunks (``approximate``) and partial states (``prune``/``sweep``) are single
  ``.npz`` files that carry the fingerprint of the run that wrote them and a sha256 of their
  contents (:func:`write_sealed`). A truncated, bit-flipped or foreign piece is detected on reading
  (:func:`read_sealed`), deleted and recomputed; it is never reused and never raises a zip error.
- **No litter.** Temporary files (``.lottery-jax.NAME.PID-HEX.tmp``) that an interrupted writer
  left are removed the next time the directory is opened under its lock: only names of that form
  (and the first release's ``.NAME.PID-HEX.tmp``), only regular files, only in the folders the tool
  writes them to (the run directory, its ``chunks/``, the folders of committed files); links are
  never followed, so a user's own ``.draft.tmp`` or a linked folder is never touched.
- **Names are never paths.** A chunk's file name is derived from its name only when that is a
  plain file name (letters, digits, ``._-``); otherwise it is a digest, and the name itself stays
  inside the sealed file. The journal's file names must be plain relative paths.
- **Default folders.** :func:`default_run_dir` names a command's default output directory after
  its settings (``runs/train-fc2-e2-seed0``), so two configurations never share one and a rerun
  of the same configuration finds its own.

Tree-shaped state (optimizer state) is stored as ``state/leaf00000``... arrays
(:func:`pack_tree`/:func:`unpack_tree`), one format for every resumable command.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import platform
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from lottery_jax.errors import UserError

RUN_FORMAT = "lottery-jax-run/1"
LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.json"
RUN_NAME = "run.json"
JOURNAL_NAME = ".commit.json"
TMP_SUFFIX = ".tmp"
#: Every temporary file the tool writes starts with this (so cleanup never mistakes a user's file).
TMP_PREFIX = ".lottery-jax."
_TMP_RE = re.compile(r"\.lottery-jax\..+\.\d+-[0-9a-f]{8}\.tmp")
_OLD_TMP_RE = re.compile(r"\.(?!lottery-jax\.).+\.\d+[-.][0-9a-f]+\.tmp")  # the first release's
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,150}")
#: Sub-folders of a run directory the tool writes temporaries into (besides committed files').
TMP_FOLDERS = ("chunks",)
SEAL_KEY = "__seal__"
LEAF_PREFIX = "state/leaf"

#: Called with one line of news (recovered commit, recomputed chunk, removed leftovers).
Log = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


# ----------------------------------------------------------------------------- canonical forms


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj`` (sorted keys, no spaces; paths and numpy scalars
    converted); equal arguments give equal text."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=True)


def to_jsonable(obj: Any) -> Any:
    """``obj`` with JSON's types only: mappings get string keys, tuples become lists, paths
    strings, numpy/JAX scalars and arrays Python numbers and lists. The one conversion behind
    every JSON file and fingerprint of the project."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) or _is_jax_array(obj):
        return np.asarray(obj).tolist()
    return obj


def _is_jax_array(obj: Any) -> bool:
    # (JAX is imported by the caller when it holds JAX arrays; this module does not need it.)
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(obj, jax.Array)


def fingerprint(args: Any) -> str:
    """sha256 (hex) of the canonical JSON of ``args``."""
    return hashlib.sha256(canonical_json(args).encode()).hexdigest()


def first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first setting (dotted key, old value, new value) where two argument records differ."""
    old, new = to_jsonable(old), to_jsonable(new)
    if isinstance(old, dict) and isinstance(new, dict):
        for k in [*old, *(k for k in new if k not in old)]:
            sub = f"{key}.{k}" if key else str(k)
            if k not in old:
                return sub, "(unset)", new[k]
            if k not in new:
                return sub, old[k], "(unset)"
            found = first_difference(old[k], new[k], sub)
            if found:
                return found
        return None
    if old == new or (_is_nan(old) and _is_nan(new)):
        return None
    return key or "arguments", old, new


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _show(v: Any) -> str:
    return json.dumps(v) if isinstance(v, str | dict | list) or v is None else str(v)


# ----------------------------------------------------------------------------- bytes of files


def npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """``np.savez_compressed`` of ``arrays`` into memory."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    """Indented JSON text of ``obj`` (numpy/jax scalars and arrays converted), newline-terminated."""
    return (json.dumps(to_jsonable(obj), indent=2) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str | None:
    """sha256 (hex) of a file's bytes, read in blocks; None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


# ----------------------------------------------------------------------------- default folders

#: Where the commands' default output directories go (relative to the working directory).
DEFAULT_ROOT = Path("runs")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UNSET = object()


def number_label(x: float) -> str:
    """A number in a folder name: ``%g`` (``0.5``, ``1e-05``) when that reads back as the very
    same float, else its exact ``repr`` (``0.1234561``): distinct numbers never share a name.
    ``-0`` is ``0``."""
    x = float(x) + 0.0
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


def default_run_dir(
    parts: Iterable[Any], settings: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Path:  # fmt: skip
    """A command's default output directory: ``runs/`` and its ``parts`` joined by ``-`` (the
    command and the settings that usually vary, e.g. ``["train", "fc2", "e2", "seed0"]``; numbers
    by :func:`number_label`, anything but letters, digits and ``._-`` replaced by ``_``), then,
    when some of ``settings`` differ from ``defaults`` (a setting missing there differs), ``-``
    and 8 hex digits of their fingerprint. The same settings always give the same folder (a rerun
    resumes there) and settings that differ give different ones (a new run is not refused)."""
    defaults = defaults or {}
    extra = {
        k: v for k, v in (settings or {}).items()
        if to_jsonable(v) != to_jsonable(defaults.get(k, _UNSET))
    }  # fmt: skip
    words = [number_label(p) if isinstance(p, float) else str(p) for p in parts]
    name = "-".join(w for w in (_UNSAFE.sub("_", w).strip("._") for w in words) if w)
    if extra:
        name += "-" + fingerprint(extra)[:8]
    return DEFAULT_ROOT / name


def _tmp_name(path: Path) -> Path:
    return path.with_name(tmp_name(path.name))


def tmp_name(name: str) -> str:
    """The name of a temporary sibling of the file ``name``: ``.lottery-jax.NAME.PID-HEX.tmp``
    (the one form :func:`clean_leftovers` removes)."""
    return f"{TMP_PREFIX}{name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}"


def is_tmp_name(name: str, of: Iterable[str] | None = None) -> bool:
    """Whether ``name`` is a temporary this tool writes (:func:`tmp_name`, or the first release's
    ``.NAME.PID-HEX.tmp``); with ``of``, a temporary of one of those file names."""
    if not (_TMP_RE.fullmatch(name) or _OLD_TMP_RE.fullmatch(name)):
        return False
    if of is None:
        return True
    return any(name.startswith((f"{TMP_PREFIX}{n}.", f".{n}.")) for n in of)


def safe_relative(name: Any) -> bool:
    """Whether ``name`` (from a journal, say) is a plain relative path: no absolute path, no
    ``..``, no empty part, no NUL or backslash."""
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        return False
    parts = name.split("/")
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def file_name_for(name: str) -> str:
    """A file name (one path component) for the piece ``name``: ``name`` itself when it is plain
    (letters, digits, ``._-``, not starting with a dot), else ``x-`` and its sha256 (a name from a
    weight file never becomes a path)."""
    if _PLAIN_NAME.fullmatch(name) and ".." not in name:
        return name
    return "x-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _write_new(path: Path, data: bytes, sync: bool) -> None:
    """Create ``path`` (must not exist) with ``data``; the usual file mode (0666 & ~umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _sync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes, *, sync: bool = False) -> Path:
    """Write ``data`` to a temporary sibling, then rename it onto ``path``; a one-line UserError
    when ``path`` is a directory."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give the path of the file to write")
    tmp = _tmp_name(path)
    _write_new(tmp, data, sync)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------- the directory


def ensure_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` (and parents); a one-line UserError when it cannot be a directory."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{what} {path}: {parent} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {what} {path}: {e.strerror or e}") from None
    return path


def prepare_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` (and parents) and prove it writable; a one-line UserError otherwise.

    The check writes and removes a probe file rather than asking ``os.access`` (which says yes to
    root on a read-only mount and cannot see every ACL).
    """
    path = ensure_dir(path, what)
    probe = path / tmp_name("write-probe")
    try:
        _write_new(probe, b"", sync=False)
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {what} {path}: {e.strerror or e}") from None
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON (:func:`json_bytes`) at ``path``, atomically; the parent directory
    is created."""
    path = Path(path)
    ensure_dir(path.parent)
    return write_atomic(path, json_bytes(obj))


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """``np.savez_compressed`` of ``arrays`` at ``path`` (the name kept exactly, no ``.npz``
    added), atomically; the parent directory is created."""
    path = Path(path)
    ensure_dir(path.parent)
    return write_atomic(path, npz_bytes(arrays))


def clean_leftovers(directory: Path, *, names: Iterable[str] | None = None,
                    recursive: bool = True) -> int:  # fmt: skip
    """Remove the temporary files (:func:`tmp_name`) an interrupted writer left in ``directory``.

    ``names`` limits it to the temporaries of those file names. With ``recursive``, the
    sub-folders the tool writes temporaries into (:data:`TMP_FOLDERS`) are cleaned too, unless
    they are run directories of their own (they hold a ``.lock``). Only regular files whose names
    the tool gives its temporaries are removed; links (to files or folders) are never followed or
    removed. Call it only while holding the lock that covers those files.
    """
    names = None if names is None else list(names)
    removed = 0
    for entry in _scan(directory):
        if entry.is_file(follow_symlinks=False) and is_tmp_name(entry.name, names):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    if recursive:
        for sub in TMP_FOLDERS:
            removed += _clean_folder(Path(directory) / sub, names)
    return removed


def _scan(directory: Path) -> list[os.DirEntry]:
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return []
        with os.scandir(directory) as it:
            return list(it)
    except OSError:
        return []


def _clean_folder(folder: Path, names: list[str] | None) -> int:
    """:func:`clean_leftovers` of a sub-folder (not recursive) if it is a real folder (not a
    link) and not a run directory of its own."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode) or os.path.lexists(folder / LOCK_NAME):
            return 0
    except OSError:
        return 0
    return clean_leftovers(folder, names=names, recursive=False)


class RunLocked(UserError):
    """Another live process holds the run directory (or run) this one wants to write."""


def _holder_record(command: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": platform.node(),
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _describe_holder(holder_path: Path) -> str:
    try:
        h = json.loads(holder_path.read_text())
        return (
            f"pid {h.get('pid')} on {h.get('host')} ({h.get('command')}), since {h.get('started')}"
        )
    except (OSError, ValueError, AttributeError, RecursionError):
        return "another process"


class Lock:
    """An exclusive, non-reentrant lock on ``path`` (an OS file lock) with a holder record.

    ``wait``: False refuses at once when held, True waits for the holder, a number waits that many
    seconds. A dead holder's lock is free again (the OS releases it with the process).
    """

    def __init__(self, path: Path, what: str, command: str = "", wait: bool | float = False):
        self.path = Path(path)
        self.holder = self.path.with_name(self.path.name + ".json")
        self.what = what
        self.command = command
        self.wait = wait
        self._lock = FileLock(str(self.path), timeout=self._timeout())

    def _timeout(self) -> float:
        if self.wait is True:
            return -1
        return 0 if self.wait is False else float(self.wait)

    def acquire(self) -> Lock:
        try:
            self._lock.acquire()
        except Timeout:
            raise RunLocked(
                f"{self.what} is in use by {_describe_holder(self.holder)}; wait for it to "
                "finish or write elsewhere"
            ) from None
        except OSError as e:
            raise UserError(f"cannot lock {self.what}: {e.strerror or e}") from None
        with contextlib.suppress(OSError):
            write_atomic(self.holder, json.dumps(_holder_record(self.command)).encode())
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                self.holder.unlink()
            self._lock.release()

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def commit(
    directory: Path,
    files: Mapping[str, bytes | Callable[[Path], Any]],
    state: Any = None,
    *,
    fingerprint: str | None = None,
) -> None:
    """Replace ``files`` (names relative to ``directory``) and ``state`` together.

    Each value is the file's bytes or a function that writes the file at the path it is given.
    Every file is written to a temporary sibling first; the journal that names them (with their
    sha256) is the commit point; then they are renamed into place. Call it only while holding the
    lock that covers ``directory``.
    """
    directory = Path(directory)
    entries = {}
    pending: list[tuple[Path, Path]] = []
    try:
        for name, data in files.items():
            final = directory / name
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = _tmp_name(final)
            pending.append((tmp, final))
            if callable(data):
                data(tmp)
                digest = file_sha256(tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            else:
                _write_new(tmp, data, sync=True)
                digest = _sha256(data)
            entries[name] = {"sha256": digest, "pending": tmp.name}
        journal = {"format": RUN_FORMAT, "fingerprint": fingerprint, "state": to_jsonable(state),
                   "files": entries}  # fmt: skip
        write_atomic(directory / JOURNAL_NAME, json.dumps(journal, indent=1).encode(), sync=True)
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    _sync_dir(directory)
    for tmp, final in pending:  # (an interrupt here is completed by the next run: recover)
        os.replace(tmp, final)


def committed(directory: Path, *, fingerprint: str | None = None, log: Log = _quiet) -> Any:
    """The ``state`` of the last :func:`commit` in ``directory`` if every file it names is present
    and intact (and, with ``fingerprint``, it was made by that run); else None, with a line to
    ``log`` saying what is wrong."""
    directory = Path(directory)
    journal = _read_journal(directory, log)
    if journal is None:
        return None
    if fingerprint is not None and journal.get("fingerprint") != fingerprint:
        log(f"{directory}: the last commit belongs to other arguments; starting over")
        return None
    if verified_files(directory, journal, log) is None:
        return None
    return journal.get("state")


def verified_files(directory: Path, journal: Any = None, log: Log = _quiet) -> set[str] | None:
    """The names of the files of the last commit in ``directory`` when every one of them is
    present and matches the journal's sha256; None when any does not (or there is no journal)."""
    journal = _read_journal(Path(directory), log) if journal is None else journal
    if journal is None:
        return None
    for name, entry in journal["files"].items():
        if file_sha256(Path(directory) / name) != entry.get("sha256"):
            log(f"{Path(directory) / name} does not match its commit record; starting over")
            return None
    return set(journal["files"])


def _read_journal(directory: Path, log: Log = _quiet) -> dict | None:
    """The journal ``.commit.json`` when it is one (an object whose files are plain relative
    names, each with an object entry); else None (a line to ``log`` when it exists but is not)."""
    path = directory / JOURNAL_NAME
    journal = _read_json(path)
    if journal is None:
        return None
    files = journal.get("files") if isinstance(journal, dict) else None
    files = {} if isinstance(journal, dict) and files is None else files
    if not isinstance(files, dict) or not all(
        safe_relative(k) and isinstance(v, dict) for k, v in files.items()
    ):
        log(f"{path} is not a commit record; ignoring it")
        return None
    return {**journal, "files": files}


def recover(directory: Path, log: Log = _quiet) -> None:
    """Finish a :func:`commit` that was interrupted after its journal (roll forward), then remove
    the temporaries an interrupted writer left. Call it only while holding the lock."""
    directory = Path(directory)
    journal = _read_journal(directory, log)
    folders = set()
    for name, entry in (journal or {"files": {}})["files"].items():
        final = directory / name
        folders.add(final.parent)
        pending = entry.get("pending")
        if not (isinstance(pending, str) and is_tmp_name(pending) and "/" not in pending):
            continue
        tmp = final.with_name(pending)
        ok = tmp.is_file() and not tmp.is_symlink() and not _has_link(directory, name)
        if ok and file_sha256(tmp) == entry.get("sha256"):  # (else: a leftover)
            os.replace(tmp, final)
            log(f"completed the interrupted commit of {final}")
    removed = clean_leftovers(directory)
    for folder in sorted(folders - {directory}):
        if not _has_link(directory, str(folder.relative_to(directory))):
            removed += clean_leftovers(folder, recursive=False)
    if removed:
        log(f"removed {removed} temporary file(s) left by an interrupted run in {directory}")


def _has_link(directory: Path, name: str) -> bool:
    """Whether a folder on the way from ``directory`` to ``directory/name`` is a link."""
    path = Path(directory)
    for part in Path(name).parts[:-1]:
        path = path / part
        if path.is_symlink():
            return True
    return False


def refuse_links(directory: Path, names: Iterable[str], what: str = "") -> None:
    """A one-line UserError when one of ``directory/<name>`` (files and folders the tool writes or
    locks there) is a symbolic link: the tool never writes through a link it did not make."""
    for name in names:
        path = Path(directory) / name
        if path.is_symlink():
            raise UserError(
                f"{path} is a symbolic link; {what or 'the tool'} writes only its own files "
                "inside the output directory (remove the link or use another directory)"
            )


@contextlib.contextmanager
def claim(
    out: Path, names: Iterable[str], command: str = "", wait: bool | float = False,
    log: Log = _quiet,
):  # fmt: skip
    """Hold the lock of every run folder ``out/<name>`` (results directories that many runs share:
    ``prune``/``sweep``); refused with one line naming the holder when another process has one.
    Once held, an interrupted :func:`commit` in those folders is completed and leftover
    temporaries are removed."""
    locks: list[Lock] = []
    try:
        for name in sorted(set(names)):
            refuse_links(out, [name], "a run folder")
            refuse_links(out / name, [LOCK_NAME], "a run folder")
            prepare_dir(out / name)
            locks.append(Lock(out / name / LOCK_NAME, f"run {out / name}", command, wait).acquire())
            recover(out / name, log)
        yield locks
    finally:
        for lock in reversed(locks):
            lock.release()


class RunDir:
    """A run directory held by this process: lock, fingerprint, commits and sealed pieces.

    Use as a context manager (or :meth:`open`/:meth:`close`)::

        with RunDir(out, command="train", args=config) as run:
            state = run.committed()            # the last commit (None: nothing yet)
            ...
            run.commit({"model.npz": npz_bytes(...), "results.json": json_bytes(...)},
                       state={"epochs_done": 3})

    ``args`` (optional, also later through :meth:`require`) are the settings that define the run:
    a directory holding a run of other settings is refused.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        command: str = "",
        args: Any = None,
        wait: bool | float = False,
        log: Log = _quiet,
    ):
        self.path = Path(path)
        self.command = command
        self.log = log
        self._args = args
        self._fp: str | None = None
        self._lock = Lock(self.path / LOCK_NAME, f"{self.path}", command, wait)
        self._open = False
        self._attached = False

    # -- life cycle
    def open(self) -> RunDir:
        prepare_dir(self.path)
        refuse_links(self.path, [LOCK_NAME, *TMP_FOLDERS], "a run directory")
        self._lock.acquire()
        self._open = True
        try:
            self._recover()
            if self._args is not None:
                self.require(self._args)
        except BaseException:
            self.close()
            raise
        return self

    def attach(self) -> RunDir:
        """Use the directory without its lock, for a secondary process of a multi-process run
        whose process 0 holds the lock: only sealed chunks may be written (each process writes
        its own); :meth:`commit` is refused. The arguments must still match (:meth:`require`)."""
        prepare_dir(self.path)
        refuse_links(self.path, TMP_FOLDERS, "a run directory")
        self._open = True
        self._attached = True
        if self._args is not None:
            self.require(self._args)
        return self

    def close(self) -> None:
        if self._open:
            self._open = False
            if not self._attached:
                self._lock.release()

    def __enter__(self) -> RunDir:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- identity
    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the run's arguments (after :meth:`require`)."""
        return self._fp

    def require(self, args: Any) -> str:
        """Record ``args`` as this run's settings, or refuse when the directory holds a run of
        other settings (naming the first that differs). Returns the fingerprint."""
        fp = fingerprint(args)
        path = self.path / RUN_NAME
        old = _read_json(path)
        if old is not None and not isinstance(old, dict):
            raise UserError(
                f"{path} is not a lottery-jax run record; delete it or use another output directory"
            )
        if old is not None and old.get("fingerprint") != fp:
            diff = first_difference(old.get("args"), to_jsonable(args))
            if diff is None:  # (same arguments, older fingerprint rule)
                diff = ("fingerprint", old.get("fingerprint"), fp)
            key, was, now = diff
            key = key.rsplit(".", 1)[-1]  # (the setting's own name: "seed", not "config.seed")
            raise UserError(
                f"{self.path} holds a run with {key}={_show(was)}; this run has "
                f"{key}={_show(now)} (a different configuration: use another output directory "
                "or delete it)"
            )
        if old is None:
            record = {"format": RUN_FORMAT, "command": self.command, "fingerprint": fp,
                      "args": to_jsonable(args)}  # fmt: skip
            write_atomic(path, (json.dumps(record, indent=2) + "\n").encode(), sync=True)
        self._args, self._fp = args, fp
        return fp

    # -- commits
    def commit(self, files: Mapping[str, bytes | Callable[[Path], Any]], state: Any = None) -> None:
        """Replace ``files`` (names relative to the directory) and ``state`` together
        (:func:`commit`)."""
        self._check_open()
        if self._attached:
            raise RuntimeError("an attached run directory (a secondary process) cannot commit")
        commit(self.path, files, state, fingerprint=self._fp)

    def committed(self) -> Any:
        """The ``state`` of the last commit whose files are all present and intact, else None
        (:func:`committed`)."""
        self._check_open()
        return committed(self.path, fingerprint=self._fp, log=self.log)

    def _recover(self) -> None:
        recover(self.path, self.log)

    # -- sealed pieces (chunks, partial states)
    def save_chunk(self, name: str, arrays: Mapping[str, Any]) -> Path:
        """Write ``chunks/<name>.npz`` sealed with this run's fingerprint."""
        self._check_open()
        return write_sealed(self.chunk_path(name), arrays, self._seal_id(name))

    def load_chunk(self, name: str, expect_shapes: Mapping[str, tuple] | None = None):
        """The arrays of ``chunks/<name>.npz`` if it is intact, of this run and of the expected
        shapes; else None (a bad chunk is deleted, so it is recomputed)."""
        self._check_open()
        return read_sealed(self.chunk_path(name), self._seal_id(name), expect_shapes, self.log)

    def chunk_path(self, name: str) -> Path:
        """``chunks/<file name>.npz``: the name itself when plain, else its digest
        (:func:`file_name_for`); the seal holds the name."""
        return self.path / "chunks" / f"{file_name_for(name)}.npz"

    def _seal_id(self, name: str) -> str:
        if self._fp is None:
            raise RuntimeError("RunDir.require(args) must come before chunks are used")
        return f"{self._fp}/{name}"

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError(f"run directory {self.path} is not open")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):  # (unreadable, not JSON, nested too deeply)
        return None


# ----------------------------------------------------------------------------- sealed files


def _seal(arrays: Mapping[str, np.ndarray], seal_id: str) -> str:
    h = hashlib.sha256(seal_id.encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"\0{k}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_sealed(path: str | os.PathLike, arrays: Mapping[str, Any], seal_id: str) -> Path:
    """One ``.npz`` holding ``arrays`` plus a seal: sha256 over ``seal_id`` (the writer's
    fingerprint and the piece's name) and every array; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: np.asarray(v) for k, v in arrays.items()}
    if SEAL_KEY in plain:
        raise ValueError(f"{SEAL_KEY} is reserved")
    plain[SEAL_KEY] = np.asarray(_seal(plain, seal_id))
    return write_atomic(path, npz_bytes(plain))


def read_sealed(
    path: str | os.PathLike,
    seal_id: str,
    expect_shapes: Mapping[str, tuple] | None = None,
    log: Log = _quiet,
) -> dict[str, np.ndarray] | None:
    """The arrays of a sealed file, or None when it is absent, unreadable, damaged, written by
    another run or of other shapes; a bad file is deleted (and the reason logged)."""
    path = Path(path)
    if not path.is_file():
        return None
    from lottery_jax.checkpoint import npz_size_problem

    reason = npz_size_problem(path)  # (sizes from the zip directory, before reading any data)
    arrays = None
    try:
        if reason is None:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zip, zlib, CRC, .npy header errors: damaged
        arrays, reason = None, f"unreadable ({type(e).__name__})"
    if arrays is not None:
        seal = arrays.pop(SEAL_KEY, None)
        if seal is None:
            reason = "not sealed"
        elif str(seal) != _seal(arrays, seal_id):
            reason = "written by another run or damaged (seal mismatch)"
        elif expect_shapes:
            for k, shape in expect_shapes.items():
                if k not in arrays or tuple(arrays[k].shape) != tuple(shape):
                    reason = f"{k} is not of shape {tuple(shape)}"
                    break
    if reason is None:
        return arrays
    log(f"{path}: {reason}; recomputing it")
    with contextlib.suppress(OSError):
        path.unlink()
    return None


# ----------------------------------------------------------------------------- trees


def pack_tree(tree: Any, prefix: str = LEAF_PREFIX) -> dict[str, np.ndarray]:
    """The leaves of a pytree (an optimizer state) as ``state/leaf00000``... arrays."""
    import jax

    return {f"{prefix}{i:05d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(tree))}


def unpack_tree(arrays: Mapping[str, np.ndarray], like: Any, prefix: str = LEAF_PREFIX) -> Any:
    """Inverse of :func:`pack_tree`; ``like`` gives the structure. None when the stored leaves do
    not fit it (count or shapes)."""
    import jax
    import jax.numpy as jnp

    like_leaves, treedef = jax.tree.flatten(like)
    keys = [f"{prefix}{i:05d}" for i in range(len(like_leaves))]
    stored = sorted(k for k in arrays if k.startswith(prefix))
    if stored != keys:
        return None
    if any(arrays[k].shape != np.shape(b) for k, b in zip(keys, like_leaves, strict=True)):
        return None
    return jax.tree.unflatten(treedef, [jnp.asarray(arrays[k]) for k in keys])
