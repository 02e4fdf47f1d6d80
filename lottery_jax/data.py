"""Datasets: IDX files read directly (MNIST, Fashion-MNIST, KMNIST, ...), from a directory, from
a copy prepared with tensorflow-datasets, or from the verified download cache (:mod:`.download`).

The whole dataset lives on the device as float32 arrays; training draws each epoch's batches there
from a seeded permutation (see :func:`lottery_jax.training.epoch_indices`), so there is no per-sample
Python loader.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import zlib
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from lottery_jax.errors import UserError

#: Mean and std of the MNIST training pixels after scaling to [0, 1] (the paper's Experiment 2).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
INPUT_MODES = ("unit", "normalized")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
NUM_CLASSES = 10


class Dataset(NamedTuple):
    """Preprocessed images (N, 28, 28, 1) float32 and int32 labels, on the default device."""

    train_images: jnp.ndarray
    train_labels: jnp.ndarray
    test_images: jnp.ndarray
    test_labels: jnp.ndarray
    name: str


#: The largest example count an IDX file may declare: far above the known datasets (MNIST,
#: Fashion-MNIST and KMNIST have 60,000 + 10,000; EMNIST digits 240,000), so a header can never
#: make a small file take gigabytes.
MAX_IDX_COUNT = 1_000_000
#: ... and at most this many bytes of data in all (MNIST's training images: 47 MB).
MAX_IDX_BYTES = 1 << 30
#: A ``.gz`` IDX file may declare this many bytes whatever its size, beyond that at most
#: :data:`IDX_MAX_RATIO` times its own size (MNIST's images compress about 5:1; zeros, a "gzip
#: bomb", 1000:1): checked from the header before anything is decompressed.
IDX_FREE_BYTES = 64 << 20
IDX_MAX_RATIO = 64


def _open_idx(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The (decompressed) bytes of ``path``; with ``limit``, at most that many."""
    try:
        with _open_idx(path) as f:
            return f.read() if limit is None else f.read(limit)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise UserError(f"cannot read {path}: {e}") from None


def _idx_dims(path: Path, head: bytes, expect_magic: int | None) -> tuple[int, tuple[int, ...]]:
    """(header length, dimensions) of an IDX header, the dimensions bounded (28x28 images, at
    most :data:`MAX_IDX_COUNT` examples and :data:`MAX_IDX_BYTES` bytes) before any data is read."""
    if len(head) < 8:
        raise UserError(f"{path}: truncated IDX header ({len(head)} bytes)")
    magic = int.from_bytes(head[:4], "big")
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC) or (expect_magic and magic != expect_magic):
        want = f" (expected {expect_magic:#010x})" if expect_magic else ""
        raise UserError(f"{path}: bad IDX magic number {magic:#010x}{want}")
    ndim = 3 if magic == IMAGE_MAGIC else 1
    header = 4 + 4 * ndim
    if len(head) < header:
        raise UserError(f"{path}: truncated IDX header ({len(head)} bytes)")
    dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[0] > MAX_IDX_COUNT:
        raise UserError(f"{path}: header says {dims[0]:,} examples (at most {MAX_IDX_COUNT:,})")
    if math.prod(dims) > MAX_IDX_BYTES:
        raise UserError(f"{path}: header says {dims}: {math.prod(dims):,} bytes (at most "
                        f"{MAX_IDX_BYTES:,})")  # fmt: skip
    return header, dims


def _check_gz_ratio(path: Path, dims: tuple[int, ...], expected: int) -> None:
    """A ``.gz`` file may not declare more than :data:`IDX_FREE_BYTES` or :data:`IDX_MAX_RATIO`
    times its size (a raw file is read only as far as it is long)."""
    if path.suffix != ".gz":
        return
    size = path.stat().st_size
    if expected > max(IDX_FREE_BYTES, IDX_MAX_RATIO * size):
        raise UserError(
            f"{path}: header says {dims} ({expected:,} bytes), more than a {size:,}-byte .gz "
            f"file may hold (at most {max(IDX_FREE_BYTES, IDX_MAX_RATIO * size):,})"
        )


