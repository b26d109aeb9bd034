"""Counting the floating-point operations a training step really runs.

A frozen prefix whose output is cached runs once, not at every step; a frozen layer
above the cut runs forward only; the lowest layer that trains needs no gradient of its
input. Counting that gives a deterministic measure of training compute to put variants
on an equal footing (a study's ``budget = "compute"``), unlike seconds on a shared CPU.

The count (per example):

- a Dense layer does ``2 · in · out`` FLOPs forward (one multiply and one add per weight),
  a Conv2d ``2 · (k_h · k_w · c_in / groups) · c_out · H_out · W_out``; layers without a
  weight matrix or kernel (activations, BatchNorm, pooling, dropout, flatten), biases and
  the loss are elementwise and not counted (under 1 % of an MLP's or a CNN's matmuls);
- backward, a layer whose weights train computes its weight gradient (as many FLOPs as
  its forward), and every counted layer above the lowest layer that trains computes the
  gradient of its input (as many again): scratch costs 3x its forward but for the first
  layer's input gradient;
- the layers below the cache cut run once per training example when the cache is built
  (``cache_build``), then never per step.

    >>> from graftnet.network import Network
    >>> net = Network.mlp(784, [300, 100], 10)
    >>> training_flops(net).per_example      # 2*(784*300 + 300*100 + 100*10) * 3 - 2*784*300
    1126800
    >>> step = training_flops(net.freeze("hidden1"), start=1)   # hidden1 cached
    >>> step.forward, step.backward, step.cache_build           # hidden2 needs no input gradient
    (62000, 64000, 470400)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from graftnet.network import Network

__all__ = ["StepFlops", "forward_flops", "training_flops"]


def forward_flops(model: Network) -> list[int]:
    """Forward FLOPs per example of each layer of ``model.layer_names``, in network order (0 for
    elementwise layers); the layers of a nested block (``vgg16/block1_conv1``) count one by one."""
    return [_layer_flops(model.layer(name), model.shape_of(name)) for name in model.layer_names]


def _layer_flops(module: nn.Module, out_shape: tuple[int, ...]) -> int:
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.Linear) and weight is not None:
        positions = math.prod(out_shape) // module.out_features  # 1 for (out,), more for a Dense on (.., in)
        return 2 * weight.numel() * positions
    if isinstance(module, nn.Conv2d) and weight is not None:
        # weight (c_out, c_in/groups, k_h, k_w); out_shape (c_out, H_out, W_out)
        return 2 * weight.numel() * math.prod(out_shape[1:])
    return 0


@dataclass(frozen=True)
class StepFlops:
    """What one training example costs at one step, and once for the cache.

    ``forward``/``backward``: FLOPs per example per step; ``per_example`` their sum;
    ``cache_build``: FLOPs per example, once, for the cached layers below ``start``.
    """

    forward: int
    backward: int
    cache_build: int
    start: int

    @property
    def per_example(self) -> int:
        return self.forward + self.backward

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"per_example": self.per_example}


def training_flops(model: Network, start: int = 0) -> StepFlops:
    """FLOPs of one training step per example when layers from ``start`` on run at each
    step (``start`` is the cache cut: ``graftnet.cache.cache_cut``) and the parameters
    that train are those with ``requires_grad`` (the model's freeze state)."""
    flops = forward_flops(model)
    modules = [model.layer(name) for name in model.layer_names]
    trains = [any(p.requires_grad for p in m.parameters()) for m in modules]
    lowest = next((i for i in range(start, len(modules)) if trains[i]), len(modules))
    forward = sum(flops[start:])
    weight_grads = sum(f for f, t in zip(flops[start:], trains[start:]) if t)
    input_grads = sum(flops[lowest + 1:])  # layers above the lowest trainable one pass gradients down
    return StepFlops(forward=forward, backward=weight_grads + input_grads, cache_build=sum(flops[:start]),
                     start=start)
