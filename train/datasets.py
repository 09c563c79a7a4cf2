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

from convscope.preprocess import policy_note

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


XRAY_LABELS_2 = ["normal", "pneumonia"]
XRAY_LABELS_3 = ["normal", "pneumonia", "COVID-19"]
KERMANY_SOURCE = ("Chest X-ray images (pediatric, Guangzhou Women and Children's Medical Center), Kermany et al., "
                  "Cell 172(5), 2018, 'Labeled OCT and Chest X-Ray Images for Classification' v2; CC BY 4.0. "
                  "Official split: 5,216 train / 624 test; validation = the index CSV's patient-level split_with_val")
COVID_SOURCE = ("COVID-19 Image Data Collection (Cohen, Morrison, Dao et al., arXiv:2003.11597), release 2020-06-05, "
                "frontal views; licenses per image (CC BY, CC BY-SA, CC BY-NC-SA, CC BY-NC-ND, some unstated): "
                "research and demonstration use only; split by patient here")
KERMANY_ZIP = "chest_xray_pneumonia/kermany_cxr_224_jpeg.zip"
KERMANY_CSV = "chest_xray_pneumonia/kermany_cxr_224_index.csv"
COVID_ZIP = "covid19_cxr/covid19_image_collection_cxr_224.zip"
COVID_CSV = "covid19_cxr/covid19_image_collection_cxr_224.csv"
# The COVID collection's split by patient, in percent of a stable hash: train below 70, val below 85.
COVID_SPLIT = (70, 85)
# Two patient ids share one image (data README): they are one group, so it stays in one split.
COVID_SAME_PATIENT = {"201": "78"}


def xray_available(data_dir: str | os.PathLike | None = None, covid: bool = False) -> bool:
    root = resolve_data_dir(data_dir)
    files = [KERMANY_ZIP, KERMANY_CSV] + ([COVID_ZIP, COVID_CSV] if covid else [])
    return all((root / f).exists() for f in files)


def _read_gray_zip(zip_path: Path, names: list[str]) -> np.ndarray:
    """Images inside an uncompressed zip -> (N, H, W, 1) uint8 grayscale."""
    import io
    import zipfile

    from PIL import Image

    with zipfile.ZipFile(zip_path) as z:
        imgs = []
        for n in names:
            with Image.open(io.BytesIO(z.read(n))) as im:
                imgs.append(np.asarray(im.convert("L")))
    return np.stack(imgs)[..., None] if imgs else np.zeros((0, 224, 224, 1), np.uint8)


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _xray_missing(root: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found under {root}. Pass --data-dir pointing at a folder laid out like "
        "../shared/data (there is no public direct download: get the Kermany data from Mendeley Data, "
        "doi 10.17632/rscbjbr9sj.2, and the COVID-19 collection from github.com/ieee8023/covid-chestxray-dataset).")


def load_kermany(split: str, data_dir: str | os.PathLike | None = None, download: bool = False) -> ArraySplit:
    """Kermany 2018 pediatric chest X-rays, (N, 224, 224, 1) uint8, labels normal 0 / pneumonia 1.

    ``split``: "train" (the official train minus the patient-level validation patients), "val"
    (those patients, from the index CSV's ``split_with_val``) or "test" (the official 624).
    """
    root = resolve_data_dir(data_dir)
    if not xray_available(root):
        raise _xray_missing(root, "The Kermany chest X-rays (chest_xray_pneumonia/)")
    rows = [r for r in _csv_rows(root / KERMANY_CSV) if r["split_with_val"] == split]
    if not rows:
        raise ValueError(f"unknown split {split!r}: train, val or test")
    x = _read_gray_zip(root / KERMANY_ZIP, [r["path_in_zip"] for r in rows])
    return ArraySplit(x=x, y=np.array([int(r["label"]) for r in rows], np.int64), labels=XRAY_LABELS_2)


def covid_split_of(patient_id: str) -> str:
    """train / val / test for a patient of the COVID-19 collection: a stable hash of the id."""
    import hashlib

    group = COVID_SAME_PATIENT.get(patient_id, patient_id)
    pct = int(hashlib.sha256(f"covid19|{group}".encode()).hexdigest(), 16) % 100
    return "train" if pct < COVID_SPLIT[0] else "val" if pct < COVID_SPLIT[1] else "test"


def load_covid_collection(split: str, data_dir: str | os.PathLike | None = None, covid: bool = True) -> ArraySplit:
    """The COVID-19 collection's frontal images of ``split`` (by patient): the COVID-19 ones
    (label 2) or, with ``covid=False``, its adult non-COVID images (label -1: never trained on;
    the app's confound probe)."""
    root = resolve_data_dir(data_dir)
    if not xray_available(root, covid=True):
        raise _xray_missing(root, "The COVID-19 Image Data Collection (covid19_cxr/)")
    rows = [r for r in _csv_rows(root / COVID_CSV) if r["is_covid19"] == ("1" if covid else "0")
            and (split == "all" or covid_split_of(r["patientid"]) == split)]
    x = _read_gray_zip(root / COVID_ZIP, [r["png_name"] for r in rows])
    return ArraySplit(x=x, y=np.full(len(rows), 2 if covid else -1, np.int64), labels=XRAY_LABELS_3)


