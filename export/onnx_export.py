"""Checkpoint -> single-file ONNX, checked, parity-tested and measured in onnxruntime."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from convscope.runtime import make_session
from export.graph_table import layer_table
from export.wrap import ExportWrapper
from train.loop import cpu_label

# max |torch - onnxruntime| accepted: on the probabilities, absolute; on feature maps and CAMs,
# relative to the output's scale when that is above 1, and looser, because deep activations
# accumulate float32 rounding (summation order differs between the runtimes; a CAM sums 1280
# channels) while nobody reads them to the 4th decimal. Probabilities: 2e-4, because the 224 px
# EfficientNet with per-image standardisation (xray_covid3) measured 1.2e-4 on real films; a wrong
# export (a missing normalisation, a transposed layout) is off by 1e-2 or more.
PARITY_TOL = 2e-4
FEATURE_TOL = 1e-3


def export_onnx(wrapper: ExportWrapper, path: Path) -> onnx.ModelProto:
    """Export with a dynamic batch, all weights inside the one file, then run the checker."""
    wrapper.eval()
    c, h, w = wrapper.input_chw()
    example = torch.randint(0, 256, (2, h, w, c), dtype=torch.uint8)
    torch.onnx.export(
        wrapper, (example,), str(path), dynamo=True,
        external_data=False,  # else weights go to <file>.data and the sha256 covers half the model
        input_names=["image"], output_names=wrapper.output_names,
        dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=4096)}},
    )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return model


def describe_outputs(wrapper: ExportWrapper, onnx_path: Path) -> tuple[list[dict], list[dict]]:
    """The card's ``outputs`` (name, kind, shape, receptive field or what it belongs to) and
    ``layers`` table, read off the exported file."""
    sess = make_session(onnx_path)
    shapes = {o.name: [d if isinstance(d, int) else None for d in o.shape] for o in sess.get_outputs()}
    layers, rf = layer_table(onnx.load(str(onnx_path)))
    outputs = []
    for n in wrapper.output_names:
        o = {"name": n, "kind": "feature_map", "shape": shapes[n]}
        if n in ("probs", "features"):
            o["kind"] = n
        elif n == "cam":
            o |= {"kind": "cam", "of": wrapper.cam_stage}
        elif n.endswith("_filters"):
            o |= {"kind": "filters", "of": n.removesuffix("_filters")}
        else:
            o["receptive_field"] = rf[n]
        outputs.append(o)
    return outputs, layers


def max_abs_diffs(wrapper: ExportWrapper, sess: ort.InferenceSession, images: np.ndarray,
                  scaled: bool = False) -> dict[str, float]:
    """max |torch - ORT| for every output on the same uint8 batch (``scaled``: divided by
    max(1, max |torch|), the output's own scale)."""
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(torch.from_numpy(np.array(images)))]
    got = sess.run(wrapper.output_names, {"image": images})
    return {n: float(np.abs(r - g).max() / (max(1.0, float(np.abs(r).max())) if scaled else 1.0))
            for n, r, g in zip(wrapper.output_names, ref, got, strict=True)}


def check_parity(wrapper: ExportWrapper, sess: ort.InferenceSession, real_images: np.ndarray, seed: int = 0) -> dict:
    c, h, w = wrapper.input_chw()
    rand = np.random.default_rng(seed).integers(0, 256, (8, h, w, c), dtype=np.uint8)
    parity = {"tolerance": PARITY_TOL,
              "random_uint8_batch8": max_abs_diffs(wrapper, sess, rand),
              f"real_test_batch{len(real_images)}": max_abs_diffs(wrapper, sess, real_images)}
    parity["max_abs_diff"] = max(v for d in parity.values() if isinstance(d, dict) for v in d.values())
    scaled = [max_abs_diffs(wrapper, sess, x, scaled=True) for x in (rand, real_images)]
    probs = max(d.get("probs", 0.0) for d in scaled)
    worst = max(v for d in scaled for k, v in d.items() if k != "probs")
    parity |= {"feature_tolerance": FEATURE_TOL, "probs_max_abs_diff": probs, "max_scaled_diff": worst}
    if probs > PARITY_TOL or worst > FEATURE_TOL:
        raise AssertionError(f"ONNX parity failed: probs {probs:.3g} (<= {PARITY_TOL}), feature maps "
                             f"{worst:.3g} (<= {FEATURE_TOL}, scaled): {parity}")
    return parity


def count_flops(net: nn.Module, chw: tuple[int, int, int]) -> int:
    """FLOPs per image (2 x multiply-adds) of Conv2d and Linear layers, via forward hooks, of
    everything one image costs in eval mode (test-time augmentation views included)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2 * out.numel() * k

    def linear_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, *chw))
    for hk in hooks:
        hk.remove()
    return int(total)


def latency_ms(path: Path, served_input: np.ndarray, runs: int = 200) -> dict:
    """Median and p90 batch-1 latency of a fresh 1-thread CPU session on this machine."""
    sess = make_session(path, threads=1)
    name = sess.get_inputs()[0].name
    x = served_input[:1]
    for _ in range(10):
        sess.run(["probs"], {name: x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(["probs"], {name: x})
        ts.append((time.perf_counter() - t) * 1e3)
    return {"batch": 1, "threads": 1, "runs": runs, "median_ms": float(np.median(ts)),
            "p90_ms": float(np.percentile(ts, 90)), "provider": sess.get_providers()[0],
            "cpu": cpu_label()}  # latencies of two machines differ ~2x here