def read_idx(path: str | os.PathLike, *, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a uint8 array, validating header and length.

    Images (magic 0x803) come back as (count, rows, cols), labels (magic 0x801) as (count,). The
    header is read and bounded first (:func:`_idx_dims`), so at most the bytes it declares (plus
    one, to tell trailing data) are ever read or decompressed.
    """
    return _read_idx_raw(Path(path), expect_magic)[0]


def _read_idx_raw(path: Path, expect_magic: int | None) -> tuple[np.ndarray, bytes]:
    """:func:`read_idx` and the decompressed file's bytes (the array is a view of them)."""
    header, dims = _idx_dims(path, _read_bytes(path, 16), expect_magic)
    expected = math.prod(dims)
    _check_gz_ratio(path, dims, expected)
    raw = _read_bytes(path, header + expected + 1)
    body = len(raw) - header
    if body != expected:
        kind = "truncated" if body < expected else "has trailing data"
        raise UserError(f"{path}: {kind}: header says {dims} ({expected} bytes), found {body}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims), raw


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise UserError(f"missing IDX file {data_dir / stem}[.gz]")


def read_idx_dir(data_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and cross-check the four standard IDX files of ``data_dir`` (uint8 arrays)."""
    return _read_idx_dir(Path(data_dir))[0]


def _read_idx_dir(data_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, tuple[Path, bytes]]]:
    """:func:`read_idx_dir` and, per file, its path and decompressed bytes."""
    if not data_dir.is_dir():
        raise UserError(f"data directory {data_dir} does not exist")
    out, raws = {}, {}
    for key, stem in IDX_FILES.items():
        path = _find(data_dir, stem)
        magic = IMAGE_MAGIC if "images" in key else LABEL_MAGIC
        arr, raws[key] = _read_idx_raw(path, magic)
        raws[key] = (path, raws[key])
        if "labels" in key and arr.size and arr.max() >= NUM_CLASSES:
            raise UserError(f"{path}: label {int(arr.max())} outside 0..{NUM_CLASSES - 1}")
        if "images" in key and arr.shape[1:] != (28, 28):
            raise UserError(f"{path}: images are {arr.shape[1]}x{arr.shape[2]}, expected 28x28")
        out[key] = (arr, path)
    for split in ("train", "test"):
        (imgs, ipath), (labels, lpath) = out[f"{split}_images"], out[f"{split}_labels"]
        if imgs.shape[0] != labels.shape[0]:
            raise UserError(
                f"{lpath}: {labels.shape[0]} labels but {ipath.name} has {imgs.shape[0]} images"
            )
        if imgs.shape[0] == 0:
            raise UserError(f"{ipath}: no images")
    return {k: v[0] for k, v in out.items()}, raws


# ----------------------------------------------------------------------------- known datasets

ENV_ALLOW_UNVERIFIED = "LOTTERY_JAX_ALLOW_UNVERIFIED_DATA"
#: Data directories loaded although they contradict a known dataset (recorded in results.json).
UNVERIFIED_LOADS: list[str] = []
#: The command line's ``--allow-unverified-data`` (set by every invocation).
CLI_ALLOW_UNVERIFIED = [False]
_VERDICTS: dict[tuple, str] = {}


def _known_files() -> dict[str, tuple[str, str]]:
    """sha256 of every pinned decompressed IDX file -> (dataset, file stem) (MNIST and
    Fashion-MNIST: :data:`lottery_jax.download.DATASETS`)."""
    from lottery_jax.download import DATASETS

    return {f.sha256: (spec.name, f.stem) for spec in DATASETS.values() for f in spec.files
            if f.hash_of == "raw"}  # fmt: skip


def check_known_dataset(raws: dict[str, tuple[Path, bytes]]) -> str:
    """Check a data directory against the datasets whose files we know (their sha256).

    The two label files are hashed first (70 KB): when neither is a known file the data is some
    other dataset (``"unknown"``, accepted as it is). When one is, every file must be that
    dataset's file of its role, else a one-line UserError names the first that is not (and says
    when it is the known file of another role: train and test swapped). Returns the dataset's
    name. The verdict is kept per process, keyed by each file's path, size and mtime."""
    key = tuple((str(p.resolve()), *_stamp(p)) for p, _ in raws.values())
    if key in _VERDICTS:
        return _VERDICTS[key]
    known = _known_files()
    labels = [hashlib.sha256(raws[k][1]).hexdigest() for k in ("train_labels", "test_labels")]
    names = [known[h][0] for h in labels if h in known]
    if not names:
        verdict = "unknown"
    else:
        verdict = names[0]
        for role, (path, raw) in raws.items():
            _check_role(path, raw, verdict, IDX_FILES[role], known)
    _VERDICTS[key] = verdict
    return verdict


def dataset_identity(name: str) -> str:
    """Which dataset a recorded Dataset name (``results.json``'s ``config.data``) holds, as far as
    this machine can tell: the TFDS or download-cache dataset it names (``tfds:X``,
    ``cache:X:...``); for an IDX folder (``idx:DIR``) the known dataset its files are, checked now
    by sha256 (:func:`check_known_dataset`: ``"mnist"``, ``"fashion_mnist"``, ``"unknown"`` for
    other data), ``"unverified"`` when they contradict a known dataset or were used that way, and
    ``"unchecked"`` when the folder is not the data folder named here (``LOTTERY_JAX_DATA``): a
    path read from a record is never opened, only compared with it; ``"unknown"`` for any other
    name (data built in memory)."""
    if name.startswith("tfds:"):
        return name[len("tfds:") :]
    if name.startswith("cache:"):
        return name.split(":")[1]
    if name.startswith("idx:"):
        if name.endswith(" (unverified)"):
            return "unverified"
        return _idx_identity(name[len("idx:") :])
    return "unknown"


def _idx_identity(folder: str) -> str:
    named = os.environ.get("LOTTERY_JAX_DATA")
    if not named or Path(folder).resolve() != Path(named).resolve():
        return "unchecked"
    return _named_folder_identity(str(Path(named).resolve()))


@functools.lru_cache(maxsize=4)
def _named_folder_identity(folder: str) -> str:
    try:
        return check_known_dataset(_read_idx_dir(Path(folder))[1])
    except UserError:
        return "unverified"
    except OSError:
        return "unchecked"


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _check_role(path: Path, raw: bytes, dataset: str, stem: str, known: dict) -> None:
    got = hashlib.sha256(raw).hexdigest()
    if known.get(got) == (dataset, stem):
        return
    if got in known:
        other_set, other = known[got]
        raise UserError(
            f"{path} is {other_set}'s {other}, not its {stem} (train and test files swapped?); "
            f"pass --allow-unverified-data (or set {ENV_ALLOW_UNVERIFIED}=1) to use it anyway"
        )
    raise UserError(
        f"{path} is not {dataset}'s {stem} (sha256 {got[:12]}...), although the labels are "
        f"{dataset}'s; pass --allow-unverified-data (or set {ENV_ALLOW_UNVERIFIED}=1) to use it "
        "anyway"
    )


def _allow_unverified(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    env = os.environ.get(ENV_ALLOW_UNVERIFIED, "").lower() in ("1", "true", "yes")
    return CLI_ALLOW_UNVERIFIED[0] or env


def _read_checked_dir(data_dir, allow_unverified: bool | None) -> tuple[dict, str]:
    """:func:`read_idx_dir` of a user's directory, checked by :func:`check_known_dataset`;
    (arrays, the Dataset name: ``idx:<dir>``, with `` (unverified)`` when a contradiction was
    allowed, which every results.json then records)."""
    arrays, raws = _read_idx_dir(Path(data_dir))
    name = f"idx:{Path(data_dir).resolve()}"
    try:
        check_known_dataset(raws)
    except UserError as e:
        if not _allow_unverified(allow_unverified):
            raise
        UNVERIFIED_LOADS.append(f"{Path(data_dir).resolve()}: {e}".split("; pass")[0])
        name += " (unverified)"
    return arrays, name


def tfds_source(name: str, split: str, data_dir: str | None):
    """``tfds.data_source`` of a copy a user prepared with tensorflow-datasets, or ``None`` (never
    downloads: TFDS would need TensorFlow to prepare it; :mod:`lottery_jax.download` does without)."""
    if "tensorflow_datasets" not in sys.modules:  # (imported already: a test's mock data, say)
        default = str(Path.home() / "tensorflow_datasets")
        root = data_dir or os.environ.get("TFDS_DATA_DIR") or default
        if "://" not in root and not (Path(root) / name).is_dir():
            return None  # nothing prepared there: spare the import of tensorflow-datasets
        if importlib.util.find_spec("tensorflow_datasets") is None:
            return None
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # no TFDS chatter; restored below
    try:
        with scratch_tempdir():
            return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception:  # not prepared (or not a TFDS name)
        return None
    finally:
        absl_logging.set_verbosity(level)


@contextlib.contextmanager
def scratch_tempdir(prefix: str = "lottery-jax-tfds-"):
    """Point :mod:`tempfile` at a private folder, removed afterwards: TFDS's metadata look-up
    (``DatasetInfo.initialize_from_bucket``) makes a ``tmp*tfds`` folder it never removes."""
    saved = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = saved


def _tfds_split(source) -> tuple[np.ndarray, np.ndarray]:
    """All examples of a TFDS data source (array_record; TensorFlow is not needed to read)."""
    keys = list(range(len(source)))
    try:
        examples = source.__getitems__(keys)  # one batched read from array_record
    except TypeError:  # TFDS's mock data source has no batched read
        examples = [source[i] for i in keys]
    images = np.stack([np.asarray(ex["image"], np.uint8).reshape(28, 28) for ex in examples])
    labels = np.asarray([int(ex["label"]) for ex in examples], np.int64)
    return images, labels


def preprocess(images_u8: np.ndarray, inputs: str) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1): ``unit`` = /255; ``normalized`` = then mean/std."""
    if inputs not in INPUT_MODES:
        raise UserError(f"unknown input mode {inputs!r} (choose from {', '.join(INPUT_MODES)})")
    x = images_u8.astype(np.float32) / np.float32(255.0)
    if inputs == "normalized":
        x = (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return x[..., None]


def load_dataset(
    data_dir: str | os.PathLike | None = None,
    *,
    dataset: str = "mnist",
    inputs: str = "normalized",
    tfds_data_dir: str | None = None,
    allow_unverified: bool | None = None,
) -> Dataset:
    """Load a 28x28 10-class dataset onto the default device.

    Where the data comes from, in order: ``data_dir`` (the CLI's ``--data-dir`` or
    ``LOTTERY_JAX_DATA``); else a copy of ``dataset`` prepared with tensorflow-datasets, if one
    exists; else the verified copy in the cache, downloaded first when missing
    (:func:`lottery_jax.download.fetch_dataset`; progress goes to the callback installed with
    :func:`lottery_jax.download.reporting`).

    Args:
      data_dir: directory with the four IDX files (raw or ``.gz``); None: the environment variable
        ``LOTTERY_JAX_DATA`` if set (as the command line does), else the sources below.
      dataset: ``mnist``, ``fashion_mnist`` or ``kmnist`` (any TFDS name when prepared there),
        used without ``data_dir``.
      inputs: ``unit`` (pixels in [0, 1], Experiment 1) or ``normalized`` (mean 0.1307, std 0.3081,
        Experiment 2).
      allow_unverified: use a ``data_dir`` that contradicts a known dataset
        (:func:`check_known_dataset`: e.g. MNIST's train and test files swapped) instead of
        refusing it; None: ``LOTTERY_JAX_ALLOW_UNVERIFIED_DATA`` (the CLI's
        ``--allow-unverified-data``). Recorded in the Dataset's name and every results.json.
    """
    if inputs not in INPUT_MODES:
        raise UserError(f"unknown input mode {inputs!r} (choose from {', '.join(INPUT_MODES)})")
    if data_dir is None and os.environ.get("LOTTERY_JAX_DATA"):
        data_dir = os.environ["LOTTERY_JAX_DATA"]
    train = test = None
    if data_dir is None and (train := tfds_source(dataset, "train", tfds_data_dir)) is not None:
        test = tfds_source(dataset, "test", tfds_data_dir)
    if data_dir is not None:
        arrays, name = _read_checked_dir(data_dir, allow_unverified)
    elif train is not None and test is not None:
        tr_x, tr_y = _tfds_split(train)
        te_x, te_y = _tfds_split(test)
        arrays = dict(train_images=tr_x, train_labels=tr_y, test_images=te_x, test_labels=te_y)
        name = f"tfds:{dataset}"
    else:
        from lottery_jax import download

        directory = download.fetch_dataset(dataset)
        arrays = read_idx_dir(directory)
        name = f"cache:{dataset}:{directory}"
    return Dataset(
        train_images=jnp.asarray(preprocess(arrays["train_images"], inputs)),
        train_labels=jnp.asarray(arrays["train_labels"], jnp.int32),
        test_images=jnp.asarray(preprocess(arrays["test_images"], inputs)),
        test_labels=jnp.asarray(arrays["test_labels"], jnp.int32),
        name=name,
    )
