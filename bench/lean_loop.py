"""A minimal replica of ``graftnet.train.fit``'s hot loop, with each of its per-step
choices switchable, to measure what each costs beside the plain tensor loop.

``LeanLoop`` does what fit's loop does (loss, predictions, a non-finite check, all on
the device, read once per epoch) with these knobs:

- ``gather="step"``: ``index_select`` per step (what fit does since 452d153);
  ``"fancy"``: ``x[idx]`` per step (what fit did before); ``"epoch"``: one
  ``index_select`` of the whole set per epoch, then contiguous slices (not in fit: a
  second copy of the data for -9 to -18 us/step);
- ``metrics="buffers"``: the step's mean loss and arg-max go into preallocated buffers,
  read once per epoch (fit now); ``"running"``: sum/isfinite/argmax-compare per step (before);
- ``loss="mean"``: ``cross_entropy(reduction="mean")`` (fit now); ``"sum"``: sum, then
  divide by the batch size (before: one more autograd node);
- ``groups="one"``: one optimizer group (not in fit: per-layer groups are part of the
  staged fine-tuning contract); ``"layer"``: one group per layer, as fit builds them;
- ``graph="cuda"``: the whole step captured in a CUDA graph and replayed (what fit does
  on CUDA); ``"compile"``: ``torch.compile`` of forward+loss (compile time is kept).

    >>> LeanLoop("lean", model_fn, x, y, batch=200, device=cpu, gather="step", groups="layer")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Contender, sync

__all__ = ["LeanLoop"]


class LeanLoop(Contender):
    def __init__(self, name: str, model_fn: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, *, batch: int,
                 device: torch.device, lr: float = 0.01, gather: str = "epoch", metrics: str = "buffers",
                 loss: str = "mean", groups: str = "one", graph: str = "none", note: str = "") -> None:
        self.name, self.model_fn, self.x_cpu, self.y_cpu = name, model_fn, x, y
        self.batch, self.device, self.lr, self.note = batch, device, lr, note
        self.gather, self.metrics, self.loss, self.groups, self.graph = gather, metrics, loss, groups, graph

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        self.model = self.model_fn().to(self.device).train()
        self.mods = list(self.model.children())
        self.x, self.y = self.x_cpu.to(self.device), self.y_cpu.to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.groups == "one":
            groups = [{"params": params}]
        else:  # one group per layer with weights, as graftnet.optim.param_groups
            groups = [{"params": [p for p in m.parameters() if p.requires_grad]} for m in self.mods]
            groups = [g for g in groups if g["params"]]
        fast = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        self.opt = torch.optim.SGD(groups, lr=self.lr, **fast)
        self.generator = torch.Generator(device="cpu").manual_seed(0)
        self.forward_loss = self._forward_loss
        self.compile_seconds = 0.0
        if self.graph == "compile":
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self.forward_loss = torch.compile(self._forward_loss, mode=mode)
        self.cuda_graph = None

    def _forward_loss(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = xb
        for m in self.mods:  # (B, F) -> ... -> (B, classes)
            out = m(out)
        if self.loss == "mean":
            return F.cross_entropy(out.float(), yb), out
        return F.cross_entropy(out.float(), yb, reduction="sum"), out

    def _capture(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """Capture forward, backward and the optimizer step for batches shaped like ``xb``."""
        self.static_x, self.static_y = xb.clone(), yb.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph, as the CUDA graph recipe asks
                self.opt.zero_grad(set_to_none=True)
                loss, _ = self._forward_loss(self.static_x, self.static_y)
                loss.backward()
                self.opt.step()
        torch.cuda.current_stream().wait_stream(side)
        self.cuda_graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.cuda_graph):
            self.static_loss, out = self._forward_loss(self.static_x, self.static_y)
            self.static_loss.backward()
            self.opt.step()
            self.static_pred = out.detach().argmax(1)

    # ------------------------------------------------------------------ one epoch
    def run(self) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        n, b = len(self.x), self.batch
        steps = -(-n // b)
        perm = torch.randperm(n, generator=self.generator).to(self.device)
        if self.gather == "epoch":
            xs, ys = self.x.index_select(0, perm), self.y.index_select(0, perm)  # (N, ...) one gather
        losses = torch.zeros(steps, device=self.device)
        preds = torch.empty(n, dtype=torch.long, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        for step in range(steps):
            lo, hi = step * b, min(n, (step + 1) * b)
            if self.gather == "epoch":
                xb, yb = xs[lo:hi], ys[lo:hi]
            elif self.gather == "step":
                idx = perm[lo:hi]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            else:
                idx = perm[lo:hi]
                xb, yb = self.x[idx], self.y[idx]
            if self.graph == "cuda" and hi - lo == b:
                if self.cuda_graph is None:
                    t = time.perf_counter()
                    self._capture(xb, yb)
                    self.compile_seconds += time.perf_counter() - t
                self.static_x.copy_(xb)
                self.static_y.copy_(yb)
                self.cuda_graph.replay()
                loss, pred = self.static_loss, self.static_pred
                losses[step] = loss.detach()
                preds[lo:hi] = pred
                continue
            t = time.perf_counter() if step == 0 else 0.0
            loss, out = self.forward_loss(xb, yb)
            objective = loss if self.loss == "mean" else loss / (hi - lo)
            self.opt.zero_grad(set_to_none=True)
            objective.backward()
            self.opt.step()
            if step == 0 and self.graph == "compile" and not self.compile_seconds:
                self.compile_seconds = time.perf_counter() - t
            with torch.no_grad():
                if self.metrics == "buffers":
                    losses[step] = loss.detach()
                    torch.argmax(out.detach(), 1, out=preds[lo:hi])
                else:
                    loss_sum += loss.detach()
                    finite &= torch.isfinite(loss.detach())
                    correct += (out.detach().argmax(1) == yb).sum()
        if self.metrics == "buffers" or self.graph == "cuda":
            ys_all = ys if self.gather == "epoch" else self.y.index_select(0, perm)
            total = losses.sum() * b if self.loss == "mean" else losses.sum()
            accuracy = (preds == ys_all).float().mean()
            ok = bool(torch.isfinite(total))  # the one host sync of the epoch
        else:
            ok, total, accuracy = bool(finite), loss_sum, correct / n
        loss_value, accuracy_value = float(total) / n, float(accuracy)
        sync(self.device)
        self.extra = {"finite": ok, "loss": round(loss_value, 4), "accuracy": round(accuracy_value, 4),
                      "compile_or_capture_s": round(self.compile_seconds, 3)}
        return time.perf_counter() - t0

    def close(self) -> None:
        self.model = self.opt = self.x = self.y = self.cuda_graph = None


def lean_variants(model_fn: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, batch: int,
                  device: torch.device, with_compile: bool = False) -> list[Contender]:
    """fit's loop before 452d153, fit's loop now, and what is left out of fit (one
    optimizer group); on CUDA the graphed step; with ``with_compile`` a torch.compile row."""
    kw: dict[str, Any] = {"batch": batch, "device": device}
    now = {"gather": "step", "metrics": "buffers", "loss": "mean"}
    out = [
        LeanLoop("fit's ops before 452d153", model_fn, x, y, gather="fancy", metrics="running", loss="sum",
                 groups="layer", note="x[idx], running metrics, sum loss / batch", **kw),
        LeanLoop("fit's ops now", model_fn, x, y, groups="layer", note="index_select, metric buffers, mean loss",
                 **now, **kw),
        LeanLoop("fit's ops now + one optimizer group", model_fn, x, y, groups="one",
                 note="not in fit (staged fine-tuning needs per-layer groups)", **now, **kw),
    ]
    if device.type == "cuda":
        out.append(LeanLoop("fit's ops now + CUDA graph", model_fn, x, y, groups="layer", graph="cuda", **now, **kw))
    if with_compile:
        out.append(LeanLoop("fit's ops now + torch.compile", model_fn, x, y, groups="layer", graph="compile",
                            **now, **kw))
    return out
