"""The server as an anonymous client on a public Space sees it: every hole in docs/security.md
has its test here (the file's section names follow that page)."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.bad_inputs import digit_rgb, save
from tests.bombs import deflated_dicom, dicom_claiming, png_bomb, tiff_claiming
from tests.conftest import REPO, free_port

SEVEN = (REPO / "examples" / "digit_7.png").read_bytes()
FILE_COMPONENTS = {"Image", "Imageeditor", "Sketchpad", "File"}


def file_ref(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def named_endpoints(url: str) -> dict[str, list[dict]]:
    info = httpx.get(f"{url}gradio_api/info", timeout=10).json()
    return {name.strip("/"): ep["parameters"] for name, ep in info["named_endpoints"].items()}


def call_with(url: str, api: str, params: list[dict], slot: int, ref: dict) -> httpx.Response:
    """POST a named endpoint with ``ref`` as its ``slot``-th input and plausible values elsewhere."""
    data = []
    for i, p in enumerate(params):
        if i == slot:
            editor = p["component"] == "Imageeditor"
            data.append({"background": None, "layers": [], "composite": ref} if editor else ref)
        else:
            data.append(p.get("parameter_default") if p.get("parameter_has_default") else None)
    return httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=10)


def upload(url: str, name: str, data: bytes) -> str:
    r = httpx.post(f"{url}gradio_api/upload", files={"files": (name, data)}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()[0]


def digit_answer(url: str) -> str:
    """What predict_digit says of examples/digit_7.png, end to end through Gradio's HTTP API."""
    ref = file_ref(upload(url, "seven.png", SEVEN))
    r = httpx.post(f"{url}gradio_api/call/predict_digit",
                   json={"data": [{"background": None, "layers": [], "composite": ref}, "mnist_cnn"]}, timeout=10)
    return httpx.get(f"{url}gradio_api/call/predict_digit/{r.json()['event_id']}", timeout=30).text


# --- 1. Files a client names -------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    png = d / "server_secret.png"
    digit_rgb().save(png)
    fifo = d / "fifo"
    os.mkfifo(fifo)
    return {"server file": str(png), "relative": "does/not/exist.png", "/dev/zero": "/dev/zero",
            "fifo": str(fifo), "directory": str(d), "url": "http://169.254.169.254/latest/meta-data",
            "traversal": "/tmp/../etc/passwd"}


def test_every_file_input_of_every_named_endpoint_refuses_paths_it_did_not_upload(app_url, hostile_paths):
    endpoints = named_endpoints(app_url)
    assert {"predict_digit", "classify_image", "feature_maps", "diagnose_xray"} <= set(endpoints)
    checked = 0
    for api, params in endpoints.items():
        for slot, p in enumerate(params):
            if p["component"] not in FILE_COMPONENTS:
                continue
            for kind, path in hostile_paths.items():
                t = time.perf_counter()
                r = call_with(app_url, api, params, slot, file_ref(path))
                assert r.status_code == 403, (api, kind, r.status_code, r.text)
                assert time.perf_counter() - t < 2, (api, kind)
                assert "not uploaded" in r.json()["detail"]
                for leak in (path, os.getcwd(), "/tmp", "/dev"):
                    assert leak not in r.text, (api, kind, r.text)
                checked += 1
    assert checked >= 4 * len(hostile_paths)
    answer = digit_answer(app_url)  # and the server still serves
    assert "event: complete" in answer and '"7"' in answer, answer


def test_the_queue_route_refuses_them_too(app_url, hostile_paths):
    config = httpx.get(f"{app_url}config", timeout=10).json()
    fn = next(d for d in config["dependencies"] if d.get("api_name") == "feature_maps")
    data = ["imagenet_stem", file_ref(hostile_paths["/dev/zero"])]
    r = httpx.post(f"{app_url}gradio_api/queue/join",
                   json={"data": data, "fn_index": fn["id"], "session_hash": "abc123", "trigger_id": None}, timeout=10)
    assert r.status_code == 403, r.text


def test_a_real_upload_still_works_and_its_file_name_never_reaches_disk(app_url):
    path = upload(app_url, "patient_name_7.png", SEVEN)
    assert "patient" not in path and path.endswith(".png")
    root = Path(os.environ["GRADIO_TEMP_DIR"]).resolve()
    assert root in Path(path).resolve().parents
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert not list(root.rglob("*patient*"))


def test_gradio_itself_checks_uploads_once_mounted(app_url):
    """The second lock: Gradio's own check is on, whatever the Guard does."""
    import gradio as gr

    from convscope.ui import build_app, mount

    demo = build_app()
    mount(demo)
    assert isinstance(demo, gr.Blocks) and demo.has_launched


