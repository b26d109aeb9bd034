"""Hands-On ML, chapter 11, exercise 10 over many seeds: pretraining on an auxiliary task
("same digit?" pairs) against training from scratch, with a greedy-autoencoder counterpart
and a current self-supervised method (SimCLR's NT-Xent) beside them.

The set-up of the solutions notebook (ageron/handson-ml, 11_deep_learning.ipynb, TF 1):

- split #1: MNIST's 55,000 training images (TF's ``input_data`` train set, which is what
  ``gn.datasets.mnist().train`` holds: the first 5,000 training images are the validation set);
  split #2: the 5,000 validation images, 500 per class; test: the 10,000 test images.
- DNN A and DNN B: 5 hidden layers of 100 ELU units, He initialisation; their outputs are
  concatenated under a hidden layer of 10 ELU units and one logistic unit (the notebook's two
  towers are separate, the default here; ``--towers shared`` gives one tower applied twice,
  the siamese form).
- pair training: 100 epochs of 110 batches of 500 fresh pairs from split #1, half "same
  digit", Nesterov momentum SGD (lr 0.01, momentum 0.95): 97.6% pair accuracy on test pairs.
- classifier: DNN A's hidden layers reused and frozen, a new 10-unit softmax layer, 100
  epochs on split #2, batch 50, same optimizer: **96.5%** test accuracy; the same network
  trained from scratch for 150 epochs: **94.6%**. One run each.

Here every number is over ``--seeds`` seeds (each seed pretrains its own base and draws its
own head initialisation and batch order), with the mean, a 95% Student-t interval and the
paired difference to scratch. ``--size`` scales the notebook's epoch counts down for a
shared CPU (see RESULTS.md for what was run). ``--checkpoints 3,10,30`` also trains the
frozen head on the pair tower as it stood after those pair epochs (same seed, same pairs),
which shows how the transfer grows with pair training. ``--jobs 2`` runs seeds in parallel
processes (one torch thread each); the results do not depend on it::

    nice python examples/pretrain_exercise10.py --size small --seeds 10     # make pretrain-study
    nice python examples/pretrain_exercise10.py --size notebook --seeds 10 --jobs 2 \
        --methods scratch,siamese-frozen,autoencoder-frozen --checkpoints 1,3,10,30
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

import graftnet as gn
from graftnet.data import Dataset, Split
from graftnet.io.checkpoint import atomic_write_text
from graftnet.study import paired_difference, summarize

PUBLISHED = {"source": "ageron/handson-ml, 11_deep_learning.ipynb, exercise 10 (one run each)",
             "scratch": 94.6, "siamese-frozen": 96.5, "pair_accuracy": 97.6}
TEST_PAIRS = 10_000  # the notebook's pair test set: 10,000 pairs drawn from the MNIST test images

# epochs of each phase: pairs (epochs x steps of --pair-batch pairs), the frozen head, scratch,
# greedy autoencoder epochs per layer, contrastive epochs
SIZES = {
    "notebook": {"pair_epochs": 100, "pair_steps": 110, "pair_batch": 500, "head_epochs": 100,
                 "scratch_epochs": 150, "ae_epochs": 10, "contrastive_epochs": 20, "pretrain_images": 55000},
    "small": {"pair_epochs": 3, "pair_steps": 110, "pair_batch": 500, "head_epochs": 20,
              "scratch_epochs": 30, "ae_epochs": 1, "contrastive_epochs": 1, "pretrain_images": 55000},
    "medium": {"pair_epochs": 20, "pair_steps": 110, "pair_batch": 500, "head_epochs": 20,
               "scratch_epochs": 30, "ae_epochs": 3, "contrastive_epochs": 5, "pretrain_images": 55000},
    "tiny": {"pair_epochs": 1, "pair_steps": 10, "pair_batch": 100, "head_epochs": 2,
             "scratch_epochs": 2, "ae_epochs": 1, "contrastive_epochs": 1, "pretrain_images": 2000},
}
METHODS = ("scratch", "siamese-frozen", "autoencoder-frozen", "contrastive-frozen")


def tower() -> list[gn.Dense]:
    hidden = [gn.Dense(100, "elu", init="he_normal", name=f"hidden{i}") for i in range(1, 6)]
    return [gn.Flatten(name="flatten"), *hidden]


def nesterov() -> gn.SGD:
    return gn.SGD(lr=0.01, momentum=0.95, nesterov=True)


def classify(base: gn.Network | None, task: Dataset, epochs: int, seed: int) -> float:
    """Test accuracy (percent) of a 10-way softmax on ``base``'s frozen hidden layers, or of
    the whole network from scratch when ``base`` is None."""
    torch.manual_seed(seed)
    if base is None:
        layers = [*tower(), gn.Dense(10, init="he_normal", name="outputs")]
        model = gn.Network(layers, task.input_shape, name="scratch")
    else:
        model = gn.graft(base, head=gn.Dense(10, init="he_normal"), freeze=True)  # cached: only the head runs
    gn.fit(model, task, epochs=epochs, batch_size=50, optimizer=nesterov(), seed=seed, verbose=False)
    return 100.0 * gn.evaluate(model, task)["accuracy"]


def run_seed(seed: int, size: dict, methods: list[str], mnist: Dataset, task: Dataset, shared: bool,
             checkpoints: tuple[int, ...] = ()) -> dict:
    pool = mnist.train.head(size["pretrain_images"])  # split #1
    out: dict = {"seed": seed, "test": {}, "seconds": {}, "pretext": {}, "checkpoints": {},
                 "load_average": [round(os.getloadavg()[0], 2)]}
    for method in methods:
        t0 = time.perf_counter()
        if method == "scratch":
            out["test"][method] = classify(None, task, size["scratch_epochs"], seed)
        elif method == "siamese-frozen":
            pairs = Dataset(name="mnist-split1", train=pool, valid=mnist.test, test=None, classes=mnist.classes,
                            task="multiclass", source={"name": "mnist", "split": "split #1; pairs scored on test"})

            def checkpoint(epoch: int, snapshot: gn.Network) -> None:
                if epoch in checkpoints and epoch < size["pair_epochs"]:
                    out["checkpoints"][str(epoch)] = {
                        "pair_test_accuracy": snapshot.info["pretrain"]["final"]["val_accuracy"],
                        "test": classify(snapshot, task, size["head_epochs"], seed)}

            base = gn.pretrain.siamese(tower(), pairs, epochs=size["pair_epochs"], steps_per_epoch=size["pair_steps"],
                                       batch_size=size["pair_batch"], share=shared, valid_pairs=TEST_PAIRS,
                                       seed=seed, verbose=False, on_epoch=checkpoint if checkpoints else None)
            final = base.info["pretrain"]["final"]
            out["pretext"][method] = final["val_accuracy"]  # accuracy on the 10,000 test pairs, as the notebook's
            out["pair_train_accuracy"] = final["accuracy"]
            out["test"][method] = classify(base, task, size["head_epochs"], seed)
            out["checkpoints"][str(size["pair_epochs"])] = {"pair_test_accuracy": final["val_accuracy"],
                                                           "test": out["test"][method]}
        elif method == "autoencoder-frozen":
            base = gn.pretrain.greedy(tower(), pool.x, "autoencoder", epochs=size["ae_epochs"], batch_size=128,
                                      seed=seed, verbose=False)
            out["pretext"][method] = base.info["pretrain"]["final"]["hidden5"]["loss"]
            out["test"][method] = classify(base, task, size["head_epochs"], seed)
        elif method == "contrastive-frozen":
            base = gn.pretrain.contrastive(tower(), pool.x, epochs=size["contrastive_epochs"], batch_size=256,
                                           seed=seed, verbose=False)
            out["pretext"][method] = base.info["pretrain"]["final"]["accuracy"]
            out["test"][method] = classify(base, task, size["head_epochs"], seed)
        out["seconds"][method] = round(time.perf_counter() - t0, 1)
        print(f"seed {seed:<2} {method:<20} test {out['test'][method]:.2f}%  {out['seconds'][method]:.0f}s",
              file=sys.stderr, flush=True)
    out["load_average"].append(round(os.getloadavg()[0], 2))
    return out


_WORKER: dict = {}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(split_task())


def _worker_seed(seed: int, size: dict, methods: list[str], shared: bool, checkpoints: tuple[int, ...]) -> dict:
    return run_seed(seed, size, methods, _WORKER["mnist"], _WORKER["task"], shared, checkpoints)


def split_task() -> dict:
    """MNIST (split #1 = its 55,000 training images) and split #2 as the target task."""
    mnist = gn.datasets.mnist()
    task = Dataset(name="mnist-split2", train=mnist.valid, valid=None, test=mnist.test, classes=mnist.classes,
                   task="multiclass", source={"name": "mnist", "split": "train = the 5,000 validation images"})
    return {"mnist": mnist, "task": task}


def checkpoint_rows(runs: list[dict]) -> list[dict]:
    """Frozen-head test accuracy and test-pair accuracy after each measured number of pair epochs."""
    epochs = sorted({int(e) for r in runs for e in r.get("checkpoints", {})})
    rows = []
    for e in epochs:
        done = [r["checkpoints"][str(e)] for r in runs if str(e) in r.get("checkpoints", {})]
        test, pairs = summarize([d["test"] for d in done]), summarize([100 * d["pair_test_accuracy"] for d in done])
        rows.append({"pair_epochs": e, "n": test.n, "test": test.mean, "test_low": test.low, "test_high": test.high,
                     "pairs": pairs.mean, "pairs_low": pairs.low, "pairs_high": pairs.high})
    return rows


def summarize_runs(runs: list[dict], methods: list[str]) -> list[dict]:
    rows = []
    scratch = {r["seed"]: r["test"]["scratch"] for r in runs if "scratch" in r["test"]}
    for method in methods:
        values = {r["seed"]: r["test"][method] for r in runs if method in r["test"]}
        interval = summarize(values.values())
        diff = paired_difference(values, scratch) if method != "scratch" and scratch else None
        pretext = [r["pretext"][method] for r in runs if method in r.get("pretext", {})]
        seconds = [r["seconds"][method] for r in runs if method in r["seconds"]]
        rows.append({"method": method, "n": interval.n, "mean": interval.mean, "std": interval.std,
                     "low": interval.low, "high": interval.high,
                     "diff": None if diff is None else diff.mean,
                     "diff_low": None if diff is None else diff.low, "diff_high": None if diff is None else diff.high,
                     "pretext": sum(pretext) / len(pretext) if pretext else None,
                     "seconds_per_seed": sum(seconds) / max(1, len(seconds)), "published": PUBLISHED.get(method)})
    return rows


def markdown(rows: list[dict], args: argparse.Namespace, size: dict, wall: float, shared: bool,
             curve: list[dict] | None = None, load: tuple | None = None) -> str:
    def fmt(v, d=2):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"

    towers = "one shared tower (siamese)" if shared else "two separate towers, as the notebook"
    lines = [f"# Exercise 10 (Hands-On ML ch. 11) over {rows[0]['n']} seeds", "",
             f"Size `{args.size}`: pairs {size['pair_epochs']} epochs x {size['pair_steps']} steps x "
             f"{size['pair_batch']} pairs (notebook: 100 x 110 x 500); frozen head {size['head_epochs']} epochs "
             f"(notebook 100); scratch {size['scratch_epochs']} epochs (notebook 150); greedy autoencoder "
             f"{size['ae_epochs']} epoch(s) per layer; contrastive {size['contrastive_epochs']} epoch(s); "
             f"pretraining on the first {size['pretrain_images']:,} images of split #1. Towers: {towers}. "
             f"Compute: {wall / 60:.1f} min summed over the seeds' runs on {platform.machine()} CPU "
             f"(shared machine, `nice`, {args.threads} torch thread(s) per process, {args.jobs} process(es))"
             + (f"; load average {load[0]:.1f} before, {load[1]:.1f} after" if load else "") + ".", "",
             "| method | test accuracy % (mean) | 95% CI | std | minus scratch (paired) | 95% CI "
             "| published (1 run) | pretext score | s/seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {fmt(r['mean'])} | [{fmt(r['low'])}, {fmt(r['high'])}] | {fmt(r['std'])} | "
                     f"{fmt(r['diff'])} | [{fmt(r['diff_low'])}, {fmt(r['diff_high'])}] | "
                     f"{fmt(r['published'], 1)} | {fmt(r['pretext'], 3)} | {r['seconds_per_seed']:.0f} |")
    if curve:
        lines += ["", "## Siamese: the frozen-head accuracy against the pair training it had", "",
                  f"The same seeds' pair towers, stopped after E epochs of {size['pair_steps']} steps x "
                  f"{size['pair_batch']} pairs; each then gets the same frozen-head training ({size['head_epochs']} "
                  "epochs). Test pairs: 10,000 pairs drawn from the MNIST test images, as the notebook's.", "",
                  "| pair epochs | seeds | test accuracy % | 95% CI | test-pair accuracy % | 95% CI |",
                  "|---|---|---|---|---|---|"]
        for c in curve:
            lines.append(f"| {c['pair_epochs']} | {c['n']} | {fmt(c['test'])} | [{fmt(c['test_low'])}, "
                         f"{fmt(c['test_high'])}] | {fmt(c['pairs'])} | [{fmt(c['pairs_low'])}, "
                         f"{fmt(c['pairs_high'])}] |")
    lines += ["", "Pretext score: siamese = accuracy on 10,000 test pairs (the notebook: 97.6%); autoencoder = "
              "reconstruction MSE of hidden5's input; contrastive = how often a view's nearest candidate is the "
              "other view of the same image (NT-Xent top-1)."]
    lines += ["", f"Published: {PUBLISHED['source']}: 96.5% with the frozen pair-pretrained layers, 94.6% from "
              "scratch.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--towers", choices=("shared", "separate"), default="separate",
                        help="separate: DNN A and DNN B, as the notebook (default); shared: one siamese tower")
    parser.add_argument("--checkpoints", default="",
                        help="pair epochs after which the frozen head is also trained on the tower so far (1,3,10)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the cores are shared)")
    parser.add_argument("--out", default="examples/results/pretrain-exercise10")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: summarize the seeds OUT/results.json holds (e.g. of a run stopped early)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size, methods = SIZES[args.size], [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}; methods: {', '.join(METHODS)}")
    checkpoints = tuple(sorted({int(c) for c in args.checkpoints.split(",") if c}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.json"
    key = {"size": args.size, "settings": size, "towers": args.towers, "methods": methods,
           "checkpoints": list(checkpoints)}
    runs: list[dict] = []
    if results.exists():  # resume: keep finished seeds of the same set-up
        saved = json.loads(results.read_text())
        if saved.get("key") == key:
            runs = saved["runs"]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    todo = [] if args.report_only else [seed for seed in range(args.seeds) if not any(r["seed"] == seed for r in runs)]
    if args.report_only and not runs:
        parser.error(f"--report-only: {results} holds no finished seed of this set-up ({key})")
    shared = args.towers == "shared"

    def finished(run: dict) -> None:
        runs.append(run)
        runs.sort(key=lambda r: r["seed"])
        atomic_write_text(results, json.dumps({"key": key, "runs": runs}, indent=1))

    if args.jobs > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init_worker,
                                                    initargs=(args.threads,)) as pool:
            futures = [pool.submit(_worker_seed, seed, size, methods, shared, checkpoints) for seed in todo]
            for future in concurrent.futures.as_completed(futures):
                finished(future.result())
    elif todo:
        data = split_task()
        for seed in todo:
            finished(run_seed(seed, size, methods, data["mnist"], data["task"], shared, checkpoints))
    elapsed = time.perf_counter() - t0
    wall = sum(sum(r["seconds"].values()) for r in runs)
    rows, curve = summarize_runs(runs, methods), checkpoint_rows(runs)
    load = None if args.report_only else (load_before, os.getloadavg()[0])
    payload = {"key": key, "size": size, "published": PUBLISHED, "summary": rows, "checkpoint_curve": curve,
               "runs": runs, "compute_seconds": round(wall, 1), "elapsed_seconds_this_call": round(elapsed, 1),
               "load_average": list(load) if load else None, "torch": torch.__version__, "threads": args.threads,
               "jobs": args.jobs}
    atomic_write_text(results, json.dumps(payload, indent=1))
    report = markdown(rows, args, size, wall, shared, curve, load)
    atomic_write_text(out / "RESULTS.md", report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
