"""A model card in words: the sentences and tables the tabs, the README and the API docs show,
generated from the card (never typed by hand). No Gradio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from convscope.cards import ModelCard
from convscope.runtime import ServedModel

CLASSIC_ARCHS = Path("reference") / "classic_archs.json"  # in the models folder


def article(label: str) -> str:
    """'a' or 'an' before a label as it is read aloud ("an 8", "an airplane", "a 7")."""
    return "an" if label[:1].lower() in "aeio8" or label in ("11", "18") else "a"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def variant_note(models: list[ServedModel]) -> str:
    """What each variant costs and buys, per model, from the cards (test-set accuracy, batch-1 latency)."""
    lines = []
    for m in models:
        fp32_ms = m.card.artifacts["latency"]["median_ms"]
        for key, v in m.card.variants.items():
            status = "" if v["shipped"] else f" · not shipped (bound: ±{v['max_drop_pp']} points)"
            lines.append(f"- {m.card.title}, {m.card.variant_label(key)}: {v['accuracy']:.2%} vs "
                         f"{m.card.metrics['accuracy']:.2%} ({-v['accuracy_drop_pp']:+.2f} points), "
                         f"{fp32_ms:.1f} → {v['latency']['median_ms']:.1f} ms{status}")
    return ("**Variants**, measured on the test set against each model's FP32 file: **INT8** (static "
            "quantization, calibrated on training images; the default where it ships and ran faster) and "
            "**one view**: a model whose file averages 6 test-time-augmented views (the photo, its mirror "
            "image, 1-pixel shifts) run on the photo alone, for a sixth of the work:\n"
            + "\n".join(lines)) if lines else ""


def _fmt_time(seconds: float | None) -> str:
    if not seconds:
        return "—"
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"


def comparison_rows(cards: list[ModelCard], classics_path: Path) -> list[list]:
    """One row per CIFAR model (from its card) and per classic architecture (from build data)."""
    rows = []
    for c in cards:
        one = c.variants.get("single_view")
        acc = f"{c.metrics['accuracy']:.2%}" + (f" ({one['accuracy']:.2%} without TTA)" if one else "")
        rows.append([c.title, "ConvScope, CIFAR-10 32×32", acc, f"{c.params / 1e6:.2f} M", f"{c.flops / 1e6:.0f} M",
                     f"{c.artifacts['latency']['median_ms']:.2f} ms", _fmt_time(c.training.get("train_time_s"))])
    if classics_path.exists():
        for a in json.loads(classics_path.read_text())["architectures"]:
            size = "×".join(map(str, a["input"][1:]))
            rows.append([f"{a['name']} ({a['year']})", f"classic, ImageNet {size}" if a["input"][0] == 3
                         else f"classic, MNIST {size}", "—", f"{a['params'] / 1e6:.2f} M",
                         f"{a['flops'] / 1e6:,.0f} M", "—", "—"])
    return rows


COMPARISON_HEADERS = ["model", "kind, input", "CIFAR-10 test accuracy (ONNX)", "parameters", "FLOPs / image",
                      "ORT latency, batch 1", "training time (2-core CPU)"]


def decision_text(model: ServedModel, probs: np.ndarray, decided: int) -> str:
    """The decision and what it is worth, in words, from the card's test-set operating point."""
    card = model.card
    labels, cal = card.labels, card.calibration
    test = card.metrics.get("n")
    if cal.get("threshold") is not None:
        op = cal["operating_point"]["test"]
        pos = labels[1]
        head = (f"**{labels[decided].capitalize()}** suggested: p({pos}) = {probs[1]:.3f} is "
                f"{'at or above' if decided else 'below'} the operating threshold {cal['threshold']:.3f}.")
        return (f"{head}\n\nAt this threshold, on the {test} films of the official test set, the model flagged "
                f"**{_pct(op['sensitivity'])} of the {pos} films** (sensitivity) and cleared "
                f"**{_pct(op['specificity'])} of the normal ones** (specificity); "
                f"{_pct(op['ppv'])} of its {pos} calls were right. The threshold was chosen on validation only.")
    rates = cal["operating_point"]["test"][labels[decided]]
    text = (f"**{labels[decided]}** is the most probable class ({probs[decided]:.0%}).\n\nOn the test split "
            f"({test} films), the model found **{_pct(rates['sensitivity'])} of the {labels[decided]} films** "
            f"(sensitivity), and **{_pct(rates['ppv'])} of its {labels[decided]} calls were right** (PPV).")
    probe = card.metrics.get("confound_probe")  # the card records a source probe: say what it found
    if probe:
        text += ("\n\n⚠️ **Source confound:** every COVID-19 film it learned from is adult and from other "
                 "hospitals, every other film pediatric from one hospital: it may recognise where a film comes "
                 "from rather than COVID-19 (the model card shows the evidence).")
        if labels[decided] == "COVID-19":
            text += (f" Of {probe['n']} adult films *without* COVID-19 from the same collection, it called "
                     f"**{probe['called_covid_fraction']:.0%} COVID-19**: for an adult film this answer carries "
                     "little information.")
    return text


