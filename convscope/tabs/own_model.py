"""Feature maps → "Your own model": upload an ONNX image classifier and look inside it.

Layout and wiring only: the checks and views are convscope.user_models, the pictures
convscope.inspection.render_uploaded, the answer convscope.answers. The model lives in this
browser session's state (gone when the session ends) and never in models/.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from convscope import visualize as viz
from convscope.inspection import MAX_CHANNELS, render_uploaded
from convscope.onnx_graph import UnsafeModel
from convscope.preprocess import EmptyInput, InputError
from convscope.tabs.common import SafeImage, SafeSketchpad, sketch_image
from convscope.uploads import MAX_MODEL_BYTES, check_upload
from convscope.user_models import API_MODELS, PRESETS, UserModel, look, open_model
from convscope.user_models import filters as user_filters

INTRO = ("Upload an **ONNX image classifier** (exported from PyTorch with `torch.onnx.export(..., "
         "external_data=False)`, from Keras with tf2onnx, or any other) and see what it does: its top classes, "
         "every convolution stage, the filters, the layers, and where it looks. The file is checked before it "
         f"is loaded (self-contained, standard operators, at most {MAX_MODEL_BYTES // 2**20} MB), runs only for "
         "you, and is forgotten when you leave.")
AUTO = "auto (raw for uint8 inputs, else ImageNet mean/std)"


def describe(m: UserModel) -> str:
    s = m.spec
    size = f"{s.size[0]}×{s.size[1]}" + (" (dynamic: set below)" if s.dynamic else "")
    return (f"**{m.filename}** — input `{s.name}`: {s.layout}, {s.channels} channel{'s' if s.channels > 1 else ''}, "
            f"{s.dtype}, {size}; output `{m.output}`: {len(m.labels)} classes; opset {m.opset}; "
            f"{m.params:,} parameters; {m.flops / 1e6:,.0f} MFLOPs per image; {len(m.stages)} conv stages; "
            f"where it looks: {'class-activation map' if m.cam_head else 'occlusion sensitivity'}. "
            f"Preprocessing: **{m.preset}**.")


def uploaded(path: str | None, max_bytes: int) -> bytes:
    """The bytes of a file this session uploaded (the path must be an upload of this server)."""
    if not path:
        raise EmptyInput("Upload an .onnx file first.")
    return check_upload(path, max_bytes=max_bytes).read_bytes()


def load(path: str | None, labels: str | None, preset: str, size: float | None) -> UserModel:
    """An uploaded model, checked and opened (UnsafeModel or InputError with the reason)."""
    side = int(size) if size and size >= 8 else None  # (empty or 0: the model's own size, else 224)
    return open_model(uploaded(path, MAX_MODEL_BYTES), path or "", labels or None,
                      None if preset in (AUTO, "", None) else preset, side)


def build(model: gr.State | None = None) -> None:
    """Render the sub-tab inside the current ``gr.Tab`` context; ``model``: the session's state
    holding the model shown (shared with the Teach tab, which puts a taught model there)."""
    gr.Markdown(INTRO)
    model = model if model is not None else gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            file = gr.File(label="ONNX model (.onnx)", file_types=[".onnx"], type="filepath", elem_id="own-file")
            labels = gr.File(label="Labels (optional: one class name per line)", file_types=[".txt"],
                             type="filepath", elem_id="own-labels", height=90)
            with gr.Row():
                preset = gr.Dropdown([AUTO, *PRESETS], value=AUTO, label="Preprocessing", elem_id="own-preset",
                                     allow_custom_value=True,
                                     info="or type your own: mean=0.5,0.5,0.5 std=0.25,0.25,0.25")
                size = gr.Number(None, label="Input side (dynamic models only)", precision=0)
            open_btn = gr.Button("Open model", variant="primary", elem_id="own-open")
            found = gr.Markdown(elem_id="own-found")
            image = SafeImage(label="An image to show it", type="pil", image_mode=None, elem_id="own-image",
                              sources=["upload", "webcam", "clipboard"], height=240)
            with gr.Accordion("… or draw one", open=False):
                drawing = SafeSketchpad(elem_id="own-drawing", type="numpy", image_mode="RGBA", format="png",
                                        canvas_size=(280, 280), layers=False, show_label=False,
                                        brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=12))
        with gr.Column(scale=3, min_width=300):
            top = gr.Label(num_top_classes=5, label="Top 5", elem_id="own-top")
            heat = gr.Image(label="Where it looks", interactive=False, format="png", elem_id="own-heat", height=300)
            where = gr.Markdown(elem_id="own-where")
    stages = gr.Gallery(label="Every conv stage (all channels, one colour scale per stage)", columns=1,
                        height="auto", format="png", elem_id="own-stages")
    filters = gr.Gallery(label="The filters that produce each stage", columns=2, height="auto", format="png",
                         elem_id="own-filters")
    with gr.Row(equal_height=False):
        conv = gr.Dropdown([], label="The filters of any conv layer", elem_id="own-conv", scale=1)
        channel = gr.Slider(0, 1, 0, step=1, label="Input channel to show", scale=1)
    conv_img = gr.Image(show_label=False, interactive=False, format="png", elem_id="own-conv-filters")
    conv_note = gr.Markdown()
    with gr.Accordion("Layers (read off the ONNX graph)", open=False):
        table = gr.Dataframe(headers=["op", "output shape", "params", "FLOPs", "receptive field"],
                             interactive=False, wrap=True, elem_id="own-layers")

    def on_open(path: str | None, labels_path: str | None, p: str, side: float | None) -> list:
        try:
            text = uploaded(labels_path, 2**20).decode("utf-8", "replace") if labels_path else None
            m = load(path, text, p, side)
        except (UnsafeModel, InputError) as e:
            return [None, f"⚠️ {e}", gr.update(choices=[], value=None)]
        first = next(iter(m.convs), None)
        return [m, describe(m) + "\n\nNow add an image.", gr.update(choices=list(m.convs), value=first)]

    def on_conv(m: UserModel | None, name: str | None, c: float) -> list:
        if m is None or name not in m.convs:
            return [None, "", gr.update()]
        w = user_filters(m, name)
        img, _, what = viz.filter_grid(w[:MAX_CHANNELS], int(c))
        rgb = w.shape[1] == 3
        return [img, f"{name}: {w.shape[0]} filters, {what}.",
                gr.update(maximum=max(w.shape[1] - 1, 1), visible=not rgb and w.shape[1] > 1)]

    def on_image(m: UserModel | None, img: Any) -> list:
        img = sketch_image(img)
        if m is None or img is None:
            return [None, None, "", None, None, None]
        try:
            r = render_uploaded(look(m, img))
        except InputError as e:
            return [None, None, f"⚠️ {e}", None, None, None]
        return [r["top"], r["heat"], r["where"], r["stages"], r["filters"], r["layers"]]

    views = [top, heat, where, stages, filters, table]
    opened = open_btn.click(on_open, [file, labels, preset, size], [model, found, conv], api_visibility="private")
    opened.then(on_image, [model, image], views, api_visibility="private")
    for trigger in (conv.change, channel.release):
        trigger(on_conv, [model, conv, channel], [conv_img, conv_note, channel], api_visibility="private")
    # a model put here by the Teach tab: say what it is and show it on the current image
    model.change(lambda m: describe(m) if m else "", model, found, api_visibility="private")
    model.change(on_image, [model, image], views, api_visibility="private")
    for source in (image, drawing):  # the last one changed is shown
        source.change(on_image, [model, source], views, trigger_mode="always_last", api_visibility="private")
    open_model_api()


def open_model_api() -> None:
    """Named endpoint ``open_model``: an .onnx file (+ labels text, preprocessing) in, its id and
    what was found in it out; the id then works with REST predict and ``feature_maps``."""

    def open_model_endpoint(file: str | None, labels: str | None = None, preprocessing: str = "") -> dict:
        """Upload your own ONNX image classifier. Returns its id (valid for an hour), the input and
        output found, parameters, FLOPs and stages. Refused models get the reason."""
        try:
            m = load(file, labels, preprocessing, None)
        except (UnsafeModel, InputError) as e:
            raise gr.Error(str(e)) from None
        return API_MODELS.add(m).summary()

    api_file = gr.File(visible=False, type="filepath", label="file")
    api_labels = gr.Textbox(visible=False, label="labels")
    api_preset = gr.Textbox("", visible=False, label="preprocessing")
    gr.Button(visible=False).click(open_model_endpoint, [api_file, api_labels, api_preset], gr.JSON(visible=False),
                                   api_name="open_model")
