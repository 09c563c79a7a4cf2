"""Teach: learning new classes torch-free, the file it makes, its limits and refusals, and its doors."""

from __future__ import annotations

import io
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from convscope import teach
from convscope.answers import answer_uploaded
from convscope.runtime import load_registry, make_session

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def picture(colour: tuple, seed: int, side: int = 96) -> np.ndarray:
    """A noisy image of one colour with a random shape on it: easy to tell apart by colour."""
    rng = np.random.default_rng(seed)
    x = np.clip(np.array(colour) + rng.normal(0, 30, (side, side, 3)), 0, 255).astype(np.uint8)
    y0, x0 = rng.integers(0, side // 2, 2)
    x[y0:y0 + side // 3, x0:x0 + side // 3] = rng.integers(0, 256, 3)
    return x


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def items(n: int = 6) -> list[tuple[str, np.ndarray]]:
    return [(name, picture(c, 10 * i + j)) for i, (name, c) in enumerate(COLOURS.items()) for j in range(n)]


@pytest.fixture(scope="module")
def backbone():
    return teach.backbone_of(load_registry())


@pytest.fixture(scope="module")
def taught(backbone):
    return teach.teach(items(), backbone)


def test_a_few_images_per_class_teach_a_model_that_answers(taught):
    held = taught.card["held_out"]
    assert held["n"] == 3 and held["accuracy"] == 1.0  # one held-out image of each colour, all right
    assert taught.card["labels"] == list(COLOURS)
    assert taught.card["images_per_class"] == {k: 6 for k in COLOURS}
    a = answer_uploaded(taught.model, picture(COLOURS["green"], 999))
    assert a.label == "green" and a.to_json()["out_of_distribution"] is None  # (a taught model has no gate)
    assert taught.model.cam_head is not None  # a linear head on a global average pool: an exact CAM
    curves = taught.card["training"]["curves"]
    assert curves and curves[-1]["train"]["accuracy"] == 1.0


def test_the_composed_file_equals_backbone_features_times_the_head(backbone):
    data = teach.build_dataset(items(4))
    f = backbone.features(data.images)
    head = teach.fit_head(f, data.y, f[:0], data.y[:0], 3)
    sess = make_session(teach.compose(backbone, head, {"labels": data.labels}))
    probs, cam, last = sess.run(["probs", "cam", "head"], {"image": data.images})
    np.testing.assert_allclose(probs, head.probs(f), atol=1e-5)
    # the CAM is the head's weights over the last stage: its spatial mean is the logits minus the bias
    np.testing.assert_allclose(cam.mean((2, 3)), f @ head.weight, rtol=1e-4, atol=1e-3)
    assert cam.shape == (len(f), 3, *last.shape[2:])


def test_a_binary_model_is_a_two_way_softmax(backbone):
    two = [(n, x) for n, x in items(4) if n != "blue"]
    t = teach.teach(two, backbone)
    assert t.card["labels"] == ["red", "green"] and answer_uploaded(t.model, picture(COLOURS["red"], 7)).label == "red"


@pytest.mark.parametrize("labels, why", [
    (["a", "a"], "at least 2 classes"),
    (["a", " "], "empty"),
    (["Cat", "cat"], "capitals"),
    ([str(i) for i in range(11)], "At most 10 classes"),
    (["x" * 41, "b"], "40 characters"),
])
def test_class_names_that_cannot_work_are_refused(labels, why):
    with pytest.raises(teach.TeachError, match=why):
        teach.class_names(labels)


def test_refusals_and_warnings_of_a_dataset(monkeypatch):
    with pytest.raises(teach.TeachError, match="Add some images"):
        teach.build_dataset([])
    with pytest.raises(teach.TeachError, match="at least 16 px"):
        teach.build_dataset([("a", np.zeros((8, 8, 3), np.uint8)), ("b", picture((1, 2, 3), 1))])
    monkeypatch.setattr(teach, "MAX_PER_CLASS", 3)
    with pytest.raises(teach.TeachError, match="At most 3 images per class"):
        teach.build_dataset(items(4))
    monkeypatch.setattr(teach, "MAX_PER_CLASS", 60)
    same = picture(COLOURS["red"], 1)
    blues = [("blue", picture(COLOURS["blue"], i)) for i in range(9)]
    data = teach.build_dataset([("red", same), ("blue", same), *blues])
    text = " ".join(data.warnings)
    assert "same image is in 'red' and 'blue'" in text and "Few images in ['red']" in text and "Unbalanced" in text


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_a_zip_of_class_folders_is_read_and_junk_is_skipped():
    data = zip_of({"pets/red/1.png": png(picture(COLOURS["red"], 1)),
                   "pets/blue/2.jpg": png(picture(COLOURS["blue"], 2)),
                   "pets/blue/notes.txt": b"hello", "__MACOSX/pets/red/._1.png": b"junk",
                   "top.png": png(picture((0, 0, 0), 3)), "pets/red/broken.png": b"\x89PNG not really"})
    got, notes = teach.read_zip(data)
    assert sorted(k for k, _ in got) == ["blue", "red"] and all(x.shape == (224, 224, 3) for _, x in got)
    assert notes and "Skipped" in notes[0]


@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "a/../../evil.png", "C:/evil.png"])
def test_zip_entries_that_leave_the_archive_are_refused(name):
    with pytest.raises(teach.TeachError, match="outside"):
        teach.read_zip(zip_of({name: png(picture(COLOURS["red"], 1))}))


