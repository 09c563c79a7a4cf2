"""A real browser draws digits on the Digits tab and reads both models' answers.

Uses Debian's chromium through python playwright (``playwright install`` cannot work offline).
Skips when chromium is absent, unless CONVSCOPE_REQUIRE_BROWSER=1 (as .ci/run sets), where a
missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil

import pytest

from convscope.tabs.digits import SKETCH_ID
from tests.conftest import CARDS, REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DIGIT_MODELS = [c.name for c in CARDS if c.tab == "digits"]

# Strokes in canvas fractions (0..1), a few waypoints each: every mouse move costs ~0.15 s of
# software WebGL here, so digits are drawn as short polylines.
STROKES = {
    "1": [[(0.52, 0.15), (0.52, 0.5), (0.52, 0.85)]],
    "7": [[(0.28, 0.2), (0.5, 0.2), (0.72, 0.2), (0.6, 0.5), (0.48, 0.85)]],
    "0": [[(0.5, 0.15), (0.32, 0.3), (0.3, 0.55), (0.38, 0.8), (0.55, 0.85), (0.68, 0.65),
           (0.7, 0.4), (0.62, 0.2), (0.5, 0.15)]],
}


@pytest.fixture(scope="module")
def page(app_url):
    if not CHROMIUM:
        if os.environ.get("CONVSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.goto(app_url)
        pg.wait_for_selector(f"#{SKETCH_ID} .pixi-target canvas", timeout=60_000)
        pg.wait_for_timeout(1500)  # let the on-load script pick the brush
        yield pg
        browser.close()


def draw(page, strokes) -> None:
    canvas = page.locator(f"#{SKETCH_ID} .pixi-target canvas").first
    box = canvas.bounding_box()
    for stroke in strokes:
        (x0, y0), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=2)
        page.mouse.up()


def clear(page) -> None:
    page.locator("#digit-clear").click()
    page.wait_for_function(
        "() => document.querySelector('#digit-status')?.innerText.includes('Draw a digit')", timeout=15_000)


def read_label(page, model: str) -> str:
    return page.locator(f"#label-{model} [data-testid='label-output-value']").inner_text().strip()


@pytest.mark.browser
def test_empty_canvas_asks_for_a_digit(page):
    assert "Draw a digit" in page.locator("#digit-status").inner_text()


@pytest.mark.browser
@pytest.mark.parametrize("digit", list(STROKES))
def test_drawn_digits_are_read_by_both_models(page, digit):
    draw(page, STROKES[digit])  # no tool click: the app selects the brush on load and after Clear
    for model in DIGIT_MODELS:
        page.wait_for_function(
            """([sel, want]) => { const e = document.querySelector(sel); return e && e.innerText.trim() === want; }""",
            arg=[f"#label-{model} [data-testid='label-output-value']", digit], timeout=20_000)
        assert read_label(page, model) == digit
    assert page.locator("#digit-preview img").count() == 1  # the 28x28 input is shown
    page.screenshot(path=os.environ.get("CONVSCOPE_SCREENSHOT", "/tmp/convscope-digits.png"))
    clear(page)


@pytest.mark.browser
def test_feature_maps_tab_shows_the_grids_of_a_drawn_digit(page):
    page.get_by_role("tab", name="Feature maps").click()
    page.wait_for_selector("#fm-sketch .pixi-target canvas", timeout=30_000)
    page.locator('#fm-sketch button[aria-label="Brush"]').first.click()
    canvas = page.locator("#fm-sketch .pixi-target canvas").first
    box = canvas.bounding_box()
    pts = STROKES["7"][0]
    page.mouse.move(box["x"] + pts[0][0] * box["width"], box["y"] + pts[0][1] * box["height"])
    page.mouse.down()
    for x, y in pts[1:]:
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=2)
    page.mouse.up()
    page.wait_for_selector("#fm-grid-0 img", timeout=20_000)
    page.wait_for_function("() => document.querySelector('#fm-status')?.innerText.includes('ms')", timeout=20_000)
    assert page.locator("#fm-top [data-testid='label-output-value']").inner_text().strip() == "7"
    for i in range(3):  # every stage of the default model has its grid
        assert page.locator(f"#fm-grid-{i} img").count() == 1
    page.screenshot(path=os.environ.get("CONVSCOPE_FM_SCREENSHOT", "/tmp/convscope-feature-maps.png"), full_page=True)


@pytest.mark.browser
def test_cifar_tab_classifies_an_uploaded_photo(page):
    page.get_by_role("tab", name="CIFAR-10").click()
    page.locator("#cifar-photo input[type=file]").set_input_files(str(REPO / "examples" / "photos" / "cat_chelsea.jpg"))
    sel = "#cifar-label [data-testid='label-output-value']"
    page.wait_for_function(f"() => document.querySelector(\"{sel}\")?.innerText.trim().length > 0", timeout=30_000)
    assert page.locator(sel).inner_text().strip() == "cat"
    assert page.locator("#cifar-seen img").count() == 1  # the 32x32 input is shown
    assert "cat" in page.locator("#cifar-status").inner_text()
    page.screenshot(path=os.environ.get("CONVSCOPE_CIFAR_SCREENSHOT", "/tmp/convscope-cifar.png"), full_page=True)


def upload_film(page, path: str) -> None:
    """Put a file in the X-ray tab's file input, removing the one shown first if there is one."""
    files = page.locator("#xray-file input[type=file]")
    if files.count() == 0:
        page.locator("#xray-file button[aria-label='Clear'], #xray-file button[title='Clear']").first.click()
    files.first.set_input_files(path)


