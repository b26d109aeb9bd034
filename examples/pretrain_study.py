"""Pretrained bases against scratch at several label budgets: one `graftnet study` per budget,
each comparing every base, laid side by side.

Each study (``examples/recipes/study_mnist_split2_pretrained.toml``) holds every base at once:
scratch, and for each pretrained base (greedy autoencoders, denoising autoencoders, RBMs,
real-vs-corrupted, SimCLR, siamese pairs, and a supervised base) its layers frozen under a new
head and all of them fine-tuned. study.py computes every statistic: bootstrap intervals of each
variant's mean, paired differences to scratch on the same seeds and drawn labels, and paired
t-test p-values Holm-adjusted over the study's 14 comparisons. This script runs nothing but
the studies it is asked to (``--run``) and reads their results.json::

    make pretrain-bases          # graftnet pretrain ... for each method, graftnet train for the supervised base
    make pretrain-label-study    # = python examples/pretrain_study.py --run --budgets 100,300,1000

writes ``runs/pretrain-label-study/n<budget>/`` (each a study report) and, with ``--results``,
the comparison (COMPARISON.md, comparison.json, accuracy_vs_labels.png, differences.png) and a
copy of each study's report.md and pictures under ``examples/results/pretrain-label-study/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

RECIPE = "examples/recipes/study_mnist_split2_pretrained.toml"
# one colour per base (the same in every picture); scratch is black
COLOURS = {"autoencoder": "#1f77b4", "denoising": "#17becf", "rbm": "#9467bd", "discriminate": "#8c564b",
           "contrastive": "#ff7f0e", "siamese": "#2ca02c", "supervised": "#7f7f7f"}
LABELS = {"autoencoder": "greedy autoencoders", "denoising": "greedy denoising AEs", "rbm": "greedy RBMs (CD-1)",
          "discriminate": "real vs corrupted (max-margin)", "contrastive": "SimCLR NT-Xent",
          "siamese": "siamese 'same digit?' pairs", "supervised": "supervised on split #1 (55,000 labels)"}
# how each base was pretrained (the recipes of `make pretrain-bases`)
SETTINGS = {"autoencoder": "tied, 3 epochs per layer, Adam 1e-3, batch 128",
            "denoising": "tied, 30% of inputs masked, 3 epochs per layer",
            "rbm": "sigmoid units, CD-1, 3 epochs per layer, SGD 0.1 momentum 0.5, batch 100",
            "discriminate": "30% of pixels swapped with another image's, max-margin cost, 5 epochs",
            "contrastive": "two views (shift 3, rotate 15, crop 4), projection 100-32, temperature 0.5, 10 epochs",
            "siamese": "one shared tower, 10 epochs x 110 steps x 500 fresh pairs, Nesterov SGD 0.01/0.95",
            "supervised": "softmax head on the 55,000 labelled images, 10 epochs, Nesterov SGD 0.01/0.95 (the ceiling)"}


def run_studies(budgets: list[int], out: Path, seeds: int | None, jobs: int) -> None:
    from graftnet.cli import main

    for budget in budgets:
        argv = ["study", "--recipe", RECIPE, "--sample", str(budget), "--out", str(out / f"n{budget}"),
                "--threads", "1", "--quiet", "--jobs", str(jobs)]
        if seeds:
            argv += ["--seeds", str(seeds)]
        t0 = time.perf_counter()
        load = os.getloadavg()[0]
        code = main(argv)
        print(f"n={budget}: {time.perf_counter() - t0:.0f} s wall, load average {load:.1f} -> "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        if code:
            raise SystemExit(code)


def collect(budgets: list[int], out: Path) -> dict:
    from graftnet import study

    table: dict = {"budgets": budgets, "variants": {}, "studies": {}}
    for budget in budgets:
        result = study.load_results(out / f"n{budget}")
        runs = result.runs
        table["studies"][budget] = {
            "seeds": result.seeds, "primary": result.primary, "headline": result.headline(),
            "wall_seconds": result.wall_seconds, "runs": len(runs),
            "run_seconds": round(sum(r["seconds"] for r in runs), 1),
            "load_average": [min(r["load_average"] for r in runs if r.get("load_average") is not None),
                             max(r["load_average"] for r in runs if r.get("load_average") is not None)]}
        for v in result.variants:
            d = v.to_dict()
            table["variants"].setdefault(v.name, {})[budget] = {
                "description": v.description, "test": d["test"], "difference": d["difference"],
                "p_adjusted": v.p_adjusted, "verdict": v.verdict}
    return table


def _base_of(variant: str) -> str:
    return variant.rsplit("-", 2)[0] if variant.endswith("fine-tuned") else variant.rsplit("-", 1)[0]


def _cell(entry: dict) -> str:
    t = entry["test"]
    text = f"{t['mean']:.2f} [{t['low']:.2f}, {t['high']:.2f}]"
    diff = entry.get("difference")
    if diff and diff.get("mean") is not None:
        p = entry["p_adjusted"]
        ptext = "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")
        text += f" ({diff['mean']:+.2f}, p {ptext})"
    return text


def markdown(table: dict, budgets: list[int], pictures: list[str]) -> str:
    studies = table["studies"]
    first = studies[budgets[0]]
    lines = [f"# Pretrained 5 x 100 bases on MNIST split #2 at {', '.join(f'{b:,}' for b in budgets)} labels, "
             f"{len(first['seeds'])} seeds", "",
             "Test accuracy % on the 10,000 MNIST test images: mean [95% percentile-bootstrap interval] "
             "(paired difference to scratch on the same seeds and drawn labels, points; paired t-test p, "
             "Holm-adjusted over the 14 comparisons of that budget's study). One `graftnet study` per "
             f"budget (`{RECIPE}`, `--sample N`), every base in it; labels drawn balanced (N/10 per digit) "
             "from split #2's 4,000 training images, per seed. 40 epochs per run (fine-tuned: 10 head-only, "
             "then 30 with every layer at lr x 0.1), Nesterov SGD lr 0.01 momentum 0.95, batch 32.", "",
             "| variant | " + " | ".join(f"{b:,} labels" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for name, cells in table["variants"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(cells[b]) if b in cells else "-" for b in budgets) + " |")
    lines += ["", "Verdicts (the primary comparison, declared before the runs: "
              f"{first['primary']} vs scratch):", ""]
    for b in budgets:
        lines.append(f"- {b:,} labels: {studies[b]['headline']}")
    lines += ["", "What the bases are (all on split #1, MNIST's 55,000 training images; none saw a split #2 "
              "label):", ""]
    for key, label in LABELS.items():
        lines.append(f"- **{key}**: {label}; {SETTINGS[key]} (`bases/{key}/`: its pretraining report"
                     + (", reconstructions" if key in ("autoencoder", "denoising", "rbm") else "") + ")")
    lines += ["", "Time: " + "; ".join(
        f"{b:,} labels: {studies[b]['runs']} runs, {studies[b]['run_seconds'] / 60:.1f} min of run time, "
        f"load average {studies[b]['load_average'][0]:.1f}-{studies[b]['load_average'][1]:.1f}" for b in budgets)
        + " (2 shared CPU cores, `nice`, 1 torch thread).", ""]
    for picture in pictures:
        lines += [f"![{picture}]({picture})", ""]
    lines += ["Colours: one per base, the same in both pictures (scratch black). In accuracy_vs_labels.png solid "
              "lines are a base's layers frozen under a new head, dashed lines all of them fine-tuned; bars are the "
              "95% intervals. In differences.png each bar is a variant's mean paired difference to scratch with its "
              "95% t interval, one panel per label budget; hatched bars are the fine-tuned variants.", "",
              "Each budget's full study report (learning curves, per-variant tables, seeds needed) is in "
              "`n<budget>/report.md` beside this file.", ""]
    return "\n".join(lines)


def plot(table: dict, budgets: list[int], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = table["variants"]
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(11, 5.5))
    for name, cells in variants.items():
        xs = [b for b in budgets if b in cells]
        mean = [cells[b]["test"]["mean"] for b in xs]
        err = [[m - cells[b]["test"]["low"] for b, m in zip(xs, mean)],
               [cells[b]["test"]["high"] - m for b, m in zip(xs, mean)]]
        if name == "scratch":
            style = dict(color="black", linestyle="-", linewidth=2.5, label="scratch (random init)")
        else:
            base = _base_of(name)
            fine = name.endswith("fine-tuned")
            style = dict(color=COLOURS.get(base, "red"), linestyle="--" if fine else "-",
                         label=f"{LABELS.get(base, base)}, {'fine-tuned' if fine else 'frozen'}")
        ax.errorbar(xs, mean, yerr=err, capsize=3, marker="o", markersize=4, **style)
    ax.set_xscale("log")
    ax.set_xticks(budgets)
    ax.set_xticklabels([f"{b:,}" for b in budgets])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labelled training images (balanced over the 10 digits)")
    ax.set_ylabel("test accuracy % (mean over seeds, 95% interval)")
    ax.set_title("MNIST split #2: pretrained 5x100 bases vs scratch\n"
                 "(colour = base; solid = frozen, dashed = fine-tuned)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="colour = base, line = reuse")
    fig.tight_layout()
    fig.savefig(folder / "accuracy_vs_labels.png", dpi=110)
    plt.close(fig)

    names = [n for n in variants if n != "scratch"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 5.5), sharey=True)
    for ax, b in zip(axes if len(budgets) > 1 else [axes], budgets):
        for i, name in enumerate(names):
            diff = variants[name].get(b, {}).get("difference")
            if not diff or diff.get("mean") is None:
                continue
            base = _base_of(name)
            low, high = diff.get("low"), diff.get("high")
            xerr = None if low is None else [[diff["mean"] - low], [high - diff["mean"]]]
            ax.barh(i, diff["mean"], xerr=xerr, color=COLOURS.get(base, "red"), capsize=2,
                    hatch="//" if name.endswith("fine-tuned") else None, edgecolor="white")
        ax.axvline(0, color="black", linewidth=1)
        ax.set_title(f"{b:,} labels")
        ax.set_xlabel("minus scratch, points (95% CI)")
        ax.grid(axis="x", alpha=0.3)
    first = axes[0] if len(budgets) > 1 else axes
    first.set_yticks(range(len(names)))
    first.set_yticklabels(names, fontsize=8)
    first.invert_yaxis()
    fig.suptitle("Paired difference to scratch (colour = base, hatched = fine-tuned)")
    fig.tight_layout()
    fig.savefig(folder / "differences.png", dpi=110)
    plt.close(fig)
    return ["accuracy_vs_labels.png", "differences.png"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="100,300,1000")
    parser.add_argument("--run", action="store_true", help="run the studies first (resumable)")
    parser.add_argument("--seeds", type=int, help="override the recipe's seeds (10)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="runs/pretrain-label-study", help="where the studies write")
    parser.add_argument("--results", default="examples/results/pretrain-label-study",
                        help="where the comparison and the studies' reports are copied ('' for nowhere)")
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",") if b]
    out = Path(args.out)
    if args.run:
        run_studies(budgets, out, args.seeds, args.jobs)
    table = collect(budgets, out)
    folder = Path(args.results) if args.results else out
    folder.mkdir(parents=True, exist_ok=True)
    pictures = plot(table, budgets, folder)
    from graftnet.io.checkpoint import atomic_write_text

    atomic_write_text(folder / "comparison.json", json.dumps(table, indent=1, default=str))
    atomic_write_text(folder / "COMPARISON.md", markdown(table, budgets, pictures))
    if args.results:
        for b in budgets:
            target = folder / f"n{b}"
            target.mkdir(exist_ok=True)
            for f in (out / f"n{b}").iterdir():
                if f.suffix in (".md", ".png"):
                    shutil.copy2(f, target / f.name)
    print((folder / "COMPARISON.md").read_text())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    raise SystemExit(main())
