"""The report of a study: report.md, a self-contained report.html and PNG plots.

The report is built once as a list of blocks (headings, paragraphs, tables, images)
and rendered twice, to Markdown (images beside it as PNG files) and to HTML (the same
PNGs embedded as base64 data URIs, so the one file can be mailed or archived)::

    >>> from graftnet import study, report
    >>> result = study.run(base, task_b, seeds=10, train_size=200)
    >>> paths = report.write_report(result, "runs/study-b")
    >>> sorted(paths)
    ['budget', 'differences', 'html', 'learning_curves', 'markdown', 'variants']

Every number says how many seeds it is over and its spread: accuracies are means in
percent with the sample standard deviation (sd) and a 95% percentile-bootstrap interval
(CI, inside [0, 100]); differences to scratch are paired by seed, with a Student-t
interval, a paired t-test p-value Holm-adjusted over every comparison, and Hedges' g_z
(``graftnet.stats`` says why each was chosen).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graftnet.errors import ConfigError
from graftnet.study import Interval, StudyResult

__all__ = ["Block", "blocks_for", "book_ranking", "budget_comparison_blocks", "budget_figure", "capped_runs",
           "comparison_blocks", "comparison_figure", "differences_figure", "write_comparison", "learning_curves_figure", "plot_budget", "plot_differences", "plot_learning_curves",
           "plot_variants", "ranking", "render_html", "render_markdown", "still_improving", "variants_figure",
           "write_budget_comparison", "write_report"]

SCRATCH_COLOR = "#d95f02"
TRANSFER_COLOR = "#386cb0"
BETTER_COLOR = "#1b9e77"
WORSE_COLOR = "#c0392b"
NEUTRAL_COLOR = "#7f7f7f"
BOOK_COLOR = "#111111"


@dataclass
class Block:
    """One piece of a report: ``kind`` is h1, h2, p, verdict, list, table, image or code."""

    kind: str
    text: str = ""
    items: Sequence[str] = ()
    header: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()
    image: str = ""  # plot name (file <name>.png)


# ======================================================================= formatting
def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _mean_sd(iv: Interval, digits: int = 2) -> str:
    if iv.n == 0:
        return "no runs"
    return f"{iv.mean:.{digits}f}" + (f" ± {iv.std:.{digits}f}" if iv.std is not None else " (one run)")


def _ci(iv: Interval | None, digits: int = 2, signed: bool = False) -> str:
    if iv is None or iv.low is None or iv.high is None:
        return "– (needs 2+ seeds)" if iv is not None else "–"
    f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
    return f"[{f.format(iv.low)}, {f.format(iv.high)}]"


def _seconds(x: float) -> str:
    return f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min"


# ======================================================================= plots
def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _values(result: StudyResult, name: str, budget: int | None = None) -> dict[int, float]:
    budget = result.budget if budget is None else budget
    return {r["seed"]: r["test"]["accuracy"] * 100 for r in result.runs
            if r["variant"] == name and r["budget"] == budget and r["seed"] in result.seeds}


def plot_variants(result: StudyResult) -> bytes:
    """The variants chart as PNG bytes (:func:`variants_figure`)."""
    return _png(variants_figure(result))


def variants_figure(result: StudyResult) -> Any:
    """Dot-and-interval chart: each variant's mean test accuracy with its 95% CI, seeds as dots,
    scratch highlighted, the book's single runs as diamonds (when a reference is given)."""
    names = [v.name for v in result.variants]
    fig = _figure(7.2, 0.55 * len(names) + 1.6)
    ax = fig.add_subplot()
    reference = (result.reference or {}).get("values", {})
    rng = np.random.default_rng(0)
    for row, v in enumerate(result.variants):
        y = len(names) - 1 - row
        color = SCRATCH_COLOR if v.name == "scratch" else TRANSFER_COLOR
        seeds = list(_values(result, v.name).values())
        ax.scatter(seeds, y + rng.uniform(-0.12, 0.12, len(seeds)), s=12, color=color, alpha=0.35, linewidths=0)
        if v.test.low is not None:
            ax.errorbar(v.test.mean, y, xerr=[[v.test.mean - v.test.low], [v.test.high - v.test.mean]], fmt="o",
                        color=color, capsize=4, markersize=7, lw=2)
        else:
            ax.plot(v.test.mean, y, "o", color=color, markersize=7)
        if v.name in reference:
            ax.plot(float(reference[v.name]), y, "D", mfc="none", mec=BOOK_COLOR, markersize=8, mew=1.5)
    scratch = next((v for v in result.variants if v.name == "scratch"), None)
    if scratch is not None and scratch.test.low is not None:
        ax.axvspan(scratch.test.low, scratch.test.high, color=SCRATCH_COLOR, alpha=0.10, lw=0)
    ax.set_yticks(range(len(names)), list(reversed(names)))
    ax.set_xlabel("test accuracy (%)")
    n = len(result.seeds)
    ax.set_title(f"Test accuracy by variant ({result.training_budget} budget)\nmean and 95% bootstrap CI over {n} "
                 f"seed{'s' if n != 1 else ''}, {result.budget} training examples per run", fontsize=10)
    handles = [ax.plot([], [], "o", color=SCRATCH_COLOR)[0], ax.plot([], [], "o", color=TRANSFER_COLOR)[0],
               ax.scatter([], [], s=12, color=NEUTRAL_COLOR, alpha=0.5)]
    labels = ["scratch: mean, 95% bootstrap CI (band)", "transfer variants: mean, 95% bootstrap CI", "one seed"]
    if reference:
        handles.append(ax.plot([], [], "D", mfc="none", mec=BOOK_COLOR)[0])
        labels.append("published (single run)")
    ax.legend(handles, labels, fontsize=8, loc="best", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _significance_color(v: Any) -> str:
    """Green/red when the Holm-adjusted p (or, for results without one, the interval) says
    better/worse than scratch; grey otherwise."""
    d = v.difference
    if v.p_adjusted is not None:
        if v.p_adjusted < 0.05:
            return BETTER_COLOR if d.mean > 0 else WORSE_COLOR
        return NEUTRAL_COLOR
    if d.low is not None and d.low > 0:
        return BETTER_COLOR
    if d.high is not None and d.high < 0:
        return WORSE_COLOR
    return NEUTRAL_COLOR


def plot_differences(result: StudyResult) -> bytes:
    """The differences chart as PNG bytes (:func:`differences_figure`)."""
    return _png(differences_figure(result))


def differences_figure(result: StudyResult) -> Any:
    """Paired difference to scratch (points) per variant with its 95% t interval, coloured by
    the Holm-adjusted test: green better, red worse, grey no evidence; the primary in bold."""
    items = [v for v in result.variants if v.difference is not None and v.difference.n > 0]
    fig = _figure(7.2, 0.55 * max(len(items), 1) + 2.6)
    ax = fig.add_subplot()
    for row, v in enumerate(items):
        y = len(items) - 1 - row
        d = v.difference
        color = _significance_color(v)
        marker = "D" if v.primary else "o"
        if d.low is not None:
            ax.errorbar(d.mean, y, xerr=[[d.mean - d.low], [d.high - d.mean]], fmt=marker, color=color, capsize=4,
                        markersize=7, lw=2)
        else:
            ax.plot(d.mean, y, marker, color=color, markersize=7)
    ax.axvline(0, color=SCRATCH_COLOR, lw=1.5, ls="--")
    ax.set_yticks(range(len(items)), [v.name + (" (primary)" if v.primary else "") for v in reversed(items)])
    for label, v in zip(ax.get_yticklabels(), reversed(items)):
        if v.primary:
            label.set_fontweight("bold")
    ax.set_xlabel("difference to scratch on the same seeds (percentage points)")
    n = len(result.seeds)
    family = sum(1 for v in items if v.p_adjusted is not None)
    ax.set_title(f"Paired difference to scratch: mean and 95% t interval over {n} seed{'s' if n != 1 else ''}"
                 + (f"\ncolour: paired t-test, Holm-adjusted over {family} comparisons" if family else ""),
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if not items:
        ax.text(0.5, 0.5, "no variant to compare with scratch", ha="center", transform=ax.transAxes)
    else:
        handles = [ax.plot([], [], "o", color=BETTER_COLOR)[0], ax.plot([], [], "o", color=WORSE_COLOR)[0],
                   ax.plot([], [], "o", color=NEUTRAL_COLOR)[0],
                   ax.plot([], [], color=SCRATCH_COLOR, lw=1.5, ls="--")[0]]
        labels = ["better than scratch (adjusted p < 0.05)", "worse than scratch (adjusted p < 0.05)",
                  "no evidence of a difference", "scratch (no difference)"]
        if any(v.primary for v in items):
            handles.append(ax.plot([], [], "D", color=NEUTRAL_COLOR)[0])
            labels.append("primary comparison (declared before the run)")
        fig.legend(handles, labels, fontsize=7.5, loc="outside lower center", ncols=2, frameon=False)
    return fig


def _curve_stats(result: StudyResult, name: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, sd, n) of ``key`` (in %) per epoch over the seeds of ``name``."""
    runs = [r for r in result.runs
            if r["variant"] == name and r["budget"] == result.budget and r["seed"] in result.seeds]
    longest = max((len(r["history"]) for r in runs), default=0)
    epochs, means, sds, counts = [], [], [], []
    for i in range(longest):
        values = [r["history"][i][key] * 100 for r in runs if len(r["history"]) > i and key in r["history"][i]]
        if not values:
            continue
        epochs.append(i + 1)
        means.append(float(np.mean(values)))
        sds.append(float(np.std(values, ddof=1)) if len(values) > 1 else np.nan)
        counts.append(len(values))
    return np.array(epochs), np.array(means), np.array(sds), np.array(counts)


def plot_learning_curves(result: StudyResult) -> bytes:
    """The learning curves as PNG bytes (:func:`learning_curves_figure`)."""
    return _png(learning_curves_figure(result))


def learning_curves_figure(result: StudyResult) -> Any:
    """Validation accuracy per epoch, one panel per variant: mean ± 1 sd over seeds, scratch dashed."""
    names = [v.name for v in result.variants]
    cols = min(4, max(1, len(names)))
    rows = int(np.ceil(len(names) / cols))
    fig = _figure(3.0 * cols, 2.4 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    scratch = _shown(*_curve_stats(result, "scratch", "val_accuracy")) if "scratch" in names else None
    for ax, name in zip(axes, names):
        epochs, mean, sd, count = _shown(*_curve_stats(result, name, "val_accuracy"))
        color = SCRATCH_COLOR if name == "scratch" else TRANSFER_COLOR
        if len(epochs):
            ax.plot(epochs, mean, color=color, lw=2)
            ok = ~np.isnan(sd)
            ax.fill_between(epochs[ok], (mean - sd)[ok], (mean + sd)[ok], color=color, alpha=0.2, lw=0)
        if scratch is not None and name != "scratch" and len(scratch[0]):
            ax.plot(scratch[0], scratch[1], color=SCRATCH_COLOR, lw=1, ls="--")
        start = _stage_two_start(result, name)
        if start is not None:
            ax.axvline(start - 0.5, color=NEUTRAL_COLOR, lw=0.8, ls=":")
        n = int(count.max()) if len(count) else 0
        ax.set_title(f"{name} ({n} seed{'s' if n != 1 else ''})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax in axes[max(0, len(names) - cols):len(names)]:  # the lowest visible panel of each column
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_tick_params(labelbottom=True)
    fig.supylabel("validation accuracy (%)", fontsize=9)
    fig.suptitle(f"Learning curves ({result.training_budget} budget): mean ± 1 sd over seeds, drawn while at least "
                 f"half of the seeds are training", fontsize=10)
    handles = [axes[0].plot([], [], color=SCRATCH_COLOR, lw=2)[0], axes[0].plot([], [], color=TRANSFER_COLOR, lw=2)[0],
               axes[0].fill_between([], [], [], color=NEUTRAL_COLOR, alpha=0.3, lw=0),
               axes[0].plot([], [], color=SCRATCH_COLOR, lw=1, ls="--")[0],
               axes[0].plot([], [], color=NEUTRAL_COLOR, lw=0.8, ls=":")[0]]
    labels = ["scratch: mean over seeds", "transfer variant: mean over seeds", "band: ± 1 sd over seeds",
              "scratch's mean (for comparison)", "stage 2 starts (median over seeds)"]
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def _shown(epochs: np.ndarray, mean: np.ndarray, sd: np.ndarray,
           count: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The epochs that at least half of the seeds reached (early stopping ends runs at different epochs)."""
    if not len(count):
        return epochs, mean, sd, count
    keep = count >= max(1, int(np.ceil(count.max() / 2)))
    return epochs[keep], mean[keep], sd[keep], count[keep]


def _stage_two_start(result: StudyResult, name: str) -> float | None:
    """The median epoch at which a variant's second stage starts, over its seeds (None: one stage)."""
    starts = []
    for run in result.runs:
        if run["variant"] != name or run["budget"] != result.budget:
            continue
        rows = run["history"]
        starts += [row["epoch"] for prev, row in zip(rows, rows[1:]) if row.get("stage") != prev.get("stage")][:1]
    return float(np.median(starts)) if starts else None


def plot_budget(result: StudyResult) -> bytes:
    """The label-budget curve as PNG bytes (:func:`budget_figure`)."""
    return _png(budget_figure(result))


def budget_figure(result: StudyResult) -> Any:
    """Label-budget curve: test accuracy vs training examples, mean and 95% CI band per variant."""
    if not result.budget_curve:
        raise ConfigError("this study has no label-budget curve; run it with budgets=[...]")
    fig = _figure(7.2, 4.2)
    ax = fig.add_subplot()
    for name, points in result.budget_curve.items():
        color = SCRATCH_COLOR if name == "scratch" else TRANSFER_COLOR
        x = np.array([p["budget"] for p in points], dtype=float)
        mean = np.array([p["mean"] for p in points], dtype=float)
        low = np.array([np.nan if p["low"] is None else p["low"] for p in points], dtype=float)
        high = np.array([np.nan if p["high"] is None else p["high"] for p in points], dtype=float)
        ax.plot(x, mean, "o-", color=color, lw=2, label=f"{name}: mean over seeds")
        ax.fill_between(x, low, high, color=color, alpha=0.18, lw=0, label=f"{name}: 95% bootstrap CI")
    ax.set_xscale("log")
    budgets = sorted({p["budget"] for pts in result.budget_curve.values() for p in pts})
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("training examples of the target task")
    ax.set_ylabel("test accuracy (%)")
    n = len(result.seeds)
    ax.set_title(f"Label budget: mean and 95% bootstrap CI over {n} seed{'s' if n != 1 else ''} per point "
                 f"({result.training_budget} budget)", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return fig


# ======================================================================= the blocks
def blocks_for(result: StudyResult, images: Sequence[str]) -> list[Block]:
    """The report's content, in order; ``images`` names the plots that exist."""
    n = len(result.seeds)
    title = result.title or f"Transfer study: {result.base['name']} → {result.task['name']}"
    blocks = [Block("h1", title), Block("verdict", _capital(_primary_headline(result)))]
    blocks += [Block("p", text) for text in _declaration_notes(result)]
    blocks.append(Block("p", (
        f"All accuracies are test accuracy in percent over {n} seed{'s' if n != 1 else ''} "
        f"({_seed_list(result.seeds)}), {result.budget} training examples per run: mean ± sample standard deviation "
        f"(sd) and a 95% percentile-bootstrap interval of the mean (CI; it stays inside the observed values, so "
        f"inside [0, 100]; with few seeds it is narrower than a t interval, which results.json keeps beside it). "
        f"Differences to scratch are paired by seed: their mean with a 95% Student-t interval, a paired t-test "
        f"whose p-value is Holm-adjusted over every comparison with scratch in this study, and Hedges' g_z (the "
        f"mean difference in units of the differences' sd, corrected for few seeds). "
        f"{_budget_sentence(result)}")))
    blocks += [Block("p", w) for w in result.warnings]
    blocks += _verdict_blocks(result)
    blocks += _caveat_blocks(result)
    blocks += _variant_table(result)
    blocks += [Block("image", "Test accuracy by variant", image="variants")] if "variants" in images else []
    blocks += [Block("image", "Difference to scratch", image="differences")] if "differences" in images else []
    blocks += _reference_blocks(result)
    blocks += _budget_blocks(result, images)
    if "learning_curves" in images:
        blocks += [Block("h2", "Learning curves"), Block("image", "Learning curves", image="learning_curves")]
    blocks += _setup_blocks(result)
    return blocks


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _seed_list(seeds: Sequence[int]) -> str:
    if list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seed" + ("s " if len(seeds) > 1 else " ") + ", ".join(map(str, seeds))


def _primary_headline(result: StudyResult) -> str:
    if result.primary is None:
        return result.headline()
    return f"Primary comparison, {result.primary} vs scratch ({result.training_budget} budget): {result.headline()}"


def _declaration_notes(result: StudyResult) -> list[str]:
    """When the primary comparison was named: before the first run, or after some."""
    declared = result.declared or {}
    if result.primary is None or not declared:
        return []
    finished = int(declared.get("runs_finished") or 0)
    if finished == 0:
        at = f" ({declared['at']})" if declared.get("at") else ""
        return [f"The primary comparison was declared before the first run{at}; the other comparisons are "
                f"secondary and, like it, Holm-adjusted."]
    history = [d for d in declared.get("history", []) if d.get("primary") != result.primary]
    earlier = f" (it replaced {', '.join(repr(d['primary']) for d in history)})" if history else ""
    how = ("by the default rule (unfreeze-all vs scratch) for a results file written before graftnet recorded it"
           if not declared.get("at") else "so it was not declared before the run")
    return [f"Caution: the primary comparison was named after {finished} runs had finished{earlier}, {how}; "
            f"read it as one of the Holm-adjusted comparisons, not as a pre-declared one."]


def _budget_sentence(result: StudyResult) -> str:
    s = result.settings
    mode = result.training_budget
    if mode == "compute":
        return (f"Budget: equal compute. Every variant was given the training FLOPs scratch spends in {s['epochs']} "
                f"epochs (forward and backward of the layers each step runs; cached layers once; see "
                f"graftnet.flops), as many epochs as that buys, at most {s.get('max_epochs')}.")
    if mode == "convergence":
        return (f"Budget: to convergence. Every variant trained until val_loss had not improved for "
                f"{s.get('early_stopping')} epochs (the best epoch's weights are tested), at most "
                f"{s.get('max_epochs')} epochs; unfreezing variants train the head alone for {s['head_epochs']} "
                f"epochs first.")
    return (f"Budget: equal epochs ({s.get('epochs', '?')} per run"
            + (f", early stopping with patience {s['early_stopping']}" if s.get("early_stopping") else "")
            + "); a frozen or cached variant's epoch costs a fraction of scratch's (see the FLOPs column).")


def _verdict_blocks(result: StudyResult) -> list[Block]:
    compared = [v for v in result.variants if v.difference is not None]
    if not compared:
        return []
    items = [("Primary: " + v.verdict if v.primary else _capital(v.verdict)) + "." for v in compared]
    family = sum(1 for v in compared if v.p_adjusted is not None)
    if family:
        caveat = (f"Holm's correction: each p-value is adjusted for the {family} comparisons with scratch, so the "
                  f"chance that any of these verdicts says \"beats\" or \"is worse\" when no variant makes a "
                  f"difference stays below 5%. The intervals are each for one comparison (unadjusted).")
    else:
        caveat = (f"Each interval is for one comparison; with {len(items)} variants compared with scratch, about "
                  f"{0.05 * len(items):.1f} of them would exclude 0 by chance alone even if none made a difference.")
    return [Block("h2", "Verdicts"), Block("list", items=items), Block("p", caveat)]


def still_improving(result: StudyResult, threshold: float = 1.0) -> dict[str, float]:
    """Variants whose mean validation accuracy rose by more than ``threshold`` points over
    the last fifth of their epochs (at least 2 epochs): {name: rise in points}.

    A verdict drawn from curves that have not flattened may change with more epochs.
    """
    rising = {}
    for v in result.variants:
        epochs, mean, _, count = _curve_stats(result, v.name, "val_accuracy")
        if len(epochs) < 3:
            continue
        span = max(2, round(0.2 * len(epochs)))
        rise = float(mean[-1] - mean[-1 - span])
        if rise > threshold and count[-1] == count.max():
            rising[v.name] = rise
    return rising


def capped_runs(result: StudyResult) -> dict[str, int]:
    """Under the convergence budget, the runs per variant that reached ``max_epochs`` without
    early stopping ending them (they had not converged): {name: count}."""
    if result.training_budget != "convergence" or not result.settings.get("max_epochs"):
        return {}
    cap = int(result.settings["max_epochs"])
    counts: dict[str, int] = {}
    for run in result.runs:
        if run["budget"] == result.budget and run["seed"] in result.seeds and run["epochs"] >= cap \
                and not (run.get("stop_reason") or "").startswith("early stopping"):
            counts[run["variant"]] = counts.get(run["variant"], 0) + 1
    return counts


def _caveat_blocks(result: StudyResult) -> list[Block]:
    capped = capped_runs(result)
    blocks = []
    if capped:
        total = sum(1 for r in result.runs if r["budget"] == result.budget and r["seed"] in result.seeds)
        blocks += [Block("h2", "Caveat: not every run converged"),
                   Block("p", f"{sum(capped.values())} of {total} runs reached the cap of "
                              f"{result.settings['max_epochs']} epochs while val_loss was still improving "
                              f"({', '.join(f'{name}: {count}' for name, count in capped.items())}); for those the "
                              f"comparison is one at {result.settings['max_epochs']} epochs, not at convergence. "
                              f"A larger max_epochs (or learning rate) would let them converge.")]
    rising = still_improving(result)
    if not rising:
        return blocks
    names = ", ".join(f"{name} (+{rise:.1f} points)" for name, rise in rising.items())
    n_last = max(2, round(0.2 * max(len(r["history"]) for r in result.runs)))
    return blocks + [Block("h2", "Caveat: training had not finished"),
            Block("p", f"The mean validation accuracy was still rising over the last {n_last} epochs for: {names}. "
                       f"These variants may do better with more epochs (or a larger learning rate for the new "
                       f"head), so the verdicts above hold for this training budget only; see the learning "
                       f"curves.")]


def _variant_table(result: StudyResult) -> list[Block]:
    header = ["variant", "what it does", "seeds", "test acc. % (mean ± sd)", "95% CI (bootstrap)", "range",
              "vs scratch (points)", "95% CI of difference (t)", "p (paired t)", "Holm-adjusted p", "Hedges' g_z",
              "epochs (mean)", "train FLOPs / run (× scratch)", "s / run", "s total", "cache hits"]
    scratch_flops = next((v.flops_per_run for v in result.variants if v.name == "scratch"), None)
    rows = []
    for v in result.variants:
        values = list(_values(result, v.name).values())
        spread = f"{min(values):.2f}–{max(values):.2f}" if values else "–"
        diff = "reference" if v.name == "scratch" else ("–" if v.difference is None else f"{v.difference.mean:+.2f}")
        test = v.test_p or {}
        p = "–" if test.get("p") is None else _p(test["p"])
        p_adj = "–" if v.p_adjusted is None else _p(v.p_adjusted)
        g = "–" if test.get("hedges_g") is None else f"{test['hedges_g']:+.2f}"
        epochs = f"{v.epochs.mean:.1f}" + (f" (cap; FLOPs allow {v.epochs_uncapped:,.0f})"
                                           if v.epochs_uncapped is not None and v.epochs_uncapped > v.epochs.mean + 0.5
                                           else "")
        rows.append([v.name + (" (primary)" if v.primary else ""), v.description, str(v.test.n), _mean_sd(v.test),
                     _ci(v.test), spread, diff, _ci(v.difference, signed=True) if v.difference is not None else "–",
                     p, p_adj, g, epochs, _flops(v.flops_per_run, scratch_flops), f"{v.seconds_per_run.mean:.2f}",
                     f"{v.seconds_total:.1f}", str(v.cache_hits)])
    blocks = [Block("h2", "Variants"), Block("table", header=header, rows=rows)]
    needing = [v for v in result.variants if v.seeds_needed is not None]
    if needing:
        blocks.append(Block("p", "Seeds needed: where there is no evidence of a difference, a paired t-test at 5% "
                                 "(two-sided) would detect a true difference of 1 point with 80% power given "
                                 "about " + "; ".join(f"{v.seeds_needed} seeds for {v.name}" for v in needing)
                                 + " (from the sd of the per-seed differences seen here; a single test, before "
                                   "Holm's adjustment, so with several comparisons somewhat more)."))
    return blocks


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _flops(value: float | None, scratch: float | None) -> str:
    if value is None:
        return "–"
    text = f"{value:.3g}"
    if not scratch:
        return text
    ratio = value / scratch
    return text + (f" ({ratio:.2f}×)" if ratio >= 0.1 else f" ({ratio:.2g}×)")


def _reference_blocks(result: StudyResult) -> list[Block]:
    reference = result.reference or {}
    values = reference.get("values", {})
    if not values:
        return []
    labels = reference.get("labels", {})
    header = ["variant", "published as", "published (%)", "ours: mean ± sd (%)", "ours: 95% CI (bootstrap)", "seeds",
              "ours: range over seeds", "published value in our CI?"]
    rows = []
    for name, value in values.items():
        try:
            v = result.summary(name)
        except ConfigError:
            rows.append([name, str(labels.get(name, "")), f"{float(value):.2f}", "not run", "–", "0", "–", "–"])
            continue
        seeds = list(_values(result, name).values())
        inside = "–" if v.test.low is None else ("yes" if v.test.low <= float(value) <= v.test.high else "no")
        spread = f"{min(seeds):.2f}–{max(seeds):.2f}" if seeds else "–"
        rows.append([name, str(labels.get(name, "")), f"{float(value):.2f}", _mean_sd(v.test), _ci(v.test),
                     str(v.test.n), spread, inside])
    blocks = [Block("h2", "Beside the published figures")]
    source = reference.get("source")
    if source:
        blocks.append(Block("p", f"Published: {source}."))
    blocks.append(Block("table", header=header, rows=rows))
    if reference.get("note"):
        blocks.append(Block("p", str(reference["note"])))
    return blocks


def _budget_blocks(result: StudyResult, images: Sequence[str]) -> list[Block]:
    if not result.budget_curve:
        return []
    names = list(result.budget_curve)
    budgets = [p["budget"] for p in result.budget_curve[names[0]]]
    header = ["training examples"] + [f"{name}: mean ± sd (%) [95% bootstrap CI]" for name in names] + ["seeds"]
    rows = []
    for i, budget in enumerate(budgets):
        cells = [str(budget)]
        counts = []
        for name in names:
            p = result.budget_curve[name][i]
            iv = Interval.from_dict(p)
            cells.append(f"{_mean_sd(iv)} {_ci(iv)}")
            counts.append(str(p["n"]))
        rows.append(cells + ["/".join(sorted(set(counts)))])
    other = [n for n in names if n != "scratch"]
    text = (f"Scratch and {'the primary variant (' + other[0] + ')' if other else 'no other variant'}, trained on "
            f"a growing number of target examples drawn per seed ({result.training_budget} budget).")
    blocks = [Block("h2", "Label budget"), Block("p", text), Block("table", header=header, rows=rows)]
    if "budget" in images:
        blocks.append(Block("image", "Label-budget curve", image="budget"))
    return blocks


def _setup_blocks(result: StudyResult) -> list[Block]:
    s = result.settings
    opt = dict(s["optimizer"])
    kind, lr = opt.pop("type"), opt.pop("lr")
    sizes = ", ".join(f"{k} {v:,}" for k, v in result.task["sizes"].items())
    hits = sum(r["cache"]["hits"] for r in result.runs)
    misses = sum(r["cache"].get("misses", 0) for r in result.runs)
    built = sum(r["cache"]["build_seconds"] for r in result.runs)
    cached = sum(1 for r in result.runs if r["cache"].get("cut"))
    cache_text = ("off" if not result.cache.get("enabled") and not hits and not misses else
                  f"{cached} of {len(result.runs)} runs trained on cached features of their frozen layers; "
                  f"{hits} hits and {misses} misses (a miss computes a frozen prefix's output once), "
                  f"{built:.2f} s spent computing features in all")
    total_runs = len(result.runs)
    run_seconds = sum(r["seconds"] for r in result.runs)
    loads = [r["load_average"] for r in result.runs if r.get("load_average") is not None]
    load_text = (f"; the machine's 1-minute load average was {np.mean(loads):.1f} on average at the end of the runs "
                 f"(range {min(loads):.1f}–{max(loads):.1f}: other programs shared the CPUs, and times grow with it)"
                 if loads else "")
    env = result.environment
    items = [
        f"Base: {result.base['name']}" + (f" ({result.base['path']})" if result.base.get("path") else "")
        + f"; hidden layers reused from the bottom: {', '.join('+'.join(h) for h in result.base['hidden'])}"
        + (f" (as the variants count them from the top, a layer with weights and the layers without weights after "
           f"it: {' | '.join('+'.join(b) for b in result.base['blocks'])})"
           if any(len(b) > 1 for b in result.base.get("blocks", [])[1:]) else "") + ".",
        f"Task: {result.task['name']} ({result.task['task']}, classes {', '.join(result.task['classes'] or [])}); "
        f"splits {sizes}; each run draws {result.budget} training examples ({s['sampling']} sampling) per seed"
        + (f" and {s['valid_size']} validation examples" if s.get("valid_size") else "") + ".",
        f"Training ({result.training_budget} budget): "
        + {"epochs": f"{s['epochs']} epochs per run",
           "compute": f"scratch's training FLOPs for {s['epochs']} epochs per run, at most {s.get('max_epochs')} "
                      f"epochs",
           "convergence": f"until val_loss stops improving, at most {s.get('max_epochs')} epochs per run"}.get(
               result.training_budget, f"{s['epochs']} epochs per run")
        + f", batch size {s['batch_size']}, optimizer {kind} (lr {lr:g}"
        + (", " + ", ".join(f"{k} {v}" for k, v in opt.items()) if opt else "") + ") for scratch; the new head "
        f"of a transfer variant trains alone at lr {s.get('head_lr') or lr:g}; unfreezing variants train the head "
        f"alone for {s['head_epochs']} epochs, then the unfrozen layers with it at lr "
        f"{lr * s['finetune_lr_mult']:g} ({s['finetune_lr_mult']:g} × {lr:g})"
        + (f"; early stopping on val_loss with patience {s['early_stopping']} (best weights kept)"
           if s.get("early_stopping") else "; no early stopping (the weights after the last epoch are tested)")
        + ".",
        f"Time: {_seconds(run_seconds)} summed over the {total_runs} runs (training, evaluation and model "
        f"building); this invocation took {_seconds(result.wall_seconds)} of wall time"
        + (f", {result.resumed_runs} runs being read back from an earlier invocation's results.json"
           if result.resumed_runs else "")
        + (f"; {together} runs trained with the other seeds of their variant as one batched ensemble "
           f"(each such run's seconds are its share of the ensemble's)"
           if (together := sum(1 for r in result.runs if r.get("ensemble"))) else "")
        + f"; device {env.get('device')}, {env.get('torch_threads')} torch thread(s), {env.get('cpu_count')} CPU(s), "
          f"torch {env.get('torch')}, graftnet {env.get('graftnet')}{load_text}.",
        f"Frozen-prefix cache: {cache_text}.",
    ]
    if result.base.get("info", {}).get("test_accuracy") is not None:
        info = result.base["info"]
        items.insert(1, f"Base test accuracy on its own task: {float(info['test_accuracy']) * 100:.2f}% "
                        f"(one training run, {info.get('epochs_trained', '?')} epochs, "
                        f"{info.get('train_seconds', '?')} s).")
    blocks = [Block("h2", "Set-up"), Block("list", items=items)]
    blocks += [Block("p", note) for note in result.notes]
    blocks += [Block("code", result.base["summary"])]
    blocks.append(Block("p", "Files: results.json (every run: variant, seed, budget, test metrics, best and last "
                             "validation metrics, epochs, seconds, cache statistics, training FLOPs per stage, "
                             "per-epoch history; the primary comparison and when it was declared), "
                             "report.md, report.html and the PNG plots. FLOPs count 2 per multiply-add of each "
                             "Dense/Conv2d layer that runs at a step, forward and backward (graftnet.flops), plus "
                             "one forward of the cached layers per training example."))
    return blocks


# ======================================================================= rendering
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """Markdown with images referenced as ``<name>.png`` beside the file."""
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind == "verdict":
            out.append(f"> **{b.text}**")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "list":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |",
                     "|" + "|".join("---" for _ in b.header) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif b.kind == "image":
            out.append(f"![{b.text}]({b.image}.png)")
        elif b.kind == "code":
            out.append("```\n" + b.text + "\n```")
        else:
            raise ConfigError(f"unknown report block kind {b.kind!r}")
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 max-width:1100px;margin:2em auto;padding:0 1.2em;color:#222;line-height:1.5}
h1{font-size:1.6em;border-bottom:2px solid #386cb0;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:2em;color:#244a80}
.verdict{background:#eef4fb;border-left:5px solid #386cb0;padding:.8em 1em;font-size:1.1em;font-weight:600}
table{border-collapse:collapse;margin:1em 0;font-size:.88em;width:100%}
th,td{border:1px solid #d0d7de;padding:.35em .55em;text-align:left;vertical-align:top}
th{background:#f3f5f8}
tr:nth-child(even) td{background:#fafbfc}
img{max-width:100%;height:auto;display:block;margin:1em 0}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
figcaption{font-size:.85em;color:#555}
"""


def render_html(blocks: Sequence[Block], images: dict[str, bytes], title: str = "graftnet study") -> str:
    """One self-contained HTML page: CSS inline, plots as ``data:image/png;base64`` URIs."""
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "verdict":
            parts.append(f"<p class=\"verdict\">{esc(b.text)}</p>")
        elif b.kind == "p":
            parts.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "list":
            parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in b.items) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "image":
            data = base64.b64encode(images[b.image]).decode("ascii")
            parts.append(f"<figure><img alt=\"{esc(b.text)}\" src=\"data:image/png;base64,{data}\">"
                         f"<figcaption>{esc(b.text)}</figcaption></figure>")
        elif b.kind == "code":
            parts.append(f"<pre>{esc(b.text)}</pre>")
        else:
            raise ConfigError(f"unknown report block kind {b.kind!r}")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(result: StudyResult, out: str | Path) -> dict[str, Path]:
    """Write report.md, report.html and the PNG plots into ``out``; returns their paths by name."""
    from graftnet.io.checkpoint import atomic_write_bytes, atomic_write_text

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {"variants": plot_variants(result), "differences": plot_differences(result)}
    if any(r["history"] for r in result.runs):
        images["learning_curves"] = plot_learning_curves(result)
    if result.budget_curve:
        images["budget"] = plot_budget(result)
    paths: dict[str, Path] = {}
    for name, data in images.items():
        paths[name] = folder / f"{name}.png"
        atomic_write_bytes(paths[name], data)
    blocks = blocks_for(result, list(images))
    title = blocks[0].text
    atomic_write_text(folder / "report.md", render_markdown(blocks))
    atomic_write_text(folder / "report.html", render_html(blocks, images, title=title))
    paths["markdown"], paths["html"] = folder / "report.md", folder / "report.html"
    return paths


# ======================================================================= one study under several budgets
def book_ranking(result: StudyResult) -> list[str]:
    """The variants of the published reference, best first (e.g. ['unfreeze-all', 'scratch'])."""
    values = (result.reference or {}).get("values", {})
    return sorted(values, key=lambda name: -float(values[name]))


def ranking(result: StudyResult) -> list[str]:
    """Variant names by mean test accuracy, best first."""
    return [v.name for v in sorted(result.variants, key=lambda v: -v.test.mean)]


def _kendall_tau(first: Sequence[str], second: Sequence[str]) -> float | None:
    from scipy import stats

    common = [name for name in first if name in second]
    if len(common) < 3:
        return None
    return float(stats.kendalltau([first.index(n) for n in common], [second.index(n) for n in common]).statistic)


def _book_order_holds(result: StudyResult, order: Sequence[str]) -> str:
    """Whether our means keep the published order, and what the tests say about each step."""
    present = [name for name in order if any(v.name == name for v in result.variants)]
    if len(present) < 2:
        return "not comparable (the published variants were not run)"
    means = [result.summary(name).test.mean for name in present]
    kept = all(a > b for a, b in zip(means, means[1:]))
    words = []
    for name in present:
        v = result.summary(name)
        if v.p_adjusted is not None:
            verdict = ("better" if v.difference.mean > 0 else "worse") if v.p_adjusted < 0.05 else "no evidence"
            words.append(f"{name} vs scratch {v.difference.mean:+.2f} points, Holm p {_p(v.p_adjusted)} ({verdict})")
    return ("yes in the means" if kept else "no: the means reverse it") + (f"; {'; '.join(words)}" if words else "")


def budget_comparison_blocks(results: dict[str, StudyResult], links: dict[str, str] | None = None) -> list[Block]:
    """A report comparing one study run under several budgets: accuracy and rank of every
    variant under each, whether the published ranking survives, and each primary verdict."""
    names = list(results)
    first = results[names[0]]
    variants = [v.name for v in first.variants]
    ranks = {b: ranking(r) for b, r in results.items()}
    header = ["variant"] + [f"{b}: test acc. % mean ± sd (rank), epochs, FLOPs × scratch" for b in names]
    rows = []
    for name in variants:
        cells = [name + (" (primary)" if first.summary(name).primary else "")]
        for b, r in results.items():
            try:
                v = r.summary(name)
            except ConfigError:
                cells.append("not run")
                continue
            scratch = next((x.flops_per_run for x in r.variants if x.name == "scratch"), None)
            ratio = v.flops_per_run / scratch if v.flops_per_run and scratch else None
            flops = "" if ratio is None else f", {ratio:.2f}×" if ratio >= 0.1 else f", {ratio:.2g}×"
            mark = "" if v.p_adjusted is None else (" *" if v.p_adjusted < 0.05 else "")
            cells.append(f"{_mean_sd(v.test)} (#{ranks[b].index(name) + 1}){mark}, {v.epochs.mean:.0f} ep{flops}")
        rows.append(cells)
    n = len(first.seeds)
    blocks = [Block("h1", f"{first.title or 'Transfer study'}: under {len(names)} training budgets"),
              Block("p", f"The same study ({n} seeds, {first.budget} training examples per run) with each variant "
                         f"trained for equal epochs, for equal compute (scratch's training FLOPs) and to convergence "
                         f"(early stopping on val_loss). Rank 1 is the highest mean test accuracy; * marks a "
                         f"difference to scratch with Holm-adjusted p < 0.05 (paired t-test)."),
              Block("table", header=header, rows=rows)]
    order = book_ranking(first)
    items = []
    for b, r in results.items():
        line = f"{b}: primary ({r.primary} vs scratch): {r.headline()}."
        if order:
            line += f" Published ranking ({' > '.join(order)}): {_book_order_holds(r, order)}."
        tau = _kendall_tau(ranks[names[0]], ranks[b]) if b != names[0] else None
        if tau is not None:
            line += f" Kendall's tau of the whole ranking against the {names[0]} budget's: {tau:+.2f}."
        items.append(line)
    blocks += [Block("h2", "Does the ranking survive each budget?"), Block("list", items=items)]
    if links:
        blocks += [Block("h2", "Reports"), Block("list", items=[f"{b}: {path}" for b, path in links.items()])]
    return blocks


def write_budget_comparison(results: dict[str, StudyResult], out: str | Path) -> dict[str, Path]:
    """Write ``budgets.md`` and ``budgets.html`` (tables only) comparing a study's budgets."""
    from graftnet.io.checkpoint import atomic_write_text

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    links = {b: f"{b}/report.html" for b in results}
    blocks = budget_comparison_blocks(results, links)
    atomic_write_text(folder / "budgets.md", render_markdown(blocks))
    atomic_write_text(folder / "budgets.html", render_html(blocks, {}, title=blocks[0].text))
    return {"markdown": folder / "budgets.md", "html": folder / "budgets.html"}


# ======================================================================= two studies side by side
FIRST_COLOR = "#7570b3"   # the first (reference) study of a comparison, e.g. the MLP base
SECOND_COLOR = "#e7298a"  # the second, e.g. the CNN base


def comparison_figure(comparison: Any) -> Any:
    """Left: each variant's gain over scratch in both studies (mean and 95% bootstrap CI,
    filled when Holm-significant in its study). Right: the second study's gain minus the
    first's, paired by seed, coloured by the Holm-adjusted test across variants."""
    la, lb = comparison.labels
    rows = comparison.variants
    fig = _figure(10.0, 0.6 * max(len(rows), 1) + 2.8)
    left, right = fig.subplots(1, 2, sharey=True)
    for row_index, row in enumerate(rows):
        y = len(rows) - 1 - row_index
        for label, color, dy in ((la, FIRST_COLOR, 0.14), (lb, SECOND_COLOR, -0.14)):
            ci, p = row.gain_ci[label], row.p_adjusted[label]
            filled = p is not None and p < 0.05
            if ci.low is not None:
                left.errorbar(ci.mean, y + dy, xerr=[[ci.mean - ci.low], [ci.high - ci.mean]], fmt="o", color=color,
                              mfc=color if filled else "white", capsize=3, markersize=6, lw=1.8)
            else:
                left.plot(ci.mean, y + dy, "o", color=color, mfc=color if filled else "white", markersize=6)
        d = row.difference_ci
        p = row.difference_p_adjusted
        color = NEUTRAL_COLOR if p is None or p >= 0.05 else (BETTER_COLOR if d.mean > 0 else WORSE_COLOR)
        marker = "D" if row.primary else "o"
        if d.low is not None:
            right.errorbar(d.mean, y, xerr=[[d.mean - d.low], [d.high - d.mean]], fmt=marker, color=color, capsize=4,
                           markersize=7, lw=2)
        else:
            right.plot(d.mean, y, marker, color=color, markersize=7)
    for ax in (left, right):
        ax.axvline(0, color=SCRATCH_COLOR if ax is left else NEUTRAL_COLOR, lw=1.3, ls="--")
        ax.grid(axis="x", alpha=0.3)
    left.set_yticks(range(len(rows)), [r.name + (" (primary)" if r.primary else "") for r in reversed(rows)])
    for label, row in zip(left.get_yticklabels(), reversed(rows)):
        if row.primary:
            label.set_fontweight("bold")
    left.set_xlabel("gain over scratch on the same seeds (points)")
    right.set_xlabel(f"gain with {lb} minus gain with {la} (points)")
    n = len(comparison.seeds)
    left.set_title(f"Gain over scratch: mean and 95% bootstrap CI, {n} seeds", fontsize=10)
    right.set_title(f"Does reuse help more with {lb}? Paired by seed,\ncolour: paired t-test, Holm-adjusted over "
                    f"{len(rows)} variants", fontsize=10)
    handles = [left.plot([], [], "o", color=FIRST_COLOR)[0], left.plot([], [], "o", color=SECOND_COLOR)[0],
               left.plot([], [], "o", color=NEUTRAL_COLOR, mfc="white")[0],
               left.plot([], [], color=SCRATCH_COLOR, lw=1.3, ls="--")[0],
               right.plot([], [], "o", color=BETTER_COLOR)[0], right.plot([], [], "o", color=WORSE_COLOR)[0],
               right.plot([], [], "o", color=NEUTRAL_COLOR)[0],
               right.plot([], [], color=NEUTRAL_COLOR, lw=1.3, ls="--")[0]]
    labels = [f"{la} base: gain over scratch", f"{lb} base: gain over scratch",
              "hollow: no evidence vs scratch in that study (Holm p ≥ 0.05); filled: Holm p < 0.05",
              "scratch (no gain)", f"reuse helps more with {lb} (Holm p < 0.05)",
              f"reuse helps more with {la} (Holm p < 0.05)", "no evidence of a difference in gain",
              "the same gain with both bases"]
    if any(r.primary for r in rows):
        handles.append(right.plot([], [], "D", color=NEUTRAL_COLOR)[0])
        labels.append("primary comparison (declared before the runs)")
    fig.legend(handles, labels, fontsize=7.5, loc="outside lower center", ncols=2, frameon=False)
    return fig


def _gain_cell(ci: Interval, t: Interval) -> str:
    if ci.low is None:
        return f"{ci.mean:+.2f} (no CI)"
    return f"{ci.mean:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}]"


def _run_time(result: StudyResult) -> str:
    run_seconds = sum(r["seconds"] for r in result.runs)
    loads = [r["load_average"] for r in result.runs if r.get("load_average") is not None]
    text = (f"{_seconds(run_seconds)} summed over {len(result.runs)} runs, {_seconds(result.wall_seconds)} wall time "
            f"for the last invocation" + (f" ({result.resumed_runs} runs read back)" if result.resumed_runs else ""))
    if loads:
        text += f", 1-minute load average {np.mean(loads):.1f} on average (range {min(loads):.1f}–{max(loads):.1f})"
    return text


def comparison_blocks(comparison: Any, images: Sequence[str] = ("gains",),
                      links: dict[str, str] | None = None) -> list[Block]:
    """The content of a comparison report (:func:`graftnet.study.compare`)."""
    la, lb = comparison.labels
    a, b = comparison.results[la], comparison.results[lb]
    n = len(comparison.seeds)
    title = f"{la} vs {lb} base: does reuse help more with the {lb}? ({a.task.get('name')}, {n} seeds)"
    blocks = [Block("h1", title)]
    if comparison.primary:
        blocks.append(Block("verdict", f"Primary comparison, {comparison.primary}: "
                                       + comparison.headline()))
    pairing = ("the same seed draws the same training examples in both studies (same task, size and sampling), "
               "so the per-seed gains are paired" if comparison.paired_draws else
               "the studies' tasks or sampling differ, so seeds pair runs by index only")
    blocks.append(Block("p", (
        f"Each study trained the same variants on the same target task over the same seeds ({_seed_list(comparison.seeds)}); "
        f"only the base differs. A variant's gain is its test accuracy minus scratch's on the same seed (percentage "
        f"points), as each study's own report compares them; here with a 95% percentile-bootstrap interval of the "
        f"mean gain and the study's own Holm-adjusted p (over its {_family(a)} and {_family(b)} comparisons with "
        f"scratch). The difference of the gains ({lb} minus {la}) is taken per seed ({pairing}), with a 95% "
        f"percentile-bootstrap interval, the Student-t interval, and a paired t-test whose p-value is Holm-adjusted "
        f"over the {len(comparison.variants)} variants compared. Positive: reuse helps more with the {lb} base.")))
    blocks += [Block("p", note) for note in comparison.notes]
    header = ["variant", f"{la}: test acc. % (mean ± sd)", f"{la}: gain vs scratch [95% bootstrap CI]",
              f"{la}: Holm p", f"{lb}: test acc. % (mean ± sd)", f"{lb}: gain vs scratch [95% bootstrap CI]",
              f"{lb}: Holm p", f"{lb} − {la} gain [95% bootstrap CI]", "95% t interval", "p (paired t)",
              "Holm-adjusted p", "reuse helps more with"]
    rows = []
    s = comparison.scratch
    if s is not None:
        rows.append(["scratch", _mean_sd(s.accuracy[la]), "reference", "–", _mean_sd(s.accuracy[lb]), "reference", "–",
                     f"accuracy {_gain_cell(s.difference_ci, s.difference)}", _ci(s.difference, signed=True),
                     "–" if s.test.get("p") is None else _p(s.test["p"]), "(not in the family)", "–"])
    for row in comparison.variants:
        p = row.difference_p_adjusted
        more = "–" if p is None else (lb if row.difference.mean > 0 else la) if p < 0.05 else "no evidence"
        rows.append([row.name + (" (primary)" if row.primary else ""),
                     _mean_sd(row.accuracy[la]), _gain_cell(row.gain_ci[la], row.gains[la]),
                     "–" if row.p_adjusted[la] is None else _p(row.p_adjusted[la]),
                     _mean_sd(row.accuracy[lb]), _gain_cell(row.gain_ci[lb], row.gains[lb]),
                     "–" if row.p_adjusted[lb] is None else _p(row.p_adjusted[lb]),
                     _gain_cell(row.difference_ci, row.difference), _ci(row.difference, signed=True),
                     "–" if row.test.get("p") is None else _p(row.test["p"]), "–" if p is None else _p(p), more])
    blocks += [Block("h2", "Gain over scratch, variant by variant"), Block("table", header=header, rows=rows)]
    if s is not None:
        blocks.append(Block("p", f"The scratch row compares the two architectures trained from scratch: "
                                 f"{lb} minus {la} test accuracy on the same seeds (a plain paired t-test, not part "
                                 f"of the Holm family, which holds the gains)."))
    if "gains" in images:
        blocks.append(Block("image", "Gain over scratch with each base, and the difference of the gains",
                            image="gains"))
    blocks += [Block("h2", "Verdicts"), Block("list", items=[
        ("Primary: " if row.primary else "") + _capital(row.verdict) + "." for row in comparison.variants])]
    blocks += _comparison_reference(comparison)
    items = []
    for label, result in comparison.results.items():
        info = result.base.get("info", {})
        accuracy = (f", test accuracy {float(info['test_accuracy']) * 100:.2f}% on its own task"
                    if info.get("test_accuracy") is not None else "")
        hidden = " | ".join("+".join(h) for h in result.base.get("blocks") or result.base.get("hidden", []))
        items.append(f"{label}: base {result.base.get('name')}{accuracy}; the layers the variants count from the "
                     f"top (a layer with weights and what rides along with it): {hidden}. Study: "
                     f"{result.title or result.task.get('name')}. {_budget_sentence(result)} Time: {_run_time(result)}."
                     + (f" Report: {links[label]}." if links and label in links else ""))
    blocks += [Block("h2", "The two studies"), Block("list", items=items)]
    for label, result in comparison.results.items():
        blocks += [Block("p", f"{label} base:"), Block("code", result.base.get("summary", ""))]
    return blocks


def _family(result: StudyResult) -> int:
    return sum(1 for v in result.variants if v.p_adjusted is not None)


def _comparison_reference(comparison: Any) -> list[Block]:
    """The published single runs (from either study's [reference]) beside both studies' means and gains."""
    reference = next((r.reference for r in comparison.results.values() if (r.reference or {}).get("values")), None)
    if not reference:
        return []
    values = {k: float(v) for k, v in reference["values"].items()}
    labels = reference.get("labels", {})
    la, lb = comparison.labels
    header = ["variant", "published as", "published (%)", "published gain vs published scratch",
              f"{la}: mean ± sd (%)", f"{la}: gain", f"{lb}: mean ± sd (%)", f"{lb}: gain"]
    rows = []
    compared = {row.name: row for row in comparison.variants}
    if comparison.scratch is not None:
        compared["scratch"] = comparison.scratch
    for name, value in values.items():
        gain = f"{value - values['scratch']:+.2f}" if "scratch" in values and name != "scratch" else "–"
        cells = [name, str(labels.get(name, "")), f"{value:.2f}", gain]
        row = compared.get(name)
        for label in (la, lb):
            if row is None:
                cells += ["not run in both", "–"]
                continue
            cells += [_mean_sd(row.accuracy[label]),
                      f"{row.gains[label].mean:+.2f}" if label in row.gains else "–"]
        rows.append(cells)
    blocks = [Block("h2", "Beside the published figures")]
    if reference.get("source"):
        blocks.append(Block("p", f"Published (an MLP base; single runs): {reference['source']}. Ours: over the "
                                 f"{len(comparison.seeds)} seeds compared."))
    return blocks + [Block("table", header=header, rows=rows)]


def write_comparison(comparison: Any, out: str | Path) -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.html`` and ``gains.png`` into ``out``."""
    from graftnet.io.checkpoint import atomic_write_bytes, atomic_write_text

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    images = {"gains": _png(comparison_figure(comparison))}
    links = {}
    for label, result in comparison.results.items():
        if result.out is not None:
            target = Path(result.out).resolve() / "report.md"
            try:
                links[label] = str(Path(os.path.relpath(target, folder.resolve())))
            except ValueError:  # another drive
                links[label] = str(target)
    blocks = comparison_blocks(comparison, list(images), links)
    paths = {"gains": folder / "gains.png", "markdown": folder / "comparison.md", "html": folder / "comparison.html"}
    atomic_write_bytes(paths["gains"], images["gains"])
    atomic_write_text(paths["markdown"], render_markdown(blocks))
    atomic_write_text(paths["html"], render_html(blocks, images, title=blocks[0].text))
    return paths
