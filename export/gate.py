"""The in-distribution gate: an ``ood_score`` output in each classifier's ONNX graph, fitted on data.

    python -m export.gate mnist_lenet5 xray_pneumonia ...   # or --all; [--data-dir DIR]

What it computes, inside the graph: per-channel mean and standard deviation of every conv stage
the card lists (what the net's filters responded to, at each depth), z-scored by the training
images' statistics, then a small MLP (one hidden layer) trained to tell the model's own training
images from real negatives (export.negatives: drawings, letters, documents, noise, photos,
digits, X-rays, whichever the model was not trained on). Its logit is ``ood_score``: above the
card's ``ood.threshold`` the app names no class. The threshold is the validation images' score
quantile that keeps ``KEEP`` of them; the figures in the card are measured on images the gate
never saw: the test split, and negatives generated with another seed.

Why a trained head rather than a distance (Mahalanobis, k-NN) alone: measured on these models,
a per-feature distance withheld 1-7% of letters and scribbles for LeNet-5 (they excite the same
filters as digits), a head trained on negatives over 80% (``python -m bench.gate``).

The step rewrites the main file and its variants (the same gate on each one's own features) and
the card (``outputs``, ``ood``, sha256), and ``python -m export`` runs it after every export.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from convscope.cards import METADATA_KEY, ModelCard, sha256_file
from convscope.preprocess import PREPROCESSORS, InputError, mnist_digit
from convscope.runtime import make_session
from export import negatives
from train.datasets import (
    PREDEFINED_VAL,
    ArraySplit,
    load_covid_collection,
    load_mnist,
    load_nih_adult,
    load_split,
    nih_available,
    split_train_val,
    synthetic_split,
)
from train.recipes import RECIPES

REPO = Path(__file__).resolve().parent.parent
# of the validation images: the threshold keeps at least this share (the goal: 99%). The digit models
# keep 99.7%: at 99.5% mnist_cnn withheld the straight "1" the browser test draws (score 2.9 over 2.65)
# and LeNet-5 one of the ten canvas-drawn MNIST digits of tests/test_app_client.py (4.72 over 4.65)
KEEP = {"mnist": 0.997}
DEFAULT_KEEP = 0.995
# units of the gate's one hidden layer: 64 for the digit models, whose negatives (letters, scribbles)
# are the closest to their training images (64 withheld 86% of held-out letters where 32 withheld 72%,
# for the same 0.5% of MNIST test: measured on mnist_cnn's fitting and held-out sets)
HIDDEN = {"mnist": 64}
DEFAULT_HIDDEN = 32
FIT_SEED, HELD_OUT_SEED = 1, 2  # negatives: fitted on one seed, measured on another
OUTPUT = "ood_score"
FEATURES = "ood/features"
# per training set: (training images the head sees, negatives per family to fit, to measure)
SIZES = {"mnist": (4000, 400, 200), "cifar10": (4000, 400, 200), "xray2": (1500, 250, 120), "xray3": (1500, 250, 120)}
SMOKE_SIZES = (64, 8, 4)
BATCH = 32


def stage_names(card: ModelCard) -> list[str]:
    return card.output_names("feature_map")


def _const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def with_features(model: onnx.ModelProto, stages: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with one more output, FEATURES (N, 2 x channels): each stage's
    per-channel mean, then each stage's per-channel standard deviation."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    axes = _const(g, "ood/axes", np.array([2, 3], np.int64))
    means, stds = [], []
    for s in stages:
        mean, sq, m2, var, pos, std = (f"ood/{s}/{k}" for k in ("mean", "sq", "m2", "var", "pos", "std"))
        g.node.extend([
            helper.make_node("ReduceMean", [s, axes], [mean], keepdims=0),
            helper.make_node("Mul", [s, s], [sq]),
            helper.make_node("ReduceMean", [sq, axes], [m2], keepdims=0),
            helper.make_node("Mul", [mean, mean], [f"{mean}2"]),
            helper.make_node("Sub", [m2, f"{mean}2"], [var]),
            helper.make_node("Relu", [var], [pos]),  # rounding can leave a tiny negative variance
            helper.make_node("Sqrt", [pos], [std]),
        ])
        means.append(mean)
        stds.append(std)
    g.node.append(helper.make_node("Concat", means + stds, [FEATURES], axis=1))
    g.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [None, None]))
    return m


def with_gate(featured: onnx.ModelProto, layers: list[tuple[np.ndarray, np.ndarray]]) -> onnx.ModelProto:
    """``featured`` (from :func:`with_features`) with the head ``layers`` ([(W (in, out), b)], ReLU
    between) on FEATURES, whose last logit is the output OUTPUT (N,); FEATURES stops being an output."""
    m = onnx.ModelProto()
    m.CopyFrom(featured)
    g = m.graph
    kept = [o for o in g.output if o.name != FEATURES]
    del g.output[:]
    g.output.extend(kept)
    h = FEATURES
    for i, (w, b) in enumerate(layers):
        out = f"ood/layer{i}"
        g.node.append(helper.make_node("Gemm", [h, _const(g, f"{out}/W", w.astype(np.float32)),
                                                _const(g, f"{out}/b", b.astype(np.float32))], [out]))
        h = out
        if i < len(layers) - 1:
            g.node.append(helper.make_node("Relu", [h], [f"{out}/relu"]))
            h = f"{out}/relu"
    g.node.append(helper.make_node("Flatten", [h], ["ood/flat"], axis=1))
    g.node.append(helper.make_node("Squeeze", ["ood/flat", _const(g, "ood/one", np.array([1], np.int64))], [OUTPUT]))
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None]))
    onnx.checker.check_model(m)
    return m


def without_gate(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with any gate removed (so the step can run again on a gated file)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    nodes = [n for n in g.node if not any(o.startswith("ood/") or o == OUTPUT for o in n.output)]
    inits = [t for t in g.initializer if not t.name.startswith("ood/")]
    outs = [o for o in g.output if o.name not in (OUTPUT, FEATURES)]
    for field, keep in ((g.node, nodes), (g.initializer, inits), (g.output, outs)):
        kept = list(keep)
        del field[:]
        field.extend(kept)
    return m


def run(model: onnx.ModelProto, output: str, x: np.ndarray) -> np.ndarray:
    sess = make_session(model.SerializeToString(), threads=2)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run([output], {name: x[i:i + BATCH]})[0] for i in range(0, len(x), BATCH)])


def fit_head(pos: np.ndarray, neg: np.ndarray, hidden: int = DEFAULT_HIDDEN,
             seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """An MLP telling ``neg`` (label 1) from ``pos`` features, with the training images'
    z-scoring folded into its first layer; returns [(W, b)] for :func:`with_gate`."""
    from sklearn.neural_network import MLPClassifier

    mu, sd = pos.mean(0), pos.std(0) + 1e-6
    x = (np.concatenate([pos, neg]) - mu) / sd
    y = np.r_[np.zeros(len(pos)), np.ones(len(neg))]
    clf = MLPClassifier((hidden,), alpha=1e-2, max_iter=600, random_state=seed).fit(x, y)
    w0, b0 = clf.coefs_[0] / sd[:, None], clf.intercepts_[0] - (mu / sd) @ clf.coefs_[0]
    return [(w0, b0), *zip(clf.coefs_[1:], clf.intercepts_[1:], strict=True)]


def prepared(card: ModelCard, images: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Images through the card's preprocessing, as the app would; and how many it refused (e.g. a
    blank page: the Digits tab says "nothing was drawn" before any model runs)."""
    prep, xs = PREPROCESSORS[card.input["preprocess"]], []
    for a in images:
        try:
            x = prep(a)
        except InputError:
            continue
        xs.append(x[..., None] if x.ndim == 2 else x)
    shape = [d or 1 for d in card.input["shape"][1:]]
    return (np.stack(xs) if xs else np.zeros([0, *shape], np.uint8)), len(images) - len(xs)


