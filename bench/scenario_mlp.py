"""(a) The chapter-10 MLP 784-300-100-10 (ReLU, SGD lr 0.01) on Fashion-MNIST's 55,000
training images: epoch time at batch 200 and 50.

Contenders: graftnet ``fit`` without validation (the headline; the frozen-prefix cache
does not apply: nothing is frozen), graftnet ``fit`` with the 5,000-image validation
split, the plain tensor loop (reference), a DataLoader loop, Keras 3 ``fit`` (TensorFlow
backend, in a subprocess); bounds: the step's GEMM shapes timed in this run, and the
FLOP count at the peak of a large matmul.
"""

from __future__ import annotations

from typing import Any

from common import Row, Scenario, measure, ratio
from contenders import DataLoaderLoop, GraftnetFit, TensorLoop, torch_mlp
from flops import dense_epoch_bound
from keras_side import KerasEpoch

WIDTHS = [784, 300, 100, 10]


def scenarios(ctx: Any) -> list[Scenario]:
    from graftnet.network import Network

    no_valid, with_valid = ctx.fashion()
    x, y = no_valid.train.x, no_valid.train.y
    out = []
    for batch in ctx.batches:
        s = Scenario(f"mlp_b{batch}", f"(a) MLP 784-300-100-10, batch {batch}, {len(x):,} images, {ctx.device.type}",
                     reference="torch tensor loop")
        make = lambda: Network.mlp((1, 28, 28), WIDTHS[1:-1], WIDTHS[-1])  # noqa: E731
        contenders = [
            TensorLoop("torch tensor loop", lambda: torch_mlp(WIDTHS), x, y, batch=batch, device=ctx.device),
            GraftnetFit("graftnet fit", make, no_valid, batch=batch, device=ctx.device, optimizer="sgd", lr=0.01,
                        cache=False, note="no validation split"),
            GraftnetFit("graftnet fit, autograd", make, no_valid, batch=batch, device=ctx.device, optimizer="sgd",
                        lr=0.01, cache=False, fused=False, note="fused=False: the autograd step"),
            GraftnetFit("graftnet fit +valid", make, with_valid, batch=batch, device=ctx.device, optimizer="sgd",
                        lr=0.01, cache=False, note="validates on 5,000 images each epoch"),
        ]
        if not ctx.quick:
            contenders.append(DataLoaderLoop("torch DataLoader loop", lambda: torch_mlp(WIDTHS), x, y, batch=batch,
                                             device=ctx.device))
        if ctx.device.type == "cpu":
            ctx.keras_load("fashion", x.squeeze(1).numpy(), y.numpy())
            contenders.append(KerasEpoch("keras fit", ctx.keras, {"op": "mlp", "hidden": WIDTHS[1:-1],
                                                                  "outputs": WIDTHS[-1], "lr": 0.01},
                                         "fashion", batch, note="TensorFlow backend, metrics=accuracy",
                                         why=ctx.keras_why))
        else:
            for precision in ("bf16",):
                contenders.append(TensorLoop(f"torch tensor loop {precision}", lambda: torch_mlp(WIDTHS), x, y,
                                             batch=batch, device=ctx.device, precision=precision))
                contenders.append(GraftnetFit(f"graftnet fit {precision}", make, no_valid, batch=batch,
                                              device=ctx.device, optimizer="sgd", lr=0.01, cache=False,
                                              precision=precision))
        ctx.log(f"{s.title}")
        s.rows = measure(contenders, ctx.passes, log=ctx.log)
        bound = dense_epoch_bound(WIDTHS, len(x), batch, ctx.device, peak=ctx.peak())
        s.rows.append(Row("matmul-shape bound", [bound["shape_bound_s"]], bound=True,
                          note="sum of the measured time of each step GEMM"))
        s.rows.append(Row("peak-FLOP bound", [bound["peak_bound_s"]], bound=True,
                          note=f"{bound['gflop']:.1f} GFLOP at {bound['peak_gflops']:.0f} GFLOP/s"))
        s.figures["gflop_per_epoch"] = round(bound["gflop"], 2)
        s.figures["peak_gflops"] = round(bound["peak_gflops"], 1)
        s.figures["step_gemms"] = bound["gemms"]
        _targets(s, batch)
        out.append(s)
    return out


def _targets(s: Scenario, batch: int) -> None:
    gn, ref = s.median("graftnet fit"), s.median("torch tensor loop")
    s.target("graftnet fit / torch tensor loop", ratio(gn, ref), 1.1)
    bound = s.median("matmul-shape bound")
    s.figures["graftnet / matmul-shape bound"] = round(ratio(gn, bound) or 0, 3)
    s.figures["torch loop / matmul-shape bound"] = round(ratio(ref, bound) or 0, 3)
    s.figures["graftnet autograd / matmul-shape bound"] = round(ratio(s.median("graftnet fit, autograd"), bound) or 0, 3)
    # issue 17: <= 1.2x the bound at batch 200, <= 1.5x at batch 50; never slower than Keras
    s.target("graftnet fit / matmul-shape bound", ratio(gn, bound), 1.2 if batch >= 200 else 1.5)
    keras = s.median("keras fit")
    if keras is not None:
        s.target("keras fit / graftnet fit (speed-up)", ratio(keras, gn), 1.0, better="higher")
