"""Teach: a new image classifier from a few images per class, in seconds, without torch.

Transfer learning on ONNX Runtime: the frozen ImageNet backbone ``imagenet_lite0`` (a shipped
model: EfficientNet-Lite0 without its classifier) turns every image, and a few augmented views
of each training image (flips, crops, exposure), into its 1280 pooled features; scikit-learn's
``LogisticRegression`` fits a new softmax head on them, a few L-BFGS iterations at a time so the
training and held-out curves come as it learns. The result is one ONNX file: the
backbone's bytes with the head appended (convscope.onnx_wire: ``Gemm`` + ``Softmax`` -> ``probs``,
and ``cam``: the head as a 1x1 convolution over the last stage)
and its card in the metadata, opened like any uploaded model (convscope.user_models), so it
answers through the same answer layer, shows its stages and class-activation map (the head is a
linear map of a global average pool), and can be downloaded.

Limits, each with a message: 2-10 classes, MAX_PER_CLASS images per class, MAX_IMAGES in all,
zips of at most MAX_ZIP_BYTES (and MAX_ZIP_ENTRIES entries, MAX_UNZIPPED_BYTES unpacked, checked
from the headers and again while reading), TRAIN_SECONDS of fitting. Imports no Gradio.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from convscope import onnx_wire
from convscope.cards import METADATA_KEY
from convscope.preprocess import InputError, read_image, to_rgb, whole_photo
from convscope.runtime import ServedModel, make_session
from convscope.uploads import MAX_TEACH_BYTES, MAX_TEACH_FILES, MAX_UPLOAD_BYTES
from convscope.user_models import UserModel, open_model

BACKBONE = "imagenet_lite0"
SIDE = 224  # px: the backbone's input; every image is squashed to it whole, as user_models.resize does
MIN_CLASSES, MAX_CLASSES = 2, 10
MAX_PER_CLASS = int(os.environ.get("CONVSCOPE_TEACH_PER_CLASS", "60"))
MAX_IMAGES = MAX_TEACH_FILES
MAX_TOTAL_PIXELS = 400_000_000  # of all images before squashing: decoding time is what it bounds
MAX_ZIP_BYTES = MAX_TEACH_BYTES
MAX_ZIP_ENTRIES = 2000
MAX_UNZIPPED_BYTES = 200 * 2**20
TRAIN_SECONDS = float(os.environ.get("CONVSCOPE_TEACH_SECONDS", "60"))
MIN_SIDE = 16  # px: smaller images hold too little to learn from
FEW = 5  # a class with fewer images gets a warning
VIEWS = 2  # augmented views per training image, besides the image itself
HELD_OUT = 0.2  # share of each class's images kept out of fitting (classes of 3 images or more)
STEP, STEPS = 10, 30  # L-BFGS iterations per point of the curves, and at most this many points
REGULARISATION = 0.03  # LogisticRegression's C on z-scored features: chosen on CIFAR-10 few-shot (bench.teach)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class TeachError(InputError):
    """Images or classes the Teach tab cannot train on, with the reason (REST: 422)."""


@dataclass
class Dataset:
    """The images to learn from: RGB uint8 SIDE x SIDE, their class index, and the class names."""

    images: np.ndarray
    y: np.ndarray
    labels: list[str]
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: int((self.y == i).sum()) for i, name in enumerate(self.labels)}


def squash(image: Any) -> np.ndarray:
    """Any image -> RGB uint8 SIDE x SIDE, the whole picture (convscope.preprocess.whole_photo)."""
    if isinstance(image, np.ndarray) and image.shape == (SIDE, SIDE, 3) and image.dtype == np.uint8:
        return image
    rgb = to_rgb(image)
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise TeachError(f"An image is {rgb.shape[1]}x{rgb.shape[0]} px: at least {MIN_SIDE} px a side, please.")
    return whole_photo(rgb, SIDE)


def class_names(labels: list[str]) -> list[str]:
    """The classes in first-seen order, after checking their names and number."""
    names = [str(n).strip() for n in labels]
    if any(not n for n in names):
        raise TeachError("Every image needs a class name: one is empty.")
    if any(len(n) > 40 for n in names):
        raise TeachError("Class names are at most 40 characters.")
    classes = list(dict.fromkeys(names))
    folded = Counter(n.casefold() for n in classes)
    if dup := [n for n in classes if folded[n.casefold()] > 1]:
        raise TeachError(f"Two classes differ only in capitals: {sorted(set(dup))}. Use one name.")
    if len(classes) < MIN_CLASSES:
        raise TeachError(f"Teach at least {MIN_CLASSES} classes: there is only {classes or 'none'}.")
    if len(classes) > MAX_CLASSES:
        raise TeachError(f"At most {MAX_CLASSES} classes: there are {len(classes)}.")
    return classes


def build_dataset(items: list[tuple[str, Any]]) -> Dataset:
    """(class name, image) pairs -> a Dataset, refusing what cannot be learned from and warning
    about what will be learned badly (few or unbalanced images, one image in two classes)."""
    if not items:
        raise TeachError("Add some images first: at least one per class, better five or more.")
    if len(items) > MAX_IMAGES:
        raise TeachError(f"{len(items)} images: this server teaches from at most {MAX_IMAGES}.")
    classes = class_names([name for name, _ in items])
    index = {c: i for i, c in enumerate(classes)}
    images, y, seen = [], [], {}
    warnings = []
    for name, img in items:
        x = squash(img)
        digest = hashlib.sha256(x.tobytes()).hexdigest()
        if digest in seen and seen[digest] != name:
            warnings.append(f"The same image is in '{seen[digest]}' and '{name}': the model cannot learn both.")
        seen[digest] = name
        images.append(x)
        y.append(index[name.strip()])
    data = Dataset(np.stack(images), np.array(y), classes, warnings)
    counts = data.counts()
    if over := [c for c, n in counts.items() if n > MAX_PER_CLASS]:
        raise TeachError(f"At most {MAX_PER_CLASS} images per class: {over} have more.")
    if few := [c for c, n in counts.items() if n < FEW]:
        warnings.append(f"Few images in {few}: {FEW} or more per class learn better, and with fewer than 3 "
                        "none is kept aside to check the model.")
    if max(counts.values()) > 3 * min(counts.values()):
        warnings.append(f"Unbalanced classes ({counts}): the model will favour the bigger ones.")
    return data


def _safe_member(info: zipfile.ZipInfo) -> str | None:
    """The class name of a zip entry "<class>/<file>", or None for entries to skip; TeachError for
    a path that tries to leave the archive."""
    raw = info.filename.replace("\\", "/")
    path = PurePosixPath(raw)
    if raw.startswith("/") or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise TeachError(f"The zip holds a path outside it ({raw[:60]!r}): refused.")
    if info.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
        return None
    parts = [p for p in path.parts if p not in ("", ".")]
    if parts and parts[0] == "__MACOSX":
        return None
    return parts[-2] if len(parts) >= 2 else None


def read_zip(data: bytes) -> tuple[list[tuple[str, Any]], list[str]]:
    """A zip of folders, one per class (``<class>/<image>``, at any depth: the image's folder is
    its class) -> (class, image squashed to SIDE) pairs and notes about skipped entries. Sizes are checked
    from the central directory before anything is inflated, and again while reading."""
    if len(data) > MAX_ZIP_BYTES:
        raise TeachError(f"The zip is {len(data) / 2**20:.0f} MB: at most {MAX_ZIP_BYTES // 2**20} MB.")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise TeachError("This is not a zip file (or it is damaged).") from None
    infos = z.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise TeachError(f"The zip has {len(infos)} entries: at most {MAX_ZIP_ENTRIES}.")
    if sum(i.file_size for i in infos) > MAX_UNZIPPED_BYTES:
        raise TeachError(f"The zip unpacks to over {MAX_UNZIPPED_BYTES // 2**20} MB: refused (a zip bomb?).")
    items, skipped, total, pixels = [], 0, 0, 0
    for info in infos:
        label = _safe_member(info)
        if label is None:
            skipped += not info.is_dir()
            continue
        if info.file_size > MAX_UPLOAD_BYTES:
            raise TeachError(f"{info.filename[:60]} is over {MAX_UPLOAD_BYTES // 2**20} MB.")
        with z.open(info) as f:
            raw = f.read(MAX_UPLOAD_BYTES + 1)  # never more than the header promised, whatever it says
        total += len(raw)
        if len(raw) > MAX_UPLOAD_BYTES or total > MAX_UNZIPPED_BYTES:
            raise TeachError("The zip's files are larger than their headers say: refused.")
        try:
            img = read_image(raw)
        except Exception:  # not an image after all: PIL raises many types for broken files
            skipped += 1
            continue
        pixels += int(np.prod(np.asarray(img).shape[:2])) if isinstance(img, np.ndarray) else img.width * img.height
        if pixels > MAX_TOTAL_PIXELS or len(items) >= MAX_IMAGES:
            raise TeachError(f"The zip holds more than {MAX_IMAGES} images or {MAX_TOTAL_PIXELS // 10**6} megapixels "
                             "in all: teach from fewer.")
        items.append((label, squash(img)))  # only the small copy is kept
    notes = [f"Skipped {skipped} file(s) that are not images in a class folder."] if skipped else []
    if not items:
        raise TeachError("No images in class folders: lay the zip out as <class>/<image>.")
    return items, notes


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A training view: a random crop of 70-100% of the sides, sometimes mirrored, exposure and
    contrast within +-25%."""
    img = Image.fromarray(rgb)
    s = rng.uniform(0.7, 1.0)
    w, h = round(SIDE * s), round(SIDE * rng.uniform(max(0.7, s - 0.15), min(1.0, s + 0.15)))
    left, top = int(rng.integers(0, SIDE - w + 1)), int(rng.integers(0, SIDE - h + 1))
    img = img.crop((left, top, left + w, top + h)).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.75, 1.25))
    return np.asarray(img)


