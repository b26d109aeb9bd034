"""One ``graftnet study`` per pretrained base at several label budgets, tables side by side.

Each base (a folder written by ``graftnet pretrain``, or any saved model) goes through the
same study -- scratch, the base's hidden layers frozen under a new head, and all of them
fine-tuned after the head -- at each label budget, over the same seeds. The target task is
MNIST's split #2 of exercise 10: the 5,000 validation images (4,000 to draw the labelled
training examples from, 1,000 to validate), tested on the 10,000 test images; the bases were
pretrained on split #1 (the 55,000 training images), so no target label was seen.

    python examples/pretrain_study.py --bases runs/pretrain-siamese,runs/pretrain-autoencoder \\
        --budgets 100,300,1000 --seeds 10
    # writes runs/pretrain-study/<base>-n<budget>/ (each a study report) and
    # runs/pretrain-study/COMPARISON.md + comparison.json

study.py computes every statistic (means, intervals, paired differences to scratch); this
script only reads each result's summaries and lays them out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import graftnet as gn
from graftnet import study
from graftnet.cli._common import model_folder
from graftnet.data import Dataset
from graftnet.io.checkpoint import atomic_write_text

VARIANTS = ("scratch", "frozen", "unfreeze-all")


def split2(mnist: Dataset) -> Dataset:
    valid = mnist.valid
    return Dataset(name="mnist-split2", train=valid.head(4000), valid=valid.take(torch.arange(4000, len(valid))),
                   test=mnist.test, classes=mnist.classes, task="multiclass",
                   source={"name": "mnist", "split": "train/valid = MNIST's 5,000 validation images (4,000 / 1,000)"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", required=True, help="comma-separated base folders (graftnet pretrain outputs)")
    parser.add_argument("--budgets", default="100,300,1000")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/pretrain-study")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = split2(gn.datasets.mnist())
    budgets = [int(b) for b in args.budgets.split(",")]
    out = Path(args.out)
    table: dict[str, dict[int, dict[str, dict]]] = {}
    for folder in [b for b in args.bases.split(",") if b]:
        base = gn.load_model(model_folder(folder))
        method = base.info.get("pretrain", {}).get("method", "supervised")
        label = f"{Path(folder).name} ({method})"
        table[label] = {}
        for budget in budgets:
            result = study.run(base, task, seeds=args.seeds, variants=list(VARIANTS), epochs=args.epochs,
                               head_epochs=args.head_epochs, train_size=budget, sampling="balanced",
                               out=out / f"{Path(folder).name}-n{budget}", title=f"{label}, {budget} labels",
                               progress=lambda line: print(line, flush=True))
            table[label][budget] = {v: result.summary(v).to_dict() for v in VARIANTS}
    atomic_write_text(out / "comparison.json", json.dumps(table, indent=1, default=str))
    atomic_write_text(out / "COMPARISON.md", comparison_markdown(table, budgets, args))
    print((out / "COMPARISON.md").read_text())
    return 0


def _cell(summary: dict) -> str:
    test = summary["test"]
    text = f"{test['mean']:.2f}"
    if test.get("low") is not None:
        text += f" [{test['low']:.2f}, {test['high']:.2f}]"
    diff = summary.get("difference")
    if diff and diff.get("mean") is not None:
        text += f" ({diff['mean']:+.2f})"
    return text


def comparison_markdown(table: dict, budgets: list[int], args: argparse.Namespace) -> str:
    labels = list(table)
    lines = [f"# Pretrained bases on MNIST split #2, {args.seeds} seeds per cell", "",
             "Test accuracy %, mean [95% CI] (paired difference to scratch on the same seeds, points); "
             f"{args.epochs} epochs per run, {args.head_epochs} of them head-only for unfreeze-all.", "",
             "| labels | scratch | " + " | ".join(f"{lab}: frozen | {lab}: fine-tuned" for lab in labels) + " |",
             "|---|---|" + "---|---|" * len(labels)]
    for budget in budgets:
        first = table[labels[0]][budget]
        cells = [_cell(first["scratch"])]
        for lab in labels:
            cells += [_cell(table[lab][budget]["frozen"]), _cell(table[lab][budget]["unfreeze-all"])]
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
