"""``graftnet rank TASK``: which catalogued model, reused how deep, should TASK start from?"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from graftnet.cli._common import print_json

__all__ = ["COMMANDS", "register", "run_rank"]

COMMANDS = ("rank",)

RANK_EPILOG = """\
examples:
  graftnet rank fashion:B                               # every catalogued model that takes 1x28x28 inputs
  graftnet rank mnist:5-9 --train-size 500 --sampling balanced --out runs/rank-mnist
  graftnet rank data.npz --model models/a --model models/b --by hscore

Each candidate is a model at one reuse depth (depth k reuses its first k hidden blocks, as
graftnet study counts them). Scores, higher is better: LogME (You et al., ICML 2021), LEEP
(Nguyen et al., ICML 2020; the whole source model, so equal at every depth of a model) and
H-score (Bao et al., 2019; Ledoit-Wolf shrinkage). The table goes to OUT/rank.md (also
rank.csv, rank.json) beside OUT/rank.png. Catalogued models whose folder moved or whose
weights changed are skipped and named."""


def register(subparsers: Any) -> None:
    """Add ``rank`` to ``graftnet``'s subparsers."""
    parser = subparsers.add_parser("rank", help="transferability scores (LogME, LEEP, H-score) of catalogued models "
                                                "at every reuse depth for a task",
                                   description="Score every catalogued model whose input fits TASK, at every reuse "
                                               "depth, on TASK's labelled training examples; print a ranked table "
                                               "and write it beside a plot.", epilog=RANK_EPILOG)
    parser.add_argument("task", metavar="TASK", help="fashion:B, mnist:5-9, FILE.npz, an image folder, ...")
    parser.add_argument("--catalog", metavar="URL|FILE", help="the catalog (default: $GRAFTNET_CATALOG, else the "
                                                              "user's data folder)")
    parser.add_argument("--model", action="append", metavar="FOLDER",
                        help="rank these saved models instead of the catalog's (repeat)")
    parser.add_argument("--by", default="logme", choices=("logme", "leep", "hscore"), help="order of the table")
    parser.add_argument("--train-size", type=int, metavar="N", help="score on N training examples drawn with --seed")
    parser.add_argument("--sampling", choices=("stratified", "balanced"), default="stratified")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", metavar="DEV", help="cpu (default) or cuda")
    parser.add_argument("--out", metavar="DIR", help="folder for rank.md/csv/json/png (default runs/rank-TASK)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.set_defaults(func=run_rank)


def run_rank(args: argparse.Namespace) -> int:
    from graftnet.rank import rank

    out = Path(args.out) if args.out else Path("runs") / ("rank-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-",
                                                                             Path(args.task).name).strip("-") or "task"))
    result = rank(args.task, args.model, catalog=args.catalog, by=args.by, train_size=args.train_size,
                  sampling=args.sampling, seed=args.seed, device=args.device, out=out)
    if args.json:
        print_json(result.to_dict() | {"files": result.files})
        return 0
    print(result.table())
    for message in result.warnings:
        print(f"warning: {message}")
    best = result.best()
    print(f"\nbest by {result.by}: {best['model']} reusing {best['depth']} of {best['depths']} hidden blocks "
          f"(up to {best['layer']})")
    print(f"table: {out / 'rank.md'}  plot: {out / 'rank.png'}")
    return 0
