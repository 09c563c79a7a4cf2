"""Your own ONNX model: real classifiers exported in the test load, predict, show every stage and
its filters, and say where they look; a corpus of hostile models is refused before ONNX Runtime
sees it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from convscope.onnx_graph import UnsafeModel  # noqa: E402
from convscope.user_models import filters, look, open_model  # noqa: E402

CAT = Image.open(REPO / "examples" / "photos" / "cat_chelsea.jpg")
SIDE = 112  # px: every torchvision classifier here takes it (adaptive pooling), at a quarter of 224's cost


def export(net: torch.nn.Module, shape: tuple, dynamic_batch: bool = True) -> bytes:
    """The model as `torch.onnx.export` writes it in a fresh script: one self-contained file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(net.eval(), (torch.randn(*shape),), str(path), dynamo=True, external_data=False,
                          input_names=["input"], output_names=["logits"], verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None)
        return path.read_bytes()


@pytest.fixture(scope="module")
def torchvision_models():
    torch.manual_seed(0)
    names = ["resnet18", "mobilenet_v3_small", "vgg11", "densenet121", "efficientnet_b0"]
    return {n: export(getattr(torchvision.models, n)(weights=None, num_classes=10), (1, 3, SIDE, SIDE)) for n in names}


class KerasStyle(torch.nn.Module):
    """NHWC float input, convs, global average pooling over the NHWC axes (1, 2), a dense layer:
    the graph tf2onnx writes for a small Keras CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.c1(x.permute(0, 3, 1, 2)))))
        return torch.softmax(self.fc(h.permute(0, 2, 3, 1).mean(dim=(1, 2))), dim=1)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vgg11", "densenet121", "efficientnet_b0"])
def test_torchvision_classifiers_open_predict_and_show_every_stage(torchvision_models, name, monkeypatch):
    import convscope.user_models as um

    monkeypatch.setattr(um, "MAX_MODEL_BYTES", 1 << 30)  # VGG-11's classifier alone is 0.5 GB
    monkeypatch.setattr(um, "MAX_TENSOR_BYTES", 1 << 31)
    m = open_model(torchvision_models[name], f"{name}.onnx")
    assert m.spec.layout == "NCHW" and m.spec.size == (SIDE, SIDE) and len(m.labels) == 10
    assert len(m.stages) >= 4, m.stages  # one per resolution: 56, 28, 14, 7 (and 112 for most)
    v = look(m, CAT)
    assert v.probs.shape == (10,) and v.probs.sum() == pytest.approx(1, abs=1e-5)
    sides = [s.shape[1] for s in v.stages.values()]
    assert sides == sorted(sides, reverse=True)  # from the input towards the head
    assert v.filters and all(w.ndim == 4 for w in v.filters.values())
    assert v.heat is not None and v.heat.ndim == 2 and np.isfinite(v.heat).all()
    # a global-average-pool + linear head has an exact CAM; the others get occlusion sensitivity
    assert v.heat_kind == {"resnet18": "cam", "densenet121": "cam", "efficientnet_b0": "cam",
                           "mobilenet_v3_small": "occlusion", "vgg11": "occlusion"}[name]
    assert m.layers and m.flops > 0 and m.params > 0
    convs = [n for n in onnx.load_from_string(torchvision_models[name]).graph.node if n.op_type == "Conv"]
    assert len(m.convs) == len(convs)  # the filters of every conv, not only the stages'
    assert all(filters(m, c).ndim == 4 for c in m.convs)


def test_a_keras_style_nhwc_model_gets_its_cam():
    m = open_model(export(KerasStyle(), (1, 32, 32, 3), dynamic_batch=False), "keras.onnx", preset="0-1")
    assert (m.spec.layout, m.spec.channels, m.spec.size) == ("NHWC", 3, (32, 32))
    v = look(m, CAT)
    assert v.heat_kind == "cam" and v.heat.shape == (16, 16) and len(v.stages) == 2


def test_the_cam_equals_autograd_grad_cam_on_resnet18():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    m = open_model(export(net, (1, 3, SIDE, SIDE)), "resnet18.onnx")
    v = look(m, CAT)
    from convscope.user_models import to_input

    x = torch.from_numpy(to_input(v.seen, m.spec, m.preset))
    feats = {}
    net.layer4.register_forward_hook(lambda _m, _i, out: feats.setdefault("a", out))
    logits = net(x)
    cls = int(logits.argmax())
    a = feats["a"]
    grad = torch.autograd.grad(logits[0, cls], a)[0]
    grad_cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1))[0].detach().numpy()
    ours = v.heat
    assert int(np.argmax(v.probs)) == cls
    assert np.abs(ours / ours.max() - grad_cam / grad_cam.max()).max() < 1e-4


def test_convscopes_own_files_open_with_their_cards(tmp_path):
    m = open_model((REPO / "models" / "mnist_cnn.onnx").read_bytes(), "mnist_cnn.onnx")
    assert m.spec.dtype == "uint8" and m.preset == "raw" and m.labels == [str(d) for d in range(10)]
    v = look(m, Image.open(REPO / "examples" / "digit_7.png"))
    assert v.stages and v.heat is not None


# --- hostile models -------------------------------------------------------------------------------

def tiny_model(initializer: TensorProto | None = None, inputs: int = 1, rank: int = 4, domain: str = "",
               op: str = "Relu") -> bytes:
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [1, 3, 8, 8][:rank]) for i in range(inputs)]
    nodes = [helper.make_node(op, ["x0"], ["y"], domain=domain)]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", ins, [out], initializer=[initializer] if initializer else [])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def declared(dims: list[int]) -> TensorProto:
    """A float initializer that declares ``dims`` and holds no data of its own."""
    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend(dims)
    return t


def external(location: str) -> TensorProto:
    t = declared([16])
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    return t


HOSTILE = {
    "external data, absolute path": (tiny_model(external("/etc/passwd")), "external data"),
    "external data, relative path": (tiny_model(external("README.md")), "external data"),
    "custom operator domain": (tiny_model(domain="com.example.evil", op="Steal"), "custom operator"),
    "two inputs": (tiny_model(inputs=2), "2 inputs"),
    "not an image input": (tiny_model(rank=2), "not an image"),
    "huge declared tensor": (tiny_model(declared([100_000, 100_000])), "MB of weights"),
    "truncated": (tiny_model()[:-7], "not an ONNX model"),
    "not ONNX at all": ((REPO / "examples" / "digit_7.png").read_bytes(), "not an ONNX model"),
    "empty": (b"", "empty"),
    "fails to load": (tiny_model(op="NoSuchOperator"), "cannot load"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_models_are_refused_with_a_reason(case, monkeypatch):
    import onnxruntime as ort

    data, reason = HOSTILE[case]
    real = ort.InferenceSession
    opened = []

    def watched(*args, **kwargs):
        opened.append(case)
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", watched)
    with pytest.raises(UnsafeModel, match=reason):
        open_model(data, "m.onnx")
    if case.startswith("external") or case in ("custom operator domain", "huge declared tensor"):
        assert not opened, "ONNX Runtime saw a model that names files or custom code"


def test_a_model_over_the_size_cap_is_refused(monkeypatch):
    import convscope.user_models as um

    monkeypatch.setattr(um, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(UnsafeModel, match="up to"):
        open_model(b"\x08\x07" + b"\x00" * 2000, "big.onnx")


# --- through the doors ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("own") / "resnet18.onnx"
    path.write_bytes(export(torchvision.models.resnet18(weights=None, num_classes=10), (1, 3, SIDE, SIDE)))
    return path


def test_rest_uploads_a_model_then_predicts_with_its_id(app_url, resnet_file):
    import httpx

    labels = "\n".join(f"thing {i}" for i in range(10)).encode()
    r = httpx.post(f"{app_url}api/v1/models", files={"file": ("resnet18.onnx", resnet_file.read_bytes()),
                                                     "labels": ("labels.txt", labels)}, timeout=60)
    assert r.status_code == 200, r.text
    found = r.json()
    assert found["input"]["layout"] == "NCHW" and found["classes"] == 10 and found["labels"][3] == "thing 3"
    assert found["where_it_looks"] == "class-activation map" and len(found["stages"]) >= 4
    cat = (REPO / "examples" / "photos" / "cat_chelsea.jpg").read_bytes()
    answer = httpx.post(f"{app_url}api/v1/predict/{found['id']}", files={"image": ("cat.jpg", cat)}, timeout=30).json()
    assert answer["model"] == found["id"] and answer["label"] in found["labels"]
    assert answer["variant"] == "uploaded" and len(answer["probabilities"]) == 10
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    for data, status in ((tiny_model(external("/etc/passwd")), 400), (b"not onnx", 400)):
        r = httpx.post(f"{app_url}api/v1/models", files={"file": ("evil.onnx", data)}, timeout=30)
        assert r.status_code == status and r.json()["detail"], r.text
    assert httpx.post(f"{app_url}api/v1/predict/not-an-id", files={"image": ("cat.jpg", cat)}).status_code == 404


def test_the_gradio_api_opens_a_model_and_shows_its_stages(client, resnet_file):
    from gradio_client import handle_file

    found = client.predict(handle_file(str(resnet_file)), "", "", api_name="/open_model")
    assert found["classes"] == 10
    grids = client.predict(found["id"], handle_file(str(REPO / "examples" / "photos" / "cat_chelsea.jpg")),
                           api_name="/feature_maps")
    assert len(grids) == len(found["stages"])


def test_models_stay_with_whoever_uploaded_them_and_expire():
    from convscope.user_models import ModelStore

    store = ModelStore(capacity=2, ttl=0.2)
    models = [open_model((REPO / "models" / "mnist_lenet5.onnx").read_bytes(), "m.onnx") for _ in range(3)]
    for m in models:
        store.add(m)
    assert store.get(models[0].id) is None and store.get(models[2].id) is models[2]  # the oldest went first
    assert len({m.id for m in models}) == 3 and all(len(m.id) >= 20 for m in models)  # unguessable tokens
    import time

    time.sleep(0.3)
    assert store.get(models[2].id) is None


def test_preprocessing_presets_and_a_custom_mean_std():
    from convscope.user_models import InputSpec, normalisation, to_input

    spec = InputSpec("x", "NCHW", 3, "float32", (2, 2), False, True)
    white = np.full((2, 2, 3), 255, np.uint8)
    assert to_input(white, spec, "0-1").max() == pytest.approx(1.0)
    assert to_input(white, spec, "-1-1").max() == pytest.approx(1.0)
    assert to_input(white, spec, "raw").max() == pytest.approx(255.0)
    assert to_input(white, spec, "mean=0.5 std=0.25").max() == pytest.approx(2.0)  # (1 - 0.5) / 0.25
    assert normalisation("mean=0.1,0.2,0.3 std=0.5,0.5,0.5") == ((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    for bad in ("mean=1,2 std=1", "mean=0.5 std=0", "sepia"):
        with pytest.raises(UnsafeModel):
            normalisation(bad)


def test_a_drawing_works_like_a_photo():
    """What the Sketchpad gives: RGBA strokes on a transparent canvas (white paper for the model)."""
    m = open_model((REPO / "models" / "mnist_cnn.onnx").read_bytes(), "mnist_cnn.onnx")
    drawing = np.zeros((280, 280, 4), np.uint8)
    drawing[60:220, 130:150, 3] = 255  # a black vertical stroke: a 1
    v = look(m, drawing)
    assert v.seen.shape == (28, 28, 3) and v.probs.shape == (10,)
