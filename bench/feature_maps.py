"""Server time to produce every feature map of a model (one ORT call for all stages, filters and
CAM, plus every grid, legend and overlay picture, plus PNG encoding as Gradio does it), per model.

    python -m bench.feature_maps [--runs 30]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image, ImageDraw

from convscope.inspection import inspect, render
from convscope.runtime import load_registry


def drawing() -> np.ndarray:
    img = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(img).line([(70, 60), (210, 60), (120, 240)], fill=0, width=24)
    return np.asarray(img)


def one(model, image) -> tuple[float, float]:
    t0 = time.perf_counter()
    r = render(inspect(model, image))
    t1 = time.perf_counter()
    for pic in [*(s["grid"] for s in r["stages"]), *(s["legend"] for s in r["stages"]), r["cam"]]:
        if pic is not None:
            pic.save(io.BytesIO(), format="PNG")
    return (t1 - t0) * 1e3, (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    image = drawing()
    print(f"{'model':<16} {'maps computed':>14} {'+ PNG encoded':>14} {'p90 total':>10}   (target < 300 ms)")
    for name, m in load_registry().models.items():
        for _ in range(3):
            one(m, image)
        times = np.array([one(m, image) for _ in range(args.runs)])
        print(f"{name:<16} {np.median(times[:, 0]):>11.1f} ms {np.median(times[:, 1]):>11.1f} ms "
              f"{np.percentile(times[:, 1], 90):>7.1f} ms")


if __name__ == "__main__":
    main()
