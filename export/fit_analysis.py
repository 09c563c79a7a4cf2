"""A short, generated over/underfitting reading of a training history (for the model card).

Every sentence is computed from the per-epoch figures: nothing here is written by hand about a
particular model.
"""

from __future__ import annotations


def fit_analysis(history: list[dict]) -> str:
    """Plain-English summary of train vs validation curves."""
    if len(history) < 2:
        return "Too few epochs recorded to judge over- or underfitting."
    last = history[-1]
    best = max(history, key=lambda h: h["val_acc"])
    low = min(history, key=lambda h: h["val_loss"])
    gap = 100 * (last["train_acc"] - last["val_acc"])
    parts = [f"After {last['epoch']} epochs: training accuracy {100 * last['train_acc']:.1f}% "
             f"(running average over the epoch, in training mode), validation {100 * last['val_acc']:.1f}% "
             f"(gap {gap:+.1f} points)."]
    if low["epoch"] < last["epoch"] and last["val_loss"] > low["val_loss"] * 1.05:
        parts.append(f"Validation loss bottomed out at epoch {low['epoch']} ({low['val_loss']:.3f}) and rose "
                     f"to {last['val_loss']:.3f} while training loss kept falling: overfitting - the net "
                     "starts memorising the training images; more augmentation, regularisation or early "
                     "stopping would help.")
    elif gap > 5:
        parts.append("Training accuracy is well above validation accuracy: some overfitting, although "
                     "validation loss has not turned upward yet.")
    elif gap < -1:
        parts.append("Validation accuracy is above training accuracy: the training figures are taken on "
                     "augmented batches with dropout on, so the net is not overfitting; it is "
                     "regularised, and a bigger net or longer training could still gain.")
    else:
        parts.append("Train and validation accuracy are close: no sign of overfitting.")
    gain = 100 * (last["val_acc"] - history[-2]["val_acc"])
    if best["epoch"] == last["epoch"] and gain > 0.5:
        parts.append(f"Validation accuracy was still rising at the end (+{gain:.1f} points in the last "
                     "epoch): underfitting in the sense of under-training - more epochs would help.")
    else:
        parts.append(f"Best validation accuracy {100 * best['val_acc']:.1f}% at epoch {best['epoch']}.")
    return " ".join(parts)
