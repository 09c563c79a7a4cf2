"""The ASGI layer in front of everything the server answers (REST, Gradio's UI and API).

What it enforces, before any route sees a request (docs/security.md lists each with its test):

- **Trusted hosts.** The ``Host`` header must name this server (DNS rebinding: a web page on
  another origin that resolves its name to 127.0.0.1 would otherwise reach the API).
- **A body cap, while the body streams in**, and read timeouts: a request body larger than
  ``max_body`` is answered 413 as soon as it is known (from Content-Length, or when the stream
  passes the cap), before anything is written to disk.
- **Client-named files.** Every file object (``{"path": ...}``) in a JSON call of Gradio's API
  must be an upload of this server (convscope.uploads.check_upload): a path to a server file, a
  device, a FIFO or a URL is refused (403) with a message that names no path. Gradio's own check
  is skipped when it is mounted on FastAPI, and its messages name the resolved path.
- **Calls Gradio would choke on**: an unknown endpoint or too few inputs get a 4xx here, where
  Gradio would answer 500 and log the request's inputs (image data included).
- **Uploads**: a temp-disk cap for the upload folder, and uploaded file names replaced by a
  neutral name that keeps the extension (names such as ``patient_name_7.png`` never reach disk).
- **Security headers** on every answer: frame-ancestors, nosniff, no referrer.

Imports no Gradio: the checks that need the Blocks come in as ``validate_call``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convscope.uploads import (
    MAX_MODEL_BYTES,
    MAX_TEACH_BYTES,
    MAX_TEACH_FILES,
    MAX_UPLOAD_BYTES,
    DiskQuota,
    NotAnUpload,
    check_upload,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
CallCheck = Callable[[str, dict], "tuple[int, str] | None"]  # (path, JSON body) -> (status, reason) or None

MULTIPART_SLACK = 64 * 1024  # part headers and boundaries around one capped file
JSON_MAX_BYTES = 1 * 2**20  # Gradio API calls carry file references, never file bytes
MAX_FILES_PER_REQUEST = 4  # an image editor sends its background, its layer and the composite (and a margin)
TEACH_ROUTE = "/api/v1/teach"
# routes that take many files at once: Gradio's upload route (the Teach tab's multi-file inputs)
# and REST teaching, each at most MAX_TEACH_FILES; every other route MAX_FILES_PER_REQUEST
MANY_FILES_ROUTES = ("/gradio_api/upload", TEACH_ROUTE)
GRADIO_API = "/gradio_api/"


def allowed_hosts() -> list[str]:
    """Host names the server answers to: loopback, the Hugging Face Space's own host (SPACE_HOST),
    the host it is bound to when that is a name or a specific address, and CONVSCOPE_ALLOWED_HOSTS
    (comma-separated; ``*`` turns the check off, e.g. behind a proxy that checks hosts itself)."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    for var in ("SPACE_HOST", "GRADIO_SERVER_NAME"):
        value = os.environ.get(var, "").strip().lower()
        if value and value not in ("0.0.0.0", "::"):
            hosts.append(value)
    hosts += [h.strip().lower() for h in os.environ.get("CONVSCOPE_ALLOWED_HOSTS", "").split(",") if h.strip()]
    return hosts


def host_name(header: str) -> str:
    """The host part of a Host header: ``[::1]:7860`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def security_headers() -> list[tuple[bytes, bytes]]:
    """Headers every answer carries. Framing: this origin only, plus huggingface.co on a Space
    (the Space page shows the app in an iframe); CONVSCOPE_FRAME_ANCESTORS overrides."""
    ancestors = os.environ.get("CONVSCOPE_FRAME_ANCESTORS") or (
        "'self' https://huggingface.co" if os.environ.get("SPACE_ID") else "'self'")
    csp = f"frame-ancestors {ancestors}; object-src 'none'; base-uri 'self'"
    headers = [(b"content-security-policy", csp.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"no-referrer")]
    if ancestors == "'self'":
        headers.append((b"x-frame-options", b"SAMEORIGIN"))
    return headers


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def file_paths(obj: Any) -> list[Any]:
    """Every ``path`` of a file object (a dict with a "path" key) anywhere in a JSON value."""
    out, stack = [], [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            if "path" in o:
                out.append(o["path"])
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    return out


_FILENAME = re.compile(rb'(filename\*?=)("[^"\r\n]*"|[^;\r\n]*)', re.IGNORECASE)
_SAFE_EXT = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def neutral_name(original: bytes) -> bytes:
    """``"patient_name_7.png"`` -> ``"upload.png"``: the extension is kept (Gradio checks file
    types by it), the name is not."""
    name = original.strip(b'"').decode("utf-8", "replace")
    ext = os.path.splitext(name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])[1]
    return f'"upload{ext.lower() if _SAFE_EXT.match(ext) else ""}"'.encode()


def rename_parts(body: bytes, content_type: str, max_files: int = MAX_FILES_PER_REQUEST) -> bytes:
    """A multipart body with every part's file name replaced by :func:`neutral_name`; only the
    part headers are touched, never the file bytes. Refuses (400) more than ``max_files`` files in
    one request."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return body
    delimiter = b"--" + m.group(1).encode("latin-1")
    parts = body.split(delimiter)
    files = 0
    for i, part in enumerate(parts):
        head, sep, rest = part.partition(b"\r\n\r\n")
        if sep:
            files += bool(_FILENAME.search(head))
            parts[i] = _FILENAME.sub(lambda g: g.group(1) + neutral_name(g.group(2)), head) + sep + rest
    if files > max_files:
        raise Refused(400, f"{files} files in one request: at most {max_files} here.")
    return delimiter.join(parts)


