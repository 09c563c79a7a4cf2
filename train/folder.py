"""Your own images, for practitioners: ``python -m train folder DIR [--name NAME] [flags]``.

DIR is an ImageFolder: ``DIR/<class>/<image>``, or ``DIR/train/<class>/...`` and
``DIR/val/<class>/...``; without train/ and val/, a fifth of each class (at least one image) is
held out for validation, stratified and seeded. The recipe fine-tunes the ImageNet
EfficientNet-Lite0 end to end with the project's loop (LP-FT: the new head is fitted on the
frozen features first; progress, curves, confusion matrix, checkpoints every epoch, ``--resume``),
on every image squashed whole to 224x224 (convscope.preprocess.whole_photo, as the Teach tab and
the taught model's answers do). ``python -m export <name>`` then writes ``models/<name>.onnx`` and
its card (measured on the validation images: a folder has no separate test split), and the app
serves it in the Teach tab and the Feature maps tab with no code change.

A folder recipe is registered at run time (:func:`register`): its dataset is ``folder:<DIR>``,
which checkpoints record, so export finds the folder again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from convscope.preprocess import whole_photo
from train import datasets
from train.recipes import LITE0_WEIGHTS, RECIPES, Config, Recipe

PREFIX = "folder:"
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VAL_SHARE = 0.2
CONFIG = Config(epochs=5, batch_size=16, lr=5e-4, optimizer="adamw", weight_decay=0.02, warmup=0.15, keep_best=True,
                flip=True, rotate=10.0, translate=0.06, scale=0.1, jitter=0.2, probe_decay=0.01, val_size=0)


def scan(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """(class names, {"train": [(file, class index)], "val": [...]}) of an ImageFolder."""
    split_dirs = {s: root / s for s in ("train", "val")}
    bases = split_dirs if all(d.is_dir() for d in split_dirs.values()) else {"all": root}
    classes = sorted({d.name for base in bases.values() for d in base.iterdir()
                      if d.is_dir() and not d.name.startswith(".")})
    if len(classes) < 2:
        raise SystemExit(f"{root}: need at least 2 class folders (DIR/<class>/<image>), found {classes}")
    files = {s: [(f, i) for i, c in enumerate(classes) for f in sorted((base / c).rglob("*"))
                 if f.suffix.lower() in SUFFIXES and f.is_file()] for s, base in bases.items()}
    if "all" in files:
        files = stratified(files["all"])
    for s, fs in files.items():
        if not fs:
            raise SystemExit(f"{root}: no images for the {s} split")
    return classes, files


def stratified(files: list[tuple[Path, int]], seed: int = 0) -> dict[str, list[tuple[Path, int]]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"train": [], "val": []}
    for c in sorted({i for _, i in files}):
        mine = [files[j] for j in rng.permutation([j for j, (_, i) in enumerate(files) if i == c])]
        k = max(1, round(VAL_SHARE * len(mine))) if len(mine) > 1 else 0
        out["val"] += mine[:k]
        out["train"] += mine[k:]
    return out


def loader(root: Path):
    """A train.datasets loader for the folder: (split, data_dir=None, download=False) -> ArraySplit."""
    def load(split: str, data_dir: object = None, download: bool = False) -> datasets.ArraySplit:
        classes, files = scan(root)
        chosen = files["val" if split in ("val", "test") else "train"]
        x = np.stack([whole_photo(Image.open(f)) for f, _ in chosen])
        return datasets.ArraySplit(x, np.array([i for _, i in chosen], np.int64), classes)
    return load


def register(root: str | os.PathLike, name: str | None = None) -> Recipe:
    """The recipe of a folder, registered in train.recipes.RECIPES and train.datasets (idempotent)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise SystemExit(f"{root} is not a folder")
    name = name or "folder_" + re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_")
    dataset = PREFIX + str(root)
    classes, files = scan(root)
    datasets.LOADERS[dataset] = (loader(root), None)
    datasets.PREDEFINED_VAL.add(dataset)
    datasets.INPUT_SPECS[dataset] = {
        "preprocess": "whole_photo", "color": "RGB", "note": datasets.policy_note("whole_photo"),
        "data_source": f"your images: {root} ({len(classes)} classes, {len(files['train'])} train / "
                       f"{len(files['val'])} validation images)",
        "test_split": "val"}
    RECIPES[name] = Recipe(
        name=name, title=f"Your images: {', '.join(classes)}", arch="xray_lite0", dataset=dataset, tab="taught",
        config=CONFIG, arch_kwargs={"num_classes": len(classes), "in_chans": 3}, pretrained=LITE0_WEIGHTS,
        description=f"EfficientNet-Lite0 pretrained on ImageNet, fine-tuned end to end on the images of {root.name} "
                    "(LP-FT), every image squashed to 224x224; measured on its validation images.",
        limitations=("Trained on one folder of images: it knows only these classes and how these images looked.",
                     "Measured on the validation images (a folder has no separate test split)."))
    return RECIPES[name]


def recipe_of(ckpt: dict) -> Recipe:
    """A checkpoint's recipe: a named one, or its folder's, registered again."""
    if ckpt["recipe"] in RECIPES:
        return RECIPES[ckpt["recipe"]]
    dataset = ckpt.get("dataset", "")
    if not dataset.startswith(PREFIX):
        raise SystemExit(f"unknown recipe {ckpt['recipe']!r}")
    return register(dataset[len(PREFIX):], ckpt["recipe"])
