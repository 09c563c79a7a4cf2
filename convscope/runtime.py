"""ONNX Runtime sessions for the shipped models, discovered from their cards.

CPU by default. With onnxruntime-gpu installed, CUDA is *asked* for, and a model counts as on
the GPU only if its session really got the CUDA provider: the GPU build lists CUDA as available
even on machines without a usable GPU, and then quietly falls back to the CPU.

``CONVSCOPE_PROVIDER=cpu`` forces the CPU; ``CONVSCOPE_ORT_THREADS`` sets intra-op threads
(default 1: on a small shared machine one thread per request keeps concurrent users from
fighting over cores, and measured fastest at batch 1 here); ``CONVSCOPE_PRECISION=fp32`` serves
the main (fp32) files by default, ``=int8`` the INT8 ones wherever they ship (default ``auto``:
INT8 where it ships and its card records it as faster; ServedModel.default_variant).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from convscope.cards import CardError, ModelCard, find_cards
from convscope.onnx_wire import keep_outputs, output_names
from convscope.preprocess import PREPROCESSORS

log = logging.getLogger("convscope")
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def session_options(threads: int | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or int(os.environ.get("CONVSCOPE_ORT_THREADS", "1"))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # warnings about unused initializers etc. are noise for users
    return so


def make_session(model: str | Path | bytes, threads: int | None = None) -> ort.InferenceSession:
    """A session on CUDA if this build offers it and it really attaches, else on the CPU.
    ``model``: a file, or a serialized model (bytes)."""
    source = model if isinstance(model, bytes) else str(model)
    name = "<model bytes>" if isinstance(model, bytes) else source
    want_cuda = (os.environ.get("CONVSCOPE_PROVIDER", "auto").lower() != "cpu"
                 and CUDA in ort.get_available_providers())
    if want_cuda:
        try:
            sess = ort.InferenceSession(source, session_options(threads), providers=[CUDA, CPU])
            if sess.get_providers()[0] == CUDA:
                return sess
        except Exception as e:  # a broken CUDA install must not take the CPU path down with it
            log.warning("CUDA session for %s failed (%s); using the CPU", name, e)
    return ort.InferenceSession(source, session_options(threads), providers=[CPU])


MAIN_VARIANT = "fp32"  # the card's main file; the other variants: "int8", "single_view" (one view, no TTA)
DEFAULT_VARIANT = "default"  # what a request that names no variant asks for: ServedModel.default_variant
# CONVSCOPE_PRECISION: "auto" (the default) serves a model's INT8 file where its card ships one and
# records it as faster than the FP32 file (export times both on one machine, in one run); "int8":
# wherever one ships; "fp32": the main files. Export ships an INT8 file only within
# export.quantize.MAX_DROP_PP of the FP32 file's test accuracy, so "auto" gives the same answers
# sooner. Not "int8": cifar_inception's INT8 file took twice as long as its FP32 file on the machine
# that exported it (its card), and the same time on a VNNI Xeon (python -m bench.suite).
DEFAULT_PRECISION = "auto"


PREDICTION_OUTPUTS = ("probs", "cam", "ood_score")  # what the tabs and the REST API fetch for an answer


def prediction_outputs(names: list[str]) -> list[str]:
    """The outputs a prediction session keeps: probabilities, class-activation maps and the
    in-distribution gate's score; all of them for a feature extractor (no ``probs``)."""
    return [n for n in names if n in PREDICTION_OUTPUTS] or list(names)


def prediction_session(data: bytes, names: list[str] | None = None) -> ort.InferenceSession:
    """A session on the prediction graph of a serialized model (its bytes already checked);
    ``names``: its outputs, when the caller has read them already."""
    return make_session(keep_outputs(data, prediction_outputs(names or output_names(data))))


