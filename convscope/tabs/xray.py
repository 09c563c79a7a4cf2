"""X-ray tab: normal / pneumonia / COVID-19 from a chest film, by transfer learning.

A research demonstration, never a diagnosis: the notice stays on screen whatever happens. Input
is a file (PNG, JPEG at 8 or 16 bits, or DICOM) decoded by convscope.preprocess.read_image and
squashed to 224x224 by xray_image, the policy both training sets used. Output: the calibrated
probabilities (the temperature is inside the ONNX graph), the decision at the card's operating
threshold with its sensitivity and specificity in words, a class-activation heatmap with an
opacity slider, warnings for images that do not look like a chest film, and the card's summary.

Privacy: the upload is read once, decoded in memory and not kept; Gradio's own copy is removed
by the upload sweeper (convscope.uploads); nothing about the image is logged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from convscope import visualize as viz
from convscope.cards import ModelCard
from convscope.preprocess import EmptyInput, InputError, read_image, xray_warnings
from convscope.runtime import DEFAULT_VARIANT, Registry, ServedModel
from convscope.tabs.common import tab_models, variant_for, variant_radio
from convscope.uploads import NotAnUpload, check_upload

TAB = "xray"
EXPECTED = ("xray_pneumonia", "xray_covid3")
NOTICE = ("⚕️ **Research demonstration — not for clinical use.** These models are teaching examples, not "
          "medical devices: they were never clinically validated, they learned from one pediatric hospital "
          "(and, for COVID-19, adult films from elsewhere), and they must not inform any decision about a "
          "person's health. Uploaded files are processed in memory and not kept.")
EMPTY_MESSAGE = "🩻 **Upload a chest X-ray**: PNG or JPEG (8- or 16-bit) or DICOM, frontal view."
OVERLAY_SIDE = 320  # px
DEFAULT_OPACITY = 0.45


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def read_upload(path: str | None) -> Any:
    """A Gradio upload (a temporary file path) -> decoded image; the bytes are not kept. The path
    must be an upload of this server (the Guard checked it already; this is the second lock)."""
    if not path:
        raise EmptyInput("No file was uploaded.")
    try:
        return read_image(check_upload(path).read_bytes())
    except NotAnUpload as e:
        raise InputError(str(e)) from None


def diagnose(model: ServedModel, image: Any, variant: str = DEFAULT_VARIANT) -> dict:
    """Everything the tab shows for one film: input, calibrated probs, decision, CAM, warnings."""
    warnings = xray_warnings(image)
    x = model.prepare(image)
    t = time.perf_counter()
    probs, cam = model.run(["probs", "cam"], x[None], variant)
    ms = (time.perf_counter() - t) * 1e3
    probs, cam = probs[0], cam[0]
    decided = model.decide(probs)
    return {"image": x, "probs": probs, "decision": decided, "cam": np.maximum(cam[decided], 0),
            "warnings": warnings, "ms": ms, "variant": variant}


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
    if "COVID-19" in labels:
        text += ("\n\n⚠️ **Source confound:** every COVID-19 film it learned from is adult and from other "
                 "hospitals, every other film pediatric from one hospital: it may recognise where a film comes "
                 "from rather than COVID-19 (the model card shows the evidence).")
        probe = card.metrics.get("confound_probe")
        if probe and labels[decided] == "COVID-19":
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


def build(registry: Registry) -> None:
    """Render the tab's contents inside the current ``gr.Tab`` context."""
    gr.Markdown(NOTICE, elem_classes=["cs-notice"], elem_id="xray-notice")
    models = tab_models(registry, TAB, EXPECTED)
    if not models:
        return
    by_name = {m.name: m for m in models}
    default = models[0].name
    choices = [(m.card.title, m.name) for m in models]

    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            upload = gr.File(label="Chest X-ray (PNG, JPEG, 16-bit PNG, DICOM)", type="filepath",
                             elem_id="xray-file", height=120)
            model_radio = gr.Radio(choices, value=default, label="Model", elem_id="xray-model")
            variant = variant_radio(models, "xray-variant", by_name[default])
            opacity = gr.Slider(0, 1, value=DEFAULT_OPACITY, step=0.05, label="Heatmap opacity",
                                elem_id="xray-opacity")
            warnings_md = gr.Markdown(elem_id="xray-warnings", elem_classes=["cs-notice"], visible=False)
        with gr.Column(scale=3, min_width=300):
            heat = gr.Image(label="What the model sees (224×224), with the class-activation map of its decision",
                            elem_id="xray-heatmap", interactive=False, format="png", height=OVERLAY_SIDE + 40,
                            buttons=[])
            label = gr.Label(label="Calibrated probabilities", elem_id="xray-label")
            decision = gr.Markdown(EMPTY_MESSAGE, elem_id="xray-decision")
    with gr.Accordion("Model card", open=False, elem_id="xray-card"):
        summary = gr.Markdown(card_summary(by_name[default]), elem_id="xray-summary")
        figures = gr.Gallery(_figures(registry.models_dir, by_name[default]), columns=3, height="auto",
                             format="png", label="ROC (test), confusion matrix (test, at the threshold), "
                             "training curves", elem_id="xray-figures")
    shown = gr.State(None)  # (image, cam) of the last answer: the slider re-blends without re-running

    def run(path: str | None, name: str, wanted: str, alpha: float) -> list:
        m = by_name.get(name) or by_name[default]
        chosen, fallback = variant_for(m, wanted or DEFAULT_VARIANT)  # the radio lists every model's variants
        try:
            d = diagnose(m, read_upload(path), chosen)
        except EmptyInput:
            return [None, None, EMPTY_MESSAGE, gr.update(visible=False), None]
        except InputError as e:
            return [None, None, f"⚠️ {e}", gr.update(visible=False), None]
        probs = {lab: float(p) for lab, p in zip(m.card.labels, d["probs"], strict=True)}
        text = decision_text(m, d["probs"], d["decision"]) + f"\n\n*{d['ms']:.0f} ms, {m.card.variant_label(chosen)}"
        if v := m.card.variants.get(chosen):  # the rates above are the main file's; say what this one scored
            text += (f": {v['accuracy']:.2%} test accuracy against the FP32 file's {m.card.metrics['accuracy']:.2%}, "
                     "whose figures the text above quotes")
        text += f"{fallback}*"
        warn = "\n".join(f"⚠️ {w}" for w in d["warnings"])
        if warn:
            warn = ("**This may not be a frontal chest X-ray** — the answer below is meaningless for "
                    f"anything else:\n\n{warn}")
        return [viz.overlay(d["image"][..., 0], d["cam"], alpha, OVERLAY_SIDE), probs, text,
                gr.update(value=warn, visible=bool(warn)), (d["image"][..., 0], d["cam"])]

    outputs = [heat, label, decision, warnings_md, shown]
    for trigger in (upload.change, model_radio.change, variant.change):
        trigger(run, [upload, model_radio, variant, opacity], outputs, show_progress="minimal",
                trigger_mode="always_last", api_visibility="private")
    opacity.change(lambda s, a: viz.overlay(s[0], s[1], a, OVERLAY_SIDE) if s else None, [shown, opacity], heat,
                   show_progress="hidden", trigger_mode="always_last", api_visibility="private")
    model_radio.change(lambda n: [card_summary(by_name[n]), _figures(registry.models_dir, by_name[n])],
                       model_radio, [summary, figures], api_visibility="private")

    def diagnose_xray(file: str | None, model: str = default, variant: str = DEFAULT_VARIANT) -> dict:
        """Calibrated normal / pneumonia (/ COVID-19) probabilities for a chest X-ray file (PNG, JPEG,
        16-bit PNG or DICOM), the decision at the model's operating threshold, and warnings when the
        image does not look like a frontal chest film. Research demonstration, not for clinical use.
        """
        if model not in by_name:
            raise gr.Error(f"Unknown model {model!r}; choose one of {sorted(by_name)}.")
        m = by_name[model]
        if why := m.variant_error(variant):
            raise gr.Error(why)
        try:
            d = diagnose(m, read_upload(file), variant)
        except InputError as e:
            raise gr.Error(str(e)) from None
        cal = m.card.calibration
        return {"model": model, "variant": m.resolve(variant), "decision": m.card.labels[d["decision"]],
                "probabilities": {lab: float(p) for lab, p in zip(m.card.labels, d["probs"], strict=True)},
                "threshold": cal.get("threshold"), "operating_point_test": cal["operating_point"]["test"],
                "warnings": d["warnings"], "not_for_clinical_use": True,
                **({"source_confound_probe": probe} if (probe := m.card.metrics.get("confound_probe")) else {})}

    api_file = gr.File(visible=False, type="filepath", label="file")
    api_model = gr.Dropdown(sorted(by_name), value=default, visible=False, label="model")
    api_variant = gr.Textbox(DEFAULT_VARIANT, visible=False, label="variant")
    api_out = gr.JSON(visible=False)
    gr.Button(visible=False).click(diagnose_xray, [api_file, api_model, api_variant], api_out,
                                   api_name="diagnose_xray")


def _figures(models_dir: Path, model: ServedModel) -> list[tuple[str, str]]:
    names = {"roc": "ROC, test set", "confusion": "confusion matrix, test set", "curves": "training curves"}
    return [(str(models_dir / model.card.artifacts[k]), caption) for k, caption in names.items()
            if (models_dir / model.card.artifacts.get(k, "-")).is_file()]
