"""The in-distribution gate of every shipped classifier, measured again on its shipped file.

    python -m bench.gate [names...] [--data-dir ../shared/data]

For each model: the share of its own images the gate withholds (validation, test, and for the
X-ray models the adult NIH films, reported apart), of each held-out negative family (generated
with export.gate.HELD_OUT_SEED, which fitting never used) and of the repo's example files; the
gate's cost per image; and whether the figures equal the card's (they are the same computation).
Needs ../shared/data. Goals (issue 22): X-ray >= 99% of negatives withheld and <= 2% of test
films; digits >= 95% and <= 1%; CIFAR >= 95% and <= 3%; under 1 ms per image.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx

from convscope.cards import ModelCard
from convscope.runtime import MODELS_DIR
from export.gate import cost_ms, evaluation, without_gate

GOALS = {"xray": (0.99, 0.02), "digits": (0.95, 0.01), "cifar10": (0.95, 0.03)}  # negatives withheld, test withheld
# the negatives each goal is about (issue 22), every family when not named
GOAL_FAMILIES = {"digits": ("dots", "scribbles", "letters", "photos", "photos_sharpened", "sharp_photos"),
                 "cifar10": ("digits", "xrays", "noise")}


def goal_share(card: ModelCard, negatives: dict) -> float:
    """The share withheld of the negatives the card's goal is about."""
    fams = [v for k, v in negatives.items() if k in GOAL_FAMILIES.get(card.tab, negatives)]
    return sum(f["withheld"] for f in fams) / max(sum(f["n"] for f in fams), 1)


def row(card: ModelCard, measured: dict, cost: dict) -> str:
    own, neg = measured["own"], measured["negatives"]
    fams = " ".join(f"{k} {v['withheld_share']:.0%}" for k, v in neg.items())
    goal_neg, goal_test = GOALS[card.tab]
    share = goal_share(card, neg)
    met = share >= goal_neg and own["test"]["withheld_share"] <= goal_test
    extra = "".join(f" | {k} {v['withheld_share']:.2%}" for k, v in own.items() if k not in ("val", "test"))
    return (f"{card.name:16s} val {own['val']['withheld_share']:.2%} | test {own['test']['withheld_share']:.2%}"
            f"{extra} | negatives {measured['negatives_all']['withheld_share']:.2%} ({fams}) | "
            f"+{cost['gate_ms']:.3f} ms | goal negatives {share:.2%} | goals {'met' if met else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    cards = [ModelCard.load(p) for p in sorted(MODELS_DIR.glob("*.json"))]
    for card in cards:
        if not card.ood or (args.names and card.name not in args.names):
            continue
        gated = onnx.load(MODELS_DIR / card.file)
        measured = evaluation(card, gated, args.data_dir)
        cost = cost_ms(without_gate(gated), gated, random_input(card))
        print(row(card, measured, cost) + differences(measured, card.ood["measured_on_held_out"]), flush=True)


def differences(now: dict, card: dict) -> str:
    """Where the counts differ from the card's (an image whose score sits on the threshold can
    flip between ONNX Runtime sessions), or that they are the same."""
    diffs = [f"{k} {card[part][k]['withheld']}->{v['withheld']}" for part in ("own", "negatives")
             for k, v in now[part].items() if k in card[part] and v["withheld"] != card[part][k]["withheld"]]
    return " | same counts as the card" if not diffs else " | differs from the card: " + ", ".join(diffs)


def random_input(card: ModelCard) -> np.ndarray:
    shape = [d or 1 for d in card.input["shape"][1:]]
    return np.random.default_rng(0).integers(0, 256, [1, *shape], dtype=np.uint8)


if __name__ == "__main__":
    main()
