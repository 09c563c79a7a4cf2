"""Every network ConvScope trains, and nothing else.

Conventions shared by all nets (the export step and the app rely on them):

* ``forward(x)`` takes **float pixels in [0, 255], NCHW** and returns logits. Scaling and
  mean/std normalisation happen inside, in a :class:`Normalize` module with buffers, so they
  travel in every checkpoint and every ONNX file and the app can never get them wrong.
* ``forward_stages(x)`` returns ``(logits, stages)`` where ``stages`` is an ordered dict of the
  named activations the Feature maps tab shows, one per conv stage.
* ``stage_convs()`` names, for each stage, the conv layer whose filters produce that map: the
  Feature maps tab shows those filters next to the activations.
* Nets whose head is global-average-pool + linear set ``cam_stage`` (the name of the feature map
  entering the pool) and expose that linear layer as ``classifier``; for them class-activation
  maps are exact (see ``export.wrap``).
* No device or dtype in constructors: a net is built on the CPU in fp32 and moved by the caller.

Checkpoints store ``{arch, arch_kwargs, state_dict, ...}``; :func:`build` rebuilds a net from
them, so any script can load any checkpoint without knowing the recipe.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    """Pixels in [0, 255] -> (x / 255 - mean) / std, per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = 1.7159 tanh(2a/3) (1998, appendix A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class LeNet5(nn.Module):
    """LeNet-5 as in LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to
    document recognition".

    Faithful in structure: 28x28 MNIST padded to 32x32, C1 6@5x5 -> S2 2x2 average pooling ->
    C3 16@5x5 -> S4 -> C5 120@5x5 (a 1x1 map, i.e. fully connected) -> F6 84 -> 10 outputs, with
    the scaled tanh squashing throughout. Two documented simplifications, both standard in modern
    re-implementations: C3 connects to all six S2 maps (the paper's sparse connection table only
    existed to save compute and break symmetry), and the output is a linear layer + softmax
    instead of Euclidean RBF units. Subsampling layers are plain average pooling (the paper's
    trainable coefficient and bias are absorbed by the following convolution).
    """

    cam_stage = None  # no global-average-pool head: C5 sees the whole 5x5 map
    image_size = 28  # input side in pixels, before the padding to 32

    def __init__(self, num_classes: int = 10, mean: float = 0.1307, std: float = 0.3081) -> None:
        super().__init__()
        self.normalize = Normalize([mean], [std])
        self.c1 = nn.Conv2d(1, 6, 5)
        self.s2 = nn.AvgPool2d(2)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.s4 = nn.AvgPool2d(2)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.out = nn.Linear(84, num_classes)
        self.act = ScaledTanh()

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        x = self.normalize(F.pad(x, (2, 2, 2, 2)))  # pad with background (pixel 0) to 32x32
        c1 = self.act(self.c1(x))
        c3 = self.act(self.c3(self.s2(c1)))
        c5 = self.act(self.c5(self.s4(c3)))
        logits = self.out(self.act(self.f6(c5.flatten(1))))
        return logits, OrderedDict(c1=c1, c3=c3, c5=c5)

    def stage_convs(self) -> OrderedDict[str, nn.Conv2d]:
        return OrderedDict(c1=self.c1, c3=self.c3, c5=self.c5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]


def conv_bn_relu(c_in: int, c_out: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class MnistCNN(nn.Module):
    """A small modern CNN for 28x28 digits: conv-BN-ReLU blocks, max pooling, dropout, and a
    global-average-pool + linear head (so its class-activation maps are exact).

    Three stages: 28x28 (w), 14x14 (2w), 7x7 (4w). Width ``w=32`` costs ~12 M multiply-adds per
    image, which trains to >99.6% on two CPU cores within minutes.
    """

    cam_stage = "stage3"
    image_size = 28

    def __init__(self, num_classes: int = 10, width: int = 32, dropout: float = 0.25,
                 mean: float = 0.1307, std: float = 0.3081) -> None:
        super().__init__()
        w = width
        self.normalize = Normalize([mean], [std])
        self.stage1 = nn.Sequential(conv_bn_relu(1, w), conv_bn_relu(w, w))
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(w, 2 * w), conv_bn_relu(2 * w, 2 * w))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(2 * w, 4 * w), conv_bn_relu(4 * w, 4 * w))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        s1 = self.stage1(self.normalize(x))
        s2 = self.stage2(s1)
        s3 = self.stage3(s2)
        logits = self.classifier(self.dropout(s3.mean(dim=(2, 3))))
        return logits, OrderedDict(stage1=s1, stage2=s2, stage3=s3)

    def stage_convs(self) -> OrderedDict[str, nn.Conv2d]:
        # the last conv of each stage: its output channels are the stage's channels
        return OrderedDict((n, getattr(self, n)[-1][0]) for n in ("stage1", "stage2", "stage3"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]


def tf_efficientnet_lite0(num_classes: int = 1000) -> nn.Module:
    """timm's TF-faithful EfficientNet-Lite0 ('same' padding, BN eps 1e-3), uninitialised.

    The ImageNet weights in shared/data (a PyTorch port of Google's TF checkpoint, keys
    ``_conv_stem.weight`` ... ``_fc.bias``) map onto its state dict in order: see
    :func:`load_lite0_imagenet`. Its inputs are pixels scaled to [-1, 1] (mean = std = 0.5).
    """
    import timm  # only the nets built on it need timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)


def load_lite0_imagenet(model: nn.Module, weights_path: str) -> nn.Module:
    """Load the ported ImageNet weights into :func:`tf_efficientnet_lite0` by position, checking
    that every tensor's shape agrees (the two state dicts list the same tensors in the same order)."""
    src = torch.load(weights_path, map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"{weights_path}: {len(src)} tensors, the model has {len(dst)}")
    for (ks, vs), (kd, vd) in zip(src.items(), dst.items(), strict=True):
        if vs.shape != vd.shape:
            raise ValueError(f"{ks} {tuple(vs.shape)} does not fit {kd} {tuple(vd.shape)}")
    model.load_state_dict(dict(zip(dst, src.values(), strict=True)))
    return model


class ImageNetStem(nn.Module):
    """The first layer of ImageNet-trained EfficientNet-Lite0: 32 filters of 3x3x3, stride 2,
    batch norm and ReLU6. Not a classifier: served so the Feature maps tab can show trained
    first-layer filters (edges, colour blobs) and their responses to the user's image."""

    cam_stage = None
    image_size = 224
    is_classifier = False

    def __init__(self) -> None:
        super().__init__()
        full = tf_efficientnet_lite0()
        self.normalize = Normalize([0.5] * 3, [0.5] * 3)
        self.conv_stem, self.bn1 = full.conv_stem, full.bn1  # BatchNormAct2d: BN + ReLU6

    def forward_stages(self, x: torch.Tensor) -> tuple[None, OrderedDict[str, torch.Tensor]]:
        return None, OrderedDict(stem=self.bn1(self.conv_stem(self.normalize(x))))

    def stage_convs(self) -> OrderedDict[str, nn.Conv2d]:
        return OrderedDict(stem=self.conv_stem)


NETS: dict[str, type[nn.Module]] = {
    "lenet5": LeNet5,
    "mnist_cnn": MnistCNN,
    "imagenet_stem": ImageNetStem,
}


def build(arch: str, **arch_kwargs: object) -> nn.Module:
    """Build a net by registry name; ``arch_kwargs`` are the constructor arguments."""
    if arch not in NETS:
        raise KeyError(f"unknown arch {arch!r}; known: {sorted(NETS)}")
    return NETS[arch](**arch_kwargs)


def from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild a net from a checkpoint dict alone (weights loaded, eval mode)."""
    net = build(ckpt["arch"], **ckpt.get("arch_kwargs", {}))
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
