"""X-ray inputs (DICOM made with pydicom here, 16-bit PNG), warnings, the calibration and ROC
helpers, the cards' clinical figures, and the tab's API through gradio_client and REST."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from convscope import metrics as M
from convscope.preprocess import InputError, Unreadable, dicom_to_gray, read_image, xray_image, xray_warnings
from tests.bad_inputs import dicom_bytes, film
from tests.conftest import CARDS, DATA_DIR, REPO

XRAY_CARDS = [c for c in CARDS if c.tab == "xray"]
NO_XRAY = f"chest X-rays not found under {DATA_DIR} (set CONVSCOPE_DATA_DIR; see train/datasets.py)"


def png16(a8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a8.astype(np.uint16) * 257).save(buf, "PNG")
    return buf.getvalue()


def png8(a8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a8).save(buf, "PNG")
    return buf.getvalue()


# --- inputs -------------------------------------------------------------------------------

def test_dicom_monochrome2_12bit_without_voi_uses_the_full_range():
    x = film()
    out = dicom_to_gray(dicom_bytes(x.astype(np.uint16) * 16))  # 12-bit data, 0..4080
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert np.abs(out.astype(int) - x).max() <= 1


def test_dicom_monochrome1_is_inverted_so_bone_stays_bright():
    x = film()
    m2 = dicom_to_gray(dicom_bytes(x.astype(np.uint16) * 16))
    m1 = dicom_to_gray(dicom_bytes(4095 - x.astype(np.uint16) * 16, photometric="MONOCHROME1"))
    assert np.abs(m1.astype(int) - m2).max() <= 1


def test_dicom_window_centre_width_is_applied():
    x = film().astype(np.uint16) * 16
    lo, hi = 1000, 2000
    out = dicom_to_gray(dicom_bytes(x, window=((lo + hi) / 2, hi - lo)))
    assert out[x < lo - 1].max() == 0 and out[x > hi + 1].min() == 255  # outside the window: clipped
    inside = (x > lo + 50) & (x < hi - 50)
    assert out[inside].min() > 0 and out[inside].max() < 255
    order = np.argsort(x[inside])  # inside: monotonic in the stored value
    assert (np.diff(out[inside][order].astype(int)) >= 0).all()


def test_dicom_voi_lut_sequence_is_applied():
    """A VOI LUT that maps v -> 4095 - v turns the film into its negative."""
    x = film()
    plain = dicom_to_gray(dicom_bytes(x.astype(np.uint16) * 16))
    inverted = dicom_to_gray(dicom_bytes(x.astype(np.uint16) * 16, voi_lut=4095 - np.arange(4096)))
    assert np.abs(inverted.astype(int) - (255 - plain.astype(int))).max() <= 1


def test_dicom_modality_lut_comes_before_the_window():
    """Stored values v mean 2v - 1024 (rescale slope/intercept); the window is in those units."""
    x = film().astype(np.uint16) * 16
    hu = 2.0 * x - 1024
    out = dicom_to_gray(dicom_bytes(x, slope=2.0, intercept=-1024.0, window=(3072, 4096)))  # 1024..5120
    assert out[hu < 1000].max() == 0 and out[hu > 5150].min() == 255


def test_dicom_16bit_full_range():
    x = film()
    out = dicom_to_gray(dicom_bytes(x.astype(np.uint16) * 257, bits_stored=16))
    assert np.abs(out.astype(int) - x).max() <= 1


def test_dicom_without_pixel_data_and_corrupted_dicom_get_clear_messages():
    with pytest.raises(InputError, match="no image"):
        read_image(dicom_bytes(film(), pixel_data=False))
    data = dicom_bytes(film())
    with pytest.raises(Unreadable):
        read_image(data[:-5000])  # the header survives, the pixels are cut short


def test_sixteen_bit_png_is_windowed_not_saturated():
    x = film()
    img = read_image(png16(x))
    assert img.mode.startswith("I")
    np.testing.assert_array_equal(xray_image(img), xray_image(Image.fromarray(x)))
    twelve = Image.fromarray(x.astype(np.uint16) * 16)  # 12-bit data in a 16-bit PNG: dark if scaled by 257
    np.testing.assert_array_equal(xray_image(twelve), xray_image(Image.fromarray(x)))


def test_every_format_of_the_same_film_gives_the_same_model_input():
    x = film()
    ref = xray_image(read_image(png8(x)))
    assert ref.shape == (224, 224, 1) and ref.dtype == np.uint8
    rgb = io.BytesIO()
    Image.fromarray(x).convert("RGB").save(rgb, "PNG")
    for data in (png16(x), dicom_bytes(x.astype(np.uint16) * 16), rgb.getvalue()):
        assert np.abs(xray_image(read_image(data)).astype(int) - ref).max() <= 1


@pytest.mark.parametrize(("img", "warning"), [
    (Image.new("RGB", (400, 400), (220, 40, 40)), "coloured"),
    (Image.fromarray(np.tile(film(), (1, 3))), "unusual shape"),
    (Image.new("L", (300, 300), 128), "nearly uniform"),
])
def test_warnings_for_images_that_are_not_chest_films(img, warning):
    assert any(warning in w for w in xray_warnings(img))


def test_no_warning_for_a_film_like_image():
    assert xray_warnings(Image.fromarray(film())) == []
    assert xray_warnings(read_image(dicom_bytes(film().astype(np.uint16) * 16))) == []


# --- metrics helpers ------------------------------------------------------------------------

def test_roc_auc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(bool)
    s = np.round(rng.random(400) + 0.6 * y, 1)  # rounded: ties
    pos, neg = s[y], s[~y]
    u = ((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (len(pos) * len(neg))
    assert M.roc_auc(s, y) == pytest.approx(u, abs=1e-12)
    assert M.roc_auc(y.astype(float), y) == 1.0


def test_youden_threshold_separates_separable_scores():
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1], bool)
    t = M.youden_threshold(s, y)
    assert 0.3 < t <= 0.6
    op = M.operating_point(s, y, t)
    assert op["sensitivity"] == op["specificity"] == op["accuracy"] == 1.0


def test_temperature_fit_recovers_an_overconfident_model():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (4000, 3))
    p_true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in p_true])
    overconfident = M.apply_temperature(p_true, 1 / 2.5)  # logits x 2.5
    t = M.fit_temperature(overconfident, y)
    assert t == pytest.approx(2.5, rel=0.1)
    assert M.ece(M.apply_temperature(overconfident, t), y) < M.ece(overconfident, y) / 2


# --- the shipped cards and files -------------------------------------------------------------

@pytest.fixture(scope="module")
def kermany_test():
    from train.datasets import load_kermany, xray_available

    if not xray_available():
        pytest.skip(NO_XRAY)
    return load_kermany("test")


@pytest.mark.parametrize("card", XRAY_CARDS, ids=lambda c: c.name)
def test_xray_cards_state_calibration_operating_point_and_use(card):
    cal, m = card.calibration, card.metrics
    from convscope.runtime import MODELS_DIR

    assert 0.05 < cal["temperature"] < 20
    assert cal["validation"]["nll_after"] <= cal["validation"]["nll_before"] + 1e-9  # fitted there
    assert 0 <= cal["test"]["ece_after"] < 1 and "validation" in cal["fitted_on"]
    for k in ("roc", "confusion", "curves"):
        assert (MODELS_DIR / card.artifacts[k]).is_file()
    assert any("not for clinical use" in x for x in card.limitations)
    assert card.training["train_time_s"] > 0 and card.data_sources
    if len(card.labels) == 2:
        op = cal["operating_point"]["test"]
        assert 0 < cal["threshold"] < 1 and op["sensitivity"] and op["specificity"]
        assert isinstance(m["roc_auc"], float)
    else:
        assert set(m["per_class"]) == set(card.labels)
        assert any("CONFOUND" in x for x in card.limitations) and m["confound_probe"]["n"] > 0


@pytest.mark.parametrize("card", [c for c in XRAY_CARDS if c.metrics.get("confound_probe")], ids=lambda c: c.name)
def test_a_covid_answer_carries_the_confound_evidence(card):
    from convscope.card_text import decision_text
    from convscope.runtime import ServedModel

    model = ServedModel(card=card, session=None)
    covid = card.labels.index("COVID-19")
    probs = np.full(len(card.labels), 0.05, np.float32)
    probs[covid] = 0.9
    text = decision_text(model, probs, covid)
    probe = card.metrics["confound_probe"]
    assert "Source confound" in text and f"{probe['called_covid_fraction']:.0%} COVID-19" in text
    assert "without* COVID-19" not in decision_text(model, probs[::-1].copy(), len(card.labels) - 1 - covid)


@pytest.mark.data
@pytest.mark.parametrize("card", XRAY_CARDS, ids=lambda c: c.name)
def test_xray_metrics_re_measured_on_the_onnx_file(card, kermany_test):
    from convscope.runtime import MODELS_DIR, make_session
    from export.clinical import decisions
    from train.datasets import load_covid3

    test = kermany_test if len(card.labels) == 2 else load_covid3("test")
    probs = M.predict_probs(make_session(MODELS_DIR / card.file), test.x)
    threshold = card.calibration["threshold"]
    pred = decisions(probs, threshold)
    assert (pred == test.y).mean() == pytest.approx(card.metrics["accuracy"], abs=1e-9)
    if threshold is not None:
        assert M.roc_auc(probs[:, 1], test.y == 1) == pytest.approx(card.metrics["roc_auc"], abs=1e-6)
        op = M.operating_point(probs[:, 1], test.y == 1, threshold)
        assert op["sensitivity"] == pytest.approx(card.calibration["operating_point"]["test"]["sensitivity"])
        assert M.ece(probs, test.y) == pytest.approx(card.calibration["test"]["ece_after"], abs=1e-6)
    for name in card.shipped_variants():
        v = card.variants[name]
        q = M.predict_probs(make_session(MODELS_DIR / v["file"]), test.x)
        assert (decisions(q, threshold) == test.y).mean() == pytest.approx(v["accuracy"], abs=1e-9), name


@pytest.mark.data
def test_real_films_get_no_warning(kermany_test):
    from train.datasets import load_covid_collection

    films = np.concatenate([kermany_test.x[::4], load_covid_collection("test").x])
    warned = [i for i, x in enumerate(films) if xray_warnings(x[..., 0])]
    assert len(warned) <= 0.01 * len(films), warned


def test_splits_are_patient_disjoint():
    from train.datasets import COVID_SAME_PATIENT, covid_split_of

    for a, b in COVID_SAME_PATIENT.items():
        assert covid_split_of(a) == covid_split_of(b)
    splits = [covid_split_of(str(i)) for i in range(1000)]
    assert 0.6 < splits.count("train") / 1000 < 0.8 and splits.count("test") > 100


@pytest.mark.data
def test_kermany_validation_patients_are_not_in_train(kermany_test):
    import csv

    from train.datasets import KERMANY_CSV

    rows = list(csv.DictReader((DATA_DIR / KERMANY_CSV).open()))
    ids = {s: {(r["class_name"], r["patient_id"]) for r in rows if r["split_with_val"] == s} for s in ("train", "val")}
    assert ids["val"] and not ids["train"] & ids["val"]


# --- the app: gradio_client and REST -----------------------------------------------------------

needs_model = pytest.mark.skipif(not XRAY_CARDS, reason="no X-ray model shipped")


def example_film() -> np.ndarray:
    """A real chest film that ships (examples/xray: Kermany test split, CC BY 4.0), 8-bit gray."""
    from PIL import Image

    with Image.open(REPO / "examples" / "xray" / "kermany_normal_2.png") as im:
        return np.asarray(im.convert("L"))


@needs_model
@pytest.mark.parametrize("card", XRAY_CARDS, ids=lambda c: c.name)
def test_diagnose_xray_answers_the_same_for_png_16bit_png_and_dicom(client, tmp_path, card):
    from gradio_client import handle_file

    x = example_film()  # a real film: a synthetic one is withheld by the in-distribution gate (test_gate)
    files = {"film.png": png8(x), "film16.png": png16(x), "film.dcm": dicom_bytes(x.astype(np.uint16) * 16),
             "film_no_extension": dicom_bytes(4095 - x.astype(np.uint16) * 16, photometric="MONOCHROME1")}
    answers = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out = client.predict(handle_file(str(tmp_path / name)), card.name, "fp32", api_name="/diagnose_xray")
        assert out["not_for_clinical_use"] is True and out["label"] in card.labels
        assert set(out["probabilities"]) == set(card.labels)
        assert sum(out["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert ("source_confound_probe" in out) == ("confound_probe" in card.metrics)  # the evidence travels with it
        answers.append(out)
    for a in answers[1:]:
        assert a["label"] == answers[0]["label"]
        for k, v in a["probabilities"].items():
            assert v == pytest.approx(answers[0]["probabilities"][k], abs=0.02)


@needs_model
def test_diagnose_xray_refuses_bad_files_with_a_message(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    cases = {"no_pixels.dcm": (dicom_bytes(film(), pixel_data=False), "no image"),
             "broken.dcm": (dicom_bytes(film())[:-5000], "damaged"),
             "text.png": (b"hello, not an image", "Could not read"),
             "tiny.png": (png8(np.zeros((3, 3), np.uint8)), "too small")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(tmp_path / name)), XRAY_CARDS[0].name, "fp32", api_name="/diagnose_xray")
    colored = tmp_path / "red.png"
    Image.new("RGB", (300, 300), (220, 30, 30)).save(colored)
    out = client.predict(handle_file(str(colored)), XRAY_CARDS[0].name, "fp32", api_name="/diagnose_xray")
    assert any("coloured" in w for w in out["warnings"])


@needs_model
def test_rest_predict_takes_dicom_and_refuses_broken_ones(app_url):
    import httpx

    name = XRAY_CARDS[0].name
    url = f"{app_url}api/v1/predict/{name}"
    ok = httpx.post(url, files={"image": ("film.dcm", dicom_bytes(example_film().astype(np.uint16) * 16))},
                    timeout=30)
    assert ok.status_code == 200, ok.text
    assert ok.json()["label"] in XRAY_CARDS[0].labels
    for data, status, reason in [(dicom_bytes(film(), pixel_data=False), 422, "no image"),
                                 (dicom_bytes(film())[:-5000], 415, "damaged")]:
        r = httpx.post(url, files={"image": ("x.dcm", data)}, timeout=30)
        assert r.status_code == status and reason in r.json()["detail"]


@pytest.mark.data
@needs_model
def test_real_films_through_the_app(client, tmp_path, kermany_test):
    """A normal and a pneumonia film from the official test set, as PNG and as 16-bit PNG."""
    from gradio_client import handle_file

    card = next(c for c in XRAY_CARDS if c.name == "xray_pneumonia")
    from convscope.runtime import MODELS_DIR, make_session

    probs = M.predict_probs(make_session(MODELS_DIR / card.file), kermany_test.x)
    conf = np.where(kermany_test.y == 1, probs[:, 1], probs[:, 0])
    for cls in (0, 1):  # the most confidently right film of each class
        i = int(np.argmax(np.where(kermany_test.y == cls, conf, -1)))
        for name, data in {"film.png": png8(kermany_test.x[i, ..., 0]),
                           "film16.png": png16(kermany_test.x[i, ..., 0])}.items():
            (tmp_path / name).write_bytes(data)
            out = client.predict(handle_file(str(tmp_path / name)), card.name, "fp32", api_name="/diagnose_xray")
            assert out["label"] == card.labels[cls], name


@pytest.mark.parametrize("card", [c for c in CARDS if c.metrics.get("transfer_learning")], ids=lambda c: c.name)
def test_the_transfer_learning_gain_is_stated_with_what_else_differed(card):
    from convscope.card_text import transfer_sentence

    tl = card.metrics["transfer_learning"]
    text = transfer_sentence(card)
    assert f"{tl['accuracy_gain_pp']:+.2f} points" in text and f"{tl['roc_auc_gain']:+.4f}" in text
    assert tl["config_differences"], "the baseline's recipe differs at least in its learning rate"
    for k, d in tl["config_differences"].items():
        assert f"{k} {d['pretrained']} vs {d['from_scratch']}" in text
