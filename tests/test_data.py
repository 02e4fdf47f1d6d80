"""The IDX reader, preprocessing, the TFDS path (mock data only) and facts of the real MNIST."""

from __future__ import annotations

import gzip
import shutil
import zlib

import numpy as np
import pytest
from conftest import synthetic_digits, write_idx_dir, write_idx_file

from lottery_jax.data import (
    IDX_FILES,
    MNIST_MEAN,
    MNIST_STD,
    load_dataset,
    preprocess,
    read_idx,
    read_idx_dir,
)
from lottery_jax.errors import UserError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
LABELS = RNG.integers(0, 10, 7).astype(np.uint8)


def _raises(path_or_name, fn, *args, match: str | None = None, **kwargs) -> str:
    """``fn`` raises a UserError whose one-line message names ``path_or_name``."""
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert str(path_or_name) in message
    assert "\n" not in message
    if match is not None:
        assert match in message, message
    return message


# --- read_idx: good files ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip_images_and_labels(tmp_path, suffix):
    imgs = write_idx_file(tmp_path / f"images{suffix}", IMAGES)
    labs = write_idx_file(tmp_path / f"labels{suffix}", LABELS)
    got_imgs = read_idx(imgs)
    got_labs = read_idx(labs, expect_magic=0x801)
    assert got_imgs.dtype == np.uint8 and got_imgs.shape == (7, 28, 28)
    assert got_labs.dtype == np.uint8 and got_labs.shape == (7,)
    np.testing.assert_array_equal(got_imgs, IMAGES)
    np.testing.assert_array_equal(got_labs, LABELS)


def test_read_idx_non_square_images(tmp_path):
    arr = RNG.integers(0, 256, (3, 5, 9), dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx_file(tmp_path / "x", arr)), arr)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_dir_reads_the_four_files(tmp_path, gz):
    write_idx_dir(tmp_path, n_train=50, n_test=20, gz=gz)
    arrays = read_idx_dir(tmp_path)
    assert set(arrays) == set(IDX_FILES)
    tr_x, tr_y = synthetic_digits(50, 1)
    te_x, te_y = synthetic_digits(20, 2)
    np.testing.assert_array_equal(arrays["train_images"], tr_x)
    np.testing.assert_array_equal(arrays["train_labels"], tr_y)
    np.testing.assert_array_equal(arrays["test_images"], te_x)
    np.testing.assert_array_equal(arrays["test_labels"], te_y)


def test_read_idx_dir_mixes_raw_and_gz(tmp_path):
    write_idx_dir(tmp_path, n_train=30, n_test=10, gz=True)
    # Replace one file by its uncompressed form: both spellings are accepted.
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    assert read_idx_dir(tmp_path)["test_labels"].shape == (10,)


# --- read_idx: bad files -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_body(tmp_path, suffix):
    path = write_idx_file(tmp_path / f"images{suffix}", IMAGES)
    raw = IMAGES.tobytes()
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (7, 28, 28))
    data = header + raw[:-100]
    path.write_bytes(gzip.compress(data) if suffix else data)
    _raises(path, read_idx, path, match="truncated")


def test_truncated_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08")
    _raises(path, read_idx, path, match="truncated")
    # Magic of an image file but the dimensions are cut off.
    path.write_bytes((0x803).to_bytes(4, "big") + (7).to_bytes(4, "big"))
    _raises(path, read_idx, path, match="truncated")


def test_trailing_data(tmp_path):
    path = write_idx_file(tmp_path / "labels", LABELS)
    path.write_bytes(path.read_bytes() + b"\x01\x02")
    _raises(path, read_idx, path, match="trailing")


def test_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    _raises(path, read_idx, path)


@pytest.mark.parametrize("magic", [0x0, 0x802, 0x08030000, 0xFFFFFFFF])
def test_wrong_magic(tmp_path, magic):
    path = write_idx_file(tmp_path / "images", IMAGES, magic=magic)
    _raises(path, read_idx, path, match="magic")


def test_labels_where_images_are_expected(tmp_path):
    path = write_idx_file(tmp_path / "labels", LABELS)
    _raises(path, read_idx, path, expect_magic=0x803, match="magic")


def test_missing_data_dir(tmp_path):
    _raises(tmp_path / "nope", read_idx_dir, tmp_path / "nope")


@pytest.mark.parametrize("missing", sorted(IDX_FILES.values()))
def test_missing_file(tmp_path, missing):
    write_idx_dir(tmp_path, n_train=20, n_test=10)
    (tmp_path / missing).unlink()
    _raises(tmp_path / missing, read_idx_dir, tmp_path)