# Routes that take a model file (an uploaded ONNX classifier), so larger bodies: Gradio's upload
# route carries the UI's model uploads too; image inputs still refuse files over MAX_UPLOAD_BYTES
# when they are used (convscope.tabs.common.check_files, convscope.answers.read_upload).
MODEL_ROUTES = ("/api/v1/models", "/gradio_api/upload")


def is_json_call(scope: Scope, content_type: str) -> bool:
    """A POST to Gradio's API with a JSON body (multipart ones carry files: uploads, and the image
    editor's blobs sent to ``component_server``)."""
    return scope["method"] == "POST" and scope["path"].startswith(GRADIO_API) \
        and not content_type.lower().startswith("multipart/")


@dataclass
class Limits:
    max_body: int = MAX_UPLOAD_BYTES + MULTIPART_SLACK
    max_model_body: int = MAX_MODEL_BYTES + MULTIPART_SLACK
    max_teach_body: int = MAX_TEACH_BYTES + MULTIPART_SLACK
    chunk_timeout: float = 20.0  # s between two pieces of a request body
    body_timeout: float = 120.0  # s for a whole body: 10 MB at about 0.7 Mbit/s
    hosts: list[str] = field(default_factory=allowed_hosts)


class Guard:
    """ASGI middleware around the whole server (see the module docstring)."""

    def __init__(self, app: Any, upload_root: Path | None = None, validate_call: CallCheck | None = None,
                 limits: Limits | None = None) -> None:
        self.app, self.upload_root, self.validate_call = app, upload_root, validate_call
        self.quota = DiskQuota(upload_root) if upload_root is not None else None
        self.limits = limits or Limits()
        self.headers = security_headers()

    def host_ok(self, headers: dict[bytes, bytes]) -> bool:
        return "*" in self.limits.hosts or \
            host_name(headers.get(b"host", b"").decode("latin-1")) in self.limits.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])  # read once: every check below looks at them
        if scope["type"] == "websocket":
            if not self.host_ok(headers):
                return await send({"type": "websocket.close", "code": 1008})
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        try:
            if not self.host_ok(headers):
                raise Refused(400, "Invalid host header: this server does not answer to that name "
                                   "(set CONVSCOPE_ALLOWED_HOSTS to add one).")
            content_type = headers.get(b"content-type", b"").decode("latin-1")  # (its boundary is case-sensitive)
            json_call = is_json_call(scope, content_type)
            body = await self.read_body(scope, headers.get(b"content-length"), json_call, receive)
            body = self.check(scope, content_type, json_call, body)
        except Refused as r:
            return await self.refuse(send_with_headers, r)

        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body, only the disconnect is left to wait for

        await self.app(scope, replay, send_with_headers)

    async def read_body(self, scope: Scope, length: bytes | None, json_call: bool, receive: Receive) -> bytes:
        """The whole request body, refused (413) as soon as it is known to pass the cap, and (408)
        when the client is too slow to send it."""
        path = scope["path"].rstrip("/")
        cap = (JSON_MAX_BYTES if json_call else self.limits.max_model_body if path in MODEL_ROUTES
               else self.limits.max_teach_body if path == TEACH_ROUTE else self.limits.max_body)
        if length is not None and (not length.isdigit() or int(length) > cap):
            raise Refused(413, f"The request is larger than {cap // 2**20 or 1} MB.")
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout
        while True:
            timeout = min(self.limits.chunk_timeout, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(timeout, 0.001))
            except asyncio.TimeoutError:
                raise Refused(408, "The request body arrived too slowly.") from None
            if message["type"] == "http.disconnect":
                raise Refused(400, "The client went away before the request was complete.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise Refused(413, f"The request is larger than {cap // 2**20 or 1} MB.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def check(self, scope: Scope, content_type: str, json_call: bool, body: bytes) -> bytes:
        """Refuse what must not reach the app; returns the body to pass on (uploads renamed)."""
        if scope["method"] != "POST":
            return body
        if content_type.lower().startswith("multipart/"):  # files, for uploads or blobs: to disk next
            if self.quota is not None and not self.quota.admit(len(body)):
                raise Refused(507, "The server's upload space is full: try again in a few minutes.")
            many = scope["path"].rstrip("/") in MANY_FILES_ROUTES
            return rename_parts(body, content_type, MAX_TEACH_FILES if many else MAX_FILES_PER_REQUEST)
        if json_call and body:
            try:
                payload = json.loads(body)
            except ValueError:
                raise Refused(400, "The request body is not valid JSON.") from None
            for path in file_paths(payload):
                try:  # (the size cap of an image input, 10 MB, is applied where the image is read)
                    check_upload(path, self.upload_root, max_bytes=MAX_MODEL_BYTES)
                except NotAnUpload as e:
                    raise Refused(403, str(e)) from None
            problem = (self.validate_call(scope["path"][len(GRADIO_API) - 1:], payload)
                       if self.validate_call is not None and isinstance(payload, dict) else None)
            if problem:
                raise Refused(*problem)
        return body

    @staticmethod
    async def refuse(send: Send, r: Refused) -> None:
        body = json.dumps({"detail": r.reason}).encode()
        await send({"type": "http.response.start", "status": r.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
