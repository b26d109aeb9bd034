"""graftnet.flops: the count equals what PyTorch's own FLOP counter sees in a training step."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from graftnet.cache import cache_cut
from graftnet.flops import forward_flops, training_flops
from graftnet.layers import Conv2d, Dense, Flatten, MaxPool
from graftnet.network import Network


def _measured_step(model: Network, x: torch.Tensor, start: int) -> int:
    """FLOPs PyTorch counts (matmuls and convolutions, forward and backward) in one step from
    layer ``start`` on, the input being the cached output of the layers below."""
    with torch.no_grad():
        features = model(x, stop=start) if start else x
    with FlopCounterMode(display=False) as counter:
        model(features, start=start).square().sum().backward()
    return counter.get_total_flops()


def _cnn() -> Network:
    torch.manual_seed(0)
    return Network([Conv2d(4, 3, padding="same", activation="relu", name="conv1"), MaxPool(2, name="pool1"),
                    Conv2d(8, 3, activation="relu", name="conv2"), Flatten(name="flatten"),
                    Dense(16, "relu", name="hidden"), Dense(3, name="outputs")], (1, 12, 12))


@pytest.mark.parametrize("freeze", [None, "hidden1", "hidden[12]", "hidden[123]"])
def test_mlp_step_equals_torch_flop_counter(freeze):
    torch.manual_seed(0)
    model = Network.mlp(20, [32, 16, 8], 3)
    if freeze:
        model.freeze(freeze)
    start = cache_cut(model)
    x = torch.randn(5, 20)
    assert training_flops(model, start).per_example * 5 == _measured_step(model, x, start)


@pytest.mark.parametrize("freeze", [None, "conv1", "conv[12]"])
def test_cnn_step_equals_torch_flop_counter(freeze):
    model = _cnn()
    if freeze:
        model.freeze(freeze)
    start = cache_cut(model)
    x = torch.randn(3, 1, 12, 12)
    assert training_flops(model, start).per_example * 3 == _measured_step(model, x, start)


def test_frozen_layers_above_the_cut_run_forward_only():
    # the cache is off: hidden1 runs forward at every step but needs no gradient at all
    torch.manual_seed(0)
    model = Network.mlp(20, [32, 16], 3).freeze("hidden1")
    x = torch.randn(4, 20)
    step = training_flops(model, start=0)
    assert step.cache_build == 0
    assert step.per_example * 4 == _measured_step(model, x, start=0)
    assert step.per_example - training_flops(model, start=1).per_example == 2 * 20 * 32


def test_forward_counts_by_hand():
    model = _cnn()
    # conv1: 2*9*1*4 per output position, 12x12 ('same'); conv2: 2*9*4*8 at 4x4 (valid, on 6x6); dense 2*in*out
    assert forward_flops(model) == [2 * 9 * 4 * 144, 0, 2 * 9 * 4 * 8 * 16, 0, 2 * 128 * 16, 2 * 16 * 3]
    model.freeze("conv1")
    step = training_flops(model, cache_cut(model))
    assert step.start == 2 and step.cache_build == 2 * 9 * 4 * 144


def test_docstring_examples_run():
    import doctest

    import graftnet.flops

    results = doctest.testmod(graftnet.flops)
    assert results.failed == 0 and results.attempted >= 3
