"""The shipped ONNX files compute what their shipped torch checkpoints compute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope.runtime import MODELS_DIR, make_session
from export.onnx_export import FEATURE_TOL, PARITY_TOL
from export.wrap import ExportWrapper
from tests.conftest import REPO, card_params
from train import nets


def load_pair(card):
    path = REPO / "checkpoints" / f"{card.name}.pt"
    if path.exists():
        net = nets.from_checkpoint(torch.load(path, map_location="cpu", weights_only=False))
    else:  # exported from published weights with no checkpoint copy (imagenet_lite0): the weights file
        from export.published import LITE0_WEIGHTS
        from train.datasets import resolve_data_dir

        weights = resolve_data_dir() / LITE0_WEIGHTS
        if not weights.exists():
            pytest.skip(f"{card.name} is exported from {weights}, which is not here")
        net = nets.build(card.name)
        net.init_imagenet(str(weights))
    return ExportWrapper(net.eval()), make_session(MODELS_DIR / card.file)


def inputs(card, mnist_like: np.ndarray | None) -> list[np.ndarray]:
    h, w, c = card.input["shape"][1:]
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (5, h, w, c), dtype=np.uint8), np.zeros((1, h, w, c), np.uint8)]
    if mnist_like is not None and mnist_like.shape[1:] == (h, w, c):
        batches.append(mnist_like)
    return batches


@pytest.mark.parametrize("card", card_params())
def test_onnx_matches_torch(card, request):
    from train.datasets import cifar_available, load_cifar10, load_kermany, load_mnist, mnist_available, xray_available

    real = None
    if card.tab == "digits" and mnist_available():
        real = load_mnist("test").x[:32]
    elif card.tab == "cifar10" and cifar_available():
        real = load_cifar10("test").x[::1000]
    elif card.tab == "xray" and xray_available():
        real = load_kermany("test").x[::100]
    wrapper, sess = load_pair(card)
    names = [o["name"] for o in card.outputs if o["kind"] != "ood_score"]  # (the gate has no torch twin: test_gate)
    for x in inputs(card, real):
        with torch.no_grad():
            ref = wrapper(torch.from_numpy(x.copy()))
        got = sess.run(names, {"image": x})
        for name, r, g in zip(names, ref, got, strict=True):
            assert g.shape == tuple(r.shape), name
            # probabilities to 1e-4; activations relative to their scale, as at export (export.onnx_export)
            tol = PARITY_TOL if name == "probs" else FEATURE_TOL * max(1.0, float(r.abs().max()))
            np.testing.assert_allclose(g, r.numpy(), atol=tol, rtol=0, err_msg=name)
        if "probs" in names:
            np.testing.assert_allclose(got[0].sum(1), 1.0, atol=1e-5)


def test_imagenet_stem_filters_are_the_published_ones():
    """Trained, not random: the served stem filters equal the ImageNet checkpoint's, bit for bit."""
    from export.published import LITE0_WEIGHTS
    from train.datasets import resolve_data_dir

    weights = resolve_data_dir() / LITE0_WEIGHTS
    if not weights.exists():
        pytest.skip(f"{weights} not found")
    source = torch.load(weights, map_location="cpu", weights_only=True)["_conv_stem.weight"].numpy()
    (served,) = make_session(MODELS_DIR / "imagenet_stem.onnx").run(
        ["stem_filters"], {"image": np.zeros((1, 224, 224, 3), np.uint8)})
    np.testing.assert_array_equal(served, source)
    assert np.abs(source).max() > 0.1 and source.std() > 0.05  # not an untrained init


@pytest.mark.parametrize("card", [p for p in card_params() if any(o["kind"] == "cam" for o in p.values[0].outputs)])
def test_onnx_cam_equals_autograd_gradcam(card):
    """For a GAP (or global max-pool) + linear head, Grad-CAM (before its ReLU) = CAM / (h*w):
    check it on the ONNX output."""
    wrapper, sess = load_pair(card)
    h, w, c = card.input["shape"][1:]
    x = np.random.default_rng(1).integers(0, 256, (3, h, w, c), dtype=np.uint8)
    cam_stage = next(o["of"] for o in card.outputs if o["kind"] == "cam")
    net = wrapper.net
    if getattr(net, "tta_level", 0):  # the CAM is of the plain view, not the test-time-augmented logits
        net.tta_level = 0
    feats = {}
    module = net.get_submodule(getattr(net, "cam_module", cam_stage))
    handle = module.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
    logits = net(torch.from_numpy(x).permute(0, 3, 1, 2).float())
    handle.remove()
    a = feats["a"]
    (cam_onnx,) = sess.run(["cam"], {"image": x})
    for cls in range(len(card.labels)):
        grads = torch.autograd.grad(logits[:, cls].sum(), a, retain_graph=True)[0]
        gradcam = (grads.mean((2, 3), keepdim=True) * a).sum(1)  # sum_k alpha_k A_k
        hw = a.shape[2] * a.shape[3]
        ref = gradcam.detach().numpy()
        tol = FEATURE_TOL * max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(cam_onnx[:, cls] / hw, ref, atol=tol, rtol=0)


@pytest.mark.parametrize("card", [p for p in card_params() if "single_view" in p.values[0].variants])
def test_single_view_variant_matches_torch_without_its_tta(card):
    wrapper, _ = load_pair(card)
    wrapper.net.tta_level = 0
    sess = make_session(MODELS_DIR / card.variants["single_view"]["file"])
    h, w, c = card.input["shape"][1:]
    x = np.random.default_rng(2).integers(0, 256, (5, h, w, c), dtype=np.uint8)
    with torch.no_grad():
        ref = wrapper(torch.from_numpy(x.copy()))[0]
    (got,) = sess.run(["probs"], {"image": x})
    np.testing.assert_allclose(got, ref.numpy(), atol=PARITY_TOL, rtol=0)
    (main,) = make_session(MODELS_DIR / card.file).run(["probs"], {"image": x})
    assert np.abs(main - got).max() > PARITY_TOL  # the main file's TTA views change the answer
