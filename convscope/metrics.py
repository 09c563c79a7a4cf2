"""Classifier metrics measured by running an ONNX file in onnxruntime (numpy only).

The export step writes these figures into the card, and the accuracy tests call the same
function on the shipped files, so a card's claim is always re-measurable.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def predict_probs(session: ort.InferenceSession, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """``probs`` for uint8 NHWC ``x``, in batches (of fewer images when they are large)."""
    name = session.get_inputs()[0].name
    batch_size = max(8, batch_size * 1024 // (x.shape[1] * x.shape[2]))
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


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (score >= t is positive),
    from the strictest to the loosest; returns (fpr, tpr, thresholds)."""
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order].astype(bool)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tp, fp = np.cumsum(p)[last], np.cumsum(~p)[last]
    tpr = np.r_[0.0, tp / max(p.sum(), 1)]
    fpr = np.r_[0.0, fp / max((~p).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half: the Mann-Whitney U statistic)."""
    fpr, tpr, _ = roc_curve(scores, positive)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def youden_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (Youden's J). It does not depend on
    how common the positive class is, so a validation set with the training prevalence picks a
    threshold that also suits a test set with another one."""
    fpr, tpr, thr = roc_curve(scores, positive)
    i = int(np.argmax(tpr - fpr))
    # halfway to the next lower score: a fresh image scoring between the two is treated the same way
    lower = thr[i + 1] if i + 1 < len(thr) else 0.0
    return float((thr[i] + lower) / 2) if np.isfinite(thr[i]) else 1.0


def operating_point(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """Sensitivity, specificity, PPV, NPV and accuracy of 'score >= threshold is positive'."""
    pred, pos = scores >= threshold, positive.astype(bool)
    tp, fp = int((pred & pos).sum()), int((pred & ~pos).sum())
    fn, tn = int((~pred & pos).sum()), int((~pred & ~pos).sum())

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {"threshold": threshold, "n": len(pos), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn), "accuracy": (tp + tn) / max(len(pos), 1)}


def per_class_rates(confusion: np.ndarray, labels: list[str]) -> dict[str, dict]:
    """Per class (one vs rest): sensitivity (recall), PPV (precision) and support."""
    cm = np.asarray(confusion)
    out = {}
    for i, lab in enumerate(labels):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        out[lab] = {"sensitivity": float(tp / support) if support else None,
                    "ppv": float(tp / predicted) if predicted else None, "support": int(support)}
    return out


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-1 probability, in equal-width bins."""
    conf, correct = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same as dividing the logits by T (log p = logits - const)."""
    z = np.log(np.clip(probs, 1e-12, 1)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)).mean())


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (Guo et al. 2017), by golden-section search over
    log T in [-3, 3] (the NLL is unimodal in T)."""
    lo, hi = -3.0, 3.0
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(apply_temperature(probs, np.exp(a)), y), nll(apply_temperature(probs, np.exp(b)), y)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(apply_temperature(probs, np.exp(a)), y)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(apply_temperature(probs, np.exp(b)), y)
    return float(np.exp((lo + hi) / 2))
