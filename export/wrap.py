"""The graph every exported model presents to the app.

Input ``image``: uint8, NHWC, pixels 0-255, any batch size. The cast and the NHWC -> NCHW
permute happen in the graph; scaling and mean/std are already in the net (``Normalize``).
Outputs: ``probs`` (softmax), then each conv stage's activation under its own name, then the
filters that produce each stage as ``<stage>_filters`` (for stages a single conv produces;
constant outputs: the app reads weights through onnxruntime alone, without onnx), then for
nets with a global-average-pool + linear head ``cam``: the class-activation maps of every class,
``einsum("nkhw,ck->nchw", last_map, W)``, exported as a 1x1 convolution (ONNX Runtime's
Einsum took 0.6 ms of a 12 ms X-ray prediction for 0.2 M multiply-adds). For such a head
Grad-CAM equals CAM (the gradient of a logit w.r.t. the last map is W[c] / (h*w) everywhere), so
this is exact and needs no autograd.
A global *max*-pool head gives the same Grad-CAM (W[c] at each channel's maximum, so the same
spatial mean), which is why airbench-style nets get a ``cam`` too.
"""

from __future__ import annotations

import torch
from torch import nn


class ExportWrapper(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        _, stages = net.forward_stages(torch.zeros(1, *self.input_chw()))
        self.stage_names = list(stages)
        self.cam_stage = getattr(net, "cam_stage", None)
        # a stage made by concatenating branches (inception) has no single filter bank: None
        self.filter_stages = [s for s, conv in net.stage_convs().items() if conv is not None]

    def input_chw(self) -> tuple[int, int, int]:
        # every net documents its input through its Normalize buffers (channels) and image size
        c = getattr(self.net, "in_channels", None) or self.net.normalize.mean.shape[1]
        size = getattr(self.net, "image_size", 28)
        return (c, size, size)

    @property
    def is_classifier(self) -> bool:
        return getattr(self.net, "is_classifier", True)

    @property
    def exports_features(self) -> bool:
        """A backbone (no classifier) whose forward_stages returns its pooled features first."""
        return getattr(self.net, "exports_features", False)

    @property
    def output_names(self) -> list[str]:
        return [*(["probs"] if self.is_classifier else []), *(["features"] if self.exports_features else []),
                *self.stage_names,
                *[f"{s}_filters" for s in self.filter_stages], *(["cam"] if self.cam_stage else [])]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        logits, stages = self.net.forward_stages(x)
        convs = self.net.stage_convs()
        outs = [*([torch.softmax(logits, dim=1)] if self.is_classifier else []),
                *([logits] if self.exports_features else []), *stages.values(),
                *[convs[s].weight.clone() for s in self.filter_stages]]
        if self.cam_stage:
            # logits = scale * W f / T: the CAM is of the logits the probabilities come from
            scale = getattr(self.net, "logit_scale", 1.0) / getattr(self.net, "temperature", 1.0)
            w = self.net.classifier.weight * scale
            outs.append(nn.functional.conv2d(stages[self.cam_stage], w[:, :, None, None]))
        return tuple(outs)
