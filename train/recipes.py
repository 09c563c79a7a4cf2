"""Training recipes: one frozen config per model, every hyperparameter with its unit.

The fields of :class:`Config` become CLI flags (``python -m train mnist_cnn --epochs 12``); a
recipe's defaults are the values its shipped model was trained with. The descriptive fields of
:class:`Recipe` travel into the model card at export time.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # examples per optimizer step
    lr: float = 0.05  # peak learning rate of the one-cycle schedule
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    momentum: float = 0.9  # SGD momentum / AdamW beta1
    weight_decay: float = 5e-4  # decoupled for AdamW, L2 for SGD; conv/linear weights only
    warmup: float = 0.2  # fraction of all steps spent ramping the learning rate up
    label_smoothing: float = 0.0  # cross-entropy target smoothing
    rotate: float = 0.0  # augmentation: max |rotation|, degrees
    translate: float = 0.0  # augmentation: max |shift|, fraction of the image side
    scale: float = 0.0  # augmentation: max |zoom - 1|
    val_size: int = 5000  # training examples held out for validation curves
    seed: int = 0  # seeds torch, numpy, the split and the shuffles
    threads: int = 2  # torch intra-op threads (this machine has 2 cores)
    smoke: bool = False  # tiny synthetic data, seconds: proves the recipe runs end to end


@dataclass(frozen=True)
class Recipe:
    name: str  # also the model name: models/<name>.onnx
    title: str
    arch: str  # key in train.nets.NETS
    dataset: str  # key in train.datasets.LOADERS
    tab: str  # the app tab that serves it
    config: Config
    arch_kwargs: dict = field(default_factory=dict)
    description: str = ""
    reject_below: float = 0.5  # app: top-1 probability under which the answer is "not a digit"
    limitations: tuple[str, ...] = ()


_DIGIT_LIMITS = (
    "Trained on MNIST only: centred, size-normalised, white-on-black single digits written by US "
    "Census employees and students. Drawings are preprocessed the MNIST way before inference.",
    "A softmax probability is not a calibrated 'is this a digit' detector: letters and doodles can "
    "still get a confident digit label; the low-confidence notice only catches the obvious cases.",
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            name="mnist_lenet5",
            title="LeNet-5 (LeCun et al. 1998)",
            arch="lenet5",
            dataset="mnist",
            tab="digits",
            description="The classic: 32x32 padded input, C1 6@5x5, S2 avg-pool, C3 16@5x5, S4, "
                        "C5 120, F6 84, 10 outputs, scaled tanh. About 62k parameters.",
            config=Config(epochs=20, batch_size=64, lr=0.05, weight_decay=1e-4,
                          rotate=8.0, translate=0.08, scale=0.08),
            limitations=_DIGIT_LIMITS,
        ),
        Recipe(
            name="mnist_cnn",
            title="Modern CNN (BN, ReLU, dropout, GAP)",
            arch="mnist_cnn",
            dataset="mnist",
            tab="digits",
            description="Three conv-BN-ReLU stages (28, 14, 7 px), max pooling, dropout and a "
                        "global-average-pool + linear head; trained with light affine "
                        "augmentation and a one-cycle schedule.",
            arch_kwargs={"width": 16, "dropout": 0.2},
            config=Config(epochs=12, batch_size=128, lr=0.1, weight_decay=5e-4, label_smoothing=0.05,
                          rotate=10.0, translate=0.08, scale=0.1),
            limitations=_DIGIT_LIMITS,
        ),
    ]
}
