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


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _dirac_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 'same' conv, no bias, whose first ``c_in`` filters start as identity (airbench)."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])
    return conv


def _frozen_scale_bn(c: int, momentum: float) -> nn.BatchNorm2d:
    """airbench's BatchNorm: eps 1e-12, running stats with momentum ``momentum`` (airbench's
    convention, i.e. torch's 1 - momentum), scale fixed at 1 and only the shift trained."""
    bn = nn.BatchNorm2d(c, eps=1e-12, momentum=1 - momentum)
    bn.weight.requires_grad_(False)
    return bn


class ConvGroup(nn.Module):
    """conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU (airbench's block)."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = _dirac_conv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _frozen_scale_bn(c_out, bn_momentum)
        self.conv2 = _dirac_conv(c_out, c_out)
        self.norm2 = _frozen_scale_bn(c_out, bn_momentum)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class CifarResNet(nn.Module):
    """airbench94 (Keller Jordan, 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"),
    ported to fp32 / CPU with device and dtype kept out of the constructor.

    A 2x2 patch-whitening conv (24 filters: the eigenvectors of the training patches' covariance
    and their negatives, frozen; only its bias trains, for the first epochs), three ConvGroups
    (64, 256, 256 channels at 31, 15, 7 -> 3 px), a global max-pool and a bias-free linear layer
    scaled by 1/9. In eval mode ``tta_level`` averages the logits over test-time augmentations
    inside the graph: 1 = mirror, 2 = mirror and 1-pixel translations (6 views, one batch).

    The head is a global *max* pool + linear, so the gradient of a logit w.r.t. the last map is
    ``W[c]`` at each channel's maximum: Grad-CAM's channel weights (the spatial mean of that
    gradient) are ``W[c] / 9`` and the CAM output is exact Grad-CAM up to that constant.
    """

    cam_stage = "block3"
    image_size = 32

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (64, 256, 256),
                 bn_momentum: float = 0.6, logit_scale: float = 1 / 9, tta_level: int = 2,
                 whiten_eps: float = 5e-4) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)  # 2 * 3 * 2 * 2 channels
        self.whiten.weight.requires_grad_(False)
        with torch.no_grad():
            self.whiten.bias.zero_()
        self.block1 = ConvGroup(24, w1, bn_momentum)
        self.block2 = ConvGroup(w1, w2, bn_momentum)
        self.block3 = ConvGroup(w2, w3, bn_momentum)
        self.classifier = nn.Linear(w3, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.tta_level = tta_level
        self.whiten_eps = whiten_eps

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the whitening filters from training images (float NCHW pixels in [0, 255])."""
        x = self.normalize(x)
        c, (h, w) = x.shape[1], self.whiten.weight.shape[2:]
        patches = x.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w).double()
        cov = patches.T @ patches / len(patches)
        eigval, eigvec = torch.linalg.eigh(cov)
        eigval, eigvec = eigval.flip(0), eigvec.T.flip(0).reshape(-1, c, h, w)
        filters = (eigvec / torch.sqrt(eigval + self.whiten_eps).view(-1, 1, 1, 1)).float()
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def _stages(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        b1 = self.block1(F.gelu(self.whiten(x)))
        b2 = self.block2(b1)
        return OrderedDict(block1=b1, block2=b2, block3=self.block3(b2))

    def _head(self, last: torch.Tensor) -> torch.Tensor:
        return self.classifier(last.amax(dim=(2, 3))) * self.logit_scale

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(self._stages(x)["block3"])

    def _tta_logits(self, x: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
        """``plain``: the logits of ``x`` itself, already computed with the stage outputs, so the
        graph runs the other views only (5 more passes at level 2, not 6)."""
        n = x.shape[0]
        if self.tta_level == 1:
            views = [x.flip(-1)]
        else:
            s = x.shape[-1]
            pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
            shifted = [pad[:, :, :s, :s], pad[:, :, 2:, 2:]]
            views = [x.flip(-1), *(v for t in shifted for v in (t, t.flip(-1)))]
        logits = torch.cat([plain[None], self._logits(torch.cat(views)).view(len(views), n, -1)])
        if self.tta_level == 1:
            return logits.mean(0)
        return 0.5 * logits[:2].mean(0) + 0.5 * logits[2:].mean(0)  # airbench's weighting

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        x = self.normalize(x)
        stages = self._stages(x)
        plain = self._head(stages["block3"])
        if self.training or self.tta_level == 0:
            return plain, stages
        return self._tta_logits(x, plain), stages

    def stage_convs(self) -> OrderedDict[str, nn.Conv2d]:
        return OrderedDict((n, getattr(self, n).conv2) for n in ("block1", "block2", "block3"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]


class CifarSimple(nn.Module):
    """The course's seed network, as in the Keras CIFAR-10 example: two blocks of two 3x3 convs
    (32, 64) with ReLU, 2x2 max pooling and dropout 0.25, then dense 512 + dropout 0.5 and a
    softmax layer. No batch norm, no augmentation: the baseline the other models improve on."""

    cam_stage = None  # flatten + dense head: no exact class-activation map
    image_size = 32

    def __init__(self, num_classes: int = 10, width: int = 32, hidden: int = 512) -> None:
        super().__init__()
        w = width
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.block1 = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3), nn.ReLU())
        self.block2 = nn.Sequential(nn.MaxPool2d(2), nn.Dropout(0.25), nn.Conv2d(w, 2 * w, 3, padding=1),
                                    nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3), nn.ReLU())
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
                                  nn.Linear(2 * w * 6 * 6, hidden), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Linear(hidden, num_classes))

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        b1 = self.block1(self.normalize(x))
        b2 = self.block2(b1)
        return self.head(b2), OrderedDict(block1=b1, block2=b2)

    def stage_convs(self) -> OrderedDict[str, nn.Conv2d]:
        return OrderedDict(block1=self.block1[2], block2=self.block2[4])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]


