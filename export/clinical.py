"""Calibration, operating point and the clinical-style metrics of the X-ray models, measured by
running the ONNX file in onnxruntime (the figures go into the card; tests re-measure them).

The validation split (patient-level) chooses everything: the temperature (lowest NLL), and for a
binary model the decision threshold (Youden's J). The official test split only measures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convscope.answers import decided_classes
from convscope.metrics import (
    apply_temperature,
    classification_metrics,
    ece,
    nll,
    operating_point,
    per_class_rates,
    roc_auc,
    roc_curve,
    youden_threshold,
)
from train import plots


def decisions(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """The app's decision (convscope.answers, the one home of the rule) for a batch of probabilities."""
    return decided_classes(probs, threshold)


def calibration_figures(probs: np.ndarray, y: np.ndarray, temperature: float) -> dict:
    """NLL and ECE of the calibrated ``probs`` and of the same net before calibration."""
    raw = apply_temperature(probs, 1 / temperature)  # undo the temperature inside the graph
    return {"ece_before": ece(raw, y), "ece_after": ece(probs, y),
            "nll_before": nll(raw, y), "nll_after": nll(probs, y)}


def evaluate(val_probs: np.ndarray, val_y: np.ndarray, test_probs: np.ndarray, test_y: np.ndarray,
             labels: list[str], temperature: float) -> tuple[dict, dict]:
    """``(metrics, calibration)`` for a card, from the calibrated file's outputs on val and test."""
    binary = len(labels) == 2
    threshold = youden_threshold(val_probs[:, 1], val_y == 1) if binary else None
    pred = decisions(test_probs, threshold)
    base = classification_metrics(test_probs, test_y, labels)
    k = len(labels)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (test_y, pred), 1)
    metrics = {
        **base,
        "accuracy": float((pred == test_y).mean()),  # at the operating threshold: what the app decides
        "errors": int((pred != test_y).sum()),
        "accuracy_argmax": base["accuracy"],
        "per_class_accuracy": {lab: round(float(cm[i, i] / max(cm[i].sum(), 1)), 5) for i, lab in enumerate(labels)},
        "per_class": per_class_rates(cm, labels),
        "confusion": cm.tolist(),
        "roc_auc": (roc_auc(test_probs[:, 1], test_y == 1) if binary else
                    {lab: roc_auc(test_probs[:, i], test_y == i) for i, lab in enumerate(labels)}),
        "val_roc_auc": (roc_auc(val_probs[:, 1], val_y == 1) if binary else
                        {lab: roc_auc(val_probs[:, i], val_y == i) for i, lab in enumerate(labels)}),
    }
    cal = {
        "temperature": temperature,
        "fitted_on": f"validation split (patient-level, n={len(val_y)}), lowest NLL",
        "validation": calibration_figures(val_probs, val_y, temperature),
        "test": calibration_figures(test_probs, test_y, temperature),
        "ece_bins": 15,
    }
    if binary:
        pos = labels[1]
        cal |= {"threshold": threshold,
                "rule": f"p({pos}) >= threshold -> {pos}; the threshold maximises sensitivity + specificity on "
                        "validation (Youden's J), so it does not depend on how common the disease is",
                "operating_point": {"validation": operating_point(val_probs[:, 1], val_y == 1, threshold),
                                    "test": operating_point(test_probs[:, 1], test_y == 1, threshold)}}
    else:
        cal |= {"threshold": None, "rule": "the most probable class (calibrated probabilities)",
                "operating_point": {"validation": per_class_rates(_confusion(val_probs.argmax(1), val_y, k), labels),
                                    "test": metrics["per_class"]}}
    return metrics, cal


def _confusion(pred: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    return cm


def roc_figure(test_probs: np.ndarray, test_y: np.ndarray, labels: list[str], cal: dict, path: Path,
               title: str) -> None:
    """Test-set ROC (one vs rest per class for more than two), with the operating point marked."""
    if len(labels) == 2:
        fpr, tpr, _ = roc_curve(test_probs[:, 1], test_y == 1)
        op = cal["operating_point"]["test"]
        plots.plot_roc({f"{labels[1]} vs {labels[0]}": (fpr, tpr, roc_auc(test_probs[:, 1], test_y == 1))}, path,
                       title, {f"threshold {cal['threshold']:.2f} (chosen on validation)":
                               (1 - op["specificity"], op["sensitivity"])})
        return
    curves = {}
    for i, lab in enumerate(labels):
        fpr, tpr, _ = roc_curve(test_probs[:, i], test_y == i)
        curves[f"{lab} vs rest"] = (fpr, tpr, roc_auc(test_probs[:, i], test_y == i))
    plots.plot_roc(curves, path, title)


def confound_probe(probs: np.ndarray, labels: list[str]) -> dict:
    """What the 3-class model says about adult non-COVID films from the COVID collection (never
    trained on): if it learned 'adult / other hospital' rather than COVID-19, it calls many of
    them COVID-19."""
    pred = probs.argmax(1)
    return {"n": len(pred), "what": "adult frontal non-COVID films of the COVID-19 Image Data Collection (No Finding, "
                                    "SARS, bacterial/fungal/viral pneumonias, ...), never used in training",
            "predicted": {lab: int((pred == i).sum()) for i, lab in enumerate(labels)},
            "called_covid_fraction": float((pred == labels.index("COVID-19")).mean()) if len(pred) else None}
