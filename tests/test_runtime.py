"""Model discovery and integrity: a bad model disables only itself, with a reason."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from convscope.runtime import CPU, MODELS_DIR, load_registry
from convscope.ui import build_app
from tests.conftest import CARDS


@pytest.fixture
def models_copy(tmp_path):
    shutil.copytree(MODELS_DIR, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_all_shipped_models_load_on_cpu():
    reg = load_registry()
    assert not reg.broken
    assert set(reg.models) == {c.name for c in CARDS}
    assert all(m.provider == CPU for m in reg.models.values())  # onnxruntime (CPU build) in CI


def test_int8_is_the_default_where_shipped_and_faster_and_the_environment_can_change_that(monkeypatch):
    reg = load_registry()
    for card in CARDS:
        m = reg.models[card.name]
        want = "int8" if card.int8_is_faster() else "fp32"
        assert m.default_variant == want and m.resolve("default") == want and m.resolve("") == want
        assert m.resolve("fp32") == "fp32" and m.variant_error("default") is None
        assert "'default'" in m.variant_error("fp16") and "'fp16'" in m.variant_error("fp16")
    assert any(m.default_variant == "int8" for m in reg.models.values())
    monkeypatch.setenv("CONVSCOPE_PRECISION", "int8")  # wherever shipped, faster or not
    assert all(m.default_variant == ("int8" if "int8" in m.variants else "fp32") for m in reg.models.values())
    monkeypatch.setenv("CONVSCOPE_PRECISION", "FP32")
    assert all(m.default_variant == "fp32" for m in reg.models.values())
    monkeypatch.setenv("CONVSCOPE_PRECISION", "fp16")  # not shipped by any card: the main file
    assert all(m.default_variant == "fp32" for m in reg.models.values())


def test_int8_is_faster_compares_the_two_latencies_export_measured():
    card = next(c for c in CARDS if "int8" in c.shipped_variants())
    fast, slow = copy.deepcopy(card), copy.deepcopy(card)
    fast.variants["int8"]["latency"]["median_ms"] = fast.artifacts["latency"]["median_ms"] / 2
    slow.variants["int8"]["latency"]["median_ms"] = slow.artifacts["latency"]["median_ms"] * 2
    assert fast.int8_is_faster() and not slow.int8_is_faster()
    fast.variants["int8"]["shipped"] = False
    assert not fast.int8_is_faster()


def test_tampered_file_disables_only_its_model(models_copy):
    victim = models_copy / "mnist_lenet5.onnx"
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.write_bytes(bytes(data))
    reg = load_registry(models_copy)
    assert "mnist_lenet5" not in reg.models and "mnist_cnn" in reg.models
    assert "does not match its card" in reg.broken["mnist_lenet5"]


@pytest.mark.parametrize("card", [c for c in CARDS if c.shipped_variants()], ids=lambda c: c.name)
def test_tampered_int8_file_disables_only_that_variant(models_copy, card):
    victim = models_copy / card.variants["int8"]["file"]
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.write_bytes(bytes(data))
    reg = load_registry(models_copy)
    others = [v for v in card.shipped_variants() if v != "int8"]
    assert reg.models[card.name].variant_names == ["fp32", *others]  # the fp32 file (and any other variant) serves
    assert reg.models[card.name].default_variant == "fp32"  # and is what a request without a variant gets
    assert "does not match its card" in reg.broken[f"{card.name}.int8"]
    assert f"{card.name}.int8" in reg.broken_for_tab((card.name,))


@pytest.mark.parametrize("damage", ["delete_onnx", "bad_json", "wrong_labels"])
def test_broken_models_are_reported(models_copy, damage):
    card = models_copy / "mnist_cnn.json"
    if damage == "delete_onnx":
        (models_copy / "mnist_cnn.onnx").unlink()
    elif damage == "bad_json":
        card.write_text("{")
    else:
        d = json.loads(card.read_text())
        d["labels"] = d["labels"][:5]
        card.write_text(json.dumps(d))
    reg = load_registry(models_copy)
    assert "mnist_cnn" in reg.broken and "mnist_cnn" not in reg.models
    assert "mnist_lenet5" in reg.models


def test_app_shows_a_notice_for_a_missing_model(models_copy):
    (models_copy / "mnist_cnn.json").unlink()
    demo = build_app(models_copy)
    texts = [c.get("props", {}).get("value") for c in demo.config["components"]]
    notice = next(t for t in texts if isinstance(t, str) and "not available" in t)
    assert "mnist_cnn" in notice
    assert "mnist_lenet5" in demo.registry.models


def test_app_builds_with_no_models_at_all(tmp_path):
    demo = build_app(tmp_path)
    texts = [c.get("props", {}).get("value") for c in demo.config["components"]]
    assert any(isinstance(t, str) and "mnist_cnn" in t and "not available" in t for t in texts)


def test_served_model_runs_a_batch():
    reg = load_registry()
    m = reg.models["mnist_cnn"]
    probs = m.probs(np.zeros((3, 28, 28, 1), np.uint8))
    assert probs.shape == (3, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_app_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, app; assert 'torch' not in sys.modules, 'torch imported at serving time'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=MODELS_DIR.parent, timeout=120)