def families(dataset: str, data_dir: str | None, smoke: bool) -> dict[str, negatives.Family]:
    """The negatives of a training set: every synthetic family, and the data sets it is not."""
    arrays = {}
    if not smoke:
        if dataset != "cifar10":
            arrays["photos"] = load_split("cifar10", "train", data_dir).x[:5000]
        if dataset != "mnist":
            arrays["digits"] = load_mnist("train", data_dir).x[:5000]
        if not dataset.startswith("xray"):
            arrays["xrays"] = load_split("xray2", "train", data_dir).x[:2000]
    # sharp photos of anything (CIFAR-10's are 32 px: blurry once enlarged); not for the CIFAR models,
    # whose gate is about the kind of picture, and a photo is the right kind
    sharp = {} if smoke or dataset == "cifar10" else {"sharp_photos": negatives.crops_of(negatives.skimage_photos())}
    return negatives.SYNTHETIC | negatives.data_families(arrays) | sharp


def positives(recipe: Any, data_dir: str | None, smoke: bool, n_train: int) -> dict[str, ArraySplit]:
    """The model's own images: a sample of training (to fit), validation (the threshold), test
    (measured); for the digit models also 2,000 of each drawn on the canvas (:func:`as_drawn`) and
    500 typed in a font (clean pen strokes), with ``test_drawn`` and ``test_typed`` measured apart;
    for X-ray models also the adult NIH films: those of the training patients join the
    images to fit, those of the test patients are measured and reported on their own."""
    ds, cfg = recipe.dataset, recipe.config
    if smoke:
        return {"train": synthetic_split(ds, n_train, seed=5), "val": synthetic_split(ds, 64, seed=6),
                "test": synthetic_split(ds, 64, seed=7)}
    full = load_split(ds, "train", data_dir)
    train, val = (full, load_split(ds, "val", data_dir)) if ds in PREDEFINED_VAL else \
        split_train_val(full, cfg.val_size, cfg.seed)
    pick = np.sort(np.random.default_rng(0).choice(len(train), min(n_train, len(train)), replace=False))
    out = {"train": ArraySplit(train.x[pick], train.y[pick], train.labels), "val": val,
           "test": load_split(ds, "test", data_dir)}
    if ds == "mnist":  # the app never feeds a raw MNIST digit: it feeds what mnist_digit makes of a drawing
        for i, k in enumerate(("train", "val", "test")):
            drawn = as_drawn(out[k].x[:2000])
            typed = np.stack([mnist_digit(a) for a in negatives.typed_digits(500, np.random.default_rng(i))])[..., None]
            if k == "test":
                out["test_drawn"] = ArraySplit(drawn, out[k].y[:2000], out[k].labels)
                out["test_typed"] = ArraySplit(typed, np.arange(500) % 10, out[k].labels)
            else:
                out[k] = ArraySplit(np.concatenate([out[k].x, drawn, typed]),
                                    np.concatenate([out[k].y, out[k].y[:2000], np.arange(500) % 10]), out[k].labels)
    if ds.startswith("xray") and nih_available(data_dir):
        # a chest film is a chest film: the gate also learns the adult films of the NIH training
        # patients as in-distribution (the model never saw them), and is measured on its test patients
        nih = load_nih_adult("train", data_dir)
        out["train"] = ArraySplit(np.concatenate([out["train"].x, nih.x]), np.concatenate([out["train"].y, nih.y]),
                                  train.labels)
        out["nih_adult_test_patients"] = load_nih_adult("test", data_dir)
    if ds == "xray3":
        out["covid_collection_non_covid"] = load_covid_collection("all", data_dir, covid=False)
    return out