@dataclass
class ServedModel:
    """One card's model: per variant, a session on its *prediction graph* (``probs`` and ``cam``
    only), and, built on first use, one on the whole graph (every stage and filter: what the
    Feature maps tab shows).

    Why two graphs: ONNX Runtime runs every node of a graph whatever a call fetches
    (convscope.onnx_wire), so predictions on the whole graph would also copy out every stage
    and, in the INT8 files, dequantize them. Why the whole graph only on demand: each session
    holds its own prepacked weights and buffers (every whole graph as well: 497 instead of 283 MB
    in ``python -m bench.graphs``)."""

    card: ModelCard
    session: ort.InferenceSession  # the main file's prediction graph
    variants: dict[str, ort.InferenceSession] = field(default_factory=dict)  # {"int8": prediction graph, ...}
    models_dir: Path | None = None  # where the files are, to build whole-graph sessions from
    _whole: dict[str, ort.InferenceSession] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def variant_names(self) -> list[str]:
        return [MAIN_VARIANT, *self.variants]

    @property
    def default_variant(self) -> str:
        """The file a request gets when it names no variant (CONVSCOPE_PRECISION, see DEFAULT_PRECISION)."""
        wanted = os.environ.get("CONVSCOPE_PRECISION", DEFAULT_PRECISION).strip().lower()
        if wanted == "auto":
            return "int8" if "int8" in self.variants and self.card.int8_is_faster() else MAIN_VARIANT
        return wanted if wanted in self.variants else MAIN_VARIANT

    def resolve(self, variant: str) -> str:
        """``variant``, with "default" (or empty) replaced by the variant it stands for."""
        return self.default_variant if variant in (DEFAULT_VARIANT, "") else variant

    def variant_error(self, variant: str) -> str | None:
        """Why ``variant`` cannot run on this model, in the words every API answers with; None if it can."""
        if self.resolve(variant) in self.variant_names:
            return None
        return f"{self.name} ships {[DEFAULT_VARIANT, *self.variant_names]}, not {variant!r}."

    def run(self, outputs: list[str], images: np.ndarray, variant: str = MAIN_VARIANT) -> list[np.ndarray]:
        """Run on uint8 NHWC ``images`` (a batch), fetching the named ``outputs``; ``variant`` may be "default"."""
        return self.session_for(outputs, variant).run(outputs, {self.card.input["name"]: images})

    def session_for(self, outputs: list[str], variant: str = MAIN_VARIANT) -> ort.InferenceSession:
        """The prediction graph's session when it has every output asked for, else the whole graph's,
        built once on first use from the file's bytes checked against the card again (so a file
        changed since start-up is refused with CardError)."""
        variant = self.resolve(variant)
        prediction = self.session if variant == MAIN_VARIANT else self.variants[variant]
        if self.models_dir is None or set(outputs) <= self._prediction_outputs:
            return prediction
        with self._lock:  # one build, even when the first requests arrive together
            if variant not in self._whole:
                self._whole[variant] = make_session(
                    self.card.read_verified(self.models_dir, None if variant == MAIN_VARIANT else variant))
            return self._whole[variant]

    @cached_property
    def _prediction_outputs(self) -> frozenset[str]:
        """What every variant's prediction graph computes: the card's outputs, as prediction_outputs keeps them."""
        return frozenset(prediction_outputs([o["name"] for o in self.card.outputs]))

    def probs(self, images: np.ndarray, variant: str = MAIN_VARIANT) -> np.ndarray:
        return self.run(["probs"], images, variant)[0]

    def prepare(self, image: Any) -> np.ndarray:
        """Any image -> the (H, W, C) uint8 input this model expects, by its card's preprocessing
        policy (raises convscope.preprocess.InputError with a message for the user)."""
        x = PREPROCESSORS[self.card.input["preprocess"]](image)
        return x[..., None] if x.ndim == 2 else x


@dataclass
class Registry:
    """Every model found in ``models/``, and why each unusable one could not be served."""

    models: dict[str, ServedModel] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # card file stem -> reason
    models_dir: Path = MODELS_DIR  # where the cards' artifacts (curves, confusion PNGs) live

    def for_tab(self, tab: str) -> list[ServedModel]:
        return [m for m in self.models.values() if m.card.tab == tab]

    def broken_for_tab(self, expected: tuple[str, ...]) -> dict[str, str]:
        """Why each model a tab expects is unavailable (a broken card may not even say its tab)."""
        out = {k: v for k, v in self.broken.items() if k.split(".")[0] in expected}  # "name" or "name.int8"
        for name in expected:
            if name not in self.models and name not in out:
                out[name] = f"no card models/{name}.json"
        return out


def load_registry(models_dir: str | Path = MODELS_DIR) -> Registry:
    """Load every card in ``models_dir``, verify its file's sha256, open one session each.

    Never raises for a bad model: it lands in ``broken`` with a reason the UI shows.
    """
    models_dir = Path(models_dir)
    reg = Registry(models_dir=models_dir)
    for card_path in find_cards(models_dir):
        try:
            card = ModelCard.load(card_path)
            data = card.read_verified(models_dir)
            got = output_names(data)
            want = {o["name"] for o in card.outputs}
            if not want <= set(got):
                raise CardError(f"{card.file} lacks outputs {sorted(want - set(got))} named in its card")
            sess = prediction_session(data, got)
            model = reg.models[card.name] = ServedModel(card, sess, models_dir=models_dir)
            log.info("loaded %s on %s", card.name, sess.get_providers()[0])
            for variant in card.shipped_variants():
                try:  # a broken variant disables only itself
                    model.variants[variant] = prediction_session(card.read_verified(models_dir, variant))
                except Exception as e:
                    reg.broken[f"{card.name}.{variant}"] = str(e) if isinstance(e, CardError) else repr(e)
                    log.warning("variant %s.%s disabled: %s", card.name, variant, e)
        except Exception as e:
            reg.broken[card_path.stem] = str(e) if isinstance(e, CardError) else f"{type(e).__name__}: {e}"
            log.warning("model %s disabled: %s", card_path.stem, reg.broken[card_path.stem])
    return reg
