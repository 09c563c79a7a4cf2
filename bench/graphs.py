"""What the prediction graphs buy (convscope.onnx_wire): the server's resident memory with the
prediction sessions alone and with every whole graph as well; then, per shipped file, batch-1
latency of the whole graph against the prediction graph (``probs`` and ``cam``), fetching the
same outputs, interleaved, one thread.

    python -m bench.graphs [--runs 100]
"""

from __future__ import annotations

import argparse
import os
from functools import partial

import numpy as np

from bench.load import rss_mb
from bench.suite import timed
from convscope.runtime import MAIN_VARIANT, load_registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100, help="timed batch-1 runs per file and graph")
    args = ap.parse_args()
    reg = load_registry()
    pairs = []  # (file, prediction session, whole session, input feed)
    for m in reg.models.values():
        feed = {m.card.input["name"]: np.random.default_rng(0).integers(
            0, 256, (1, *m.card.input["shape"][1:]), dtype=np.uint8)}
        for variant in m.variant_names:
            prediction = m.session if variant == MAIN_VARIANT else m.variants[variant]
            prediction.run(None, feed)
            pairs.append((m.card.file if variant == MAIN_VARIANT else m.card.variants[variant]["file"],
                          prediction, m, variant, feed))
    lean_mb = rss_mb(os.getpid())
    rows = []
    for file, prediction, m, variant, feed in pairs:
        whole = m.session_for([o["name"] for o in m.card.outputs], variant)  # built here, as the tab would
        outs = [o.name for o in prediction.get_outputs()]
        whole.run(outs, feed)
        t = {"whole": [], "prediction": []}
        for _ in range(args.runs):
            for k, s in (("whole", whole), ("prediction", prediction)):  # interleaved: the same machine load
                t[k] += timed(partial(s.run, outs, feed), 1)
        w, p = np.median(t["whole"]), np.median(t["prediction"])
        rows.append(f"| `{file}` | {', '.join(outs)} | {w:.3f} ms | {p:.3f} ms | {w / p:.2f}× |")
    print("| file | outputs fetched | whole graph | prediction graph | ratio |\n|---|---|---:|---:|---:|",
          *rows, sep="\n")
    print(f"\nresident memory: {lean_mb:.0f} MB with the prediction sessions (one call each), "
          f"{rss_mb(os.getpid()):.0f} MB with every whole graph as well")


if __name__ == "__main__":
    main()
