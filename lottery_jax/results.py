"""Writing results safely: every file goes to a temporary sibling first, then is renamed."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lottery_jax.errors import UserError


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create the output directory ``path`` (and parents); a one-line error if it cannot be one."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"output path {parent} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {path}: {e.strerror}") from None
    return path


def _atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write through ``write(tmp_path)`` then rename onto ``path`` (same directory, atomic)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give the path of the file to write")
    ensure_dir(path.parent)
    # A unique sibling created with mode 0666, so the process umask gives the usual file mode
    # (mkstemp would make it 0600, and reading the umask means setting it: global state).
    from lottery_jax.rundir import tmp_name  # (the one form of the tool's temporaries)

    tmp_path = path.parent / tmp_name(path.name)
    os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | jax.Array):
        return np.asarray(obj).tolist()
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy/jax scalars and arrays converted)."""
    text = json.dumps(_to_jsonable(obj), indent=2, sort_keys=False) + "\n"
    return _atomic(path, lambda p: p.write_text(text))


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """``np.savez_compressed`` to ``path`` atomically (the name is kept exactly, no ``.npz`` added)."""

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})

    return _atomic(path, write)


def device_summary() -> dict[str, Any]:
    """What ran the computation: backend, devices, versions (recorded in every results.json)."""
    from lottery_jax.data import UNVERIFIED_LOADS

    devices = jax.devices()
    extra = {"unverified_data": list(UNVERIFIED_LOADS)} if UNVERIFIED_LOADS else {}
    return {
        **extra,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "jax_version": jax.__version__,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }
