"""Feature maps tab: look inside any served model, from its ONNX file alone.

For the chosen model and input: every exported conv stage as a grid of all its channels (one
colour scale per stage, with its legend; click a channel to enlarge it), the stage's shape and
receptive field, the filters that produce it, the class-activation map for GAP heads, and the
layer table read off the ONNX graph at export. A second sub-tab is the convolution-arithmetic
playground (convscope.convmath).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from convscope import visualize as viz
from convscope.cards import TABS, CardError
from convscope.inspection import (
    MAX_CHANNELS,
    MAX_STAGES,
    Inspection,
    enlarge,
    filter_note,
    inspect,
    layer_rows,
    render,
    render_uploaded,
)
from convscope.preprocess import EmptyInput, InputError
from convscope.runtime import Registry, ServedModel
from convscope.tabs import own_model, playground
from convscope.tabs.common import SafeImage, SafeSketchpad, missing_notice, sketch_image
from convscope.user_models import API_MODELS, look

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # made by scripts/make_examples.py


def build(registry: Registry, own: gr.State | None = None) -> gr.Tabs:
    """Render the tab; ``own``: the session's "your own model" state, shared with the Teach tab.
    Returns the sub-tabs (the Teach tab opens its model in "Your own model")."""
    models = registry.models
    gr.Markdown("Look inside any model served here: what each convolution stage computes from your "
                "input, the filters that compute it, and where the model looks when it decides.")
    with gr.Tabs() as tabs:
        with gr.Tab("Inside a model", id="inside"):
            if not models:
                gr.Markdown(missing_notice(registry.broken) or "No models are available.",
                            elem_classes=["cs-notice"])
            else:
                _build_inspector(models)
        with gr.Tab("Your own model", id="own-model"):
            own_model.build(own)
        with gr.Tab("Convolution arithmetic"):
            playground.build()
    return tabs


@dataclass
class StageSlot:
    """The components that show one conv stage (the tab has MAX_STAGES of them)."""

    group: gr.Group
    info: gr.Markdown
    grid: gr.Image
    legend: gr.Image
    big: gr.Image
    in_ch: gr.Slider
    filt_note: gr.Markdown
    filt: gr.Image

    def components(self) -> list:
        return [self.group, self.info, self.grid, self.legend, self.big, self.in_ch, self.filt_note, self.filt]


HIDDEN_STAGE = [gr.update(visible=False)] + [gr.update()] * (len(fields(StageSlot)) - 1)
NOT_ONE_BANK = ("No single filter bank computes this stage: it concatenates parallel branches "
                "(an inception block's 1×1, 3×3, factorised 5×5 and pooling paths).")


def stage_slot(i: int) -> StageSlot:
    with gr.Group(visible=False) as group:
        info = gr.Markdown()
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                grid_img = gr.Image(show_label=False, interactive=False, format="png", elem_id=f"fm-grid-{i}",
                                    buttons=["fullscreen"])
                legend = gr.Image(show_label=False, interactive=False, format="png", height=50, buttons=[])
            with gr.Column(scale=1, min_width=200):
                big = gr.Image(label="Channel (click the grid)", interactive=False, format="png",
                               elem_id=f"fm-big-{i}")
        with gr.Accordion("Filters that produce this stage", open=i == 0):
            with gr.Row():
                in_ch = gr.Slider(0, 1, 0, step=1, label="Input channel to show")
            filt_note = gr.Markdown()
            filt_img = gr.Image(show_label=False, interactive=False, format="png", buttons=["fullscreen"])
    return StageSlot(group, info, grid_img, legend, big, in_ch, filt_note, filt_img)


def stage_update(ins: Inspection, stage: dict) -> list:
    """The values of one StageSlot's components for a rendered stage."""
    w = ins.filters.get(stage["name"])
    if w is not None:
        fimg, m_abs, what = viz.filter_grid(w, 0)
        fnote = filter_note(w, m_abs, what)
        ch = gr.update(maximum=max(w.shape[1] - 1, 1), value=0, visible=w.shape[1] > 1 and w.shape[1] != 3)
    else:
        fimg, ch, fnote = None, gr.update(visible=False), NOT_ONE_BANK
    return [gr.update(visible=True), stage["info"], stage["grid"], stage["legend"], enlarge(ins, stage["name"], 0),
            ch, fnote, fimg]


def inspect_view(m: ServedModel, value: Any, cls: str | None, alpha: float) -> list:
    """Every output of the inspector for one (model, input): state, what the model saw, status,
    top-3, CAM and its class picker and note, the layer table, then each StageSlot's values."""
    has_cam = bool(m.card.output_names("cam"))
    labels_dd = gr.update(choices=["(predicted)", *m.card.labels], value=cls if cls else "(predicted)",
                          interactive=has_cam)
    note = "" if has_cam else ("This model has no global-average-pool classifier head, so it has no "
                               "exact class-activation map.")
    empty = [None, "✏️ Draw a digit or upload an image.", None, None, labels_dd, note, layer_rows(m.card.layers)]
    try:
        t = time.perf_counter()
        ins = inspect(m, sketch_image(value))
        r = render(ins, cls, alpha)
        ms = (time.perf_counter() - t) * 1e3
    except (InputError, CardError) as e:  # CardError: the file changed since start-up (its whole graph is read now)
        if not isinstance(e, EmptyInput):
            empty[1] = f"⚠️ {e}"
        return [None, *empty, *HIDDEN_STAGE * MAX_STAGES]
    stages = [x for i in range(MAX_STAGES)
              for x in (stage_update(ins, r["stages"][i]) if i < len(r["stages"]) else HIDDEN_STAGE)]
    seen_img = viz.upscale(ins.image[..., 0] if ins.image.shape[2] == 1 else ins.image, 168)
    cam_text = note or f"Where the evidence for **{r.get('cam_class')}** is (bright = more)."
    return [ins, seen_img, f"All maps computed in {ms:.0f} ms.", r["top"], r["cam"], labels_dd, cam_text,
            layer_rows(m.card.layers), *stages]


