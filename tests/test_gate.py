"""The in-distribution gate (export.gate): the graph computes what the code says, the shipped files
carry it, every answer applies it, and on real files it withholds what it should."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from PIL import Image

from convscope.answers import answer, answer_bytes, decide
from convscope.runtime import MODELS_DIR, load_registry, make_session
from export import negatives
from export.gate import FEATURES, OUTPUT, head_scores, run, with_features, with_gate, without_gate
from tests.conftest import CARDS, REPO

GATED = [c for c in CARDS if c.output_names("probs")]
EXAMPLE_PHOTOS = sorted((REPO / "examples" / "photos").glob("*.jpg"))
EXAMPLE_FILMS = sorted((REPO / "examples" / "xray").glob("*.png")) + sorted((REPO / "examples" / "xray").glob("*.dcm"))


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_every_served_classifier_ships_a_gate_in_its_graph():
    assert GATED
    for card in GATED:
        assert card.ood["threshold"] is not None and card.output_names("ood_score") == [OUTPUT], card.name
        model = onnx.load(MODELS_DIR / card.file)
        assert OUTPUT in [o.name for o in model.graph.output], card.name
        for v in card.shipped_variants():  # each variant runs the same gate on its own features
            assert OUTPUT in [o.name for o in onnx.load(MODELS_DIR / card.variants[v]["file"]).graph.output]
        m = card.ood["measured_on_held_out"]["own"]
        assert m["val"]["withheld_share"] <= 1 - 0.99, card.name  # the threshold keeps >= 99% of validation


def test_features_are_each_stages_channel_mean_and_std():
    card = next(c for c in CARDS if c.name == "mnist_lenet5")
    base = without_gate(onnx.load(MODELS_DIR / card.file))
    stages = card.output_names("feature_map")
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    sess = make_session(with_features(base, stages).SerializeToString())
    feats, *maps = sess.run([FEATURES, *stages], {"image": x})
    want = np.concatenate([m.mean((2, 3)) for m in maps] + [m.std((2, 3)) for m in maps], 1)
    # the graph's one-pass variance (E[x^2] - E[x]^2 in float32) against numpy's float64 std
    np.testing.assert_allclose(feats, want, rtol=1e-4, atol=5e-4)


def test_the_gate_graph_computes_the_head_and_comes_off_cleanly():
    card = next(c for c in CARDS if c.name == "mnist_cnn")
    shipped = onnx.load(MODELS_DIR / card.file)
    base = without_gate(shipped)
    assert OUTPUT not in [o.name for o in base.graph.output]
    assert not [n for n in base.graph.node if any(o.startswith("ood/") for o in n.output)]
    featured = with_features(base, card.output_names("feature_map"))
    rng = np.random.default_rng(1)
    d = run(featured, FEATURES, np.zeros((1, 28, 28, 1), np.uint8)).shape[1]
    layers = [(rng.normal(size=(d, 5)), rng.normal(size=5)), (rng.normal(size=(5, 1)), rng.normal(size=1))]
    x = rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    gated = with_gate(featured, layers)
    np.testing.assert_allclose(run(gated, OUTPUT, x), head_scores(layers, run(featured, FEATURES, x)), rtol=1e-3,
                               atol=1e-3)
    np.testing.assert_array_equal(run(base, "probs", x), run(shipped, "probs", x))  # the model itself is untouched


def test_negatives_are_the_same_pixels_for_the_same_seed():
    a = negatives.generate(negatives.SYNTHETIC, 2, seed=7)
    b = negatives.generate(negatives.SYNTHETIC, 2, seed=7)
    c = negatives.generate(negatives.SYNTHETIC, 2, seed=8)
    for name in negatives.SYNTHETIC:
        assert all(np.array_equal(x, y) for x, y in zip(a[name], b[name], strict=True)), name
        assert not all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a[name], c[name], strict=True))


def test_a_score_above_the_threshold_names_no_class_whatever_the_probabilities():
    card = next(c for c in GATED if c.tab == "xray")
    probs = np.array([0.01, 0.99] + [0.0] * (len(card.labels) - 2))
    bar = card.ood["threshold"]
    out = decide(probs, card, bar + 0.5)
    assert out.label is None and out.rule == "out_of_distribution" and out.out_of_distribution
    assert "does not look like a chest X-ray" in out.reason
    kept = decide(probs, card, bar - 0.5)
    assert kept.label is not None and kept.out_of_distribution is False


def test_the_example_photos_are_not_read_as_chest_films_or_digits(registry):
    """Every example photo is withheld by the X-ray tab's default model and both digit models;
    xray_covid3's gate lets the cat through (docs/gate.md, Limits): at least 4 of 5."""
    for card in GATED:
        if card.tab == "cifar10":
            continue
        answers = [answer_bytes(registry.models[card.name], p.read_bytes()).to_json() for p in EXAMPLE_PHOTOS]
        withheld = [a for a in answers if a["out_of_distribution"]]
        assert all(a["label"] is None and a["ood_score"] > a["ood_threshold"] for a in withheld)
        assert len(withheld) >= (4 if card.name == "xray_covid3" else 5), (card.name, answers)
        assert len(withheld) / len(answers) == card.ood["measured_on_held_out"]["negatives"]["example_photos"][
            "withheld_share"]  # as the card says