class Inception(nn.Module):
    """GoogLeNet's inception block (Szegedy et al. 2015): four parallel branches concatenated -
    1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 (the factorised 5x5 of Inception v2); 3x3 max-pool -> 1x1
    - each conv followed by BN and ReLU."""

    def __init__(self, c_in: int, b1: int, b3: tuple[int, int], b5: tuple[int, int], bp: int) -> None:
        super().__init__()
        self.branch1 = conv_bn_relu(c_in, b1, 1)
        self.branch3 = nn.Sequential(conv_bn_relu(c_in, b3[0], 1), conv_bn_relu(b3[0], b3[1]))
        self.branch5 = nn.Sequential(conv_bn_relu(c_in, b5[0], 1), conv_bn_relu(b5[0], b5[1]),
                                     conv_bn_relu(b5[1], b5[1]))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_relu(c_in, bp, 1))
        self.out_channels = b1 + b3[1] + b5[1] + bp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


class CifarInception(nn.Module):
    """A small GoogLeNet for 32x32 inputs: a 3x3 conv stem at 32 px, then inception blocks at
    16 px (three) and 8 px (two) after max pooling, global average pooling, dropout and one
    linear layer (no auxiliary classifiers: batch norm makes them unnecessary). The head is
    GAP + linear, so class-activation maps are exact. An inception stage is a concatenation of
    branches, so no single filter bank produces it: only the stem's filters are shown."""

    cam_stage = "inception5"
    image_size = 32

    def __init__(self, num_classes: int = 10, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        w = width
        self.normalize = Normalize(CIFAR_MEAN, CIFAR_STD)
        self.stem = conv_bn_relu(3, 3 * w)
        self.inception3 = nn.Sequential(
            nn.MaxPool2d(2), Inception(3 * w, 2 * w, (2 * w, 3 * w), (w // 2, w), w))  # 16 px, 7w
        self.inception4 = nn.Sequential(
            Inception(7 * w, 3 * w, (3 * w, 4 * w), (w, 2 * w), 2 * w),  # 11w
            Inception(11 * w, 4 * w, (4 * w, 6 * w), (w, 3 * w), 3 * w))  # 16w
        self.inception5 = nn.Sequential(
            nn.MaxPool2d(2), Inception(16 * w, 6 * w, (6 * w, 8 * w), (2 * w, 4 * w), 4 * w),  # 8 px, 22w
            Inception(22 * w, 6 * w, (6 * w, 8 * w), (2 * w, 4 * w), 4 * w))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(22 * w, num_classes)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        stem = self.stem(self.normalize(x))
        i3 = self.inception3(stem)
        i4 = self.inception4(i3)
        i5 = self.inception5(i4)
        logits = self.classifier(self.dropout(i5.mean(dim=(2, 3))))
        return logits, OrderedDict(stem=stem, inception3=i3, inception4=i4, inception5=i5)

    def stage_convs(self) -> OrderedDict[str, nn.Conv2d | None]:
        return OrderedDict(stem=self.stem[0], inception3=None, inception4=None, inception5=None)

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


def lite0_stages(body: nn.Module, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
    """The conv stages of a timm EfficientNet-Lite0 ``body`` on normalised input ``x``."""
    stem = body.bn1(body.conv_stem(x))  # 112 px, 32 channels
    stages = OrderedDict(stem=stem)
    h = stem
    for i, block in enumerate(body.blocks):
        h = block(h)
        if i in (1, 2, 4):  # 56 px (24 ch), 28 px (40 ch), 14 px (112 ch)
            stages[f"blocks{i}"] = h
    stages["head"] = body.bn2(body.conv_head(h))  # 7 px, 1280 channels: what a classifier pools
    return stages


class PerImageStandardize(nn.Module):
    """Each image to zero mean and standard deviation ``scale`` over its own pixels.

    Films differ in exposure and contrast between machines, hospitals and years (the Kermany test
    films are darker and flatter on average than the training ones); standardising every film
    removes those global differences before the first convolution, in the graph, for training
    and serving alike. ``scale`` 0.5 matches the spread of ImageNet inputs scaled to [-1, 1]."""

    def __init__(self, scale: float = 0.5, eps: float = 1.0) -> None:
        super().__init__()
        self.scale, self.eps = scale, eps  # eps in pixel units: a uniform image stays finite

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + self.eps) * self.scale


class XrayLite0(nn.Module):
    """EfficientNet-Lite0 (timm's TF-faithful ``tf_efficientnet_lite0``) for one-channel chest
    X-rays at 224x224, with a new ``num_classes`` head.

    The input is grayscale, so the stem takes one channel; :meth:`init_imagenet` folds the
    ImageNet stem's three colour filters into one by summing them, which gives exactly the
    ImageNet net's response to the gray image repeated in R, G and B (timm's ``adapt_input_conv``
    does the same), at a third of the stem's cost. The head is global-average-pool + linear, so
    class-activation maps are exact. ``temperature`` (1 until calibrated at export) divides the
    logits: the exported ``probs`` are the calibrated ones.

    ``standardize``: per-image standardisation instead of the fixed [-1, 1] scaling (see
    :class:`PerImageStandardize`). :meth:`freeze_early` keeps the stem and the first stages at
    their ImageNet values during fine-tuning: low-level filters that are not bent towards one
    hospital's films, and a faster backward pass.
    """

    cam_stage = "head"
    cam_module = "body.bn2"  # the module whose output is the ``head`` map (for autograd Grad-CAM tests)
    image_size = 224

    def __init__(self, num_classes: int = 2, drop_rate: float = 0.2, standardize: bool = False,
                 in_chans: int = 1) -> None:
        super().__init__()
        import timm  # only the nets built on it need timm

        self.in_channels = in_chans  # 3: photos (``python -m train folder``)
        # [-1, 1], as the ImageNet weights expect; or each film standardised on its own
        self.normalize = PerImageStandardize() if standardize else Normalize([0.5] * in_chans, [0.5] * in_chans)
        self.body = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes,
                                      in_chans=in_chans, drop_rate=drop_rate)
        self.classifier = self.body.classifier
        self.register_buffer("temperature", torch.ones(()))

    @torch.no_grad()
    def init_imagenet(self, weights_path: str) -> None:
        """Start from the ImageNet weights (all but the 1000-class head)."""
        full = load_lite0_imagenet(tf_efficientnet_lite0(), weights_path).state_dict()
        if self.in_channels == 1:
            full["conv_stem.weight"] = full["conv_stem.weight"].sum(1, keepdim=True)
        for k in ("classifier.weight", "classifier.bias"):
            full.pop(k)
        missing, unexpected = self.body.load_state_dict(full, strict=False)
        if unexpected or sorted(missing) != ["classifier.bias", "classifier.weight"]:
            raise ValueError(f"ImageNet weights do not fit: missing {missing}, unexpected {unexpected}")

    def freeze_early(self, stages: int) -> list[nn.Module]:
        """Stop training the stem and the first ``stages`` block stages (weights and batch-norm
        statistics); returns the frozen modules, which the caller keeps in eval mode."""
        frozen = [self.body.conv_stem, self.body.bn1, *self.body.blocks[:stages]] if stages else []
        for m in frozen:
            m.requires_grad_(False)
            m.eval()
        return frozen

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        b = self.body
        stages = lite0_stages(b, self.normalize(x))
        logits = self.classifier(F.dropout(b.global_pool(stages["head"]), b.drop_rate, self.training))
        return logits / self.temperature, stages

    def stage_convs(self) -> OrderedDict[str, nn.Conv2d | None]:
        # later stages end in 1x1 projections: their "filters" are not pictures, so only the stem's
        return OrderedDict(stem=self.body.conv_stem, blocks1=None, blocks2=None, blocks4=None, head=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """What ``classifier`` sees (before dropout): the head map, average-pooled, (N, 1280)."""
        return self.forward_stages(x)[1]["head"].mean((2, 3))


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


class ImageNetLite0(nn.Module):
    """ImageNet-trained EfficientNet-Lite0 without its classifier: the frozen backbone the Teach
    tab fits new heads on (its pooled 1280 features), and every one of its stages for the Feature
    maps tab. Pixels scaled to [-1, 1] in the graph, as the ImageNet weights expect."""

    cam_stage = None
    image_size = 224
    is_classifier = False
    exports_features = True  # forward_stages returns the pooled features where classifiers return logits

    def __init__(self) -> None:
        super().__init__()
        import timm  # only the nets built on it need timm

        self.normalize = Normalize([0.5] * 3, [0.5] * 3)
        self.body = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)

    @torch.no_grad()
    def init_imagenet(self, weights_path: str) -> None:
        full = load_lite0_imagenet(tf_efficientnet_lite0(), weights_path).state_dict()
        for k in ("classifier.weight", "classifier.bias"):
            full.pop(k)
        self.body.load_state_dict(full)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        """(the pooled features (N, 1280), the stages)."""
        stages = lite0_stages(self.body, self.normalize(x))
        return stages["head"].mean((2, 3)), stages

    def stage_convs(self) -> OrderedDict[str, nn.Conv2d | None]:
        return OrderedDict(stem=self.body.conv_stem, blocks1=None, blocks2=None, blocks4=None, head=None)


NETS: dict[str, type[nn.Module]] = {
    "lenet5": LeNet5,
    "mnist_cnn": MnistCNN,
    "imagenet_stem": ImageNetStem,
    "imagenet_lite0": ImageNetLite0,
    "cifar_resnet": CifarResNet,
    "cifar_simple": CifarSimple,
    "cifar_inception": CifarInception,
    "xray_lite0": XrayLite0,
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
