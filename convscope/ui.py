"""The Gradio Blocks app, built from the model cards in models/. Imports no torch."""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
from fastapi import FastAPI

from convscope import uploads
from convscope.guard import Guard
from convscope.rest import build_rest
from convscope.runtime import MODELS_DIR, Registry, load_registry
from convscope.tabs import cifar, digits, features, teach, xray
from convscope.tabs.common import SafeSketchpad

# Gradio's per-file upload limit: a model for "your own model" may be this large; an image input
# refuses files over uploads.MAX_UPLOAD_BYTES (10 MB, as REST) when it reads them
MAX_FILE_SIZE = uploads.MAX_MODEL_BYTES
TITLE = "ConvScope — see what a CNN does"
CSS = """
.cs-notice { border-left: 4px solid #d97706; padding-left: 0.8em; }
#digit-sketch { max-width: 360px; }
#digit-preview img, #cifar-seen img { image-rendering: pixelated; }
"""
def session_capacity() -> int:
    """How many sessions Gradio keeps state for (oldest dropped first): CONVSCOPE_SESSIONS, default 256.

    Why not Gradio's 10,000: every call of Gradio's HTTP API without a session hash (curl, most
    non-Python clients) opens a new session, and each one holds a copy of every component's config:
    ``python -m bench.sessions`` measured 138 KB of resident memory and 26 ms of server CPU per such
    call (8 ms per call within one session). At 10,000 that is over a gigabyte; at 256 about 35 MB,
    still far more sessions than a classroom has open at once (a browser tab is one session)."""
    return int(os.environ.get("CONVSCOPE_SESSIONS", "256"))


def build_app(models_dir: str | Path = MODELS_DIR, registry: Registry | None = None) -> gr.Blocks:
    registry = registry or load_registry(models_dir)
    uploads.upload_root()  # before any component is made: each one reads the folder once
    # No delete_cache: convscope.uploads.Sweeper (started by serve) removes uploads, partial
    # uploads and empty folders on a schedule of its own.
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nEvery model here was trained in PyTorch, exported to ONNX and is "
                    "served by ONNX Runtime. Each one's model card (accuracy measured on the ONNX "
                    "file, training time, limitations) is in `models/`.")
        own = gr.State(None)  # the session's "your own model" (Feature maps), where Teach puts its model
        with gr.Tabs() as tabs:
            with gr.Tab("Digits", id="digits"):
                digits.build(registry)
            with gr.Tab("CIFAR-10", id="cifar10"):
                cifar.build(registry)
            with gr.Tab("Feature maps", id="features"):
                feature_tabs = features.build(registry, own)
            with gr.Tab("X-ray", id="xray"):
                xray.build(registry)
            with gr.Tab("Teach", id="teach"):
                teach.build(registry, own, tabs, feature_tabs)
        demo.load(None, None, None, js=digits.SELECT_BRUSH_JS)
        # An echo endpoint with the same input as predict_digit: the benchmark's baseline for
        # what the Gradio round trip costs without preprocessing or a model.
        echo_in = SafeSketchpad(visible=False, image_mode="L", type="numpy")
        echo_out = gr.Textbox(visible=False)
        gr.Button(visible=False).click(lambda v: "ok", echo_in, echo_out, api_name="echo",
                                       api_visibility="undocumented")
    # ORT sessions are thread-safe and each request uses one thread: let a few run at once
    # (Gradio's default is one at a time per event).
    demo.queue(default_concurrency_limit=int(os.environ.get("CONVSCOPE_CONCURRENCY", "4")))
    demo.state_session_capacity = session_capacity()  # launch()'s argument; read from here when mounted
    demo.registry = registry  # for tests and the benchmark
    return demo


def mount(demo: gr.Blocks) -> FastAPI:
    """The REST API (convscope.rest) with the Gradio UI and its API mounted at "/", unguarded
    (convscope.server puts its own Guard around the whole process)."""
    app = gr.mount_gradio_app(build_rest(demo.registry), demo, path="/", max_file_size=MAX_FILE_SIZE,
                              css=CSS, theme=gr.themes.Soft(), footer_links=["api", "gradio"])
    # Gradio checks that a file a request names is an upload only once `launch()` has run;
    # mounted, it never runs, so the check must be switched on here (Blocks.launch sets the same
    # flag). The Guard checks the same before Gradio sees a request, with messages naming no path.
    demo.has_launched = True
    start_sweeper(demo)
    return app


def start_sweeper(demo: gr.Blocks) -> None:
    """Delete old uploads on a schedule (convscope.uploads), sparing the files Gradio keeps for
    the examples; once per app."""
    if getattr(demo, "sweeper", None) is None:
        def keep() -> set[str]:
            return {p for b in list(demo.blocks.values()) for p in getattr(b, "keep_in_cache", ())}

        demo.sweeper = uploads.Sweeper(uploads.upload_root(), keep)
        demo.sweeper.start()


def serve(demo: gr.Blocks) -> Guard:
    """One ASGI app, as `python app.py` serves it: REST + the Gradio UI and API, behind the Guard."""
    return Guard(mount(demo), uploads.upload_root(), validate_call=call_checker(demo))


def call_checker(demo: gr.Blocks):
    """A check for a Gradio API call's JSON body: the endpoint exists and gets enough inputs.
    Gradio answers an unknown endpoint with a 500, and too few inputs with an error that writes
    every input it got (image data included) into the server log."""

    def check(path: str, body: dict) -> tuple[int, str] | None:
        parts = path.strip("/").split("/")
        fns = demo.fns
        if parts[:2] == ["queue", "join"] or body.get("fn_index") is not None:
            fn = fns.get(body.get("fn_index")) if isinstance(body.get("fn_index"), int) else None
        elif len(parts) >= 2 and parts[0] in ("call", "run", "api"):
            name = parts[-1]
            fn = next((f for f in fns.values() if f.api_name == name), None)
        else:
            return None
        if fn is None:
            return 404, "Unknown API endpoint: see /gradio_api/info for the named endpoints."
        data = body.get("data")
        if isinstance(data, list) and len(data) < len(fn.inputs):
            return 422, f"This endpoint takes {len(fn.inputs)} inputs; the request gave {len(data)}."
        return None

    return check


def serve_in_background(demo: gr.Blocks, port: int, host: str = "127.0.0.1", timeout: float = 60):
    """The production server (UI + REST) in a daemon thread, for tests and benchmarks; returns
    the uvicorn.Server (set ``should_exit = True`` to stop it) once it accepts connections."""
    import threading
    import time

    import uvicorn

    from convscope.server import server_limits

    server = uvicorn.Server(uvicorn.Config(serve(demo), host=host, port=port, log_level="warning", **server_limits()))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not up on {host}:{port} after {timeout} s")
        time.sleep(0.05)
    return server
