"""The answer layer: from (model, upload, options) to one answer, the same through every door.

The tabs, the named Gradio API, REST, the benchmarks and scripts all call :func:`answer` (or
:func:`answer_bytes` for a file's bytes) and show or serialise the :class:`Answer` it returns; none
of them decides anything on its own. What an answer holds:

- what the model saw (its input after the card's preprocessing policy),
- the probabilities, and the **decision** under the card's rules (:func:`decide`): *no* label
  when the in-distribution gate says the input is not like the model's training images
  (``ood_score`` above the card's ``ood.threshold``, export.gate); else the most probable class;
  for a binary model with a calibrated threshold, p(positive) >= threshold; and, where the card
  sets ``reject_below``, *no* label when the top probability is under it (``label`` is None and
  ``reason`` says why),
- warnings about the input (e.g. "this does not look like a chest film"),
- the model's notice (e.g. not for clinical use) and its test-set operating point,
- the class-activation map of the decided class when asked for and the graph has one,
- the latency.

Imports no Gradio.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convscope.cards import TAB_NOTICES, TAB_SUBJECTS
from convscope.preprocess import EmptyInput, InputError, TooLarge, read_image, xray_warnings
from convscope.runtime import DEFAULT_VARIANT, Registry, ServedModel
from convscope.uploads import MAX_UPLOAD_BYTES, check_upload

# Input checks per preprocessing policy (the card names its policy): reasons the input may not be
# what the model was trained on. The model answers anyway; the answer carries them.
INPUT_WARNINGS = {"xray_image": xray_warnings}


class UnknownModel(LookupError):
    """A model name no card serves (REST: 404)."""


class BadRequest(ValueError):
    """A request a model cannot answer as asked: an unknown variant, a feature extractor asked
    for a class (REST: 400)."""


class EmptyUpload(InputError):
    """An upload of zero bytes (REST: 400)."""


@dataclass
class Decision:
    index: int  # the class the rule points at: the answer, or the best guess when withheld
    label: str | None  # None when the rule withholds the answer
    reason: str | None  # why it was withheld (None when answered)
    rule: str  # "argmax", "threshold", "reject_below" or "out_of_distribution"
    ood_score: float | None = None  # the gate's score; None for a model without a gate
    ood_threshold: float | None = None

    @property
    def out_of_distribution(self) -> bool | None:
        """Whether the gate withheld the answer (None: the model has no gate)."""
        return None if self.ood_score is None else self.ood_score > self.ood_threshold


def decided_classes(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The class each row of ``probs`` (N, K) points at: p(positive) >= threshold for a binary
    model with a calibrated threshold, else the most probable class. (Export measures cards with it.)"""
    if threshold is not None and probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(1)


def decide(probs: np.ndarray, card: Any, ood_score: float | None = None) -> Decision:
    """The decision for one image's probabilities under the card's rules: withheld when the gate's
    ``ood_score`` is above the card's ``ood.threshold``; else the class :func:`decided_classes`
    points at (calibration section), withheld under ``reject_below``."""
    labels, cal = card.labels, card.calibration or {}
    threshold, floor = cal.get("threshold"), cal.get("reject_below")
    i = int(decided_classes(probs[None], threshold)[0])
    bar = (getattr(card, "ood", None) or {}).get("threshold")
    gate = (ood_score, bar) if ood_score is not None and bar is not None else (None, None)
    if gate[1] is not None and ood_score > bar:
        subject = TAB_SUBJECTS.get(card.tab, "what it was trained on")
        return Decision(i, None, f"This does not look like {subject} to this model (out-of-distribution score "
                                 f"{ood_score:.1f}, above its {bar:.1f} threshold), so no class is named.",
                        "out_of_distribution", *gate)
    if threshold is not None and len(probs) == 2:
        return Decision(i, labels[i], None, "threshold", *gate)
    if floor is not None and probs[i] < floor:
        return Decision(i, None, f"The most probable class, {labels[i]}, has {probs[i]:.0%}: under this model's "
                                 f"{floor:.0%} threshold, so no class is named.", "reject_below", *gate)
    return Decision(i, labels[i], None, "argmax", *gate)


@dataclass
class Answer:
    model: ServedModel
    variant: str  # the file that ran: "fp32" (the main file), "int8", "single_view"
    seen: np.ndarray  # (H, W, C) uint8: what the model saw
    probs: np.ndarray
    decision: Decision
    latency_ms: float  # preprocessing and inference
    warnings: list[str] = field(default_factory=list)
    cam: np.ndarray | None = None  # (h, w) for the decided class, when asked for and the graph has one

    @property
    def label(self) -> str | None:
        return self.decision.label

    @property
    def notice(self) -> str | None:
        return TAB_NOTICES.get(self.model.card.tab)

    def top(self, k: int | None = None) -> dict[str, float]:
        """Every class (or the ``k`` most probable), most probable first."""
        return top_k(self.probs, self.model.card.labels, k)

    def to_json(self) -> dict:
        """The answer as every API door sends it (REST body, the named Gradio endpoints)."""
        cal = self.model.card.calibration or {}
        out = {"model": self.model.name, "variant": self.variant, "label": self.label, "reason": self.decision.reason,
               "probabilities": self.top(), "decision_rule": self.decision.rule, "warnings": self.warnings,
               "out_of_distribution": self.decision.out_of_distribution, "ood_score": self.decision.ood_score,
               "latency_ms": self.latency_ms}
        if self.decision.ood_threshold is not None:
            out["ood_threshold"] = self.decision.ood_threshold
        if cal.get("threshold") is not None:
            out["threshold"] = cal["threshold"]
        if cal.get("reject_below") is not None:
            out["reject_below"] = cal["reject_below"]
        if isinstance(cal.get("operating_point"), dict) and "test" in cal["operating_point"]:
            out["operating_point_test"] = cal["operating_point"]["test"]
        if self.notice:
            out |= {"not_for_clinical_use": True, "notice": self.notice}
        if probe := self.model.card.metrics.get("confound_probe"):
            out["source_confound_probe"] = probe
        if self.cam is not None:
            out["cam_png"] = cam_png(self.cam)
        return out


