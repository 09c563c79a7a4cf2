"""CIFAR-10 tab: classify a photo (upload, webcam or paste) with any of the CIFAR models, see
the 32x32 image the model actually gets, and compare the models with the classic architectures.

The photo goes through convscope.preprocess.cifar_photo (the policy named in each card). Each
answer is the top-3; under the card's ``reject_below`` the tab says the photo may show none of
the ten classes. The comparison table is generated from the cards and from
models/reference/classic_archs.json (written by ``python -m export.classic_archs``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from convscope import visualize as viz
from convscope.cards import ModelCard
from convscope.preprocess import EmptyInput, InputError, cifar_photo
from convscope.runtime import DEFAULT_VARIANT, MAIN_VARIANT, Registry, ServedModel
from convscope.tabs.common import SafeImage, tab_models, top_k, variant_for, variant_radio

TAB = "cifar10"
EXPECTED = ("cifar_resnet", "cifar_inception", "cifar_simple")  # shown in this order
PHOTOS = Path(__file__).resolve().parents[2] / "examples" / "photos"  # see SOURCES.md there
CLASSIC_ARCHS = Path("reference") / "classic_archs.json"  # in the models folder
PREVIEW_SIDE = 160  # px: the 32x32 input shown 5x, nearest-neighbour
POLICY = ("The model sees the **centred square** of your photo shrunk to **32×32** (an area filter), "
          "as small as CIFAR-10's own photos: small or off-centre objects get lost.")
EMPTY_MESSAGE = "📷 **Upload, snap or paste a photo**, or pick an example below."


def classify(model: ServedModel, image32: np.ndarray, variant: str = MAIN_VARIANT) -> tuple[np.ndarray, float]:
    """Probabilities for one 32x32 RGB uint8 image, and the model's own time in ms."""
    t = time.perf_counter()
    probs = model.probs(image32[None], variant)[0]
    return probs, (time.perf_counter() - t) * 1e3


def verdict(model: ServedModel, probs: np.ndarray, ms: float, variant: str = MAIN_VARIANT) -> str:
    labels, threshold = model.card.labels, model.card.calibration["reject_below"]
    best = int(probs.argmax())
    timing = f"{ms:.1f} ms, {model.card.variant_label(variant)}"
    if probs[best] < threshold:
        return (f"🤔 **Maybe none of these 10 classes.** Best guess *{labels[best]}* at {probs[best]:.0%}, "
                f"under this model's {threshold:.0%} threshold · {timing}")
    return f"Looks like a **{labels[best]}** ({probs[best]:.1%}) · {timing}"


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
            label = gr.Label(num_top_classes=3, label="Top 3", elem_id="cifar-label")
            status = gr.Markdown(EMPTY_MESSAGE, elem_id="cifar-status")

    def run(value: Any, name: str, wanted: str = DEFAULT_VARIANT) -> list:
        try:
            image32 = cifar_photo(value)
        except EmptyInput:
            return [None, None, EMPTY_MESSAGE]
        except InputError as e:
            return [None, None, f"⚠️ {e}"]
        m = by_name.get(name) or by_name[default]
        chosen, fallback = variant_for(m, wanted or DEFAULT_VARIANT)
        probs, ms = classify(m, image32, chosen)
        return [viz.served(viz.upscale(image32, PREVIEW_SIDE)), top_k(probs, m.card.labels),
                verdict(m, probs, ms, chosen) + fallback]

    outputs = [seen, label, status]
    photos = sorted(PHOTOS.glob("*.jpg"))
    if photos:
        gr.Examples([[str(p), default] for p in photos], inputs=[photo, model_dd], outputs=outputs, fn=run,
                    cache_examples=True, cache_mode="lazy", label="Example photos (none from CIFAR; "
                    "sources and licenses in examples/photos/SOURCES.md)", elem_id="cifar-examples")
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

    def classify_image(image: Image.Image | None, model: str = default,
                       variant: str = DEFAULT_VARIANT) -> dict[str, float]:
        """Top-3 CIFAR-10 class probabilities for a photo (any size; centred square, 32x32).

        ``variant``: "default" (INT8 where the model ships it, else FP32), "fp32" (the main file),
        or one the model ships: "int8", "single_view" (no test-time augmentation). Raises a clear
        error for a missing, unreadable, too small or too large image, an unknown model or variant.
        Below the card's calibration.reject_below the photo may show none of the classes.
        """
        if model not in by_name:
            raise gr.Error(f"Unknown model {model!r}; choose one of {sorted(by_name)}.")
        if why := by_name[model].variant_error(variant):
            raise gr.Error(why)
        try:
            image32 = cifar_photo(image)
        except EmptyInput:
            raise gr.Error("No image was given.") from None
        except InputError as e:
            raise gr.Error(str(e)) from None
        return top_k(classify(by_name[model], image32, variant)[0], by_name[model].card.labels)

    api_image = SafeImage(visible=False, type="pil", image_mode=None, label="image")  # mode kept for preprocess
    api_model = gr.Dropdown(sorted(by_name), value=default, visible=False, label="model")
    api_variant = gr.Textbox(DEFAULT_VARIANT, visible=False, label="variant")
    api_out = gr.Label(num_top_classes=3, visible=False)
    gr.Button(visible=False).click(classify_image, [api_image, api_model, api_variant], api_out,
                                   api_name="classify_image")
