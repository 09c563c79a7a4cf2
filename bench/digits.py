"""Benchmark the Digits tab, side by side in one run (a script, not a test):

1. per digit model, batch-1 latency of ONNX Runtime vs torch eager (same weights, uint8 image in,
   probabilities out, 1 thread each, interleaved so both see the same machine load);
2. the Gradio round trip of ``/predict_digit`` vs the ``/echo`` endpoint (same Sketchpad
   payload, no preprocessing or model) against ``python app.py`` in its own process.

    python -m bench.digits [--runs 300] [--requests 60] [--json bench/results/digits.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "n": len(a)}


def bench_models(runs: int) -> list[dict]:
    import torch

    from convscope.runtime import load_registry
    from train import nets

    torch.set_num_threads(1)
    rows = []
    for m in load_registry().for_tab("digits"):
        ckpt = torch.load(REPO / "checkpoints" / f"{m.name}.pt", map_location="cpu", weights_only=False)
        net = nets.from_checkpoint(ckpt)

        def torch_probs(x: torch.Tensor, net: torch.nn.Module = net) -> torch.Tensor:  # = ORT fetching "probs"
            return torch.softmax(net(x.permute(0, 3, 1, 2).float()), dim=1)
        x = np.random.default_rng(0).integers(0, 256, (1, 28, 28, 1), dtype=np.uint8)
        xt = torch.from_numpy(x.copy())
        sess = m.session  # 1 intra-op thread (CONVSCOPE_ORT_THREADS default)
        t_ort, t_torch = [], []
        with torch.inference_mode():
            for _ in range(20):
                sess.run(["probs"], {"image": x})
                torch_probs(xt)
            for _ in range(runs):
                t = time.perf_counter()
                sess.run(["probs"], {"image": x})
                t_ort.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                torch_probs(xt)
                t_torch.append((time.perf_counter() - t) * 1e3)
        o, p = stats(t_ort), stats(t_torch)
        rows.append({"model": m.name, "ort": o, "torch_eager": p, "speedup": p["median_ms"] / o["median_ms"]})
    return rows


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 90) -> float:
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError("app exited during start-up")
        try:
            urllib.request.urlopen(url, timeout=2)
            return time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"app not up after {timeout}s")


def bench_roundtrip(requests: int) -> dict:
    from gradio_client import Client, handle_file
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(REPO / "tests"))
    port = 7900 + os.getpid() % 90
    env = os.environ | {"GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        up = wait_up(f"http://127.0.0.1:{port}/", proc)
        img = Image.new("L", (280, 280), 255)
        ImageDraw.Draw(img).line([(80, 60), (200, 60), (120, 230)], fill=0, width=24)
        path = Path(f"/tmp/convscope-bench-{os.getpid()}.png")
        img.save(path)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        value = {"background": None, "layers": [], "composite": handle_file(str(path))}
        for _ in range(5):
            client.predict(value, api_name="/predict_digit")
            client.predict(value, api_name="/echo")
        t_pred, t_echo = [], []
        for _ in range(requests):
            t = time.perf_counter()
            client.predict(value, api_name="/predict_digit")
            t_pred.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            client.predict(value, api_name="/echo")
            t_echo.append((time.perf_counter() - t) * 1e3)
        p, e = stats(t_pred), stats(t_echo)
        return {"startup_to_http_s": up, "predict_digit": p, "echo": e,
                "model_and_preprocessing_ms": p["median_ms"] - e["median_ms"]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300, help="timed inferences per model and runtime")
    ap.add_argument("--requests", type=int, default=60, help="timed requests per endpoint")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "digits.json"))
    args = ap.parse_args()

    import onnxruntime
    import torch

    models = bench_models(args.runs)
    rt = bench_roundtrip(args.requests)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; 1 thread each\n")
    print(f"{'model':<14} {'ORT median':>11} {'ORT p90':>9} {'torch median':>13} {'torch p90':>10} "
          f"{'ORT speed-up':>13}")
    for r in models:
        print(f"{r['model']:<14} {r['ort']['median_ms']:>9.3f}ms {r['ort']['p90_ms']:>7.3f}ms "
              f"{r['torch_eager']['median_ms']:>11.3f}ms {r['torch_eager']['p90_ms']:>8.3f}ms {r['speedup']:>12.1f}x")
    print(f"\nGradio round trip over {args.requests} requests each (app in its own process, "
          f"HTTP up {rt['startup_to_http_s']:.1f}s after start):")
    for name in ("predict_digit", "echo"):
        s = rt[name]
        print(f"  /{name:<14} median {s['median_ms']:7.1f} ms   p90 {s['p90_ms']:7.1f} ms")
    print(f"  preprocessing + model add {rt['model_and_preprocessing_ms']:.1f} ms to the round trip "
          "(difference of medians)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"models": models, "roundtrip": rt, "when": time.strftime("%Y-%m-%d %H:%M")}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
