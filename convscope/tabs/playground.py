"""Convolution-arithmetic playground: a kernel slides over a small matrix or an image, then ReLU
and pooling, with the size and parameter formulas filled in with the user's numbers."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from convscope import convmath as cm
from convscope import visualize as viz
from convscope.preprocess import InputError, to_gray
from convscope.tabs.common import SafeImage

MAX_IMAGE_SIDE = 256  # px: images are shrunk first so the numpy convolution stays interactive


def kernel_for(preset: str, size: int) -> np.ndarray:
    k = cm.KERNELS.get(preset, cm.KERNELS["identity"])
    if size == 3:
        return k
    big = np.zeros((5, 5), np.float32)
    big[1:4, 1:4] = k
    return big


def parse_matrix(df: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(df.values if hasattr(df, "values") else df, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"The {name} must contain numbers only.") from None
    if a.ndim != 2 or a.size == 0 or not np.isfinite(a).all():
        raise InputError(f"The {name} must be a filled-in table of numbers.")
    return a


def formulas(w: int, k: int, p: int, s: int, conv_out: int, pool: str, pk: int, ps: int, pool_out: int | None) -> str:
    lines = [
        "**Output size** ⌊(W − K + 2P) / S⌋ + 1 = "
        f"⌊({w} − {k} + 2·{p}) / {s}⌋ + 1 = ⌊{w - k + 2 * p} / {s}⌋ + 1 = **{conv_out}**",
        f"**Parameters of this kernel**: K·K·C_in + 1 = {k}·{k}·1 + 1 = **{cm.conv_params(k, 1, 1)}**; "
        f"a layer of C_out = 32 such filters on an RGB input has (K·K·C_in + 1)·C_out = "
        f"({k}·{k}·3 + 1)·32 = **{cm.conv_params(k, 3, 32):,}**",
    ]
    if pool_out is not None:
        lines.append(f"**{pool} pooling** ⌊(W − K) / S⌋ + 1 = ⌊({conv_out} − {pk}) / {ps}⌋ + 1 = **{pool_out}**, "
                     "no parameters")
    return "\n\n".join(lines)


def compute(source: str, matrix: Any, image: Any, kernel: Any, stride: int, padding: int, use_relu: bool,
            pool: str, pool_k: int, pool_s: int) -> tuple:
    """Returns (conv table, conv image, pooled table, pooled image, formulas markdown)."""
    try:
        k = parse_matrix(kernel, "kernel")
        if k.shape[0] != k.shape[1]:
            raise InputError("The kernel must be square.")
        if source == "image":
            if image is None:
                raise InputError("Upload an image, or switch to the 5×5 example.")
            g = Image.fromarray(to_gray(image).astype(np.uint8))
            g.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
            x = np.asarray(g, np.float32) / 255.0
        else:
            x = parse_matrix(matrix, "input matrix")
        y = cm.conv2d(x, k, int(stride), int(padding))
        if use_relu:
            y = cm.relu(y)
        pooled = None if pool == "none" else cm.pool2d(y, int(pool_k), int(pool_s), pool)
        md = formulas(x.shape[1], k.shape[0], int(padding), int(stride), y.shape[1], pool, int(pool_k), int(pool_s),
                      None if pooled is None else pooled.shape[1])
        if x.shape[0] != x.shape[1]:
            md += f"\n\n(The input is {x.shape[1]} wide and {x.shape[0]} high: the formula applies to each side.)"
    except (InputError, ValueError) as e:
        return None, None, None, None, f"⚠️ {e}"
    if source == "image":
        def pic(a: np.ndarray) -> Image.Image:
            m = float(np.abs(a).max()) or 1.0
            lo = 0.0 if a.min() >= 0 else -m
            return viz.upscale(viz.colorize(a, lo, m, "viridis" if lo == 0 else "diverging"), 320)
        return None, pic(y), None, None if pooled is None else pic(pooled), md
    return np.round(y, 3).tolist(), None, None if pooled is None else np.round(pooled, 3).tolist(), None, md


def build() -> None:
    gr.Markdown("Slide a kernel over a small matrix (the course's 5×5 example) or over your own image; "
                "then ReLU and pooling. Convolution here is cross-correlation with zero padding, as in "
                "PyTorch (the numpy code is tested against `torch.nn.functional`).")
    with gr.Row():
        with gr.Column():
            source = gr.Radio(["5×5 example", "image"], value="5×5 example", label="Input")
            matrix = gr.Dataframe(value=cm.EXAMPLE_5X5.astype(int).tolist(), datatype="number",
                                  interactive=True, label="Input matrix (editable)", elem_id="pg-matrix")
            image = SafeImage(type="pil", image_mode=None, label="Image", visible=False,
                              sources=["upload", "clipboard"])
        with gr.Column():
            preset = gr.Dropdown(list(cm.KERNELS), value="edge (Laplacian)", label="Kernel preset")
            size = gr.Radio([3, 5], value=3, label="Kernel size")
            kernel = gr.Dataframe(value=cm.KERNELS["edge (Laplacian)"].tolist(), datatype="number",
                                  interactive=True, label="Kernel (editable)", elem_id="pg-kernel")
            with gr.Row():
                stride = gr.Slider(1, 3, 1, step=1, label="Stride S")
                padding = gr.Slider(0, 2, 0, step=1, label="Padding P")
            use_relu = gr.Checkbox(True, label="ReLU after the convolution")
            with gr.Row():
                pool = gr.Radio(["none", "max", "avg"], value="max", label="Pooling")
                pool_k = gr.Slider(2, 3, 2, step=1, label="Pool window")
                pool_s = gr.Slider(1, 3, 2, step=1, label="Pool stride")
    first = compute("5×5 example", cm.EXAMPLE_5X5, None, cm.KERNELS["edge (Laplacian)"], 1, 0, True, "max", 2, 2)
    md = gr.Markdown(first[4], elem_id="pg-formulas")
    with gr.Row():
        conv_tab = gr.Dataframe(first[0], label="Convolution (+ ReLU) output", interactive=False, elem_id="pg-conv")
        pool_tab = gr.Dataframe(first[2], label="Pooled output", interactive=False)
    with gr.Row():
        conv_img = gr.Image(label="Convolution (+ ReLU) output", visible=False, interactive=False, format="png")
        pool_img = gr.Image(label="Pooled output", visible=False, interactive=False, format="png")

    inputs = [source, matrix, image, kernel, stride, padding, use_relu, pool, pool_k, pool_s]
    outputs = [conv_tab, conv_img, pool_tab, pool_img, md]
    preset.change(lambda p, s: kernel_for(p, s).tolist(), [preset, size], kernel, api_visibility="private")
    size.change(lambda p, s: kernel_for(p, s).tolist(), [preset, size], kernel, api_visibility="private")

    def show(src: str) -> list:
        img = src == "image"
        return [gr.update(visible=not img), gr.update(visible=img), gr.update(visible=not img),
                gr.update(visible=not img), gr.update(visible=img), gr.update(visible=img)]

    source.change(show, source, [matrix, image, conv_tab, pool_tab, conv_img, pool_img], api_visibility="private")
    for comp in inputs:
        comp.change(compute, inputs, outputs, show_progress="hidden", api_visibility="private")
