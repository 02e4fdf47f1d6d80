"""Shared fixtures: where the real MNIST is (``LOTTERY_JAX_DATA``, else a verified download cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _mnist_dir() -> Path | None:
    """``LOTTERY_JAX_DATA`` (CI points it at a local copy), else the download cache when it holds a
    verified MNIST (``lottery-jax data fetch``); tests never download."""
    env = os.environ.get("LOTTERY_JAX_DATA")
    if env:
        cand = Path(env)
        if (cand / "train-images-idx3-ubyte.gz").exists() or (
            cand / "train-images-idx3-ubyte"
        ).exists():
            return cand
        return None
    from lottery_jax import download

    if all(s.verified for s in download.dataset_status("mnist")):
        return download.dataset_dir("mnist")
    return None


#: Found once, before any test changes the environment (the download tests point the cache away).
_MNIST_DIR = _mnist_dir()


def _share_compiled_programs() -> str | None:
    """One JAX persistent compilation cache for the whole run: the controller makes it (a fresh
    temporary folder, removed when the run ends) before any worker starts or jax is imported, and
    the xdist workers and the CLI subprocesses inherit it through the environment, so a program
    that several tests compile (the same network, step and shapes) is compiled once. A cache hit
    loads the same executable, so results are unchanged. A user's own cache setting is kept."""
    import tempfile

    if "JAX_COMPILATION_CACHE_DIR" in os.environ or "PYTEST_XDIST_WORKER" in os.environ:
        return None
    folder = tempfile.mkdtemp(prefix="lottery-jax-tests-jit-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    return folder


#: The folder this (controller) process made, else None.
_JIT_CACHE = _share_compiled_programs()


def pytest_unconfigure(config):
    if _JIT_CACHE is not None:
        import shutil

        shutil.rmtree(_JIT_CACHE, ignore_errors=True)


def pytest_configure(config):
    """Under CI (``CI=true``) a missing MNIST fails the run instead of skipping the data tests."""
    if os.environ.get("CI", "").lower() == "true" and _MNIST_DIR is None:
        raise pytest.UsageError(
            "CI=true but MNIST was not found: set LOTTERY_JAX_DATA to the folder of the four IDX "
            f"files (now {os.environ.get('LOTTERY_JAX_DATA')!r})"
        )


def _module_fixtures(item) -> bool:
    """Whether ``item`` uses a module- or class-scoped fixture (a sweep, trained tickets...)."""
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(d[-1].scope in ("module", "class") for d in defs.values() if d)


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``--dist loadgroup``) the tests of one file that share its module-
    (or class-) scoped fixtures run on one worker, so those fixtures are built once; every other
    test is handed out on its own. (A wrapper: the marks must be there before xdist's own hook
    reads them.)"""
    for item in items:
        if _module_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    return (yield)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX directory; tests that need it skip where it is absent."""
    found = _MNIST_DIR
    if found is None:
        pytest.skip("MNIST not found (set LOTTERY_JAX_DATA, or run `lottery-jax data fetch`)")
    return found


@pytest.fixture(scope="session")
def paper_target() -> Path:
    """The paper's own FC2 target network (Experiment 1), built into the package."""
    from lottery_jax.paper import paper_weights

    return paper_weights("paper-fc2")


@pytest.fixture(scope="session")
def mnist_unit(mnist_dir):
    from lottery_jax.data import load_dataset

    return load_dataset(mnist_dir, inputs="unit")


@pytest.fixture(scope="session")
def mnist_normalized(mnist_dir):
    from lottery_jax.data import load_dataset

    return load_dataset(mnist_dir, inputs="normalized")


# --- synthetic IDX data (tests/test_data.py, test_train.py, test_cli_train.py) ---------------


def write_idx_file(path: Path, array, *, magic: int | None = None, gz: bool | None = None) -> Path:
    """Write a uint8 array as an IDX file (gzip when ``path`` ends in .gz); ``magic`` overrides."""
    import gzip

    import numpy as np

    array = np.asarray(array, np.uint8)
    if magic is None:
        magic = 0x803 if array.ndim == 3 else 0x801
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    gz = path.name.endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def synthetic_digits(n: int, seed: int):
    """A learnable 10-class toy set: class c lights a 6x6 block at its own place, plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = 2 + 8 * (int(c) // 4), 2 + 6 * (int(c) % 4)
        images[i, r : r + 6, col : col + 6] = 200 + rng.integers(0, 56)
    return images, labels


def write_idx_dir(directory: Path, *, n_train: int = 256, n_test: int = 128, gz=False) -> Path:
    """The four standard IDX files of a synthetic dataset in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    tr_x, tr_y = synthetic_digits(n_train, 1)
    te_x, te_y = synthetic_digits(n_test, 2)
    write_idx_file(directory / f"train-images-idx3-ubyte{suffix}", tr_x)
    write_idx_file(directory / f"train-labels-idx1-ubyte{suffix}", tr_y)
    write_idx_file(directory / f"t10k-images-idx3-ubyte{suffix}", te_x)
    write_idx_file(directory / f"t10k-labels-idx1-ubyte{suffix}", te_y)
    return directory


@pytest.fixture(scope="session")
def tiny_idx_dir(tmp_path_factory) -> Path:
    """A small synthetic IDX dataset (256 train / 128 test images), raw files. Do not modify."""
    return write_idx_dir(tmp_path_factory.mktemp("tiny-idx"))


def tiny_block_data(n_train: int = 128, n_test: int = 50, seed: int = 0):
    """Learnable synthetic 28x28 data on the device: the label is the brightness of a pixel block."""
    import jax.numpy as jnp
    import numpy as np

    from lottery_jax.data import Dataset

    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, n)
        x = rng.normal(0, 0.3, (n, 28, 28, 1)).astype(np.float32)
        for i, c in enumerate(y):
            x[i, 2 * c : 2 * c + 2, :, 0] += 2.0
        return jnp.asarray(x), jnp.asarray(y, jnp.int32)

    tx, ty = make(n_train)
    vx, vy = make(n_test)
    return Dataset(tx, ty, vx, vy, "synthetic")


@pytest.fixture(scope="session", autouse=True)
def _private_tempdir():
    """Send every temporary file of the run to one folder removed at the end: tensorflow-datasets'
    mock builders (``DatasetInfo.initialize_from_bucket``) leave a ``tmp*tfds`` folder per use."""
    from lottery_jax.data import scratch_tempdir

    with scratch_tempdir(prefix="lottery-jax-tests-"):
        yield


@pytest.fixture(scope="session", autouse=True)
def _scratch_working_directory(tmp_path_factory):
    """Run every test in a scratch working directory: commands whose default ``--out`` is
    ``runs/...`` (evaluate, prune, ...) must never write into the checkout the tests run from."""
    saved = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(saved)
