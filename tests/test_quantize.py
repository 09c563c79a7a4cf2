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


def test_seven_bit_activations_keep_every_code_below_128_and_the_answers(tmp_path):
    """halve_activation_range: activation zero points in 0..127, and the file still computes what the
    fp32 one does (its int32 biases follow the new input scales; without that, answers drift)."""
    from convscope.runtime import make_session

    x = np.random.default_rng(1).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    out = tmp_path / "q7.onnx"
    info = quantize_int8(MODELS_DIR / "cifar_simple.onnx", out, x, "cnn", reduce_range=False, activation_bits=7)
    inits = {i.name: numpy_helper.to_array(i) for i in info["model"].graph.initializer}
    zps = [inits[n.input[2]] for n in info["model"].graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.uint8 and int(z.max()) <= 127 for z in zps)
    producer = {o: n for n in info["model"].graph.node for o in n.output}
    for conv in (n for n in info["model"].graph.node if n.op_type == "Conv"):
        x_dq, w_dq, b_dq = (producer[t] for t in conv.input[:3])  # every conv here has a quantized bias
        # ONNX Runtime's fused kernels read the int32 bias as codes of input scale x weight scale
        np.testing.assert_allclose(inits[b_dq.input[1]], inits[x_dq.input[1]] * inits[w_dq.input[1]], rtol=1e-6)
    assert "7 bits" in info["method"]
    p32 = make_session(MODELS_DIR / "cifar_simple.onnx").run(["probs"], {"image": x})[0]
    p7 = make_session(out).run(["probs"], {"image": x})[0]
    assert np.abs(p7 - p32).mean() < 0.02 and (p7.argmax(1) == p32.argmax(1)).mean() >= 0.9
    with pytest.raises(ValueError, match="activation_bits"):
        quantize_int8(MODELS_DIR / "cifar_simple.onnx", tmp_path / "q6.onnx", x, "cnn", activation_bits=6)
