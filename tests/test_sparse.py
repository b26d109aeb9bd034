"""Sparse models: pruning to a target sparsity, masks that hold during training, saved zeros."""

from __future__ import annotations

import json

import pytest
import torch

import graftnet as gn
from graftnet.errors import ConfigError
from graftnet.sparse import PruneDuring, format_sparsity, prune, remove_masks, sparsity_report


@pytest.fixture(scope="module")
def data():
    return gn.datasets.digits()


def _model(data, seed=0):
    torch.manual_seed(seed)
    return gn.Network.mlp(data.input_shape, [40, 20], data.n_classes)


def test_prune_zeroes_the_smallest_weights_of_each_layer(data):
    model = _model(data)
    w = model.layer("hidden1").weight.detach().clone()
    report = prune(model, 0.75)
    pruned = model.layer("hidden1").weight.detach()
    kept = pruned != 0
    assert report["layers"]["hidden1"] == pytest.approx(0.75, abs=1 / w.numel())
    assert w.abs()[kept].min() >= w.abs()[~kept].max()  # what survives is the largest in magnitude
    assert torch.equal(pruned[kept], w[kept])
    assert set(report["layers"]) == {"hidden1", "hidden2", "outputs"}
    assert "all" in format_sparsity(report) and "75.0%" in format_sparsity(report)


def test_global_scope_ranks_all_layers_together(data):
    model = _model(data)
    with torch.no_grad():
        model.layer("hidden2").weight.mul_(0.01)  # far smaller weights: they go first
    report = prune(model, 0.3, scope="global")
    assert report["overall"] == pytest.approx(0.3, abs=0.01)
    assert report["layers"]["hidden2"] == 1.0 and report["layers"]["hidden1"] < 0.3


def test_pruned_weights_stay_zero_while_training_with_adam_and_the_save_keeps_them(data, tmp_path):
    model = _model(data)
    prune(model, 0.8)
    zero = model.layer("hidden1").weight == 0
    gn.fit(model, data, epochs=2, batch_size=64, optimizer=gn.Adam(lr=1e-2), seed=0, verbose=False)
    weight = model.layer("hidden1").weight
    assert (weight[zero] == 0).all() and (weight[~zero] != 0).any()
    gn.save_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta["sparsity"]["layers"]["hidden1"] == pytest.approx(0.8, abs=0.01)
    loaded = gn.load_model(tmp_path / "m")
    assert sparsity_report(loaded) == meta["sparsity"]
    assert torch.equal(loaded.layer("hidden1").weight, weight)


def test_prune_during_training_follows_the_cubic_schedule(data):
    schedule = PruneDuring(0.9, start_epoch=1, end_epoch=3)
    assert [round(schedule.target(e), 4) for e in (1, 2, 3, 4)] == [0.0, 0.7875, 0.9, 0.9]
    model = _model(data)
    history = gn.fit(model, data, epochs=3, batch_size=64, optimizer=gn.SGD(lr=0.1, momentum=0.9), seed=0,
                     verbose=False, callbacks=[schedule])
    assert history.epochs[-1]["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert sparsity_report(model)["layers"]["hidden2"] == pytest.approx(0.9, abs=0.01)
    remove_masks(model)
    assert not model.has_constraints()


def test_prune_errors_say_what_was_given(data):
    model = _model(data)
    with pytest.raises(ConfigError, match=r"sparsity must be in \[0, 1\), got 1.5"):
        prune(model, 1.5)
    with pytest.raises(ConfigError,
                       match="prune: flatten have no kernel to prune; layers with one are hidden1, hidden2, outputs"):
        prune(model, 0.5, "flatten")
