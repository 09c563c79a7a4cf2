"""Training recipes: one frozen config per model, every hyperparameter with its unit.

The fields of :class:`Config` become CLI flags (``python -m train mnist_cnn --epochs 12``); a
recipe's defaults are the values its shipped model was trained with. The descriptive fields of
:class:`Recipe` travel into the model card at export time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Config:
    epochs: float = 10  # passes over the training split (a fraction ends mid-epoch)
    batch_size: int = 128  # examples per optimizer step
    lr: float = 0.05  # peak learning rate; "sgd_airbench": per 1024 examples, airbench's unit
    optimizer: str = "sgd"  # "sgd" (Nesterov), "adamw", or "sgd_airbench" (see train.loop)
    momentum: float = 0.9  # SGD momentum / AdamW beta1
    weight_decay: float = 5e-4  # decoupled for AdamW, L2 for SGD; conv/linear weights only
    schedule: str = "onecycle"  # "onecycle" (linear up, linear down) or "triangle" (airbench)
    warmup: float = 0.2  # fraction of all steps spent ramping the learning rate up
    bias_lr_scale: float = 1.0  # "sgd_airbench": learning-rate multiplier for BatchNorm shifts
    whiten_bias_epochs: int = 0  # nets with a whitening layer: epochs its bias trains, then frozen
    lookahead_every: int = 0  # steps between lookahead/EMA syncs (0: off), airbench's schedule
    drop_last: bool = False  # skip the last partial batch of each epoch
    label_smoothing: float = 0.0  # cross-entropy target smoothing
    rotate: float = 0.0  # augmentation: max |rotation|, degrees
    translate: float = 0.0  # augmentation: max |shift|, fraction of the image side
    scale: float = 0.0  # augmentation: max |zoom - 1|
    jitter: float = 0.0  # augmentation: max relative change of brightness and of contrast
    resample: float = 0.0  # augmentation: max relative loss of resolution (shrink, then enlarge back)
    flip: bool = False  # augmentation: horizontal flips (a random half, all flipped every other epoch)
    crop_pad: int = 0  # augmentation: reflect-pad by this many pixels, then crop at a random offset
    val_size: int = 5000  # training examples held out for validation curves
    freeze_stages: int = 0  # transfer learning: stem + this many early stages keep their pretrained values
    probe_decay: float = 0.0  # transfer learning, LP-FT: >0 fits the new head first, as a logistic regression
    # with this L2 penalty on the frozen pretrained features of the training split (0: random head)
    refit_decay: float = 0.0  # after training, >0: the kept epoch's BatchNorm statistics re-estimated on
    # unaugmented training images and its head refit as a logistic regression with this L2 penalty
    keep_best: bool = False  # also keep best.pt, the epoch of lowest validation loss (early stopping)
    seed: int = 0  # seeds torch, numpy, the split and the shuffles
    threads: int = 2  # torch intra-op threads (this machine has 2 cores)
    smoke: bool = False  # tiny synthetic data, seconds: proves the recipe runs end to end


def saved_config(saved: dict) -> dict:
    """A config dict from a checkpoint or card, completed with today's defaults for the fields added
    since it was written (a new field's default is neutral: what every older run did)."""
    return asdict(Config()) | saved


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
    pretrained: str = ""  # weights file under the data dir the net starts from (transfer learning)
    int8: bool = False  # export also tries an INT8 variant (export.quantize), shipped if accurate enough
    int8_profile: str = "cnn"  # export.quantize.PROFILES: which ops are quantized, which stay fp32
    limitations: tuple[str, ...] = ()
    # What export does with the model, declared here and recorded in the card (card.training["declared"]):
    calibrate: bool = False  # fit a temperature (and, for two classes, a threshold) on the validation split
    served: bool = True  # False: a baseline measured for another card (models/reference/), not served
    probes: tuple[str, ...] = ()  # extra measurements export runs (export.__main__.PROBES), e.g. "covid_source"


_DIGIT_LIMITS = (
    "Trained on MNIST only: centred, size-normalised, white-on-black single digits written by US "
    "Census employees and students. Drawings are preprocessed the MNIST way before inference.",
    "A softmax probability is not a calibrated 'is this a digit' detector: letters and doodles can "
    "still get a confident digit label; the low-confidence notice only catches the obvious cases.",
)

_CIFAR_LIMITS = (
    "Trained on CIFAR-10 only: 32x32 photos of ten classes. Anything else (people, food, a "
    "drawing) still gets one of the ten labels; the low-confidence hint catches only some.",
    "A photo is shrunk to 32x32 before the model sees it: small or off-centre objects vanish.",
)

_XRAY_LIMITS = (
    "Research demonstration - not for clinical use. Not a medical device; no clinical validation.",
    "Trained on pediatric (1-5 years) anterior-posterior chest X-rays from one hospital in Guangzhou: "
    "adult films, other hospitals, other devices, lateral views or other findings are outside what it saw.",
    "Sees the whole film squashed to 224x224: fine detail is lost, and it can use shortcuts (text markers, "
    "borders, exposure) as well as the lungs; the heatmap shows where the evidence came from, not why.",
)
# what every X-ray run shares: AdamW, one-cycle, early stopping, and (unless overridden) light geometry
# and exposure augmentation
_XRAY_TRAIN = {"batch_size": 32, "optimizer": "adamw", "weight_decay": 0.02, "warmup": 0.15, "keep_best": True,
               "rotate": 10.0, "translate": 0.06, "scale": 0.1, "jitter": 0.2}
# xray_pneumonia's stronger geometry and exposure augmentation: a later recipe, kept because its best
# validation loss beat the run with _XRAY_TRAIN's (the rule was set before its test figures were seen)
_XRAY_STRONG_AUG = {"rotate": 15.0, "translate": 0.1, "scale": 0.2, "jitter": 0.4, "resample": 0.5}
LITE0_WEIGHTS = "weights/efficientnet-lite0-57934424.pth"


def _augmentation(aug: dict) -> str:
    """A recipe's augmentation in words, from the values it trains with (descriptions cannot drift)."""
    parts = [f"rotation ({aug['rotate']:g} degrees)", f"shift ({aug['translate']:.0%})",
             f"zoom ({aug['scale']:.0%})", f"exposure jitter ({aug['jitter']:.0%})"]
    if aug.get("resample"):
        parts.append(f"resolution loss (up to {aug['resample']:.0%})")
    return ", ".join(parts[:-1]) + " and " + parts[-1]

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
        Recipe(
            name="cifar_resnet",
            title="airbench94-style ResNet (whitening, BN, GELU, TTA)",
            arch="cifar_resnet",
            dataset="cifar10",
            tab="cifar10",
            description="Keller Jordan's airbench94 ported to the CPU: a frozen 2x2 patch-whitening "
                        "conv, three conv-pool-BN-GELU groups (64/256/256), global max-pool, linear/9; "
                        "SGD-Nesterov with label smoothing, a triangular schedule, lookahead, "
                        "alternating flips and 2-px translations, and test-time flips and 1-px "
                        "translations inside the graph (6 views; the single_view variant runs the "
                        "photo alone).",
            # airbench94's hyperparameters, except 12 epochs instead of 9.9: a CPU run here takes
            # about an hour, so the longer schedule buys a safety margin over 94% for 20% more time.
            config=Config(epochs=12, batch_size=1024, lr=11.5, optimizer="sgd_airbench", momentum=0.85,
                          weight_decay=0.0153, schedule="triangle", warmup=0.23, bias_lr_scale=64.0,
                          whiten_bias_epochs=3, lookahead_every=5, drop_last=True, label_smoothing=0.2,
                          flip=True, crop_pad=2, val_size=1000),
            reject_below=0.4,
            int8=True,
            limitations=_CIFAR_LIMITS,
        ),
        Recipe(
            name="cifar_simple",
            title="Seed baseline (Keras-style CNN)",
            arch="cifar_simple",
            dataset="cifar10",
            tab="cifar10",
            description="The course's starting point: two blocks of two 3x3 convs (32, 64) with "
                        "ReLU, max pooling and dropout, a dense layer of 512 and softmax. No batch "
                        "norm, no augmentation, Adam.",
            config=Config(epochs=12, batch_size=128, lr=1e-3, optimizer="adamw", weight_decay=0.0,
                          warmup=0.1),
            reject_below=0.4,
            int8=True,
            limitations=_CIFAR_LIMITS,
        ),
        Recipe(
            name="cifar_inception",
            title="Small GoogLeNet (inception blocks)",
            arch="cifar_inception",
            dataset="cifar10",
            tab="cifar10",
            description="A GoogLeNet-style net for 32x32: a conv stem, five inception blocks "
                        "(1x1, 3x3, factorised 5x5 and pooling branches, batch norm) at 16 and 8 "
                        "px, global average pooling. Flip and 4-px translation augmentation.",
            arch_kwargs={"width": 8, "dropout": 0.2},
            config=Config(epochs=10, batch_size=128, lr=0.2, momentum=0.9, weight_decay=5e-4,
                          label_smoothing=0.1, flip=True, crop_pad=4),
            reject_below=0.4,
            int8=True,
            limitations=_CIFAR_LIMITS,
        ),
        Recipe(
            name="xray_pneumonia",
            title="Pneumonia: EfficientNet-Lite0, ImageNet transfer",
            arch="xray_lite0",
            dataset="xray2",
            calibrate=True,
            tab="xray",
            description="EfficientNet-Lite0 pretrained on ImageNet, fine-tuned end to end on the Kermany "
                        "pediatric chest X-rays (normal vs pneumonia) at 224x224, LP-FT style: the new head first "
                        "fitted as a logistic regression on the frozen ImageNet features, then AdamW, one-cycle, "
                        f"{_augmentation(_XRAY_STRONG_AUG)}, the epoch of lowest validation loss kept, its batch-norm "
                        "statistics re-estimated on unaugmented training films and its head refit as a "
                        "logistic regression on their features (kept because it lowered the validation NLL); "
                        "temperature and decision threshold fitted on the patient-level validation split.",
            arch_kwargs={"num_classes": 2},
            # each a rule fixed before any test figure (team notes of 2026-12-02): refit_decay, of
            # BatchNorm re-estimation + logistic-regression heads, the lowest validation NLL (0.0723 -> 0.0698);
            # probe_decay (LP-FT) and _XRAY_STRONG_AUG's resample, the lowest validation NLL of the two runs exported
            # (LP-FT 0.0485, LP-FT + resample 0.0443) against the file they replaced (0.0698)
            config=Config(epochs=6, lr=5e-4, probe_decay=0.01, refit_decay=1e-3, **(_XRAY_TRAIN | _XRAY_STRONG_AUG)),
            pretrained=LITE0_WEIGHTS,
            int8=True, int8_profile="mobile",
            limitations=_XRAY_LIMITS,
        ),
        Recipe(
            name="xray_pneumonia_scratch",
            title="Pneumonia: EfficientNet-Lite0 from scratch (transfer-learning baseline)",
            arch="xray_lite0",
            dataset="xray2",
            calibrate=True,
            tab="xray",
            served=False,  # measured so xray_pneumonia's card can state what ImageNet buys
            description="The same network, data and augmentation as xray_pneumonia, from a random "
                        "initialisation (a higher peak learning rate, as usual from scratch), for 3 epochs.",
            arch_kwargs={"num_classes": 2},
            # 3 epochs, half xray_pneumonia's 6: what this session's CPU allowed. The card compares the two
            # at equal epochs on validation too (both histories), so the budget difference is visible.
            config=Config(epochs=3, lr=2e-3, **(_XRAY_TRAIN | _XRAY_STRONG_AUG)),
            limitations=_XRAY_LIMITS,
        ),
        Recipe(
            name="xray_covid3",
            title="Normal / pneumonia / COVID-19: EfficientNet-Lite0, ImageNet transfer",
            arch="xray_lite0",
            dataset="xray3",
            calibrate=True,
            probes=("covid_source",),
            tab="xray",
            description="EfficientNet-Lite0 pretrained on ImageNet, fine-tuned on Kermany's pediatric "
                        "normal/pneumonia films plus the adult COVID-19 films of the COVID-19 Image Data "
                        "Collection (split by patient), at 224x224 with the stem and first two stages frozen at "
                        "their ImageNet values and each film standardised in the graph (per-image mean and "
                        "spread), the new head first fitted as a logistic regression on the frozen ImageNet "
                        f"features (LP-FT), label smoothing 0.1, 4 epochs, {_augmentation(_XRAY_STRONG_AUG)}; "
                        "the kept epoch's batch-norm statistics re-estimated on unaugmented training films and "
                        "its head refit, kept only if that lowers the validation loss; otherwise "
                        "xray_pneumonia's recipe.",
            arch_kwargs={"num_classes": 3, "standardize": True},
            # xray_pneumonia's LP-FT, stronger augmentation and refit, 4 epochs (what this session's CPU
            # allowed), kept by a rule fixed before any test figure (team notes of 2026-12-02, second
            # session): lower validation NLL after temperature than the 3-epoch file it replaced (0.1241)
            config=Config(epochs=4, lr=5e-4, freeze_stages=2, label_smoothing=0.1, probe_decay=0.01,
                          refit_decay=1e-3, **(_XRAY_TRAIN | _XRAY_STRONG_AUG)),
            pretrained=LITE0_WEIGHTS,
            int8=True, int8_profile="mobile",
            limitations=(*_XRAY_LIMITS,
                         "SOURCE CONFOUND: every COVID-19 film is adult and from other hospitals and devices, "
                         "while every normal and pneumonia film is pediatric from one hospital. The model can "
                         "learn 'adult, other hospital' instead of COVID-19: see the card's confound probe."),
        ),
    ]
}
