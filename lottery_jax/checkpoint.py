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
import os
from pathlib import Path
from typing import Any

import numpy as np

from lottery_jax.errors import UserError
from lottery_jax.rundir import write_npz

META_KEY = "__meta__"
WEIGHT_PREFIX = "weights/"


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
    when the file is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:  # (closes fh on error)
            return {k: f[k] for k in f.files}
    except Exception as e:  # zip, zlib, .npy header errors: the file is damaged
        raise UserError(f"cannot read {what} {path}: {e}") from None


def load_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a weight file: (PyTorch-layout state, metadata dict; empty when the file has none)."""
    path = Path(path)
    arrays = read_npz(path)
    meta: dict[str, Any] = {}
    if META_KEY in arrays:
        try:
            meta = json.loads(str(arrays.pop(META_KEY)))
        except json.JSONDecodeError as e:
            raise UserError(f"weight file {path}: corrupt {META_KEY} entry ({e})") from None
    if not arrays:
        raise UserError(f"weight file {path} holds no arrays")
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

    try:
        meta = json.loads(str(arrays[META_KEY]))
        epoch = int(arrays["epoch"])
    except (KeyError, ValueError, json.JSONDecodeError):
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
