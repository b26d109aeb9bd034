"""(b) Hands-On ML 11.2.4 frozen-layer scenario, batch 200, Fashion-MNIST 55,000 images.

Base 784-300-50-50-50-50-10 ReLU; the new model reuses hidden1-3 and adds hidden4(20)
and outputs; hidden1-2 are frozen. Contenders: graftnet with the frozen-prefix cache
(default ``cache=True``), graftnet ``cache=False``, plain PyTorch with
``requires_grad=False`` (the frozen layers run every step), plain PyTorch on a
precomputed hidden2 output, Keras with ``trainable=False``. Bounds: the GEMMs of the
cached step (hidden3, hidden4, outputs) and, for uncached training, plus the frozen
layers' forward GEMMs. Also checks that one epoch with and without the cache gives
the same weights (same seed, same batch order).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from common import Row, Scenario, measure, ratio
from contenders import GraftnetFit, TensorLoop, torch_mlp
from flops import dense_epoch_bound, dense_forward_bound
from keras_side import KerasEpoch

BASE_HIDDEN = [300, 50, 50, 50, 50]
NEW = [784, 300, 50, 50, 20, 10]  # flatten, hidden1..3 (reused), hidden4 (new), outputs (new)
CUT = 2  # hidden1-2 frozen
BATCH = 200


def grafted_model() -> Any:
    """``graft(base, reuse="hidden[123]", head=[Dense(20, relu), Dense(10)], freeze="hidden[12]")``."""
    from graftnet.layers import Dense
    from graftnet.network import Network

    base = Network.mlp((1, 28, 28), BASE_HIDDEN, 10, name="base")
    try:
        from graftnet.transfer import graft
    except ImportError:  # the same layers built by hand (an interpreter without tomllib, say)
        specs = [base.spec_of(n) for n in ("flatten", "hidden1", "hidden2", "hidden3")]
        net = Network(specs + [Dense(20, "relu", init="he_normal", name="hidden4"), Dense(10, name="outputs")],
                      (1, 28, 28), name="base-graft")
        for n in ("hidden1", "hidden2", "hidden3"):
            net.layer(n).load_state_dict(base.layer(n).state_dict())
        return net.freeze("hidden[12]")
    return graft(base, reuse="hidden[123]", head=[Dense(20, "relu", init="he_normal"), Dense(10)],
                 freeze="hidden[12]")


def _frozen_torch() -> torch.nn.Module:
    model = torch_mlp(NEW)
    for layer in (model[1], model[3]):  # hidden1, hidden2
        for p in layer.parameters():
            p.requires_grad_(False)
    return model


def _hidden2_features(x: torch.Tensor) -> torch.Tensor:
    lower = torch_mlp(NEW)[:5]  # flatten, hidden1, relu, hidden2, relu
    with torch.inference_mode():
        return lower(x).clone()  # (N, 50)


def same_weights_check(data: Any, device: torch.device) -> float:
    """Max |difference| of the weights after one epoch with and without the cache."""
    from graftnet.train import fit

    a = grafted_model()
    b = copy.deepcopy(a)
    fit(a, data, epochs=1, batch_size=BATCH, optimizer="sgd", lr=0.01, seed=123, cache=True, verbose=False,
        device=device)
    fit(b, data, epochs=1, batch_size=BATCH, optimizer="sgd", lr=0.01, seed=123, cache=False, verbose=False,
        device=device)
    sb = b.state_dict()
    return max(float((v - sb[k]).abs().max()) for k, v in a.state_dict().items())


def twenty_epochs(data: Any, device: torch.device) -> tuple[float, float]:
    """Wall time of a whole 20-epoch ``fit`` call (cache build, set-up, training) with the fused
    step and with autograd, same model and seed."""
    import time

    from graftnet.train import fit

    walls = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = grafted_model()
        t0 = time.perf_counter()
        fit(model, data, epochs=20, batch_size=BATCH, optimizer="sgd", lr=0.01, seed=5, verbose=False,
            device=device, fused=fused, cache=True)
        walls.append(round(time.perf_counter() - t0, 3))
    return walls[0], walls[1]


def scenarios(ctx: Any) -> list[Scenario]:
    no_valid, _ = ctx.fashion()
    x, y = no_valid.train.x, no_valid.train.y
    n = len(x)
    s = Scenario("frozen_b200", f"(b) 11.2.4 frozen hidden1-2, batch {BATCH}, {n:,} images, {ctx.device.type}",
                 reference="torch tensor loop, requires_grad=False")
    features = _hidden2_features(x)
    fit_kw = {"optimizer": "sgd", "lr": 0.01}
    contenders = [
        TensorLoop("torch tensor loop, requires_grad=False", _frozen_torch, x, y, batch=BATCH, device=ctx.device),
        TensorLoop("torch tensor loop on hidden2 output", lambda: torch_mlp(NEW[2:], flatten=False), features, y,
                   batch=BATCH, device=ctx.device, note="features precomputed once, not timed"),
        GraftnetFit("graftnet fit, cached", grafted_model, no_valid, batch=BATCH, device=ctx.device, cache=True,
                    **fit_kw),
        GraftnetFit("graftnet fit, cached, autograd", grafted_model, no_valid, batch=BATCH, device=ctx.device,
                    cache=True, fused=False, note="fused=False: the autograd step", **fit_kw),
        GraftnetFit("graftnet fit, cache=False", grafted_model, no_valid, batch=BATCH, device=ctx.device,
                    cache=False, **fit_kw),
    ]
    if ctx.threads > 1 and ctx.device.type == "cpu":
        contenders.append(GraftnetFit("graftnet fit, cached, 1 thread", grafted_model, no_valid, batch=BATCH,
                                      device=ctx.device, cache=True, threads=1,
                                      note="1 intra-op thread while the tiny cached head trains", **fit_kw))
    if ctx.device.type == "cpu":
        ctx.keras_load("fashion", x.squeeze(1).numpy(), y.numpy())
        contenders.append(KerasEpoch("keras fit, trainable=False", ctx.keras,
                                     {"op": "mlp", "hidden": NEW[1:-1], "outputs": 10, "frozen": CUT, "lr": 0.01},
                                     "fashion", BATCH, why=ctx.keras_why))
    else:
        contenders.append(GraftnetFit("graftnet fit, cached, bf16", grafted_model, no_valid, batch=BATCH,
                                      device=ctx.device, cache=True, precision="bf16", **fit_kw))
        contenders.append(TensorLoop("torch loop on hidden2 output, bf16", lambda: torch_mlp(NEW[2:], flatten=False),
                                     features, y, batch=BATCH, device=ctx.device, precision="bf16"))
    ctx.log(s.title)
    s.rows = measure(contenders, ctx.passes, log=ctx.log)
    cached = dense_epoch_bound(NEW[2:], n, BATCH, ctx.device, peak=ctx.peak())
    frozen_fwd = dense_forward_bound(NEW[:3], n, BATCH, ctx.device)
    s.rows.append(Row("matmul-shape bound, cached step", [cached["shape_bound_s"]], bound=True,
                      note="hidden3, hidden4, outputs: forward + backward GEMMs"))
    s.rows.append(Row("matmul-shape bound, uncached step", [cached["shape_bound_s"] + frozen_fwd["seconds"]],
                      bound=True, note="plus hidden1-2 forward GEMMs"))
    s.figures["cached step GEMMs"] = cached["gemms"]
    s.figures["gflop per epoch: cached / uncached"] = (round(cached["gflop"], 3),
                                                       round(cached["gflop"] + frozen_fwd["gflop"], 3))
    steps = cached["steps"]
    for name in ("graftnet fit, cached", "graftnet fit, cached, autograd", "graftnet fit, cached, 1 thread",
                 "torch tensor loop on hidden2 output"):
        med = s.median(name)
        if med is not None:
            s.figures[f"{name}: us per step"] = round(med / steps * 1e6, 1)
    s.figures["matmul-shape bound, cached: us per step"] = round(cached["shape_bound_s"] / steps * 1e6, 1)
    if ctx.device.type == "cpu" and not ctx.quick:  # issue 17: no compile step to amortise, end to end
        s.figures["20-epoch fit wall (s): fused, autograd"] = twenty_epochs(no_valid, ctx.device)
    try:
        s.figures["max |w(cache) - w(no cache)| after 1 epoch"] = same_weights_check(no_valid, ctx.device)
    except Exception as err:
        s.notes.append(f"same-weights check failed: {type(err).__name__}: {err}")
    gn, gn_off = s.median("graftnet fit, cached"), s.median("graftnet fit, cache=False")
    s.target("graftnet cache=False / cached (speed-up)", ratio(gn_off, gn), 4.0, better="higher")
    keras = s.median("keras fit, trainable=False")
    if keras is not None:
        s.target("keras trainable=False / graftnet cached (speed-up)", ratio(keras, gn), 10.0, better="higher")
    one = s.median("graftnet fit, cached, 1 thread")
    if one is not None:
        s.figures["1 thread: cache=False / cached (speed-up)"] = round(ratio(gn_off, one) or 0, 2)
    s.target("graftnet cached / cached-step bound", ratio(gn, cached["shape_bound_s"]), 2.0)  # issue 17
    s.figures["graftnet cached, autograd / cached-step bound"] = round(
        ratio(s.median("graftnet fit, cached, autograd"), cached["shape_bound_s"]) or 0, 2)
    s.figures["graftnet cached / torch loop on hidden2 output"] = round(
        ratio(gn, s.median("torch tensor loop on hidden2 output")) or 0, 3)
    return [s]
