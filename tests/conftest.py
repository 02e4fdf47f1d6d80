"""Shared fixtures: where the real data lives (../shared/data beside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _mnist_dir() -> Path | None:
    env = os.environ.get("LOTTERY_JAX_DATA")
    for cand in ([Path(env)] if env else []) + [SHARED_DATA / "mnist"]:
        if (cand / "train-images-idx3-ubyte.gz").exists() or (
            cand / "train-images-idx3-ubyte"
        ).exists():
            return cand
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX directory; tests that need it skip where it is absent."""
    found = _mnist_dir()
    if found is None:
        pytest.skip("MNIST IDX files not found (set LOTTERY_JAX_DATA or provide ../shared/data)")
    return found


@pytest.fixture(scope="session")
def paper_target() -> Path:
    """The paper's own FC2 target network (Experiment 1)."""
    path = SHARED_DATA / "paper-fc2" / "fc2_e10_h500.npz"
    if not path.exists():
        pytest.skip("paper target ../shared/data/paper-fc2/fc2_e10_h500.npz not found")
    return path


@pytest.fixture(scope="session")
def mnist_unit(mnist_dir):
    from lottery_jax.data import load_dataset

    return load_dataset(mnist_dir, inputs="unit")


@pytest.fixture(scope="session")
def mnist_normalized(mnist_dir):
    from lottery_jax.data import load_dataset

    return load_dataset(mnist_dir, inputs="normalized")
