"""Train several copies of one architecture together: the seeds of a study's variant.

A study trains the same few architectures hundreds of times on tiny datasets (model B: 200
images, 7 steps an epoch), so each run is mostly set-up and per-step overhead. Here the S
seeds of one variant train as one *batched ensemble*: their weights are stacked (S, out, in),
each step gathers every member's own batch (its own drawn data, its own batch order) and runs
``graftnet.fused.FusedDenseStep`` once for all S, with batched GEMMs.

Each member is trained exactly as ``FineTune(stages).fit(model, data, seed=seed, ...)`` would
train it alone: the same stage seeds, fresh layers drawn from them, the same batch orders
(one generator per member), the same cache cut and cached features, the same learning rates;
validation and the History rows are computed by ``fit``'s own helpers from the member's
weights. The batched GEMMs compute each member's slice as a one-member step does, so the
weights agree with a serial run to float rounding (the tests compare).

What an ensemble cannot train (not a Dense chain above the cache, an optimizer other than
plain SGD, schedules, early stopping, augmentation) is refused with the reason
(:class:`EnsembleUnavailable`); the study then trains those runs one by one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from graftnet.errors import GraftnetError

__all__ = ["EnsembleUnavailable", "fit_stages_together"]


class EnsembleUnavailable(GraftnetError):
    """These runs cannot train as one batched ensemble (the message says why)."""


def _sgd_settings(spec: Any) -> tuple[float, float]:
    from graftnet.optim import SGD

    if not isinstance(spec, SGD):
        raise EnsembleUnavailable(f"optimizer {type(spec).__name__} (an ensemble trains with plain SGD only)")
    if spec.nesterov or spec.weight_decay:
        raise EnsembleUnavailable("SGD with Nesterov momentum or weight decay")
    return float(spec.lr), float(spec.momentum)


def fit_stages_together(models: Sequence[Any], datas: Sequence[Any], seeds: Sequence[int], stages: Sequence[Any], *,
                        batch_size: int, optimizer: Any, cache: bool = True, device: Any = None,
                        metrics: Sequence[str] = ("accuracy",)) -> tuple[list[Any], list[dict[str, Any]]]:
    """Train ``models[k]`` on ``datas[k]`` with seed ``seeds[k]`` through ``stages``
    (``graftnet.transfer.Stage``), all members at once; returns one History per member and
    what each member's cache look-ups did (hits, misses, build seconds).

    Raises :class:`EnsembleUnavailable` before any step when the members cannot train
    together; by then a stage may have frozen or freshly drawn layers of the models, so train
    new ones alone (the study rebuilds each run's model from its seed).
    """
    from graftnet.optim import optimizer_from
    from graftnet.train import History, default_device

    if not models or not (len(models) == len(datas) == len(seeds)):
        raise EnsembleUnavailable("needs one dataset and one seed per model")
    device = torch.device(device) if device else default_device()
    if device.type != "cpu":
        raise EnsembleUnavailable(f"the fused ensemble runs on CPUs (device {device})")
    sizes = {len(d.train) for d in datas}
    if len(sizes) != 1:
        raise EnsembleUnavailable(f"members with different training-set sizes {sorted(sizes)}")
    for stage in stages:
        if stage.schedule is not None or stage.lr_mult or stage.layer_decay or stage.batch_size not in (None,
                                                                                                      batch_size):
            raise EnsembleUnavailable(f"stage {stage.name!r} sets a schedule, lr_mult, layer_decay or batch size")
        _sgd_settings(optimizer_from(stage.optimizer or optimizer, stage.lr))
    histories = [History() for _ in models]
    cache_use = [{"hits": 0, "misses": 0, "build_seconds": 0.0} for _ in models]
    for i, stage in enumerate(stages):
        _fit_stage(i, stage, models, datas, seeds, histories, cache_use, batch_size=batch_size, optimizer=optimizer,
                   cache=cache, device=device, metrics=metrics)
    return histories, cache_use


def _fit_stage(i: int, stage: Any, models: Sequence[Any], datas: Sequence[Any], seeds: Sequence[int],
               histories: list[Any], cache_use: list[dict[str, Any]], *, batch_size: int, optimizer: Any, cache: bool, device: torch.device,
               metrics: Sequence[str]) -> None:
    from graftnet import distributed
    from graftnet.cache import default_cache
    from graftnet.fused import FusedDenseStep, _Layer, chain_layers, check_head
    from graftnet.optim import optimizer_from
    from graftnet.train import _metric_names, _outputs, _prepare, _scores, _seed_new_layers

    name = stage.name or f"stage-{i + 1}"
    lr, momentum = _sgd_settings(optimizer_from(stage.optimizer or optimizer, stage.lr))
    for model in models:
        stage.apply(model)
    if cache:  # refuse before anything is computed where the layers above the cut have no fused form
        from graftnet.cache import cache_cut

        found, _, why = chain_layers(models[0], cache_cut(models[0]))
        if why:
            raise EnsembleUnavailable(why)
    if stage.epochs <= 0:
        for model, seed in zip(models, seeds):  # fit(epochs=0) still draws the new layers
            torch.manual_seed(seed + i)
            _seed_new_layers(model, seed + i)
        return
    runs, generators = [], []
    quiet = lambda _line: None  # noqa: E731
    for k, (model, data, seed) in enumerate(zip(models, datas, seeds)):  # what fit(..., seed=seed + i) does first
        s = seed + i
        torch.manual_seed(s)
        _seed_new_layers(model, s)
        generator = torch.Generator().manual_seed(s)
        before = default_cache().stats() if cache else None
        run = _prepare(model, data, device, cache, None, metrics, quiet, None, distributed.World(), None, generator)
        if before is not None:
            after = default_cache().stats()
            for key in ("hits", "misses", "build_seconds"):
                cache_use[k][key] += after[key] - before[key]
        model.info.update(task=data.task, classes=list(data.classes) if data.classes else None,
                          output_activation=run.act, data_name=data.name)
        runs.append(run)
        generators.append(generator)
    first = runs[0]
    if len({r.start for r in runs}) != 1:
        raise EnsembleUnavailable("the members' cache cuts differ")
    found, _, why = chain_layers(models[0], first.start)
    why = why or check_head(first.task, [f[2] for f in found], found[-1][1].weight.shape[0])
    if why:
        raise EnsembleUnavailable(why)
    if any(m.has_constraints() for m in models) or any((getattr(f[1].spec, "l1", 0) or getattr(f[1].spec, "l2", 0))
                                                       for f in found):
        raise EnsembleUnavailable("max-norm constraints or l1/l2 penalties")

    layers = []
    for name_, module, kind, param in found:  # stacked copies: (S, out, in), (S, out, 1)
        weights = torch.stack([m.layer(name_).weight.detach() for m in models])
        bias = (torch.stack([m.layer(name_).bias.detach() for m in models]).unsqueeze(2)
                if module.bias is not None else None)
        layer = _Layer(name_, weights, bias, kind, param, module.weight.requires_grad,
                       module.bias is not None and module.bias.requires_grad)
        layer.group = {"lr": lr, "momentum": momentum}
        if momentum:  # a fresh optimizer per stage, as fit builds one: zero buffers (torch's first step: buf = grad)
            layer.buf_w = torch.zeros_like(weights) if layer.train_w else None
            layer.buf_b = torch.zeros_like(bias) if layer.train_b and bias is not None else None
        layers.append(layer)
    step = FusedDenseStep(layers, first.task, fold=True)

    count, n = len(models), len(first.x)
    x = torch.stack([r.x.reshape(n, -1) for r in runs]).reshape(count * n, -1)  # (S*N, F): members side by side
    y = torch.stack([r.y for r in runs]).reshape(count * n, *first.y.shape[1:])
    offsets = (torch.arange(count) * n).unsqueeze(1)  # (S, 1): where each member's examples start
    steps = -(-n // batch_size)
    batches = [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]
    weights_of = torch.tensor([float(hi - lo) for lo, hi in batches])
    predicting = "accuracy" in _metric_names(first.task, metrics) and first.task != "regression"
    epoch_base = len(histories[0].epochs)
    description = (f"fused ensemble step over {found[0][0]}..{found[-1][0]} ({len(found)} layers, {count} members, "
                   f"fused SGD update)")
    for history in histories:
        history.steps.append(description)
    for epoch in range(stage.epochs):
        t0 = time.perf_counter()
        perms = torch.stack([torch.randperm(n, generator=g) for g in generators])  # (S, N): each member's order
        flat = perms + offsets
        losses = torch.zeros(count, steps)
        preds = torch.empty(count, n, dtype=torch.long if first.task == "multiclass" else torch.bool)
        for k, (lo, hi) in enumerate(batches):
            idx = flat[:, lo:hi].reshape(-1)
            xb = x.index_select(0, idx).view(count, hi - lo, -1)
            yb = y.index_select(0, idx).view(count, hi - lo, *first.y.shape[1:])
            loss, _ = step(xb, yb)
            losses[:, k] = loss
            if predicting:
                step.predict_into(preds[:, lo:hi])
        seconds = (time.perf_counter() - t0) / count
        with torch.no_grad():
            loss_sums = (losses * weights_of).sum(1)
            for k, model in enumerate(models):
                for layer in layers:  # the member's weights back into its model
                    module = model.layer(layer.name)
                    module.weight.copy_(layer.weight[k])
                    if layer.bias is not None:
                        module.bias.copy_(layer.bias[k, :, 0])
        for k, (model, run, history) in enumerate(zip(models, runs, histories)):
            if not bool(torch.isfinite(loss_sums[k])):
                raise EnsembleUnavailable(f"member {k} (seed {seeds[k]}): the loss became non-finite in epoch "
                                          f"{epoch + 1}; train it alone, where fit puts back its last good weights")
            t1 = time.perf_counter()
            row = {"epoch": epoch_base + epoch + 1, "stage": name, "loss": (loss_sums[k] / n).item()}
            if "accuracy" in run.metrics:
                labels = run.y.index_select(0, perms[k])
                correct = (preds[k] == (labels if run.task == "multiclass" else labels > 0.5)).sum()
                row["accuracy"] = (correct / n).item()
            if run.vx is not None:
                vout = _outputs(model, run.vx, None, device, start=run.start)
                row.update({f"val_{key}": v for key, v in _scores(model, run.task, vout, run.vy,
                                                                  run.metrics).items()})
            row["lr"] = lr
            row["seconds"] = round(seconds + time.perf_counter() - t1, 4)
            if epoch == 0 and run.cache_info:
                row.update(run.cache_info)
            row["ensemble"] = count
            history.epochs.append(row)
