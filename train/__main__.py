"""CLI: ``python -m train <recipe> [--epochs N ...] [--data-dir DIR] [--resume] [--smoke]``, or
``python -m train folder DIR [--name NAME] [flags]`` for your own images (train.folder).

Every field of train.recipes.Config is a flag; the recipe's values are the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from train.recipes import RECIPES, Config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("recipe", choices=sorted(RECIPES))
    p.add_argument("--data-dir", default=None, help="folder laid out like ../shared/data "
                   "(default: $CONVSCOPE_DATA_DIR or ../shared/data)")
    p.add_argument("--download", action="store_true", help="fetch the dataset if it is missing")
    p.add_argument("--out", default=None, help="run folder (default runs/<recipe>, runs/<recipe>-smoke)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", default=None)
        else:
            p.add_argument(flag, type={"int": int, "float": float, "str": str}[str(f.type)], default=None)
    return p.parse_args(argv)


def folder_argv(argv: list[str]) -> list[str]:
    """``folder DIR [--name NAME] ...`` -> ``<the folder's recipe> ...``, the recipe registered."""
    from train import folder

    if len(argv) < 2:
        raise SystemExit("usage: python -m train folder DIR [--name NAME] [flags]")
    name = None
    if "--name" in argv:
        i = argv.index("--name")
        name = argv[i + 1]
        del argv[i:i + 2]
    return [folder.register(argv[1], name).name, *argv[2:]]


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(folder_argv(argv) if argv[:1] == ["folder"] else argv)
    recipe = RECIPES[args.recipe]
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if getattr(args, f.name) is not None}
    cfg = dataclasses.replace(recipe.config, **overrides)
    if cfg.smoke:  # seconds, not minutes: tiny synthetic data, 2 epochs unless told otherwise
        cfg = dataclasses.replace(cfg, epochs=overrides.get("epochs", 2), batch_size=min(cfg.batch_size, 64))
    out = Path(args.out or f"runs/{recipe.name}{'-smoke' if cfg.smoke else ''}")
    from train.loop import fit  # torch imported only once the arguments are known good

    metrics = fit(recipe, cfg, out, data_dir=args.data_dir, resume=args.resume, download=args.download)
    f = metrics["final"]
    print(f"done: {recipe.name} val acc {f['val_acc']:.4f} in {metrics['train_time_s'] / 60:.1f} min -> {out}")
    return metrics


if __name__ == "__main__":
    main()
