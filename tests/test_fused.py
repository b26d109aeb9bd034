"""The fused Dense-chain step (graftnet.fused) trains what autograd trains, to float rounding.

Each test trains the same model twice from the same weights and seed on real Fashion-MNIST
images, once with ``fused=False`` (autograd) and once fused, and compares the weights and the
History. Where the fused step does not apply, ``fit`` says why (log and History), and
``fused=True`` is an error that names the reason.
"""

from __future__ import annotations

import copy

import pytest
import torch

import graftnet as gn
from graftnet.data import Dataset, Split
from graftnet.errors import ConfigError
from graftnet.layers import Dense, Dropout
from graftnet.network import Network
from graftnet.optim import SGD, Adam, RMSprop
from graftnet.train import fit


def _mlp(*args, seed: int, **kw) -> Network:
    torch.manual_seed(seed)
    return Network.mlp(*args, **kw)


def _net(specs, input_shape, seed: int) -> Network:
    torch.manual_seed(seed)
    return Network(specs, input_shape)


def _small(data: Dataset, n: int = 600, valid: int = 200) -> Dataset:
    return Dataset(data.name, data.train.head(n), data.valid.head(valid), data.test.head(valid), data.classes,
                   data.task, data.source)


@pytest.fixture(scope="module")
def fashion_small(fashion):
    return _small(fashion)


@pytest.fixture(scope="module")
def fashion_binary(fashion):
    two = fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt")
    return _small(two, 400, 100)


def _twins(net: Network, data: Dataset, **kw) -> tuple[Network, Network, gn.History, gn.History]:
    eager, fused = copy.deepcopy(net), copy.deepcopy(net)
    kw = {"epochs": 2, "batch_size": 50, "seed": 3, "verbose": False, **kw}
    h_eager = fit(eager, data, fused=False, **kw)
    h_fused = fit(fused, data, fused=True, **kw)
    return eager, fused, h_eager, h_fused


def _max_diff(a: Network, b: Network) -> float:
    sb = b.state_dict()
    return max(float((v - sb[k]).abs().max()) for k, v in a.state_dict().items())


def _assert_same_training(eager, fused, h_eager, h_fused, tol=2e-5):
    assert _max_diff(eager, fused) < tol
    for r_eager, r_fused in zip(h_eager.epochs, h_fused.epochs, strict=True):
        assert r_fused["loss"] == pytest.approx(r_eager["loss"], rel=1e-4)
        assert r_fused["accuracy"] == pytest.approx(r_eager["accuracy"], abs=2.5e-3)  # at most one example
        assert r_fused["val_loss"] == pytest.approx(r_eager["val_loss"], rel=1e-4)
    assert h_fused.steps[0].startswith("fused Dense-chain step")
    assert h_eager.steps[0] == "autograd (fused=False)"


@pytest.mark.parametrize("activation", ["relu", "selu", "elu", "leaky_relu(0.2)", "tanh", "sigmoid"])
def test_activations_match_autograd(fashion_small, activation):
    net = _mlp((1, 28, 28), [64, 32], 10, activation=activation, seed=1)
    _assert_same_training(*_twins(net, fashion_small, optimizer=SGD(lr=0.05)))


@pytest.mark.parametrize("optimizer", [SGD(lr=0.02, momentum=0.9), SGD(lr=0.02, momentum=0.9, nesterov=True),
                                       Adam(lr=1e-3), RMSprop(lr=1e-3)], ids=["momentum", "nesterov", "adam", "rmsprop"])
def test_optimizers_match_autograd(fashion_small, optimizer):
    net = _mlp((1, 28, 28), [64, 32], 10, seed=2)
    _assert_same_training(*_twins(net, fashion_small, optimizer=optimizer))


def test_logits_output_clipping_penalties_lr_mult_and_max_norm(fashion_small):
    net = _net([gn.layers.Flatten(), Dense(48, "relu", l2=1e-3, l1=1e-4, max_norm=1.0), Dense(24, "elu"),
                   Dense(10)], (1, 28, 28), seed=4)
    _assert_same_training(*_twins(net, fashion_small, optimizer=SGD(lr=0.05, momentum=0.5), clip_norm=0.5,
                                  lr_mult={"dense1": 0.1}, schedule="exponential"))


def test_bias_free_layers_and_a_separate_activation_layer(fashion_small):
    net = _net([gn.layers.Flatten(), Dense(32, bias=False), gn.layers.Activation("tanh"), Dense(16, "relu"),
                Dense(10, bias=False)], (1, 28, 28), seed=12)
    eager, fused, h_eager, h_fused = _twins(net, fashion_small, optimizer=SGD(lr=0.05, momentum=0.9))
    _assert_same_training(eager, fused, h_eager, h_fused)
    assert "dense1..dense3 (3 layers" in h_fused.steps[0]  # the activation layer went into dense1's step
    assert gn.History.from_dict(h_fused.to_dict()).steps == h_fused.steps


