"""Digits tab: draw a digit, see what LeNet-5 and the modern CNN make of it, live.

The drawing goes through MNIST's own preprocessing (convscope.preprocess.mnist_digit); the
28x28 result is shown, because "what the model sees" is half of the lesson. Each model's answer
(convscope.answers) is its top-3 probabilities; where the card's rule withholds the answer (top
probability under ``reject_below``) the tab says the drawing does not look like a digit.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from convscope import visualize as viz
from convscope.answers import Answer, answer, answer_all
from convscope.card_text import article
from convscope.preprocess import EmptyInput, InputError
from convscope.runtime import Registry
from convscope.tabs.common import (
    NO_PROBABILITIES,
    SafeSketchpad,
    answer_anyway,
    gate_verdict,
    shown_probabilities,
    sketch_image,
    tab_models,
)

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


def verdict(a: Answer) -> str:
    best = a.model.card.labels[a.decision.index]
    if gate := gate_verdict(a):
        return f"{gate} · {a.latency_ms:.1f} ms"
    if a.label is None:
        return f"🤔 **Doesn't look like a digit.** Best guess {best} at {a.probs[a.decision.index]:.0%}, " \
               f"under the {a.model.card.calibration['reject_below']:.0%} threshold · {a.latency_ms:.1f} ms"
    return f"It's {article(best)} **{best}** ({a.probs[a.decision.index]:.1%}) · {a.latency_ms:.1f} ms"


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
    per_model = []  # [label, verdict, "answer anyway" box, its label] of each model
    with gr.Row():
        for m in models:
            with gr.Column(min_width=220):
                gr.Markdown(f"### {m.card.title}\n{m.card.params:,} parameters · "
                            f"{m.card.metrics['accuracy']:.2%} on MNIST test")
                shown = gr.Label(num_top_classes=3, label="top 3", elem_id=f"label-{m.name}")
                said = gr.Markdown("", elem_id=f"verdict-{m.name}")
                per_model += [shown, said, *answer_anyway(f"label-{m.name}")]
    blank = [NO_PROBABILITIES[0], "", *NO_PROBABILITIES[1:]] * len(models)

    def on_draw(value: Any) -> list:
        try:
            answers = answer_all(models, sketch_image(value))  # the drawing is prepared once
        except EmptyInput:
            return [None, EMPTY_MESSAGE, *blank]
        except InputError as e:
            return [None, f"⚠️ {e}", *blank]
        out = []
        for a in answers:
            top, box, anyway = shown_probabilities(a)
            out += [top, verdict(a), box, anyway]
        return [preview(answers[0].seen[..., 0]), "", *out]

    outputs = [seen, status, *per_model]
    sketch.change(on_draw, sketch, outputs, show_progress="hidden", trigger_mode="always_last",
                  api_visibility="private")
    # Press the Sketchpad's own "Clear canvas" tool in the browser: setting the editor's value to
    # None from the server re-creates the whole canvas, which takes seconds in software WebGL.
    clear.click(None, None, None, js=CLEAR_JS, api_visibility="private")

    def predict_digit(sketch: dict | None, model: str = default) -> dict:
        """The answer for a drawing (black ink on white, any size), as REST gives it: ``label`` is
        null when the card's rule says it does not look like a digit (calibration.reject_below),
        with the ``reason``; ``probabilities`` are every digit's, most probable first.

        Raises a clear error for an empty, uniform, too small or too large image, or an unknown model.
        """
        if model not in by_name:
            raise gr.Error(f"Unknown model {model!r}; choose one of {sorted(by_name)}.")
        try:
            return answer(by_name[model], sketch_image(sketch)).to_json()
        except InputError as e:
            raise gr.Error(str(e)) from None

    # API-only endpoint: a Sketchpad value in, the answer out. Its own hidden input keeps the
    # file's mode (16-bit, float, palette, EXIF) for convscope.preprocess instead of Gradio's
    # 8-bit "L" conversion, which the browser canvas needs but which clips other files.
    api_sketch = SafeSketchpad(visible=False, type="pil", image_mode=None, label="sketch")
    api_model = gr.Dropdown(sorted(by_name), value=default, visible=False, label="model")
    api_out = gr.JSON(visible=False)
    gr.Button(visible=False).click(predict_digit, [api_sketch, api_model], api_out, api_name="predict_digit")