def as_drawn(digits: np.ndarray, side: int = 280) -> np.ndarray:
    """MNIST digits as the Digits tab sees them when drawn: enlarged to the canvas (bilinear), dark
    ink on white, then through mnist_digit."""
    from PIL import Image

    from convscope.preprocess import mnist_digit

    big = [255 - np.asarray(Image.fromarray(d[..., 0]).resize((side, side), Image.Resampling.BILINEAR))
           for d in digits]
    return np.stack([mnist_digit(b) for b in big])[..., None] if big else digits[:0]


def example_files() -> dict[str, list[np.ndarray]]:
    """The repo's own example files, as a user would upload them: photos (never a chest film, a
    digit or, but for the cat, a CIFAR photo) and drawn digits."""
    from PIL import Image

    def read(paths: list[Path]) -> list[np.ndarray]:
        out = []
        for p in sorted(paths):
            with Image.open(p) as im:
                out.append(np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im))
        return out

    ex = REPO / "examples"
    return {"example_photos": read(list((ex / "photos").glob("*.jpg"))),
            "example_digits": read(list(ex.glob("digit_*.png")))}


def rate(scores: np.ndarray, threshold: float) -> dict:
    """Share of ``scores`` the gate withholds (above ``threshold``), with the count."""
    n, k = len(scores), int((scores > threshold).sum())
    return {"n": n, "withheld": k, "withheld_share": round(k / n, 4) if n else None}


