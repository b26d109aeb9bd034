"""FLOP bounds measured on this machine, in this run.

Two bounds for a training epoch of a stack of Dense layers:

* ``shape bound``: the measured time of each GEMM a training step really issues
  (forward ``x W^T + b``; backward ``dW = dY^T x`` and, except for a layer whose input
  needs no gradient, ``dX = dY W``), in the layouts autograd uses, summed over the
  epoch's steps. What a loop with no overhead at all would take.
* ``peak bound``: the epoch's exact FLOP count divided by the best GFLOP/s of a large
  square matmul.

    >>> b = dense_epoch_bound([784, 300, 100, 10], n=55000, batch=200, device="cpu")
    >>> b["shape_bound_s"], b["gflop"]
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from common import sync

__all__ = ["time_call", "peak_gflops", "dense_step_gemms", "dense_epoch_bound", "dense_forward_bound", "conv_flops"]


def time_call(fn, device: torch.device | str, min_seconds: float = 0.05, repeats: int = 5) -> float:
    """Median seconds of one ``fn()`` call: ``repeats`` blocks of enough calls to last
    ``min_seconds`` each (after a warm-up)."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_seconds / once))
    per_call = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        per_call.append((time.perf_counter() - t0) / inner)
    return statistics.median(per_call)


def peak_gflops(device: torch.device | str = "cpu", size: int | None = None,
                dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Best GFLOP/s of an ``size x size`` matmul (2048 on the CPU, 8192 on a GPU)."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    seconds = time_call(lambda: torch.mm(a, b, out=out), device, min_seconds=0.2, repeats=5)
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "seconds": seconds,
            "gflops": 2 * size ** 3 / seconds / 1e9}


def dense_step_gemms(widths: list[int], batch: int, first_input_grad: bool = False) -> list[tuple[str, int, int, int]]:
    """The GEMMs of one training step of Dense layers ``widths[0] -> widths[1] -> ...``:
    (kind, m, k, n) with ``m x k @ k x n``."""
    gemms = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        gemms.append(("fwd", batch, fan_in, fan_out))        # (B, in) @ (in, out)
        gemms.append(("dW", fan_out, batch, fan_in))         # (out, B) @ (B, in)
        if i > 0 or first_input_grad:
            gemms.append(("dX", batch, fan_out, fan_in))     # (B, out) @ (out, in)
    return gemms


def _gemm_seconds(kind: str, m: int, k: int, n: int, device: torch.device, dtype: torch.dtype) -> float:
    g = torch.Generator(device="cpu").manual_seed(0)
    if kind == "fwd":  # addmm(bias, x, W^T) with W stored (out, in), as F.linear does
        x = torch.randn(m, k, generator=g).to(device, dtype)
        w = torch.randn(n, k, generator=g).to(device, dtype)
        bias = torch.randn(n, generator=g).to(device, dtype)
        return time_call(lambda: torch.addmm(bias, x, w.t()), device)
    if kind == "dW":  # dY^T @ x with dY (B, out), x (B, in)
        dy = torch.randn(k, m, generator=g).to(device, dtype)
        x = torch.randn(k, n, generator=g).to(device, dtype)
        return time_call(lambda: dy.t().mm(x), device)
    dy = torch.randn(m, k, generator=g).to(device, dtype)  # dX = dY @ W, W (out, in)
    w = torch.randn(k, n, generator=g).to(device, dtype)
    return time_call(lambda: dy.mm(w), device)


def dense_epoch_bound(widths: list[int], n: int, batch: int, device: torch.device | str = "cpu",
                      peak: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32,
                      first_input_grad: bool = False) -> dict[str, Any]:
    """Shape bound and peak bound of one epoch (``n`` examples, batches of ``batch``)."""
    device = torch.device(device)
    full, tail = divmod(n, batch)
    total_seconds, total_flop, per_gemm = 0.0, 0, []
    for b, count in ((batch, full), (tail, 1 if tail else 0)):
        if not count:
            continue
        for kind, m, k, nn in dense_step_gemms(widths, b, first_input_grad):
            s = _gemm_seconds(kind, m, k, nn, device, dtype)
            total_seconds += s * count
            total_flop += 2 * m * k * nn * count
            if b == batch:
                per_gemm.append({"gemm": kind, "shape": [m, k, nn], "us": round(s * 1e6, 2),
                                 "gflops": round(2 * m * k * nn / s / 1e9, 1)})
    peak = peak or peak_gflops(device, dtype=dtype)
    return {"widths": widths, "batch": batch, "steps": full + (1 if tail else 0),
            "gflop": total_flop / 1e9, "shape_bound_s": total_seconds,
            "step_bound_us": sum(g["us"] for g in per_gemm),
            "peak_gflops": peak["gflops"], "peak_bound_s": total_flop / 1e9 / peak["gflops"], "gemms": per_gemm}


def dense_forward_bound(widths: list[int], n: int, batch: int, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Time of the forward GEMMs only (frozen layers that still run every step)."""
    device = torch.device(device)
    full, tail = divmod(n, batch)
    seconds, flop = 0.0, 0
    for b, count in ((batch, full), (tail, 1 if tail else 0)):
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            if count:
                seconds += _gemm_seconds("fwd", b, fan_in, fan_out, device, dtype) * count
                flop += 2 * b * fan_in * fan_out * count
    return {"seconds": seconds, "gflop": flop / 1e9}


def conv_flops(layers: list[tuple[int, int, int, int, int]]) -> float:
    """FLOPs of convolutions given (c_in, c_out, kernel, h_out, w_out) each: 2 c_in c_out k^2 h w."""
    return float(sum(2 * ci * co * k * k * h * w for ci, co, k, h, w in layers))


def _self_check() -> None:
    gemms = dense_step_gemms([784, 300, 100, 10], 200)
    flop = 275 * sum(2 * m * k * n for _, m, k, n in gemms)
    assert math.isclose(flop / 1e9, 61.98, rel_tol=1e-3), flop  # the 62 GFLOP per epoch


_self_check()
