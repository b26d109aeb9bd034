"""``graftnet study`` and ``graftnet demo``: transfer vs scratch over seeds, with a report.

    graftnet study models/fashion-a --data mnist:5-9 --seeds 10 --sample 500
    graftnet study --recipe examples/recipes/study_mnist_0-4_to_5-9.toml
    graftnet demo
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from graftnet.cli._common import load_model_arg
from graftnet.cli.catalog import add_register_args, register_saved
from graftnet.errors import ConfigError

__all__ = ["COMMANDS", "register", "run_study", "run_demo"]

COMMANDS = ("study", "demo")

STUDY_EPILOG = """\
variants (default: scratch, frozen, unfreeze-top1, unfreeze-top2, unfreeze-all, drop-top1, drop-top2):
  scratch            the same architecture from random initialisation, same epochs
  frozen             every hidden layer of BASE reused and frozen, a new head
  unfreeze-topK/all  head first (--head-epochs), then the top K / all reused layers too, at a lower lr
  drop-topK          the top K hidden layers of BASE are not reused (the rest frozen)
  drop-top1-unfreeze-top2 and other combinations mean what they say

examples:
  graftnet study models/fashion-a --data fashion:B --seeds 10
  graftnet study models/mnist-0-4 --data mnist:5-9 --sample 500 --sampling balanced --budgets 100,500,2000
  graftnet study --recipe examples/recipes/study_fashion_ab.toml            # trains the base it describes
  graftnet study --recipe examples/recipes/study_fashion_ab.toml --seeds 3 --out runs/quick
  graftnet study --recipe examples/recipes/study_fashion_ab.toml --budget compute --out runs/ab-compute
  graftnet study --report-only runs/quick                                   # rewrite a report, train nothing
  graftnet study --compare runs/ab runs/ab-cnn --labels MLP,CNN --out runs/ab-mlp-vs-cnn   # two bases' gains

statistics: accuracies get a percentile-bootstrap 95% interval (inside [0, 100]); each variant's
paired difference to scratch a t interval, a paired t-test p-value Holm-adjusted over all the
comparisons, and Hedges' g_z; the verdict is the primary comparison's (--primary, declared before
the run). Budgets: --budget epochs (equal epochs), compute (equal training FLOPs: cached and
frozen layers cost less, so those variants get more epochs, up to --max-epochs), convergence
(early stopping on val_loss, --early-stopping patience, default 10, up to --max-epochs).

An interrupted study resumes from OUT/results.json (finished runs are not redone);
--no-resume starts over. The report is OUT/report.html (self-contained) and OUT/report.md."""

DEMO_EPILOG = """\
examples:
  graftnet demo                                        5 seeds, every reuse depth; runs/demo/report.html
  graftnet demo --seeds 2 --epochs 5 --out runs/quick  a quick look (wider intervals)
  graftnet demo --base-cache models/demo-a             keep model A there, not in ~/.cache/graftnet/demo
  graftnet demo --no-resume                            redo every run instead of resuming from results.json
  graftnet demo --budget all                           equal epochs, equal FLOPs and to convergence, compared

The book (Hands-On ML, 2nd ed., ch. 11) reports 97.05% for model B trained alone and
99.25% (later 99.40%) for model B reusing model A, from single runs. The demo runs that
experiment as the book's notebook does now (Dense 300-100-50-50-50 SELU, SGD lr 1e-3)
over 5 seeds with every reuse depth, and tells you what the evidence says.

Model A is trained once (20 epochs on 43,986 images) and kept in ~/.cache/graftnet/demo
(or --base-cache); later demos reuse it. A demo that was interrupted resumes from
OUT/results.json. The 10-seed version: examples/recipes/study_fashion_ab.toml."""


def register(subparsers: Any) -> None:
    """Add ``study`` and ``demo`` to ``graftnet``'s subparsers."""
    _register_study(subparsers)
    _register_demo(subparsers)


