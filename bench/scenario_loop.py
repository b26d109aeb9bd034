"""(loop) Per-step overhead: graftnet ``fit`` beside the plain tensor loop and inline
replicas of fit's ops (``lean_loop.LeanLoop``): as they were before 452d153, as they are
now, and with one optimizer group (left out of fit). Run on the MLP (batch 200 and 50)
and on the cached head of the frozen scenario (hidden3, hidden4, outputs on the (N, 50)
hidden2 output), where the per-step overhead is nearly all of the time. On a GPU a
CUDA-graph replica is added; ``--compile`` adds a ``torch.compile`` row (compile time in
the extras). Figures: microseconds per step for every row.
"""

from __future__ import annotations

from typing import Any

from common import Scenario, measure, ratio
from contenders import GraftnetFit, TensorLoop, torch_mlp
from lean_loop import lean_variants
from scenario_frozen import BATCH, NEW, _hidden2_features, grafted_model
from scenario_mlp import WIDTHS


def scenarios(ctx: Any) -> list[Scenario]:
    from graftnet.network import Network

    no_valid, _ = ctx.fashion()
    x, y = no_valid.train.x, no_valid.train.y
    cases = [("mlp", b) for b in ctx.batches] + [("cached head", BATCH)]
    out = []
    for kind, batch in cases:
        if kind == "mlp":
            model_fn, data_x = (lambda: torch_mlp(WIDTHS)), x
            gn = GraftnetFit("graftnet fit", lambda: Network.mlp((1, 28, 28), WIDTHS[1:-1], WIDTHS[-1]), no_valid,
                             batch=batch, device=ctx.device, optimizer="sgd", lr=0.01, cache=False)
        else:
            model_fn, data_x = (lambda: torch_mlp(NEW[2:], flatten=False)), _hidden2_features(x)
            gn = GraftnetFit("graftnet fit", grafted_model, no_valid, batch=batch, device=ctx.device,
                             optimizer="sgd", lr=0.01, cache=True)
        s = Scenario(f"loop_{kind.replace(' ', '_')}_b{batch}",
                     f"(loop) per-step overhead, {kind}, batch {batch}, {ctx.device.type}", reference="torch tensor loop")
        contenders = [TensorLoop("torch tensor loop", model_fn, data_x, y, batch=batch, device=ctx.device), gn]
        contenders += lean_variants(model_fn, data_x, y, batch, ctx.device, with_compile=ctx.args.compile)
        ctx.log(s.title)
        s.rows = measure(contenders, ctx.passes, log=ctx.log)
        steps = -(-len(y) // batch)
        ref = s.median("torch tensor loop")
        for r in s.rows:
            if r.median is not None:
                s.figures[f"{r.name}: us/step"] = round(r.median / steps * 1e6, 1)
        s.figures["graftnet fit / torch tensor loop"] = round(ratio(s.median("graftnet fit"), ref) or 0, 3)
        s.figures["graftnet fit / fit's ops now"] = round(ratio(s.median("graftnet fit"), s.median("fit's ops now"))
                                                          or 0, 3)
        out.append(s)
    return out
