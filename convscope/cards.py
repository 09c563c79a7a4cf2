"""The model card: the one schema every shipped model is described by.

``export`` writes ``models/<name>.json`` and embeds the same JSON (minus ``sha256``, which
cannot describe the file that contains it) in the ONNX file's metadata under
``convscope_card``. The app builds its tabs from the cards; tests are parametrized over them.

Everything numeric in a card is measured by code (export runs the ONNX file in onnxruntime);
nothing is typed in by hand.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

SCHEMA_VERSION = 1
METADATA_KEY = "convscope_card"
CLASSIFIER_TABS = ("digits", "cifar10", "xray", "taught")  # "taught": python -m train folder (the Teach tab)
TABS = (*CLASSIFIER_TABS, "features")  # "features": feature extractors shown only in the Feature maps tab
# "features": a backbone's pooled feature vector (N, C), what the Teach tab fits a head on
OUTPUT_KINDS = ("probs", "feature_map", "filters", "cam", "ood_score", "features")
# The notice every answer of a tab's models carries (a card declares its tab: where it is served).
TAB_NOTICES = {"xray": "Research demonstration, not for clinical use: this model is a teaching example, never "
                       "clinically validated; it must not inform any decision about a person's health."}

# What a tab's models were trained on, as the answer says when their gate withholds one (export.gate).
TAB_SUBJECTS = {"digits": "a handwritten digit", "cifar10": "a photo of one of CIFAR-10's ten classes",
                "xray": "a chest X-ray"}


_FLAT_LIST = re.compile(r"\[\s*((?:[^\[\]{}\s][^\[\]{}]*?)?)\s*\]", re.S)  # a list with no nested list/dict


class CardError(ValueError):
    """A card that is missing, malformed, or does not match its model file."""


@dataclass
class ModelCard:
    name: str  # unique; also the file stem
    title: str  # human-readable name shown in the app
    tab: str  # which app tab serves it (one of TABS)
    file: str  # ONNX file name, relative to the card
    description: str
    input: dict  # {name, dtype, layout, shape, preprocess, ...}: see export.card
    outputs: list[dict]  # [{name, kind, shape}], kind in OUTPUT_KINDS
    labels: list[str]
    metrics: dict  # measured on the ONNX file in onnxruntime: dataset, split, n, accuracy, ...
    calibration: dict  # decision rules the app applies, with the operating point they give
    params: int
    flops: int  # per image: 2 x multiply-adds of conv and linear layers
    training: dict  # recipe, config, time, machine, final validation figures
    versions: dict  # torch, onnx, onnxruntime, opset
    data_sources: list[str]
    limitations: list[str]
    parity: dict  # max |torch - onnxruntime| per output on random and real inputs
    artifacts: dict = field(default_factory=dict)  # figure files beside the card
    layers: list[dict] = field(default_factory=list)  # per-node table from the ONNX graph (export.graph_table)
    # other files of the same model, measured like the main file: {"int8": {label, file, sha256, accuracy,
    # accuracy_drop_pp, latency, shipped, ...}} (export.quantize; an INT8 file that failed its bound has no
    # file), {"single_view": {...}} (a net with test-time augmentation in its graph, without it: faster)
    variants: dict = field(default_factory=dict)
    # the in-distribution gate (export.gate): its output, threshold, how it was fitted and what it withholds
    ood: dict = field(default_factory=dict)
    sha256: str = ""  # of ``file``; empty only inside the ONNX metadata copy
    schema: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        if not isinstance(d, dict):
            raise CardError("card is not a JSON object")
        names = {f.name for f in fields(cls)}
        missing = sorted(f.name for f in fields(cls) if f.name not in d
                         and f.name not in ("artifacts", "layers", "variants", "ood", "sha256", "schema"))
        if missing:
            raise CardError(f"card is missing {', '.join(missing)}")
        card = cls(**{k: v for k, v in d.items() if k in names})
        card.check()
        return card

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise CardError(f"cannot read card {path}: {e}") from e

    def check(self) -> None:
        if self.schema != SCHEMA_VERSION:
            raise CardError(f"card schema {self.schema}, this app reads {SCHEMA_VERSION}")
        if self.tab not in TABS:
            raise CardError(f"unknown tab {self.tab!r}")
        kinds = [o.get("kind") for o in self.outputs]
        if any(k not in OUTPUT_KINDS for k in kinds):
            raise CardError(f"output kinds must be among {OUTPUT_KINDS}")
        if self.tab not in CLASSIFIER_TABS:
            return
        if "probs" not in kinds:
            raise CardError("a classifier's outputs must include 'probs'")
        probs = next(o for o in self.outputs if o["kind"] == "probs")
        if probs["shape"][-1] != len(self.labels):
            raise CardError(f"{len(self.labels)} labels for {probs['shape'][-1]} probabilities")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """Readable JSON: one key per line, but lists of plain values kept on one line."""
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        flat = _FLAT_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",\n")) + "]", text)
        return (flat if json.loads(flat) == json.loads(text) else text) + "\n"  # odd strings: plain

    def metadata_json(self) -> str:
        """The copy embedded in the ONNX file: everything but the file's own hash."""
        d = self.to_dict()
        d["sha256"] = ""
        return json.dumps(d, ensure_ascii=False, sort_keys=True)

    def output_names(self, kind: str) -> list[str]:
        return [o["name"] for o in self.outputs if o["kind"] == kind]

    def read_verified(self, models_dir: Path, variant: str | None = None) -> bytes:
        """The model file's (or a variant's) bytes, read once and checked against its sha256, so the
        bytes a session is built from are the bytes that were checked."""
        file, sha = (self.file, self.sha256) if variant is None else \
            (self.variants[variant]["file"], self.variants[variant]["sha256"])
        path = models_dir / file
        if not path.exists():
            raise CardError(f"model file {file} is missing")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha:
            raise CardError(f"{file} does not match its card (sha256 {digest[:12]}… "
                            f"!= {sha[:12]}…): re-export, or restore the file")
        return data

    def shipped_variants(self) -> list[str]:
        """Variants besides the main file that ship a file (INT8: only within its accuracy bound)."""
        return [k for k, v in self.variants.items() if v.get("shipped") and v.get("file")]

    def int8_is_faster(self) -> bool:
        """Whether the card's INT8 file ran faster than its main file at batch 1 (export times both in
        one run on one machine)."""
        int8 = self.variants.get("int8") or {}
        return bool(int8.get("shipped")) and int8["latency"]["median_ms"] < self.artifacts["latency"]["median_ms"]

    def variant_label(self, variant: str) -> str:
        """The UI's name for the main file ("fp32") or a variant: its card's ``label``, else the key."""
        return self.variants.get(variant, {}).get("label") or variant.upper()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_cards(models_dir: str | Path) -> list[Path]:
    return sorted(Path(models_dir).glob("*.json"))
