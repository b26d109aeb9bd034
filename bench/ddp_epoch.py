"""Epoch time of the chapter-10 MLP (784-300-100-10, ReLU, SGD lr 0.01, batch 200) on
Fashion-MNIST's 55,000 training images: one process, or data-parallel under torchrun.

    python bench/ddp_epoch.py --threads 2                                          # one process, 2 threads
    OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc-per-node 2 bench/ddp_epoch.py --threads 1

Every rank trains on its half of each global batch of 200; rank 0 prints one JSON line with
the per-epoch seconds (the first epoch, warm-up, is reported apart), their median, and a
sum of the final weights (the same as a one-process run's up to float rounding).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from graftnet import distributed
from graftnet.data import Dataset, fashion_mnist
from graftnet.network import Network
from graftnet.train import fit, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = distributed.init_from_env("cpu")
    full = fashion_mnist(download=False)  # 55,000 training images; no validation, as bench/scenario_mlp.py
    data = Dataset(full.name, full.train, None, None, full.classes, full.task, full.source)
    seed_everything(42)
    model = Network.mlp((1, 28, 28), [300, 100], 10)
    history = fit(model, data, epochs=args.epochs, batch_size=args.batch, optimizer="sgd", lr=0.01, seed=42,
                  device="cpu", cache=False, verbose=False)
    seconds = history["seconds"]
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    if world.is_main:
        print(json.dumps({"processes": world.size, "threads": args.threads, "batch": args.batch,
                          "epoch_seconds": seconds, "median_after_first": statistics.median(seconds[1:]),
                          "final_loss": history["loss"][-1], "weights_sum": float(weights.double().sum())}))
    distributed.shutdown()


if __name__ == "__main__":
    main()