def test_softmax_output_with_saturated_examples(fashion_small):
    """A softmax output trains on nll(log(p.clamp_min(1e-12))) as in eager: an example whose
    class probability is below 1e-12 adds no gradient and a loss of -log(1e-12)."""
    net = _mlp((1, 28, 28), [32], 10, output_activation="softmax", seed=11)
    with torch.no_grad():
        net.layer("outputs").weight.mul_(60.0)  # confident and often wrong: p_y < 1e-12 for many examples
    probe = copy.deepcopy(net).eval()
    p = probe(fashion_small.train.x[:200])
    assert (p.gather(1, fashion_small.train.y[:200, None]) < 1e-12).sum() > 10
    _assert_same_training(*_twins(net, fashion_small, optimizer=SGD(lr=1e-3), epochs=1))


def test_binary_sigmoid_and_logits_outputs(fashion_binary):
    for output_activation in ("sigmoid", None):
        net = _net([gn.layers.Flatten(), Dense(32, "selu"), Dense(1, output_activation)], (1, 28, 28), seed=5)
        _assert_same_training(*_twins(net, fashion_binary, optimizer=SGD(lr=0.05), batch_size=32))


def test_regression_output(fashion_small):
    x = fashion_small.train.x.flatten(1)
    target = torch.stack([x.mean(1), x.std(1)], 1)  # each image's brightness and contrast
    vx = fashion_small.valid.x.flatten(1)
    data = Dataset("fashion-stats", Split(x, target), Split(vx, torch.stack([vx.mean(1), vx.std(1)], 1)), None,
                   None, "regression")
    net = _net([Dense(16, "tanh"), Dense(2)], (784,), seed=6)
    eager, fused, h_eager, h_fused = _twins(net, data, optimizer=SGD(lr=0.05), metrics=())
    assert _max_diff(eager, fused) < 1e-5
    assert h_fused.epochs[-1]["loss"] == pytest.approx(h_eager.epochs[-1]["loss"], rel=1e-4)


def test_cached_head_with_frozen_layer_above_the_cut(fashion_small):
    """A graft with hidden1 frozen and cached, hidden2 training, hidden3 reused and frozen
    *inside* the chain (its dX is computed, its weights stay), then a new head."""
    base = _mlp((1, 28, 28), [64, 32, 32], 10, seed=7)
    net = gn.graft(base, reuse="hidden[123]", head=[Dense(20, "relu"), Dense(10)], freeze="hidden[13]")
    eager, fused, h_eager, h_fused = _twins(net, fashion_small, optimizer=SGD(lr=0.05), batch_size=40)
    _assert_same_training(eager, fused, h_eager, h_fused)
    assert h_fused.epochs[0]["cache_cut"] == "hidden1"
    assert torch.equal(fused.layer("hidden3").weight, base.layer("hidden3").weight)  # frozen stays put
    assert not torch.equal(fused.layer("hidden2").weight, base.layer("hidden2").weight)


def test_resume_is_bit_exact(fashion_small, tmp_path):
    net = _mlp((1, 28, 28), [32], 10, seed=8)
    whole = copy.deepcopy(net)
    fit(whole, fashion_small, epochs=3, optimizer=SGD(lr=0.05, momentum=0.9), seed=1, verbose=False)
    part = copy.deepcopy(net)
    fit(part, fashion_small, epochs=2, optimizer=SGD(lr=0.05, momentum=0.9), seed=1, verbose=False,
        checkpoint=tmp_path / "ck")
    again = copy.deepcopy(net)
    fit(again, fashion_small, epochs=3, optimizer=SGD(lr=0.05, momentum=0.9), seed=1, verbose=False,
        checkpoint=tmp_path / "ck", resume=True)
    assert _max_diff(whole, again) == 0.0


def test_what_cannot_be_fused_is_said(fashion_small, capsys):
    net = _net([gn.layers.Flatten(), Dense(32, "relu"), Dropout(0.2), Dense(10)], (1, 28, 28), seed=9)
    with pytest.raises(ConfigError, match=r"fused=True.*layer 'dropout1' \(dropout\) has no fused form"):
        fit(copy.deepcopy(net), fashion_small, epochs=1, fused=True, verbose=False)
    history = fit(copy.deepcopy(net), fashion_small, epochs=1, verbose=True)
    assert history.steps[0].startswith("autograd (layer 'dropout1' (dropout) has no fused form")
    assert "step: autograd (layer 'dropout1'" in capsys.readouterr().err
    colour = _net([gn.layers.Flatten(channels_last=True), Dense(8, "relu"), Dense(10)], (3, 28, 28), seed=9)
    rgb = Dataset("fashion-rgb", Split(fashion_small.train.x.repeat(1, 3, 1, 1), fashion_small.train.y), None, None,
                  fashion_small.classes, "multiclass")
    with pytest.raises(ConfigError, match=r"flattens \(3, 28, 28\) channels-last \(Keras' order\)"):
        fit(colour, rgb, epochs=1, fused=True, verbose=False)
    gelu = _mlp((1, 28, 28), [16], 10, activation="gelu", seed=9)
    with pytest.raises(ConfigError, match="activation GELU, which the fused step does not implement"):
        fit(gelu, fashion_small, epochs=1, fused=True, verbose=False)
