"""The running app through gradio_client, with real image files, as an API user would call it."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.conftest import CARDS, canvas_png

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
        assert len(out["confidences"]) == 3
        if out["label"] != str(mnist_test.y[i]):
            wrong.append((int(mnist_test.y[i]), out["label"]))
    assert not wrong, wrong


def test_default_model_and_transparent_canvas(client, mnist_test, tmp_path):
    """RGBA with black strokes on transparent pixels (a browser canvas) reads as ink on paper."""
    i = one_of_each_class(mnist_test)[3]
    png = canvas_png(mnist_test.x[i, ..., 0], tmp_path / "rgba.png", rgba=True, side=400)
    out = client.predict(sketch(png), api_name="/predict_digit")  # model defaults to the best one
    assert out["label"] == "3"
    assert out["confidences"][0]["confidence"] > 0.5


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
