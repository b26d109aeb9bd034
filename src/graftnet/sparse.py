"""Sparse models: magnitude pruning to a target sparsity, during or after training.

Hands-On ML's sparse models come from strong l1 regularisation, from FTRL (``gn.Ftrl`` with
``l1_regularization_strength``) or from setting the smallest weights to zero. graftnet's
pruning keeps a mask per layer and applies it after every optimizer step (as max-norm
constraints are applied), so pruned weights stay exactly zero whatever the optimizer; the
mask itself is not saved, the zeros are, and ``save_model`` records how sparse the model is::

    >>> import graftnet as gn
    >>> net = gn.Network.mlp(20, [50], 3)
    >>> report = prune(net, 0.9)              # 90% of each kernel set to zero
    >>> round(report["layers"]["hidden1"], 2), round(report["overall"], 2)
    (0.9, 0.9)

Sparsity counts the kernels (weights of Dense and convolution layers), not biases.
During training, ``fit(..., callbacks=[PruneDuring(0.9, end_epoch=10)])`` raises the sparsity
along Zhu & Gupta's cubic schedule at each epoch's end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from graftnet.errors import ConfigError, format_names
from graftnet.network import Network, Selector

__all__ = ["prune", "sparsity_report", "format_sparsity", "remove_masks", "PruneDuring"]

MASK = "weight_mask"  # a non-persistent buffer: state dicts and saved models are unchanged


def _kernel_layers(model: Network, layers: Selector | None) -> list[str]:
    weighted = [n for n, m in model.named_layers()
                if isinstance(getattr(m, "weight", None), torch.nn.Parameter) and m.weight.dim() >= 2]
    if layers is None:
        return weighted
    chosen = model.select(layers, what="prune layers")
    without = [n for n in chosen if n not in weighted]
    if without:
        raise ConfigError(f"prune: {format_names(without)} have no kernel to prune; layers with one are "
                          f"{format_names(weighted)}")
    return chosen


def sparsity_report(model: Network) -> dict[str, Any]:
    """The fraction of exactly-zero kernel weights, per layer and overall.

    ``{"overall": 0.9, "zeros": 900, "weights": 1000, "layers": {"hidden1": 0.9, ...}}``
    """
    per_layer, zeros, total = {}, 0, 0
    for name in _kernel_layers(model, None):
        w = model.layer(name).weight
        z = int((w == 0).sum())
        per_layer[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    return {"overall": zeros / total if total else 0.0, "zeros": zeros, "weights": total, "layers": per_layer}


def format_sparsity(report: dict[str, Any]) -> str:
    """The report as a small table: one line per layer, then the total."""
    width = max([len(n) for n in report["layers"]] + [5])
    lines = [f"{'layer':<{width}}  sparsity"]
    lines += [f"{n:<{width}}  {s:8.1%}" for n, s in report["layers"].items()]
    lines.append(f"{'all':<{width}}  {report['overall']:8.1%}  "
                 f"({report['zeros']:,} of {report['weights']:,} weights are 0)")
    return "\n".join(lines)


@torch.no_grad()
def prune(model: Network, sparsity: float, layers: Selector | None = None, *, scope: str = "layer") -> dict[str, Any]:
    """Set the smallest-magnitude kernel weights to zero and keep them there.

    Args:
        sparsity: the fraction of zeros to reach, in [0, 1).
        layers: a selector of layers with kernels (default: every Dense and convolution).
        scope: ``"layer"`` prunes each layer to ``sparsity``; ``"global"`` ranks all chosen
            weights together (layers with smaller weights lose more).

    Weights already zero count towards the target; a mask from an earlier call is kept
    (pruned weights never come back). Returns ``sparsity_report(model)``, which is also
    stored in ``model.info["sparsity"]`` so that ``save_model`` writes it to the metadata.
    """
    if not 0 <= sparsity < 1:
        raise ConfigError(f"prune: sparsity must be in [0, 1), got {sparsity!r}")
    if scope not in ("layer", "global"):
        raise ConfigError(f"prune: scope must be 'layer' or 'global', got {scope!r}")
    names = _kernel_layers(model, layers)
    modules = [model.layer(n) for n in names]
    if scope == "global":
        magnitudes = torch.cat([m.weight.detach().abs().flatten() for m in modules])
        thresholds = [_threshold(magnitudes, sparsity)] * len(modules)
    else:
        thresholds = [_threshold(m.weight.detach().abs().flatten(), sparsity) for m in modules]
    for module, threshold in zip(modules, thresholds):
        keep = module.weight.abs() > threshold
        old = getattr(module, MASK, None)
        mask = keep if old is None else keep & old
        module.register_buffer(MASK, mask, persistent=False)
        module.weight.mul_(mask)
    report = sparsity_report(model)
    model.info["sparsity"] = report
    return report


def _threshold(magnitudes: torch.Tensor, sparsity: float) -> float:
    """The magnitude at or below which ``sparsity`` of the values lie (-1 prunes nothing)."""
    k = math.floor(sparsity * magnitudes.numel())
    if k == 0:
        return -1.0
    return float(magnitudes.kthvalue(k).values)


def remove_masks(model: Network) -> Network:
    """Forget the masks: the zeros stay, but training may move them again."""
    for _, module in model.named_layers():
        if hasattr(module, MASK):
            delattr(module, MASK)
    return model


@dataclass
class PruneDuring:
    """A ``fit`` callback that prunes gradually: sparsity ``s_t = s (1 - (1 - t)^3)``.

    ``t`` runs from 0 at ``start_epoch`` to 1 at ``end_epoch`` (epochs counted from 1 as in
    the History); from then on the sparsity stays at ``sparsity``.

        >>> fit(model, data, epochs=10, callbacks=[PruneDuring(0.9, end_epoch=8)])  # doctest: +SKIP
    """

    sparsity: float
    start_epoch: int = 1
    end_epoch: int = 1
    layers: Selector | Sequence[str] | None = None
    scope: str = "layer"

    def __post_init__(self) -> None:
        if self.end_epoch < self.start_epoch:
            raise ConfigError(f"PruneDuring: end_epoch={self.end_epoch} comes before start_epoch={self.start_epoch}")

    def target(self, epoch: int) -> float:
        if epoch < self.start_epoch:
            return 0.0
        span = self.end_epoch - self.start_epoch
        t = 1.0 if span == 0 else min(1.0, (epoch - self.start_epoch) / span)
        return self.sparsity * (1 - (1 - t) ** 3) if span else self.sparsity

    def __call__(self, row: dict[str, Any], model: Network) -> None:
        target = self.target(int(row["epoch"]))
        if target > 0:
            report = prune(model, target, self.layers, scope=self.scope)
            row["sparsity"] = round(report["overall"], 6)
