"""What the Feature maps tab shows for one (model, input), without Gradio: every exported conv
stage, the filters that compute it, and the class-activation map, from one ONNX Runtime call,
and the pictures drawn from them. The tab, the benchmark and the tests use it alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from convscope import visualize as viz
from convscope.answers import top_k
from convscope.runtime import ServedModel

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


def layer_rows(layers: list[dict]) -> list[list]:
    """A layer table (a card's ``layers``, or an uploaded model's) as the rows the tabs show."""
    return [[r["op"], str(r["shape"]), f"{r['params']:,}", f"{r['flops']:,}",
             "whole input" if r["receptive_field"] is None else r["receptive_field"]] for r in layers]


def render_uploaded(view: Any, opacity: float = 0.5) -> dict:
    """The pictures for an uploaded model's view (convscope.user_models.UserView): one grid per
    stage, the filters that produce it, where it looks, and the top classes."""
    m = view.model
    stages, filters = [], []
    for i, (name, maps) in enumerate(view.stages.items()):
        img, lo, hi, _, _ = viz.activation_grid(maps[:MAX_CHANNELS])
        shown = "" if len(maps) <= MAX_CHANNELS else f", channels 0-{MAX_CHANNELS - 1} shown"
        stages.append((img, f"stage {i + 1} ({name}): {maps.shape[0]} × {maps.shape[1]}×{maps.shape[2]}{shown}, "
                            f"activations {lo:.3g} to {hi:.3g}"))
        w = view.filters.get(name)
        if w is not None:
            fimg, _, what = viz.filter_grid(w[:MAX_CHANNELS], 0)
            size = f"{w.shape[1]}×{w.shape[2]}×{w.shape[3]}"
            filters.append((fimg, f"stage {i + 1}: {w.shape[0]} filters of {size}, {what}"))
    heat = viz.overlay(view.seen, view.heat, opacity) if view.heat is not None else None
    where = ("Class-activation map (the head is global average pooling + a linear layer: exact)" if view.heat_kind
             == "cam" else "Occlusion sensitivity: how much the top class's probability drops when each cell is "
             "grayed out (forward passes only: the head has no exact class-activation map)")
    top = view.top(5)
    return {"stages": stages, "filters": filters, "heat": heat, "where": f"{where}, for **{next(iter(top))}**.",
            "top": top, "layers": layer_rows(m.layers)}
