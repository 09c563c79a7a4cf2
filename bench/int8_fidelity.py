"""How faithful an INT8 file can be, measured on the VALIDATION split only, so quantization settings
can be chosen without the test split (export applies the test-accuracy bound afterwards).

    python -m bench.int8_fidelity xray_covid3 [--data-dir ../shared/data]

Quantizes the model's fp32 file as export does (its profile, its calibration images from the
training split), then with each alternative below, and prints per setting: argmax agreement with
the fp32 file, mean and largest |change| of the probabilities, and batch-1 latency (1 thread).
Full 8-bit weights are measured, never shipped: on x86 CPUs without VNNI they saturate (see
export.quantize).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.suite import timed
from convscope.metrics import predict_probs
from convscope.runtime import MODELS_DIR, make_session, prediction_session
from export.__main__ import quantization_images
from export.quantize import PROFILES, quantize_int8
from train.loop import load_data
from train.recipes import RECIPES

SETTINGS = {  # label -> quantize_int8 overrides of the profile's defaults
    "as export (7-bit weights)": {},
    "7-bit, first 2 convs fp32": {"fp32_convs": 2},
    "7-bit, first 3 convs fp32": {"fp32_convs": 3},
    "8-bit weights (VNNI CPUs only)": {"reduce_range": False},
    "8-bit weights, 7-bit activations": {"reduce_range": False, "activation_bits": 7},
    "8-bit weights, 7-bit acts, 3 fp32": {"reduce_range": False, "activation_bits": 7, "fp32_convs": 3},
}


def latency_ms(path: Path, x: np.ndarray, runs: int = 100) -> float:
    """Median batch-1 latency of the file's prediction graph, as the app serves it (1 thread)."""
    sess = prediction_session(path.read_bytes())
    feed = {sess.get_inputs()[0].name: x[:1]}
    sess.run(None, feed)
    return float(np.median(timed(lambda: sess.run(None, feed), runs)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(r.name for r in RECIPES.values() if r.int8))
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    recipe = RECIPES[args.model]
    fp32 = MODELS_DIR / f"{recipe.name}.onnx"
    _, val = load_data(recipe, recipe.config, args.data_dir, download=False)  # the split training validated on
    calibration = quantization_images(recipe, args.data_dir, smoke=False)
    p32 = predict_probs(make_session(fp32, threads=2), val.x)
    print(f"{recipe.name}: profile {recipe.int8_profile} {PROFILES[recipe.int8_profile]}, "
          f"{len(calibration)} calibration images, validation n={len(val)}; "
          f"fp32 accuracy {(p32.argmax(1) == val.y).mean():.2%}, {latency_ms(fp32, val.x):.2f} ms")
    print(f"{'setting':34s} {'agreement':>9s} {'mean|dp|':>9s} {'max|dp|':>8s} {'val acc':>8s} {'ms':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in SETTINGS.items():
            out = Path(tmp) / "int8.onnx"
            quantize_int8(fp32, out, calibration, recipe.int8_profile, **overrides)
            p8 = predict_probs(make_session(out, threads=2), val.x)
            dp = np.abs(p8 - p32)
            print(f"{label:34s} {(p8.argmax(1) == p32.argmax(1)).mean():9.2%} {dp.mean():9.4f} {dp.max():8.3f} "
                  f"{(p8.argmax(1) == val.y).mean():8.2%} {latency_ms(out, val.x):6.2f}", flush=True)


if __name__ == "__main__":
    main()