def test_tabs_check_the_file_before_gradio_decodes_it(hostile_paths):
    from convscope.tabs.common import check_files
    from convscope.uploads import NotAnUpload

    for path in hostile_paths.values():
        with pytest.raises(Exception, match="not uploaded"):
            check_files({"path": path})
    with pytest.raises(NotAnUpload):
        check_files({"background": None, "layers": [], "composite": {"path": "/etc/passwd"}})


def test_unknown_hosts_are_refused(app_url):
    r = httpx.get(app_url, headers={"Host": "attacker.example"}, timeout=10)
    assert r.status_code == 400 and "host" in r.text.lower()
    r = httpx.post(f"{app_url}api/v1/predict/mnist_cnn", files={"image": ("7.png", SEVEN)},
                   headers={"Host": "rebound.attacker.example:7860"}, timeout=10)
    assert r.status_code == 400
    for ok in ("localhost", "127.0.0.1:7860", "[::1]:7860"):
        assert httpx.get(f"{app_url}api/v1/models", headers={"Host": ok}, timeout=10).status_code == 200


def test_allowed_hosts_come_from_the_environment(monkeypatch):
    from convscope.guard import allowed_hosts, host_name

    monkeypatch.setenv("SPACE_HOST", "someone-convscope.hf.space")
    monkeypatch.setenv("CONVSCOPE_ALLOWED_HOSTS", "class.local, 192.168.1.20")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    hosts = allowed_hosts()
    assert {"someone-convscope.hf.space", "class.local", "192.168.1.20", "localhost"} <= set(hosts)
    assert "0.0.0.0" not in hosts
    assert host_name("[::1]:7860") == "::1" and host_name("Example.ORG:80") == "example.org"


# --- 2. Memory bombs -----------------------------------------------------------------------------

def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@contextlib.contextmanager
def running_app(**env_vars: str):
    """`python app.py` in its own process (its memory and its upload folder its own), until exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"} | {
        "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"} | env_vars
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def app_process():
    with running_app() as (proc, url):
        yield proc, url


BOMBS = {
    "png 6300^2 RGBA": ("bomb.png", png_bomb),
    "png 6300^2 16-bit gray": ("bomb16.png", lambda: png_bomb(colour_type=0, depth=16)),
    "tiff 6300^2 float": ("bomb.tiff", tiff_claiming),
    "dicom deflated 2048^2 x 32 frames": ("bomb.dcm", deflated_dicom),
    "dicom claiming 60000^2": ("claim.dcm", dicom_claiming),
}


@pytest.mark.parametrize("name", BOMBS)
def test_decompression_bombs_are_refused_fast_in_bounded_memory(app_process, name):
    proc, url = app_process
    filename, make = BOMBS[name]
    data = make()
    assert len(data) < 1_000_000
    for model in ("xray_pneumonia", "cifar_resnet"):  # warm: both decoders and models have run once
        httpx.post(f"{url}api/v1/predict/{model}", files={"image": ("s.png", SEVEN)}, timeout=30)
    before = vm_hwm_mb(proc.pid)
    for model in ("xray_pneumonia", "mnist_cnn"):
        t = time.perf_counter()
        r = httpx.post(f"{url}api/v1/predict/{model}", files={"image": (filename, data)}, timeout=30)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert time.perf_counter() - t < 1.0, name
    ref = file_ref(upload(url, filename, data))
    r = httpx.post(f"{url}gradio_api/call/diagnose_xray", json={"data": [ref, "xray_pneumonia", "default"]},
                   timeout=10)
    answer = httpx.get(f"{url}gradio_api/call/diagnose_xray/{r.json()['event_id']}", timeout=30).text
    assert "event: error" in answer and ("too large" in answer or "not accepted" in answer), answer[-400:]
    grown = vm_hwm_mb(proc.pid) - before
    assert grown < 200, f"{name}: peak memory grew {grown:.0f} MB"


def test_preprocess_refuses_bombs_from_the_header():
    from convscope.preprocess import InputError, read_image

    for _, make in BOMBS.values():
        t = time.perf_counter()
        with pytest.raises(InputError, match=r"too large|not accepted"):
            read_image(make())
        assert time.perf_counter() - t < 1.0


def test_big_but_allowed_images_are_reduced_after_decoding():
    from PIL import Image

    from convscope.preprocess import WORK_MAX_SIDE, read_image

    img = read_image(save(Image.new("RGB", (3900, 2600), "white"), "PNG"))
    assert max(img.size) <= WORK_MAX_SIDE


# --- 3. Disk and retention -----------------------------------------------------------------------

def test_request_bodies_over_the_cap_get_413_before_anything_is_written(app_url):
    from convscope.uploads import MAX_MODEL_BYTES

    root = Path(os.environ["GRADIO_TEMP_DIR"])
    before = {p for p in root.rglob("*") if p.is_file()}
    big = b"\x00" * (12 * 2**20)
    r = httpx.post(f"{app_url}api/v1/predict/mnist_cnn", files={"image": ("big.png", big)}, timeout=30)
    assert r.status_code == 413, r.text[:200]

    def chunked(mb: int):  # no Content-Length: the cap is applied while the body streams in
        for _ in range(mb):
            yield b"\x00" * 2**20

    # the upload route carries models too (up to MAX_MODEL_BYTES): past that, 413 while streaming
    for route in ("gradio_api/upload", "api/v1/models"):
        r = httpx.post(f"{app_url}{route}", content=chunked(MAX_MODEL_BYTES // 2**20 + 2), timeout=60,
                       headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413, route
    r = httpx.post(f"{app_url}api/v1/predict/mnist_cnn", content=chunked(12), timeout=30,
                   headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    r = httpx.post(f"{app_url}gradio_api/call/feature_maps", content=b"[" * (2 * 2**20), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    after = {p for p in root.rglob("*") if p.is_file()}
    assert not {p for p in after - before if p.stat().st_size > 2**20}, "a refused body reached the disk"


def test_an_image_over_10_mb_is_refused_when_an_image_input_reads_it(app_url):
    """Gradio's upload route takes model-sized files; every image input still refuses over 10 MB."""
    path = upload(app_url, "big.png", SEVEN + b"\x00" * (11 * 2**20))
    for api, data in (("classify_image", [file_ref(path), "cifar_resnet", "default"]),
                      ("diagnose_xray", [file_ref(path), "xray_pneumonia", "default"])):
        r = httpx.post(f"{app_url}gradio_api/call/{api}", json={"data": data}, timeout=10)
        answer = httpx.get(f"{app_url}gradio_api/call/{api}/{r.json()['event_id']}", timeout=30).text
        assert "event: error" in answer and "larger than 10 MB" in answer, (api, answer[-300:])