NIH_ZIP = "nih_cxr_adult/nih_cxr_adult_224.zip"
NIH_CSV = "nih_cxr_adult/nih_cxr_adult_224.csv"
NIH_SOURCE = ("NIH ChestX-ray14 (Wang et al., CVPR 2017; NIH Clinical Center), 818 adult frontal films as sampled by "
              "Ozturk et al. 2020: 428 'No Finding', 390 with a Pneumonia label; public for research")


def nih_available(data_dir: str | os.PathLike | None = None) -> bool:
    root = resolve_data_dir(data_dir)
    return (root / NIH_ZIP).exists() and (root / NIH_CSV).exists()


def nih_split_of(patient_id: str) -> str:
    """train / val / test for a patient of the adult NIH films: a stable hash of the id, 70/15/15."""
    import hashlib

    pct = int(hashlib.sha256(f"nih|{patient_id}".encode()).hexdigest(), 16) % 100
    return "train" if pct < COVID_SPLIT[0] else "val" if pct < COVID_SPLIT[1] else "test"


def load_nih_adult(split: str = "all", data_dir: str | os.PathLike | None = None) -> ArraySplit:
    """The adult NIH films of ``split`` (by patient: :func:`nih_split_of`; "all" for every film),
    (N, 224, 224, 1) uint8, labels normal 0 / pneumonia 1. No shipped classifier trained on them."""
    root = resolve_data_dir(data_dir)
    if not nih_available(root):
        raise _xray_missing(root, "The adult NIH films (nih_cxr_adult/)")
    rows = [r for r in _csv_rows(root / NIH_CSV) if split == "all" or nih_split_of(r["patient_id"]) == split]
    x = _read_gray_zip(root / NIH_ZIP, [r["png_name"] for r in rows])
    return ArraySplit(x=x, y=np.array([XRAY_LABELS_2.index(r["label"]) for r in rows], np.int64), labels=XRAY_LABELS_2)


def load_covid3(split: str, data_dir: str | os.PathLike | None = None, download: bool = False) -> ArraySplit:
    """normal / pneumonia (Kermany, pediatric) + COVID-19 (the collection, adult), same ``split``
    names as :func:`load_kermany`; the COVID patients are split 70/15/15 by :func:`covid_split_of`."""
    k = load_kermany(split, data_dir)
    c = load_covid_collection(split, data_dir)
    return ArraySplit(x=np.concatenate([k.x, c.x]), y=np.concatenate([k.y, c.y]), labels=XRAY_LABELS_3)


def synthetic_xrays(n: int, seed: int = 0, size: int = 224, classes: int = 2) -> ArraySplit:
    """Tiny learnable stand-in for chest X-rays (for --smoke): two bright 'lungs' on a dark
    field; class 1 adds a haze over one lung, class 2 haze over both."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    yy, xx = np.mgrid[0:size, 0:size] / size
    lungs = [((xx - c) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1 for c in (0.3, 0.7)]
    x = rng.integers(0, 40, (n, size, size)).astype(np.float32)
    for i, k in enumerate(y):
        for j, lung in enumerate(lungs):
            x[i][lung] += 80 if (k == 1 and j == 0) or k == 2 else 170
    return ArraySplit(x=np.clip(x, 0, 255).astype(np.uint8)[..., None], y=y.astype(np.int64),
                      labels=XRAY_LABELS_3[:classes])


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
    "xray2": (load_kermany, synthetic_xrays),
    "xray3": (load_covid3, lambda n, seed=0: synthetic_xrays(n, seed, classes=3)),
}
# Datasets whose validation split is given by the data (patient-level), not drawn at random.
PREDEFINED_VAL = {"xray2", "xray3"}
SMOKE_SIZES = {"xray2": 48, "xray3": 48}  # 224 px EfficientNet: a few dozen images are seconds

# What the model card says about each dataset's input: the app's preprocessing policy
# (a function name in convscope.preprocess), the pixel format, and where the data came from.
INPUT_SPECS = {
    "mnist": {
        "preprocess": "mnist_digit",
        "color": "grayscale, white ink (255) on black (0): MNIST polarity",
        "note": policy_note("mnist_digit"),
        "data_source": MNIST_SOURCE,
        "test_split": "test",
    },
    "cifar10": {
        "preprocess": "cifar_photo",
        "color": "RGB",
        "note": policy_note("cifar_photo"),
        "data_source": CIFAR_SOURCE,
        "test_split": "test",
    },
    "xray2": {
        "preprocess": "xray_image",
        "color": "grayscale (one channel), the radiograph's own polarity: bone and fluid bright",
        "note": policy_note("xray_image"),
        "data_source": KERMANY_SOURCE,
        "test_split": "test",
    },
    "xray3": {
        "preprocess": "xray_image",
        "color": "grayscale (one channel), the radiograph's own polarity: bone and fluid bright",
        "note": policy_note("xray_image"),
        "data_source": KERMANY_SOURCE + " + " + COVID_SOURCE,
        "test_split": "test",
    },
}


def load_split(dataset: str, split: str, data_dir: str | os.PathLike | None = None,
               download: bool = False) -> ArraySplit:
    """``split`` of ``dataset`` by registry name ("mnist", ...)."""
    return LOADERS[dataset][0](split, data_dir=data_dir, download=download)


def synthetic_split(dataset: str, n: int, seed: int = 0) -> ArraySplit:
    return LOADERS[dataset][1](n, seed=seed)
