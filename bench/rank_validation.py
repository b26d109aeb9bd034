"""Does the transferability ranking agree with what a study measures? (``make rank-validation``)

Two target tasks, several bases each (trained on different class subsets; MLPs and a small
CNN), every reuse depth of every base:

- Fashion-MNIST B: sandal vs shirt, 200 training images drawn per seed;
- MNIST 5-9: five digits, 500 training images (100 per digit) drawn per seed.

For each task the bases are registered in a catalog, ``graftnet.rank`` scores every
(base, depth) candidate with LogME, LEEP and H-score on the examples seed 0 of the study
trains on, and ``graftnet.study`` trains each candidate over 10 seeds twice: with the reused
layers frozen (a new head on top: what the scores model) and fine-tuned after the head
(``...-unfreeze-all``). The agreement is the weighted Kendall tau (scipy.stats.weightedtau,
hyperbolic weights on the top of the ranking) between each score and the mean test
accuracy, per task, over the candidates; the times of ranking and of the studies are kept.

Bases are trained once and kept in ``--work`` (default ~/.cache/graftnet/rank-validation);
studies resume from their results.json there. The results go to
``bench/results/rank_validation.json`` and ``.md``.

    nice -n 10 python bench/rank_validation.py --seeds 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import weightedtau

import graftnet as gn
from graftnet import study
from graftnet.rank import SCORES, reuse_depths

HERE = Path(__file__).resolve().parent
FASHION_SIMILAR = ["T-shirt/top", "Pullover", "Coat", "Sneaker", "Ankle boot"]  # tops and shoes, like shirt/sandal
FASHION_OTHER = ["Trouser", "Dress", "Bag"]


def _cnn(input_shape: tuple[int, ...], n_outputs: int, name: str) -> gn.Network:
    layers = [gn.Conv2d(16, 3, padding="same", activation="relu", init="he_normal", name="conv1"),
              gn.MaxPool(2, name="pool1"),
              gn.Conv2d(32, 3, padding="same", activation="relu", init="he_normal", name="conv2"),
              gn.MaxPool(2, name="pool2"),
              gn.Flatten(name="flatten"),
              gn.Dense(64, "relu", init="he_normal", name="hidden1"),
              gn.Dense(n_outputs, "softmax", name="outputs")]
    return gn.Network(layers, input_shape, name=name)


def _mlp(input_shape: tuple[int, ...], n_outputs: int, name: str) -> gn.Network:
    return gn.Network.mlp(input_shape, [200, 100, 50], n_outputs, activation="elu", output_activation="softmax",
                          name=name)


def base_specs() -> dict[str, list[dict[str, Any]]]:
    """Per target task, the bases: (name, architecture, data, how many training images)."""
    fashion = gn.datasets.fashion_mnist
    mnist = gn.datasets.mnist
    return {
        "fashion:B": [
            {"name": "fa-mlp-A8", "arch": "mlp", "data": lambda: gn.datasets.load("fashion:A"), "n": 20000},
            {"name": "fa-mlp-similar5", "arch": "mlp", "data": lambda: fashion().only_classes(FASHION_SIMILAR),
             "n": 20000},
            {"name": "fa-mlp-other3", "arch": "mlp", "data": lambda: fashion().only_classes(FASHION_OTHER), "n": 15000},
            {"name": "fa-cnn-A8", "arch": "cnn", "data": lambda: gn.datasets.load("fashion:A"), "n": 12000},
            {"name": "mnist-mlp-0-9", "arch": "mlp", "data": lambda: mnist(), "n": 20000},
        ],
        "mnist:5-9": [
            {"name": "mn-mlp-0-4", "arch": "mlp", "data": lambda: gn.datasets.load("mnist:0-4"), "n": 20000},
            {"name": "mn-mlp-0-2", "arch": "mlp", "data": lambda: gn.datasets.load("mnist:0-2"), "n": 15000},
            {"name": "mn-mlp-3-4", "arch": "mlp", "data": lambda: gn.datasets.load("mnist:3-4"), "n": 10000},
            {"name": "mn-cnn-0-4", "arch": "cnn", "data": lambda: gn.datasets.load("mnist:0-4"), "n": 12000},
            {"name": "fashion-mlp-10", "arch": "mlp", "data": lambda: fashion(), "n": 20000},
        ],
    }


TASKS = {
    "fashion:B": {"data": lambda: gn.datasets.fashion_mnist().only_classes(["Sandal", "Shirt"]).as_binary("Shirt"),
                  "train_size": 200, "sampling": "stratified", "valid_size": None},
    "mnist:5-9": {"data": lambda: gn.datasets.load("mnist:5-9"), "train_size": 500, "sampling": "balanced",
                  "valid_size": 500},
}
STUDY = {"epochs": 20, "head_epochs": 4, "batch_size": 32, "optimizer": {"type": "adam", "lr": 1e-3},
         "finetune_lr_mult": 0.1}


def train_base(spec: dict[str, Any], folder: Path, say: Any) -> Path:
    path = folder / spec["name"]
    if (path / "spec.json").is_file():
        return path
    data = spec["data"]()
    data = data.sample(train=min(spec["n"], len(data.train)), seed=0)
    torch.manual_seed(0)
    make = _cnn if spec["arch"] == "cnn" else _mlp
    model = make(data.input_shape, data.n_outputs, spec["name"])
    t0 = time.perf_counter()
    gn.fit(model, data, epochs=5, batch_size=64, optimizer={"type": "adam", "lr": 1e-3}, seed=0, verbose=False)
    test = gn.evaluate(model, data)
    say(f"base {spec['name']}: {len(data.train)} images of {data.classes}, test accuracy {test['accuracy']:.4f} "
        f"({time.perf_counter() - t0:.0f} s)")
    gn.save_model(model, path, metadata={"data": data.source, "data_name": data.name, "classes": data.classes,
                                         "task": data.task, "metrics": {"test": test}})
    return path


def variants_for(model: gn.Network) -> list[tuple[int, str, str]]:
    """(depth, frozen variant, fine-tuned variant) for every reuse depth."""
    depths = reuse_depths(model)
    n = len(depths)
    out = []
    for depth, layer in depths:
        if len(model.shapes[model.index(layer)]) != 1:
            continue  # a study's new head is one Dense layer: it cannot sit on a feature map (CNN depth 1)
        drop = n - depth
        frozen = "frozen" if drop == 0 else f"drop-top{drop}"
        tuned = "unfreeze-all" if drop == 0 else f"drop-top{drop}-unfreeze-all"
        out.append((depth, frozen, tuned))
    return out


def run_task(name: str, work: Path, seeds: int, say: Any, skip: set[str] = frozenset()) -> dict[str, Any]:
    setup = TASKS[name]
    task = setup["data"]()
    folder = work / name.replace(":", "-")
    paths = [train_base(spec, work / "bases", say) for spec in base_specs()[name] if spec["name"] not in skip]

    catalog = gn.catalog.Catalog(f"sqlite:///{folder / 'catalog.sqlite'}")
    for path in paths:
        catalog.add(path, tags=["rank-validation"])
    t0 = time.perf_counter()
    ranking = gn.rank(task, catalog=catalog, train_size=setup["train_size"], sampling=setup["sampling"], seed=0,
                      out=folder / "rank")
    rank_seconds = time.perf_counter() - t0
    say(ranking.table())

    study_seconds = 0.0
    measured: dict[tuple[str, int], dict[str, float]] = {}
    for path in paths:
        base = gn.load_model(path)
        table = variants_for(base)
        names = [v for _, frozen, tuned in table for v in (frozen, tuned)]
        result = study.run(base, task, seeds=seeds, variants=names, train_size=setup["train_size"],
                           sampling=setup["sampling"], valid_size=setup["valid_size"], out=folder / f"study-{path.name}",
                           report=False, progress=lambda m: None, **STUDY)
        study_seconds += sum(r["seconds"] for r in result.runs if r["seed"] in result.seeds)
        for depth, frozen, tuned in table:
            measured[(base.name, depth)] = {"frozen": result.summary(frozen).test.mean,
                                            "frozen_sd": result.summary(frozen).test.std,
                                            "finetuned": result.summary(tuned).test.mean,
                                            "finetuned_sd": result.summary(tuned).test.std}
        say(f"study {base.name}: " + ", ".join(f"depth {d} frozen {measured[(base.name, d)]['frozen']:.2f} "
                                             f"tuned {measured[(base.name, d)]['finetuned']:.2f}" for d, _, _ in table))

    rows, unmeasured = [], []
    for row in ranking.rows:
        acc = measured.get((row["name"], row["depth"]))
        if acc is None:
            unmeasured.append(f"{row['name']} depth {row['depth']} ({row['layer']}, not flat)")
            continue
        rows.append({"model": row["name"], "depth": row["depth"], "depths": row["depths"], "layer": row["layer"],
                     "dim": row["dim"],
                     **{s: row[s] for s in SCORES}, **acc})
    taus: dict[str, dict[str, float]] = {}
    for target in ("frozen", "finetuned"):
        accuracy = np.array([r[target] for r in rows])
        taus[target] = {s: float(weightedtau(np.array([r[s] for r in rows]), accuracy).statistic) for s in SCORES}
        # for scale: a ranking that knows nothing but "reuse more layers" (depth as a fraction of the base's)
        taus[target]["deeper-is-better"] = float(weightedtau(np.array([r["depth"] / r["depths"] for r in rows]),
                                                             accuracy).statistic)
    best = {target: max(rows, key=lambda r: r[target]) for target in ("frozen", "finetuned")}
    top = {s: max(rows, key=lambda r: r[s]) for s in SCORES}
    return {"task": name, "train_size": setup["train_size"], "sampling": setup["sampling"], "seeds": seeds,
            "candidates": len(rows), "rows": rows, "weighted_tau": taus,
            "rank_seconds": round(rank_seconds, 3), "study_seconds": round(study_seconds, 2),
            "rank_fraction_of_study": round(rank_seconds / study_seconds, 5) if study_seconds else None,
            "best_measured": {t: f"{b['model']} depth {b['depth']}" for t, b in best.items()},
            "top_by_score": {s: f"{b['model']} depth {b['depth']}" for s, b in top.items()},
            "rank_warnings": ranking.warnings, "not_studied": unmeasured}


def to_markdown(results: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    lines = ["# Transferability ranking vs measured transfer", "",
             f"Generated by `bench/rank_validation.py` ({settings['seeds']} seeds per variant; study settings "
             f"{json.dumps(STUDY)}; torch threads {settings['threads']}; load average at the end "
             f"{settings['load_average']}).", ""]
    if settings["skipped_bases"]:
        lines += [f"Bases left out of this run: {', '.join(settings['skipped_bases'])}.", ""]
    for r in results:
        lines += [f"## {r['task']} ({r['train_size']} training images, {r['sampling']}; {r['candidates']} candidates)",
                  "", "| score | weighted tau vs frozen accuracy | vs fine-tuned accuracy | top candidate |",
                  "|---|---|---|---|"]
        for s in SCORES:
            lines.append(f"| {s} | {r['weighted_tau']['frozen'][s]:+.3f} | {r['weighted_tau']['finetuned'][s]:+.3f} "
                         f"| {r['top_by_score'][s]} |")
        lines.append(f"| (baseline: deeper is better) | {r['weighted_tau']['frozen']['deeper-is-better']:+.3f} | "
                     f"{r['weighted_tau']['finetuned']['deeper-is-better']:+.3f} | - |")
        lines += ["", f"Best measured: frozen {r['best_measured']['frozen']}, fine-tuned "
                      f"{r['best_measured']['finetuned']}. Ranking took {r['rank_seconds']:.2f} s, the studies "
                      f"{r['study_seconds']:.0f} s of training: {100 * r['rank_fraction_of_study']:.2f}% of it."
                      + (f" Not studied (a Dense head cannot sit on a feature map): {', '.join(r['not_studied'])}."
                         if r["not_studied"] else ""), "",
                  "| model | depth | dim | LogME | LEEP | H-score | frozen acc % (sd) | fine-tuned acc % (sd) |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in sorted(r["rows"], key=lambda x: -x["frozen"]):
            lines.append(f"| {row['model']} | {row['depth']} | {row['dim']} | {row['logme']:.4f} | "
                         f"{row['leep']:.4f} | {row['hscore']:.3f} | {row['frozen']:.2f} ({row['frozen_sd']:.2f}) | "
                         f"{row['finetuned']:.2f} ({row['finetuned_sd']:.2f}) |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tasks", default="fashion:B,mnist:5-9")
    parser.add_argument("--work", default=str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                              / "graftnet" / "rank-validation"))
    parser.add_argument("--out", default=str(HERE / "results" / "rank_validation"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip", default="", help="bases to leave out, by name (comma-separated)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    results = [run_task(name.strip(), work, args.seeds, say, skip) for name in args.tasks.split(",") if name.strip()]
    settings = {"seeds": args.seeds, "threads": args.threads, "study": STUDY, "skipped_bases": sorted(skip),
                "wall_seconds": round(time.perf_counter() - t0, 1), "torch": torch.__version__,
                "load_average": round(os.getloadavg()[0], 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "tasks": results}, indent=1) + "\n")
    out.with_suffix(".md").write_text(to_markdown(results, settings) + "\n")
    print(to_markdown(results, settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
