"""Short form of bench/load.py: concurrent users on every image endpoint, zero errors.
(Throughput and percentiles are the script's business; a timed assertion would be flaky.)"""

from bench.load import run_load


def test_concurrent_clients_get_no_errors(app_url):
    r = run_load(app_url, clients=8, seconds=12)
    assert r["errors"] == 0, r["error_examples"]
    assert all(e["n"] > 0 for e in r["endpoints"].values())


def test_every_benchmark_call_is_answered(app_url, tmp_path):
    """bench.suite's round trips (every endpoint, its echo, the other CIFAR models) work as called."""
    from bench.load import make_calls

    calls, connect = make_calls(tmp_path, app_url)
    conn = {"gradio": connect["gradio"](), "rest": connect["rest"]()}
    for name, call in calls.items():
        call(conn["rest" if name.startswith("rest_") else "gradio"])  # raises on any HTTP error
