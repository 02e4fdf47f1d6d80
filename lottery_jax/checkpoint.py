"""Weight files in PyTorch layout (``.npz``): what ``train`` writes and ``evaluate`` reads.

A file holds one array per parameter, keyed like a PyTorch state dict (``fc1.weight`` of shape
(out, in), ``conv1.weight`` of shape (out, in, kh, kw)), plus an optional ``__meta__`` entry: a JSON
string with the model name and the configuration that made it. Files without ``__meta__`` (such as
the paper's own target ``fc2_e10_h500.npz``) load too. Training state for resuming (optimizer
leaves, epoch) is kept in a separate ``resume.npz`` beside it; :mod:`lottery_jax.runs` commits the
three files of a training run together.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax.errors import UserError
from lottery_jax.rundir import write_npz

META_KEY = "__meta__"
WEIGHT_PREFIX = "weights/"
#: An ``.npz`` may declare this many bytes of arrays whatever its size, and beyond that at most
#: :data:`NPZ_MAX_RATIO` times its own size (compressed weights take about 1x; a file of large
#: zero arrays, a "zip bomb", far more): checked from the zip directory and each ``.npy`` header
#: before any array is read.
NPZ_FREE_BYTES = 256 << 20
NPZ_MAX_RATIO = 64
#: Seeds in metadata feed ``jax.random.key``: integers in [0, 2^32).
SEED_LIMIT = 2**32
_KEY_PART = re.compile(r"[^\x00-\x1f/\\]+")


def weights_arrays(
    model_name: str, state: dict[str, np.ndarray], meta: dict | None = None
) -> dict[str, np.ndarray]:
    """The arrays of a weight file: ``state`` (PyTorch layout) and ``{"model": model_name, **meta}``.

    ``meta`` should name the input preprocessing (``"inputs"``: ``unit`` or ``normalized``), so
    that ``evaluate`` scores the weights on the inputs they were made for.
    """
    meta = {"model": model_name, **(meta or {})}
    arrays = {k: np.asarray(v) for k, v in state.items()}
    arrays[META_KEY] = np.asarray(json.dumps(meta))
    return arrays


def weights_bytes(model_name: str, state: dict[str, np.ndarray], meta: dict | None = None) -> bytes:
    """The bytes of a weight file (for :meth:`lottery_jax.rundir.RunDir.commit`)."""
    from lottery_jax.rundir import npz_bytes

    return npz_bytes(weights_arrays(model_name, state, meta))


def save_weights(
    path: str | os.PathLike, model_name: str, state: dict[str, np.ndarray], meta: dict | None = None
) -> Path:
    """Write ``state`` (PyTorch layout) and ``{"model": model_name, **meta}`` atomically."""
    return write_npz(path, weights_arrays(model_name, state, meta))


def read_npz(path: str | os.PathLike, what: str = "weight file") -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no pickles); a one-line UserError naming ``what`` and the path
    when the file is missing or damaged, or declares more data than a file of its size may
    (:func:`npz_size_problem`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    problem = npz_size_problem(path)
    if problem:
        raise UserError(f"cannot read {what} {path}: {problem}")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:  # (closes fh on error)
            return {k: f[k] for k in f.files}
    except Exception as e:  # zip, zlib, .npy header errors: the file is damaged
        raise UserError(f"cannot read {what} {path}: {e}") from None


def npz_size_problem(path: str | os.PathLike) -> str | None:
    """Why the ``.npz`` at ``path`` may not be read (None: it may), from its zip directory and the
    header of each ``.npy`` member, before any array data is read: a member whose header declares
    more bytes than the zip directory says it holds, or declared sizes beyond
    :data:`NPZ_FREE_BYTES` and :data:`NPZ_MAX_RATIO` times the file's size. A file that is no zip
    at all is left to the reader (it says so)."""
    try:
        size = os.path.getsize(path)
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None
    total = 0
    with zf:
        for info in zf.infolist():
            total += info.file_size
            if info.filename.endswith(".npy"):
                declared = _npy_declared_bytes(zf, info)
                if isinstance(declared, str):
                    return f"member {info.filename!r}: {declared}"
                if declared > info.file_size:
                    return (f"member {info.filename!r} declares {declared:,} bytes of data but "
                            f"holds {info.file_size:,}")  # fmt: skip
    if total > max(NPZ_FREE_BYTES, NPZ_MAX_RATIO * size):
        return (f"its arrays would take {total:,} bytes, more than a {size:,}-byte file may "
                f"declare (at most {max(NPZ_FREE_BYTES, NPZ_MAX_RATIO * size):,})")  # fmt: skip
    return None


def _npy_declared_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> int | str:
    """Bytes of data the ``.npy`` header of ``info`` declares (shape x itemsize, exact integers),
    or what is wrong with the header."""
    from numpy.lib import format as npy

    try:
        with zf.open(info) as m:
            version = npy.read_magic(m)
            if version == (1, 0):
                shape, _, dtype = npy.read_array_header_1_0(m)
            elif version == (2, 0):
                shape, _, dtype = npy.read_array_header_2_0(m)
            else:
                return f"unsupported .npy format version {version}"
    except Exception as e:  # zip, zlib, header syntax: damaged
        return f"damaged .npy header ({type(e).__name__})"
    return math.prod(int(d) for d in shape) * int(dtype.itemsize)


def check_state_keys(keys, source: str) -> None:
    """Refuse key names no PyTorch state dict could have (they name tensors, never files): empty,
    a path (``/``, ``\\``), an empty or ``..`` part, a control character, over 256 characters."""
    for k in keys:
        parts = k.split(".")
        bad = not k or len(k) > 256 or any(p in ("", "..") for p in parts)
        if bad or not _KEY_PART.fullmatch(k):
            raise UserError(f"{source}: {k!r} is not a parameter name a PyTorch state dict has")


def _check_weights_meta(meta: dict[str, Any], path: Path) -> None:
    """The metadata the readers use must have the right types (one line otherwise)."""
    from lottery_jax.data import INPUT_MODES

    def bad(key: str, want: str) -> UserError:
        return UserError(f"weight file {path}: {META_KEY} {key} {meta[key]!r} is not {want}")

    if "model" in meta and not (isinstance(meta["model"], str) and meta["model"]):
        raise bad("model", "a model name")
    if "inputs" in meta and meta["inputs"] is not None and meta["inputs"] not in INPUT_MODES:
        raise bad("inputs", f"one of {', '.join(INPUT_MODES)}")
    seed = meta.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed < SEED_LIMIT):
        raise bad("seed", "an integer in [0, 2^32)")
    hidden = meta.get("hidden")
    if hidden is not None and not (_is_int(hidden) and 0 < hidden < 2**31):
        raise bad("hidden", "a positive integer")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a weight file: (PyTorch-layout state, metadata dict; empty when the file has none)."""
    from lottery_jax.tickets import parse_json_object

    path = Path(path)
    arrays = read_npz(path)
    meta: dict[str, Any] = {}
    if META_KEY in arrays:
        meta = parse_json_object(arrays.pop(META_KEY), f"weight file {path}: {META_KEY} entry")
        _check_weights_meta(meta, path)
    if not arrays:
        raise UserError(f"weight file {path} holds no arrays")
    check_state_keys(arrays, f"weight file {path}")
    return arrays, meta