class Backbone:
    """The frozen feature extractor: a session on ``imagenet_lite0``'s pooled ``features`` alone."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.data = model.card.read_verified(model.models_dir)  # the bytes every taught model starts from
        self.session = make_session(onnx_wire.keep_outputs(self.data, ["features"]), threads=2)

    def features(self, images: np.ndarray, batch: int = 16) -> np.ndarray:
        return np.concatenate([self.session.run(["features"], {"image": images[i:i + batch]})[0]
                               for i in range(0, len(images), batch)])


def split(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, held-out) indices: HELD_OUT of each class of 3 or more images, at least one."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, round(HELD_OUT * len(idx))) if len(idx) >= 3 else 0
        held += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.array(sorted(train)), np.array(sorted(held), dtype=np.int64)


@dataclass
class Head:
    """The fitted softmax head on the raw features: probs = softmax(features @ weight + bias)."""

    weight: np.ndarray  # (1280, classes), the features' z-scoring folded in
    bias: np.ndarray
    curves: list[dict]  # per epoch: train/held-out loss and accuracy
    epochs: int  # L-BFGS iterations run

    def probs(self, feats: np.ndarray) -> np.ndarray:
        z = feats.astype(np.float64) @ self.weight + self.bias
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def _logits_of(clf: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(W (D, C), b (C)) of a fitted linear classifier as softmax logits (binary: [0, z])."""
    w, b = clf.coef_.T.astype(np.float64), clf.intercept_.astype(np.float64)
    if n_classes == 2 and w.shape[1] == 1:
        return np.concatenate([np.zeros_like(w), w], 1), np.concatenate([[0.0], b])
    return w, b


