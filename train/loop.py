"""The one training loop every recipe uses.

Writes into ``runs/<recipe>/``: ``last.pt`` every epoch (full state, for ``--resume``),
``metrics.json``, ``curves.png``, ``confusion.png`` (validation) and ``log.txt`` lines.
Which epoch is exported: the last one, unless the recipe sets ``keep_best`` (then ``best.pt``,
the epoch of lowest validation loss, refitted on the recipe's ``refit_decay`` if it has one).
Most recipes use a one-cycle schedule that ends at a tiny learning rate, so their last epoch is
the finished model. The test set is never used to pick anything.
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from convscope.metrics import apply_temperature, fit_temperature, nll
from train import nets, plots
from train.datasets import (
    LOADERS,
    PREDEFINED_VAL,
    SMOKE_SIZES,
    ArraySplit,
    load_split,
    resolve_data_dir,
    split_train_val,
    synthetic_split,
)
from train.recipes import Config, Recipe, saved_config

# widest first: what decides CPU speed here (2x between an AVX2 and an AVX-512 machine of one
# vendor's name) and ONNX Runtime's INT8 kernels (VNNI or not)
SIMD_LEVELS = ("amx_int8", "avx512_vnni", "avx512f", "avx_vnni", "avx2", "avx", "sse4_2", "asimd")


def machine_info() -> dict:
    cpu, simd = platform.processor() or platform.machine(), None
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
        if line.startswith(("flags", "Features")) and simd is None:
            flags = set(line.split(":", 1)[1].split())
            simd = next((f for f in SIMD_LEVELS if f in flags), None)
    import os

    return {"cpu": cpu, "simd": simd, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "python": platform.python_version(),
            "torch": torch.__version__}


def cpu_label() -> str:
    """'AMD EPYC (avx512_vnni)': the CPU and its widest vector instructions, as cards and the bench name them."""
    info = machine_info()
    return f"{info['cpu']} ({info['simd']})"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_float_nchw(x_uint8_nhwc: np.ndarray) -> torch.Tensor:
    """uint8 NHWC array -> float NCHW pixels in [0, 255] (what every net's forward takes)."""
    return torch.from_numpy(np.ascontiguousarray(x_uint8_nhwc)).permute(0, 3, 1, 2).float()


def random_affine(x: torch.Tensor, cfg: Config, gen: torch.Generator) -> torch.Tensor:
    """Batched random rotation / zoom / shift with zero (background) fill, in one grid_sample."""
    if not (cfg.rotate or cfg.translate or cfg.scale):
        return x
    n = x.shape[0]

    def u(lim: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * lim

    ang = torch.deg2rad(u(cfg.rotate))
    zoom = 1 + u(cfg.scale)
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    tx, ty = u(2 * cfg.translate), u(2 * cfg.translate)  # affine_grid coordinates span [-1, 1]
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_jitter(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Per-image brightness and contrast change by up to ``amount`` (relative), pixels kept in
    [0, 255]: exposure varies between X-ray machines and scanners."""
    if not amount:
        return x
    n = x.shape[0]
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * amount
    shift = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * amount * 128
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + shift).clamp(0, 255)


def random_resample(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Per-image loss of resolution: shrunk by a random factor in [1 - ``amount``, 1] (antialiased)
    and enlarged back. Films reach 224 px from originals of very different sizes, so how sharp a
    film is says something about where it came from; this keeps the net from leaning on it."""
    if not amount:
        return x
    h, w = x.shape[-2:]
    keep = 1 - torch.rand(x.shape[0], generator=gen) * amount
    out = []
    for img, k in zip(x.split(1), keep.tolist(), strict=True):
        small = F.interpolate(img, size=(max(8, round(h * k)), max(8, round(w * k))), mode="bilinear",
                              antialias=True, align_corners=False)
        out.append(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False))
    return torch.cat(out).clamp(0, 255)


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only, not on biases or norm parameters."""
    decay, no_decay = [], []
    for p in net.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def airbench_groups(net: nn.Module, cfg: Config) -> list[dict]:
    """airbench's SGD, rewritten for a mean (not summed) loss.

    airbench sums the loss over the batch and states lr and weight decay per 1024 examples,
    divided by ``1024 * (1 + 1 / (1 - momentum))`` so that Nesterov steps have the scale of the
    gradients whatever the momentum. With a mean loss the same steps need ``lr * batch_size``;
    the decay each step applies (``lr * wd``) stays airbench's. BatchNorm shifts learn
    ``bias_lr_scale`` times faster without more decay. Every parameter, weights and biases
    alike, is decayed, as in airbench.
    """
    kilostep = 1024 * (1 + 1 / (1 - cfg.momentum))
    lr = cfg.lr / kilostep * cfg.batch_size
    decay_per_step = cfg.weight_decay * cfg.batch_size / kilostep
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    norm = [p for n, p in named if "norm" in n]
    other = [p for n, p in named if "norm" not in n]
    lr_norm = lr * cfg.bias_lr_scale
    return [{"params": norm, "lr": lr_norm, "weight_decay": decay_per_step / lr_norm},
            {"params": other, "lr": lr, "weight_decay": decay_per_step / lr}]


def triangle(total_steps: int, warmup: float, start: float = 0.2, end: float = 0.07):
    """airbench's schedule as a multiplier of the peak lr: ``start`` -> 1 over the first
    ``warmup`` of the steps, then linearly down to ``end``."""
    up = max(int(total_steps * warmup), 1)

    def factor(step: int) -> float:
        if step < up:
            return start + (1 - start) * step / up
        return 1 + (end - 1) * (step - up) / max(total_steps - up, 1)

    return factor


def make_optimizer(net: nn.Module, cfg: Config, steps: int) -> tuple[torch.optim.Optimizer, object]:
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(param_groups(net, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(param_groups(net, cfg.weight_decay), lr=cfg.lr, betas=(cfg.momentum, 0.999))
    elif cfg.optimizer == "sgd_airbench":
        opt = torch.optim.SGD(airbench_groups(net, cfg), momentum=cfg.momentum, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    if cfg.schedule == "triangle":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, triangle(steps, cfg.warmup))
    elif cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                    total_steps=steps, pct_start=cfg.warmup,
                                                    anneal_strategy="linear")
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    return opt, sched


class Lookahead:
    """airbench's lookahead: every ``every`` steps the float state (weights and BN statistics)
    moves to an average that trails the net, and the net jumps back onto it. The average's
    weight on the past grows as ``0.95**5 * (step / total)**3``; at the end the net is the
    average."""

    def __init__(self, net: nn.Module, total_steps: int, every: int) -> None:
        self.total, self.every = total_steps, every
        self.avg = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def step(self, net: nn.Module, step: int) -> None:
        if step % self.every == 0 or step == self.total:
            decay = 1.0 if step == self.total else 0.95 ** 5 * (step / self.total) ** 3
            state = net.state_dict()
            for k, avg in self.avg.items():
                avg.lerp_(state[k], 1 - decay)
                state[k].copy_(avg)


def flip_crop(x: torch.Tensor, flip: torch.Tensor | None, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Flip the images marked in ``flip``; reflect-pad by ``pad`` and crop each at a random offset."""
    if flip is not None:
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if pad:
        n, _, h, w = x.shape
        padded = F.pad(x, (pad,) * 4, mode="reflect")
        dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=gen))
        out = torch.empty_like(x)
        for oy in range(2 * pad + 1):
            for ox in range(2 * pad + 1):
                sel = (dy == oy) & (dx == ox)
                if sel.any():
                    out[sel] = padded[sel, :, oy:oy + h, ox:ox + w]
        x = out
    return x


