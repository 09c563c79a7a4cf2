"""CLI: ``python -m export <recipe | checkpoint.pt> [--data-dir DIR] [--models-dir models]``.

Turns a checkpoint into ``models/<name>.onnx`` (one file, uint8 NHWC input, dynamic batch) and
its card ``models/<name>.json``, after onnx.checker, torch-vs-onnxruntime parity on random and
real inputs, and the test-set metrics measured by running the ONNX file in onnxruntime.

A recipe name exports ``runs/<recipe>/last.pt`` if a run exists, else the shipped weights in
``checkpoints/<recipe>.pt`` (so an export-code change never needs retraining). Exporting a new
run also writes its weights-only checkpoint to ``checkpoints/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from convscope.cards import METADATA_KEY, ModelCard, sha256_file
from convscope.metrics import classification_metrics, predict_probs, roc_auc
from convscope.runtime import make_session
from export import clinical, gate
from export.fit_analysis import fit_analysis
from export.onnx_export import check_parity, count_flops, describe_outputs, export_onnx, latency_ms
from export.published import REFERENCES, export_imagenet_lite0, export_imagenet_stem
from export.quantize import calibration_count, quantize_int8, ships
from export.wrap import ExportWrapper
from train import folder, nets, plots
from train.datasets import (
    INPUT_SPECS,
    LOADERS,
    PREDEFINED_VAL,
    SMOKE_SIZES,
    load_covid_collection,
    load_split,
    split_train_val,
    synthetic_split,
)
from train.loop import evaluate
from train.recipes import RECIPES, saved_config

REPO = Path(__file__).resolve().parent.parent
# what checkpoints/<name>.pt keeps of a run's checkpoint: everything the card is built from, so that
# `python -m export <name>` re-exports the shipped model with the same card (refit included)
WEIGHT_KEYS = ("arch", "arch_kwargs", "recipe", "dataset", "state_dict", "config", "history", "epoch",
               "train_time_s", "machine", "val_confusion", "refit")


def weights_only(ckpt: dict, net: torch.nn.Module) -> dict:
    """The checkpoint to keep beside a shipped model: ``net``'s weights as exported, plus WEIGHT_KEYS."""
    return {k: ckpt[k] for k in WEIGHT_KEYS if k in ckpt} | {"state_dict": net.state_dict()}


def resolve_checkpoint(target: str) -> Path:
    """A recipe's newest run, else its shipped checkpoint; or a .pt path as given."""
    if target.endswith(".pt"):
        return Path(target)
    if target not in RECIPES and not any((REPO / "runs" / target / f).exists() for f in ("best.pt", "last.pt")):
        raise SystemExit(f"unknown recipe {target!r}; known: {sorted(RECIPES)} (or a run of python -m train "
                         "folder, or a .pt file)")
    # best.pt: the epoch a recipe with keep_best chose on validation (early stopping)
    for p in (REPO / "runs" / target / "best.pt", REPO / "runs" / target / "last.pt",
              REPO / "checkpoints" / f"{target}.pt"):
        if p.exists():
            return p
    raise SystemExit(f"no checkpoint for {target}: train it first (python -m train {target})")


def refit_words(refit: dict | None) -> str:
    if not refit:
        return ""
    return "; then refit (see refit)" if refit.get("kept", True) else "; a refit was tried and not kept (see refit)"


