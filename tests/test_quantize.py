"""export.quantize on a shipped fp32 file: which convs stay fp32, and the weights' range."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from convscope.runtime import MODELS_DIR
from export.quantize import quantize_int8


def conv_weight_codes(model: onnx.ModelProto) -> list[np.ndarray | None]:
    """Per Conv node in graph order: its int8 weight codes, or None when the conv reads fp32 weights."""
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    codes = []
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        dq = producer.get(n.input[1])
        codes.append(numpy_helper.to_array(inits[dq.input[0]]) if dq is not None and dq.op_type == "DequantizeLinear"
                     else None)
    return codes


@pytest.mark.parametrize("fp32_convs, reduce_range", [(None, True), (2, True), (0, False)])
def test_quantize_keeps_the_leading_convs_fp32_and_the_weights_in_range(tmp_path, fp32_convs, reduce_range):
    calibration = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    info = quantize_int8(MODELS_DIR / "cifar_simple.onnx", tmp_path / "q.onnx", calibration, "mobile",
                         fp32_convs=fp32_convs, reduce_range=reduce_range)
    codes = conv_weight_codes(info["model"])
    n_fp32 = 1 if fp32_convs is None else fp32_convs  # "mobile" keeps the stem fp32 by default
    assert [c is None for c in codes] == [i < n_fp32 for i in range(len(codes))]
    largest = max(int(np.abs(c.astype(np.int32)).max()) for c in codes if c is not None)
    # 7-bit codes (|w| <= 64) cannot saturate VPMADDUBSW's 16-bit pair sums; full range reaches 127
    assert (largest <= 64) if reduce_range else (largest == 127)
    assert ("7-bit" in info["method"]) == reduce_range
