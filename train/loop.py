"""The one training loop every recipe uses.

Writes into ``runs/<recipe>/``: ``last.pt`` every epoch (full state, for ``--resume``),
``metrics.json``, ``curves.png``, ``confusion.png`` (validation) and ``log.txt`` lines.
The exported model is always the last epoch: recipes use a one-cycle schedule that ends at a
tiny learning rate, so the last epoch is the finished model, and the test set is never used to
pick anything.
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from train import nets, plots
from train.datasets import ArraySplit, load_split, split_train_val, synthetic_split
from train.recipes import Config, Recipe


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "python": platform.python_version(),
            "torch": torch.__version__}


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


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only, not on biases or norm parameters."""
    decay, no_decay = [], []
    for p in net.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(net: nn.Module, cfg: Config, steps: int) -> tuple[torch.optim.Optimizer, object]:
    groups = param_groups(net, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps,
                                                pct_start=cfg.warmup, anneal_strategy="linear")
    return opt, sched


@torch.no_grad()
def evaluate(net: nn.Module, data: ArraySplit, batch_size: int = 500) -> dict:
    """Loss, accuracy and confusion matrix of ``net`` (eval mode) on ``data``."""
    net.eval()
    k = len(data.labels)
    cm = np.zeros((k, k), np.int64)
    loss_sum = 0.0
    for i in range(0, len(data), batch_size):
        x = to_float_nchw(data.x[i:i + batch_size]).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(data.y[i:i + batch_size])
        logits = net(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        np.add.at(cm, (y.numpy(), logits.argmax(1).numpy()), 1)
    return {"loss": loss_sum / len(data), "acc": float(np.trace(cm) / cm.sum()), "confusion": cm}


def load_data(recipe: Recipe, cfg: Config, data_dir: str | None, download: bool) -> tuple[ArraySplit, ArraySplit]:
    if cfg.smoke:
        full = synthetic_split(recipe.dataset, 384, seed=cfg.seed)
        return split_train_val(full, 128, cfg.seed)
    full = load_split(recipe.dataset, "train", data_dir=data_dir, download=download)
    return split_train_val(full, cfg.val_size, cfg.seed)


def fit(recipe: Recipe, cfg: Config, out_dir: Path, data_dir: str | None = None,
        resume: bool = False, download: bool = False) -> dict:
    """Train ``recipe`` with ``cfg``; returns the final metrics dict (also in metrics.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    train, val = load_data(recipe, cfg, data_dir, download)
    net = nets.build(recipe.arch, **recipe.arch_kwargs).to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    opt, sched = make_optimizer(net, cfg, cfg.epochs * steps_per_epoch)
    history: list[dict] = []
    start_epoch, train_time = 0, 0.0
    ckpt_path = out_dir / "last.pt"
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        if state["config"] != asdict(cfg):
            raise SystemExit(f"--resume: {ckpt_path} was trained with a different config; "
                             "pass the same flags or start a fresh run directory")
        net.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start_epoch, train_time = state["history"], state["epoch"], state["train_time_s"]
        print(f"resumed from {ckpt_path} at epoch {start_epoch}")

    log = (out_dir / "log.txt").open("a")
    print(f"{recipe.name}: {nets.count_params(net):,} params, {len(train)} train / {len(val)} val, "
          f"{cfg.epochs} epochs x {steps_per_epoch} steps", file=log, flush=True)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # resumable shuffles
        order = torch.randperm(len(train), generator=gen).numpy()
        seen, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   mininterval=2.0, disable=None)
        for step in bar:
            idx = np.sort(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            x = random_affine(to_float_nchw(train.x[idx]), cfg, gen).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(train.y[idx])
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
        train_time += time.perf_counter() - t0
        ev = evaluate(net, val)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "val_loss": ev["loss"], "val_acc": ev["acc"], "lr": sched.get_last_lr()[0],
               "epoch_time_s": time.perf_counter() - t0, "train_time_s": train_time}
        history.append(row)
        line = (f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc "
                f"{row['train_acc']:.4f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
                f"{row['epoch_time_s']:.1f}s (total {train_time / 60:.1f} min)")
        print(line, flush=True)
        print(line, file=log, flush=True)
        torch.save({"arch": recipe.arch, "arch_kwargs": recipe.arch_kwargs, "recipe": recipe.name,
                    "state_dict": net.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "config": asdict(cfg), "history": history,
                    "epoch": epoch + 1, "train_time_s": train_time, "machine": machine_info(),
                    "val_confusion": ev["confusion"].tolist()}, ckpt_path)

    state = torch.load(ckpt_path, weights_only=False)
    metrics = {"recipe": recipe.name, "config": state["config"], "history": state["history"],
               "final": state["history"][-1], "train_time_s": state["train_time_s"],
               "machine": state["machine"], "params": nets.count_params(net),
               "val_confusion": state["val_confusion"]}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plots.plot_curves(metrics["history"], out_dir / "curves.png", f"{recipe.title}: training curves")
    plots.plot_confusion(np.array(state["val_confusion"]), train.labels, out_dir / "confusion.png",
                         f"{recipe.name}: validation confusion")
    log.close()
    return metrics