def build_card(recipe, ckpt: dict, net, wrapper: ExportWrapper, onnx_path: Path, metrics: dict,
               parity: dict, latency: dict, opset: int, artifacts: dict, variants: dict,
               cal: dict | None = None) -> ModelCard:
    spec = INPUT_SPECS[recipe.dataset]
    c, h, w = wrapper.input_chw()
    outputs, layers = describe_outputs(wrapper, onnx_path)
    hist = ckpt.get("history", [])
    cal = cal or {"reject_below": recipe.reject_below,
           "rule": "top-1 probability below reject_below -> the app says the input does not look "
                   "like one of the classes instead of naming one",
           "operating_point": {k: metrics[k] for k in ("coverage_at_threshold", "accuracy_when_kept")},
           "temperature": None}
    return ModelCard(
        name=recipe.name, title=recipe.title, tab=recipe.tab, file=onnx_path.name,
        description=recipe.description,
        input={"name": "image", "dtype": "uint8", "layout": "NHWC", "shape": [None, h, w, c],
               "range": [0, 255], "color": spec["color"], "preprocess": spec["preprocess"],
               "preprocess_note": spec["note"]},
        outputs=outputs, labels=list(metrics.pop("labels")), metrics=metrics, calibration=cal,
        params=nets.count_params(net), flops=count_flops(net, (c, h, w)),
        training={"recipe": recipe.name,
                  "declared": {"calibrate": recipe.calibrate, "served": recipe.served, "probes": list(recipe.probes),
                               "int8": recipe.int8, "reject_below": recipe.reject_below},
                  "arch": ckpt["arch"], "arch_kwargs": ckpt["arch_kwargs"],
                  "config": ckpt["config"], "epochs": ckpt.get("epoch"), "epochs_run": len(hist),
                  "selection": ("the epoch of lowest validation loss (best.pt)" if ckpt["config"].get("keep_best")
                                else "the last epoch") + refit_words(ckpt.get("refit")),
                  "refit": ckpt.get("refit"),
                  "train_time_s": run_time_s(ckpt),
                  "machine": ckpt.get("machine"),
                  "final_val_acc": hist[ckpt.get("epoch", len(hist)) - 1]["val_acc"] if hist else None,
                  "final_val_loss": hist[ckpt.get("epoch", len(hist)) - 1]["val_loss"] if hist else None,
                  "history": hist,
                  "fit_analysis": fit_analysis(hist),
                  "command": f"python -m train {recipe.name}"},
        versions={"torch": torch.__version__, "onnx": onnx.__version__,
                  "onnxruntime": onnxruntime.__version__, "opset": opset},
        data_sources=[spec["data_source"]], limitations=list(recipe.limitations),
        parity=parity, artifacts=artifacts | {"latency": latency}, layers=layers, variants=variants,
    )


def int8_variant(recipe, fp32_path: Path, out_path: Path, fp32_metrics: dict, test, calibration: np.ndarray,
                 threshold: float | None = None) -> dict:
    """Quantize, then measure the INT8 file exactly as the fp32 one (the same decision rule and,
    for binary X-ray models, the same threshold); ship it only within the bound."""
    info = {"label": "INT8"} | quantize_int8(fp32_path, out_path, calibration, recipe.int8_profile)
    model = info.pop("model")
    onnx.helper.set_model_props(model, {"convscope_variant_of": recipe.name, "precision": "int8"})
    onnx.save(model, out_path)
    probs = predict_probs(make_session(out_path, threads=2), test.x)
    m = classification_metrics(probs, test.y, test.labels, recipe.reject_below)
    if threshold is not None:
        pred = clinical.decisions(probs, threshold)
        m["accuracy"], m["errors"] = float((pred == test.y).mean()), int((pred != test.y).sum())
        m["roc_auc"] = roc_auc(probs[:, 1], test.y == 1)
    drop = 100 * (fp32_metrics["accuracy"] - m["accuracy"])
    shipped = ships(drop)
    return {**info, "accuracy": m["accuracy"], "errors": m["errors"], "per_class_accuracy": m["per_class_accuracy"],
            **({"roc_auc": m["roc_auc"], "threshold": threshold} if threshold is not None else {}),
            "accuracy_drop_pp": round(drop, 4), "latency": latency_ms(out_path, test.x), "shipped": shipped,
            "file": f"{recipe.name}.int8.onnx" if shipped else None,
            "sha256": sha256_file(out_path) if shipped else None,
            "measured_with": fp32_metrics["measured_with"]}


def quantization_images(recipe, data_dir: str | None, smoke: bool) -> np.ndarray:
    """calibration_count() random images of the recipe's training split (never validation or test)."""
    cfg = recipe.config
    full = (synthetic_split(recipe.dataset, SMOKE_SIZES.get(recipe.dataset, 256), seed=2) if smoke
            else load_split(recipe.dataset, "train", data_dir))
    predefined = smoke or recipe.dataset in PREDEFINED_VAL  # then "train" already excludes validation
    train, _ = split_train_val(full, 0 if predefined else cfg.val_size, cfg.seed)
    n = calibration_count(train.x.shape[1] * train.x.shape[2])
    pick = np.random.default_rng(cfg.seed).choice(len(train), min(n, len(train)), replace=False)
    return train.x[np.sort(pick)]


