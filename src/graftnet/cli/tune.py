"""``graftnet tune``: hyperparameter search with Optuna over a recipe's search space.

    graftnet tune examples/recipes/tune_fashion_mlp.toml --trials 30
    graftnet tune RECIPE.toml --jobs 2                       # two worker processes
    graftnet tune RECIPE.toml --backend ray --address auto   # a Ray cluster
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "register", "run_tune"]

COMMANDS = ("tune",)

EPILOG = """\
search space: any recipe value may be a distribution instead of a value
  lr = { log_uniform = [1e-4, 1e-1] }        uniform = [lo, hi] (step = ...)   int = [lo, hi]
  hidden = { choice = [[300, 100], [100, 100, 100]] }                          log_int = [lo, hi]
and [tune] sets trials, metric (val_accuracy), direction, sampler (tpe|random), pruner (median|none),
seed, storage (an Optuna storage URL; default: OUT/tune.db), study, jobs, backend (local|ray), address.
[transfer] base = "models/a" with reuse, unfreeze, head_epochs, finetune_lr tunes a graft instead.

examples:
  graftnet tune examples/recipes/tune_fashion_mlp.toml --trials 30
  graftnet tune RECIPE.toml --trials 50          # again: continues the same search up to 50 trials
  graftnet tune RECIPE.toml --storage postgresql://me@db/tunes --jobs 2   # share one search

OUT (default tunes/<recipe name>) gets best_recipe.toml (ready for graftnet train), trials.csv,
report.md, history.png and importances.png. A killed tune resumes where it stopped."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tune", help="hyperparameter search (Optuna) over the search space written in a recipe",
        description="Run trials of a recipe whose settings may be distributions; prune bad trials from "
                    "per-epoch validation metrics; write the best recipe and a report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", metavar="RECIPE.toml", help="a training recipe with distributions and [tune]")
    parser.add_argument("--trials", type=int, metavar="N", help="finished trials wanted in the storage")
    parser.add_argument("--jobs", type=int, metavar="N", help="worker processes (each gets its share of the cores)")
    parser.add_argument("--backend", choices=("local", "ray"), help="where the workers run (default local)")
    parser.add_argument("--address", metavar="ADDR", help="a Ray cluster's address (backend ray)")
    parser.add_argument("--storage", metavar="URL", help="an Optuna storage URL (default: sqlite in OUT)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default tunes/<recipe name>)")
    parser.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    from graftnet.tune import tune

    name = Path(args.recipe).stem
    tune(args.recipe, trials=args.trials, jobs=args.jobs, backend=args.backend, address=args.address,
         storage=args.storage, folder=args.out, name=name)
    return 0
