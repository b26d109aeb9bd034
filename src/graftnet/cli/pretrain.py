"""``graftnet pretrain``: a base trained without the target task's labels, ready for a study.

    graftnet pretrain examples/recipes/pretrain_mnist_siamese.toml
    graftnet study runs/pretrain-siamese --data mnist --sample 300 --variants scratch,frozen,unfreeze-all
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from graftnet.errors import ConfigError

__all__ = ["COMMANDS", "register", "run_pretrain"]

COMMANDS = ("pretrain",)

EPILOG = """\
methods ([pretrain] method = ...):
  autoencoder   greedy layer-wise: each Dense layer an autoencoder (options: tied = true|false)
  denoising     greedy layer-wise, denoising (options: noise = "mask"|"gaussian", noise_level, tied)
  rbm           greedy layer-wise RBMs, CD-k (options: k); sigmoid layers, inputs in [0, 1]
  siamese       pairs -> "same class?", one tower applied to both (options: head_units, share,
                steps_per_epoch); needs labels of the pretraining data, not of the target task
  discriminate  real vs corrupted samples (options: corruption = "swap"|"mask"|"noise"|"patch",
                rate, loss = "bce"|"margin", margin)
  contrastive   SimCLR NT-Xent over two augmented views (options: temperature, projection)

recipe:
  [pretrain]  method, epochs, batch_size, seed, lr, optimizer, out, name; [pretrain.options]
  [tower]     hidden = [100, 100], activation = "elu", init = "he_normal"  (or layers = [...])
  [data]      source = "mnist", train_size, valid_size, classes, exclude, root

examples:
  graftnet pretrain examples/recipes/pretrain_mnist_siamese.toml
  graftnet pretrain examples/recipes/pretrain_mnist_autoencoder.toml --out runs/ae --epochs 2
  graftnet study runs/ae --data mnist --sample 300 --variants scratch,frozen,unfreeze-all --seeds 10

OUT/model is the saved base (its head 'outputs' is a placeholder unless the task trained it:
graft and study replace it); OUT/report holds report.md, loss.png, history.csv, pretrain.json
and, for greedy methods, reconstructions.png."""


def register(subparsers: Any) -> None:
    """Add ``pretrain`` to ``graftnet``'s subparsers."""
    parser = subparsers.add_parser(
        "pretrain", help="pretrain a base without the target labels (autoencoders, RBMs, siamese pairs, ...)",
        description="Pretrain the hidden layers of a tower without the target task's labels: greedy layer-wise "
                    "autoencoders or RBMs, an auxiliary task (same class? real or corrupted?) or a contrastive "
                    "objective; save the base and a report. The base plugs into `graftnet study` and `graft`.",
        epilog=EPILOG)
    parser.add_argument("recipe", metavar="RECIPE.toml", help="a pretraining recipe ([pretrain], [tower], [data])")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: [pretrain] out, or "
                                                     "models/pretrained-<method>)")
    parser.add_argument("--epochs", type=int, metavar="N", help="override [pretrain] epochs")
    parser.add_argument("--seed", type=int, metavar="N", help="override [pretrain] seed")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no line per epoch")
    parser.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    """Run ``graftnet pretrain``; prints the summary, the last epoch and where things went."""
    import tomllib
    from pathlib import Path

    from graftnet import pretrain

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    try:
        recipe = tomllib.loads(Path(args.recipe).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"recipe {args.recipe} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"recipe {args.recipe} is not valid TOML: {err}") from None
    for key in ("epochs", "seed"):
        if getattr(args, key) is not None and isinstance(recipe.get("pretrain"), dict):
            recipe["pretrain"][key] = getattr(args, key)
    net, folder = pretrain.run_recipe(recipe, out=args.out, verbose=False if args.quiet else None)
    info = net.info["pretrain"]
    print(net.summary())
    print()
    final = info.get("final", {})
    print(f"{info['method']}: " + ", ".join(f"{k} {v if not isinstance(v, dict) else _short(v)}"
                                            for k, v in final.items()))
    print(f"model: {folder / 'model'}   report: {folder / 'report'}")
    print(f"next: graftnet study {folder} --data TASK --sample N --variants scratch,frozen,unfreeze-all",
          file=sys.stderr)
    return 0


def _short(values: dict[str, float]) -> str:
    return "/".join(f"{v:.4g}" for v in values.values())