def top_k(probs: np.ndarray, labels: list[str], k: int | None = 3) -> dict[str, float]:
    """The ``k`` most probable labels (all with k=None), best first (also a gr.Label value)."""
    order = np.argsort(probs)[::-1][:k]
    return {labels[i]: float(probs[i]) for i in order}


def cam_png(cam: np.ndarray) -> str:
    """A class-activation map as a base64 PNG (8-bit gray, scaled to its own maximum)."""
    from PIL import Image

    peak = float(cam.max())
    gray = np.zeros(cam.shape, np.uint8) if peak <= 0 else np.clip(cam / peak * 255 + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def find_model(registry: Registry, name: str, variant: str = DEFAULT_VARIANT) -> ServedModel:
    """The served classifier ``name`` that can run ``variant``; UnknownModel or BadRequest otherwise."""
    m = registry.models.get(name)
    if m is None:
        raise UnknownModel(f"Unknown model {name!r}; known: {sorted(registry.models)}.")
    if why := m.variant_error(variant):
        raise BadRequest(why)
    if not m.card.output_names("probs"):
        raise BadRequest(f"{name} is a feature extractor, not a classifier.")
    return m


def answer(model: ServedModel, image: Any, variant: str = DEFAULT_VARIANT, cam: bool = False) -> Answer:
    """One image (PIL, array or decoded upload) through one model: preprocessing by the card's
    policy, the model, the card's decision rule and input checks. Raises
    convscope.preprocess.InputError (with a message for the user) for input it cannot use."""
    return answer_all([model], image, variant, cam)[0]


def answer_all(models: list[ServedModel], image: Any, variant: str = DEFAULT_VARIANT,
               cam: bool = False) -> list[Answer]:
    """:func:`answer` for several models, preparing the image once per preprocessing policy (the
    Digits tab's two models share one). Each latency counts that preparation and its own run."""
    prepared: dict[str, tuple[list[str], np.ndarray, float]] = {}
    answers = []
    for model in models:
        policy = model.card.input["preprocess"]
        if policy not in prepared:
            t = time.perf_counter()
            warnings = INPUT_WARNINGS.get(policy, lambda _: [])(image)
            prepared[policy] = (warnings, model.prepare(image), time.perf_counter() - t)
        warnings, x, prep_s = prepared[policy]
        t = time.perf_counter()
        want_cam = cam and bool(model.card.output_names("cam"))
        gated = bool(model.card.ood) and bool(model.card.output_names("ood_score"))
        fetch = ["probs", *(["cam"] if want_cam else []), *(["ood_score"] if gated else [])]
        outs = dict(zip(fetch, model.run(fetch, x[None], variant), strict=True))
        decision = decide(outs["probs"][0], model.card, float(outs["ood_score"][0]) if gated else None)
        answers.append(Answer(model, model.resolve(variant), x, outs["probs"][0], decision,
                              (prep_s + time.perf_counter() - t) * 1e3, list(warnings),
                              np.maximum(outs["cam"][0][decision.index], 0) if want_cam else None))
    return answers


def answer_uploaded(model: Any, image: Any) -> Answer:
    """One image through a model a person uploaded (convscope.user_models.UserModel): the same
    answer as for a shipped model, with no decision rule beyond the most probable class."""
    from convscope.user_models import predict

    t = time.perf_counter()
    seen, probs = predict(model, image)
    return Answer(model, "uploaded", seen, probs, decide(probs, model.card), (time.perf_counter() - t) * 1e3)


def read_upload(data: bytes | str | None) -> Any:
    """An upload -> a decoded image (DICOM included), refusing empty and oversized files. The one
    upload reader: REST hands its file's bytes here, the tabs the path of Gradio's copy (which must
    be an upload of this server: convscope.uploads.check_upload)."""
    if isinstance(data, str):
        data = check_upload(data).read_bytes()
    if data is None:
        raise EmptyInput("No file was uploaded.")
    if not data:
        raise EmptyUpload("The file is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise TooLarge(f"The file is larger than {MAX_UPLOAD_BYTES // 2**20} MB.")
    return read_image(data)


def answer_bytes(model: ServedModel, data: bytes, variant: str = DEFAULT_VARIANT, cam: bool = False) -> Answer:
    """:func:`answer` for a file's bytes; decoding counts in the latency."""
    t = time.perf_counter()
    a = answer(model, read_upload(data), variant, cam)
    a.latency_ms = (time.perf_counter() - t) * 1e3
    return a
