"""The REST API in the same server as the UI: its contract, its errors, and the bad-input corpus."""

from __future__ import annotations

import httpx
import pytest

from tests.bad_inputs import CASES, digit_rgb, png_claiming, save
from tests.conftest import CARDS, REPO

CAT = REPO / "examples" / "photos" / "cat_chelsea.jpg"


@pytest.fixture(scope="module")
def http(app_url):
    with httpx.Client(base_url=app_url + "api/v1/", timeout=60) as c:
        yield c


def predict(http, model: str, data: bytes, name: str = "x.png") -> httpx.Response:
    return http.post(f"predict/{model}", files={"image": (name, data)})


def test_models_lists_every_card(http):
    r = http.get("models")
    assert r.status_code == 200
    served = {c["name"]: c for c in r.json()}
    assert set(served) == {c.name for c in CARDS}
    for c in CARDS:
        assert served[c.name]["sha256"] == c.sha256 and served[c.name]["metrics"] == c.metrics


@pytest.mark.parametrize("model", [c.name for c in CARDS if c.output_names("probs")])
def test_predict_contract(http, model):
    card = next(c for c in CARDS if c.name == model)
    path = CAT if card.tab == "cifar10" else REPO / "examples" / "digit_7.png"
    r = predict(http, model, path.read_bytes(), path.name)
    assert r.status_code == 200, r.text
    body = r.json()
    required = {"model", "variant", "label", "reason", "probabilities", "decision_rule", "warnings", "latency_ms"}
    assert required <= set(body)
    assert body["model"] == model
    assert body["variant"] == ("int8" if card.int8_is_faster() else "fp32")  # the default file
    probs = list(body["probabilities"].values())
    assert list(body["probabilities"]) == sorted(body["probabilities"], key=body["probabilities"].get, reverse=True)
    assert set(body["probabilities"]) == set(card.labels)
    assert sum(probs) == pytest.approx(1, abs=1e-4) and body["latency_ms"] > 0
    assert body["label"] in (*card.labels, None)
    # (that the named Gradio endpoint and the tabs give the same answer: tests/test_doors.py)


@pytest.mark.parametrize(("model", "data", "status", "reason"), [
    ("no_such_model", save(digit_rgb(), "PNG"), 404, "Unknown model"),
    ("imagenet_stem", save(digit_rgb(), "PNG"), 400, "not a classifier"),
    ("mnist_cnn", b"", 400, "empty"),
    ("mnist_cnn", b"plain text, not a picture\n" * 20, 415, "Could not read"),
    ("mnist_cnn", png_claiming(50_000, 50_000), 413, "too large"),
    ("mnist_cnn", b"\x89PNG" + b"\x00" * (10 * 2**20 + 10), 413, "larger than 10 MB"),
    ("mnist_cnn", save(digit_rgb().convert("L").point(lambda _: 255), "PNG"), 422, "blank or uniform"),
    ("cifar_resnet", save(digit_rgb(3), "PNG"), 422, "too small"),
])
def test_errors_are_json_4xx_with_a_reason(http, model, data, status, reason):
    if model.startswith("cifar") and model not in {c.name for c in CARDS}:
        pytest.skip(f"{model} is not shipped")
    r = predict(http, model, data)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert reason in r.json()["detail"]


def test_missing_field_is_a_422(http):
    r = http.post("predict/mnist_cnn")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image"]


def test_openapi_docs_are_served(http):
    schema = http.get("openapi.json").json()
    assert {"/api/v1/models", "/api/v1/predict/{model}"} <= set(schema["paths"])
    assert "/api/v1/echo" not in schema["paths"]
    assert http.get("docs").status_code == 200


@pytest.mark.parametrize("model", ["mnist_cnn", "cifar_resnet", "xray_pneumonia"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_corpus(http, case, model):
    """Every corpus file: an answer or a JSON 4xx with a reason, never a 5xx; then a normal request works."""
    if model not in {c.name for c in CARDS}:
        pytest.skip(f"{model} is not shipped")
    name, make, suffix, expected = case
    r = predict(http, model, make(), f"{name}.{suffix}")
    assert r.status_code < 500, f"{name}: {r.status_code} {r.text[:200]}"
    if r.status_code >= 400:
        detail = r.json()["detail"]
        assert isinstance(detail, str) and detail and "Traceback" not in detail
    if model == "mnist_cnn" and expected in ("ok", "error"):
        assert (r.status_code == 200) == (expected == "ok"), f"{name}: {r.status_code} {r.text[:200]}"
    normal = REPO / "examples" / "digit_7.png" if model.startswith("mnist") else CAT
    assert predict(http, model, normal.read_bytes(), normal.name).status_code == 200


def test_models_report_their_real_provider(http):
    import onnxruntime as ort

    for card in http.get("models").json():
        assert card["provider"] in ort.get_available_providers()


@pytest.mark.parametrize("card", [c for c in CARDS if c.shipped_variants()], ids=lambda c: c.name)
def test_every_shipped_variant_answers_and_an_unknown_one_is_refused(http, card):
    def ask(**params: str) -> dict:
        r = http.post(f"predict/{card.name}", params=params, files={"image": ("c.jpg", CAT.read_bytes())})
        assert r.status_code == 200, r.text
        return r.json()

    fp32 = ask(variant="fp32")
    assert fp32["variant"] == "fp32"
    answers = {}
    for variant in card.shipped_variants():
        answers[variant] = ask(variant=variant)
        assert answers[variant]["variant"] == variant
        assert answers[variant]["probabilities"] != fp32["probabilities"]  # another file answered
    # no ?variant= (or "default"): the INT8 file where the card ships one and records it as faster
    default = "int8" if card.int8_is_faster() else "fp32"
    for body in (ask(), ask(variant="default")):
        assert body["variant"] == default
        assert body["probabilities"] == pytest.approx(answers.get(default, fp32)["probabilities"], abs=1e-6)
    r = http.post(f"predict/{card.name}", params={"variant": "fp4"}, files={"image": ("c.jpg", CAT.read_bytes())})
    assert r.status_code == 400 and "fp4" in r.json()["detail"]