def measure(gated: onnx.ModelProto, card: ModelCard, own: dict[str, ArraySplit],
            held_out: dict[str, list[np.ndarray]], threshold: float) -> dict:
    """What the gate withholds of each set of ``own`` images and of each negative family."""
    out = {"own": {k: rate(run(gated, OUTPUT, v.x), threshold) for k, v in own.items()}}
    fams = {}
    for name, imgs in held_out.items():
        x, refused = prepared(card, imgs)
        fams[name] = rate(run(gated, OUTPUT, x), threshold) | {"refused_by_preprocessing": refused}
    n = sum(f["n"] for f in fams.values())
    out["negatives"] = fams
    out["negatives_all"] = {"n": n, "withheld": sum(f["withheld"] for f in fams.values()),
                            "withheld_share": round(sum(f["withheld"] for f in fams.values()) / max(n, 1), 4)}
    return out


def cost_ms(plain: onnx.ModelProto, gated: onnx.ModelProto, x: np.ndarray, repeats: int = 60) -> dict:
    """Median time per image of the prediction graph with and without the gate, batch 1, one thread."""
    from convscope.onnx_wire import keep_outputs

    def median(model: onnx.ModelProto, outs: list[str]) -> float:
        sess = make_session(keep_outputs(model.SerializeToString(), outs), threads=1)
        feed = {sess.get_inputs()[0].name: x[:1]}
        for _ in range(5):
            sess.run(outs, feed)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            sess.run(outs, feed)
            times.append(time.perf_counter() - t)
        return float(np.median(times)) * 1e3

    base, with_gate_ms = median(plain, ["probs"]), median(gated, ["probs", OUTPUT])
    return {"model_ms": round(base, 3), "model_and_gate_ms": round(with_gate_ms, 3),
            "gate_ms": round(with_gate_ms - base, 3),
            "method": "median of 60 runs, batch 1, 1 thread, prediction graph"}


def head_scores(layers: list[tuple[np.ndarray, np.ndarray]], feats: np.ndarray) -> np.ndarray:
    """The head in numpy (the parity check of the graph's OUTPUT)."""
    h = feats.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h[:, 0]


def fit(card: ModelCard, base: onnx.ModelProto, own: dict[str, ArraySplit], fit_negs: dict[str, list[np.ndarray]],
        hidden: int = DEFAULT_HIDDEN) -> tuple[onnx.ModelProto, list, dict]:
    """Fit the head on ``own["train"]`` against ``fit_negs``; returns the gated graph, the head's
    layers and what it was fitted on."""
    featured = with_features(base, stage_names(card))
    neg = {k: prepared(card, v)[0] for k, v in fit_negs.items()}
    pos_f = run(featured, FEATURES, own["train"].x)
    neg_f = run(featured, FEATURES, np.concatenate([v for v in neg.values() if len(v)]))
    layers = fit_head(pos_f, neg_f, hidden)
    gated = with_gate(featured, layers)
    val = own["val"].x[:64]
    gap = float(np.abs(run(gated, OUTPUT, val) - head_scores(layers, run(featured, FEATURES, val))).max())
    assert gap < 1e-3, f"the graph's {OUTPUT} differs from the head by {gap}"
    info = {"own_training_images": len(pos_f), "negatives": {k: len(v) for k, v in neg.items()},
            "features": int(pos_f.shape[1]), "graph_vs_numpy_max_abs_diff": gap}
    return gated, layers, info


def gate_variant(path: Path, card: ModelCard, layers: list, own: dict[str, ArraySplit], threshold: float) -> dict:
    """Put the main file's gate on a variant's file (its own features) and measure it on the test images."""
    gated = with_gate(with_features(without_gate(onnx.load(path)), stage_names(card)), layers)
    onnx.save(gated, path)
    return {"test": rate(run(gated, OUTPUT, own["test"].x), threshold)}


def evaluation(card: ModelCard, gated: onnx.ModelProto, data_dir: str | None = None, smoke: bool = False) -> dict:
    """What the gated graph withholds of the sets its gate never saw (the card's figures; also
    ``python -m bench.gate`` on the shipped file): validation, test (and NIH adult films for the
    X-ray models), the negatives of HELD_OUT_SEED and the repo's example files."""
    recipe = RECIPES[card.training["recipe"]]
    _, _, n_held = SMOKE_SIZES if smoke else SIZES[recipe.dataset]
    own = positives(recipe, data_dir, smoke, 0)
    held = negatives.generate(families(recipe.dataset, data_dir, smoke), n_held, HELD_OUT_SEED)
    examples = {} if smoke else example_files()
    if card.tab != "cifar10" and not smoke:  # the cat photo is a CIFAR class
        held["example_photos"] = examples["example_photos"]
    if card.tab == "digits" and not smoke:
        own["example_digits"] = ArraySplit(prepared(card, examples["example_digits"])[0], np.zeros(3), card.labels)
    threshold = card.ood["threshold"]
    out = measure(gated, card, {k: v for k, v in own.items() if k != "train"}, held, threshold)
    return out | {"negative_seed": HELD_OUT_SEED}


