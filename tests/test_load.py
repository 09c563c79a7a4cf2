"""Short form of bench/load.py: concurrent users on every image endpoint, zero errors.
(Throughput and percentiles are the script's business; a timed assertion would be flaky.)"""

from bench.load import run_load


def test_concurrent_clients_get_no_errors(app_url):
    r = run_load(app_url, clients=8, seconds=12)
    assert r["errors"] == 0, r["error_examples"]
    assert all(e["n"] > 0 for e in r["endpoints"].values())
