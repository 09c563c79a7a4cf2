"""Training-curve and confusion-matrix figures (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np


def plot_curves(history: list[dict], path: Path, title: str, label_smoothing: float = 0.0) -> None:
    """Loss and accuracy per epoch, train vs validation. Validation loss is plain cross-entropy;
    with label smoothing the training loss has a higher floor, and the legend says so."""
    ep = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    train_label = f"train (label smoothing {label_smoothing:g})" if label_smoothing else "train"
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label=train_label)
    ax1.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax2.plot(ep, [100 * h["train_acc"] for h in history], "o-", label="train (augmented)")
    ax2.plot(ep, [100 * h["val_acc"] for h in history], "o-", label="validation")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix with raw counts in the cells."""
    cm = np.asarray(cm)
    rate = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(labels)
    # at least ~4 inches: two- and three-class matrices (X-ray) need room for the title and labels
    fig, ax = plt.subplots(figsize=(max(4.8, 1.2 + 0.55 * n), max(3.8, 1.0 + 0.5 * n)), dpi=100)
    ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7 if n > 5 else 11,
                        color="white" if rate[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=45 if max(map(len, labels)) > 2 else 0)
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str,
             points: dict[str, tuple[float, float]] | None = None) -> None:
    """ROC curves ``{name: (fpr, tpr, auc)}``, with operating points ``{name: (fpr, tpr)}`` marked."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=100)
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    for name, (x, y) in (points or {}).items():
        ax.plot([x], [y], "o", ms=7, label=name)
    ax.plot([0, 1], [0, 1], ":", color="gray", lw=1)
    ax.set(xlabel="false-positive rate (1 - specificity)", ylabel="true-positive rate (sensitivity)",
           xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":  # python -m train.plots runs/<recipe>: redraw a run's figures from metrics.json
    import json
    import sys

    from train.recipes import RECIPES

    run = Path(sys.argv[1])
    m = json.loads((run / "metrics.json").read_text())
    recipe = RECIPES[m["recipe"]]
    plot_curves(m["history"], run / "curves.png", f"{recipe.title}: training curves",
                m["config"].get("label_smoothing", 0.0))
