"""The process ``python app.py`` runs: the REST API answers first, the Gradio UI joins when built.

``import gradio`` alone takes seconds on a small machine (5 s on the 2-core CI box), longer
than loading every ONNX model. So the server starts with the REST API only (FastAPI, no
Gradio), imports Gradio and builds the Blocks on a thread while it already answers, then
switches every request to the full app (REST + UI, exactly what :func:`convscope.ui.serve`
builds, with Gradio's start-up events run on the server's own event loop). Until then, UI paths
get a 503 page that reloads itself; the REST routes never wait for Gradio.

Imports no Gradio at module level: that is the point.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

from convscope.rest import API

log = logging.getLogger("convscope")
STARTING_PAGE = (b"<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2>"
                 b"<title>ConvScope is starting</title><p>ConvScope is starting: this page reloads itself "
                 b"in a moment. The REST API already answers at <a href=/api/v1/docs>/api/v1</a>.</p>")
FAILED_PAGE = (b"<!doctype html><meta charset=utf-8><title>ConvScope</title><p>The web UI failed to start "
               b"(see the server log); the REST API answers at <a href=/api/v1/docs>/api/v1</a>.</p>")


class LateUI:
    """ASGI app: ``rest`` from the first request, the full app once :meth:`build_ui` is done.
    ``rest`` and ``registry`` are set before the server starts."""

    def __init__(self) -> None:
        self.rest: Any = None
        self.registry: Any = None
        self.guard: Any = None  # the convscope.guard.Guard in front of this app: told about the Blocks once built
        self.full: Any = None  # REST + Gradio, once built and started
        self.failed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = threading.Event()  # the server's lifespan started: self.loop is set
        self._contexts: list[AbstractAsyncContextManager] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if self.full is not None:
            return await self.full(scope, receive, send)
        if scope["type"] == "http" and (scope["path"] == API or scope["path"].startswith(API + "/")):
            return await self.rest(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1013})  # 1013: try again later
        # 503 (not 200) so health checks and clients polling "/" keep waiting for the real UI
        status, page = (500, FAILED_PAGE) if self.failed else (503, STARTING_PAGE)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"retry-after", b"2"),
                                (b"content-length", str(len(page)).encode())]})
        await send({"type": "http.response.body", "body": page})

    async def _enter(self, app: Any) -> None:
        """Run ``app``'s lifespan start-up here, on the server's loop (Gradio starts its queue
        in it), and keep it open until the server shuts down."""
        cm = app.router.lifespan_context(app)
        await cm.__aenter__()
        self._contexts.append(cm)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.loop = asyncio.get_running_loop()
                await self._enter(self.rest)
                self.started.set()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                for cm in reversed(self._contexts):
                    await cm.__aexit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _switch(self, full: Any) -> None:
        await self._enter(full)
        self.full = full

    def build_ui(self, t0: float) -> None:
        """Import Gradio, build the Blocks on the registry and switch to the full app (a thread,
        started before the models load: the imports overlap the ONNX sessions' start-up)."""
        try:
            from convscope.ui import build_app, call_checker, mount

            self.started.wait()
            # a new app with its own REST routes on the same registry: the live REST app is not
            # mutated from this thread while it serves; requests switch over in one assignment
            demo = build_app(registry=self.registry)
            full = mount(demo)
            if self.guard is not None:
                self.guard.validate_call = call_checker(demo)
            asyncio.run_coroutine_threadsafe(self._switch(full), self.loop).result()
            print(f"UI ready {time.perf_counter() - t0:.1f} s after start", flush=True)
        except Exception:  # the REST API keeps serving; the UI paths say what happened
            log.exception("building the Gradio UI failed")
            self.failed = True


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (M_ARENA_MAX). By default each thread that allocates under
    contention may get its own arena (up to 8 per core), and freed memory stays in them: a server
    whose worker threads decode images and run sessions concurrently then creeps up in resident
    memory for a long time before it plateaus. Two arenas bound that (the soak in bench.load
    measures it). Same effect as MALLOC_ARENA_MAX=2; a no-op off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, int(os.environ.get("MALLOC_ARENA_MAX", arenas))))  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def header_timeout_protocol() -> type | None:
    """uvicorn's httptools protocol with a deadline for a request's headers: a client that opens a
    connection (or starts a request) and then sends its headers slowly is disconnected after
    CONVSCOPE_HEADER_TIMEOUT seconds (default 10), so slow clients cannot hold every connection
    slot (uvicorn has keep-alive and body limits, none for headers). None without httptools."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a serving dependency
        return None

    class HeaderDeadline(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._deadline is None:
                seconds = float(os.environ.get("CONVSCOPE_HEADER_TIMEOUT", "10"))
                self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline


def server_limits() -> dict:
    """uvicorn's own limits: a deadline for request headers (header_timeout_protocol), idle
    keep-alive connections closed after 5 s, headers of at most 64 KB, and past
    CONVSCOPE_MAX_CONNECTIONS open connections new requests get a 503 instead of a slot."""
    limits: dict[str, Any] = {"timeout_keep_alive": 5, "h11_max_incomplete_event_size": 64 * 1024,
                              "limit_concurrency": int(os.environ.get("CONVSCOPE_MAX_CONNECTIONS", "200"))}
    if (protocol := header_timeout_protocol()) is not None:
        limits["http"] = protocol
    return limits


def launch() -> None:
    """Serve REST at once and the UI when built, on host and port from the environment (Hugging
    Face Spaces sets GRADIO_SERVER_NAME/PORT)."""
    t0 = time.perf_counter()
    limit_malloc_arenas()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
    import uvicorn

    from convscope.guard import Guard
    from convscope.rest import build_rest
    from convscope.runtime import load_registry
    from convscope.uploads import upload_root

    root = upload_root()  # before the UI thread starts: it must not make a second folder
    front = LateUI()
    front.guard = Guard(front, root)
    threading.Thread(target=front.build_ui, args=(t0,), daemon=True, name="build-ui").start()
    front.registry = load_registry()
    front.rest = build_rest(front.registry)
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    print(f"ConvScope on http://{host}:{port}/ (REST docs: /api/v1/docs)", flush=True)
    uvicorn.run(front.guard, host=host, port=port, log_level="warning", **server_limits())
