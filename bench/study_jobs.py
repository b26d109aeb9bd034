"""graftnet study --jobs 2 against --jobs 1 on this machine: wall time and identical results.

    python bench/study_jobs.py [--seeds 6] [--out bench/results/study-jobs.json]

The study: an MLP base (784-300-100-50, trained 3 epochs on Fashion-MNIST's 8 classes A), the
target task sandal vs shirt with 200 drawn images per seed, the default 7 variants, 20 epochs.
Both runs use one torch thread per process (what each of two workers gets on 2 cores), so a
run's arithmetic is the same whichever process ran it.

The same run also measures a reference for this machine: a plain PyTorch training loop of the
same MLP on 200 images (batch 32, 20 epochs), run R times in one process against R/2 times in
each of two processes started together (0.5 on two independent cores; more where the two vCPUs
share a physical core's vector units or the host is busy). It is not a bound for the study,
whose runs also spend time in Python, which scales better than small GEMMs do.
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


_LOOP = """
import sys, time, torch
torch.set_num_threads(1)
torch.manual_seed(0)
x, y = torch.randn(200, 784), torch.randint(0, 2, (200,))
t0 = time.perf_counter()
for _ in range(int(sys.argv[1])):
    net = torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.SELU(), torch.nn.Linear(300, 100), torch.nn.SELU(),
                              torch.nn.Linear(100, 50), torch.nn.SELU(), torch.nn.Linear(50, 2))
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for _ in range(20):
        for i in range(0, 200, 32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
print(time.perf_counter() - t0)
"""


def two_process_reference(repeats: int = 40) -> dict[str, float]:
    """Wall time of `repeats` plain-torch fits in one process vs half of them in each of two."""
    import sys

    def launch(n: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", _LOOP, str(n)], stdout=subprocess.PIPE, text=True)

    t0 = time.perf_counter()
    launch(repeats).communicate()
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    procs = [launch(repeats // 2) for _ in range(2)]
    for proc in procs:
        proc.communicate()
    two = time.perf_counter() - t0
    return {"one_process_s": one, "two_processes_s": two, "ratio": two / one}


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
    bound = two_process_reference()
    record = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_before": os.getloadavg(),
              "seeds": args.seeds, "runs": len(runs[1]), "wall_seconds": timings,
              "ratio_jobs2_over_jobs1": timings[2] / timings[1], "identical_test_accuracies": same,
              "reference_plain_torch_two_processes": bound,
              "load_average_after": os.getloadavg(),
              "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
