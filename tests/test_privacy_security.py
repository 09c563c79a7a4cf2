"""Uploads are not kept, the app phones nobody, and the server only serves its own files."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from gradio_client import Client, handle_file

from tests.bad_inputs import digit_rgb
from tests.conftest import REPO, free_port


def test_uploads_are_deleted_within_the_configured_window(tmp_path, monkeypatch):
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    monkeypatch.setenv("CONVSCOPE_CACHE_SECONDS", "2")
    from convscope.app import build_app, serve_in_background

    port = free_port()
    server = serve_in_background(build_app(), port)
    try:
        img = tmp_path / "secret_digit.png"
        digit_rgb().save(img)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        out = client.predict({"background": None, "layers": [], "composite": handle_file(str(img))},
                             api_name="/predict_digit")
        assert out["label"] == "7"
        kept = list(cache.rglob("secret_digit.png"))  # (the example images are meant to stay cached)
        assert kept, "the upload should be in Gradio's cache while it is fresh"
        deadline = time.time() + 15
        while time.time() < deadline and any(p.exists() for p in kept):
            time.sleep(0.5)
        assert not any(p.exists() for p in kept), "uploads outlived the 2 s window"
    finally:
        server.should_exit = True


GUARD = r"""
import socket, sys, os, runpy, signal, threading, time, urllib.request
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["GRADIO_SERVER_PORT"] = port = sys.argv[1]
attempts = []
_connect = socket.socket.connect
def guarded(self, address):
    host = address[0] if isinstance(address, tuple) else str(address)
    if not (host.startswith("127.") or host in ("localhost", "::1") or self.family == socket.AF_UNIX):
        attempts.append(host)
        raise OSError(f"outbound connection to {host} blocked by the test")
    return _connect(self, address)
socket.socket.connect = guarded
def visit():  # once the UI is up: the pages a visitor and a client load, then stop the server
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            break
        except OSError:
            time.sleep(0.2)
    for path in ("", "gradio_api/info", "api/v1/models", "api/v1/docs"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=30).read()
    time.sleep(2)
    print("ATTEMPTS", attempts, flush=True)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=visit, daemon=True).start()
runpy.run_path("app.py", run_name="__main__")  # exactly what `python app.py` runs
"""


def test_the_app_opens_no_outbound_connection():
    r = subprocess.run([sys.executable, "-c", GUARD, str(free_port())], cwd=REPO, capture_output=True, text=True,
                       timeout=180)
    assert "ATTEMPTS []" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.parametrize("path", [
    "/etc/passwd",
    "../../../../etc/passwd",
    str(REPO / "README.md"),
    str(REPO / "checkpoints" / "mnist_cnn.pt"),
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
])
def test_files_outside_the_app_cannot_be_fetched(app_url, path):
    url = f"{app_url}gradio_api/file={path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        status, body = e.code, b""
    assert status != 200 and b"root:" not in body, f"{path} was served ({status})"


def test_no_image_content_in_logs(client, tmp_path, caplog, capfd):
    import logging

    caplog.set_level(logging.DEBUG)
    img = tmp_path / "private.png"
    digit_rgb().save(img)
    client.predict({"background": None, "layers": [], "composite": handle_file(str(img))}, api_name="/predict_digit")
    with pytest.raises(Exception, match="blank"):
        blank = tmp_path / "blank.png"
        digit_rgb().convert("L").point(lambda v: 255).save(blank)
        client.predict({"background": None, "layers": [], "composite": handle_file(str(blank))},
                       api_name="/predict_digit")
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    for leak in ("data:image", "\x89PNG", "private.png", "iVBORw0KGgo"):  # data URLs, raw PNG, file names
        assert leak not in logged


def test_gradio_is_pinned_to_a_fixed_release():
    import gradio
    from packaging.version import Version

    assert Version(gradio.__version__) >= Version("6.16")
    assert '"gradio>=6.16' in (REPO / "pyproject.toml").read_text()
