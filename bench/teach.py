"""The Teach tab measured: how long teaching takes, and how well a few images per class teach.

    python -m bench.teach [--data-dir ../shared/data] [--write]   # --write: into docs/teach.md

1. Time from the images to a served model for 10 classes x 20 images (CIFAR-10 training photos
   enlarged to 256 px, as a user's uploads would be decoded already), median of 3 runs, with the
   breakdown convscope.teach records (augmentation, features, fit, export). Goal: <= 20 s.
2. Few-shot CIFAR-10: k training photos per class (k = 5, 10, 20, 50; the first k of each class),
   the Teach pipeline (2 augmented views each, the backbone's features, the logistic head), scored
   on 2,000 test photos (a fixed sample), against the shipped ``cifar_resnet`` trained on all
   50,000, on the same 2,000. Goal: >= 70% at k = 20.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from convscope import teach
from convscope.runtime import load_registry
from train.datasets import load_cifar10
from train.loop import cpu_label

START, END = "<!-- bench-teach:start (python -m bench.teach --write) -->", "<!-- bench-teach:end -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "teach.md"


def enlarged(x: np.ndarray, side: int = 256) -> np.ndarray:
    return np.asarray(Image.fromarray(x).resize((side, side), Image.Resampling.BICUBIC))


def timing(backbone: teach.Backbone, train, runs: int = 3) -> list[str]:
    items = [(train.labels[c], enlarged(train.x[i])) for c in range(10) for i in np.flatnonzero(train.y == c)[:20]]
    cards = []
    for _ in range(runs):
        t = time.perf_counter()
        cards.append(teach.teach(items, backbone).card | {"wall": time.perf_counter() - t})
    best = sorted(cards, key=lambda c: c["wall"])[len(cards) // 2]
    s = best["seconds"]
    return [f"| 10 classes × 20 images (median of {runs}) | **{best['wall']:.1f} s** | {s['augmentation']:.1f} s | "
            f"{s['features']:.1f} s | {s['fit']:.1f} s | {s['export']:.1f} s | "
            f"{best['held_out']['accuracy']:.0%} of {best['held_out']['n']} |"]


def few_shot(backbone: teach.Backbone, train, test, resnet) -> list[str]:
    pick = np.sort(np.random.default_rng(0).choice(len(test), 2000, replace=False))
    x_test, y_test = test.x[pick], test.y[pick]
    f_test = backbone.features(np.stack([teach.squash(x) for x in x_test]))
    rows = []
    for k in (5, 10, 20, 50):
        idx = np.concatenate([np.flatnonzero(train.y == c)[:k] for c in range(10)])
        data = teach.Dataset(np.stack([teach.squash(x) for x in train.x[idx]]), train.y[idx], train.labels)
        x, y = teach.training_views(data, np.arange(len(idx)))
        head = teach.fit_head(backbone.features(x), y, f_test, y_test, 10)
        acc = float((head.probs(f_test).argmax(1) == y_test).mean())
        rows.append(f"| {k} | {10 * k} | **{acc:.1%}** |")
    resnet_acc = float((resnet.probs(x_test, "fp32").argmax(1) == y_test).mean())
    rows.append(f"| all (`cifar_resnet`, trained from scratch) | 50,000 | **{resnet_acc:.1%}** |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--write", action="store_true", help="write the tables into docs/teach.md")
    args = ap.parse_args()
    registry = load_registry()
    backbone = teach.backbone_of(registry)
    train, test = load_cifar10("train", args.data_dir), load_cifar10("test", args.data_dir)
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {cpu_label()}, {len(os.sched_getaffinity(0))} cores, "
             "by `python -m bench.teach`.", "",
             "| teaching | total | augmentation | features | fit | export | held-out accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|", *timing(backbone, train), "",
             "| k photos per class | training photos | CIFAR-10 accuracy (2,000 test photos) |", "|---:|---:|---:|",
             *few_shot(backbone, train, test, registry.models["cifar_resnet"])]
    print("\n".join(lines))
    if args.write:
        text = DOC.read_text()
        head, rest = text.split(START, 1)
        DOC.write_text(f"{head}{START}\n" + "\n".join(lines) + f"\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    main()