def test_missing_file_direct(tmp_path):
    _raises(tmp_path / "gone.gz", read_idx, tmp_path / "gone.gz")


def test_label_count_differs_from_image_count(tmp_path):
    write_idx_dir(tmp_path, n_train=20, n_test=10)
    write_idx_file(tmp_path / "train-labels-idx1-ubyte", np.zeros(19, np.uint8))
    msg = _raises(tmp_path / "train-labels-idx1-ubyte", read_idx_dir, tmp_path)
    assert "19" in msg and "20" in msg


def test_label_out_of_range(tmp_path):
    write_idx_dir(tmp_path, n_train=20, n_test=10)
    labels = np.zeros(10, np.uint8)
    labels[3] = 10
    write_idx_file(tmp_path / "t10k-labels-idx1-ubyte", labels)
    _raises(tmp_path / "t10k-labels-idx1-ubyte", read_idx_dir, tmp_path, match="10")


def test_images_not_28x28(tmp_path):
    write_idx_dir(tmp_path, n_train=20, n_test=10)
    write_idx_file(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 32, 32), np.uint8))
    _raises(tmp_path / "t10k-images-idx3-ubyte", read_idx_dir, tmp_path, match="32x32")


def test_no_images(tmp_path):
    write_idx_dir(tmp_path, n_train=20, n_test=10)
    write_idx_file(tmp_path / "t10k-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    write_idx_file(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(0, np.uint8))
    _raises(tmp_path / "t10k-images-idx3-ubyte", read_idx_dir, tmp_path)


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"this is not a gzip file, just text" * 10)
    _raises(path, read_idx, path)


def test_truncated_gzip(tmp_path):
    path = write_idx_file(tmp_path / "images.gz", IMAGES)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _raises(path, read_idx, path)