def transfer_sentence(card: ModelCard) -> str | None:
    """What ImageNet pretraining bought, from the card (None without a from-scratch baseline)."""
    m, tl = card.metrics, card.metrics.get("transfer_learning")
    if not tl:
        return None
    s, ep = tl["from_scratch"], tl.get("epochs", {})
    text = (f"**Transfer learning** (`{card.name}`): from ImageNet {m['accuracy']:.2%} / AUC {m['roc_auc']:.4f} "
            f"({ep.get('pretrained', '?')} epochs); the same network from scratch {s['accuracy']:.2%} / AUC "
            f"{s['roc_auc']:.4f} ({ep.get('from_scratch', '?')} epochs): ImageNet adds **{tl['accuracy_gain_pp']:+.2f} "
            f"points** of test accuracy and **{tl['roc_auc_gain']:+.4f}** AUC (models/{tl['baseline_file']}).")
    diff = tl.get("config_differences")
    if diff:  # what else differed between the two runs, so the gain is read for what it is
        text += " The runs also differ in: " + ", ".join(
            f"{k} {d['pretrained']} vs {d['from_scratch']}" for k, d in diff.items()) + "."
    same = tl.get("validation_by_epoch")
    if same:
        text += " At equal epochs on validation: " + "; ".join(
            f"epoch {r['epoch']} {r['pretrained_val_acc']:.1%} vs {r['from_scratch_val_acc']:.1%}" for r in same) + "."
    return text


def confound_sentence(card: ModelCard) -> str | None:
    """The source-confound probe, from the card (None for models without one)."""
    probe = card.metrics.get("confound_probe")
    if not probe:
        return None
    counts = ", ".join(f"{k} {n}" for k, n in probe["predicted"].items())
    return (f"**Source confound check** (`{card.name}`): of {probe['n']} adult non-COVID films from the COVID "
            f"collection (never trained on) it calls **{probe['called_covid_fraction']:.0%} COVID-19** ({counts}). "
            "A high share means it recognises the source (adult films, other hospitals) rather than the disease.")


def card_summary(model: ServedModel) -> str:
    """The card's key facts as markdown: data, metrics, calibration, training, use and limits."""
    c = model.card
    m, cal, tr = c.metrics, c.calibration, c.training
    auc = m.get("roc_auc")
    auc_text = (f"ROC AUC **{auc:.3f}**" if isinstance(auc, float) else
                "ROC AUC (one vs rest) " + ", ".join(f"{k} {v:.3f}" for k, v in (auc or {}).items()))
    lines = [f"### {c.title}", c.description, "",
             f"- **Test set** ({m.get('n')} films, measured on the ONNX file): accuracy **{m['accuracy']:.1%}**, "
             f"{auc_text}.",
             "- **Per class** (sensitivity / PPV): " + "; ".join(
                 f"{k} {_pct(v['sensitivity'])} / {_pct(v['ppv'])} (n={v['support']})"
                 for k, v in m.get("per_class", {}).items()) + "."]
    if cal.get("temperature"):
        t = cal["test"]
        lines.append(f"- **Calibration**: temperature {cal['temperature']:.2f} fitted on validation; expected "
                     f"calibration error on test {t['ece_before']:.3f} → {t['ece_after']:.3f}.")
    lines += [f"- {x}" for x in (transfer_sentence(c), confound_sentence(c)) if x]
    if tr.get("train_time_s"):
        cores = (tr.get("machine") or {}).get("cores")
        lines.append(f"- **Training**: {tr['train_time_s'] / 60:.0f} min on a {cores}-core CPU, "
                     f"{tr.get('epochs_run') or tr.get('epochs')} epochs, kept epoch {tr.get('epochs')} "
                     f"({tr.get('selection', '')}).")
    lines.append("- **Data**: " + " ".join(c.data_sources))
    lines.append("- **Intended use**: teaching how CNNs, transfer learning and calibration work. **Not** screening, "
                 "triage or diagnosis.")
    lines += ["- **Limitations**:", *[f"  - {x}" for x in c.limitations]]
    return "\n".join(lines)