def gate_model(name: str, models_dir: Path, data_dir: str | None = None, smoke: bool = False) -> ModelCard:
    """Fit, measure and install the gate of ``models_dir/<name>``: rewrites its files and card."""
    card = ModelCard.load(models_dir / f"{name}.json")
    recipe = RECIPES[card.training["recipe"]]
    n_train, n_fit, _ = SMOKE_SIZES if smoke else SIZES[recipe.dataset]
    own = positives(recipe, data_dir, smoke, n_train)
    t = time.perf_counter()
    base = without_gate(onnx.load(models_dir / card.file))
    fit_negs = negatives.generate(families(recipe.dataset, data_dir, smoke), n_fit, FIT_SEED)
    hidden = HIDDEN.get(recipe.dataset, DEFAULT_HIDDEN)
    gated, layers, fitted = fit(card, base, own, fit_negs, hidden)
    keep = KEEP.get(recipe.dataset, DEFAULT_KEEP)
    threshold = float(np.quantile(run(gated, OUTPUT, own["val"].x), keep, method="higher"))
    card.ood = {
        "output": OUTPUT, "threshold": round(threshold, 6), "keep_target": keep, "stages": stage_names(card),
        "hidden_units": hidden,
        "method": f"per-channel mean and std of {', '.join(stage_names(card))}, z-scored by the training images; "
                  f"an MLP ({hidden} ReLU units) trained to tell training images from the negatives; its logit "
                  f"above the threshold (the {keep:.1%} quantile of validation scores) withholds the answer",
        "fitted_on": fitted | {"negative_seed": FIT_SEED}, "fit_seconds": round(time.perf_counter() - t, 1)}
    card.ood |= {"measured_on_held_out": evaluation(card, gated, data_dir, smoke),
                 "cost": cost_ms(base, gated, own["test"].x), "command": f"python -m export.gate {name}"}
    for variant in card.shipped_variants():
        card.variants[variant]["ood"] = gate_variant(models_dir / card.variants[variant]["file"], card, layers,
                                                     own, card.ood["threshold"])
        card.variants[variant]["sha256"] = sha256_file(models_dir / card.variants[variant]["file"])
    card.outputs = [o for o in card.outputs if o["kind"] != "ood_score"] + [
        {"name": OUTPUT, "kind": "ood_score", "shape": [None]}]
    helper.set_model_props(gated, {METADATA_KEY: card.metadata_json()})
    onnx.save(gated, models_dir / card.file)
    card.sha256 = sha256_file(models_dir / card.file)
    (models_dir / f"{name}.json").write_text(card.to_json())
    return card


def summary(card: ModelCard) -> dict:
    """What the step prints: the shares withheld of each measured set."""
    m = card.ood["measured_on_held_out"]
    return {"model": card.name, "threshold": card.ood["threshold"],
            "own_withheld": {k: v["withheld_share"] for k, v in m["own"].items()},
            "negatives_withheld": {k: v["withheld_share"] for k, v in m["negatives"].items()},
            "negatives_all": m["negatives_all"]["withheld_share"], "gate_ms": card.ood["cost"]["gate_ms"]}


def main(argv: list[str] | None = None) -> list[ModelCard]:
    p = argparse.ArgumentParser(prog="python -m export.gate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="served classifiers (models/<name>.json)")
    p.add_argument("--all", action="store_true", help="every classifier in --models-dir")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--models-dir", default=str(REPO / "models"))
    p.add_argument("--smoke", action="store_true", help="synthetic positives and negatives (tests of this step)")
    args = p.parse_args(argv)
    models_dir = Path(args.models_dir)
    names = args.names if args.names and not args.all else [
        c.stem for c in sorted(models_dir.glob("*.json")) if ModelCard.load(c).output_names("probs")]
    cards = []
    for name in names:
        cards.append(gate_model(name, models_dir, args.data_dir, args.smoke))
        print(json.dumps(summary(cards[-1])), flush=True)
    return cards


if __name__ == "__main__":
    main()