def test_corrupt_gzip_body(tmp_path):
    """Damaged deflate data raises zlib.error inside gzip; it must become a UserError too."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    good = gzip.compress(
        (0x803).to_bytes(4, "big")
        + b"".join(d.to_bytes(4, "big") for d in (50, 28, 28))
        + bytes(50 * 28 * 28),
        mtime=0,
    )
    for i in range(10, len(good) - 8):  # find a flipped byte that breaks the deflate stream
        data = bytearray(good)
        data[i] ^= 0xFF
        try:
            gzip.decompress(bytes(data))
        except zlib.error:
            break
        except Exception:
            continue
    else:
        pytest.fail("no corruption producing zlib.error found")
    path.write_bytes(bytes(data))
    _raises(path, read_idx, path)


def test_corrupt_gzip_crc(tmp_path):
    path = write_idx_file(tmp_path / "labels.gz", LABELS)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # CRC32 of the trailer
    path.write_bytes(bytes(data))
    _raises(path, read_idx, path)


def test_directory_instead_of_file(tmp_path):
    write_idx_dir(tmp_path, n_train=20, n_test=10)
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte").mkdir()
    _raises(tmp_path / "train-images-idx3-ubyte", read_idx_dir, tmp_path)


# --- preprocessing and load_dataset --------------------------------------------------------------


def test_preprocess_modes():
    x = np.array([[[0, 255], [51, 128]]], np.uint8)
    unit = preprocess(x, "unit")
    assert unit.dtype == np.float32 and unit.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(unit[..., 0], x / 255.0, rtol=1e-7)
    norm = preprocess(x, "normalized")
    np.testing.assert_allclose(norm[..., 0], (x / 255.0 - 0.1307) / 0.3081, rtol=1e-6)
    with pytest.raises(UserError, match="input mode"):
        preprocess(x, "standardized")


@pytest.mark.parametrize("inputs", ["unit", "normalized"])
def test_load_dataset_idx(tmp_path, inputs):
    write_idx_dir(tmp_path, n_train=40, n_test=12, gz=True)
    d = load_dataset(tmp_path, inputs=inputs)
    assert d.train_images.shape == (40, 28, 28, 1) and d.test_images.shape == (12, 28, 28, 1)
    assert d.train_images.dtype == np.float32 and d.train_labels.dtype == np.int32
    assert d.test_labels.shape == (12,) and d.test_labels.dtype == np.int32
    assert d.name.startswith("idx:")
    tr_x, tr_y = synthetic_digits(40, 1)
    np.testing.assert_allclose(np.asarray(d.train_images), preprocess(tr_x, inputs))
    np.testing.assert_array_equal(np.asarray(d.train_labels), tr_y)


def test_load_dataset_bad_inputs(tmp_path):
    write_idx_dir(tmp_path, n_train=10, n_test=10)
    with pytest.raises(UserError, match="input mode"):
        load_dataset(tmp_path, inputs="raw")


# --- tensorflow-datasets (mock data only: never a real download) ---------------------------------


@pytest.mark.parametrize("inputs", ["unit", "normalized"])
def test_tfds_mock_data(inputs, monkeypatch):
    monkeypatch.delenv("LOTTERY_JAX_DATA", raising=False)  # (it would take precedence)
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=37):
        d = load_dataset(None, dataset="mnist", inputs=inputs)
        source = tfds.data_source("mnist", split="train")
        raw = np.stack([np.asarray(source[i]["image"]).reshape(28, 28) for i in range(37)])
        raw_labels = np.asarray([int(source[i]["label"]) for i in range(37)])
    assert d.name == "tfds:mnist"
    for images, labels in ((d.train_images, d.train_labels), (d.test_images, d.test_labels)):
        assert images.shape == (37, 28, 28, 1) and images.dtype == np.float32
        assert labels.shape == (37,) and labels.dtype == np.int32
        assert int(labels.min()) >= 0 and int(labels.max()) <= 9
    np.testing.assert_allclose(np.asarray(d.train_images), preprocess(raw, inputs), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(d.train_labels), raw_labels)
    if inputs == "unit":
        assert float(d.train_images.min()) >= 0.0 and float(d.train_images.max()) <= 1.0


def test_tfds_fashion_mnist_mock(monkeypatch):
    monkeypatch.delenv("LOTTERY_JAX_DATA", raising=False)
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        d = load_dataset(None, dataset="fashion_mnist", inputs="unit")
    assert d.name == "tfds:fashion_mnist" and d.train_images.shape == (5, 28, 28, 1)


def test_tfds_unprepared_falls_back_to_the_download_cache(tmp_path, monkeypatch):
    """No prepared TFDS copy and no mirror reachable: one line naming the URL and --data-dir."""
    monkeypatch.delenv("LOTTERY_JAX_DATA", raising=False)
    monkeypatch.setenv("LOTTERY_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LOTTERY_JAX_MIRROR", "http://127.0.0.1:9/")  # discard port: refused
    with pytest.raises(UserError) as info:
        load_dataset(None, dataset="mnist", tfds_data_dir=str(tmp_path / "tfds"))
    message = str(info.value)
    assert "\n" not in message
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in message and "--data-dir" in message


# --- the real MNIST ------------------------------------------------------------------------------

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.shared_data
def test_mnist_facts(mnist_dir):
    arrays = read_idx_dir(mnist_dir)
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert arrays["test_images"].shape == (10000, 28, 28)
    assert np.bincount(arrays["train_labels"], minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(arrays["test_labels"], minlength=10).tolist() == TEST_COUNTS
    assert arrays["train_labels"][:5].tolist() == [5, 0, 4, 1, 9]


@pytest.mark.shared_data
def test_mnist_unit_statistics(mnist_unit):
    x = np.asarray(mnist_unit.train_images, np.float64)
    assert x.shape == (60000, 28, 28, 1)
    assert x.min() == 0.0 and x.max() == 1.0
    assert abs(x.mean() - MNIST_MEAN) < 5e-5
    assert abs(x.std() - MNIST_STD) < 5e-5
    assert np.asarray(mnist_unit.train_labels[:5]).tolist() == [5, 0, 4, 1, 9]


@pytest.mark.shared_data
def test_mnist_normalized_statistics(mnist_normalized):
    x = np.asarray(mnist_normalized.train_images, np.float64)
    assert abs(x.mean()) < 1e-3
    assert abs(x.std() - 1.0) < 1e-3
    assert mnist_normalized.test_images.shape == (10000, 28, 28, 1)


@pytest.mark.shared_data
def test_mnist_raw_copy_equals_gz(mnist_dir, tmp_path):
    """An uncompressed copy of the test split reads the same as the gzip original."""
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        src = mnist_dir / (stem + ".gz")
        if not src.exists():
            pytest.skip("MNIST here is not gzip-compressed")
        with gzip.open(src, "rb") as f, open(tmp_path / stem, "wb") as g:
            shutil.copyfileobj(f, g)
        np.testing.assert_array_equal(read_idx(tmp_path / stem), read_idx(src))