def single_view_variant(recipe, ckpt: dict, out_path: Path, fp32_metrics: dict, test) -> dict:
    """The same weights without the test-time augmentation in the main graph (``tta_level=0``): the
    photo alone, a fraction of the work, at the accuracy measured here. An opt-in for speed: it
    always ships, and the card and the tab say what it costs."""
    plain = nets.from_checkpoint(ckpt)
    plain.tta_level = 0
    wrapper = ExportWrapper(plain)
    model = export_onnx(wrapper, out_path)
    onnx.helper.set_model_props(model, {"convscope_variant_of": recipe.name, "variant": "single_view"})
    onnx.save(model, out_path)
    m = classification_metrics(predict_probs(make_session(out_path, threads=2), test.x), test.y, test.labels,
                               recipe.reject_below)
    c, h, w = wrapper.input_chw()
    return {"label": "FP32, one view (no TTA)", "tta_level": 0,
            "method": "the main file's weights on the photo alone, without its test-time-augmentation views",
            "accuracy": m["accuracy"], "errors": m["errors"], "per_class_accuracy": m["per_class_accuracy"],
            "accuracy_drop_pp": round(100 * (fp32_metrics["accuracy"] - m["accuracy"]), 4),
            "flops": count_flops(plain, (c, h, w)), "latency": latency_ms(out_path, test.x), "shipped": True,
            "file": out_path.name, "sha256": sha256_file(out_path), "measured_with": fp32_metrics["measured_with"]}


def xray_extras(recipe, sess, args, metrics: dict, history: list[dict], config: dict) -> dict:
    """What an X-ray card adds: the from-scratch baseline (transfer-learning gain) and, for the
    3-class model, the source-confound probe."""
    out = {}
    baseline = Path(args.models_dir) / "reference" / f"{recipe.name}_scratch.json"
    if baseline.exists() and not args.smoke:
        b = json.loads(baseline.read_text())
        base_cfg = saved_config(b["training"]["config"])
        out["transfer_learning"] = {
            "baseline": f"{b['name']}: {b['description']}", "baseline_file": f"reference/{baseline.name}",
            "from_scratch": {k: b["metrics"][k] for k in ("accuracy", "roc_auc")},
            "accuracy_gain_pp": round(100 * (metrics["accuracy"] - b["metrics"]["accuracy"]), 2),
            "roc_auc_gain": round(metrics["roc_auc"] - b["metrics"]["roc_auc"], 4),
            "epochs": {"pretrained": len(history), "from_scratch": len(b["training"]["history"])},
            # every hyperparameter in which the two runs differ, read from both configs, not described by hand
            "config_differences": {k: {"pretrained": v, "from_scratch": base_cfg.get(k)}
                                   for k, v in config.items() if k not in ("smoke",) and v != base_cfg.get(k)},
            # the fair comparison when the budgets differ: the same epoch of both runs, on validation
            "validation_by_epoch": [
                {"epoch": p["epoch"], "pretrained_val_acc": p["val_acc"], "from_scratch_val_acc": q["val_acc"],
                 "pretrained_val_loss": p["val_loss"], "from_scratch_val_loss": q["val_loss"]}
                for p, q in zip(history, b["training"]["history"], strict=False)]}
    for name in () if args.smoke else recipe.probes:  # (smoke runs have no real data to probe with)
        key, probe = PROBES[name]
        out[key] = probe(sess, args, metrics)
    return out


def covid_source_probe(sess: Any, args: argparse.Namespace, metrics: dict) -> dict:
    """The COVID-19 collection's own non-COVID films (never trained on): how many are called COVID-19."""
    probe = load_covid_collection("all", args.data_dir, covid=False)
    return clinical.confound_probe(predict_probs(sess, probe.x), metrics["labels"])


PROBES = {"covid_source": ("confound_probe", covid_source_probe)}  # a recipe's probe -> (card metrics key, run)


def test_split(recipe: Any, args: argparse.Namespace) -> Any:
    """What the card is measured on: the recipe's test split (a folder of your images: its
    validation images), or synthetic images for --smoke (a folder is its own smoke data)."""
    if args.smoke and LOADERS[recipe.dataset][1] is not None:
        return synthetic_split(recipe.dataset, SMOKE_SIZES.get(recipe.dataset, 200), seed=1)
    return load_split(recipe.dataset, INPUT_SPECS[recipe.dataset]["test_split"], data_dir=args.data_dir)


def run_time_s(ckpt: dict) -> float:
    """The whole run's training time: a kept early epoch (best.pt) carries the full history, and
    its own clock stopped at that epoch; the card reports what the run cost."""
    hist = ckpt.get("history") or [{}]
    return round(max(ckpt.get("train_time_s", 0.0), hist[-1].get("train_time_s", 0.0)), 1)


