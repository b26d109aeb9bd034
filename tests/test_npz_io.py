"""NumPy .npz weights: torch and Keras layouts, round trips, no pickles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graftnet.errors import CheckpointError, ConfigError, ImportFormatError
from graftnet.io.npz import load_npz, read_npz, save_npz
from graftnet.layers import BatchNorm, Conv2d, Dense, Flatten
from graftnet.network import Network


def cnn(seed: int) -> Network:
    torch.manual_seed(seed)
    net = Network([Conv2d(4, 3, activation="relu", name="conv1"), BatchNorm(name="bn1"),
                   Flatten(name="flatten"), Dense(3, name="outputs")], (2, 6, 6), name="cnn")
    with torch.no_grad():
        net.layer("bn1").running_var.uniform_(0.5, 2.0)
    return net.eval()


def outputs(net: Network, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x)


def test_torch_layout_round_trip_keys_and_outputs(tmp_path):
    source, target = cnn(0), cnn(1)
    save_npz(source, tmp_path / "w.npz")
    arrays = np.load(tmp_path / "w.npz", allow_pickle=False)
    assert sorted(arrays.files) == ["bn1/bias", "bn1/num_batches_tracked", "bn1/running_mean", "bn1/running_var",
                                    "bn1/weight", "conv1/bias", "conv1/weight", "outputs/bias", "outputs/weight"]
    assert arrays["conv1/weight"].shape == (4, 2, 3, 3)  # OIHW
    report = load_npz(target, tmp_path / "w.npz")
    assert report.ok and report.transposed == []
    x = torch.randn(5, 2, 6, 6)
    assert torch.equal(outputs(source, x), outputs(target, x))


def test_keras_layout_names_shapes_and_round_trip(tmp_path):
    source, target = cnn(0), cnn(1)
    save_npz(source, tmp_path / "k.npz", layout="keras")
    arrays = read_npz(tmp_path / "k.npz")
    assert sorted(arrays) == ["bn1/beta", "bn1/gamma", "bn1/moving_mean", "bn1/moving_variance",
                              "conv1/bias", "conv1/kernel", "outputs/bias", "outputs/kernel"]
    assert arrays["conv1/kernel"].shape == (3, 3, 2, 4)  # HWIO
    assert arrays["outputs/kernel"].shape == (64, 3)  # (in, out)
    np.testing.assert_array_equal(arrays["conv1/kernel"], source.layer("conv1").weight.detach().permute(2, 3, 1, 0))
    report = load_npz(target, tmp_path / "k.npz", layout="keras")
    assert report.ok and report.transposed == ["conv1.weight", "outputs.weight"]
    x = torch.randn(5, 2, 6, 6)
    assert torch.allclose(outputs(source, x), outputs(target, x), atol=1e-6)


def test_hand_written_npz_with_rename_rules(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "hand.npz", **{"dense_1/weight": rng.normal(size=(4, 3)).astype("float32"),
                                       "dense_1/bias": np.zeros(4, "float32"),
                                       "dense_2/weight": rng.normal(size=(2, 4)).astype("float32"),
                                       "dense_2/bias": np.ones(2, "float32")})
    net = Network.mlp(3, [4], 2)
    report = load_npz(net, tmp_path / "hand.npz", rename=[(r"dense_1/(.*)", r"hidden1/\1"),
                                                           (r"dense_2/(.*)", r"outputs/\1")])
    assert report.ok
    assert torch.equal(net.layer("outputs").bias, torch.ones(2))


def test_missing_and_unexpected_keys_load_nothing(tmp_path):
    np.savez(tmp_path / "partial.npz", **{"hidden1/weight": np.zeros((4, 3), "float32"),
                                          "head/weight": np.zeros((2, 4), "float32")})
    net = Network.mlp(3, [4], 2)
    before = net.layer("hidden1").weight.clone()
    with pytest.raises(CheckpointError, match=r"3 missing, 1 unexpected(.|\n)*missing.*hidden1.bias"):
        load_npz(net, tmp_path / "partial.npz")
    assert torch.equal(net.layer("hidden1").weight, before)
    report = load_npz(net, tmp_path / "partial.npz", strict=False)
    assert report.missing == ["hidden1.bias", "outputs.weight", "outputs.bias"]
    assert report.unexpected == ["head/weight"]


def test_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "objects.npz", w=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ImportFormatError, match=r"objects\.npz holds pickled Python objects, which graftnet will not"):
        load_npz(Network.mlp(3, [4], 2), tmp_path / "objects.npz")


def test_a_single_npy_array_is_not_an_archive(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ImportFormatError, match=r"one\.npy is a single \.npy array, not an \.npz archive"):
        read_npz(tmp_path / "one.npy")


def test_keras_layout_needs_a_network():
    with pytest.raises(ConfigError, match=r"layout='keras' needs a graftnet Network, got Linear"):
        save_npz(torch.nn.Linear(2, 2), "unused.npz", layout="keras")
    with pytest.raises(ConfigError, match=r"layout='tf': expected one of torch, keras"):
        save_npz(Network.mlp(3, [4], 2), "unused.npz", layout="tf")  # type: ignore[arg-type]


def test_any_module_round_trips_in_torch_layout(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.Linear(4, 2)))
    save_npz(module, tmp_path / "m.npz")
    assert sorted(read_npz(tmp_path / "m.npz")) == ["0/bias", "0/weight", "1.0/bias", "1.0/weight"]
    copy = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.Linear(4, 2)))
    assert load_npz(copy, tmp_path / "m.npz").ok
    assert torch.equal(copy[1][0].weight, module[1][0].weight)
