"""How much a film's sharpness alone says about its label in the Kermany splits.

Why the X-ray recipe has a ``resample`` augmentation: the films reach 224 px from originals of
different sizes, and the mean |Laplacian| of a film (its fine detail) ranks pneumonia against
normal well on its own, better on train than on test, where the normal films are blurrier. A net
may lean on that cue and call a blurry normal film pneumonia.

    python scripts/xray_sharpness.py [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from convscope.metrics import roc_auc
from train.datasets import load_kermany


def sharpness(x: np.ndarray) -> np.ndarray:
    """Mean absolute 4-neighbour Laplacian per image of (N, H, W) pixels."""
    f = x.astype(np.float32)
    lap = 4 * f[:, 1:-1, 1:-1] - f[:, :-2, 1:-1] - f[:, 2:, 1:-1] - f[:, 1:-1, :-2] - f[:, 1:-1, 2:]
    return np.abs(lap).mean(axis=(1, 2))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    print("| split | n | sharpness, normal | sharpness, pneumonia | ROC AUC of 'less sharp = pneumonia' |")
    print("|---|---:|---:|---:|---:|")
    for split in ("train", "val", "test"):
        d = load_kermany(split, args.data_dir)
        s = sharpness(d.x[..., 0])
        print(f"| {split} | {len(d)} | {s[d.y == 0].mean():.2f} | {s[d.y == 1].mean():.2f} "
              f"| {roc_auc(-s, d.y):.3f} |")


if __name__ == "__main__":
    main()
