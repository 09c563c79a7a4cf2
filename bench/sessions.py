"""What a Gradio session costs the server (convscope.ui.session_capacity): ``python app.py`` in
its own process, then sequential calls of the echo endpoint through Gradio's HTTP API, first each
without a session hash (every call a new session, as curl users make them), then all in one
session; prints calls/s, the server's CPU per call and its resident memory after each part.

    python -m bench.sessions [--calls 600]
"""

from __future__ import annotations

import argparse
import os
import time

from bench.load import GradioHTTP, cpu_s, rss_mb, start_app

EMPTY_SKETCH = {"background": None, "layers": [], "composite": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=600)
    args = ap.parse_args()
    port = 7700 + os.getpid() % 90
    proc = start_app(port)
    try:
        client = GradioHTTP(f"http://127.0.0.1:{port}/")
        for _ in range(20):  # warm-up, in one session
            client.predict(EMPTY_SKETCH, api_name="/echo")
        start = rss_mb(proc.pid)
        print(f"server resident memory after warm-up: {start:.0f} MB")
        for label, session in (("a new session per call", None), ("one session", client.session_hash)):
            client.session_hash = session
            t0, c0, mb0 = time.perf_counter(), cpu_s(proc.pid), rss_mb(proc.pid)
            for _ in range(args.calls):
                client.predict(EMPTY_SKETCH, api_name="/echo")
            dt, cpu, mb1 = time.perf_counter() - t0, cpu_s(proc.pid) - c0, rss_mb(proc.pid)
            print(f"{args.calls} calls, {label}: {args.calls / dt:.1f} calls/s, server CPU "
                  f"{cpu * 1e3 / args.calls:.0f} ms per call, resident memory "
                  f"{mb0:.0f} -> {mb1:.0f} MB ({(mb1 - mb0) * 1024 / args.calls:+.0f} KB per call)", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