def test_one_request_carries_at_most_so_many_files(app_url):
    """Gradio's upload route took 100 files of 10 MB in one request: it now takes at most the Teach
    tab's image cap (its multi-file inputs), and a one-image route at most a few."""
    from convscope.uploads import MAX_TEACH_FILES

    r = httpx.post(f"{app_url}gradio_api/upload",
                   files=[("files", (f"{i}.png", SEVEN)) for i in range(MAX_TEACH_FILES + 1)], timeout=60)
    assert r.status_code == 400 and f"at most {MAX_TEACH_FILES}" in r.text
    r = httpx.post(f"{app_url}api/v1/predict/mnist_lenet5", files=[("image", (f"{i}.png", SEVEN)) for i in range(5)],
                   timeout=30)
    assert r.status_code == 400 and "at most 4" in r.text
    assert httpx.post(f"{app_url}gradio_api/upload", files={"files": ("7.png", SEVEN)}, timeout=10).status_code == 200


def test_uploads_stop_when_the_folder_is_full(app_url, monkeypatch):
    monkeypatch.setenv("CONVSCOPE_UPLOAD_DISK_MB", "0.001")
    r = httpx.post(f"{app_url}gradio_api/upload", files={"files": ("7.png", SEVEN)}, timeout=10)
    assert r.status_code == 507 and "full" in r.text


def test_sweep_removes_old_files_partial_uploads_and_empty_folders_but_keeps_examples(tmp_path):
    from convscope.uploads import sweep

    old_upload = tmp_path / "abc" / "upload.png"
    old_upload.parent.mkdir()
    old_upload.write_bytes(b"x")
    partial = tmp_path / "tmpq1w2e3"  # an aborted upload's temporary file
    partial.write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    example = tmp_path / "ex" / "photo.jpg"
    example.parent.mkdir()
    example.write_bytes(b"x")
    assert sweep(tmp_path, age=50) == 0  # all fresh: nothing goes
    assert old_upload.exists() and partial.exists() and empty.exists()
    assert sweep(tmp_path, age=50, keep=[str(example)], now=time.time() + 100) == 2
    assert not old_upload.exists() and not partial.exists() and not empty.exists() and not old_upload.parent.exists()
    assert example.exists()