def wire_stage(slot: StageSlot, i: int, state: gr.State) -> None:
    """Click a grid tile to enlarge its channel; move the slider to see another input channel's filters."""
    def pick(ins: Inspection | None, evt: gr.SelectData):
        if ins is None or i >= len(ins.stages):
            return gr.update()
        name = list(ins.stages)[i]
        maps = ins.stages[name]
        side = viz.tile_side(maps.shape[1])
        n = min(len(maps), MAX_CHANNELS)  # the grid shows at most MAX_CHANNELS tiles
        ch = viz.grid_cell(evt.index[0], evt.index[1], side, side, viz.columns(n), n)
        return gr.update() if ch is None else enlarge(ins, name, ch)

    def refilter(ins: Inspection | None, c: float):
        if ins is None or i >= len(ins.stages):
            return gr.update(), gr.update()
        w = ins.filters.get(list(ins.stages)[i])
        if w is None:
            return gr.update(), gr.update()
        img, m_abs, what = viz.filter_grid(w, int(c))
        return img, filter_note(w, m_abs, what)

    slot.grid.select(pick, state, slot.big, api_visibility="private")
    slot.in_ch.release(refilter, [state, slot.in_ch], [slot.filt, slot.filt_note], api_visibility="private")


def feature_maps_api(models: dict[str, ServedModel], model_dd: gr.Dropdown) -> None:
    """The named endpoint ``feature_maps``: a model and an image in, one grid per stage out."""
    def feature_maps(model: str, image: Image.Image | None) -> list[tuple[Image.Image, str]]:
        """Every stage of ``model`` for ``image``, one grid per stage (shared colour scale).
        ``model``: a served model's name, or the id of a model uploaded with ``open_model``."""
        try:
            if model not in models:
                if (uploaded := API_MODELS.get(model)) is None:
                    raise gr.Error(f"Unknown model {model!r}; choose one of {sorted(models)} or an uploaded "
                                   "model's id.")
                if image is None:
                    raise EmptyInput("No image was given.")
                return render_uploaded(look(uploaded, image))["stages"]
            r = render(inspect(models[model], image))
        except (InputError, CardError) as e:
            raise gr.Error(str(e)) from None
        return [(s["grid"], f"{s['name']}: activations {s['lo']:.3g} to {s['hi']:.3g}") for s in r["stages"]]

    api_image = SafeImage(visible=False, type="pil", image_mode=None)  # mode kept: preprocess decides
    api_gallery = gr.Gallery(visible=False, format="png")
    api_model = gr.Textbox(model_dd.value, visible=False, label="model")  # a name, or an uploaded model's id
    gr.Button(visible=False).click(feature_maps, [api_model, api_image], api_gallery, api_name="feature_maps")


def _build_inspector(models: dict[str, ServedModel]) -> None:
    ordered = sorted(models.values(), key=lambda m: (TABS.index(m.card.tab), m.name))  # classifiers first
    choices = [(f"{m.card.title} ({m.name})", m.name) for m in ordered]
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            model_dd = gr.Dropdown(choices, value=choices[0][1], label="Model", elem_id="fm-model")
            sketch = SafeSketchpad(label="Draw or upload", elem_id="fm-sketch", type="numpy", image_mode="RGBA",
                                  format="png", canvas_size=(280, 280), layers=False,
                                  sources=("upload", "clipboard"),
                                  brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=12))
            examples = gr.Examples([[str(p)] for p in sorted(EXAMPLES.glob("*.png"))], inputs=sketch,
                                   label="Examples", elem_id="fm-examples")
            status = gr.Markdown("✏️ Draw a digit or upload an image.", elem_id="fm-status")
        with gr.Column(scale=2, min_width=280):
            seen = gr.Image(label="What the model sees", interactive=False, format="png", height=180,
                            elem_id="fm-seen")
            top = gr.Label(num_top_classes=3, label="Prediction", elem_id="fm-top")
            with gr.Group():
                cam_img = gr.Image(label="Class-activation map", interactive=False, format="png", elem_id="fm-cam")
                with gr.Row():
                    cam_class = gr.Dropdown([], label="CAM for class (default: predicted)", allow_custom_value=False)
                    opacity = gr.Slider(0, 1, 0.5, step=0.05, label="Heat-map opacity")
                cam_note = gr.Markdown("")
    state = gr.State(None)
    slots = [stage_slot(i) for i in range(MAX_STAGES)]
    with gr.Accordion("Architecture (read off the ONNX graph)", open=False):
        table = gr.Dataframe(headers=["op", "output shape", "params", "FLOPs", "receptive field"],
                             interactive=False, wrap=True, elem_id="fm-layers")
    stage_outputs = [c for s in slots for c in s.components()]
    outputs = [state, seen, status, top, cam_img, cam_class, cam_note, table, *stage_outputs]

    def run_ui(n: str, v: Any, c: str | None, a: float) -> list:
        return inspect_view(models[n], v, None if c in (None, "(predicted)") else c, a)

    inputs = [model_dd, sketch, cam_class, opacity]
    for trigger in (sketch.change, model_dd.change, opacity.release, cam_class.input):
        trigger(run_ui, inputs, outputs, show_progress="hidden", trigger_mode="always_last", api_visibility="private")
    examples.load_input_event.then(run_ui, inputs, outputs, show_progress="hidden", api_visibility="private")
    for i, slot in enumerate(slots):
        wire_stage(slot, i, state)
    feature_maps_api(models, model_dd)
