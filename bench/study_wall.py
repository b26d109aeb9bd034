"""Wall time of the Fashion A -> B study (examples/recipes/study_fashion_ab.toml), split into
model A, the runs and the report, with the seeds of each variant trained together (the
default: batched ensembles) and one run at a time (``ensemble=False``), in one invocation.

    python bench/study_wall.py [--threads N] [--json bench/results/study-wall.json]

Model A is trained cold, into a fresh base folder, so its time is measured too; both studies
then use that same model A. The two studies' records are compared run by run: test accuracy
(identical, or within 0.1 points: the issue's bound), the largest difference of a validation
loss, and how many runs trained as ensembles. The machine (CPU model, flags, threads, load
average before and after) goes into the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "study_fashion_ab.toml"


def timed_study(recipe: dict, base, out: Path, ensemble: bool) -> dict:
    from graftnet import study
    from graftnet.report import write_report

    lines: list[str] = []
    t0 = time.perf_counter()
    result = study.run_recipe(recipe, base=base, out=out, resume=False, report=False, progress=lines.append,
                              ensemble=ensemble)
    runs_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    write_report(result, out)
    report_s = time.perf_counter() - t1
    return {"result": result, "runs_s": round(runs_s, 2), "report_s": round(report_s, 2),
            "run_seconds_sum": round(sum(r["seconds"] for r in result.runs), 2),
            "ensemble_runs": sum(1 for r in result.runs if r.get("ensemble")), "lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from graftnet import study

    info = machine_info(torch.get_num_threads(), "cpu")
    recipe = study.load_recipe(RECIPE)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        base = study.base_from_recipe(recipe["base"], cache_dir=tmp / "bases", progress=lambda line: None)
        model_a_s = time.perf_counter() - t0
        together = timed_study(recipe, base, tmp / "together", True)
        alone = timed_study(recipe, base, tmp / "alone", False)
    a = {(r["variant"], r["seed"], r["budget"]): r for r in alone["result"].runs}
    b = {(r["variant"], r["seed"], r["budget"]): r for r in together["result"].runs}
    diffs = [abs(b[k]["test"]["accuracy"] - a[k]["test"]["accuracy"]) * 100 for k in a]
    val = [abs(rb["val_loss"] - ra["val_loss"]) for k in a
           for ra, rb in zip(a[k]["history"], b[k]["history"]) if "val_loss" in ra]
    info["loadavg_end"] = os.getloadavg()
    figures = {
        "machine": info,
        "runs": len(a),
        "model_a_s": round(model_a_s, 2),
        "ensemble": {k: v for k, v in together.items() if k not in ("result", "lines")},
        "one_at_a_time": {k: v for k, v in alone.items() if k not in ("result", "lines")},
        "study_wall_cold_s (model A + runs + report, ensembles)": round(model_a_s + together["runs_s"]
                                                                        + together["report_s"], 2),
        "study_wall_warm_s (model A cached, ensembles)": round(together["runs_s"] + together["report_s"], 2),
        "study_wall_cold_s (one at a time)": round(model_a_s + alone["runs_s"] + alone["report_s"], 2),
        "test accuracy: runs identical": sum(d == 0 for d in diffs),
        "test accuracy: max |difference| (points)": round(max(diffs), 4),
        "val_loss: max |difference|": max(val) if val else None,
        "seed by seed lines": [line for line in together["lines"] if "seed by seed" in line],
    }
    text = json.dumps(figures, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
