"""Digits tab: draw a digit, see what LeNet-5 and the modern CNN make of it, live.

The drawing goes through MNIST's own preprocessing (convscope.preprocess.mnist_digit); the
28x28 result is shown, because "what the model sees" is half of the lesson. Each model's answer
is its top-3 probabilities; if the top one is under the card's ``reject_below`` threshold the
tab says the drawing does not look like a digit instead of naming one.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from convscope import visualize as viz
from convscope.preprocess import EmptyInput, InputError, mnist_digit
from convscope.runtime import Registry, ServedModel
from convscope.tabs.common import SafeSketchpad, tab_models, top_k

TAB = "digits"
EXPECTED = ("mnist_lenet5", "mnist_cnn")  # shown in this order; other digit models follow
SKETCH_ID = "digit-sketch"
EMPTY_MESSAGE = "✏️ **Draw a digit (0–9) in the box.** The models answer after every stroke."
# The Sketchpad starts, and ends up after "Clear canvas", with no tool selected: pick the brush
# for the user so they can draw straight away.
SELECT_BRUSH_JS = f"""() => {{
  const pick = (n) => {{
    const b = document.querySelector('#{SKETCH_ID} button[aria-label="Brush"]');
    if (b) b.click(); else if (n > 0) setTimeout(() => pick(n - 1), 250);
  }};
  setTimeout(() => pick(40), 100);
}}"""
CLEAR_JS = f"""() => {{
  document.querySelector('#{SKETCH_ID} button[aria-label="Clear canvas"]')?.click();
  ({SELECT_BRUSH_JS})();
}}"""
PREVIEW_SIDE = 140  # px: the 28x28 input shown 5x, nearest-neighbour so pixels stay crisp


def sketch_image(value: Any) -> Any:
    """The composite image inside a Sketchpad value (dict), or the value itself if it is an image."""
    if isinstance(value, dict):  # an example or upload may arrive as the background only
        return value.get("composite") if value.get("composite") is not None else value.get("background")
    return value


def classify(model: ServedModel, digit28: np.ndarray) -> tuple[np.ndarray, float]:
    """Probabilities for one 28x28 uint8 digit, and the model's own time in ms."""
    t = time.perf_counter()
    probs = model.probs(digit28[None, :, :, None])[0]
    return probs, (time.perf_counter() - t) * 1e3


def verdict(model: ServedModel, probs: np.ndarray, ms: float) -> str:
    labels, threshold = model.card.labels, model.card.calibration["reject_below"]
    best = int(probs.argmax())
    if probs[best] < threshold:
        return (f"🤔 **Doesn't look like a digit.** Best guess {labels[best]} at {probs[best]:.0%}, "
                f"under the {threshold:.0%} threshold · {ms:.1f} ms")
    return f"It's a **{labels[best]}** ({probs[best]:.1%}) · {ms:.1f} ms"


def preview(digit28: np.ndarray) -> Image.Image:
    return viz.upscale(digit28, PREVIEW_SIDE)


def build(registry: Registry) -> None:
    """Render the tab's contents inside the current ``gr.Tab`` context."""
    gr.Markdown("Draw a digit with the mouse, a finger or a pen. Both networks were trained on "
                "MNIST; your drawing is prepared the way MNIST digits were (crop, fit into 20×20, "
                "centre the ink's mass in 28×28) and they see exactly the small image on the right.")
    models = tab_models(registry, TAB, EXPECTED)
    if not models:
        return
    by_name = {m.name: m for m in models}
    default = max(models, key=lambda m: m.card.metrics.get("accuracy", 0)).name

    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=300):
            sketch = SafeSketchpad(
                label="Your digit", elem_id=SKETCH_ID, type="numpy", image_mode="L", format="png",
                canvas_size=(280, 280), layers=False, show_label=False,
                brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=12),
            )
            clear = gr.Button("Clear", variant="secondary", elem_id="digit-clear")
        with gr.Column(scale=2, min_width=200):
            seen = gr.Image(label="What the models see (28×28)", elem_id="digit-preview", height=PREVIEW_SIDE + 40,
                            interactive=False, buttons=[], format="png")
            status = gr.Markdown(EMPTY_MESSAGE, elem_id="digit-status")
    labels, verdicts = [], []
    with gr.Row():
        for m in models:
            with gr.Column(min_width=220):
                gr.Markdown(f"### {m.card.title}\n{m.card.params:,} parameters · "
                            f"{m.card.metrics['accuracy']:.2%} on MNIST test")
                labels.append(gr.Label(num_top_classes=3, label="top 3", elem_id=f"label-{m.name}"))
                verdicts.append(gr.Markdown("", elem_id=f"verdict-{m.name}"))

    def on_draw(value: Any) -> list:
        try:
            digit = mnist_digit(sketch_image(value))
        except EmptyInput:
            return [None, EMPTY_MESSAGE, *[None] * len(models), *[""] * len(models)]
        except InputError as e:
            return [None, f"⚠️ {e}", *[None] * len(models), *[""] * len(models)]
        outs = [classify(m, digit) for m in models]
        return [preview(digit), "", *[top_k(p, m.card.labels) for m, (p, _) in zip(models, outs, strict=True)],
                *[verdict(m, p, ms) for m, (p, ms) in zip(models, outs, strict=True)]]

    outputs = [seen, status, *labels, *verdicts]
    sketch.change(on_draw, sketch, outputs, show_progress="hidden", trigger_mode="always_last",
                  api_visibility="private")
    # Press the Sketchpad's own "Clear canvas" tool in the browser: setting the editor's value to
    # None from the server re-creates the whole canvas, which takes seconds in software WebGL.
    clear.click(None, None, None, js=CLEAR_JS, api_visibility="private")

    def predict_digit(sketch: dict | None, model: str = default) -> dict[str, float]:
        """Top-3 digit probabilities for a drawing (black ink on white, any size).

        Raises a clear error for an empty, uniform, too small or too large image, or an unknown
        model. The 'does not look like a digit' threshold is the card's calibration.reject_below.
        """
        if model not in by_name:
            raise gr.Error(f"Unknown model {model!r}; choose one of {sorted(by_name)}.")
        try:
            digit = mnist_digit(sketch_image(sketch))
        except InputError as e:
            raise gr.Error(str(e)) from None
        return top_k(classify(by_name[model], digit)[0], by_name[model].card.labels)

    # API-only endpoint: a Sketchpad value in, one model's Label out. Its own hidden input keeps
    # the file's mode (16-bit, float, palette, EXIF) for convscope.preprocess instead of Gradio's
    # 8-bit "L" conversion, which the browser canvas needs but which clips other files.
    api_sketch = SafeSketchpad(visible=False, type="pil", image_mode=None, label="sketch")
    api_model = gr.Dropdown(sorted(by_name), value=default, visible=False, label="model")
    api_out = gr.Label(num_top_classes=3, visible=False)
    gr.Button(visible=False).click(predict_digit, [api_sketch, api_model], api_out, api_name="predict_digit")
