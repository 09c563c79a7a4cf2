"""Every shipped card against its file: the contract the app builds itself from."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest

from convscope.cards import CLASSIFIER_TABS, METADATA_KEY, CardError, ModelCard, sha256_file
from convscope.runtime import MODELS_DIR
from export.onnx_export import FEATURE_TOL, PARITY_TOL
from export.quantize import ships
from tests.conftest import CARDS, card_params


def test_cards_are_shipped():
    assert {"mnist_lenet5", "mnist_cnn", "imagenet_stem"} <= {c.name for c in CARDS}


@pytest.mark.parametrize("card", card_params())
def test_sha256_matches_file(card):
    assert sha256_file(MODELS_DIR / card.file) == card.sha256
    assert not (MODELS_DIR / f"{card.file}.data").exists(), "weights must live inside the .onnx"


@pytest.mark.parametrize("card", card_params())
def test_metadata_embeds_the_same_card(card):
    props = {p.key: p.value for p in onnx.load(str(MODELS_DIR / card.file), load_external_data=False).metadata_props}
    # read back through the schema, so fields added later with defaults (e.g. variants) compare equal
    embedded = ModelCard.from_dict(json.loads(props[METADATA_KEY]))
    assert json.loads(embedded.metadata_json()) == json.loads(card.metadata_json())


@pytest.mark.parametrize("card", card_params())
def test_graph_matches_the_card(card):
    sess = ort.InferenceSession(str(MODELS_DIR / card.file), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.type) == (card.input["name"], "tensor(uint8)")
    assert inp.shape[1:] == card.input["shape"][1:] and not isinstance(inp.shape[0], int)  # dynamic batch
    got = {o.name: o.shape for o in sess.get_outputs()}
    for o in card.outputs:
        assert got[o["name"]][1:] == o["shape"][1:]
    assert any(o["kind"] == "feature_map" for o in card.outputs)
    if card.tab in CLASSIFIER_TABS:
        assert card.outputs[0]["name"] == "probs" and card.outputs[0]["shape"][-1] == len(card.labels)


@pytest.mark.parametrize("card", card_params())
def test_card_is_complete(card):
    m = card.metrics
    assert m["measured_with"].startswith("onnxruntime")
    assert card.params > 0 and card.flops > 0
    # probabilities to PARITY_TOL; activations scaled by max(1, |output|) to FEATURE_TOL (export.onnx_export)
    assert card.parity.get("probs_max_abs_diff", card.parity["max_abs_diff"]) <= card.parity["tolerance"] <= PARITY_TOL
    assert card.parity.get("max_scaled_diff", card.parity["max_abs_diff"]) <= FEATURE_TOL
    assert card.data_sources and card.limitations and card.layers
    if card.tab not in CLASSIFIER_TABS:  # a published feature extractor: what was checked instead
        assert m["filters_max_abs_diff_to_source"] == 0.0
        return
    assert m["split"] == "test" and m["n"] > 0 and 0 < m["accuracy"] <= 1
    assert card.training["train_time_s"] > 0 and card.training["machine"]["cpu"]
    for key in ("curves", "confusion"):
        assert (MODELS_DIR / card.artifacts[key]).exists()


def test_bad_cards_are_refused(tmp_path):
    good = next(c for c in CARDS if c.tab == "digits").to_dict()
    with pytest.raises(CardError, match="missing"):
        ModelCard.from_dict({k: v for k, v in good.items() if k != "labels"})
    with pytest.raises(CardError, match="labels"):
        ModelCard.from_dict(good | {"labels": good["labels"][:-1]})
    with pytest.raises(CardError, match="tab"):
        ModelCard.from_dict(good | {"tab": "nope"})
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(CardError, match="cannot read"):
        ModelCard.load(tmp_path / "x.json")


@pytest.mark.parametrize("card", [c for c in card_params() if c.values[0].variants])
def test_variants_are_measured_and_shipped_only_within_their_bound(card):
    for name, v in card.variants.items():
        assert v["measured_with"].startswith("onnxruntime") and 0 < v["accuracy"] <= 1
        assert v["accuracy_drop_pp"] == pytest.approx(100 * (card.metrics["accuracy"] - v["accuracy"]), abs=1e-3)
        if name == "int8":
            assert v["shipped"] == ships(v["accuracy_drop_pp"])  # within the bound, either way (export.quantize)
            assert v["calibration_split"].startswith("training")
        else:  # one view of a net whose main file averages test-time-augmented views: an opt-in for speed
            assert name == "single_view" and v["shipped"] and v["flops"] < card.flops
        if v["shipped"]:
            assert v["file"] == f"{card.name}.{name}.onnx" and sha256_file(MODELS_DIR / v["file"]) == v["sha256"]
            sess = ort.InferenceSession(str(MODELS_DIR / v["file"]), providers=["CPUExecutionProvider"])
            quantized = any(n.op_type == "QuantizeLinear" for n in onnx.load(str(MODELS_DIR / v["file"])).graph.node)
            assert quantized == (name == "int8")
            assert {o.name for o in sess.get_outputs()} >= set(card.output_names("probs")), name
        else:
            assert not (MODELS_DIR / f"{card.name}.{name}.onnx").exists()
