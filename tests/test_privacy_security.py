"""Uploads are not kept, the app phones nobody, and the server only serves its own files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from gradio_client import handle_file

from tests.bad_inputs import digit_rgb
from tests.conftest import REPO, free_port

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
    # a request that makes a new ONNX Runtime session (the whole graph, for the Feature maps tab)
    import json
    req = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/call/feature_maps",
                                 data=json.dumps({"data": ["mnist_cnn", None]}).encode(),
                                 headers={"content-type": "application/json"})
    event = json.load(urllib.request.urlopen(req, timeout=30))["event_id"]
    urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/call/feature_maps/{event}", timeout=60).read()
    time.sleep(2)
    print("ATTEMPTS", attempts, flush=True)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=visit, daemon=True).start()
runpy.run_path("app.py", run_name="__main__")  # exactly what `python app.py` runs
"""


LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|inet_pton\(AF_INET6, "::ffff:127\.')
ADDRESS = re.compile(r'(inet_addr\("[^"]+"\)|inet_pton\(AF_INET6?, "[^"]+")')


def outbound_syscalls(trace: str) -> list[str]:
    """The connect/sendto/sendmsg calls in an strace log that name a non-loopback IP address
    (a DNS query to the resolver is one: ONNX Runtime's telemetry starts with one)."""
    return [line for line in trace.splitlines()
            if ADDRESS.search(line) and not LOOPBACK.search(line) and "AF_UNIX" not in line]


def test_outbound_syscalls_parser():
    sample = ('12 connect(5, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0\n'
              '12 connect(6, {sa_family=AF_INET, sin_port=htons(7860), sin_addr=inet_addr("127.0.0.1")}, 16) = 0\n'
              '12 connect(7, {sa_family=AF_UNIX, sun_path="/run/x"}, 110) = -1\n')
    assert len(outbound_syscalls(sample)) == 1


def test_the_app_opens_no_outbound_connection(tmp_path):
    """`python app.py`, visited and used, makes no outbound connection: checked in Python (a
    socket guard) and at the system-call level (strace), which also sees native libraries."""
    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("CI"):
            pytest.fail("strace is required in CI (scripts/test.sh installs it)")
        pytest.skip("strace not installed: only the Python-level guard can run (apt-get install strace)")
    log = tmp_path / "strace.txt"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}  # the app must set it itself
    r = subprocess.run([strace, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log),
                        sys.executable, "-c", GUARD, str(free_port())], cwd=REPO, capture_output=True, text=True,
                       timeout=240, env=env)
    assert "ATTEMPTS []" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert outbound_syscalls(log.read_text()) == []


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
