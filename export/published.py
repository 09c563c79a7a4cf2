"""Reference models that are not trained here but exported from published weights.

``imagenet_lite0``: the whole ImageNet EfficientNet-Lite0 without its classifier: the frozen
backbone of the Teach tab (its ``features`` output, the pooled 1280 numbers a new head is fitted
on) and, in the Feature maps tab, every stage of an ImageNet-trained network. Re-exporting it
needs the published weights file (../shared/data/weights): no checkpoint copy is committed, as
the file is the published one unchanged.

``imagenet_stem``: the first layer of ImageNet-trained EfficientNet-Lite0, so the Feature maps
tab can show *trained* first-layer filters (the course's exercise) and their responses to any
image. It is a feature extractor (no probabilities); its card's metrics record what was checked:
parity with torch and that its filters are exactly the published ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from convscope.cards import METADATA_KEY, ModelCard, sha256_file
from convscope.preprocess import imagenet_center
from convscope.runtime import make_session
from export.onnx_export import check_parity, describe_outputs, export_onnx
from export.wrap import ExportWrapper
from train import nets
from train.datasets import resolve_data_dir

LITE0_WEIGHTS = "weights/efficientnet-lite0-57934424.pth"
LITE0_SOURCE = ("EfficientNet-Lite0 ImageNet-1k weights (Tan & Le, ICML 2019; Google, Apache-2.0), PyTorch "
                "port efficientnet-lite0-57934424.pth, loaded into timm's tf_efficientnet_lite0")
REFERENCES = ("imagenet_stem", "imagenet_lite0")


def sample_images(data_dir: Path, n: int = 4) -> np.ndarray | None:
    """A few real photos for the parity check: CIFAR-10 test images, if the data is here."""
    mosaic = data_dir / "cifar10" / "cifar10_test.webp"
    if not mosaic.exists():
        return None
    from PIL import Image

    tiles = np.asarray(Image.open(mosaic).convert("RGB"))[:32, : 32 * n]
    return np.stack([imagenet_center(tiles[:, 32 * i: 32 * (i + 1)]) for i in range(n)])


def export_imagenet_stem(data_dir: str | None, models_dir: Path, checkpoints_dir: Path) -> ModelCard:
    root = resolve_data_dir(data_dir)
    weights = root / LITE0_WEIGHTS
    ckpt_path = checkpoints_dir / "imagenet_stem.pt"
    if weights.exists():
        full = nets.load_lite0_imagenet(nets.tf_efficientnet_lite0(), str(weights))
        net = nets.ImageNetStem()
        net.conv_stem.load_state_dict(full.conv_stem.state_dict())
        net.bn1.load_state_dict(full.bn1.state_dict())
        source = torch.load(weights, map_location="cpu", weights_only=True)["_conv_stem.weight"]
        filters_diff = float((net.conv_stem.weight.detach() - source).abs().max())
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"arch": "imagenet_stem", "arch_kwargs": {}, "recipe": "imagenet_stem",
                    "state_dict": net.state_dict(), "source": LITE0_WEIGHTS,
                    "source_sha256": sha256_file(weights), "filters_max_abs_diff_to_source": filters_diff}, ckpt_path)
    elif ckpt_path.exists():  # re-export from the shipped weights alone
        pass
    else:
        raise SystemExit(f"need {weights} (or the shipped {ckpt_path})")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    net = nets.from_checkpoint(ckpt)
    wrapper = ExportWrapper(net)
    real = sample_images(root)
    if real is None:
        real = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "imagenet_stem.onnx"
        model = export_onnx(wrapper, tmp_path)
        parity = check_parity(wrapper, make_session(tmp_path, threads=2), real)
        outputs, layers = describe_outputs(wrapper, tmp_path)
        card = published_card(
            "imagenet_stem", "EfficientNet-Lite0 first layer (ImageNet-trained)",
            "The 32 trained 3x3 RGB filters (stride 2, batch norm, ReLU6) that open EfficientNet-Lite0, "
            "and their responses: edge, colour and texture detectors learned from ImageNet.",
            "shorter side to 256 (bicubic), central 224x224 crop; scaled to [-1, 1] inside the graph",
            {"filters_max_abs_diff_to_source": ckpt["filters_max_abs_diff_to_source"],
             "source": ckpt["source"], "source_sha256": ckpt["source_sha256"]},
            ["Only the first layer: it shows what trained filters look like, not what the network recognises."],
            net, model, outputs, layers, parity)
        onnx.helper.set_model_props(model, {METADATA_KEY: card.metadata_json()})
        onnx.save(model, models_dir / card.file)
    card.sha256 = sha256_file(models_dir / card.file)
    (models_dir / "imagenet_stem.json").write_text(card.to_json())
    return card


def export_imagenet_lite0(data_dir: str | None, models_dir: Path) -> ModelCard:
    root = resolve_data_dir(data_dir)
    weights = root / LITE0_WEIGHTS
    if not weights.exists():
        raise SystemExit(f"need {weights}: the published EfficientNet-Lite0 weights")
    net = nets.ImageNetLite0()
    net.init_imagenet(str(weights))
    wrapper = ExportWrapper(net.eval())
    real = sample_images(root)
    if real is None:
        real = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    path = models_dir / "imagenet_lite0.onnx"
    model = export_onnx(wrapper, path)
    sess = make_session(path, threads=2)
    parity = check_parity(wrapper, sess, real)
    outputs, layers = describe_outputs(wrapper, path)
    card = published_card(
        "imagenet_lite0", "EfficientNet-Lite0 (ImageNet-trained, no classifier)",
        "The whole ImageNet EfficientNet-Lite0 up to its last conv stage and global average pool: every stage's "
        "responses, and the 1280 pooled features the Teach tab fits new classes on.",
        "shorter side to 256 (bicubic), central 224x224 crop; scaled to [-1, 1] inside the graph (the Teach tab "
        "squashes the whole image to 224x224 instead)",
        {"filters_max_abs_diff_to_source": float((net.body.conv_stem.weight.detach() - torch.load(
            weights, map_location="cpu", weights_only=True)["_conv_stem.weight"]).abs().max()),
         "source": LITE0_WEIGHTS, "source_sha256": sha256_file(weights)},
        ["ImageNet features: new classes that look like nothing in ImageNet (X-rays, microscope slides) get weaker "
         "features than photos of objects."],
        net, model, outputs, layers, parity, command="python -m export imagenet_lite0")
    onnx.helper.set_model_props(model, {METADATA_KEY: card.metadata_json()})
    onnx.save(model, path)
    card.sha256 = sha256_file(path)
    (models_dir / "imagenet_lite0.json").write_text(card.to_json())
    return card


def published_card(name: str, title: str, description: str, preprocess_note: str, metrics: dict,
                   limitations: list[str], net: torch.nn.Module, model: onnx.ModelProto, outputs: list[dict],
                   layers: list[dict], parity: dict, command: str | None = None) -> ModelCard:
    """The card of a feature extractor exported from published ImageNet weights (no test set)."""
    return ModelCard(
        name=name, title=title, tab="features", file=f"{name}.onnx", description=description,
        input={"name": "image", "dtype": "uint8", "layout": "NHWC", "shape": [None, 224, 224, 3], "range": [0, 255],
               "color": "RGB", "preprocess": "imagenet_center", "preprocess_note": preprocess_note},
        outputs=outputs, labels=[],
        metrics={"kind": "feature extractor: no test-set accuracy applies", **metrics,
                 "measured_with": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"},
        calibration={}, params=nets.count_params(net), flops=sum(r["flops"] for r in layers),
        training={"recipe": None, "note": "not trained here: published ImageNet weights", "train_time_s": 0,
                  **({"command": command} if command else {})},
        versions={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                  "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))},
        data_sources=[LITE0_SOURCE], limitations=limitations, parity=parity, layers=layers)
