"""Every case of the bad-input corpus, sent to every image endpoint through gradio_client: a
sensible answer or a clear one-line message, never a traceback, and the server keeps serving."""

from __future__ import annotations

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from tests.bad_inputs import CASES
from tests.conftest import CARDS

# Everything a user may be told; anything else (a bare "the app raised an exception") fails.
CLEAR = ("Could not read this file", "not supported", "too large", "too small", "Nothing was drawn", "blank or uniform",
         "No image was given", "Could not read the file", "Could not decode this DICOM", "holds no image",
         "The file is empty", "No file was uploaded")


def sketch(path: str) -> dict:
    return {"background": None, "layers": [], "composite": handle_file(path)}


ENDPOINTS = {
    "predict_digit": lambda c, p: c.predict(sketch(p), api_name="/predict_digit"),
    "feature_maps_cnn": lambda c, p: c.predict("mnist_cnn", handle_file(p), api_name="/feature_maps"),
    "feature_maps_stem": lambda c, p: c.predict("imagenet_stem", handle_file(p), api_name="/feature_maps"),
    "classify_image": lambda c, p: c.predict(handle_file(p), api_name="/classify_image"),
    "diagnose_xray": lambda c, p: c.predict(handle_file(p), "xray_pneumonia", "fp32", api_name="/diagnose_xray"),
}
PHOTO_ENDPOINTS = ("feature_maps_stem", "classify_image", "diagnose_xray")
SHIPPED = {c.name for c in CARDS}
NEEDS = {"classify_image": "cifar_resnet", "diagnose_xray": "xray_pneumonia"}


def test_corpus_is_big_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(client, tmp_path, case, endpoint):
    name, make, suffix, expected = case
    if NEEDS.get(endpoint, "mnist_cnn") not in SHIPPED:
        pytest.skip(f"{NEEDS[endpoint]} is not shipped")
    if endpoint == "diagnose_xray" and name.startswith("dicom_") and expected == "either":
        expected = "ok"  # the X-ray tab reads DICOM
    path = tmp_path / f"{name}.{suffix}"
    path.write_bytes(make())
    if endpoint in PHOTO_ENDPOINTS and name in ("blank_white", "all_black", "uniform_grey", "transparent_rgba",
                                                    "wide_aspect"):
        expected = "ok"  # a photo model has no "empty canvas": a uniform image is a valid photo
    try:
        out = ENDPOINTS[endpoint](client, str(path))
    except AppError as e:
        msg = str(e)
        assert expected != "ok", f"{name}: expected an answer, got {msg!r}"
        assert any(k in msg for k in CLEAR), f"{name}: unclear message {msg!r}"
        assert "Traceback" not in msg and "/tmp/" not in msg
    else:
        assert expected != "error", f"{name}: expected a clear refusal, got {str(out)[:100]}"
        if endpoint == "predict_digit" and name.startswith(("digit_", "exif", "white_on", "coloured", "palette",
                                                            "grey_", "sixteen", "float", "cmyk", "rgba_ink")):
            assert out["label"] == "7", f"{name}: read as {out['label']}"


def test_server_still_serves_after_the_corpus(client, tmp_path):
    from tests.bad_inputs import digit_rgb

    p = tmp_path / "ok.png"
    digit_rgb().save(p)
    assert client.predict(sketch(str(p)), api_name="/predict_digit")["label"] == "7"