@torch.no_grad()
def evaluate(net: nn.Module, data: ArraySplit, batch_size: int = 500) -> dict:
    """Loss, accuracy and confusion matrix of ``net`` (eval mode) on ``data``; the temperature that
    minimises NLL on ``data``, and that NLL."""
    net.eval()
    batch_size = max(8, batch_size * 1024 // (data.x.shape[1] * data.x.shape[2]))  # bounded memory at 224 px
    k = len(data.labels)
    cm = np.zeros((k, k), np.int64)
    loss_sum = 0.0
    probs = []
    for i in range(0, len(data), batch_size):
        x = to_float_nchw(data.x[i:i + batch_size]).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(data.y[i:i + batch_size])
        logits = net(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        np.add.at(cm, (y.numpy(), logits.argmax(1).numpy()), 1)
        probs.append(torch.softmax(logits.double(), 1).numpy())
    # NLL once the temperature is fitted on these very images: what export's calibration will reach
    p = np.concatenate(probs)
    temperature = fit_temperature(p, data.y)
    return {"loss": loss_sum / len(data), "acc": float(np.trace(cm) / cm.sum()), "confusion": cm,
            "temperature": temperature, "nll_calibrated": nll(apply_temperature(p, temperature), data.y)}


@torch.no_grad()
def linear_probe(net: nn.Module, train: ArraySplit, decay: float, batch_size: int = 64) -> None:
    """LP-FT's first step (Kumar et al. 2022): set ``net.classifier`` to the L2 logistic regression
    on the frozen features of the (unaugmented) training split, so fine-tuning starts from a head
    that already fits and its first large gradients do not bend the pretrained features."""
    net.eval()
    feats = torch.cat([net.pooled_features(to_float_nchw(train.x[i:i + batch_size]).contiguous(
        memory_format=torch.channels_last)) for i in range(0, len(train), batch_size)])
    y = torch.from_numpy(train.y)
    w = torch.zeros_like(net.classifier.weight, requires_grad=True)
    b = torch.zeros_like(net.classifier.bias, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        with torch.enable_grad():  # LBFGS calls this inside the no_grad above
            loss = F.cross_entropy(F.linear(feats, w, b), y) + decay / 2 * w.square().sum()
            loss.backward()
        return loss

    opt.step(closure)
    net.classifier.weight.copy_(w)
    net.classifier.bias.copy_(b)


@torch.no_grad()
def recompute_batchnorm(net: nn.Module, train: ArraySplit, n: int, seed: int, batch_size: int = 64) -> None:
    """BatchNorm running statistics re-estimated as the plain average over ``n`` unaugmented
    training images (a seeded subset): during training they tracked augmented batches of
    weights that were still moving."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    idx = np.sort(np.random.default_rng(seed).choice(len(train), min(n, len(train)), replace=False))
    net.train()
    for i in range(0, len(idx), batch_size):
        net(to_float_nchw(train.x[idx[i:i + batch_size]]).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    net.eval()


REFIT_BN_IMAGES = 2048


def refit(net: nn.Module, train: ArraySplit, val: ArraySplit, cfg: Config) -> dict:
    """The post-training step ``cfg.refit_decay`` asks for, on the kept weights: BatchNorm
    statistics re-estimated (:func:`recompute_batchnorm`), then the head refit on the final
    features (:func:`linear_probe`). Returns what it did and the validation loss before and after."""
    t0 = time.perf_counter()
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    before = evaluate(net, val)
    recompute_batchnorm(net, train, REFIT_BN_IMAGES, cfg.seed)
    linear_probe(net, train, cfg.refit_decay)
    after = evaluate(net, val)
    # kept only if validation NLL after temperature scaling (the calibration export fits) goes down:
    # the refit was chosen on one run, and on an LP-FT run it raised validation loss 0.050 -> 0.076
    kept = after["nll_calibrated"] < before["nll_calibrated"]
    if not kept:
        net.load_state_dict(trained)
    return {"what": f"BatchNorm statistics re-estimated on {min(REFIT_BN_IMAGES, len(train))} unaugmented "
                    f"training images, then the head refit as a logistic regression (L2 {cfg.refit_decay:g}) "
                    "on the training split's features; kept only if it lowers the validation NLL after "
                    "temperature scaling",
            "decay": cfg.refit_decay, "kept": kept,
            "val_loss_before": before["loss"], "val_acc_before": before["acc"],
            "val_loss_after": after["loss"], "val_acc_after": after["acc"],
            "val_nll_calibrated_before": before["nll_calibrated"], "val_nll_calibrated_after": after["nll_calibrated"],
            "time_s": round(time.perf_counter() - t0, 1)}


# fields that act only after the last epoch: a finished run can be resumed with them changed
POST_TRAINING = ("refit_decay",)


def same_training(saved: dict, cfg: Config) -> bool:
    """Whether a checkpoint's config trains like ``cfg``."""
    saved = saved_config(saved)
    return all(saved[k] == v for k, v in asdict(cfg).items() if k not in POST_TRAINING)


def load_data(recipe: Recipe, cfg: Config, data_dir: str | None, download: bool) -> tuple[ArraySplit, ArraySplit]:
    if cfg.smoke and LOADERS[recipe.dataset][1] is not None:  # (a folder of your images is its own smoke data)
        n = SMOKE_SIZES.get(recipe.dataset, 384)
        return split_train_val(synthetic_split(recipe.dataset, n, seed=cfg.seed), n // 3, cfg.seed)
    if recipe.dataset in PREDEFINED_VAL:  # e.g. patient-level: no patient in both train and val
        return (load_split(recipe.dataset, "train", data_dir=data_dir, download=download),
                load_split(recipe.dataset, "val", data_dir=data_dir))
    full = load_split(recipe.dataset, "train", data_dir=data_dir, download=download)
    return split_train_val(full, cfg.val_size, cfg.seed)


def _start_net(recipe: Recipe, cfg: Config, train: Any, data_dir: str | None, resuming: bool) -> nn.Module:
    """The recipe's net, initialised as the recipe says (data-dependent init, ImageNet weights, a
    linear probe) unless a checkpoint is about to replace its weights."""
    net = nets.build(recipe.arch, **recipe.arch_kwargs).to(memory_format=torch.channels_last)
    if hasattr(net, "init_from_data") and not resuming:  # e.g. patch whitening from training images
        net.init_from_data(to_float_nchw(train.x[:5000]))
    if recipe.pretrained and not resuming and not cfg.smoke:  # transfer learning (smoke: random init, no files)
        net.init_imagenet(str(resolve_data_dir(data_dir) / recipe.pretrained))
    if cfg.probe_decay and not resuming:
        linear_probe(net, train, cfg.probe_decay)
    return net


def _resume(ckpt_path: Path, cfg: Config, net: nn.Module, opt: Any, sched: Any, lookahead: Any) -> tuple:
    """Load the last checkpoint into net, optimiser, schedule and lookahead; returns (history,
    epochs done, training seconds so far)."""
    state = torch.load(ckpt_path, weights_only=False)
    if not same_training(state["config"], cfg):
        raise SystemExit(f"--resume: {ckpt_path} was trained with a different config; "
                         "pass the same flags or start a fresh run directory")
    net.load_state_dict(state["state_dict"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if lookahead:
        lookahead.avg = state["lookahead"]
    print(f"resumed from {ckpt_path} at epoch {state['epoch']}")
    return state["history"], state["epoch"], state["train_time_s"]


@dataclass
class Trainer:
    """What one epoch of training needs: the net, its optimiser and schedule, and the data."""

    net: nn.Module
    opt: Any
    sched: Any
    lookahead: Any
    train: Any
    cfg: Config
    frozen: list
    per_epoch: int
    total_steps: int
    base_flip: torch.Tensor  # airbench's flips: a fixed random half, all of them flipped every other epoch

    def epoch(self, epoch: int, n_epochs: int) -> tuple[float, float]:
        """Train one epoch; returns (mean loss, accuracy) on its training batches."""
        cfg, net, train = self.cfg, self.net, self.train
        net.train()
        for m in self.frozen:  # frozen batch norms keep their pretrained statistics
            m.eval()
        if cfg.whiten_bias_epochs and hasattr(net, "whiten"):
            net.whiten.bias.requires_grad_(epoch < cfg.whiten_bias_epochs)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # resumable shuffles
        order = torch.randperm(len(train), generator=gen).numpy()
        steps = min(self.per_epoch, self.total_steps - epoch * self.per_epoch)
        seen, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{n_epochs}", leave=False, mininterval=2.0, disable=None)
        for step in bar:
            idx = np.sort(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            x = random_jitter(random_affine(to_float_nchw(train.x[idx]), cfg, gen), cfg.jitter, gen)
            x = random_resample(x, cfg.resample, gen)
            if cfg.flip or cfg.crop_pad:
                flips = (self.base_flip[idx] ^ bool(epoch % 2)) if cfg.flip else None
                x = flip_crop(x, flips, cfg.crop_pad, gen)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(train.y[idx])
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            if self.lookahead:
                self.lookahead.step(net, epoch * self.per_epoch + step + 1)
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
        return loss_sum / seen, correct / seen


def _log(line: str, log: Any) -> None:
    print(line, flush=True)
    print(line, file=log, flush=True)


def _finish_kept(net: nn.Module, train: Any, val: Any, cfg: Config, state: dict, out_dir: Path, log: Any) -> None:
    """best.pt gets the whole run's curves, and the refit (when the recipe asks) acts on the kept
    epoch: best.pt, or the last epoch when keep_best is off."""
    best_path = out_dir / "best.pt"
    if cfg.keep_best and best_path.exists():
        best = torch.load(best_path, weights_only=False)
        if len(best["history"]) < len(state["history"]):
            best["history"] = state["history"]
            torch.save(best, best_path)
    if not cfg.refit_decay:
        return
    kept = torch.load(best_path, weights_only=False) if best_path.exists() else {
        k: v for k, v in state.items() if k not in ("optimizer", "scheduler", "lookahead")}
    # a second --resume keeps the first refit and its record (refitting again would report the
    # refit weights as "before")
    if kept.get("refit", {}).get("decay") != cfg.refit_decay:
        net.load_state_dict(kept["state_dict"])
        kept["refit"] = refit(net, train, val, cfg)
        kept["state_dict"], kept["config"] = net.state_dict(), asdict(cfg)
        torch.save(kept, best_path)
    r = kept["refit"]
    _log(f"refit: val loss {r['val_loss_before']:.4f} -> {r['val_loss_after']:.4f}, "
         f"acc {r['val_acc_before']:.4f} -> {r['val_acc_after']:.4f}"
         + (f", calibrated NLL {r['val_nll_calibrated_before']:.4f} -> {r['val_nll_calibrated_after']:.4f}: "
            f"{'kept' if r['kept'] else 'not kept'}" if "kept" in r else ""), log)


def _write_metrics(recipe: Recipe, cfg: Config, state: dict, net: nn.Module, labels: list[str],
                   out_dir: Path) -> dict:
    metrics = {"recipe": recipe.name, "config": state["config"], "history": state["history"],
               "final": state["history"][-1], "train_time_s": state["train_time_s"],
               "machine": state["machine"], "params": nets.count_params(net),
               "val_confusion": state["val_confusion"]}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plots.plot_curves(metrics["history"], out_dir / "curves.png", f"{recipe.title}: training curves",
                      cfg.label_smoothing)
    plots.plot_confusion(np.array(state["val_confusion"]), labels, out_dir / "confusion.png",
                         f"{recipe.name}: validation confusion")
    return metrics


def fit(recipe: Recipe, cfg: Config, out_dir: Path, data_dir: str | None = None,
        resume: bool = False, download: bool = False) -> dict:
    """Train ``recipe`` with ``cfg``; returns the final metrics dict (also in metrics.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    train, val = load_data(recipe, cfg, data_dir, download)
    ckpt_path = out_dir / "last.pt"
    resuming = resume and ckpt_path.exists()
    net = _start_net(recipe, cfg, train, data_dir, resuming)
    per_epoch = len(train) // cfg.batch_size if cfg.drop_last else math.ceil(len(train) / cfg.batch_size)
    total_steps = math.ceil(cfg.epochs * per_epoch)
    frozen = net.freeze_early(cfg.freeze_stages) if cfg.freeze_stages else []
    opt, sched = make_optimizer(net, cfg, total_steps)
    lookahead = Lookahead(net, total_steps, cfg.lookahead_every) if cfg.lookahead_every else None
    history, start_epoch, train_time = (_resume(ckpt_path, cfg, net, opt, sched, lookahead) if resuming
                                        else ([], 0, 0.0))
    base_flip = torch.rand(len(train), generator=torch.Generator().manual_seed(cfg.seed)) < 0.5
    trainer = Trainer(net, opt, sched, lookahead, train, cfg, frozen, per_epoch, total_steps, base_flip)

    log = (out_dir / "log.txt").open("a")
    print(f"{recipe.name}: {nets.count_params(net):,} params, {len(train)} train / {len(val)} val, "
          f"{cfg.epochs} epochs = {total_steps} steps of {cfg.batch_size}", file=log, flush=True)
    n_epochs = math.ceil(cfg.epochs)
    for epoch in range(start_epoch, n_epochs):
        t0 = time.perf_counter()
        train_loss, train_acc = trainer.epoch(epoch, n_epochs)
        train_time += time.perf_counter() - t0
        ev = evaluate(net, val)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
               "val_loss": ev["loss"], "val_acc": ev["acc"], "lr": sched.get_last_lr()[-1],
               "epoch_time_s": time.perf_counter() - t0, "train_time_s": train_time}
        history.append(row)
        _log(f"epoch {epoch + 1:3d}/{n_epochs}  train loss {row['train_loss']:.4f} acc "
             f"{row['train_acc']:.4f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
             f"{row['epoch_time_s']:.1f}s (total {train_time / 60:.1f} min)", log)
        state = {"arch": recipe.arch, "arch_kwargs": recipe.arch_kwargs, "recipe": recipe.name,
                 "dataset": recipe.dataset,
                 "state_dict": net.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "config": asdict(cfg), "history": history,
                 "lookahead": lookahead.avg if lookahead else None,
                 "epoch": epoch + 1, "train_time_s": train_time, "machine": machine_info(),
                 "val_confusion": ev["confusion"].tolist()}
        torch.save(state, ckpt_path)
        if cfg.keep_best and row["val_loss"] <= min(h["val_loss"] for h in history):
            torch.save({k: v for k, v in state.items() if k not in ("optimizer", "scheduler", "lookahead")},
                       out_dir / "best.pt")
    state = torch.load(ckpt_path, weights_only=False)
    _finish_kept(net, train, val, cfg, state, out_dir, log)
    metrics = _write_metrics(recipe, cfg, state, net, train.labels, out_dir)
    log.close()
    return metrics