@pytest.mark.parametrize("path", EXAMPLE_FILMS, ids=lambda p: p.name)
def test_the_example_films_are_answered_by_every_xray_model(registry, path):
    for card in (c for c in GATED if c.tab == "xray"):
        a = answer_bytes(registry.models[card.name], path.read_bytes()).to_json()
        assert a["out_of_distribution"] is False and a["label"] in card.labels, (card.name, a)


def test_drawn_digits_pass_and_a_dot_does_not(registry):
    from PIL import ImageDraw

    from tests.test_browser import STROKES

    dot = Image.new("L", (280, 280), 255)
    dot.paste(0, (130, 130, 150, 150))
    drawn = {}
    for digit, strokes in STROKES.items():  # the browser test's digits, with the Digits tab's pen (radius 12)
        img = Image.new("L", (280, 280), 255)
        for stroke in strokes:
            ImageDraw.Draw(img).line([(x * 280, y * 280) for x, y in stroke], fill=0, width=24, joint="curve")
        drawn[digit] = img
    for card in (c for c in GATED if c.tab == "digits"):
        m = registry.models[card.name]
        for path in sorted((REPO / "examples").glob("digit_*.png")):
            a = answer_bytes(m, path.read_bytes())
            assert a.label == path.stem[-1] and a.decision.out_of_distribution is False, (card.name, path.name)
        for what, img in drawn.items():
            assert answer(m, img).decision.out_of_distribution is False, (card.name, what)
        assert answer(m, dot).decision.out_of_distribution is True, card.name


@pytest.mark.data
@pytest.mark.parametrize("card", [c for c in GATED if c.tab == "digits"], ids=lambda c: c.name)
def test_mnist_test_digits_pass_the_gate(registry, card, mnist_test):
    """At most 1% of MNIST's test digits withheld (the issue's goal), on the shipped file."""
    scores = registry.models[card.name].run(["ood_score"], mnist_test.x)[0]
    assert (scores > card.ood["threshold"]).mean() <= 0.01


@pytest.mark.data
@pytest.mark.parametrize("card", [c for c in GATED if c.tab == "cifar10"], ids=lambda c: c.name)
def test_cifar_test_photos_pass_and_mnist_digits_do_not(registry, card, cifar_test, mnist_test):
    m = registry.models[card.name]
    assert (m.run(["ood_score"], cifar_test.x[:2000])[0] > card.ood["threshold"]).mean() <= 0.03
    digits = np.stack([m.prepare(255 - d[..., 0]) for d in mnist_test.x[:300]])
    assert (m.run(["ood_score"], digits)[0] > card.ood["threshold"]).mean() >= 0.95


def test_the_card_says_what_the_figures_were_measured_on():
    for card in GATED:
        held = card.ood["measured_on_held_out"]
        assert held["negative_seed"] != card.ood["fitted_on"]["negative_seed"]
        assert set(held["negatives"]) and held["negatives_all"]["n"] == sum(v["n"] for v in held["negatives"].values())
        assert card.ood["cost"]["gate_ms"] < 1.0, card.name  # the goal: under 1 ms per image
