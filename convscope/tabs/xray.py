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

from pathlib import Path

import gradio as gr

from convscope import visualize as viz
from convscope.answers import answer, read_upload
from convscope.card_text import card_summary, decision_text
from convscope.preprocess import EmptyInput, InputError
from convscope.runtime import DEFAULT_VARIANT, Registry, ServedModel
from convscope.tabs.common import (
    NO_PROBABILITIES,
    answer_anyway,
    gate_verdict,
    shown_probabilities,
    tab_models,
    variant_for,
    variant_radio,
    variants_of,
)

TAB = "xray"
EXPECTED = ("xray_pneumonia", "xray_covid3")
NOTICE = ("⚕️ **Research demonstration — not for clinical use.** These models are teaching examples, not "
          "medical devices: they were never clinically validated, they learned from one pediatric hospital "
          "(and, for COVID-19, adult films from elsewhere), and they must not inform any decision about a "
          "person's health. Uploaded files are processed in memory and not kept.")
EMPTY_MESSAGE = "🩻 **Upload a chest X-ray**: PNG or JPEG (8- or 16-bit) or DICOM, frontal view."
FILMS = Path(__file__).resolve().parents[2] / "examples" / "xray"  # see SOURCES.md there
OVERLAY_SIDE = 320  # px
DEFAULT_OPACITY = 0.45


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
            films = sorted(FILMS.glob("*.png")) + sorted(FILMS.glob("*.dcm"))
            if films:  # only the file: the answer comes from the model and variant chosen above
                gr.Examples([[str(p)] for p in films], inputs=[upload], elem_id="xray-examples",
                            label="Example films (Kermany test split and adult NIH films; sources in "
                                  "examples/xray/SOURCES.md)")
            model_radio = gr.Radio(choices, value=default, label="Model", elem_id="xray-model")
            variant = variant_radio(models, "xray-variant", by_name[default])
            opacity = gr.Slider(0, 1, value=DEFAULT_OPACITY, step=0.05, label="Heatmap opacity",
                                elem_id="xray-opacity")
        with gr.Column(scale=3, min_width=300):
            heat = gr.Image(label="What the model sees (224×224), with the class-activation map of its decision",
                            elem_id="xray-heatmap", interactive=False, format="png", height=OVERLAY_SIDE + 40,
                            buttons=[])
            decision = gr.Markdown(EMPTY_MESSAGE, elem_id="xray-decision")
            warnings_md = gr.Markdown(elem_id="xray-warnings", elem_classes=["cs-notice"], visible=False)
            label = gr.Label(label="Calibrated probabilities", elem_id="xray-label")
            box, anyway = answer_anyway("xray-label")
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
            a = answer(m, read_upload(path), chosen, cam=True)
        except EmptyInput:
            return [None, EMPTY_MESSAGE, gr.update(visible=False), *NO_PROBABILITIES, None]
        except InputError as e:
            return [None, f"⚠️ {e}", gr.update(visible=False), *NO_PROBABILITIES, None]
        text = gate_verdict(a) or decision_text(m, a.probs, a.decision.index)
        text += f"\n\n*{a.latency_ms:.0f} ms, {m.card.variant_label(chosen)}"
        if v := m.card.variants.get(chosen):  # the rates above are the main file's; say what this one scored
            text += (f": {v['accuracy']:.2%} test accuracy against the FP32 file's {m.card.metrics['accuracy']:.2%}, "
                     "whose figures the text above quotes")
        text += f"{fallback}*"
        warn = "\n".join(f"⚠️ {w}" for w in a.warnings)
        if warn:
            warn = ("**This may not be a frontal chest X-ray** — the answer below is meaningless for "
                    f"anything else:\n\n{warn}")
        film = a.seen[..., 0]
        cam = None if a.label is None else a.cam  # no class named, no map of one
        return [viz.overlay(film, cam, alpha, OVERLAY_SIDE), text, gr.update(value=warn, visible=bool(warn)),
                *shown_probabilities(a, None), (film, cam)]

    outputs = [heat, decision, warnings_md, label, box, anyway, shown]
    for trigger in (upload.change, model_radio.change, variant.change):
        trigger(run, [upload, model_radio, variant, opacity], outputs, show_progress="minimal",
                trigger_mode="always_last", api_visibility="private")
    opacity.change(lambda s, a: viz.overlay(s[0], s[1], a, OVERLAY_SIDE) if s else None, [shown, opacity], heat,
                   show_progress="hidden", trigger_mode="always_last", api_visibility="private")
    model_radio.change(lambda n: [card_summary(by_name[n]), _figures(registry.models_dir, by_name[n]),
                                  variants_of(by_name[n])],
                       model_radio, [summary, figures, variant], api_visibility="private")
    diagnose_xray_api(by_name, default)


def diagnose_xray_api(by_name: dict[str, ServedModel], default: str) -> None:
    """The named endpoint ``diagnose_xray``: a file, a model and a variant in, the answer out."""
    def diagnose_xray(file: str | None, model: str = default, variant: str = DEFAULT_VARIANT) -> dict:
        """The answer for a chest X-ray file (PNG, JPEG, 16-bit PNG or DICOM), as REST gives it:
        ``label`` (the decision at the model's operating threshold; null with a ``reason`` when the
        in-distribution gate says the file is not like a chest film: ``out_of_distribution``,
        ``ood_score``), calibrated ``probabilities``,
        ``warnings`` when the image does not look like a frontal chest film, the test-set operating
        point and ``not_for_clinical_use``. Research demonstration, not for clinical use.
        """
        if model not in by_name:
            raise gr.Error(f"Unknown model {model!r}; choose one of {sorted(by_name)}.")
        m = by_name[model]
        if why := m.variant_error(variant):
            raise gr.Error(why)
        try:
            return answer(m, read_upload(file), variant).to_json()
        except InputError as e:
            raise gr.Error(str(e)) from None

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
