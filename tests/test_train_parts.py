"""The pieces of the airbench-style recipe and the CIFAR-10 reader, checked one by one."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train import nets
from train.datasets import cifar_available, load_cifar10, synthetic_photos
from train.loop import Lookahead, airbench_groups, flip_crop, random_resample, triangle
from train.recipes import RECIPES

# sha256 of the decoded uint8 arrays (NHWC) as stated in shared/data's README
CIFAR_SHA256 = {"train": "61bea91e73ac2b02dfb856e685981dce64abe13d4e780aa98a1ac1e7c056d03b",
                "test": "52a9dc125982c0440d5eed87474b2f521e96c45a98df08e4329aa42c692b9d9d"}


@pytest.mark.data
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_reader_gives_the_exact_pixels(split):
    if not cifar_available():
        pytest.skip("CIFAR-10 not found")
    d = load_cifar10(split)
    n = 50_000 if split == "train" else 10_000
    assert d.x.shape == (n, 32, 32, 3) and d.x.dtype == np.uint8
    assert hashlib.sha256(np.ascontiguousarray(d.x).tobytes()).hexdigest() == CIFAR_SHA256[split]
    assert np.bincount(d.y).tolist() == [n // 10] * 10
    assert d.labels[3] == "cat"


def test_triangle_schedule():
    f = triangle(100, 0.23)
    assert f(0) == pytest.approx(0.2) and f(23) == pytest.approx(1.0) and f(100) == pytest.approx(0.07)
    assert all(f(i) <= f(i + 1) for i in range(22)) and all(f(i) >= f(i + 1) for i in range(23, 99))


def test_flip_crop():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    flips = torch.tensor([True, False])
    out = flip_crop(x, flips, 0, torch.Generator().manual_seed(0))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    out = flip_crop(x, None, 2, torch.Generator().manual_seed(0))
    padded = F.pad(x, (2,) * 4, mode="reflect")
    for i in range(2):  # every crop is some 4x4 window of the reflect-padded image
        assert any(torch.equal(out[i], padded[i, :, a:a + 4, b:b + 4]) for a in range(5) for b in range(5))


def test_random_resample_blurs_only_by_the_amount_asked():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 1, 64, 64), generator=gen).float()  # white noise: all high frequency
    assert torch.equal(random_resample(x, 0.0, gen), x)
    y = random_resample(x, 0.5, gen)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255

    def hf(t: torch.Tensor) -> torch.Tensor:  # mean |Laplacian| per image
        return (4 * t[..., 1:-1, 1:-1] - t[..., :-2, 1:-1] - t[..., 2:, 1:-1]
                - t[..., 1:-1, :-2] - t[..., 1:-1, 2:]).abs().mean(dim=(1, 2, 3))

    assert (hf(y) < hf(x)).all()  # every image lost detail, more of it the larger the amount
    assert hf(random_resample(x, 0.05, gen)).mean() > hf(y).mean()


def test_whitening_layer_whitens_the_training_patches():
    x = torch.from_numpy(synthetic_photos(256).x).permute(0, 3, 1, 2).float()
    net = nets.CifarResNet(widths=(8, 8, 8), whiten_eps=1e-9)
    net.init_from_data(x)
    out = F.conv2d(net.normalize(x), net.whiten.weight[:12])  # the 12 eigenvector filters (the rest: their negatives)
    flat = out.permute(1, 0, 2, 3).reshape(12, -1).double()
    second_moment = flat @ flat.T / flat.shape[1]  # airbench whitens E[p p^T], not the centred covariance
    np.testing.assert_allclose(second_moment.numpy(), np.eye(12), atol=1e-3)
    assert torch.equal(net.whiten.weight[12:], -net.whiten.weight[:12])


def test_airbench_optimizer_matches_the_summed_loss_formulation():
    """lr * batch for a mean loss, decay per step as airbench, BN shifts faster and no BN scale trained."""
    cfg = RECIPES["cifar_resnet"].config
    net = nets.CifarResNet(widths=(8, 8, 8))
    norm, other = airbench_groups(net, cfg)
    kilostep = 1024 * (1 + 1 / (1 - cfg.momentum))
    assert other["lr"] == pytest.approx(cfg.lr / kilostep * cfg.batch_size)
    assert norm["lr"] == pytest.approx(other["lr"] * cfg.bias_lr_scale)
    for g in (norm, other):
        assert g["lr"] * g["weight_decay"] == pytest.approx(cfg.weight_decay * cfg.batch_size / kilostep)
    trained = {id(p) for g in (norm, other) for p in g["params"]}
    assert id(net.block1.norm1.weight) not in trained and id(net.whiten.weight) not in trained
    assert id(net.block1.norm1.bias) in {id(p) for p in norm["params"]}


def test_lookahead_ends_on_the_average():
    net = torch.nn.Linear(2, 2)
    la = Lookahead(net, total_steps=10, every=5)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    la.step(net, 5)  # decay 0.95**5 * 0.125: mostly the new weights
    assert torch.all(net.weight > start) and torch.all(net.weight < start + 1)
    assert torch.equal(net.weight, la.avg["weight"])
    with torch.no_grad():
        net.weight.add_(1.0)
    la.step(net, 10)  # the last step: the net becomes the average, which stays put
    assert torch.equal(net.weight, la.avg["weight"])


def test_tta_is_inside_the_eval_forward():
    net = nets.CifarResNet(widths=(8, 8, 8)).eval()
    x = torch.rand(3, 3, 32, 32) * 255
    net.tta_level = 0
    plain, mirrored = net(x), net(x.flip(-1))
    net.tta_level = 1
    np.testing.assert_allclose(net(x).detach(), ((plain + mirrored) / 2).detach(), atol=1e-5)
    net.train()  # training never averages views
    assert net(x).shape == plain.shape


def _history(train_acc, val_acc, val_loss):
    return [{"epoch": i + 1, "train_acc": t, "val_acc": v, "val_loss": lo, "train_loss": 1.0}
            for i, (t, v, lo) in enumerate(zip(train_acc, val_acc, val_loss, strict=True))]


def test_fit_analysis_reads_the_curves():
    from export.fit_analysis import fit_analysis

    over = fit_analysis(_history([0.6, 0.8, 0.95], [0.6, 0.7, 0.69], [1.0, 0.8, 1.1]))
    assert "overfitting" in over and "epoch 2" in over
    still_rising = fit_analysis(_history([0.5, 0.6, 0.7], [0.55, 0.62, 0.71], [1.2, 1.0, 0.9]))
    assert "still rising" in still_rising and "memorising" not in still_rising
    regularised = fit_analysis(_history([0.80, 0.85, 0.88], [0.86, 0.90, 0.905], [0.5, 0.4, 0.38]))
    assert "not overfitting" in regularised
