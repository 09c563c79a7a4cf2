"""INT8 variants: ONNX Runtime static quantization, QDQ format, per-channel weights, activations
calibrated on training images (never test images).

A variant ships only if its test accuracy, measured on the INT8 file like the fp32 one, is within
``MAX_DROP_PP`` percentage points of fp32, either way (``ships``); the card records both either way.
(Dynamic quantization is not used: on conv nets it was measured 3.4x *slower* on this CPU.)

Weights use the reduced 7-bit range (``reduce_range=True``). On x86 CPUs with AVX2 or AVX-512 but
no VNNI, ONNX Runtime multiplies uint8 activations by int8 weights with VPMADDUBSW, whose 16-bit
pair sums saturate with full-range weights: the same cifar_resnet INT8 file scored 94.31% on the
CIFAR-10 test set on an Intel Xeon and 52.19% on an AVX2-only AMD EPYC. With 7-bit
weights no pair sum can saturate (2 * 255 * 63 < 32767), so the file gives the same answers on every CPU.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

MAX_DROP_PP = 0.3  # points of test accuracy an INT8 file may differ from fp32 (either way) and still ship
CALIBRATION_IMAGES = 512  # for small inputs; 224 px nets get fewer (calibration_count)
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]  # the FLOPs; element-wise ops stay fp32
# Per recipe (Recipe.int8_profile). "cnn": the CIFAR nets, as shipped. "mobile": EfficientNet-style
# nets with ReLU6. Quantizing Clip as well lets each conv's output take the ReLU6 range [0, 6]
# instead of its raw pre-activation range, and the stem conv (which reads the image and whose error
# every later layer inherits; <1% of the FLOPs) stays fp32. Measured on xray_pneumonia's validation
# split (fp32 97.4%): "cnn" 75.6% (agreement with fp32 74%), +Clip 81.5%, +fp32 stem 96.0% (98%).
# Calibration method (MinMax, percentile, entropy) and U8U8 / reduce_range changed little there; on
# xray_covid3 the 7-bit weights cost most of the fidelity (python -m bench.int8_fidelity xray_covid3).
PROFILES = {"cnn": {"ops": QUANTIZED_OPS, "fp32_stem": False},
            "mobile": {"ops": [*QUANTIZED_OPS, "Clip", "Relu"], "fp32_stem": True}}


def ships(accuracy_drop_pp: float) -> bool:
    """The shipping rule, two-sided: a variant scoring far *higher* than fp32 is a different model,
    not a faithful copy, and the card's per-class and calibration figures (measured on fp32) would
    not describe it (xray_covid3's INT8 scored 3.5 points above fp32 on its test split)."""
    return abs(accuracy_drop_pp) <= MAX_DROP_PP


def calibration_count(pixels_per_image: int) -> int:
    """Calibration images for an input size: 512 up to 64x64, 64 at 224x224. ORT's MinMax
    calibrator keeps every intermediate tensor of every batch in memory (tens of MB per 224 px
    image), and its CalibMaxIntermediateOutputs option discards data instead of folding it into
    the ranges (onnxruntime 1.31, calibrate.py collect_data), so it is not a way out."""
    return CALIBRATION_IMAGES if pixels_per_image <= 64 * 64 else 64


class ImageBatches(CalibrationDataReader):
    def __init__(self, x: np.ndarray, input_name: str = "image", batch: int = 32) -> None:
        self.batches = iter([{input_name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def halve_activation_range(model: onnx.ModelProto) -> None:
    """Requantize every uint8 activation from codes 0..255 to 0..127 over the same calibrated range
    (scale x 255/127, zero point x 127/255), in place. With 7-bit
    activations, full 8-bit weights cannot saturate VPMADDUBSW either (2 * 127 * 128 < 32767), as
    long as a value stays within its calibrated range (QuantizeLinear itself clamps only at 255).
    Int32 biases are requantized too: ONNX Runtime's fused kernels read them as codes of
    input scale x weight scale, whatever scale their own DequantizeLinear names."""
    inits = {i.name: i for i in model.graph.initializer}
    arr = {name: numpy_helper.to_array(i) for name, i in inits.items()}

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
        arr[name] = value

    done: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] in done:
            continue
        scale, zp = node.input[1], node.input[2]
        if arr[zp].dtype != np.uint8:
            continue
        put(scale, (arr[scale] * np.float32(255 / 127)).astype(arr[scale].dtype))
        put(zp, np.round(arr[zp].astype(np.float64) * 127 / 255).astype(np.uint8))
        done.add(zp)
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        x_dq, w_dq, b_dq = (producer.get(t) for t in node.input[:3])
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in (x_dq, w_dq, b_dq)):
            continue
        codes, old = arr[b_dq.input[0]], arr[b_dq.input[1]]
        if codes.dtype != np.int32:
            continue
        new = (arr[x_dq.input[1]] * arr[w_dq.input[1]]).astype(old.dtype)
        put(b_dq.input[0], np.round(codes.astype(np.float64) * old / new).astype(np.int32))
        put(b_dq.input[1], new)


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray, profile: str = "cnn",
                  fp32_convs: int | None = None, reduce_range: bool = True, activation_bits: int = 8) -> dict:
    """Write the INT8 (QDQ) version of ``fp32_path`` to ``out_path``; returns how it was made.
    ``fp32_convs``: how many leading convs stay fp32 (default: the profile's); ``reduce_range=False``
    (8-bit weights) is for measuring only (bench.int8_fidelity): such files saturate on CPUs without VNNI,
    unless ``activation_bits=7`` (halve_activation_range)."""
    if activation_bits not in (8, 7):
        raise ValueError(f"activation_bits is 8 or 7, not {activation_bits}")
    prof = PROFILES[profile]
    n_fp32 = int(prof["fp32_stem"]) if fp32_convs is None else fp32_convs
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
        keep = convs[:n_fp32]
        batch = 32 if calibration.shape[1] * calibration.shape[2] <= 64 * 64 else 8
        quantize_static(str(pre), str(out_path), ImageBatches(calibration, batch=batch), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=prof["ops"], nodes_to_exclude=keep, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
                        calibrate_method=CalibrationMethod.MinMax)
    model = onnx.load(str(out_path))
    if activation_bits == 7:
        halve_activation_range(model)
        onnx.save(model, str(out_path))
    model.ClearField("metadata_props")  # the card lives in the fp32 file; this one just points at it
    weights = ("in the 7-bit range (reduce_range: no VPMADDUBSW saturation on CPUs without VNNI)" if reduce_range
               else "in the full 8-bit range")
    acts = "uint8 activations" if activation_bits == 8 else "uint8 activations in 7 bits (codes 0..127)"
    return {"method": f"onnxruntime quantize_static, QDQ, per-channel int8 weights {weights}, {acts}, MinMax",
            "profile": profile, "quantized_ops": prof["ops"], "fp32_nodes": keep,
            "calibration_images": len(calibration),
            "calibration_split": "training split (never test)", "max_drop_pp": MAX_DROP_PP,
            "model": model}
