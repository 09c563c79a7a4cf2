"""CIFAR-10 tab: classify a photo (upload, webcam or paste) with any of the CIFAR models, see
the 32x32 image the model actually gets, and compare the models with the classic architectures.

The photo goes through convscope.preprocess.cifar_photo (the policy named in each card). Each
answer (convscope.answers) is the top-3; where the card's rule withholds it (``reject_below``)
the tab says the photo may show none of the ten classes. The comparison table is generated from
the cards (convscope.card_text) and models/reference/classic_archs.json (written by
``python -m export.classic_archs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from convscope import visualize as viz
from convscope.answers import Answer, answer
from convscope.card_text import CLASSIC_ARCHS, COMPARISON_HEADERS, article, comparison_rows, variant_note
from convscope.preprocess import EmptyInput, InputError
from convscope.runtime import DEFAULT_VARIANT, Registry, ServedModel
from convscope.tabs.common import (
    NO_PROBABILITIES,
    SafeImage,
    answer_anyway,
    gate_verdict,
    shown_probabilities,
    tab_models,
    variant_for,
    variant_radio,
    variants_of,
)

TAB = "cifar10"
EXPECTED = ("cifar_resnet", "cifar_inception", "cifar_simple")  # shown in this order
PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "photos"  # see SOURCES.md there
PREVIEW_SIDE = 160  # px: the 32x32 input shown 5x, nearest-neighbour
POLICY = ("The model sees the **centred square** of your photo shrunk to **32×32** (an area filter), "
          "as small as CIFAR-10's own photos: small or off-centre objects get lost.")
EMPTY_MESSAGE = "📷 **Upload, snap or paste a photo**, or pick an example below."


def verdict(a: Answer) -> str:
    card, i = a.model.card, a.decision.index
    timing = f"{a.latency_ms:.1f} ms, {card.variant_label(a.variant)}"
    if gate := gate_verdict(a):
        return f"{gate} · {timing}"
    if a.label is None:
        return (f"🤔 **Maybe none of these 10 classes.** Best guess *{card.labels[i]}* at {a.probs[i]:.0%}, "
                f"under this model's {card.calibration['reject_below']:.0%} threshold · {timing}")
    return f"Looks like {article(a.label)} **{a.label}** ({a.probs[i]:.1%}) · {timing}"


def build(registry: Registry) -> None:
    """Render the tab's contents inside the current ``gr.Tab`` context."""
    gr.Markdown("Show a photo to networks trained on CIFAR-10's ten classes: airplane, automobile, bird, "
                "cat, deer, dog, frog, horse, ship, truck. " + POLICY)
    models = tab_models(registry, TAB, EXPECTED)
    if not models:
        return
    by_name = {m.name: m for m in models}
    choices = [(f"{m.card.title} — {m.card.metrics['accuracy']:.1%}", m.name) for m in models]
    default = max(models, key=lambda m: m.card.metrics.get("accuracy", 0)).name

    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            photo = SafeImage(label="Your photo", elem_id="cifar-photo", type="pil", image_mode=None,
                              sources=["upload", "webcam", "clipboard"], height=320)
            model_dd = gr.Dropdown(choices, value=default, label="Model", elem_id="cifar-model")
            variant = variant_radio(models, "cifar-variant", by_name[default])
            note = variant_note(models)
            if note:
                gr.Markdown(note)
        with gr.Column(scale=2, min_width=240):
            seen = gr.Image(label="What the model sees (32×32)", elem_id="cifar-seen", height=PREVIEW_SIDE + 40,
                            interactive=False, buttons=[], format="png")
            status = gr.Markdown(EMPTY_MESSAGE, elem_id="cifar-status")
            label = gr.Label(num_top_classes=3, label="Top 3", elem_id="cifar-label")
            box, anyway = answer_anyway("cifar-label")

    def run(value: Any, name: str, wanted: str = DEFAULT_VARIANT) -> list:
        m = by_name.get(name) or by_name[default]
        chosen, fallback = variant_for(m, wanted or DEFAULT_VARIANT)
        try:
            a = answer(m, value, chosen)
        except EmptyInput:
            return [None, EMPTY_MESSAGE, *NO_PROBABILITIES]
        except InputError as e:
            return [None, f"⚠️ {e}", *NO_PROBABILITIES]
        return [viz.served(viz.upscale(a.seen, PREVIEW_SIDE)), verdict(a) + fallback, *shown_probabilities(a)]

    outputs = [seen, status, label, box, anyway]
    photos = sorted(PHOTOS.glob("*.jpg"))
    if photos:  # only the photo: the answer comes from the model and variant chosen above
        gr.Examples([[str(p)] for p in photos], inputs=[photo], label="Example photos (none from CIFAR; "
                    "sources and licenses in examples/photos/SOURCES.md)", elem_id="cifar-examples")
    model_dd.change(lambda n: variants_of(by_name.get(n) or by_name[default]), model_dd, variant,
                    api_visibility="private")
    for trigger in (photo.change, model_dd.change, variant.change):
        trigger(run, [photo, model_dd, variant], outputs, show_progress="hidden", trigger_mode="always_last",
                api_visibility="private")

    with gr.Accordion("Compare the models", open=False, elem_id="cifar-compare"):
        gr.Markdown("Our three CIFAR-10 models, measured on the 10,000 test images by running their ONNX files, "
                    "next to the classic architectures the course compares (parameters and FLOPs computed "
                    "from their torchvision definitions at their original input size by "
                    "`python -m export.classic_archs`).")
        rows = comparison_rows([m.card for m in models], registry.models_dir / CLASSIC_ARCHS)
        gr.Dataframe(rows, headers=COMPARISON_HEADERS, interactive=False, wrap=True, elem_id="cifar-table")
        curves = [(str(registry.models_dir / m.card.artifacts["curves"]), m.card.title) for m in models
                  if (registry.models_dir / m.card.artifacts.get("curves", "-")).is_file()]
        if curves:
            gr.Gallery(curves, label="Training curves (train vs validation)", columns=min(len(curves), 3),
                       height="auto", format="png", elem_id="cifar-curves")
        analyses = [f"**{m.card.title}** — {m.card.training['fit_analysis']}" for m in models
                    if m.card.training.get("fit_analysis")]
        if analyses:
            gr.Markdown("\n\n".join(analyses))
    classify_image_api(by_name, default)


