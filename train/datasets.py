"""Dataset readers that return plain uint8 numpy arrays (NHWC) and integer labels.

numpy-only on purpose: the export step and the accuracy tests read test sets through here
without importing torch. The training loop wraps the arrays itself.

Where the data lives: ``--data-dir`` (a folder laid out like ../shared/data), else the
``CONVSCOPE_DATA_DIR`` environment variable, else ``../shared/data`` beside the repo. Users with a
network and no local copy get torchvision's normal download into ``<data-dir>/MNIST/raw``.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_LABELS = [str(d) for d in range(10)]
MNIST_SOURCE = ("MNIST (LeCun, Cortes & Burges), 60,000 train / 10,000 test 28x28 digits; "
                "license as commonly stated CC BY-SA 3.0")


@dataclass(frozen=True)
class ArraySplit:
    """Images as uint8 NHWC and labels as int64, plus the class names."""

    x: np.ndarray
    y: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.y)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument, else $CONVSCOPE_DATA_DIR, else ../shared/data."""
    if data_dir:
        return Path(data_dir)
    return Path(os.environ.get("CONVSCOPE_DATA_DIR", DEFAULT_DATA_DIR))


def mnist_available(data_dir: str | os.PathLike | None = None) -> bool:
    raw = resolve_data_dir(data_dir) / "MNIST" / "raw"
    return all((raw / f).exists() for pair in MNIST_FILES.values() for f in pair)


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_mnist(split: str, data_dir: str | os.PathLike | None = None, download: bool = False) -> ArraySplit:
    """MNIST ``split`` ("train" or "test") as (N, 28, 28, 1) uint8, white ink on black.

    Reads the four original idx .gz files directly (no copy, nothing written beside them). With
    ``download=True`` and no local files, torchvision fetches them into ``<data-dir>/MNIST/raw``.
    """
    root = resolve_data_dir(data_dir)
    raw = root / "MNIST" / "raw"
    if not mnist_available(root):
        if not download:
            raise FileNotFoundError(
                f"MNIST not found in {raw}. Pass --data-dir pointing at a folder with MNIST/raw/*.gz, "
                "or --download to fetch it with torchvision.")
        import torchvision  # only for users with a network; lazily, so this module stays torch-free

        torchvision.datasets.MNIST(str(root), train=split == "train", download=True)
    images, labels = MNIST_FILES[split]
    x = _read_idx(raw / images, 16).reshape(-1, 28, 28, 1)
    y = _read_idx(raw / labels, 8).astype(np.int64)
    return ArraySplit(x=x, y=y, labels=MNIST_LABELS)


CIFAR_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_SOURCE = ("CIFAR-10 (Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', 2009), "
                "50,000 train / 10,000 test 32x32 photos; no formal license, cite the report")


