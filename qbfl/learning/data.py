"""Image datasets: raw IDX files (plain or .gz) decoded, checked and normalised into tensors."""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from qbfl.errors import DatasetNotFound, QbflError

DATASETS = ("mnist", "fashion-mnist")
FETCH_COMMAND = "scripts/fetch-data.sh"  # run by `make setup`

# Where the Debian package dataset-fashion-mnist installs its files (DESIGN.md §3).
SYSTEM_LOCATIONS: dict[str, tuple[Path, ...]] = {
    "mnist": (),
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_SIDE = 28


class CorruptDataset(QbflError, ValueError):
    """An IDX file has a wrong header, wrong dimensions or is truncated."""


@dataclass(frozen=True)
class ImageDataset:
    """A split of an image dataset, ready for training; treat the tensors as read-only (they are cached)."""

    images: torch.Tensor  # (N, 1, 28, 28) float32, normalised with the training set's mean/std
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray | torch.Tensor) -> ImageDataset:
        """The samples at `indices`, e.g. one client's partition."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return ImageDataset(images=self.images[idx], labels=self.labels[idx])


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError) as exc:
            raise CorruptDataset(f"{path}: not a readable gzip file ({exc})") from exc
    return path.read_bytes()


def read_idx(path: Path, *, magic: int, ndim: int) -> np.ndarray:
    """Decode one IDX file after checking its magic number, dimensions and length."""
    raw = _read_bytes(path)
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise CorruptDataset(f"{path}: {len(raw)} bytes, shorter than the IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise CorruptDataset(f"{path}: magic 0x{found:08x}, expected 0x{magic:08x}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header_len + int(np.prod(dims))
    if len(raw) != expected:
        raise CorruptDataset(
            f"{path}: {len(raw)} bytes but the header (dims {dims}) announces {expected}; "
            f"the file is truncated or padded — re-run {FETCH_COMMAND}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def _candidate_dirs(name: str, data_dir: Path | None) -> list[Path]:
    # An explicit directory is authoritative: silently reading another copy would hide a mistake.
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir) / name]
    dirs: list[Path] = []
    env = os.environ.get("QBFL_DATA_DIR")
    if env:
        dirs.append(Path(env) / name)
    dirs.append(Path.home() / ".cache" / "qbfl" / "data" / name)
    dirs.extend(SYSTEM_LOCATIONS[name])
    return dirs


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(
    name: str, split: Literal["train", "test"], data_dir: Path | None = None
) -> tuple[Path, Path]:
    """Paths of (images, labels) for a split, searched in the documented order."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; valid: train, test")
    image_stem, label_stem = _FILES[split]
    searched = _candidate_dirs(name, data_dir)
    for directory in searched:
        images, labels = _find(directory, image_stem), _find(directory, label_stem)
        if images is not None and labels is not None:
            return images, labels
    raise DatasetNotFound(
        f"{name} {split} files ({image_stem}[.gz], {label_stem}[.gz]) not found in "
        f"{', '.join(str(d) for d in searched)}; fetch them with `{FETCH_COMMAND}` (run by `make setup`)"
    )


def _decode(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, magic=_IMAGE_MAGIC, ndim=3)
    labels = read_idx(labels_path, magic=_LABEL_MAGIC, ndim=1)
    if images.shape[1:] != (_SIDE, _SIDE):
        raise CorruptDataset(f"{images_path}: images are {images.shape[1:]}, expected (28, 28)")
    if images.shape[0] != labels.shape[0]:
        raise CorruptDataset(
            f"{images_path} holds {images.shape[0]} images but {labels_path} {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) > 9:
        raise CorruptDataset(f"{labels_path}: label {int(labels.max())} outside 0..9")
    return images, labels


_HISTOGRAM_SLICE = 1 << 20


@functools.lru_cache(maxsize=8)
def _train_stats(train_images_path: Path) -> tuple[float, float]:
    """Mean and standard deviation of the training pixels in [0, 1].

    From the histogram of the 256 pixel values, counted a slice at a time: exact, and without a
    376 MB 64-bit copy of MNIST's pixels in every process (50 node containers starting at once
    would need 18 GB for it). The float32 values the normalisation uses are the same (checked on
    both datasets).
    """
    pixels = read_idx(train_images_path, magic=_IMAGE_MAGIC, ndim=3).ravel()
    counts = np.zeros(256, dtype=np.float64)
    for start in range(0, pixels.size, _HISTOGRAM_SLICE):
        # bincount widens its input to int64: whole, that is another 376 MB for MNIST
        counts += np.bincount(pixels[start : start + _HISTOGRAM_SLICE], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum()
    mean = float((counts * values).sum() / n)
    std = float(np.sqrt((counts * (values - mean) ** 2).sum() / n))
    return mean, std


def _normalise(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0))
    return ((x - mean) / std).unsqueeze(1).contiguous()


_DECODED: dict[tuple[Path, Path, Path], ImageDataset] = {}


def _load(train_images_path: Path, images_path: Path, labels_path: Path) -> ImageDataset:
    key = (train_images_path, images_path, labels_path)
    held = _DECODED.get(key)
    if held is None:
        mean, std = _train_stats(train_images_path)
        images, labels = _decode(images_path, labels_path)
        held = ImageDataset(
            images=_normalise(images, mean, std),
            labels=torch.from_numpy(labels.astype(np.int64)),
        )
        if len(_DECODED) >= 8:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[key] = held
    return held


def warm_up_shard_statistics(name: str, data_dir: Path | None = None) -> None:
    """Compute (and cache) the training-set statistics a later `load_shard` needs."""
    train_images, _ = locate(name, "train", data_dir)
    _train_stats(train_images.resolve())


def load_shard(
    name: str,
    split: Literal["train", "test"],
    select: Callable[[np.ndarray], np.ndarray],
    data_dir: Path | None = None,
) -> ImageDataset:
    """The rows `select(labels)` of a split, normalised exactly as `load_dataset` normalises them.

    A node needs its 775 training images, not all 60 000: unless the whole split is already
    decoded in this process (a forkserver parent preloads it, shared by its children), only the
    selected rows are normalised (~2 MB instead of the split's 188 MB of float32).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    train_images, _ = locate(name, "train", data_dir)
    images_path, labels_path = locate(name, split, data_dir)
    key = (train_images.resolve(), images_path.resolve(), labels_path.resolve())
    held = _DECODED.get(key)
    if held is not None:
        index = torch.from_numpy(np.asarray(select(held.labels.numpy()), dtype=np.int64))
        return ImageDataset(held.images[index].clone(), held.labels[index].clone())
    mean, std = _train_stats(key[0])
    images, labels = _decode(key[1], key[2])
    rows = np.asarray(select(labels), dtype=np.int64)
    return ImageDataset(
        images=_normalise(images[rows], mean, std),
        labels=torch.from_numpy(labels[rows].astype(np.int64)),
    )


def load_dataset(
    name: str, split: Literal["train", "test"], data_dir: Path | None = None
) -> ImageDataset:
    """Load a split normalised with the training set's mean/std; decoded once per process.

    Search order: `data_dir` (alone, when given: the directory itself or `data_dir/<name>`),
    else `$QBFL_DATA_DIR/<name>/`, `~/.cache/qbfl/data/<name>/`, then the system location
    (`/usr/share/datasets/fashion-mnist/` for fashion-mnist).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; valid: train, test")
    # The cache is keyed by the files found, so a changed search path is never served stale data.
    train_images, _ = locate(name, "train", data_dir)
    images, labels = locate(name, split, data_dir)
    return _load(train_images.resolve(), images.resolve(), labels.resolve())