def resume_arrays(
    opt_state: Any, epoch: int, meta: dict, weights: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Everything to resume exactly: optimizer state leaves (``state/leaf00000``..., the one
    format of every resumable command, :func:`lottery_jax.rundir.pack_tree`), the number of
    finished epochs, ``meta`` and the model ``weights`` (PyTorch layout) of that epoch."""
    from lottery_jax.rundir import pack_tree

    arrays = pack_tree(opt_state)
    arrays.update({f"{WEIGHT_PREFIX}{k}": np.asarray(v) for k, v in (weights or {}).items()})
    arrays["epoch"] = np.asarray(epoch)
    arrays[META_KEY] = np.asarray(json.dumps(meta))
    return arrays


def parse_resume(
    arrays: dict[str, np.ndarray], like_opt_state: Any, config: dict | None = None, *, source=""
) -> tuple[Any, int, dict, dict[str, np.ndarray]]:
    """Inverse of :func:`resume_arrays`: (opt_state, epoch, meta, weights); ``like_opt_state``
    gives the tree structure. Files of the first release (leaves ``leaf0000``...) load too.

    With ``config``, the file must have been written by a run of that same configuration (checked
    before its optimizer state is read, since another model's state has another structure).
    """
    from lottery_jax.rundir import LEAF_PREFIX, unpack_tree
    from lottery_jax.tickets import parse_json_object

    try:
        meta = parse_json_object(arrays[META_KEY], f"{source}: {META_KEY}")
        epoch = int(arrays["epoch"])
    except (KeyError, ValueError, TypeError):  # (UserError is a ValueError)
        raise UserError(f"{source} is not a resume file; delete it to restart") from None
    if config is not None and meta.get("config") != config:
        raise UserError(
            f"{Path(source).parent} holds a run with a different configuration; "
            "use another output directory or delete it"
        )
    leaves = {k: v for k, v in arrays.items() if k.startswith(LEAF_PREFIX)}
    if not leaves:  # the first release: leaf0000, leaf0001, ...
        leaves = {f"{LEAF_PREFIX}{int(k[4:]):05d}": v for k, v in arrays.items()
                  if k.startswith("leaf") and k[4:].isdigit()}  # fmt: skip
    state = unpack_tree(leaves, like_opt_state)
    if state is None:
        raise UserError(f"{source}: optimizer state does not fit this model; delete it to restart")
    weights = {k[len(WEIGHT_PREFIX) :]: v for k, v in arrays.items() if k.startswith(WEIGHT_PREFIX)}
    return state, epoch, meta, weights