@pytest.mark.browser
def test_xray_tab_reads_a_dicom_upload_and_shows_notice_decision_and_heatmap(page):
    if not any(c.tab == "xray" for c in CARDS):
        pytest.skip("no X-ray model shipped")
    path = os.environ.get("CONVSCOPE_XRAY_FILE") or str(REPO / "examples" / "xray" / "kermany_normal_1.dcm")
    page.get_by_role("tab", name="X-ray").click()
    assert "not for clinical use" in page.locator("#xray-notice").inner_text()
    upload_film(page, path)
    page.wait_for_function("() => /suggested|most probable/.test(document.querySelector('#xray-decision')?.innerText)",
                           timeout=30_000)
    assert page.locator("#xray-heatmap img").count() == 1
    assert "specificity" in page.locator("#xray-decision").inner_text() or \
        "PPV" in page.locator("#xray-decision").inner_text()
    assert "not for clinical use" in page.locator("#xray-notice").inner_text()  # still there after the answer
    page.screenshot(path=os.environ.get("CONVSCOPE_XRAY_SCREENSHOT", "/tmp/convscope-xray.png"), full_page=True)


@pytest.mark.browser
def test_xray_tab_withholds_a_horse_silhouette(page):
    """The in-distribution gate: no class named, the reason and score in its place, the
    probabilities only in the collapsed "Answer anyway" view."""
    if not any(c.tab == "xray" for c in CARDS):
        pytest.skip("no X-ray model shipped")
    page.get_by_role("tab", name="X-ray").click()
    upload_film(page, str(REPO / "examples" / "photos" / "horse_silhouette.jpg"))
    page.wait_for_function(
        "() => /does not look like a chest X-ray/.test(document.querySelector('#xray-decision')?.innerText)",
        timeout=30_000)
    decision = page.locator("#xray-decision").inner_text()
    assert "score" in decision and "pneumonia" not in decision.lower()
    assert page.locator("#xray-label [data-testid='label-output-value']").count() == 0  # the big label is empty
    anyway = page.locator("#xray-label-anyway")
    assert anyway.is_visible() and "Answer anyway" in anyway.inner_text()
    anyway.get_by_text("Answer anyway").click()  # opens to the probabilities
    page.wait_for_selector("#xray-label-anyway-label [data-testid='label-output-value']", timeout=10_000)


EXPORT_RESNET18 = """
import sys, torch, torchvision
net = torchvision.models.resnet18(weights=None).eval()   # random weights: the structure is what is tested
torch.onnx.export(net, (torch.randn(1, 3, 224, 224),), sys.argv[1], dynamo=True, external_data=False)
"""


