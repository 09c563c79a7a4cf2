"""The running app through gradio_client, with real image files, as an API user would call it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.conftest import CARDS, REPO, canvas_png

DIGIT_MODELS = [c.name for c in CARDS if c.tab == "digits"]


def sketch(path) -> dict:
    """A Sketchpad value as a client sends it: the drawing is the composite."""
    return {"background": None, "layers": [], "composite": handle_file(str(path))}


def one_of_each_class(mnist_test) -> list[int]:
    return [int(np.flatnonzero(mnist_test.y == d)[0]) for d in range(10)]


@pytest.mark.parametrize("model", DIGIT_MODELS)
def test_predict_digit_reads_mnist_digits_drawn_large(client, mnist_test, tmp_path, model):
    wrong = []
    for i in one_of_each_class(mnist_test):
        png = canvas_png(mnist_test.x[i, ..., 0], tmp_path / f"{i}.png")
        out = client.predict(sketch(png), model, api_name="/predict_digit")
        assert len(out["probabilities"]) == 10
        if out["label"] != str(mnist_test.y[i]):
            wrong.append((int(mnist_test.y[i]), out["label"]))
    assert not wrong, wrong


def test_default_model_and_transparent_canvas(client, mnist_test, tmp_path):
    """RGBA with black strokes on transparent pixels (a browser canvas) reads as ink on paper."""
    i = one_of_each_class(mnist_test)[3]
    png = canvas_png(mnist_test.x[i, ..., 0], tmp_path / "rgba.png", rgba=True, side=400)
    out = client.predict(sketch(png), api_name="/predict_digit")  # model defaults to the best one
    assert out["label"] == "3"
    assert max(out["probabilities"].values()) > 0.5


def write(tmp_path, name: str, arr: np.ndarray):
    path = tmp_path / f"{name}.png"
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize("case, message", [
    ("none", "empty"),
    ("no_composite", "empty"),
    ("blank", "blank or uniform"),
    ("uniform_grey", "blank or uniform"),
    ("one_pixel", "too small"),
    ("huge", "too large"),
    ("unknown_model", "not in the list of choices|Unknown model"),
])
def test_bad_input_gets_a_clear_message_and_the_server_keeps_serving(client, tmp_path, mnist_test, case, message):
    arrays = {
        "blank": np.full((280, 280), 255, np.uint8),
        "uniform_grey": np.full((280, 280), 128, np.uint8),
        "one_pixel": np.zeros((1, 1), np.uint8),
        "huge": np.full((7000, 7000), 255, np.uint8),
    }
    args: tuple = ()
    if case == "none":
        value = None
    elif case == "no_composite":
        value = {"background": None, "layers": [], "composite": None}
    elif case == "unknown_model":
        value, args = sketch(canvas_png(mnist_test.x[0, ..., 0], tmp_path / "d.png")), ("no_such_model",)
    else:
        value = sketch(write(tmp_path, case, arrays[case]))
    with pytest.raises(AppError, match=message) as e:
        client.predict(value, *args, api_name="/predict_digit")
    assert "Traceback" not in str(e.value)
    ok = client.predict(sketch(canvas_png(mnist_test.x[0, ..., 0], tmp_path / "ok.png")), api_name="/predict_digit")
    assert ok["label"] == str(mnist_test.y[0])


# --- CIFAR-10 tab -------------------------------------------------------------------------------

CIFAR_MODELS = [c.name for c in CARDS if c.tab == "cifar10"]
PHOTOS = REPO / "examples" / "photos"


def photo_variants(tmp_path) -> dict[str, Path]:
    """The cat photo as users send it: sizes, aspect ratios and modes."""
    cat = Image.open(PHOTOS / "cat_chelsea.jpg").convert("RGB")  # 451x300
    rgba = Image.new("RGBA", (cat.width + 200, cat.height), (0, 0, 0, 0))
    rgba.paste(cat, (100, 0))  # transparent margins left and right
    out = {
        "rgb_jpeg": cat,
        "grayscale_png": cat.convert("L"),
        "rgba_png": rgba,
        "wide_3to1": cat.crop((0, 100, cat.width, 250)).resize((900, 300)),
        "tall_1to3": cat.crop((150, 0, 300, cat.height)).resize((200, 600)),
        "tiny_24px": cat.resize((36, 24)),
        "large_3000px": cat.resize((3000, 1995)),
    }
    paths = {}
    for name, img in out.items():
        paths[name] = tmp_path / f"{name}.{'jpg' if name.endswith('jpeg') else 'png'}"
        img.save(paths[name])
    return paths


@pytest.mark.parametrize("model", CIFAR_MODELS)
def test_classify_image_answers_photos_of_any_size_and_mode(client, tmp_path, model):
    labels = next(c for c in CARDS if c.name == model).labels
    for name, path in photo_variants(tmp_path).items():
        out = client.predict(handle_file(str(path)), model, api_name="/classify_image")
        probs = out["probabilities"]
        ranked = list(probs.values())
        assert set(probs) == set(labels) and out["label"] in (next(iter(probs)), None), name
        assert ranked == sorted(ranked, reverse=True) and ranked[0] > 0, name
        assert sum(ranked) == pytest.approx(1, abs=1e-4), name


def test_classify_image_sees_the_cat(client, tmp_path):
    """A real photo, not from CIFAR: the main model reads it, in colour and in grey."""
    paths = photo_variants(tmp_path)
    for name in ("rgb_jpeg", "grayscale_png", "rgba_png"):
        out = client.predict(handle_file(str(paths[name])), "cifar_resnet", api_name="/classify_image")
        assert out["label"] == "cat", (name, out)


@pytest.mark.parametrize("variant", ["fp32", *next(c for c in CARDS if c.name == "cifar_resnet").shipped_variants()])
def test_classify_image_at_32px_equals_the_onnx_model(client, tmp_path, cifar_test, variant):
    """A CIFAR test image sent at 32x32 reaches the model unchanged: the app's answer is the file's
    (the main file, or the variant asked for)."""
    from convscope.runtime import MODELS_DIR, make_session

    idx = [int(np.flatnonzero(cifar_test.y == k)[0]) for k in range(10)]
    card = next(c for c in CARDS if c.name == "cifar_resnet")
    file = card.file if variant == "fp32" else card.variants[variant]["file"]
    probs = make_session(MODELS_DIR / file).run(["probs"], {"image": cifar_test.x[idx]})[0]
    for i, p in zip(idx, probs, strict=True):
        path = tmp_path / f"{i}.png"
        Image.fromarray(cifar_test.x[i]).save(path)
        out = client.predict(handle_file(str(path)), "cifar_resnet", variant, api_name="/classify_image")
        withheld = p.max() < card.calibration["reject_below"]  # the card's rule: no class named
        assert out["label"] == (None if withheld else card.labels[int(p.argmax())])
        assert next(iter(out["probabilities"].values())) == pytest.approx(float(p.max()), abs=1e-5)


def test_variant_radio_offers_fp32_first_then_every_shipped_variant_by_its_card_label_set_to_the_default():
    import gradio as gr

    from convscope.runtime import load_registry
    from convscope.tabs.common import variant_radio

    models = load_registry().for_tab("cifar10")
    with gr.Blocks():
        radio = variant_radio(models, "test-variant", models[0])
    values = [v for _, v in radio.choices]
    assert values[0] == "fp32" and set(values) == {v for m in models for v in m.variant_names}
    for shown in models:  # set to the shown model's default file
        with gr.Blocks():
            assert variant_radio(models, "test-variant", shown).value == shown.default_variant
    for label, v in radio.choices[1:]:
        assert label == next(m.card.variant_label(v) for m in models if v in m.variants)
    assert radio.visible


def test_variant_for_runs_the_wanted_file_or_the_models_default_and_says_so():
    from convscope.runtime import load_registry
    from convscope.tabs.common import variant_for

    models = {m.name: m for m in load_registry().models.values()}
    resnet, covid = models["cifar_resnet"], models["xray_covid3"]
    assert variant_for(resnet, "default") == (resnet.default_variant, "")
    assert variant_for(resnet, "fp32") == ("fp32", "")
    assert variant_for(resnet, "single_view") == ("single_view", "")
    chosen, note = variant_for(covid, "single_view")  # the tab's radio lists other models' variants too
    assert chosen == covid.default_variant and "not shipped for this model" in note and covid.card.variant_label(
        chosen) in note