def test_zip_bombs_and_non_zips_are_refused(monkeypatch):
    monkeypatch.setattr(teach, "MAX_UNZIPPED_BYTES", 1_000_000)
    bomb = zip_of({"a/zeros.png": b"\0" * 2_000_000})  # 2 KB compressed, 2 MB unpacked
    assert len(bomb) < 20_000
    with pytest.raises(teach.TeachError, match="zip bomb"):
        teach.read_zip(bomb)
    with pytest.raises(teach.TeachError, match="not a zip"):
        teach.read_zip(b"PK\x03\x04 not a zip at all")
    with pytest.raises(teach.TeachError, match="No images in class folders"):
        teach.read_zip(zip_of({"readme.txt": b"hi"}))
    monkeypatch.setattr(teach, "MAX_ZIP_BYTES", 10)
    with pytest.raises(teach.TeachError, match="at most"):
        teach.read_zip(zip_of({"a/1.png": b"x" * 100}))


def test_rest_teaches_then_predicts_with_the_new_model(app_url):
    files = [("images", (f"{n}{i}.png", png(x))) for i, (n, x) in enumerate(items(5))]
    labels = [n for n, _ in items(5)]
    r = httpx.post(f"{app_url}api/v1/teach", files=files, data={"labels": labels}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["card"]["labels"] == list(COLOURS) and body["card"]["held_out"]["n"] == 3
    blue = png(picture(COLOURS["blue"], 77))
    p = httpx.post(f"{app_url}api/v1/predict/{body['id']}", files={"image": ("b.png", blue)}, timeout=30)
    assert p.status_code == 200 and p.json()["label"] == "blue", p.text


@pytest.mark.parametrize("labels, why", [(["red"] * 14, "labels"), (["red"] * 15, "at least 2 classes")])
def test_rest_teach_refuses_with_a_reason(app_url, labels, why):
    files = [("images", (f"{i}.png", png(x))) for i, (_, x) in enumerate(items(5))]
    r = httpx.post(f"{app_url}api/v1/teach", files=files, data={"labels": labels}, timeout=60)
    assert r.status_code == 422 and why in r.json()["detail"], r.text


def test_the_gradio_teach_endpoint_gives_an_id_rest_can_use(client, app_url, tmp_path):
    from gradio_client import handle_file

    paths, labels = [], []
    for i, (n, x) in enumerate(items(4)):
        p = tmp_path / f"{i}.png"
        p.write_bytes(png(x))
        paths.append(handle_file(str(p)))
        labels.append(n)
    out = client.predict(paths, "\n".join(labels), api_name="/teach")
    assert out["card"]["labels"] == list(COLOURS)
    r = httpx.post(f"{app_url}api/v1/predict/{out['id']}", files={"image": ("r.png", png(picture(COLOURS["red"], 5)))},
                   timeout=30)
    assert r.json()["label"] == "red"


def test_the_tab_refuses_a_named_class_without_images_and_images_without_a_class():
    from convscope.tabs.teach import gather

    img = picture(COLOURS["red"], 1)
    with pytest.raises(teach.TeachError, match="'dog' has no images"):
        gather(["cat", "dog", ""], [None, None, None], {0: [img]}, 3)
    with pytest.raises(teach.TeachError, match="Class 2 has images but no name"):
        gather(["cat", " "], [None, None], {0: [img], 1: [img]}, 2)
    got = gather(["cat", "dog", "hidden"], [None, None, None], {0: [img], 1: [img], 2: [img]}, 2)
    assert [k for k, _ in got] == ["cat", "dog"]  # slots not shown do not count