def _point(head: Head, f: np.ndarray, y: np.ndarray) -> dict:
    if not len(y):
        return {"loss": None, "accuracy": None}
    p = head.probs(f)
    return {"loss": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)).mean()),
            "accuracy": float((p.argmax(1) == y).mean())}


def fit_head(f_train: np.ndarray, y_train: np.ndarray, f_held: np.ndarray, y_held: np.ndarray, n_classes: int,
             report: Callable[[int, list[dict]], None] | None = None, deadline: float | None = None) -> Head:
    """A softmax head by scikit-learn's LogisticRegression (L-BFGS, L2 with C = REGULARISATION on
    z-scored features), fitted STEP iterations at a time (warm start) so that ``report(step,
    curves)`` can draw the training and held-out curves as they come; stops when L-BFGS converges,
    after STEPS, or at ``deadline`` (time.monotonic())."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    z = (f_train - mu) / sd
    clf = LogisticRegression(C=REGULARISATION, max_iter=STEP, warm_start=True)
    curves: list[dict] = []
    head = Head(np.zeros((z.shape[1], n_classes)), np.zeros(n_classes), curves, 0)
    for step in range(1, STEPS + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(z, y_train)
        w, b = _logits_of(clf, n_classes)
        head = Head(w / sd[:, None], b - (mu / sd) @ w, curves, step * STEP)
        curves.append({"iterations": step * STEP, "train": _point(head, f_train, y_train),
                       "held_out": _point(head, f_held, y_held)})
        if report:
            report(step, curves)
        if clf.n_iter_.max() < STEP or (deadline is not None and time.monotonic() > deadline):
            break
    return head


@dataclass
class Taught:
    """A taught model: the served model (an uploaded-model view of its ONNX file), its card, the
    file's bytes, and what the held-out images showed."""

    model: UserModel
    card: dict
    data: bytes
    confusion: np.ndarray  # rows: true class, columns: predicted, held-out images
    wrong: list[tuple[np.ndarray, str, str, float]]  # held-out mistakes: (image, true, predicted, p(predicted))


