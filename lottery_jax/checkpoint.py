"""Weight files in PyTorch layout (``.npz``): what ``train`` writes and ``evaluate`` reads.

A file holds one array per parameter, keyed like a PyTorch state dict (``fc1.weight`` of shape
(out, in), ``conv1.weight`` of shape (out, in, kh, kw)), plus an optional ``__meta__`` entry: a JSON
string with the model name and the configuration that made it. Files without ``__meta__`` (such as
the paper's own target ``fc2_e10_h500.npz``) load too. Training state for resuming (optimizer
leaves, epoch) is kept in a separate ``resume.npz`` beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lottery_jax.errors import UserError
from lottery_jax.results import save_npz_atomic

META_KEY = "__meta__"
WEIGHT_PREFIX = "weights/"


def save_weights(
    path: str | os.PathLike, model_name: str, state: dict[str, np.ndarray], meta: dict | None = None
) -> Path:
    """Write ``state`` (PyTorch layout) and ``{"model": model_name, **meta}`` atomically."""
    meta = {"model": model_name, **(meta or {})}
    arrays = {k: np.asarray(v) for k, v in state.items()}
    arrays[META_KEY] = np.asarray(json.dumps(meta))
    return save_npz_atomic(path, arrays)


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


def save_resume(
    path: str | os.PathLike,
    opt_state: Any,
    epoch: int,
    meta: dict,
    weights: dict[str, np.ndarray] | None = None,
) -> Path:
    """Everything to resume exactly, in one atomically written file: optimizer state leaves, the
    number of finished epochs, ``meta`` and the model ``weights`` (PyTorch layout) of that epoch."""
    leaves = jax.tree.leaves(opt_state)
    arrays = {f"leaf{i:04d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays.update({f"{WEIGHT_PREFIX}{k}": np.asarray(v) for k, v in (weights or {}).items()})
    arrays["epoch"] = np.asarray(epoch)
    arrays[META_KEY] = np.asarray(json.dumps(meta))
    return save_npz_atomic(path, arrays)


def load_resume(
    path: str | os.PathLike, like_opt_state: Any, config: dict | None = None
) -> tuple[Any, int, dict, dict[str, np.ndarray]]:
    """Inverse of :func:`save_resume`: (opt_state, epoch, meta, weights); ``like_opt_state`` gives
    the tree structure.

    With ``config``, the file must have been written by a run of that same configuration (checked
    before its optimizer state is read, since another model's state has another structure).
    """
    arrays = read_npz(Path(path))
    try:
        meta = json.loads(str(arrays[META_KEY]))
        epoch = int(arrays["epoch"])
    except (KeyError, ValueError, json.JSONDecodeError):
        raise UserError(f"{path} is not a resume file; delete it to restart") from None
    if config is not None and meta.get("config") != config:
        raise UserError(
            f"{Path(path).parent} holds a run with a different configuration; "
            "use another --out or delete it"
        )
    treedef = jax.tree.structure(like_opt_state)
    like = jax.tree.leaves(like_opt_state)
    keys = [f"leaf{i:04d}" for i in range(treedef.num_leaves)]
    if any(k not in arrays for k in keys) or any(
        arrays[k].shape != np.shape(b) for k, b in zip(keys, like, strict=True)
    ):
        raise UserError(f"{path}: optimizer state does not fit this model; delete it to restart")
    state = jax.tree.unflatten(treedef, [jax.numpy.asarray(arrays[k]) for k in keys])
    weights = {k[len(WEIGHT_PREFIX) :]: v for k, v in arrays.items() if k.startswith(WEIGHT_PREFIX)}
    return state, epoch, meta, weights
