"""`python app.py`'s start-up: the REST API answers before Gradio is imported, the UI joins later,
and a UI that fails to build leaves the REST API serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from gradio_client import Client, handle_file

from tests.bad_inputs import digit_rgb
from tests.conftest import REPO, free_port

SEVEN = REPO / "examples" / "digit_7.png"


def rest_seven(url: str) -> httpx.Response:
    return httpx.post(f"{url}api/v1/predict/mnist_cnn", files={"image": ("7.png", SEVEN.read_bytes())}, timeout=10)


def test_python_app_py_answers_rest_first_then_serves_the_ui(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = os.environ | {"GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0, rest_at, ui_at, early = time.monotonic(), None, None, []
    try:
        while ui_at is None and time.monotonic() - t0 < 120:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                if rest_at is None and rest_seven(url).status_code == 200:
                    rest_at = time.monotonic() - t0
                page = httpx.get(url, timeout=10)
            except httpx.TransportError:  # not listening yet
                time.sleep(0.05)
                continue
            if page.status_code == 200:
                ui_at = time.monotonic() - t0
            else:
                early.append(page)
                time.sleep(0.05)
        assert rest_at is not None and ui_at is not None, "no answer within 120 s"
        # (that REST answers while the UI is still being built is shown deterministically below)
        for page in early:  # while the UI is built: a self-reloading 503, so pollers keep waiting
            assert page.status_code == 503 and page.headers["retry-after"] == "2", page.text
            assert "starting" in page.text
        # the UI that joined is the real one: its named endpoints answer, and REST still does
        img = tmp_path / "seven.png"
        digit_rgb().save(img)
        out = Client(url, verbose=False).predict({"background": None, "layers": [], "composite": handle_file(str(img))},
                                                 api_name="/predict_digit")
        assert out["label"] == "7"
        r = rest_seven(url)
        assert r.status_code == 200 and r.json()["label"] == "7"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]


@pytest.fixture()
def late_ui():
    """A LateUI server whose UI is not built yet (what the first seconds of `python app.py` serve)."""
    import uvicorn

    from convscope.rest import build_rest
    from convscope.runtime import load_registry
    from convscope.server import LateUI

    front = LateUI()
    front.registry = load_registry()
    front.rest = build_rest(front.registry)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(front, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    assert front.started.wait(30)
    yield front, f"http://127.0.0.1:{port}/"
    server.should_exit = True


def test_ui_paths_wait_and_rest_answers_while_the_ui_is_built(late_ui):
    front, url = late_ui
    page = httpx.get(url, timeout=10)
    assert page.status_code == 503 and page.headers["retry-after"] == "2"
    assert httpx.get(f"{url}gradio_api/info", timeout=10).status_code == 503
    assert rest_seven(url).json()["label"] == "7"
    assert httpx.get(f"{url}api/v1/models", timeout=10).status_code == 200
    assert httpx.get(f"{url}api/v1/nope", timeout=10).status_code == 404  # REST's own 404, as JSON
    assert front.full is None


def test_a_ui_that_fails_to_build_leaves_rest_serving(late_ui, monkeypatch):
    import convscope.ui

    def broken(**kwargs):
        raise RuntimeError("simulated: a component failed to build")

    monkeypatch.setattr(convscope.ui, "build_app", broken)
    front, url = late_ui
    front.build_ui(time.perf_counter())
    assert front.failed and front.full is None
    page = httpx.get(url, timeout=10)
    assert page.status_code == 500 and "failed to start" in page.text and "Traceback" not in page.text
    assert rest_seven(url).json()["label"] == "7"
