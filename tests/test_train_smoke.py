"""Every recipe trains, resumes and exports end to end on tiny synthetic data, in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import export.__main__ as export_cli
import train.__main__ as train_cli
from convscope.runtime import load_registry
from train import nets
from train.recipes import RECIPES


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_smoke_train_resume_export_serve(recipe, tmp_path):
    run = tmp_path / "run"
    train_cli.main([recipe, "--smoke", "--epochs", "1", "--out", str(run)])
    first = torch.load(run / "last.pt", weights_only=False)
    assert first["epoch"] == 1
    # --resume continues the same run: needs the same config, so the same --epochs ...
    with pytest.raises(SystemExit, match="different config"):
        train_cli.main([recipe, "--smoke", "--epochs", "2", "--out", str(run), "--resume"])
    metrics = train_cli.main([recipe, "--smoke", "--epochs", "1", "--out", str(run), "--resume"])
    assert len(metrics["history"]) == 1  # nothing left to do: resumed at the end, not retrained
    for name in ("metrics.json", "curves.png", "confusion.png", "log.txt"):
        assert (run / name).exists(), name
    assert json.loads((run / "metrics.json").read_text())["recipe"] == recipe
    if RECIPES[recipe].config.refit_decay:  # the post-training refit ran on the kept weights
        refit = torch.load(run / "best.pt", weights_only=False)["refit"]
        assert refit["decay"] == RECIPES[recipe].config.refit_decay and refit["val_loss_after"] > 0

    # a checkpoint rebuilds its net alone (nanoGPT-style: arch + kwargs travel with the weights)
    net = nets.from_checkpoint(first)
    assert isinstance(net, nets.NETS[RECIPES[recipe].arch])

    models = tmp_path / "models"
    kept = run / "best.pt" if (run / "best.pt").exists() else run / "last.pt"  # what `export <recipe>` takes
    card = export_cli.main([str(kept), "--smoke", "--models-dir", str(models),
                            "--checkpoints-dir", str(tmp_path / "ckpt")])
    if not RECIPES[recipe].served:  # a baseline for another card: measured, written to reference/, not served
        assert card["metrics"]["n"] > 0 and (models / "reference" / f"{recipe}.json").exists()
        assert not (tmp_path / "ckpt").exists()
        return
    assert card.parity["probs_max_abs_diff"] <= 1e-4 and card.parity["max_scaled_diff"] <= 1e-3
    assert bool(card.training["refit"]) == bool(RECIPES[recipe].config.refit_decay)
    if recipe == "xray_pneumonia":  # (one refit recipe: the path is the same for all, and costs an export)
        # re-exporting the kept weights-only checkpoint gives the same card, refit included
        ckpt = torch.load(kept, weights_only=False)
        torch.save(export_cli.weights_only(ckpt, nets.from_checkpoint(ckpt)), tmp_path / f"{recipe}.pt")
        again = export_cli.main([str(tmp_path / f"{recipe}.pt"), "--smoke", "--models-dir", str(tmp_path / "again"),
                                 "--checkpoints-dir", str(tmp_path / "ckpt")])
        assert again.training == card.training
    reg = load_registry(models)
    assert list(reg.models) == [recipe] and not reg.broken
    # export installs the in-distribution gate: in the graph, the card, and every answer
    assert card.ood["threshold"] is not None and "ood_score" in card.output_names("ood_score")
    from convscope.answers import answer

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert answer(reg.models[recipe], noise).decision.out_of_distribution is not None
    assert not (tmp_path / "ckpt").exists()  # smoke exports never touch the shipped checkpoints


def test_smoke_learns_something(tmp_path):
    """Training is not a no-op: loss falls on the synthetic task."""
    m = train_cli.main(["mnist_cnn", "--smoke", "--epochs", "4", "--out", str(tmp_path)])
    h = m["history"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]


def test_linear_probe_fits_the_head_on_frozen_features():
    # LP-FT's first step: the head becomes the logistic regression on the features the body already
    # computes; the body itself must not move
    from train.datasets import synthetic_xrays
    from train.loop import linear_probe, to_float_nchw

    torch.manual_seed(0)
    net = nets.build("xray_lite0", num_classes=2).eval()
    data = synthetic_xrays(24, seed=0)
    body_before = {k: v.clone() for k, v in net.state_dict().items() if "classifier." not in k}
    x = to_float_nchw(data.x)
    y = torch.from_numpy(data.y)
    with torch.no_grad():
        loss_before = torch.nn.functional.cross_entropy(net(x), y).item()
    linear_probe(net, data, decay=1e-3)
    with torch.no_grad():
        loss_after = torch.nn.functional.cross_entropy(net(x), y).item()
    assert loss_after < 0.5 * loss_before
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in body_before.items())


def test_refit_is_kept_only_when_it_lowers_the_calibrated_validation_nll(monkeypatch):
    from dataclasses import replace

    import train.loop as loop
    from train.datasets import synthetic_xrays

    train, val = synthetic_xrays(24, seed=0), synthetic_xrays(16, seed=1)
    cfg = replace(RECIPES["xray_pneumonia"].config, refit_decay=1e-3)
    real_probe = loop.linear_probe

    def harmful_probe(net, data, decay):  # the fitted head turned around, confidently wrong
        real_probe(net, data, decay)
        with torch.no_grad():
            net.classifier.weight.mul_(-100)
            net.classifier.bias.mul_(-100)

    for probe, should_keep in ((real_probe, True), (harmful_probe, False)):
        monkeypatch.setattr(loop, "linear_probe", probe)
        torch.manual_seed(0)
        net = nets.build("xray_lite0", num_classes=2)
        before = {k: t.clone() for k, t in net.state_dict().items()}
        r = loop.refit(net, train, val, cfg)
        assert r["kept"] is should_keep
        assert (r["val_nll_calibrated_after"] < r["val_nll_calibrated_before"]) is should_keep
        unchanged = all(torch.equal(t, net.state_dict()[k]) for k, t in before.items())
        assert unchanged is not should_keep  # a refit not kept leaves the trained weights as they were
        assert loop.evaluate(net, val)["nll_calibrated"] == pytest.approx(
            r["val_nll_calibrated_after" if should_keep else "val_nll_calibrated_before"], rel=1e-6)


def test_resume_accepts_post_training_changes_and_older_configs():
    from dataclasses import asdict, replace

    from train.loop import same_training

    cfg = RECIPES["xray_pneumonia"].config
    saved = asdict(replace(cfg, refit_decay=0.0))
    assert same_training(saved, cfg)  # refit_decay acts after the last epoch: a finished run can add it
    # a run from before probe_decay and resample existed trained as they do at their neutral defaults
    before = replace(cfg, probe_decay=0.0, resample=0.0)
    older = {k: v for k, v in asdict(before).items() if k not in ("probe_decay", "resample", "refit_decay")}
    assert same_training(older, before)
    assert not same_training(older, cfg)  # ... which is not how today's recipe trains
    assert not same_training(asdict(replace(cfg, lr=cfg.lr * 2)), cfg)
    assert not same_training(asdict(replace(cfg, probe_decay=cfg.probe_decay + 0.01)), cfg)  # acts before training


def test_a_folder_of_your_images_trains_exports_and_is_served(tmp_path):
    """python -m train folder DIR, then python -m export: a tiny generated ImageFolder, end to end."""
    from PIL import Image

    from convscope.answers import answer
    from tests.test_teach import COLOURS, picture

    root = tmp_path / "colours"
    for i, (name, colour) in enumerate(list(COLOURS.items())[:2]):
        (root / name).mkdir(parents=True)
        for j in range(5):
            Image.fromarray(picture(colour, 10 * i + j)).save(root / name / f"{j}.png")
    run = tmp_path / "run"
    train_cli.main(["folder", str(root), "--name", "folder_colours", "--smoke", "--epochs", "1", "--out", str(run)])
    kept = run / "best.pt" if (run / "best.pt").exists() else run / "last.pt"
    assert torch.load(kept, weights_only=False)["dataset"] == f"folder:{root.resolve()}"
    models = tmp_path / "models"
    card = export_cli.main([str(kept), "--smoke", "--models-dir", str(models),
                            "--checkpoints-dir", str(tmp_path / "c")])
    assert card.tab == "taught" and card.labels == ["green", "red"]  # the class folders, sorted
    assert card.metrics["split"] == "val" and card.metrics["n"] == 2 and card.input["preprocess"] == "whole_photo"
    reg = load_registry(models)
    assert list(reg.models) == ["folder_colours"] and not reg.broken
    a = answer(reg.models["folder_colours"], picture(COLOURS["red"], 99))
    assert a.label in card.labels and a.decision.out_of_distribution is None  # (no gate for your own classes)