def compose(backbone: Backbone, head: Head, card: dict) -> bytes:
    """The taught model as one ONNX file: the backbone's bytes, the head appended (``features`` ->
    Gemm -> ``logits`` -> Softmax -> ``probs``), the card in the metadata."""
    n = head.weight.shape[1]
    w = onnx_wire
    return w.append_to_graph(
        backbone.data,
        [w.node("Gemm", ["features", "teach/weight", "teach/bias"], ["logits"]),
         w.node("Softmax", ["logits"], ["probs"], axis=1),
         # the class-activation maps of every class, as the shipped models' ``cam`` (export.wrap): the
         # head's weights as a 1x1 convolution over the last stage
         w.node("Conv", ["head", "teach/cam_weight"], ["cam"])],
        [w.float_tensor("teach/weight", head.weight), w.float_tensor("teach/bias", head.bias),
         w.float_tensor("teach/cam_weight", head.weight.T[:, :, None, None])],
        [w.float_output("probs", ["batch", n]), w.float_output("cam", ["batch", n, 7, 7])],
        {METADATA_KEY: json.dumps(card)})


def training_views(data: Dataset, idx: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each training image and VIEWS augmented copies of it, with their classes."""
    rng = np.random.default_rng(seed)
    views = [v for i in idx for v in (data.images[i], *(augment(data.images[i], rng) for _ in range(VIEWS)))]
    return np.stack(views), np.repeat(data.y[idx], 1 + VIEWS)


def teach(items: list[tuple[str, Any]], backbone: Backbone,
          report: Callable[[str, float, list[dict]], None] | None = None) -> Taught:
    """(class name, image) pairs -> a trained, measured, composed model. ``report(stage, fraction
    done, curves so far)`` follows progress."""
    say = report or (lambda *_: None)
    clock = {"start": time.monotonic()}
    data = build_dataset(items)
    train_idx, held_idx = split(data.y)
    say("augmenting", 0.05, [])
    x_train, y_train = training_views(data, train_idx)
    clock["augmentation"] = time.monotonic()
    say("features", 0.1, [])
    f_train = backbone.features(x_train)
    f_held = backbone.features(data.images[held_idx]) if len(held_idx) else np.zeros((0, f_train.shape[1]))
    clock["features"] = time.monotonic()
    head = fit_head(f_train, y_train, f_held, data.y[held_idx], len(data.labels),
                    lambda e, c: say("fitting", 0.6 + 0.35 * e / STEPS, c), clock["start"] + TRAIN_SECONDS)
    clock["fit"] = time.monotonic()
    probs = head.probs(f_held) if len(held_idx) else np.zeros((0, len(data.labels)))
    confusion = np.zeros((len(data.labels),) * 2, np.int64)
    np.add.at(confusion, (data.y[held_idx], probs.argmax(1) if len(probs) else []), 1)
    card = taught_card(backbone, data, head, confusion, clock)
    file = compose(backbone, head, card)
    model = open_model(file, f"{card['name']}.onnx")
    card["seconds"]["export"] = round(time.monotonic() - clock["fit"], 2)
    card["seconds"]["total"] = round(time.monotonic() - clock["start"], 2)
    wrong = [(data.images[i], data.labels[data.y[i]], data.labels[int(p.argmax())], float(p.max()))
             for i, p in zip(held_idx, probs, strict=True) if p.argmax() != data.y[i]]
    say("done", 1.0, head.curves)
    return Taught(model, card, file, confusion, sorted(wrong, key=lambda w: -w[3]))


def taught_card(backbone: Backbone, data: Dataset, head: Head, confusion: np.ndarray,
                clock: dict) -> dict:
    """What a taught model's file says about itself (its metadata, and the download beside it)."""
    n_held = int(confusion.sum())
    last = head.curves[-1] if head.curves else {}
    return {
        "name": f"taught_{hashlib.sha256(data.images.tobytes()).hexdigest()[:8]}",
        "title": "Taught: " + ", ".join(data.labels), "tab": "taught", "labels": data.labels,
        "input": {"name": "image", "dtype": "uint8", "layout": "NHWC", "shape": [None, SIDE, SIDE, 3],
                  "preprocess": f"the whole image squashed to {SIDE}x{SIDE} (bicubic); [-1, 1] inside the graph"},
        "backbone": {"name": backbone.model.name, "sha256": backbone.model.card.sha256, "frozen": True},
        "head": f"scikit-learn LogisticRegression (L-BFGS, C={REGULARISATION}) on the z-scored features of the "
                f"training images and {VIEWS} augmented views of each; the z-scoring is folded into the ONNX Gemm",
        "images_per_class": data.counts(), "warnings": data.warnings,
        "held_out": {"n": n_held, "accuracy": float(np.trace(confusion) / n_held) if n_held else None,
                     "confusion": confusion.tolist(),
                     "note": f"{HELD_OUT:.0%} of each class of 3 or more images, never trained on"},
        "training": {"iterations": head.epochs, "final": last, "curves": head.curves},
        "seconds": {"augmentation": round(clock["augmentation"] - clock["start"], 2),
                    "features": round(clock["features"] - clock["augmentation"], 2),
                    "fit": round(clock["fit"] - clock["features"], 2)},
        "limitations": ["Learned from the few images given, in seconds: it knows only these classes and how these "
                        "images looked; anything else gets one of them."],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


_BACKBONES: dict[int, Backbone] = {}


def backbone_of(registry: Any) -> Backbone:
    """The registry's backbone session, built once (TeachError when the model is not served)."""
    model = registry.models.get(BACKBONE)
    if model is None:
        raise TeachError(f"Teaching needs the {BACKBONE} model, which this server does not serve: "
                         f"{registry.broken.get(BACKBONE, 'its card is missing')}.")
    key = id(model)
    if key not in _BACKBONES:
        _BACKBONES[key] = Backbone(model)
    return _BACKBONES[key]