def test_uploads_are_deleted_within_the_documented_window(tmp_path):
    """An upload lives at most CONVSCOPE_CACHE_SECONDS * 1.25 (here 2 s -> 2.5 s), and the app's
    upload folder is private."""
    with running_app(CONVSCOPE_CACHE_SECONDS="2", GRADIO_TEMP_DIR=str(tmp_path / "uploads")) as (_, url):
        path = Path(upload(url, "secret_digit.png", SEVEN))
        t0 = time.monotonic()
        assert path.exists()
        while path.exists() and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert not path.exists() and time.monotonic() - t0 < 2.5 + 0.5, "the upload outlived its window"
        assert stat.S_IMODE((tmp_path / "uploads").stat().st_mode) == 0o700


def test_calls_with_too_few_inputs_are_refused_without_logging_them(app_url, capfd):
    path = upload(app_url, "private.png", SEVEN)
    r = httpx.post(f"{app_url}gradio_api/call/feature_maps", json={"data": [file_ref(path)]}, timeout=10)
    assert r.status_code == 422 and "2 inputs" in r.text
    b64 = "iVBORw0KGgo" + "A" * 1000
    r = httpx.post(f"{app_url}gradio_api/call/feature_maps", json={"data": [f"data:image/png;base64,{b64}"]},
                   timeout=10)
    assert r.status_code == 422
    time.sleep(0.5)
    out, err = capfd.readouterr()
    assert "iVBORw0KGgo" not in out + err and "private" not in out + err


# --- 5. Hardening --------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [{"data": [1], "fn_index": 99999, "session_hash": "x"}])
def test_unknown_endpoints_get_404_not_500(app_url, body):
    assert httpx.post(f"{app_url}gradio_api/call/no_such_endpoint", json={"data": []}, timeout=10).status_code == 404
    assert httpx.post(f"{app_url}gradio_api/queue/join", json=body, timeout=10).status_code == 404
    assert httpx.post(f"{app_url}gradio_api/run/no_such_endpoint", json={"data": []}, timeout=10).status_code == 404


def test_security_headers_on_every_answer(app_url):
    for path in ("", "config", "api/v1/models", "api/v1/docs", "gradio_api/info", "no/such/page"):
        r = httpx.get(f"{app_url}{path}", timeout=10)
        assert "frame-ancestors 'self'" in r.headers["content-security-policy"], path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "SAMEORIGIN"


def test_config_and_errors_name_no_server_path(app_url):
    config = httpx.get(f"{app_url}config", timeout=10).text
    for secret in (str(REPO), os.getcwd(), str(Path.home())):
        assert secret not in config
    # the only absolute paths are Gradio file references into the private upload folder
    root = str(Path(os.environ["GRADIO_TEMP_DIR"]).resolve())
    assert config.count('"path":"/') == config.count(f'"path":"{root}')
    r = httpx.post(f"{app_url}api/v1/predict/mnist_cnn", files={"image": ("x.png", b"not an image")}, timeout=10)
    assert r.status_code == 415 and "/" not in r.json()["detail"].replace("PNG, JPEG", "")


def test_slow_request_bodies_time_out():
    import asyncio

    from convscope.guard import Guard, Limits

    async def app(scope, receive, send):  # pragma: no cover - never reached
        raise AssertionError

    async def slow_receive():
        await asyncio.sleep(10)

    sent = []

    async def send(message):
        sent.append(message)

    guard = Guard(app, limits=Limits(chunk_timeout=0.05, hosts=["*"]))
    scope = {"type": "http", "method": "POST", "path": "/api/v1/predict/mnist_cnn", "headers": []}
    asyncio.run(guard(scope, slow_receive, send))
    assert sent[0]["status"] == 408


# --- 4. Outbound connections --------------------------------------------------------------------

def test_onnxruntime_telemetry_is_off_before_onnxruntime_loads():
    code = "import convscope.runtime, os, sys; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1", out.stderr[-2000:]


def test_slow_request_headers_are_cut_off(app_url, monkeypatch):
    import socket

    monkeypatch.setenv("CONVSCOPE_HEADER_TIMEOUT", "0.5")
    port = int(app_url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /api/v1/models HTTP/1.1\r\nHost: localhost\r\n")  # and never the blank line
        t = time.perf_counter()
        assert s.recv(100) == b""  # closed by the server
        assert time.perf_counter() - t < 3


def test_the_disk_quota_counts_admitted_bytes_between_measurements(tmp_path, monkeypatch):
    from convscope.uploads import DiskQuota

    monkeypatch.setenv("CONVSCOPE_UPLOAD_DISK_MB", "1")
    (tmp_path / "old.bin").write_bytes(b"\x00" * 600_000)
    quota = DiskQuota(tmp_path, every=3600)  # measured once, at the first call
    assert quota.admit(300_000)  # 0.6 + 0.3 MB
    assert not quota.admit(200_000)  # 0.6 + 0.3 + 0.2 > 1 MiB, though nothing new is on disk yet
    assert quota.admit(100_000)