def write_baseline(recipe, ckpt: dict, metrics: dict, cal: dict | None, models_dir: Path) -> dict:
    """models/reference/<name>.json: a measured baseline (e.g. from-scratch training) for another card."""
    hist = ckpt.get("history", [])
    out = {"name": recipe.name, "title": recipe.title, "description": recipe.description,
           "metrics": {k: v for k, v in metrics.items() if k != "labels"}, "calibration": cal,
           "training": {"config": ckpt["config"], "epochs": ckpt.get("epoch"), "epochs_run": len(hist),
                        "train_time_s": run_time_s(ckpt), "history": hist,
                        "machine": ckpt.get("machine"), "command": f"python -m train {recipe.name}"},
           "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}}
    path = models_dir / "reference" / f"{recipe.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({"baseline": str(path), "accuracy": metrics["accuracy"], "roc_auc": metrics.get("roc_auc")}))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="recipe name or path to a checkpoint .pt")
    p.add_argument("--data-dir", default=None, help="folder laid out like ../shared/data")
    p.add_argument("--models-dir", default=str(REPO / "models"))
    p.add_argument("--checkpoints-dir", default=str(REPO / "checkpoints"))
    p.add_argument("--smoke", action="store_true", help="synthetic 'test set' (for tests of this script)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> ModelCard | dict:
    """Export one checkpoint (or a published reference) to models/: ONNX file, variants, card."""
    args = parse_args(argv)
    if args.target in REFERENCES:  # published weights, not a training run
        card = (export_imagenet_stem(args.data_dir, Path(args.models_dir), Path(args.checkpoints_dir))
                if args.target == "imagenet_stem" else export_imagenet_lite0(args.data_dir, Path(args.models_dir)))
        print(json.dumps({"model": card.file, "parity_max_abs_diff": card.parity["max_abs_diff"],
                          "params": card.params, "flops": card.flops}, indent=1))
        return card

    ckpt_path = resolve_checkpoint(args.target)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    recipe = folder.recipe_of(ckpt)  # a named recipe, or the one of a folder of your images
    net = nets.from_checkpoint(ckpt)
    wrapper = ExportWrapper(net)
    models_dir = Path(args.models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    test = test_split(recipe, args)
    calibrated = recipe.calibrate  # temperature (and threshold) fitted on validation
    val = temperature = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / f"{recipe.name}.onnx"
        if calibrated:  # fit T on the raw net's validation probabilities, then export with T inside the graph
            net.temperature.fill_(1.0)  # a shipped checkpoint carries its T: start from the raw net
            val = (synthetic_split(recipe.dataset, 48, seed=3) if args.smoke
                   else load_split(recipe.dataset, "val", data_dir=args.data_dir))
            # on torch's probabilities, as training's refit rule does, not on an uncalibrated ONNX file's:
            # they agree to ~1e-6 (the parity check below), and a 224 px net's ONNX export costs ~30 s
            temperature = evaluate(net, val)["temperature"]
            net.temperature.fill_(temperature)
            wrapper = ExportWrapper(net)
        model = export_onnx(wrapper, tmp_path)
        sess = make_session(tmp_path, threads=2)
        parity = check_parity(wrapper, sess, test.x[:16 if calibrated else 64])
        probs = predict_probs(sess, test.x)
        metrics, cal = measure(recipe, sess, args, ckpt, test, probs, (val, temperature) if calibrated else None)
        if not recipe.served:  # a baseline measured for another card
            return write_baseline(recipe, ckpt, metrics, cal, Path(args.models_dir))
        lat = latency_ms(tmp_path, test.x)
        variants = {}  # name -> card entry; each measured from its file in the temporary folder
        if recipe.int8:
            variants["int8"] = int8_variant(recipe, tmp_path, Path(tmp) / f"{recipe.name}.int8.onnx", metrics, test,
                                            quantization_images(recipe, args.data_dir, args.smoke),
                                            cal["threshold"] if cal else None)
        if getattr(net, "tta_level", 0):
            variants["single_view"] = single_view_variant(recipe, ckpt, Path(tmp) / f"{recipe.name}.single_view.onnx",
                                                          metrics, test)
        graph_bytes = model.graph.SerializeToString()

        stem = models_dir / recipe.name
        artifacts = write_figures(recipe, ckpt_path, stem, metrics, test, probs, cal)

        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        card = build_card(recipe, ckpt, net, wrapper, tmp_path, metrics, parity, lat, opset, artifacts, variants, cal)
        # Embed the card, then prove the shipped graph is the one just measured.
        onnx.helper.set_model_props(model, {METADATA_KEY: card.metadata_json()})
        onnx.save(model, f"{stem}.onnx")
        for name in ("int8", "single_view"):
            path = Path(f"{stem}.{name}.onnx")
            if variants.get(name, {}).get("shipped"):
                shutil.copy(Path(tmp) / path.name, path)
            else:
                path.unlink(missing_ok=True)  # never leave a stale variant the card does not vouch for
    shipped = onnx.load(f"{stem}.onnx")
    assert shipped.graph.SerializeToString() == graph_bytes, "shipped graph differs from the measured one"
    card.sha256 = sha256_file(f"{stem}.onnx")
    Path(f"{stem}.json").write_text(card.to_json())
    if not recipe.dataset.startswith(folder.PREFIX):  # (a folder of your images has no negatives defined)
        card = gate.gate_model(recipe.name, models_dir, args.data_dir, args.smoke)  # rewrites the files and card

    if not args.smoke and ckpt_path.name in ("last.pt", "best.pt"):  # keep the weights this model came from
        ckpt_dir = Path(args.checkpoints_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        # the weights as shipped: with the temperature fitted at export, so torch and ONNX agree
        torch.save(weights_only(ckpt, net), ckpt_dir / f"{recipe.name}.pt")
    print(json.dumps(summary(card, f"{stem}.onnx"), indent=1))
    return card


def summary(card: ModelCard, path: str) -> dict:
    """What export prints: the file and the figures its card states."""
    return {"model": path, "accuracy": card.metrics["accuracy"], "n": card.metrics["n"],
            "parity_max_abs_diff": card.parity["max_abs_diff"], "params": card.params, "flops": card.flops,
            "latency_ms_b1": round(card.artifacts["latency"]["median_ms"], 3),
            "variants": {k: {"accuracy": v["accuracy"], "shipped": v["shipped"],
                             "latency_ms_b1": round(v["latency"]["median_ms"], 3)}
                         for k, v in card.variants.items()}}


def measure(recipe: Any, sess: Any, args: argparse.Namespace, ckpt: dict, test: Any, probs: np.ndarray,
            calibration: tuple | None) -> tuple[dict, dict | None]:
    """The card's metrics of the exported file on the test split, and for calibrated (X-ray)
    recipes the calibration section: ``calibration`` is (validation split, temperature)."""
    synthetic = args.smoke and LOADERS[recipe.dataset][1] is not None
    split = "synthetic" if synthetic else INPUT_SPECS[recipe.dataset]["test_split"]
    metrics = {"dataset": recipe.dataset, "split": split,
               "measured_with": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"}
    if calibration is None:
        m = classification_metrics(probs, test.y, test.labels, recipe.reject_below)
        return metrics | m | {"labels": test.labels}, None
    val, temperature = calibration
    xm, cal = clinical.evaluate(predict_probs(sess, val.x), val.y, probs, test.y, test.labels, temperature)
    metrics |= xm | {"labels": test.labels}
    metrics |= xray_extras(recipe, sess, args, metrics, ckpt.get("history", []), ckpt.get("config", {}))
    return metrics, cal


def write_figures(recipe: Any, ckpt_path: Path, stem: Path, metrics: dict, test: Any, probs: np.ndarray,
                  cal: dict | None) -> dict:
    """The card's figures next to the model: training curves (from the run), the confusion matrix
    and, for calibrated models, the ROC, both measured on the ONNX file; returns their names."""
    run_dir = ckpt_path.parent if ckpt_path.name in ("last.pt", "best.pt") else None
    artifacts = {}
    if run_dir and (run_dir / "curves.png").exists():
        shutil.copy(run_dir / "curves.png", f"{stem}.curves.png")
        artifacts["curves"] = f"{recipe.name}.curves.png"
    elif Path(f"{stem}.curves.png").exists():
        artifacts["curves"] = f"{recipe.name}.curves.png"
    plots.plot_confusion(np.array(metrics["confusion"]), test.labels, Path(f"{stem}.confusion.png"),
                         f"{recipe.name}: {metrics['split']} set, ONNX Runtime"
                         + (f", threshold {cal['threshold']:.2f}" if cal and cal["threshold"] is not None else ""))
    artifacts["confusion"] = f"{recipe.name}.confusion.png"
    if cal:
        clinical.roc_figure(probs, test.y, test.labels, cal, Path(f"{stem}.roc.png"),
                            f"{recipe.name}: ROC, {metrics['split']} set (n={len(test.y)})")
        artifacts["roc"] = f"{recipe.name}.roc.png"
    return artifacts


if __name__ == "__main__":
    main()
