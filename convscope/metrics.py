"""Classifier metrics measured by running an ONNX file in onnxruntime (numpy only).

The export step writes these figures into the card, and the accuracy tests call the same
function on the shipped files, so a card's claim is always re-measurable.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def predict_probs(session: ort.InferenceSession, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """``probs`` for uint8 NHWC ``x``, in batches."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(["probs"], {name: x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])


def classification_metrics(probs: np.ndarray, y: np.ndarray, labels: list[str],
                           reject_below: float | None = None) -> dict:
    """Accuracy, per-class accuracy, confusion matrix and, with a rejection threshold, the
    operating point it gives (coverage and accuracy of the answers kept)."""
    k = len(labels)
    pred = probs.argmax(1)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    out = {
        "n": len(y),
        "accuracy": float((pred == y).mean()),
        "errors": int((pred != y).sum()),
        "per_class_accuracy": {lab: round(float(a), 5) for lab, a in zip(labels, per_class, strict=True)},
        "confusion": cm.tolist(),
        "mean_top1_probability": float(probs.max(1).mean()),
    }
    if reject_below is not None:
        kept = probs.max(1) >= reject_below
        out["reject_below"] = reject_below
        out["coverage_at_threshold"] = float(kept.mean())
        out["accuracy_when_kept"] = float((pred[kept] == y[kept]).mean()) if kept.any() else None
    return out
