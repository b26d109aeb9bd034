"""graftnet study --jobs 2 against --jobs 1 on this machine: wall time and identical results.

    python bench/study_jobs.py [--seeds 6] [--out bench/results/study-jobs.json]

The study: an MLP base (784-300-100-50, trained 3 epochs on Fashion-MNIST's 8 classes A), the
target task sandal vs shirt with 200 drawn images per seed, the default 7 variants, 20 epochs.
Both runs use one torch thread per process (what each of two workers gets on 2 cores), so a
run's arithmetic is the same whichever process ran it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import graftnet as gn


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--out", default="bench/results/study-jobs.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fashion = gn.datasets.fashion_mnist()
    task_a = fashion.without_classes(["Sandal", "Shirt"])
    task_b = fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt")
    base = gn.Network.mlp(task_a.input_shape, [300, 100, 50], 8, name="fashion-a")
    gn.fit(base, task_a, epochs=3, batch_size=200, verbose=False, seed=0)
    timings, runs = {}, {}
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            t0 = time.perf_counter()
            result = gn.study.run(base, task_b, seeds=args.seeds, epochs=20, train_size=200, report=False,
                                  out=folder, jobs=jobs, progress=lambda s: None)
            timings[jobs] = time.perf_counter() - t0
            runs[jobs] = {(r["variant"], r["seed"]): r["test"]["accuracy"] for r in result.runs}
    same = runs[1] == runs[2]
    record = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_before": os.getloadavg(),
              "seeds": args.seeds, "runs": len(runs[1]), "wall_seconds": timings,
              "ratio_jobs2_over_jobs1": timings[2] / timings[1], "identical_test_accuracies": same,
              "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
