"""The Fashion-MNIST A/B transfer experiment of Hands-On Machine Learning (chapter 11).

Task A: the 8 Fashion-MNIST classes other than Sandal and Shirt. Task B: Sandal vs Shirt
(binary, positive Shirt) with only the first 200 training images; its test split holds
the 2,000 Sandal and Shirt test images. Both networks are 5 x Dense(100, selu,
lecun_normal) plus an output layer.

1. Model A is trained on task A (20 epochs, SGD lr 1e-3, batch 32) and saved in a cache
   folder, so reruns reuse it.
2. For each seed: model B from scratch (20 epochs, SGD lr 1e-3) and model B on A: every
   layer of A but its output, a new sigmoid output, 4 epochs with the reused layers frozen
   (lr 1e-3; their output is computed once and cached), then 16 epochs with every layer
   training at lr 1e-4 (``--head-lr`` and ``--finetune-lr`` change the two rates; the
   book's 2nd-edition code used Keras' default 1e-2, then 1e-4).
3. Prints the test accuracy of both over the seeds: mean, standard deviation, min and max.

    python examples/fashion_ab.py                 # 5 seeds
    python examples/fashion_ab.py --seeds 10 --cache-dir /tmp/graftnet-ab
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from graftnet.cache import default_cache
from graftnet.data import fashion_mnist
from graftnet.io.checkpoint import load_model, save_model
from graftnet.layers import Dense
from graftnet.network import Network
from graftnet.optim import SGD
from graftnet.train import evaluate, fit
from graftnet.transfer import FineTune, Stage, graft

HIDDEN = [100] * 5
A_SETTINGS = {"epochs": 20, "lr": 1e-3, "batch_size": 32, "seed": 42, "hidden": HIDDEN,
              "activation": "selu", "init": "lecun_normal"}


def tasks():
    """(task A, task B) from Fashion-MNIST: 55,000 / 5,000 / 10,000 before the class subsets."""
    fashion = fashion_mnist()
    task_a = fashion.without_classes(["Sandal", "Shirt"])
    task_b = fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt").head(train=200)
    return task_a, task_b


def model_a(task_a, cache_dir: Path, device: str | None) -> Network:
    """Model A, trained once and kept in ``cache_dir`` (keyed by its settings and data)."""
    key = hashlib.sha256(json.dumps({**A_SETTINGS, "data": task_a.train.fingerprint()}, sort_keys=True).encode())
    folder = cache_dir / f"fashion-a-{key.hexdigest()[:12]}"
    if (folder / "spec.json").exists():
        print(f"model A: reusing {folder}", flush=True)
        return load_model(folder, device=device)
    torch.manual_seed(A_SETTINGS["seed"])
    model = Network.mlp(task_a.input_shape, HIDDEN, task_a.n_outputs, activation="selu", init="lecun_normal",
                        name="fashion-a")
    t0 = time.perf_counter()
    fit(model, task_a, epochs=A_SETTINGS["epochs"], batch_size=A_SETTINGS["batch_size"],
        optimizer=SGD(lr=A_SETTINGS["lr"]), seed=A_SETTINGS["seed"], device=device, verbose=False)
    accuracy = evaluate(model, task_a)["accuracy"]
    print(f"model A: trained in {time.perf_counter() - t0:.1f}s, test accuracy on A {accuracy:.4f}", flush=True)
    save_model(model, folder, metadata={"data": task_a.source, "classes": task_a.classes,
                                        "metrics": {"test": {"accuracy": accuracy}}, "settings": A_SETTINGS})
    return load_model(folder, device=device)  # so its lineage records the saved path


def b_from_scratch(task_b, seed: int, device: str | None) -> float:
    torch.manual_seed(seed)
    model = Network.mlp(task_b.input_shape, HIDDEN, 1, activation="selu", init="lecun_normal",
                        output_activation="sigmoid", name="fashion-b")
    fit(model, task_b, epochs=20, batch_size=32, optimizer=SGD(lr=1e-3), seed=seed, device=device, verbose=False)
    return evaluate(model, task_b)["accuracy"]


def b_on_a(base: Network, task_b, seed: int, device: str | None, head_lr: float = 1e-3,
           finetune_lr: float = 1e-4) -> float:
    torch.manual_seed(seed)  # the new output layer's initialisation
    model_b = graft(base, reuse=":-1", head=Dense(1, "sigmoid"))
    plan = FineTune([Stage(4, train="outputs"), Stage(16, train="all", lr=finetune_lr)])
    plan.fit(model_b, task_b, optimizer=SGD(lr=head_lr), batch_size=32, seed=seed, device=device, verbose=False)
    return evaluate(model_b, task_b)["accuracy"]


def describe(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{statistics.mean(values):.4f} ± {spread:.4f} (std over {len(values)} seeds), "
            f"min {min(values):.4f}, max {max(values):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ..., N-1)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "graftnet" / "examples",
                        help="where model A is kept between runs")
    parser.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--head-lr", type=float, default=1e-3,
                        help="SGD learning rate of the 4 frozen epochs (default 1e-3)")
    parser.add_argument("--finetune-lr", type=float, default=1e-4,
                        help="SGD learning rate of the 16 epochs with every layer training (default 1e-4)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    task_a, task_b = tasks()
    print(f"task A: {len(task_a.train):,} training images, 8 classes; task B: {len(task_b.train)} training "
          f"images, {len(task_b.test):,} test images (Sandal vs Shirt)", flush=True)
    base = model_a(task_a, args.cache_dir, args.device)
    print(f"B on A: 4 epochs frozen at lr {args.head_lr:g}, then 16 epochs all layers at lr {args.finetune_lr:g}; "
          f"B from scratch: 20 epochs at lr 1e-3; SGD, batch 32", flush=True)
    scratch, transfer = [], []
    for seed in range(args.seeds):
        scratch.append(b_from_scratch(task_b, seed, args.device))
        transfer.append(b_on_a(base, task_b, seed, args.device, args.head_lr, args.finetune_lr))
        print(f"seed {seed}: B from scratch {scratch[-1]:.4f}   B on A {transfer[-1]:.4f}", flush=True)
    print(f"B from scratch: test accuracy {describe(scratch)}")
    print(f"B on A:         test accuracy {describe(transfer)}")
    gap = statistics.mean(transfer) - statistics.mean(scratch)
    err_s, err_t = 1 - statistics.mean(scratch), 1 - statistics.mean(transfer)
    change = ""
    if err_s > 0:
        change = f" (error {'reduced' if err_t <= err_s else 'increased'} by {abs(err_s - err_t) / err_s:.0%})"
    print(f"difference (B on A - scratch): {gap:+.4f} accuracy; test error {err_s:.4f} -> {err_t:.4f}{change}")
    wins = sum(t > s for t, s in zip(transfer, scratch, strict=True))
    print(f"B on A beat scratch on {wins} of {args.seeds} seeds (same seed: same batch order and head init)")
    stats = default_cache().stats()
    print(f"frozen-prefix cache: {stats['misses']} builds, {stats['hits']} hits, "
          f"{stats['build_seconds']:.2f}s building")
    print(f"wall time: {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
