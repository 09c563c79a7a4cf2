"""Build step for the comparison view: parameters and FLOPs of the classic architectures the
course compares, computed from their torchvision definitions (no weights needed) and stored as
data, so the app can show them without torch.

    python -m export.classic_archs   # writes models/reference/classic_archs.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision

from export.onnx_export import count_flops
from train import nets

OUT = Path(__file__).resolve().parent.parent / "models" / "reference" / "classic_archs.json"

# name -> (year, paper, how to build it, input C x H x W)
CLASSICS = {
    "LeNet-5": (1998, "LeCun et al., Gradient-based learning applied to document recognition",
                lambda: nets.LeNet5(), (1, 28, 28)),
    "AlexNet": (2012, "Krizhevsky, Sutskever & Hinton, ImageNet classification with deep CNNs",
                lambda: torchvision.models.alexnet(), (3, 224, 224)),
    "VGG-16": (2014, "Simonyan & Zisserman, Very deep convolutional networks",
               lambda: torchvision.models.vgg16(), (3, 224, 224)),
    "GoogLeNet": (2014, "Szegedy et al., Going deeper with convolutions",
                  lambda: torchvision.models.googlenet(aux_logits=False, init_weights=False), (3, 224, 224)),
    "ResNet-50": (2015, "He et al., Deep residual learning for image recognition",
                  lambda: torchvision.models.resnet50(), (3, 224, 224)),
    "DenseNet-121": (2016, "Huang et al., Densely connected convolutional networks",
                     lambda: torchvision.models.densenet121(), (3, 224, 224)),
}


def measure() -> list[dict]:
    rows = []
    for name, (year, paper, make, chw) in CLASSICS.items():
        net = make().eval()
        rows.append({"name": name, "year": year, "paper": paper, "input": list(chw),
                     "params": nets.count_params(net), "flops": count_flops(net, chw)})
    return rows


def main() -> None:
    torch.set_num_threads(1)
    rows = measure()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "source": f"torchvision {torchvision.__version__} model definitions (LeNet-5: train/nets.py); "
                  "FLOPs = 2 x multiply-adds of conv and linear layers for one image "
                  "(export.onnx_export.count_flops)",
        "command": "python -m export.classic_archs",
        "architectures": rows}, indent=1) + "\n")
    for r in rows:
        print(f"{r['name']:14s} {r['params'] / 1e6:8.2f} M params {r['flops'] / 1e9:8.3f} GFLOPs")


if __name__ == "__main__":
    main()
