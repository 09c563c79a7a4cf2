"""Feature maps tab: look inside any served model, from its ONNX file alone.

For the chosen model and input: every exported conv stage as a grid of all its channels (one
colour scale per stage, with its legend; click a channel to enlarge it), the stage's shape and
receptive field, the filters that produce it, the class-activation map for GAP heads, and the
layer table read off the ONNX graph at export. A second sub-tab is the convolution-arithmetic
playground (convscope.convmath).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from convscope import visualize as viz
from convscope.cards import TABS, CardError
from convscope.preprocess import EmptyInput, InputError
from convscope.runtime import Registry, ServedModel
from convscope.tabs import playground
from convscope.tabs.common import SafeImage, SafeSketchpad, missing_notice, top_k
from convscope.tabs.digits import sketch_image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # made by scripts/make_examples.py
MAX_STAGES = 6  # UI slots; a model's first MAX_STAGES stages are shown
MAX_CHANNELS = 128  # per stage grid: EfficientNet's 1280-channel head would be an unreadable wall
ENLARGED = 224  # px


@dataclass
class Inspection:
    """Everything the tab shows for one (model, input), computed in one onnxruntime call."""

    model: ServedModel
    image: np.ndarray  # what the model saw: (H, W, C) uint8
    probs: np.ndarray | None  # None for feature extractors
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (C, H, W)
    filters: dict[str, np.ndarray] = field(default_factory=dict)  # stage -> (C_out, C_in, k, k)
    cam: np.ndarray | None = None  # (classes, h, w)


def inspect(model: ServedModel, image: Any) -> Inspection:
    x = model.prepare(image)
    names = [o["name"] for o in model.card.outputs]  # everything the tab shows, in one call
    outs = dict(zip(names, model.run(names, x[None]), strict=True))
    stages = {n: outs[n][0] for n in model.card.output_names("feature_map")}
    filters = {o["of"]: outs[o["name"]] for o in model.card.outputs if o["kind"] == "filters"}
    cam = outs["cam"][0] if "cam" in outs else None
    return Inspection(model, x, outs["probs"][0] if "probs" in outs else None, stages, filters, cam)


def stage_info(model: ServedModel, name: str, maps: np.ndarray, lo: float, hi: float) -> str:
    spec = next(o for o in model.card.outputs if o["name"] == name)
    rf = spec.get("receptive_field")
    h_in = model.card.input["shape"][1]
    rf_text = f"{rf}×{rf} input pixels" if rf else "the whole input"
    if rf and rf > h_in:
        rf_text += f" (more than the {h_in}-pixel input: the border is zero padding)"
    return (f"#### {name}: {maps.shape[0]} channels of {maps.shape[1]}×{maps.shape[2]}\n"
            f"Each value sees **{rf_text}**. Colour scale shared by all channels: "
            f"{lo:.3g} (dark purple) to {hi:.3g} (yellow). Click a channel to enlarge it.")


def render(ins: Inspection, cam_class: str | None = None, opacity: float = 0.5) -> dict:
    """All pictures for an inspection: per stage (grid, legend, info), CAM overlay, top-3."""
    card = ins.model.card
    stages = []
    for name, maps in list(ins.stages.items())[:MAX_STAGES]:
        img, lo, hi, cols, side = viz.activation_grid(maps[:MAX_CHANNELS])
        info = stage_info(ins.model, name, maps, lo, hi)
        if len(maps) > MAX_CHANNELS:
            info += f" Showing channels 0-{MAX_CHANNELS - 1} of {len(maps)}."
        stages.append({"name": name, "grid": img, "legend": viz.colorbar(lo, hi, "viridis", "activation"),
                       "info": info, "cols": cols, "side": side,
                       "lo": lo, "hi": hi})
    out = {"stages": stages, "top": None if ins.probs is None else top_k(ins.probs, card.labels), "cam": None}
    if ins.cam is not None:
        cls = card.labels.index(cam_class) if cam_class in card.labels else int(ins.probs.argmax())
        out["cam"] = viz.overlay(ins.image[..., 0] if ins.image.shape[2] == 1 else ins.image, ins.cam[cls], opacity)
        out["cam_class"] = card.labels[cls]
    return out


def filter_note(w: np.ndarray, m_abs: float, what: str) -> str:
    scale = "" if w.shape[1] == 3 else f" Blue = −{m_abs:.3g}, white = 0, red = +{m_abs:.3g}."
    return f"{w.shape[0]} filters of {w.shape[1]}×{w.shape[2]}×{w.shape[3]}; showing {what}.{scale}"


def enlarge(ins: Inspection, stage: str, channel: int) -> Image.Image:
    maps = ins.stages[stage]
    lo, hi = float(maps.min()), float(maps.max())
    return viz.upscale(viz.colorize(maps[channel], lo, hi), ENLARGED)


def build(registry: Registry) -> None:
    models = registry.models
    gr.Markdown("Look inside any model served here: what each convolution stage computes from your "
                "input, the filters that compute it, and where the model looks when it decides.")
    with gr.Tabs():
        with gr.Tab("Inside a model"):
            if not models:
                gr.Markdown(missing_notice(registry.broken) or "No models are available.",
                            elem_classes=["cs-notice"])
            else:
                _build_inspector(models)
        with gr.Tab("Convolution arithmetic"):
            playground.build()


def _build_inspector(models: dict[str, ServedModel]) -> None:
    ordered = sorted(models.values(), key=lambda m: (TABS.index(m.card.tab), m.name))  # classifiers first
    choices = [(f"{m.card.title} ({m.name})", m.name) for m in ordered]
    first = choices[0][1]
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            model_dd = gr.Dropdown(choices, value=first, label="Model", elem_id="fm-model")
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
    slots = []
    for i in range(MAX_STAGES):
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
        slots.append({"group": group, "info": info, "grid": grid_img, "legend": legend, "big": big,
                      "in_ch": in_ch, "filt_note": filt_note, "filt": filt_img})
    with gr.Accordion("Architecture (read off the ONNX graph)", open=False):
        table = gr.Dataframe(headers=["op", "output shape", "params", "FLOPs", "receptive field"],
                             interactive=False, wrap=True, elem_id="fm-layers")

    stage_outputs = [c for s in slots for c in (s["group"], s["info"], s["grid"], s["legend"], s["big"],
                                                 s["in_ch"], s["filt_note"], s["filt"])]

    def layer_rows(m: ServedModel) -> list[list]:
        return [[r["op"], str(r["shape"]), f"{r['params']:,}", f"{r['flops']:,}",
                 "whole input" if r["receptive_field"] is None else r["receptive_field"]]
                for r in m.card.layers]

    def run(name: str, value: Any, cls: str | None, alpha: float) -> list:
        m = models[name]
        has_cam = bool(m.card.output_names("cam"))
        labels_dd = gr.update(choices=["(predicted)", *m.card.labels], value=cls if cls else "(predicted)",
                              interactive=has_cam)
        note = "" if has_cam else ("This model has no global-average-pool classifier head, so it has no "
                                   "exact class-activation map.")
        empty = [None, "✏️ Draw a digit or upload an image.", None, None, labels_dd, note,
                 layer_rows(m)]
        hidden = [gr.update(visible=False)] + [gr.update()] * 7
        try:
            t = time.perf_counter()
            ins = inspect(m, sketch_image(value))
            r = render(ins, cls, alpha)
            ms = (time.perf_counter() - t) * 1e3
        except (InputError, CardError) as e:  # CardError: the file changed since start-up (its whole graph is read now)
            if not isinstance(e, EmptyInput):
                empty[1] = f"⚠️ {e}"
            return [None, *empty, *hidden * MAX_STAGES]
        stage_updates = []
        for i in range(MAX_STAGES):
            if i >= len(r["stages"]):
                stage_updates += hidden
                continue
            s = r["stages"][i]
            w = ins.filters.get(s["name"])
            if w is not None:
                fimg, m_abs, what = viz.filter_grid(w, 0)
                fnote = filter_note(w, m_abs, what)
                ch = gr.update(maximum=max(w.shape[1] - 1, 1), value=0, visible=w.shape[1] > 1 and w.shape[1] != 3)
            else:
                fimg, ch = None, gr.update(visible=False)
                fnote = ("No single filter bank computes this stage: it concatenates parallel branches "
                         "(an inception block's 1×1, 3×3, factorised 5×5 and pooling paths).")
            stage_updates += [gr.update(visible=True), s["info"], s["grid"], s["legend"], enlarge(ins, s["name"], 0),
                              ch, fnote, fimg]
        seen_img = viz.upscale(ins.image[..., 0] if ins.image.shape[2] == 1 else ins.image, 168)
        msg = f"All maps computed in {ms:.0f} ms."
        cam = r["cam"]
        cam_text = note or f"Where the evidence for **{r.get('cam_class')}** is (bright = more)."
        return [ins, seen_img, msg, r["top"], cam, labels_dd, cam_text, layer_rows(m), *stage_updates]

    outputs = [state, seen, status, top, cam_img, cam_class, cam_note, table, *stage_outputs]

    def run_ui(n: str, v: Any, c: str | None, a: float) -> list:
        return run(n, v, None if c in (None, "(predicted)") else c, a)

    inputs = [model_dd, sketch, cam_class, opacity]
    for trigger in (sketch.change, model_dd.change, opacity.release, cam_class.input):
        trigger(run_ui, inputs, outputs, show_progress="hidden", trigger_mode="always_last", api_visibility="private")
    examples.load_input_event.then(run_ui, inputs, outputs, show_progress="hidden", api_visibility="private")

    for i, s in enumerate(slots):
        def pick(ins: Inspection | None, evt: gr.SelectData, i: int = i):
            if ins is None or i >= len(ins.stages):
                return gr.update()
            name = list(ins.stages)[i]
            maps = ins.stages[name]
            side = viz.tile_side(maps.shape[1])
            n = min(len(maps), MAX_CHANNELS)  # the grid shows at most MAX_CHANNELS tiles
            ch = viz.grid_cell(evt.index[0], evt.index[1], side, side, viz.columns(n), n)
            return gr.update() if ch is None else enlarge(ins, name, ch)

        s["grid"].select(pick, state, s["big"], api_visibility="private")

        def refilter(ins: Inspection | None, c: float, i: int = i):
            if ins is None or i >= len(ins.stages):
                return gr.update(), gr.update()
            w = ins.filters.get(list(ins.stages)[i])
            if w is None:
                return gr.update(), gr.update()
            img, m_abs, what = viz.filter_grid(w, int(c))
            return img, filter_note(w, m_abs, what)

        s["in_ch"].release(refilter, [state, s["in_ch"]], [s["filt"], s["filt_note"]], api_visibility="private")

    def feature_maps(model: str, image: Image.Image | None) -> list[tuple[Image.Image, str]]:
        """Every exported stage of ``model`` for ``image``, one grid per stage (shared colour scale)."""
        if model not in models:
            raise gr.Error(f"Unknown model {model!r}; choose one of {sorted(models)}.")
        try:
            r = render(inspect(models[model], image))
        except (InputError, CardError) as e:
            raise gr.Error(str(e)) from None
        return [(s["grid"], f"{s['name']}: activations {s['lo']:.3g} to {s['hi']:.3g}") for s in r["stages"]]

    api_image = SafeImage(visible=False, type="pil", image_mode=None)  # mode kept: preprocess decides
    api_gallery = gr.Gallery(visible=False, format="png")
    gr.Button(visible=False).click(feature_maps, [model_dd, api_image], api_gallery, api_name="feature_maps")
