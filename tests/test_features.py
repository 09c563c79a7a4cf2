"""Feature maps tab: maps, filters, CAM and the layer table of every served model, from ONNX alone."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

from convscope import visualize as viz
from convscope.inspection import MAX_CHANNELS, enlarge, inspect, render
from convscope.runtime import load_registry
from tests.conftest import card_params


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def seven() -> np.ndarray:
    img = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(img).line([(70, 60), (210, 60), (120, 240)], fill=0, width=24)
    return np.asarray(img)


@pytest.mark.parametrize("card", card_params())
def test_every_stage_filters_and_cam(card, registry):
    m = registry.models[card.name]
    ins = inspect(m, seven())
    assert list(ins.stages) == card.output_names("feature_map")
    if card.tab == "digits":
        assert ins.probs.argmax() == card.labels.index("7")
    for name, maps in ins.stages.items():
        spec = next(o for o in card.outputs if o["name"] == name)
        assert list(maps.shape) == spec["shape"][1:]
        assert spec["receptive_field"] is None or spec["receptive_field"] >= 3
        if card.output_names("filters") and name in ins.filters:
            assert ins.filters[name].shape[0] == maps.shape[0]  # one filter per output channel
    assert ins.filters, "every model shows at least its first layer's filters"
    r = render(ins, opacity=0.4)
    assert len(r["stages"]) == len(ins.stages)
    for s in r["stages"]:
        maps = ins.stages[s["name"]]
        n, h = min(maps.shape[0], MAX_CHANNELS), maps.shape[1]  # wide stages show their first channels
        rows = -(-n // s["cols"])
        assert s["grid"].size == (s["cols"] * (s["side"] + 2) - 2, rows * (s["side"] + 2) - 2)
        assert s["side"] % h == 0  # integer nearest-neighbour upscale: crisp pixels
    assert (r["cam"] is not None) == bool(card.output_names("cam"))
    assert enlarge(ins, card.output_names("feature_map")[-1], 0).size[0] >= 200
    assert card.layers and any(row["op"] == "Conv" for row in card.layers)


@pytest.mark.parametrize("card", [c for c in card_params("digits") if c.values[0].output_names("cam")])
def test_cam_points_at_the_ink(card, registry):
    """The predicted class's evidence sits on the stroke, not on the empty background."""
    ins = inspect(registry.models[card.name], seven())
    cam = ins.cam[ins.probs.argmax()]
    ink = np.asarray(Image.fromarray(ins.image[..., 0]).resize(cam.shape[::-1], Image.Resampling.BOX)) > 40
    assert cam[ink].mean() > cam[~ink].mean()


def test_grid_click_maps_to_the_right_channel():
    maps = np.random.default_rng(0).random((20, 7, 7)).astype(np.float32)
    _, _, _, cols, side = viz.activation_grid(maps)
    for ch in (0, 9, 19):
        r, c = divmod(ch, cols)
        x, y = c * (side + 2) + side // 2, r * (side + 2) + side // 2
        assert viz.grid_cell(x, y, side, side, cols, len(maps)) == ch
    assert viz.grid_cell(side, 0, side, side, cols, len(maps)) is None  # the gap between tiles 0 and 1
    assert viz.grid_cell(cols * (side + 2) - 3, 2 * (side + 2) + 1, side, side, cols, len(maps)) is None  # past 19


def test_colormaps_and_legend():
    rgb = viz.colorize(np.array([[0.0, 0.5, 1.0]]), 0, 1)
    assert rgb.shape == (1, 3, 3) and tuple(rgb[0, 0]) == (68, 1, 84) and tuple(rgb[0, 2]) == (253, 231, 37)
    assert viz.colorbar(-1, 1, "diverging", "weight").size == (320, 38)


@pytest.mark.parametrize("card", card_params())
def test_feature_maps_api(client, tmp_path, card):
    path = tmp_path / "seven.png"
    Image.fromarray(seven()).save(path)
    gallery = client.predict(card.name, handle_file(str(path)), api_name="/feature_maps")
    assert len(gallery) == len(card.output_names("feature_map"))
    assert all(g["caption"].split(":")[0] in card.output_names("feature_map") for g in gallery)


def test_feature_maps_api_bad_input(client, tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(path)
    with pytest.raises(AppError, match="blank or uniform"):
        client.predict("mnist_cnn", handle_file(str(path)), api_name="/feature_maps")
