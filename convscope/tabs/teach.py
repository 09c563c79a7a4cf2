"""Teach tab: name a few classes, add images to each (upload, webcam snapshot or one zip of
folders), train a classifier on the ImageNet backbone in seconds, try it live, download it, and
open it in the Feature maps tab.

Layout and wiring only: the learning is convscope.teach, the answers convscope.answers. The
images and the taught model live in this browser session's state (gone when it ends); nothing is
written to models/ unless the person running the server sets CONVSCOPE_SAVE_TAUGHT=1.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from convscope import teach
from convscope.answers import answer, answer_uploaded, read_upload
from convscope.preprocess import InputError
from convscope.runtime import MODELS_DIR, Registry, ServedModel
from convscope.tabs.common import SafeImage
from convscope.uploads import check_upload, upload_root
from convscope.user_models import API_MODELS

SHOWN = 3  # class slots shown at first
NAMES = ["thumbs up", "thumbs down", "nothing"]
INTRO = ("**Teach a CNN your own classes.** Name 2–10 classes, add a few images to each (upload several at "
         "once, snap them with the webcam, or load one zip with a folder per class), and press **Train**. "
         "An ImageNet-trained EfficientNet-Lite0 turns each image into 1280 numbers; a new last layer "
         "learns your classes from them in seconds. A fifth of each class's images is kept aside to check "
         "it. Your images and model stay in this browser session and are forgotten when you leave.")


def counts_text(files: list | None, snaps: list) -> str:
    n = len(files or []) + len(snaps)
    return f"**{n}** image{'s' if n != 1 else ''}"


def gather(names: list[str], files: list[list | None], snaps: dict, shown: int) -> list[tuple[str, Any]]:
    """The (class, image) pairs of the shown slots; TeachError for a class without images or images
    without a class."""
    items = []
    for i in range(shown):
        name = (names[i] or "").strip()
        paths, extra = files[i] or [], snaps.get(i, [])
        if not paths and not extra:
            if name:
                raise teach.TeachError(f"Class '{name}' has no images: add some, or clear its name.")
            continue
        if not name:
            raise teach.TeachError(f"Class {i + 1} has images but no name.")
        if len(paths) + len(extra) > teach.MAX_PER_CLASS:
            raise teach.TeachError(f"Class '{name}' has {len(paths) + len(extra)} images: at most "
                                   f"{teach.MAX_PER_CLASS} per class.")
        items += [(name, teach.squash(read_upload(p))) for p in paths] + [(name, x) for x in extra]
    return items


def curves_frame(curves: list[dict]) -> pd.DataFrame:
    rows = [{"iterations": c["iterations"], "value": c[part][metric], "curve": f"{part.replace('_', '-')} {metric}"}
            for c in curves for part in ("train", "held_out") for metric in ("accuracy", "loss")
            if c[part][metric] is not None]
    return pd.DataFrame(rows, columns=["iterations", "value", "curve"])


def confusion_frame(t: teach.Taught) -> pd.DataFrame:
    labels = t.card["labels"]
    return pd.DataFrame([[labels[i], *row] for i, row in enumerate(t.confusion.tolist())],
                        columns=["true \\ predicted", *labels])


def result_text(t: teach.Taught) -> str:
    c, held = t.card, t.card["held_out"]
    acc = (f"**{held['accuracy']:.0%} of the {held['n']} held-out images right**" if held["n"]
           else "No held-out images (every class had fewer than 3): nothing checked the model")
    warn = "".join(f"\n\n⚠️ {w}" for w in c["warnings"])
    s = c["seconds"]
    return (f"✅ **Trained** in {s['total']:.1f} s (features {s['features']:.1f} s, augmentation "
            f"{s['augmentation']:.1f} s, fit {s['fit']:.1f} s, export {s['export']:.1f} s). {acc}. "
            f"Images per class: {', '.join(f'{k} {v}' for k, v in c['images_per_class'].items())}.{warn}")


def save_files(t: teach.Taught) -> list[str]:
    """The model and its card as files to download: in a private folder of the upload area (the
    sweeper deletes it), and in models/taught/ too when CONVSCOPE_SAVE_TAUGHT=1."""
    folder = upload_root() / f"taught-{secrets.token_hex(8)}"
    folder.mkdir(mode=0o700)
    dirs = [folder] + ([MODELS_DIR / "taught"] if os.environ.get("CONVSCOPE_SAVE_TAUGHT") == "1" else [])
    for d in dirs:
        d.mkdir(exist_ok=True)
        (d / f"{t.card['name']}.onnx").write_bytes(t.data)
        (d / f"{t.card['name']}.json").write_text(json.dumps(t.card, indent=1))
    return [str(folder / f"{t.card['name']}.onnx"), str(folder / f"{t.card['name']}.json")]


def train_stream(registry: Registry, items_of: Any) -> Iterator[list]:
    """Train in a worker thread and yield [status, curves, confusion, wrong, downloads, taught] as
    progress comes in."""
    try:
        backbone = teach.backbone_of(registry)
        items = items_of()
    except InputError as e:
        yield [f"⚠️ {e}", None, None, None, None, None]
        return
    updates: queue.Queue = queue.Queue()
    done: dict = {}

    def work() -> None:
        try:
            done["taught"] = teach.teach(items, backbone, lambda stage, f, c: updates.put((stage, f, list(c))))
        except InputError as e:
            done["error"] = str(e)
        finally:
            updates.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (u := updates.get()) is not None:
        stage, fraction, curves = u
        yield [f"⏳ Training: {stage} ({fraction:.0%})", curves_frame(curves) if curves else None,
               None, None, None, None]
    if "error" in done:
        yield [f"⚠️ {done['error']}", None, None, None, None, None]
        return
    t = done["taught"]
    wrong = [(img, f"true {true}, said {said} ({p:.0%})") for img, true, said, p in t.wrong[:24]]
    yield [result_text(t), curves_frame(t.card["training"]["curves"]), confusion_frame(t), wrong, save_files(t), t]


def build(registry: Registry, own: gr.State, tabs: gr.Tabs, feature_tabs: gr.Tabs | None) -> None:
    """Render the tab inside the current ``gr.Tab`` context. ``own``: the session's Feature maps
    "your own model" state; ``tabs``/``feature_tabs``: to open the taught model there."""
    gr.Markdown(INTRO)
    if teach.BACKBONE not in registry.models:
        gr.Markdown(f"⚠️ The backbone `{teach.BACKBONE}` is not served here, so teaching is off: "
                    f"{registry.broken.get(teach.BACKBONE, 'its card is missing')}.", elem_classes=["cs-notice"])
        return
    snaps = gr.State({})  # slot -> webcam snapshots and zip images, squashed: this session's only
    shown = gr.State(SHOWN)
    names, files, counts, rows = [], [], [], []
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            for i in range(teach.MAX_CLASSES):
                with gr.Row(visible=i < SHOWN, equal_height=True) as row:
                    names.append(gr.Textbox(NAMES[i] if i < len(NAMES) else "", label=f"Class {i + 1}",
                                            elem_id=f"teach-name-{i}", scale=2, min_width=120))
                    files.append(gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                         label="Images", elem_id=f"teach-files-{i}", height=90, scale=3))
                    counts.append(gr.Markdown(counts_text(None, []), elem_id=f"teach-count-{i}", min_height=0))
                rows.append(row)
            add = gr.Button("+ Add a class", size="sm", elem_id="teach-add")
            zipped = gr.File(file_types=[".zip"], type="filepath", elem_id="teach-zip", height=90,
                             label=f"…or one zip with a folder per class (at most {teach.MAX_ZIP_BYTES // 2**20} MB)")
        with gr.Column(scale=2, min_width=260):
            cam = SafeImage(sources=["webcam", "upload", "clipboard"], type="numpy", label="Snapshot",
                            elem_id="teach-cam", height=220)
            target = gr.Dropdown([(f"Class {i + 1}", i) for i in range(SHOWN)], value=0, label="Add it to",
                                 elem_id="teach-target")
            snap = gr.Button("Add snapshot", elem_id="teach-snap")
    train = gr.Button("Train", variant="primary", elem_id="teach-train")
    status = gr.Markdown(elem_id="teach-status")
    with gr.Row(equal_height=False):
        curves = gr.LinePlot(x="iterations", y="value", color="curve", label="Training and held-out curves",
                             elem_id="teach-curves", height=260)
        confusion = gr.Dataframe(label="Held-out confusion matrix (rows: true class)", elem_id="teach-confusion",
                                 interactive=False)
    wrong = gr.Gallery(label="Held-out images it got wrong, most confident first", columns=6, height="auto",
                       elem_id="teach-wrong", format="png")
    taught = gr.State(None)  # this session's taught model (convscope.teach.Taught)
    with gr.Row(equal_height=False):
        with gr.Column():
            live = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Live from the webcam",
                            elem_id="teach-live", height=220)
            try_it = SafeImage(sources=["upload", "clipboard"], type="pil", label="…or try an image",
                               elem_id="teach-try", height=220)
        with gr.Column():
            said = gr.Label(num_top_classes=3, label="Your model says", elem_id="teach-label")
            download = gr.File(label="Download: the ONNX file and its card", elem_id="teach-download",
                               interactive=False)
            open_fm = gr.Button("Open it in Feature maps", elem_id="teach-open")
            trained = registry.for_tab("taught")  # python -m train folder DIR, then python -m export
            saved = gr.Dropdown([(m.card.title, m.name) for m in trained], value=None, visible=bool(trained),
                                label="…or try a model trained with `python -m train folder`", elem_id="teach-saved")
    _wire(registry, locals())


def _wire(registry: Registry, c: dict) -> None:
    """The tab's events (``c``: build's components)."""
    names, files, counts, rows, snaps, shown = c["names"], c["files"], c["counts"], c["rows"], c["snaps"], c["shown"]
    for i, f in enumerate(files):
        f.change(lambda paths, s, i=i: counts_text(paths, s.get(i, [])), [f, snaps], counts[i],
                 api_visibility="private")

    def more(n: int) -> list:
        n = min(n + 1, teach.MAX_CLASSES)
        return [n, *[gr.update(visible=i < n) for i in range(teach.MAX_CLASSES)],
                gr.update(choices=[(f"Class {i + 1}", i) for i in range(n)])]

    c["add"].click(more, shown, [shown, *rows, c["target"]], api_visibility="private")

    def add_snapshot(img: Any, slot: int, s: dict, *paths: list | None) -> list:
        if img is None:
            return [s, *[gr.update()] * len(counts)]
        try:
            x = teach.squash(img)
        except InputError as e:
            raise gr.Error(str(e)) from None
        s = {**s, slot: [*s.get(slot, []), x]}
        return [s, *[counts_text(paths[i], s.get(i, [])) for i in range(len(counts))]]

    c["snap"].click(add_snapshot, [c["cam"], c["target"], snaps, *files], [snaps, *counts], api_visibility="private")

    def load_zip(path: str | None, n: int) -> list:
        if not path:
            return [gr.update()] * (3 + 3 * len(names))
        try:
            items, notes = teach.read_zip(check_upload(path, max_bytes=teach.MAX_ZIP_BYTES).read_bytes())
            classes = teach.class_names([k for k, _ in items])
        except InputError as e:
            return [f"⚠️ {e}", {}, n, *[gr.update()] * (3 * len(names))]
        s = {i: [x for k, x in items if k == name] for i, name in enumerate(classes)}
        n = len(classes)
        return [" ".join([f"Loaded {len(items)} images in {n} classes from the zip.", *notes]), s, n,
                *[gr.update(value=classes[i] if i < n else "") for i in range(len(names))],
                *[gr.update(visible=i < n) for i in range(len(names))],
                *[counts_text(None, s.get(i, [])) for i in range(len(names))]]

    c["zipped"].change(load_zip, [c["zipped"], shown], [c["status"], snaps, shown, *names, *rows, *counts],
                       api_visibility="private")

    def run(n: int, s: dict, *values: Any) -> Iterator[list]:
        k = len(names)
        yield from train_stream(registry, lambda: gather(list(values[:k]), list(values[k:]), s, n))

    c["train"].click(run, [shown, snaps, *names, *files],
                     [c["status"], c["curves"], c["confusion"], c["wrong"], c["download"], c["taught"]],
                     api_visibility="private", concurrency_limit=1, concurrency_id="teach")

    def predict(t: teach.Taught | ServedModel | None, img: Any) -> dict | None:
        if t is None or img is None:
            return None
        try:
            return (answer(t, img) if isinstance(t, ServedModel) else answer_uploaded(t.model, img)).top(3)
        except InputError:
            return None

    c["try_it"].change(predict, [c["taught"], c["try_it"]], c["said"], api_visibility="private")
    c["live"].stream(predict, [c["taught"], c["live"]], c["said"], stream_every=0.5, api_visibility="private")
    c["saved"].change(lambda name: registry.models.get(name), c["saved"], c["taught"], api_visibility="private")

    def open_in_feature_maps(t: teach.Taught | ServedModel | None) -> list:
        """A model taught here goes to "Your own model"; one served from models/ is in "Inside a model"."""
        served = isinstance(t, ServedModel)
        sub = [gr.Tabs(selected="inside" if served else "own-model")] if c["feature_tabs"] is not None else []
        return [gr.update() if served or t is None else t.model, gr.Tabs(selected="features"), *sub]

    opened = [c["own"], c["tabs"], *([c["feature_tabs"]] if c["feature_tabs"] is not None else [])]
    c["open_fm"].click(open_in_feature_maps, c["taught"], opened, api_visibility="private")
    teach_api(registry)


def teach_api(registry: Registry) -> None:
    """Named endpoint ``teach``: image files and their class names (one line per image, same
    order) in; the taught model's id (for REST predict and ``feature_maps``, for an hour) and card out."""

    def teach_endpoint(images: list[str] | None, labels: str = "") -> dict:
        """Train a classifier on your images (transfer learning on ImageNet EfficientNet-Lite0, in
        seconds). ``labels``: the class of each image, one per line, in the order of ``images``."""
        names = [line for line in (labels or "").splitlines()]
        try:
            if len(names) != len(images or []):
                raise teach.TeachError(f"{len(images or [])} images but {len(names)} labels: give one label per "
                                       "image, one per line, in the same order.")
            items = [(n, teach.squash(read_upload(p))) for n, p in zip(names, images or [], strict=True)]
            t = teach.teach(items, teach.backbone_of(registry))
        except InputError as e:
            raise gr.Error(str(e)) from None
        return {"id": API_MODELS.add(t.model).id, "card": t.card}

    api_images = gr.File(visible=False, file_count="multiple", type="filepath", label="images")
    api_labels = gr.Textbox(visible=False, label="labels")
    gr.Button(visible=False).click(teach_endpoint, [api_images, api_labels], gr.JSON(visible=False), api_name="teach",
                                   concurrency_limit=1, concurrency_id="teach")