# ---------------------------------------------------------------- study
def _register_study(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "study", help="did reusing layers help? transfer variants vs scratch over seeds, with a report",
        description="Train the target task with every reuse depth of BASE (frozen, unfrozen top k, dropped top "
                    "k) and from scratch, over several seeds; report means, 95% confidence intervals, paired "
                    "differences to scratch with a verdict, learning curves and a label-budget curve.",
        epilog=STUDY_EPILOG)
    parser.add_argument("base", nargs="?", metavar="BASE",
                        help="the trained model whose hidden layers are reused (a model folder); optional when "
                             "the recipe has a [base] table")
    parser.add_argument("--data", metavar="TASK", help="the target task: fashion:B, mnist:5-9, FILE.npz, FOLDER...")
    parser.add_argument("--recipe", metavar="FILE.toml", help="a study recipe ([study], [task], [base], "
                                                              "[variants.NAME], [reference] tables)")
    parser.add_argument("--seeds", type=int, metavar="N", help="seeds per variant (default 10)")
    parser.add_argument("--variants", metavar="A,B,...", help="variants in report order (see below)")
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs of every run (default 20)")
    parser.add_argument("--head-epochs", type=int, metavar="N",
                        help="epochs with the reused layers frozen before unfreezing (default 4)")
    parser.add_argument("--batch-size", type=int, metavar="N")
    parser.add_argument("--optimizer", metavar="NAME", help="sgd, momentum, nesterov, adam, ... (default adam)")
    parser.add_argument("--lr", type=float, metavar="RATE", help="learning rate of the head / of scratch")
    parser.add_argument("--head-lr", type=float, metavar="RATE",
                        help="learning rate of a new head while the reused layers are frozen (default: --lr)")
    parser.add_argument("--finetune-lr-mult", type=float, metavar="X",
                        help="unfrozen layers train at lr x X (default 0.1)")
    parser.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="patience on val_loss")
    parser.add_argument("--budget", choices=("epochs", "compute", "convergence"),
                        help="how long each variant trains: equal epochs (default), equal training FLOPs (compute), "
                             "or early stopping on val_loss (convergence); the last two at most --max-epochs")
    parser.add_argument("--max-epochs", type=int, metavar="N",
                        help="cap of compute and convergence runs (default 10 x --epochs)")
    parser.add_argument("--primary", metavar="VARIANT",
                        help="the comparison with scratch the verdict is about, declared before the run "
                             "(default unfreeze-all when run, else the first transfer variant listed)")
    parser.add_argument("--sample", type=int, metavar="N", help="training examples drawn per seed")
    parser.add_argument("--sampling", choices=("stratified", "balanced"),
                        help="how --sample draws (default stratified)")
    parser.add_argument("--budgets", metavar="N,N,...", help="training-set sizes for the label-budget curve")
    parser.add_argument("--out", metavar="DIR", help="report folder (default runs/study-<base>-<task>)")
    parser.add_argument("--base-cache", metavar="DIR", help="where a recipe's trained base is kept")
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="do not cache frozen-layer outputs")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="redo every run even if OUT/results.json holds some")
    parser.add_argument("--report-only", metavar="DIR",
                        help="train nothing: rewrite DIR's report from DIR/results.json with this version's "
                             "statistics (also for results of an older graftnet)")
    parser.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"),
                        help="train nothing: compare two finished studies of the same task and seeds (e.g. an MLP "
                             "base and a CNN base): each variant's gain over scratch in both, and whether it is "
                             "larger with B; writes OUT/comparison.md, comparison.html and gains.png")
    parser.add_argument("--labels", metavar="A,B", help="names of the two studies in --compare (default: their "
                                                        "bases' names)")
    parser.add_argument("--device", metavar="DEV", help="cpu, cuda (default: cuda if available)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="worker processes (each gets its share of the cores; results as with one)")
    parser.add_argument("--no-ensemble", dest="ensemble", action="store_false",
                        help="train every run alone (default with --jobs 1: the seeds of each variant train "
                             "together as one batched ensemble, where the variant allows; same results to float "
                             "rounding)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="where the workers run: local processes or Ray actors")
    parser.add_argument("--address", metavar="ADDR", help="a Ray cluster's address (--backend ray)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no line per run")
    add_register_args(parser)
    parser.set_defaults(func=run_study)


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes whole numbers separated by commas, e.g. 50,200,1000; got {text!r}") from None


def _overrides(args: argparse.Namespace, recipe: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seeds": args.seeds, "epochs": args.epochs, "head_epochs": args.head_epochs, "batch_size": args.batch_size,
        "head_lr": args.head_lr, "finetune_lr_mult": args.finetune_lr_mult, "early_stopping": args.early_stopping,
        "train_size": args.sample, "sampling": args.sampling, "budgets": _int_list(args.budgets, "--budgets"),
        "budget": args.budget, "max_epochs": args.max_epochs, "primary": args.primary,
        "variants": [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None,
    }
    if args.optimizer or args.lr is not None:
        current = recipe.get("study", {}).get("optimizer", "adam")
        current = {"type": current} if isinstance(current, str) else dict(current)
        if args.optimizer:
            current = {"type": args.optimizer}
        if args.lr is not None:
            current["lr"] = args.lr
        out["optimizer"] = current
    return {k: v for k, v in out.items() if v is not None}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "study"


def _progress(quiet: bool) -> Any:
    if quiet:
        return lambda message: None
    return lambda message: print(message, file=sys.stderr, flush=True)


def run_study(args: argparse.Namespace) -> int:
    """Run ``graftnet study``; prints the table, the verdicts and the report's path."""
    from graftnet import study

    _set_threads(args.threads)
    if args.compare:
        return _run_compare(args)
    if args.labels:
        raise ConfigError("--labels names the two studies of --compare; pass --compare DIR_A DIR_B too")
    if args.report_only:
        from graftnet.report import write_report

        result = study.load_results(args.report_only, primary=args.primary)
        write_report(result, result.out)
        _print_result(result)
        return 0
    recipe = study.load_recipe(args.recipe) if args.recipe else {}
    if args.base is None and "base" not in recipe:
        raise ConfigError("no BASE given: pass a saved model folder, or a --recipe with a [base] table")
    if args.data is None and "data" not in recipe.get("task", {}):
        raise ConfigError("no target task: pass --data TASK (e.g. fashion:B, mnist:5-9), or a --recipe with [task]")
    base = load_model_arg(args.base) if args.base else None
    out = Path(args.out) if args.out else Path("runs") / _slug(
        f"study-{Path(args.base).name if args.base else recipe['base'].get('name', 'base')}-"
        f"{args.data or recipe['task']['data']}")
    result = study.run_recipe(recipe, base=base, task=args.data, overrides=_overrides(args, recipe),
                              base_cache=args.base_cache, out=out, resume=args.resume, cache=args.cache,
                              progress=_progress(args.quiet), device=args.device, jobs=args.jobs,
                              backend=args.backend, address=args.address, ensemble=args.ensemble)
    _print_result(result)
    if result.base.get("path"):  # the base a study uses (trained from its recipe, or given): with what it measured
        register_saved(args, result.base["path"], metrics={f"study {result.task.get('name')}": {
            v.name: round(v.test.mean, 4) for v in result.variants if v.test.mean is not None}})
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    """``graftnet study --compare A B``: the two studies' gains over scratch, side by side."""
    from graftnet import study
    from graftnet.report import write_comparison

    if args.recipe or args.base or args.report_only:
        raise ConfigError("--compare reads two finished studies and trains nothing; it takes no BASE, --recipe or "
                          "--report-only")
    results = [study.load_results(folder) for folder in args.compare]
    labels = None
    if args.labels:
        labels = [part.strip() for part in args.labels.split(",")]
        if len(labels) != 2 or not all(labels):
            raise ConfigError(f"--labels takes two names separated by a comma, e.g. MLP,CNN; got {args.labels!r}")
    comparison = study.compare(results, labels=labels, primary=args.primary)
    out = Path(args.out) if args.out else Path("runs") / _slug(f"compare-{'-'.join(comparison.labels)}")
    paths = write_comparison(comparison, out)
    la, lb = comparison.labels
    for row in comparison.variants:
        print(f"- {row.verdict}")
    print()
    print(f"verdict: primary comparison {comparison.primary} ({lb} vs {la}): {comparison.headline()}")
    print(f"report: {paths['html']} (also {paths['markdown'].name} and {paths['gains'].name} there)")
    return 0


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _print_result(result: Any) -> None:
    print(result.table())
    print()
    for item in result.variants:
        if item.difference is not None:
            print(f"- {item.verdict}")
    for message in result.warnings:
        print(f"warning: {message}")
    print()
    print(f"verdict: primary comparison {result.primary} vs scratch ({result.training_budget} budget): "
          f"{result.headline()}")
    if result.out is not None:
        print(f"report: {result.out / 'report.html'} (also report.md, results.json and PNG plots there)")


# ---------------------------------------------------------------- demo
def _register_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="the Fashion-MNIST A -> B transfer study of Hands-On ML, over 5 seeds, with a report",
        description="Train model A on 8 Fashion-MNIST classes (or reuse it from an earlier demo), then find out "
                    "over 5 seeds whether reusing its layers helps on sandal vs shirt with 200 training images, "
                    "and at which depth. Prints the verdict, the book's figures beside ours and the report's path.",
        epilog=DEMO_EPILOG)
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="report folder (default runs/demo)")
    parser.add_argument("--seeds", type=int, metavar="N", help="seeds per variant (default 5)")
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs per run (default 20, the book's)")
    parser.add_argument("--budgets", metavar="N,N,...", help="label-budget curve sizes (default 50,200,1000; "
                                                             "none with --budget all)")
    parser.add_argument("--budget", choices=("epochs", "compute", "convergence", "all"), default="epochs",
                        help="training budget: equal epochs (default, the book's), equal training FLOPs, to "
                             "convergence, or all three (OUT/epochs, OUT/compute, OUT/convergence and "
                             "OUT/budgets.md: does the ranking survive?)")
    parser.add_argument("--base-cache", metavar="DIR", help="where model A is kept (default ~/.cache/graftnet/demo)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="redo every run even if OUT/results.json holds some")
    parser.add_argument("--device", metavar="DEV", help="cpu, cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch CPU threads (default 1: layers of 100 units gain nothing from more, and "
                             "extra threads slow training down badly when other programs share the CPU)")
    parser.add_argument("--quiet", action="store_true", help="no line per run")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run ``graftnet demo``: model A, the study on task B, the report, the verdict."""
    from graftnet import study

    t0 = time.perf_counter()
    _set_threads(args.threads)
    common = dict(seeds=args.seeds, epochs=args.epochs, base_cache=args.base_cache, resume=args.resume,
                  progress=_progress(args.quiet), device=args.device)
    if args.budget == "all":
        from graftnet.report import budget_comparison_blocks, render_markdown

        results = study.demo_budgets(out=args.out, budgets=_int_list(args.budgets, "--budgets"), **common)
        for name, result in results.items():
            print(f"== {name} budget ==")
            _print_result(result)
            print()
        print(render_markdown(budget_comparison_blocks(results)[1:]))
        print(f"comparison: {Path(args.out) / 'budgets.md'}")
    else:
        result = study.demo(out=args.out, budgets=_int_list(args.budgets, "--budgets"), budget=args.budget, **common)
        _print_result(result)
        print()
        print(_book_beside_ours(result))
    print(f"\ndemo wall time: {time.perf_counter() - t0:.0f} s")
    return 0


def _book_beside_ours(result: Any) -> str:
    """The book's single-run figures next to our means and intervals, one line per variant."""
    reference = result.reference or {}
    labels = reference.get("labels", {})
    lines = [f"published ({reference.get('source', 'the book')}) beside ours:"]
    for name, value in reference.get("values", {}).items():
        ours = result.summary(name).test
        lines.append(f"  {name:<14} book {float(value):6.2f}%   ours {ours.describe(2, '%')}   "
                     f"[{labels.get(name, '')}]")
    if reference.get("note"):
        lines.append(f"  note: {reference['note']}")
    return "\n".join(lines)
