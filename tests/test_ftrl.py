"""FTRL-Proximal: graftnet's torch optimizer against TensorFlow's Ftrl."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import graftnet as gn
from graftnet.errors import ConfigError
from graftnet.optim import FtrlProximal, optimizer_from

FIXTURE = Path(__file__).parent / "fixtures" / "tf" / "ftrl"
KW = {"learning_rate_power": "learning_rate_power", "initial_accumulator_value": "initial_accumulator_value",
      "l1_regularization_strength": "l1", "l2_regularization_strength": "l2",
      "l2_shrinkage_regularization_strength": "l2_shrinkage", "beta": "beta"}


def _torch_steps(settings: dict, w0: np.ndarray, grads: np.ndarray) -> np.ndarray:
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = FtrlProximal([w], lr=settings["learning_rate"], **{KW[k]: v for k, v in settings.items() if k in KW})
    out = []
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
        out.append(w.detach().numpy().copy())
    return np.stack(out)


def _cases():
    manifest = json.loads((FIXTURE / "manifest.json").read_text())
    return sorted(manifest["cases"].items())


@pytest.mark.parametrize(("name", "settings"), _cases(), ids=[c[0] for c in _cases()])
def test_ftrl_matches_tensorflow(name, settings):
    """Five steps of every case equal what TensorFlow 2.21 computed (its kernel, or Keras' Ftrl)."""
    data = np.load(FIXTURE / "ftrl_steps.npz", allow_pickle=False)
    ours = _torch_steps(settings, data["w0"], data["grads"])
    np.testing.assert_allclose(ours, data[f"{name}/weights"], rtol=2e-5, atol=2e-6)
    if settings["l1_regularization_strength"] >= 0.1:  # the small-gradient weights sit at exactly zero
        assert (ours[:, :2] == 0).all()


def _closed_form(w, g, n, z, lr, power, l1, l2, shrink, beta):
    """TensorFlow's documented FTRL update, written out independently (float64)."""
    n_new = n + g * g
    z = z + (g + 2 * shrink * w) - (n_new ** -power - n ** -power) / lr * w
    quadratic = n_new ** -power / lr + 2 * (l2 + beta / (2 * lr))
    w = np.where(np.abs(z) > l1, (np.sign(z) * l1 - z) / quadratic, 0.0)
    return w, n_new, z


def test_ftrl_matches_the_closed_form_on_a_matrix():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3))
    setting = dict(lr=0.2, power=-0.6, l1=0.05, l2=0.1, shrink=0.02, beta=0.3)
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = FtrlProximal([w], lr=0.2, learning_rate_power=-0.6, initial_accumulator_value=0.3, l1=0.05, l2=0.1,
                       l2_shrinkage=0.02, beta=0.3)
    ref, n, z = w0.copy(), np.full_like(w0, 0.3), np.zeros_like(w0)
    for _ in range(4):
        g = rng.normal(size=w0.shape)
        w.grad = torch.tensor(g)
        opt.step()
        ref, n, z = _closed_form(ref, g, n, z, **setting)
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(opt.state[w]["accumulator"].numpy(), n, rtol=1e-12)


def test_ftrl_spec_builds_from_a_recipe_name_and_l1_makes_a_sparser_model():
    spec = optimizer_from({"type": "ftrl", "lr": 0.5, "l1_regularization_strength": 0.005})
    assert spec == gn.Ftrl(lr=0.5, l1_regularization_strength=0.005)
    assert spec.to_dict()["type"] == "ftrl"
    data = gn.datasets.digits()
    zeros = {}
    for l1 in (0.0, 0.005):
        model = gn.Network.mlp(data.input_shape, [32], data.n_classes)
        gn.fit(model, data, epochs=2, batch_size=64, optimizer=gn.Ftrl(lr=0.5, l1_regularization_strength=l1),
               seed=0, verbose=False)
        zeros[l1] = float((model.layer("hidden1").weight == 0).float().mean())
        assert gn.evaluate(model, data)["accuracy"] > 0.5
    assert zeros[0.005] > zeros[0.0] + 0.03  # l1 sets more weights exactly to zero


def test_ftrl_state_round_trips_and_bad_settings_are_named():
    w = torch.nn.Parameter(torch.ones(3))
    opt = FtrlProximal([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    again = FtrlProximal([w], lr=0.1)
    again.load_state_dict(opt.state_dict())
    assert torch.equal(again.state[w]["linear"], opt.state[w]["linear"])
    with pytest.raises(ConfigError, match=r"l1=-1.*out of range"):
        FtrlProximal([w], lr=0.1, l1=-1)
    with pytest.raises(ConfigError, match="unknown setting.*'l1'.*l1_regularization_strength"):
        optimizer_from({"type": "ftrl", "l1": 0.1})
