"""Regenerate the tables of README.md and docs/ from the model cards (never typed by hand).

    python scripts/update_readme.py          # rewrite the blocks between the markers
    python scripts/update_readme.py --check  # exit 1 if a page is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from convscope.cards import CLASSIFIER_TABS, ModelCard, find_cards  # noqa: E402

START, END = "<!-- results:start (scripts/update_readme.py) -->", "<!-- results:end -->"
XRAY_START, XRAY_END = "<!-- xray-results:start (scripts/update_readme.py) -->", "<!-- xray-results:end -->"
GATE_START, GATE_END = "<!-- gate:start (scripts/update_readme.py) -->", "<!-- gate:end -->"
CMP_START, CMP_END = "<!-- cifar-comparison:start (scripts/update_readme.py) -->", "<!-- cifar-comparison:end -->"


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def epochs(t: dict) -> str:
    """'12 epochs', or '3 epochs, kept epoch 1' for early-stopped runs."""
    run, kept = t.get("epochs_run") or t["epochs"], t["epochs"]
    return f"{run} epochs" + (f", kept epoch {kept}" if kept != run else "")


def table(models_dir: Path = REPO / "models") -> str:
    rows = ["| model | tab | test accuracy (ONNX Runtime) | params | FLOPs / image | ORT latency, batch 1 "
            "| training | curves |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    cards = [ModelCard.load(p) for p in find_cards(models_dir)]
    for c in (c for c in cards if c.tab in CLASSIFIER_TABS):
        m, t = c.metrics, c.training
        lat = c.artifacts.get("latency", {})
        machine = t.get("machine") or {}
        # cards exported since the CPU was recorded name it: two machines here differ about 2x
        lat_cpu = f" ({lat['cpu']})" if lat.get("cpu") else ""
        simd = f" ({machine['simd']})" if machine.get("simd") else ""
        one = c.variants.get("single_view")
        tta = f"; {one['accuracy']:.2%} without TTA" if one else ""
        rows.append(
            f"| `{c.name}` — {c.title} | {c.tab} | **{m['accuracy']:.2%}** ({m['dataset']} {m['split']}, "
            f"n={m['n']:,}{tta}) "
            f"| {c.params:,} | {human(c.flops)} | {lat.get('median_ms', float('nan')):.2f} ms{lat_cpu} "
            f"| {t['train_time_s'] / 60:.1f} min, {epochs(t)}, {machine.get('cores', '?')} CPU cores{simd} "
            f"| [png](models/{c.artifacts.get('curves', '')}) |")
    for c in (c for c in cards if c.tab not in CLASSIFIER_TABS):
        rows.append(f"| `{c.name}` — {c.title} | feature maps | — (feature extractor) "
                    f"| {c.params:,} | {human(c.flops)} | | published ImageNet weights, not trained here | |")
    return "\n".join(rows)


def comparison(models_dir: Path = REPO / "models") -> str:
    """The CIFAR-10 tab's comparison table, as Markdown."""
    from convscope.card_text import CLASSIC_ARCHS, COMPARISON_HEADERS, comparison_rows

    cards = [c for c in (ModelCard.load(p) for p in find_cards(models_dir)) if c.tab == "cifar10"]
    cards.sort(key=lambda c: (-c.metrics["accuracy"], c.name))  # the tab's order: best first
    rows = comparison_rows(cards, models_dir / CLASSIC_ARCHS)
    lines = ["| " + " | ".join(COMPARISON_HEADERS) + " |", "|---|---|---:|---:|---:|---:|---:|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def xray_table(models_dir: Path = REPO / "models") -> str:
    """The X-ray models' clinical figures (official test split, ONNX Runtime), from their cards."""
    from convscope.card_text import confound_sentence, transfer_sentence

    cards = [c for c in (ModelCard.load(p) for p in find_cards(models_dir)) if c.tab == "xray"]
    out = ["| model | test accuracy | ROC AUC | at the validation-chosen operating point | calibration "
           "(T fitted on validation) | INT8 | training (2-core CPU) |",
           "|---|---:|---:|---|---|---|---|"]
    notes = []
    for c in cards:
        m, cal, t = c.metrics, c.calibration, c.training
        if isinstance(m["roc_auc"], float):
            auc = f"{m['roc_auc']:.4f}"
            op = cal["operating_point"]["test"]
            point = (f"threshold {cal['threshold']:.3f}: sensitivity {_pct(op['sensitivity'])}, "
                     f"specificity {_pct(op['specificity'])}, PPV {_pct(op['ppv'])}")
        else:
            auc = ", ".join(f"{k} {v:.3f}" for k, v in m["roc_auc"].items())
            point = "argmax; sensitivity / PPV: " + ", ".join(
                f"{k} {_pct(v['sensitivity'])} / {_pct(v['ppv'])}" for k, v in m["per_class"].items())
        v = c.variants.get("int8")
        d = v["accuracy_drop_pp"]
        int8 = (f"{v['accuracy']:.2%} ({abs(d):.2f} points {'below' if d >= 0 else 'above'} fp32; the bound is "
                f"{v['max_drop_pp']} either way), "
                f"{'shipped' if v['shipped'] else 'not shipped'}, {v['latency']['median_ms']:.1f} ms vs "
                f"{c.artifacts['latency']['median_ms']:.1f} ms" if v else "—")
        ece = cal["test"]
        out.append(f"| `{c.name}` | **{m['accuracy']:.2%}** (n={m['n']}) | **{auc}** | {point} "
                   f"| T={cal['temperature']:.2f}, test ECE {ece['ece_before']:.3f} → {ece['ece_after']:.3f} "
                   f"| {int8} | {t['train_time_s'] / 60:.0f} min, epoch {t['epochs']} of {t.get('epochs_run')} |")
        notes += [f"- {x}" for x in (transfer_sentence(c), confound_sentence(c)) if x]
    return "\n".join(out + (["", *notes] if notes else []))


def gate_table(models_dir: Path = REPO / "models") -> str:
    """Each classifier's in-distribution gate (export.gate): what it withholds of the sets it never saw."""
    cards = [c for c in (ModelCard.load(p) for p in find_cards(models_dir)) if c.ood]
    fams = sorted({k for c in cards for k in c.ood["measured_on_held_out"]["negatives"]})
    out = ["| model | its validation / test images withheld | other own sets | held-out negatives withheld | "
           + " | ".join(fams) + " | gate cost |", "|---|---:|---|---:|" + "---:|" * len(fams) + "---:|"]
    for c in cards:
        m = c.ood["measured_on_held_out"]
        own = m["own"]
        other = "; ".join(f"{k}: {v['withheld']} of {v['n']} withheld" for k, v in own.items()
                          if k not in ("val", "test"))
        cells = [_pct(m["negatives"][f]["withheld_share"]) if f in m["negatives"] else "—" for f in fams]
        out.append(f"| `{c.name}` | {_pct(own['val']['withheld_share'])} / **{own['test']['withheld_share']:.2%}** "
                   f"(n={own['test']['n']:,}) | {other or '—'} | **{m['negatives_all']['withheld_share']:.1%}** "
                   f"(n={m['negatives_all']['n']:,}) | " + " | ".join(cells)
                   + f" | {c.ood['cost']['gate_ms']:.3f} ms |")
    return "\n".join(out)


BLOCKS = {  # page -> the generated blocks it holds
    "README.md": ((START, END, table),),
    "docs/cifar.md": ((CMP_START, CMP_END, comparison),),
    "docs/xray.md": ((XRAY_START, XRAY_END, xray_table),),
    "docs/gate.md": ((GATE_START, GATE_END, gate_table),),
}


def render(text: str, blocks: tuple = tuple(b for bs in BLOCKS.values() for b in bs)) -> str:
    for start, end, make in blocks:
        if start in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = f"{head}{start}\n{make()}\n{end}{tail}"
    return text


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    stale = []
    for page, blocks in BLOCKS.items():
        path = REPO / page
        old = path.read_text()
        new = render(old, blocks)
        if any(start not in old for start, _, _ in blocks):
            print(f"{page} lacks a generated block's marker")
            return 1
        if new != old:
            stale.append(page)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}: run python scripts/update_readme.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
