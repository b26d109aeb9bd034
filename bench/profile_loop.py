#!/usr/bin/env python
"""Where one training step's time goes in graftnet's loop.

Two views of the same loop:

1. ``--phases`` (default): the ops of ``graftnet.train.fit``'s hot loop as of 452d153
   (index_select gather, mean loss, loss/prediction buffers), replicated with a clock between phases (gather, forward, loss, zero_grad, backward, optimizer step,
   metrics). On the CPU every op is synchronous, so the phases add up to the epoch.
2. ``--profiler``: ``torch.profiler`` over one real ``fit`` epoch; the table of ops by
   self time and call count (e.g. 5 ``aten::mm`` per MLP step: 3 dW + 2 dX).

    python bench/profile_loop.py --scenario frozen --batch 200
    python bench/profile_loop.py --scenario mlp --batch 50 --profiler --limit 5000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import fashion_arrays, set_threads  # noqa: E402

PHASES = ["gather", "forward", "loss", "zero_grad", "backward", "step", "metrics"]


def model_and_inputs(scenario: str, x: torch.Tensor):
    """(network, first layer that runs per step, that layer's inputs)."""
    from graftnet.network import Network

    if scenario == "mlp":
        return Network.mlp((1, 28, 28), [300, 100], 10), 0, x
    from scenario_frozen import grafted_model

    net = grafted_model()
    with torch.inference_mode():
        feats = net(x, stop=3).clone()  # (N, 50): what the cache holds
    return net, 3, feats


def phases(scenario: str, batch: int, limit: int | None, epochs: int) -> None:
    from graftnet.optim import param_groups

    data, _ = fashion_arrays(limit)
    y = data.train.y
    net, start, x = model_and_inputs(scenario, data.train.x)
    opt = torch.optim.SGD(param_groups(net, lr=0.01), lr=0.01, foreach=True)  # as fit builds it on the CPU
    net.train()
    clock = time.perf_counter
    for epoch in range(epochs):
        spent = dict.fromkeys(PHASES, 0.0)
        t_epoch = clock()
        perm = torch.randperm(len(x))
        steps = -(-len(x) // batch)
        losses = torch.zeros(steps)  # each step's mean loss, read once per epoch (as fit)
        preds = torch.empty(len(x), dtype=torch.long)
        for s in range(steps):
            t0 = clock()
            idx = perm[s * batch:(s + 1) * batch]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            t1 = clock()
            out = net(xb, start=start)
            t2 = clock()
            loss = F.cross_entropy(out.float(), yb)
            t3 = clock()
            opt.zero_grad(set_to_none=True)
            t4 = clock()
            loss.backward()
            t5 = clock()
            opt.step()
            t6 = clock()
            with torch.no_grad():
                losses[s] = loss.detach()
                torch.argmax(out.detach(), 1, out=preds[s * batch:(s + 1) * batch])
            t7 = clock()
            for k, a, b in zip(PHASES, (t0, t1, t2, t3, t4, t5, t6), (t1, t2, t3, t4, t5, t6, t7)):
                spent[k] += b - a
        bool(torch.isfinite(losses.sum())), int((preds == y.index_select(0, perm)).sum())
        total = clock() - t_epoch
        per_step = {k: round(v / steps * 1e6, 1) for k, v in spent.items()}
        print(f"{scenario} batch {batch} epoch {epoch + 1}: {total:.4f} s, {total / steps * 1e6:.1f} us/step; "
              f"per step (us): {per_step}; other {((total - sum(spent.values())) / steps * 1e6):.1f}", flush=True)


def profiler(scenario: str, batch: int, limit: int | None) -> None:
    from torch.profiler import ProfilerActivity, profile

    from graftnet.train import fit

    data, _ = fashion_arrays(limit)
    net, start, _ = model_and_inputs(scenario, data.train.x)
    kw = {"epochs": 1, "batch_size": batch, "optimizer": "sgd", "lr": 0.01, "verbose": False, "device": "cpu",
          "cache": scenario != "mlp"}
    fit(net, data, **kw)  # warm-up (and the cache build)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit(net, data, **kw)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=["mlp", "frozen"], default="frozen")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="first N training images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--profiler", action="store_true", help="torch.profiler table of one fit epoch instead")
    args = p.parse_args()
    set_threads(args.threads)
    if args.profiler:
        profiler(args.scenario, args.batch, args.limit)
    else:
        phases(args.scenario, args.batch, args.limit, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
