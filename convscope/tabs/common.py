"""Pieces every tab shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
from PIL import Image

from convscope.answers import Answer
from convscope.cards import TAB_SUBJECTS
from convscope.guard import file_paths
from convscope.preprocess import DECODES, MAX_PIXELS, InputError, bounded, check_header
from convscope.runtime import MAIN_VARIANT, Registry, ServedModel
from convscope.uploads import check_upload

UNREADABLE = ("Could not read this file as an image: it may be empty, truncated, or not a picture "
              "(PNG, JPEG, WebP, GIF, BMP and TIFF work).")


def check_files(payload: Any) -> None:
    """Before Gradio decodes an image input: every file it names is an upload of this server (the
    Guard checked that already; this is the second lock) whose header claims at most MAX_PIXELS."""
    value = payload.model_dump() if hasattr(payload, "model_dump") else payload
    for path in file_paths(value):
        with Image.open(check_upload(path)) as img:  # reads the header only
            check_header(img)


def _decode_errors_as_messages(preprocess: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Gradio decodes uploads before our function runs, and an undecodable file would reach the
    user as a bare "the app raised an exception". Check the file first (check_files), decode at
    most CONVSCOPE_DECODES at once, and turn every failure into a clear message."""

    def safe(payload: Any) -> Any:
        try:
            check_files(payload)
            with DECODES:
                out = preprocess(payload)
            return bounded(out) if isinstance(out, Image.Image) else out
        except gr.Error:
            raise
        except InputError as e:  # (NotAnUpload included)
            raise gr.Error(str(e)) from None
        except Image.DecompressionBombError:
            raise gr.Error(f"The image is too large (at most {MAX_PIXELS // 1_000_000} megapixels).") from None
        except Exception:  # PIL raises many types for broken files
            raise gr.Error(UNREADABLE) from None

    return safe


def SafeSketchpad(**kwargs: Any) -> gr.Sketchpad:
    """A gr.Sketchpad whose undecodable uploads get a clear message. (Wrapping the instance, not
    subclassing: Gradio writes a .pyi stub beside every component subclass it sees.)"""
    c = gr.Sketchpad(**kwargs)
    c.preprocess = _decode_errors_as_messages(c.preprocess)
    return c


def SafeImage(**kwargs: Any) -> gr.Image:
    """A gr.Image whose undecodable uploads get a clear message."""
    c = gr.Image(**kwargs)
    c.preprocess = _decode_errors_as_messages(c.preprocess)
    return c


def tab_models(registry: Registry, tab: str, expected: tuple[str, ...]) -> list[ServedModel]:
    """A tab's models, the expected ones first in their order; renders the notice for any expected
    model that cannot be served (inside the current Gradio context)."""
    order = {name: i for i, name in enumerate(expected)}
    notice = missing_notice(registry.broken_for_tab(expected))
    if notice:
        gr.Markdown(notice, elem_classes=["cs-notice"])
    return sorted(registry.for_tab(tab), key=lambda m: (order.get(m.name, len(order)), m.name))


def missing_notice(problems: dict[str, str]) -> str:
    """Markdown for models a tab expected but cannot serve, with the reason for each."""
    if not problems:
        return ""
    lines = [f"- **{name}**: {reason}" for name, reason in sorted(problems.items())]
    return ("⚠️ **Some models of this tab are not available.** The rest of the app works.\n"
            + "\n".join(lines)
            + "\n\nTo restore a model: `python -m export <name>` (re-exports the shipped checkpoint), "
              "or `git checkout models/`.")


def sketch_image(value: Any) -> Any:
    """The composite image inside a Sketchpad value (dict), or the value itself if it is an image."""
    if isinstance(value, dict):  # an example or upload may arrive as the background only
        return value.get("composite") if value.get("composite") is not None else value.get("background")
    return value


def variant_for(model: ServedModel, wanted: str) -> tuple[str, str]:
    """The variant to run (the wanted one if this model ships it, else its default) and a note
    when it is not the wanted one: a tab's one radio lists the variants of all its models."""
    chosen = model.resolve(wanted)
    if chosen in model.variant_names:
        return chosen, ""
    fallback = model.default_variant
    return fallback, f" ({model.card.variant_label(chosen)} is not shipped for this model: running " \
                     f"{model.card.variant_label(fallback)})"


def variant_radio(models: list[ServedModel], elem_id: str, selected: ServedModel) -> gr.Radio:
    """One radio for every model of a tab: FP32 (the main file) first, then each variant a card
    ships, named by its card; set to the ``selected`` model's default (ServedModel.default_variant); hidden
    when there is nothing to choose."""
    names = {v: m.card.variant_label(v) for m in reversed(models) for v in m.variant_names}
    order = sorted(names, key=lambda v: (v != MAIN_VARIANT, v))
    return gr.Radio([(names[v], v) for v in order], value=selected.default_variant, label="Precision / variant",
                    elem_id=elem_id, visible=len(order) > 1,
                    info="INT8 is the default where a model ships it and it ran faster: export ships one "
                         "only if its test accuracy is within a few tenths of a point of FP32's")


def answer_anyway(elem_id: str, k: int | None = 3) -> tuple[gr.Accordion, gr.Label]:
    """The collapsed "Answer anyway" view: where the probabilities go when an answer is withheld."""
    with gr.Accordion("Answer anyway", open=False, visible=False, elem_id=f"{elem_id}-anyway") as box:
        probs = gr.Label(num_top_classes=k, show_label=False, elem_id=f"{elem_id}-anyway-label")
    return box, probs


NO_PROBABILITIES = [None, gr.update(visible=False), None]  # for the three outputs of shown_probabilities


def shown_probabilities(a: Answer, k: int | None = 3) -> list:
    """[big label, "Answer anyway" box, its label]: the probabilities go in the big label when the
    answer names a class, else only in the collapsed box, so a withheld answer shows no class name."""
    if a.label is None:
        return [None, gr.update(visible=True, open=False), a.top(k)]
    return [a.top(k), gr.update(visible=False), None]


def gate_verdict(a: Answer) -> str | None:
    """The headline when the in-distribution gate withheld the answer, else None."""
    if not a.decision.out_of_distribution:
        return None
    subject = TAB_SUBJECTS.get(a.model.card.tab, "what it was trained on")
    return (f"🚫 **This does not look like {subject} to this model.** Out-of-distribution score "
            f"{a.decision.ood_score:.1f}; it names a class only up to {a.decision.ood_threshold:.1f} "
            f"(its own validation images score below that {a.model.card.ood.get('keep_target', 0.995):.1%} of the "
            "time). The probabilities are under *Answer anyway*.")


def variants_of(model: ServedModel) -> dict:
    """The variant radio for ``model``: only the files it ships, set to the one a request runs by
    default, so the radio shows what will really run."""
    return gr.update(choices=[(model.card.variant_label(v), v) for v in model.variant_names],
                     value=model.default_variant)
