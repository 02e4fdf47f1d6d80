"""The paper's own trained networks, shipped as package data (Apache-2.0; see ``NOTICE``).

- ``paper-fc2``: the Experiment 1 target (784-500-10, no biases), 97.19% on MNIST with inputs in
  [0, 1] (its metadata says ``inputs: unit``).
- ``paper-lenet5``: the trained LeNet5 whose convolution layers every published redundant and wide
  LeNet5 run uses, 98.44% on MNIST with mean/std-normalized inputs (``inputs: normalized``).

Beside them, ``published_runs.csv.gz`` holds the published Experiment 2 run records (read them with
:func:`lottery_jax.pruning.published.load_published`).

All three come from the paper's official repository (https://github.com/acnagle/optimal-lottery-tickets),
converted to numpy in PyTorch layout with a ``__meta__`` entry (see
:mod:`lottery_jax.checkpoint`).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from lottery_jax.errors import UserError

#: Built-in network name -> file in this package.
NETWORKS = {"paper-fc2": "fc2_e10_h500.npz", "paper-lenet5": "lenet5_e50_h500.npz"}
#: The model each one is, and the accuracy the paper published for it (MNIST test set).
MODELS = {"paper-fc2": "fc2", "paper-lenet5": "lenet5"}
PUBLISHED_ACCURACY = {"paper-fc2": 97.19, "paper-lenet5": 98.44}


def paper_weights(name: str) -> Path:
    """Path of a built-in network's weight file (``paper-fc2`` or ``paper-lenet5``)."""
    try:
        filename = NETWORKS[name]
    except KeyError:
        raise UserError(
            f"unknown built-in network {name!r} (choose from {', '.join(NETWORKS)})"
        ) from None
    path = Path(str(files(__name__) / filename))
    if not path.is_file():  # pragma: no cover - a broken install
        raise UserError(f"the built-in network {name} is missing from the installation ({path})")
    return path


def resolve_weights(value: str | os.PathLike) -> Path:
    """A built-in network's name -> its file; anything else is taken as a path."""
    text = os.fspath(value)
    return paper_weights(text) if text in NETWORKS else Path(text)
