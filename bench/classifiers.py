"""Benchmark the classifiers (Digits and CIFAR-10 tabs), side by side in one run (a script, not a test):

1. per model, batch-1 latency of ONNX Runtime vs torch eager (same weights, uint8 image in,
   probabilities out, 1 thread each, interleaved so both see the same machine load);
2. the Gradio round trip of ``/predict_digit`` and ``/classify_image`` vs the ``/echo`` endpoint
   (the same file uploaded, no preprocessing or model) against ``python app.py`` in its own process.

    python -m bench.classifiers [--runs 300] [--requests 60] [--json bench/results/classifiers.json]
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
    reg = load_registry()
    for m in [*reg.for_tab("digits"), *reg.for_tab("cifar10")]:
        ckpt = torch.load(REPO / "checkpoints" / f"{m.name}.pt", map_location="cpu", weights_only=False)
        net = nets.from_checkpoint(ckpt)

        def torch_probs(x: torch.Tensor, net: torch.nn.Module = net) -> torch.Tensor:  # = ORT fetching "probs"
            return torch.softmax(net(x.permute(0, 3, 1, 2).float()), dim=1)
        x = np.random.default_rng(0).integers(0, 256, (1, *m.card.input["shape"][1:]), dtype=np.uint8)
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

    def sketch(p: Path) -> dict:
        return {"background": None, "layers": [], "composite": handle_file(str(p))}

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
        photo = REPO / "examples" / "photos" / "cat_chelsea.jpg"
        calls = {  # endpoint -> (call, the echo of the same upload)
            "predict_digit": (lambda: client.predict(sketch(path), api_name="/predict_digit"),
                              lambda: client.predict(sketch(path), api_name="/echo")),
            "classify_image": (lambda: client.predict(handle_file(str(photo)), api_name="/classify_image"),
                               lambda: client.predict(sketch(photo), api_name="/echo")),
        }
        out = {"startup_to_http_s": up}
        for name, (call, echo) in calls.items():
            for _ in range(5):
                call()
                echo()
            t_call, t_echo = [], []
            for _ in range(requests):
                t = time.perf_counter()
                call()
                t_call.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                echo()
                t_echo.append((time.perf_counter() - t) * 1e3)
            c, e = stats(t_call), stats(t_echo)
            out[name] = {"endpoint": c, "echo": e, "model_and_preprocessing_ms": c["median_ms"] - e["median_ms"]}
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300, help="timed inferences per model and runtime")
    ap.add_argument("--requests", type=int, default=60, help="timed requests per endpoint")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "classifiers.json"))
    args = ap.parse_args()

    import onnxruntime
    import torch

    models = bench_models(args.runs)
    rt = bench_roundtrip(args.requests)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; 1 thread each\n")
    print(f"{'model':<16} {'ORT median':>11} {'ORT p90':>9} {'torch median':>13} {'torch p90':>10} "
          f"{'ORT speed-up':>13}")
    for r in models:
        print(f"{r['model']:<16} {r['ort']['median_ms']:>9.3f}ms {r['ort']['p90_ms']:>7.3f}ms "
              f"{r['torch_eager']['median_ms']:>11.3f}ms {r['torch_eager']['p90_ms']:>8.3f}ms {r['speedup']:>12.1f}x")
    print(f"\nGradio round trip over {args.requests} requests each (app in its own process, "
          f"HTTP up {rt['startup_to_http_s']:.1f}s after start):")
    for name in ("predict_digit", "classify_image"):
        r = rt[name]
        print(f"  /{name:<15} median {r['endpoint']['median_ms']:7.1f} ms   p90 {r['endpoint']['p90_ms']:7.1f} ms"
              f"   (/echo of the same upload: median {r['echo']['median_ms']:.1f} ms)"
              f"   -> preprocessing + model add {r['model_and_preprocessing_ms']:.1f} ms")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"models": models, "roundtrip": rt, "when": time.strftime("%Y-%m-%d %H:%M")}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
