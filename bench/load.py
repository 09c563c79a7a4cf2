"""Load and soak: concurrent users against `python app.py` in its own process.

    python -m bench.load                         # 16 clients, 2 minutes, all image endpoints (Gradio + REST)
    python -m bench.load --clients 4 --seconds 600   # soak: watch resident memory
Prints requests/s, p50/p95/p99 per endpoint, errors, and the server's resident memory growth
(after a warm-up) — the figures the robustness issue asks for. tests/test_load.py runs a short form.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "n": len(a)}


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 90) -> float:
    """Seconds until ``url`` answers 200 (a 503 while the UI is still being built counts as not up)."""
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


def start_app(port: int) -> subprocess.Popen:
    env = os.environ | {"GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(f"http://127.0.0.1:{port}/", proc)
    return proc


class GradioHTTP:
    """A Gradio API client in a few HTTP calls, as any non-Python client makes them (Gradio's
    documented HTTP API): each file uploaded to ``/gradio_api/upload``, the call queued with
    ``POST /gradio_api/call/<api_name>``, its result read from the event stream
    ``GET /gradio_api/call/<api_name>/<event_id>``. The same queue and functions as the UI. Each
    client keeps one session hash, as a browser tab does (a call without one opens a new session
    on the server: ``python -m bench.sessions``).

    Why not gradio_client for load: when this harness was built on it (up to commit 4d40333),
    sixteen of its clients in one process used both of a 2-core machine's cores (2.05) for 9
    requests/s while the server used 0.45 of a core (one-off /proc CPU readings): it measured
    itself, not the server. run_load now reports both sides' CPU (``server_cores``, ``client_cores``). (The app's
    tests keep calling through gradio_client: that it works is part of the contract.)"""

    def __init__(self, url: str) -> None:
        import uuid

        import httpx

        self.session_hash: str | None = uuid.uuid4().hex  # None: each call a new session (bench.sessions)
        self.http = httpx.Client(base_url=url + "gradio_api/", timeout=60, limits=httpx.Limits(keepalive_expiry=2.0))

    def file(self, path: str) -> dict:
        """Upload ``path``; the FileData value that refers to it in a call."""
        with open(path, "rb") as f:
            r = self.http.post("upload", files={"files": (Path(path).name, f)})
        r.raise_for_status()
        return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}

    def predict(self, *args: object, api_name: str) -> list:
        """Call a named endpoint; the list of its outputs, or RuntimeError with Gradio's message."""
        api = api_name.strip("/")
        r = self.http.post(f"call/{api}", json={"data": list(args), "session_hash": self.session_hash})
        r.raise_for_status()
        event = None
        with self.http.stream("GET", f"call/{api}/{r.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(f"/{api}: {line[5:].strip()}")
                    return json.loads(line[5:])
        raise RuntimeError(f"/{api}: the event stream ended without a result")


def make_calls(tmp: Path, url: str) -> tuple[dict, dict]:
    """Endpoint name -> call(connection), and API -> how a client thread connects. Gradio endpoints
    go through Gradio's HTTP API (:class:`GradioHTTP`), ``rest_*`` ones through /api/v1, both httpx."""
    import httpx
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(img).line([(80, 60), (200, 60), (120, 230)], fill="black", width=24)
    path = str(tmp / "seven.png")
    img.save(path)
    photo = REPO / "examples" / "photos" / "cat_chelsea.jpg"
    film = Image.new("L", (512, 512), 30)  # a film-like picture: two lung fields and a spine
    draw = ImageDraw.Draw(film)
    for x0 in (90, 290):
        draw.ellipse([x0, 100, x0 + 130, 420], fill=120)
    draw.rectangle([246, 40, 266, 500], fill=230)
    film_path = str(tmp / "film.png")
    film.save(film_path)
    seven, cat, film_bytes = Path(path).read_bytes(), photo.read_bytes(), Path(film_path).read_bytes()

    def rest(endpoint: str, data: bytes):
        return lambda c: c.post(endpoint, files={"image": ("x", data)}).raise_for_status()

    def sketch(c: GradioHTTP, file: str) -> dict:  # a Sketchpad value whose picture is the file
        return {"background": None, "layers": [], "composite": c.file(file)}

    def echo(file: str):  # the Gradio baseline: the same upload through the sketch input, no model
        return lambda c: c.predict(sketch(c, file), api_name="/echo")

    calls = {
        "predict_digit": lambda c: c.predict(sketch(c, path), "mnist_cnn", api_name="/predict_digit"),
        "feature_maps": lambda c: c.predict("mnist_cnn", c.file(path), api_name="/feature_maps"),
        "classify_image": lambda c: c.predict(c.file(str(photo)), "cifar_resnet", "default",
                                              api_name="/classify_image"),
        "diagnose_xray": lambda c: c.predict(c.file(film_path), "xray_pneumonia", "default",
                                             api_name="/diagnose_xray"),
        "echo": echo(path),
        "echo_photo": echo(str(photo)),
        "echo_film": echo(film_path),
        "rest_predict_digit": rest("predict/mnist_cnn", seven),
        "rest_classify_image": rest("predict/cifar_resnet", cat),
        # the other models and variants (the suite's round trips: what each one adds); without
        # ?variant= a model answers with its default file (INT8 where it ships one)
        "rest_cifar_resnet_fp32": rest("predict/cifar_resnet?variant=fp32", cat),
        "rest_cifar_resnet_single_view": rest("predict/cifar_resnet?variant=single_view", cat),
        "rest_cifar_inception": rest("predict/cifar_inception", cat),
        "rest_cifar_simple": rest("predict/cifar_simple", cat),
        "rest_diagnose_xray": rest("predict/xray_pneumonia", film_bytes),
        "rest_xray_pneumonia_fp32": rest("predict/xray_pneumonia?variant=fp32", film_bytes),
        "rest_xray_covid3": rest("predict/xray_covid3", film_bytes),
        "rest_echo": rest("echo", seven),
        "rest_echo_photo": rest("echo", cat),
        "rest_echo_film": rest("echo", film_bytes),
    }
    connect = {"gradio": lambda: GradioHTTP(url),
               # idle connections expire on the client first: uvicorn closes them after 5 s (its
               # keep-alive timeout) and httpx's default expiry is also 5 s, so a request sent on a
               # connection the server is closing at that moment got "connection reset" (seen in CI)
               "rest": lambda: httpx.Client(base_url=url + "api/v1/", timeout=60,
                                            limits=httpx.Limits(keepalive_expiry=2.0))}
    return calls, connect


GRADIO_MIX = ["predict_digit", "feature_maps", "classify_image", "diagnose_xray"]
REST_MIX = ["rest_predict_digit", "rest_classify_image", "rest_diagnose_xray"]


def run_load(url: str, clients: int, seconds: float, endpoints: list[str] | None = None,
             server_pid: int | None = None, warmup_s: float = 0.0) -> dict:
    """``clients`` threads, each with its own connection per API, cycling through ``endpoints``
    (default: every image endpoint, Gradio and REST) for ``warmup_s`` + ``seconds``.

    Memory: the server's resident set is sampled every few seconds; growth is measured from the
    end of the warm-up (the same load, so allocator arenas and ONNX Runtime's per-thread buffers
    have reached their working size) to the end, and the samples are returned so a plateau can
    be told from a leak. Latencies and errors count the whole run."""
    tmp = Path(tempfile.mkdtemp())
    calls, connect = make_calls(tmp, url)
    names = endpoints or GRADIO_MIX + REST_MIX
    lat: dict[str, list[float]] = {n: [] for n in names}
    errors: list[str] = []
    lock = threading.Lock()
    apis = {"rest" if n.startswith("rest_") else "gradio" for n in names}
    conns = [{api: connect[api]() for api in apis} for _ in range(clients)]

    def call(name: str, conn: dict) -> None:
        calls[name](conn["rest" if name.startswith("rest_") else "gradio"])

    for n in names:  # one call each before the clock starts
        call(n, conns[0])
    start = time.perf_counter()
    deadline = start + warmup_s + seconds
    samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)
    done = threading.Event()

    def sample() -> None:
        while server_pid and not done.wait(5.0):
            samples.append((time.perf_counter() - start, rss_mb(server_pid)))

    def worker(i: int) -> None:
        k = i
        while time.perf_counter() < deadline:
            name = names[k % len(names)]
            k += 1
            t = time.perf_counter()
            try:
                call(name, conns[i])
                with lock:
                    lat[name].append((time.perf_counter() - t) * 1e3)
            except Exception as e:  # every failure counts, whatever it is
                with lock:
                    errors.append(f"{name}: {type(e).__name__}: {e}"[:200])

    t0, client_cpu0 = time.perf_counter(), time.process_time()
    server_cpu0 = cpu_s(server_pid) if server_pid else None
    rss_start = rss_mb(server_pid) if server_pid else None
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    wall = time.perf_counter() - t0
    out = {"clients": clients, "seconds": wall, "errors": len(errors), "error_examples": errors[:5],
           "requests": sum(len(v) for v in lat.values()), "endpoints": {}}
    out["requests_per_s"] = out["requests"] / wall
    # cores busy on each side: a load generator on the same machine must not be the bottleneck
    out["client_cores"] = (time.process_time() - client_cpu0) / wall
    if server_pid:
        out["server_cores"] = (cpu_s(server_pid) - server_cpu0) / wall
    for n, v in lat.items():
        a = np.asarray(v) if v else np.array([np.nan])
        out["endpoints"][n] = {"n": len(v), "per_s": len(v) / wall, "p50_ms": float(np.percentile(a, 50)),
                               "p95_ms": float(np.percentile(a, 95)), "p99_ms": float(np.percentile(a, 99))}
    if server_pid:
        rss1 = rss_mb(server_pid)
        after_warmup = [r for t, r in samples if t >= warmup_s]
        rss0 = after_warmup[0] if warmup_s and after_warmup else rss_start
        out |= {"rss_mb_before_load": rss_start, "warmup_s": warmup_s, "rss_mb_start": rss0, "rss_mb_end": rss1,
                "rss_growth_pct": 100 * (rss1 - rss0) / rss0, "rss_samples": samples}
        half = [(t, r) for t, r in samples if t >= warmup_s + seconds / 2]
        if len(half) >= 2:  # MB per minute over the second half: ~0 for a plateau, steady for a leak
            ts, rs = np.array(half).T
            out["rss_slope_mb_per_min_second_half"] = float(np.polyfit(ts / 60, rs, 1)[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--warmup", type=float, default=60, help="seconds of load before memory growth is measured")
    ap.add_argument("--endpoints", nargs="+", help="only these (e.g. predict_digit echo); default: all image ones")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "load.json"))
    args = ap.parse_args()
    port = 7950 + os.getpid() % 40
    proc = start_app(port)
    try:
        r = run_load(f"http://127.0.0.1:{port}/", args.clients, args.seconds, endpoints=args.endpoints,
                     server_pid=proc.pid, warmup_s=args.warmup)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"{r['clients']} clients for {r['seconds']:.0f} s: {r['requests']} requests, "
          f"{r['requests_per_s']:.1f}/s, {r['errors']} errors; CPU cores busy: server {r['server_cores']:.2f}, "
          f"clients {r['client_cores']:.2f}")
    for n, e in r["endpoints"].items():
        print(f"  /{n:<14} {e['per_s']:6.1f}/s   p50 {e['p50_ms']:6.0f} ms   p95 {e['p95_ms']:6.0f} ms   "
              f"p99 {e['p99_ms']:6.0f} ms")
    print(f"server resident memory {r['rss_mb_before_load']:.0f} MB idle; {r['rss_mb_start']:.0f} MB after "
          f"{r['warmup_s']:.0f} s of warm-up load -> {r['rss_mb_end']:.0f} MB at the end "
          f"({r['rss_growth_pct']:+.1f}%); second-half slope "
          f"{r.get('rss_slope_mb_per_min_second_half', float('nan')):+.2f} MB/min")
    for e in r["error_examples"]:
        print("  error:", e)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