@pytest.mark.browser
def test_your_own_resnet18_opens_in_the_feature_maps_tab(page, tmp_path):
    """A ResNet-18 exported with torch.onnx.export in a fresh script, uploaded through the browser:
    predictions, every stage, filters, the layer table and a class-activation map."""
    import subprocess
    import sys

    pytest.importorskip("torchvision")
    model = tmp_path / "resnet18.onnx"
    subprocess.run([sys.executable, "-c", EXPORT_RESNET18, str(model)], check=True, capture_output=True, timeout=300)
    page.get_by_role("tab", name="Feature maps").click()
    page.get_by_role("tab", name="Your own model").click()
    page.locator("#own-file input[type=file]").set_input_files(str(model))
    page.wait_for_selector("#own-file .file-preview, #own-file a", timeout=60_000)
    page.locator("#own-open").click()
    page.wait_for_function("() => document.querySelector('#own-found')?.innerText.includes('parameters')",
                           timeout=60_000)
    import numpy as np
    import onnx

    weights = sum(int(np.prod(t.dims)) for t in onnx.load(str(model)).graph.initializer)  # BN folded into convs
    assert f"{weights:,} parameters" in page.locator("#own-found").inner_text()
    page.locator("#own-image input[type=file]").set_input_files(str(REPO / "examples" / "photos" / "cat_chelsea.jpg"))
    sel = "#own-top [data-testid='label-output-value']"
    page.wait_for_function(f"() => document.querySelector(\"{sel}\")?.innerText.trim().length > 0", timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('#own-stages img').length >= 5", timeout=30_000)
    assert page.locator("#own-filters img").count() >= 5
    assert page.locator("#own-heat img").count() == 1
    assert "Class-activation map" in page.locator("#own-where").inner_text()
    page.wait_for_selector("#own-conv-filters img", timeout=20_000)  # the first conv's filters, any conv by the picker
    page.get_by_text("Layers (read off the ONNX graph)").click()
    page.wait_for_function("() => document.querySelector('#own-layers')?.innerText.includes('[1, 64, 112, 112]')",
                           timeout=20_000)  # the first conv's row: op, output shape, params, FLOPs, receptive field
    assert "Conv" in page.locator("#own-layers").inner_text()
    page.screenshot(path=os.environ.get("CONVSCOPE_OWN_SCREENSHOT", "/tmp/convscope-own-model.png"), full_page=True)


@pytest.mark.browser
def test_teach_three_classes_then_open_the_model_in_feature_maps(page, tmp_path):
    """Name three classes, upload images to each, train, see the held-out result, open the model
    in Feature maps and see its answer and where it looks."""
    from tests.test_teach import COLOURS, picture, png

    page.get_by_role("tab", name="Teach").click()
    for i, (name, colour) in enumerate(COLOURS.items()):
        page.locator(f"#teach-name-{i} textarea, #teach-name-{i} input").first.fill(name)
        paths = []
        for j in range(5):
            (tmp_path / f"{name}{j}.png").write_bytes(png(picture(colour, 10 * i + j)))
            paths.append(str(tmp_path / f"{name}{j}.png"))
        page.locator(f"#teach-files-{i} input[type=file]").set_input_files(paths)
        page.wait_for_function(f"() => document.querySelector('#teach-count-{i}')?.innerText.includes('5 images')",
                               timeout=30_000)
    page.locator("#teach-train").click()
    page.wait_for_function("() => document.querySelector('#teach-status')?.innerText.includes('Trained')",
                           timeout=120_000)
    status = page.locator("#teach-status").inner_text()
    assert "held-out images right" in status, status
    assert "blue" in page.locator("#teach-confusion").inner_text()
    page.screenshot(path=os.environ.get("CONVSCOPE_TEACH_SCREENSHOT", "/tmp/convscope-teach.png"), full_page=True)
    page.locator("#teach-open").click()
    page.wait_for_function("() => document.querySelector('#own-found')?.innerText.includes('taught_')",
                           timeout=30_000)
    (tmp_path / "try.png").write_bytes(png(picture(COLOURS["green"], 99)))
    page.locator("#own-image input[type=file]").set_input_files(str(tmp_path / "try.png"))
    sel = "#own-top [data-testid='label-output-value']"
    page.wait_for_function(f"() => document.querySelector(\"{sel}\")?.innerText.trim() === 'green'", timeout=60_000)
    assert page.locator("#own-heat img").count() == 1  # the class-activation map of the taught head


@pytest.mark.browser
def test_a_cifar_example_keeps_the_chosen_model(page):
    import re

    page.get_by_role("tab", name="CIFAR-10").click()
    dropdown = page.locator("#cifar-model input").first
    dropdown.click()
    page.get_by_role("option", name=re.compile("Small GoogLeNet")).click()
    page.wait_for_function("() => document.querySelector('#cifar-model input')?.value.includes('GoogLeNet')",
                           timeout=10_000)
    before = page.locator("#cifar-status").inner_text()
    page.locator("#cifar-examples img").first.click()
    page.wait_for_function("(old) => { const t = document.querySelector('#cifar-status')?.innerText; "
                           "return t && t !== old && /ms/.test(t); }", arg=before, timeout=30_000)
    assert "GoogLeNet" in dropdown.input_value()  # the example set the photo, not the model


CHECKED = "(sel) => [...document.querySelectorAll(sel + ' input[type=radio]')].map(i => [i.checked, " \
          "i.closest('label')?.innerText.trim()])"


@pytest.mark.browser
def test_each_models_precision_radio_shows_what_really_runs(page):
    """The X-ray radio for xray_covid3 (which ships no INT8 file) offers FP32 alone, and goes back to
    INT8 for xray_pneumonia; the CIFAR radio shows FP32 for the model whose INT8 file is slower."""
    import re

    if not any(c.name == "xray_covid3" for c in CARDS):
        pytest.skip("no xray_covid3")
    page.get_by_role("tab", name="X-ray").click()
    page.locator("#xray-model").get_by_text(re.compile("COVID-19")).click()
    page.wait_for_function(f"() => ({CHECKED})('#xray-variant').length === 1", timeout=10_000)
    assert page.evaluate(CHECKED, "#xray-variant") == [[True, "FP32"]]
    page.locator("#xray-model").get_by_text(re.compile("^Pneumonia")).click()
    page.wait_for_function(f"() => ({CHECKED})('#xray-variant').length === 2", timeout=10_000)
    assert [True, "INT8"] in page.evaluate(CHECKED, "#xray-variant")
    page.get_by_role("tab", name="CIFAR-10").click()
    page.locator("#cifar-model input").first.click()
    page.get_by_role("option", name=re.compile("Small GoogLeNet")).click()
    page.wait_for_function(f"() => ({CHECKED})('#cifar-variant').some(([c, t]) => c && t === 'FP32')",
                           timeout=10_000)
