"""Dataset loading: IDX decoding, header checks, normalisation and the search order."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from qbfl.errors import DatasetNotFound
from qbfl.learning.data import CorruptDataset, ImageDataset, load_dataset, read_idx


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_split(directory: Path, prefix: str, n: int, seed: int, *, gz: bool = False) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    for stem, arr, magic in (
        (f"{prefix}-images-idx3-ubyte", images, 0x803),
        (f"{prefix}-labels-idx1-ubyte", labels, 0x801),
    ):
        data = _idx_bytes(arr, magic)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)


@pytest.fixture
def fake_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mnist"
    d.mkdir()
    _write_split(d, "train", 64, seed=1)
    _write_split(d, "t10k", 16, seed=2)
    return d


def test_shapes_dtypes_and_normalisation(fake_dir: Path) -> None:
    train = load_dataset("mnist", "train", data_dir=fake_dir)
    test = load_dataset("mnist", "test", data_dir=fake_dir)
    assert isinstance(train, ImageDataset)
    assert train.images.shape == (64, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.labels.shape == (64,) and train.labels.dtype == torch.int64
    assert test.images.shape == (16, 1, 28, 28)
    assert abs(float(train.images.mean())) < 1e-4
    assert abs(float(train.images.double().std(unbiased=False)) - 1.0) < 1e-4
    # The test split uses the TRAINING set's statistics, not its own.
    raw_train = read_idx(fake_dir / "train-images-idx3-ubyte", magic=0x803, ndim=3) / 255.0
    raw_test = read_idx(fake_dir / "t10k-images-idx3-ubyte", magic=0x803, ndim=3) / 255.0
    expected = (raw_test[0, 3, 5] - raw_train.mean()) / raw_train.std()
    assert float(test.images[0, 0, 3, 5]) == pytest.approx(expected, abs=1e-5)
    assert float(test.images.mean()) != pytest.approx(0.0, abs=1e-6)


def test_gzip_files_and_name_subfolder(tmp_path: Path) -> None:
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    _write_split(d, "train", 20, seed=3, gz=True)
    _write_split(d, "t10k", 5, seed=4, gz=True)
    # data_dir may name the folder itself or its parent holding <name>/
    assert len(load_dataset("fashion-mnist", "test", data_dir=tmp_path)) == 5
    assert len(load_dataset("fashion-mnist", "train", data_dir=d)) == 20


def test_missing_files_name_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as err:
        load_dataset("mnist", "train", data_dir=tmp_path / "nowhere")
    assert "scripts/fetch-data.sh" in str(err.value)
    assert "nowhere" in str(err.value)


def test_search_order_env_then_home(
    fake_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("QBFL_DATA_DIR", str(tmp_path / "nothing-here"))
    with pytest.raises(DatasetNotFound):
        load_dataset("mnist", "test")
    monkeypatch.setenv("QBFL_DATA_DIR", str(fake_dir.parent))
    assert len(load_dataset("mnist", "test")) == 16
    monkeypatch.delenv("QBFL_DATA_DIR")
    cache = tmp_path / "empty-home" / ".cache" / "qbfl" / "data" / "mnist"
    cache.mkdir(parents=True)
    _write_split(cache, "train", 8, seed=5)
    _write_split(cache, "t10k", 3, seed=6)
    assert len(load_dataset("mnist", "test")) == 3


def test_wrong_magic_is_rejected(fake_dir: Path) -> None:
    path = fake_dir / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[3] = 0x03  # now claims to be an image file
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptDataset, match="magic"):
        load_dataset("mnist", "test", data_dir=fake_dir)


def test_truncated_file_is_rejected(fake_dir: Path) -> None:
    path = fake_dir / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptDataset, match="truncated"):
        load_dataset("mnist", "train", data_dir=fake_dir)


def test_mismatched_counts_are_rejected(tmp_path: Path) -> None:
    d = tmp_path / "mnist"
    d.mkdir()
    _write_split(d, "train", 10, seed=1)
    _write_split(d, "t10k", 10, seed=2)
    (d / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(9, np.uint8), 0x801))
    with pytest.raises(CorruptDataset, match="9 labels"):
        load_dataset("mnist", "test", data_dir=d)


def test_unknown_names_are_value_errors() -> None:
    with pytest.raises(ValueError, match="fashion-mnist"):
        load_dataset("cifar", "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist", "valid")  # type: ignore[arg-type]


def test_real_mnist_if_installed() -> None:
    try:
        test = load_dataset("mnist", "test")
    except DatasetNotFound:
        pytest.skip("MNIST not installed (scripts/fetch-data.sh)")
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_training_statistics_count_the_histogram_across_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qbfl.learning import data

    monkeypatch.setattr(data, "_HISTOGRAM_SLICE", 1000)  # 64 images: 51 slices, the last partial
    _write_split(tmp_path, "train", 64, seed=3)
    path = tmp_path / "train-images-idx3-ubyte"
    data._train_stats.cache_clear()
    tracemalloc.start()
    mean, std = data._train_stats(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # the file's 50 kB plus slices, not the 400 kB a whole-array bincount widens it to
    assert peak < 150_000
    pixels = read_idx(path, magic=0x803, ndim=3).astype(np.float64) / 255.0
    assert mean == pytest.approx(pixels.mean(), rel=1e-12)
    assert std == pytest.approx(pixels.std(), rel=1e-12)
    data._train_stats.cache_clear()
