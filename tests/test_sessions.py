"""Gradio's per-session state is bounded: API calls without a session hash cannot grow the server
without limit (convscope.ui.session_capacity)."""

from __future__ import annotations

import httpx

from tests.conftest import free_port


def test_calls_without_a_session_hash_keep_at_most_capacity_sessions(monkeypatch):
    from convscope.ui import build_app, serve_in_background

    monkeypatch.setenv("CONVSCOPE_SESSIONS", "3")
    demo = build_app()
    port = free_port()
    server = serve_in_background(demo, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/gradio_api/", timeout=60) as http:
            for _ in range(8):  # each one a new session on the server
                r = http.post("call/echo", json={"data": [None]})
                r.raise_for_status()
                with http.stream("GET", f"call/echo/{r.json()['event_id']}") as events:
                    assert any(line.startswith("event: complete") for line in events.iter_lines())
        assert 1 <= len(demo.state_holder.session_data) <= 3
    finally:
        server.should_exit = True