def classify_image_api(by_name: dict[str, ServedModel], default: str) -> None:
    """The named endpoint ``classify_image``: a photo, a model and a variant in, the answer out."""
    def classify_image(image: Image.Image | None, model: str = default, variant: str = DEFAULT_VARIANT) -> dict:
        """The answer for a photo (any size; centred square, 32x32), as REST gives it: ``label``
        is null when the in-distribution gate says it is not like CIFAR-10's photos
        (``out_of_distribution``, ``ood_score``) or the card's rule says it may show none of the
        classes (reject_below), with the ``reason``; ``probabilities`` are every class's, most probable first.

        ``variant``: "default" (INT8 where the model ships it, else FP32), "fp32" (the main file),
        or one the model ships: "int8", "single_view" (no test-time augmentation). Raises a clear
        error for a missing, unreadable, too small or too large image, an unknown model or variant.
        """
        if model not in by_name:
            raise gr.Error(f"Unknown model {model!r}; choose one of {sorted(by_name)}.")
        if why := by_name[model].variant_error(variant):
            raise gr.Error(why)
        try:
            return answer(by_name[model], image, variant).to_json()
        except EmptyInput:
            raise gr.Error("No image was given.") from None
        except InputError as e:
            raise gr.Error(str(e)) from None

    api_image = SafeImage(visible=False, type="pil", image_mode=None, label="image")  # mode kept for preprocess
    api_model = gr.Dropdown(sorted(by_name), value=default, visible=False, label="model")
    api_variant = gr.Textbox(DEFAULT_VARIANT, visible=False, label="variant")
    api_out = gr.JSON(visible=False)
    gr.Button(visible=False).click(classify_image, [api_image, api_model, api_variant], api_out,
                                   api_name="classify_image")
