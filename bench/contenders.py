"""The contenders every scenario reuses: graftnet ``fit``, plain PyTorch loops, DataLoader.

The plain loops are what a careful user writes by hand; the tensor loop is the
reference the issue's targets compare with (no metrics, no loss read back, no checks):

    perm = torch.randperm(n)
    for i in range(0, n, batch):
        idx = perm[i:i + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Contender, sync

__all__ = ["GraftnetFit", "TensorLoop", "DataLoaderLoop", "torch_mlp", "autocast_for"]


def torch_mlp(widths: list[int], flatten: bool = True) -> nn.Sequential:
    """nn.Sequential(Flatten, Linear, ReLU, ..., Linear): widths [784, 300, 100, 10]."""
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def autocast_for(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


class GraftnetFit(Contender):
    """``graftnet.fit(model, data, epochs=k)``: returns the mean of the History's per-epoch
    ``seconds`` (the loop's own clock: batches, metrics, validation if any); the wall of
    the whole call (set-up, cache look-up, optimizer build) goes to the extras."""

    def __init__(self, name: str, make_model: Callable[[], Any], data: Any, *, batch: int, device: torch.device,
                 epochs_per_run: int = 1, note: str = "", threads: int | None = None, **fit_kwargs: Any) -> None:
        self.name, self.make_model, self.data, self.batch, self.device = name, make_model, data, batch, device
        self.epochs_per_run, self.note, self.fit_kwargs = epochs_per_run, note, fit_kwargs
        self.threads = threads  # intra-op threads during this contender's fit (restored after)
        self.model = None
        self.seed = 0

    def setup(self) -> None:
        self.model = self.make_model()

    def run(self) -> float:
        from graftnet.train import fit

        self.seed += 1
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            t0 = time.perf_counter()
            history = fit(self.model, self.data, epochs=self.epochs_per_run, batch_size=self.batch, verbose=False,
                          device=self.device, seed=self.seed, **self.fit_kwargs)
            wall = time.perf_counter() - t0
        finally:
            torch.set_num_threads(before)
        rows = history.epochs
        self.extra = {"fit_call_wall_s": round(wall, 4), "loss": round(rows[-1]["loss"], 4)}
        self.extra.update({k: v for k, v in rows[0].items() if k.startswith("cache_")})
        if history.stop_reason:
            raise RuntimeError(history.stop_reason)
        return sum(r["seconds"] for r in rows) / len(rows)

    def close(self) -> None:
        self.model = None


class TensorLoop(Contender):
    """The plain PyTorch loop over tensors already in memory (on ``device``), batched by
    index permutation. ``model_fn()`` builds the module; only parameters with
    ``requires_grad`` go to the optimizer (torch.optim.SGD with its defaults)."""

    def __init__(self, name: str, model_fn: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, *,
                 batch: int, device: torch.device, lr: float = 0.01, precision: str = "fp32",
                 epochs_per_run: int = 1, loss: str = "ce", note: str = "") -> None:
        self.name, self.model_fn, self.batch, self.device, self.lr = name, model_fn, batch, device, lr
        self.x_cpu, self.y_cpu, self.precision, self.epochs_per_run, self.note = x, y, precision, epochs_per_run, note
        self.loss = loss

    def setup(self) -> None:
        self.model = self.model_fn().to(self.device)
        self.model.train()
        self.x, self.y = self.x_cpu.to(self.device), self.y_cpu.to(self.device)
        self.opt = torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad], lr=self.lr)
        self.loss_fn = F.cross_entropy if self.loss == "ce" else (
            lambda out, y: F.binary_cross_entropy_with_logits(out.squeeze(1), y))

    def run(self) -> float:
        model, opt, x, y, b = self.model, self.opt, self.x, self.y, self.batch
        n = len(x)
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(self.epochs_per_run):
            perm = torch.randperm(n, device=self.device)
            for i in range(0, n, b):
                idx = perm[i:i + b]
                with autocast_for(self.device, self.precision):
                    out = model(x[idx])
                loss = self.loss_fn(out.float(), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        sync(self.device)
        return (time.perf_counter() - t0) / self.epochs_per_run

    def close(self) -> None:
        self.model = self.opt = self.x = self.y = None


class DataLoaderLoop(TensorLoop):
    """The same loop fed by ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)``
    (no worker processes: on 2 cores they would compete with the loop)."""

    def setup(self) -> None:
        super().setup()
        from torch.utils.data import DataLoader, TensorDataset

        self.loader = DataLoader(TensorDataset(self.x_cpu, self.y_cpu), batch_size=self.batch, shuffle=True,
                                 pin_memory=self.device.type == "cuda")

    def run(self) -> float:
        model, opt = self.model, self.opt
        sync(self.device)
        t0 = time.perf_counter()
        for xb, yb in self.loader:
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            with autocast_for(self.device, self.precision):
                out = model(xb)
            loss = self.loss_fn(out.float(), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync(self.device)
        return time.perf_counter() - t0