def _cifar_mosaic(path: Path) -> np.ndarray:
    """A 3200x3200 lossless mosaic of 100x100 tiles -> (10000, 32, 32, 3), tile i at (i // 100, i % 100)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    return a.reshape(100, 32, 100, 32, 3).transpose(0, 2, 1, 3, 4).reshape(10000, 32, 32, 3)


def cifar_available(data_dir: str | os.PathLike | None = None) -> bool:
    d = resolve_data_dir(data_dir) / "cifar10"
    return (d / "cifar10_labels.npz").exists() or (d / "cifar-10-batches-py").is_dir()


def load_cifar10(split: str, data_dir: str | os.PathLike | None = None, download: bool = False) -> ArraySplit:
    """CIFAR-10 ``split`` as (N, 32, 32, 3) uint8 RGB.

    Reads ``<data-dir>/cifar10``: the lossless mosaics + ``cifar10_labels.npz`` of shared/data
    (images sorted by class: shuffle before training), or the official python batches
    (``cifar-10-batches-py``), which torchvision reads and, with ``download=True``, fetches.
    """
    root = resolve_data_dir(data_dir) / "cifar10"
    if (root / "cifar10_labels.npz").exists():
        lab = np.load(root / "cifar10_labels.npz")
        if split == "train":
            x = np.concatenate([_cifar_mosaic(root / f"cifar10_train_{i}.webp") for i in range(5)])
        else:
            x = _cifar_mosaic(root / "cifar10_test.webp")
        return ArraySplit(x=x, y=lab[f"y_{split}"].astype(np.int64), labels=[str(c) for c in lab["classes"]])
    if not (root / "cifar-10-batches-py").is_dir() and not download:
        raise FileNotFoundError(
            f"CIFAR-10 not found in {root}. Pass --data-dir pointing at a folder with cifar10/ "
            "(mosaics + cifar10_labels.npz, or cifar-10-batches-py), or --download to fetch it.")
    import torchvision  # only for the official files / a network; this module stays torch-free

    ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=download)
    return ArraySplit(x=np.asarray(ds.data), y=np.asarray(ds.targets, np.int64), labels=list(ds.classes))


def synthetic_photos(n: int, seed: int = 0, size: int = 32) -> ArraySplit:
    """Tiny learnable stand-in for CIFAR-10 (for --smoke): class k is a stripe pattern at angle
    k*18 degrees in a colour of its own, on a noisy background."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    colours = (np.array([[np.cos(a), np.cos(a + 2.1), np.cos(a + 4.2)] for a in np.arange(10) * 0.63]) + 1) * 120
    x = rng.integers(0, 60, (n, size, size, 3)).astype(np.float32)
    for i, k in enumerate(y):
        a = np.deg2rad(k * 18)
        stripes = np.sin((xx * np.cos(a) + yy * np.sin(a)) * 0.8) > 0
        x[i][stripes] += colours[k]
    return ArraySplit(x=np.clip(x, 0, 255).astype(np.uint8), y=y.astype(np.int64), labels=CIFAR_LABELS)


def split_train_val(data: ArraySplit, val_size: int, seed: int) -> tuple[ArraySplit, ArraySplit]:
    """A fixed random hold-out of ``val_size`` examples (the same for a given seed)."""
    order = np.random.default_rng(seed).permutation(len(data))
    val, train = order[:val_size], order[val_size:]
    return (ArraySplit(data.x[train], data.y[train], data.labels),
            ArraySplit(data.x[val], data.y[val], data.labels))


def synthetic_digits(n: int, seed: int = 0, size: int = 28) -> ArraySplit:
    """Tiny learnable stand-in for MNIST (for --smoke): class k is a bar at angle k*18 degrees."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    x = np.zeros((n, size, size, 1), np.uint8)
    for i, k in enumerate(y):
        a = np.deg2rad(k * 18)
        dist = np.abs(xx * np.sin(a) - yy * np.cos(a))
        bar = (dist < 1.5) & (np.hypot(xx, yy) < size * 0.35)
        x[i, ..., 0] = np.where(bar, 255, rng.integers(0, 30, (size, size))).astype(np.uint8)
    return ArraySplit(x=x, y=y.astype(np.int64), labels=MNIST_LABELS)


# One entry per dataset: (real loader, synthetic stand-in for --smoke).
LOADERS = {
    "mnist": (load_mnist, synthetic_digits),
    "cifar10": (load_cifar10, synthetic_photos),
}

# What the model card says about each dataset's input: the app's preprocessing policy
# (a function name in convscope.preprocess), the pixel format, and where the data came from.
INPUT_SPECS = {
    "mnist": {
        "preprocess": "mnist_digit",
        "color": "grayscale, white ink (255) on black (0): MNIST polarity",
        "note": "ink -> bounding box -> fit into 20x20 keeping aspect -> centre of mass at the "
                "centre of 28x28 (the MNIST procedure), see convscope/preprocess.py",
        "data_source": MNIST_SOURCE,
        "test_split": "test",
    },
    "cifar10": {
        "preprocess": "cifar_photo",
        "color": "RGB",
        "note": "centre crop to a square, then resize to 32x32 with an area filter (CIFAR's photos "
                "are small, roughly centred objects), see convscope/preprocess.py",
        "data_source": CIFAR_SOURCE,
        "test_split": "test",
    },
}


def load_split(dataset: str, split: str, data_dir: str | os.PathLike | None = None,
               download: bool = False) -> ArraySplit:
    """``split`` of ``dataset`` by registry name ("mnist", ...)."""
    return LOADERS[dataset][0](split, data_dir=data_dir, download=download)


def synthetic_split(dataset: str, n: int, seed: int = 0) -> ArraySplit:
    return LOADERS[dataset][1](n, seed=seed)
