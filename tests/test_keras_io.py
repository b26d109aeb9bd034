"""Keras import/export against real Keras 3 (PyTorch backend) and real tf.keras 2 files.

Every test builds or reads a real Keras model, imports it, and compares predictions on the
same inputs; export tests load graftnet's ``.keras`` back with ``keras.models.load_model``.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported (conftest sets it too)

from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from graftnet.errors import CheckpointError, ImportFormatError  # noqa: E402
from graftnet.io.keras import (  # noqa: E402
    SUPPORTED_LAYERS,
    keras_layout_arrays,
    load_keras,
    load_keras_weights,
    save_keras,
)
from graftnet.layers import (  # noqa: E402
    Activation,
    AvgPool,
    BatchNorm,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Rescaling,
)
from graftnet.network import Network  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")  # Keras' own NumPy 2 noise

L = keras.layers
FIXTURES = Path(__file__).parent / "fixtures" / "keras"
TOLERANCE = 1e-5


def graftnet_predict(net: Network, x: np.ndarray) -> np.ndarray:
    """Run an imported network on Keras-ordered inputs (N, H, W, C images become N, C, H, W)."""
    batch = torch.from_numpy(x)
    if batch.dim() == 4 and tuple(batch.shape[1:]) != net.input_shape:
        batch = batch.permute(0, 3, 1, 2)  # Keras' (N, H, W, C) -> graftnet's (N, C, H, W)
    net.eval()
    with torch.no_grad():
        return net(batch).numpy()


def max_diff(net: Network, model: keras.Model, x: np.ndarray) -> float:
    return float(np.abs(graftnet_predict(net, x) - model.predict(x, verbose=0)).max())


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def trained_cnn(rng) -> tuple[keras.Model, np.ndarray]:
    """A CNN with BatchNorm, trained a few steps so its BatchNorm statistics are not the initial ones."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((10, 10, 3)),
        L.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
        L.BatchNormalization(name="bn1"),
        L.MaxPooling2D(name="pool1"),
        L.Conv2D(8, 3, name="conv2"),
        L.BatchNormalization(momentum=0.9, epsilon=1e-4, name="bn2"),
        L.Activation("relu", name="relu2"),
        L.Flatten(name="flatten"),
        L.Dense(4, activation="softmax", name="outputs"),
    ], name="cnn")
    x = rng.normal(size=(64, 10, 10, 3)).astype("float32") * 2 + 1
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, rng.integers(0, 4, 64), epochs=3, batch_size=16, verbose=0)
    return model, x[:16]


def every_layer_model(rng) -> keras.Model:
    """One model with every supported layer (Normalization adapted to one mean and variance)."""
    keras.utils.set_random_seed(2)
    norm = L.Normalization(axis=None, name="norm")
    norm.adapt(rng.uniform(0, 3, (50, 12, 12, 2)).astype("float32"))
    return keras.Sequential([
        L.InputLayer((12, 12, 2)), norm, L.Rescaling(2.0, offset=-1.0, name="rescale"),
        L.Conv2D(5, 3, padding="same", activation="elu", name="conv1"),
        L.BatchNormalization(name="bn1"), L.Activation("selu", name="act"), L.MaxPooling2D(name="maxpool"),
        L.Conv2D(6, 2, strides=2, activation="tanh", name="conv2"), L.LeakyReLU(negative_slope=0.1, name="lrelu"),
        L.ELU(alpha=0.5, name="elu"), L.ReLU(name="relu"), L.AveragePooling2D(pool_size=1, name="avgpool"),
        L.Conv2D(4, 1, activation="sigmoid", use_bias=False, name="conv3"), L.GlobalAveragePooling2D(name="gap"),
        L.Flatten(name="flatten"), L.Dropout(0.2, name="dropout"), L.Dense(8, activation="leaky_relu", name="dense1"),
        L.AlphaDropout(0.1, name="alpha_dropout"), L.Dense(6, activation="gelu", name="dense2"),
        L.BatchNormalization(center=False, name="bn2"), L.Dense(5, activation="linear", name="dense3"),
        L.Softmax(name="softmax"),
    ], name="everything")


# ------------------------------------------------------------------ import, Keras 3
@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_sequential_mlp_predictions_match(tmp_path, rng, suffix):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((20,)), L.Dense(16, activation="relu", name="hidden1"),
                              L.Dense(8, activation="sigmoid", name="hidden2"),
                              L.Dense(3, activation="softmax", name="outputs")])
    model.save(tmp_path / f"mlp.{suffix}")
    net, report = load_keras(tmp_path / f"mlp.{suffix}")
    assert report.ok and net.layer_names == ["hidden1", "hidden2", "outputs"]
    assert sorted(report.transposed) == ["hidden1.weight", "hidden2.weight", "outputs.weight"]
    assert max_diff(net, model, rng.normal(size=(32, 20)).astype("float32")) <= TOLERANCE


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_functional_chain_predictions_match(tmp_path, rng, suffix):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((28, 28), name="pixels")
    x = L.Flatten(name="flatten")(inputs)
    x = L.Dense(30, activation="selu", name="hidden1")(x)
    x = L.Dropout(0.1, name="dropout")(x)
    outputs = L.Dense(10, name="outputs")(x)
    model = keras.Model(inputs, outputs, name="book")
    model.save(tmp_path / f"book.{suffix}")
    net, _ = load_keras(tmp_path / f"book.{suffix}")
    assert net.input_shape == (28, 28) and net.name == "book"
    assert max_diff(net, model, rng.uniform(size=(16, 28, 28)).astype("float32")) <= TOLERANCE


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_trained_cnn_with_batchnorm_predictions_match(tmp_path, trained_cnn, suffix):
    model, x = trained_cnn
    moving_variance = model.get_layer("bn1").moving_variance.numpy()
    assert not np.allclose(moving_variance, 1.0)  # training moved the statistics
    model.save(tmp_path / f"cnn.{suffix}")
    net, report = load_keras(tmp_path / f"cnn.{suffix}")
    assert net.input_shape == (3, 10, 10)
    assert net.spec_of("flatten").channels_last
    bn2 = net.spec_of("bn2")
    assert (bn2.eps, bn2.momentum) == (1e-4, pytest.approx(0.1))
    np.testing.assert_array_equal(net.layer("bn1").running_var.numpy(), moving_variance)
    assert report.ok
    assert max_diff(net, model, x) <= TOLERANCE


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_every_supported_layer_predictions_match(tmp_path, rng, suffix):
    model = every_layer_model(rng)
    model.save(tmp_path / f"every.{suffix}")
    net, report = load_keras(tmp_path / f"every.{suffix}")
    assert {type(s).__name__ for s in net.specs} == {"Normalization", "Rescaling", "Conv2d", "BatchNorm",
                                                     "Activation", "MaxPool", "AvgPool", "GlobalAvgPool", "Flatten",
                                                     "Dropout", "AlphaDropout", "Dense"}
    assert net.spec_of("dense1").activation == "leaky_relu(0.2)"  # Keras' leaky_relu function
    assert net.spec_of("norm").axis is None and "norm/count" in report.ignored
    assert any("bn2" in note and "bias" in note for note in report.notes)  # center=False: beta set to 0
    x = rng.uniform(0, 3, (8, 12, 12, 2)).astype("float32")
    assert max_diff(net, model, x) <= TOLERANCE


def test_channels_first_model_keeps_its_input_layout(tmp_path, rng):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((3, 8, 8))
    x = L.Conv2D(4, 3, padding="same", data_format="channels_first", name="conv")(inputs)
    x = L.BatchNormalization(axis=1, name="bn")(x)
    x = L.MaxPooling2D(2, data_format="channels_first", name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(3, name="outputs")(x)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "cf.keras")
    net, _ = load_keras(tmp_path / "cf.keras")
    assert net.input_shape == (3, 8, 8) and net.info["input_layout"] == "channels_first"
    assert max_diff(net, model, rng.normal(size=(5, 3, 8, 8)).astype("float32")) <= TOLERANCE


def test_trainable_false_layers_are_frozen(tmp_path):
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="base"), L.Dense(2, name="head")])
    model.get_layer("base").trainable = False
    model.save(tmp_path / "frozen.keras")
    net, _ = load_keras(tmp_path / "frozen.keras")
    assert net.frozen == ["base"]


# ------------------------------------------------------------------ import, tf.keras 2 files
@pytest.mark.parametrize("name, key", [("keras2_cnn.h5", "cnn"), ("keras2_cnn.keras", "cnn"),
                                       ("keras2_mlp.h5", "mlp"), ("keras2_book.h5", "book")])
def test_tf_keras_2_files_match_their_predictions(name, key):
    reference = np.load(FIXTURES / "reference.npz")
    net, report = load_keras(FIXTURES / name)
    assert report.ok
    diff = np.abs(graftnet_predict(net, reference[f"{key}_x"]) - reference[f"{key}_y"]).max()
    assert diff <= TOLERANCE


def test_tf_keras_2_book_model_keeps_auto_names():
    net, _ = load_keras(FIXTURES / "keras2_book.h5")
    assert net.layer_names[1:] == ["dense", "dense_1"] and net.input_shape == (28, 28)


# ------------------------------------------------------------------ weights only
def test_keras3_weights_file_loads_by_layer_name(tmp_path, trained_cnn):
    model, x = trained_cnn
    model.save_weights(tmp_path / "cnn.weights.h5")
    net, _ = load_keras(_saved(model, tmp_path / "cnn.keras"))
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    report = load_keras_weights(net, tmp_path / "cnn.weights.h5")
    assert report.ok and ("bn1/moving_mean", "bn1.running_mean") in report.matched
    assert max_diff(net, model, x) <= TOLERANCE


def test_weights_without_layer_names_are_matched_by_type_and_position(tmp_path, trained_cnn):
    model, x = trained_cnn
    model.save_weights(tmp_path / "cnn.weights.h5")
    with h5py.File(tmp_path / "cnn.weights.h5", "a") as h5:  # as Keras 3 files before names were recorded
        h5.visit(lambda name: h5[name].attrs.pop("name", None) if isinstance(h5[name], h5py.Group) else None)
    net, _ = load_keras(_saved(model, tmp_path / "cnn.keras"))
    renamed = Network.from_spec({**net.to_spec(), "layers": [
        {**layer, "name": f"my_{layer['name']}"} for layer in net.to_spec()["layers"]]})
    report = load_keras_weights(renamed, tmp_path / "cnn.weights.h5")
    assert any("layers/conv2d_1 -> my_conv2" in note for note in report.notes)
    assert max_diff(renamed, model, x) <= TOLERANCE


def test_legacy_weights_file_into_a_channels_first_flatten_is_reordered():
    reference = np.load(FIXTURES / "reference.npz")
    imported, _ = load_keras(FIXTURES / "keras2_cnn.h5")
    spec = imported.to_spec()
    for layer in spec["layers"]:
        if layer["type"] == "flatten":
            layer["channels_last"] = False  # graftnet's own order: (C, H, W)
    net = Network.from_spec(spec)
    report = load_keras_weights(net, FIXTURES / "keras2_cnn_weights.h5")
    assert "outputs.weight" in report.transposed
    diff = np.abs(graftnet_predict(net, reference["cnn_x"]) - reference["cnn_y"]).max()
    assert diff <= TOLERANCE


def test_weights_of_the_wrong_shape_load_nothing_and_say_which(tmp_path, trained_cnn):
    model, _ = trained_cnn
    model.save_weights(tmp_path / "cnn.weights.h5")
    net, _ = load_keras(_saved(model, tmp_path / "cnn.keras"))
    spec = net.to_spec()
    spec["layers"][-1]["units"] = 5
    other = Network.from_spec(spec)
    before = other.layer("conv1").weight.clone()
    expected = (r"nothing was loaded(.|\n)*'outputs/kernel' -> 'outputs.weight': "
                r"source shape \(72, 4\) \(transposed: \(4, 72\)\), target shape \(5, 72\)")
    with pytest.raises(CheckpointError, match=expected):
        load_keras_weights(other, tmp_path / "cnn.weights.h5")
    assert torch.equal(other.layer("conv1").weight, before)


def _saved(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


# ------------------------------------------------------------------ unsupported
@pytest.mark.parametrize("layer, message", [
    (L.UpSampling2D(name="up"), r"not supported: UpSampling2D \(up\); supported layers: InputLayer, Dense"),
    (L.Conv2D(3, 3, groups=3, name="grouped"), r"layer 'grouped' \(Conv2D\).*groups=3"),
    (L.Activation("log_softmax", name="lsm"), r"'lsm' \(Activation\).*'log_softmax'.*supported activations: linear, relu"),
    (L.LayerNormalization(rms_scaling=True, name="rms"), r"'rms' \(LayerNormalization\).*rms_scaling"),
    (L.Normalization(mean=0.0, variance=1.0, invert=True, name="inv"), r"'inv' \(Normalization\).*invert=True"),
])
def test_unsupported_layers_name_the_layer_and_what_is_supported(tmp_path, layer, message):
    model = keras.Sequential([keras.Input((8, 8, 3)), layer, L.Flatten(), L.Dense(2)])
    model.save(tmp_path / "bad.keras")
    with pytest.raises(ImportFormatError, match=message):
        load_keras(tmp_path / "bad.keras")
    assert "UpSampling2D" not in SUPPORTED_LAYERS


def test_every_unsupported_layer_type_is_listed_at_once(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 2)), L.UpSampling2D(name="up1"), L.GaussianNoise(0.1, name="noise"),
                              L.UpSampling2D(name="up2"), L.Flatten(), L.Dense(2)])
    model.save(tmp_path / "bad.keras")
    with pytest.raises(ImportFormatError, match=r"not supported: UpSampling2D \(up1, up2\); GaussianNoise \(noise\)"):
        load_keras(tmp_path / "bad.keras")


def test_weights_only_file_given_to_load_keras_points_to_load_keras_weights(tmp_path):
    keras.Sequential([keras.Input((3,)), L.Dense(2)]).save_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ImportFormatError, match=r"weights-only file.*load_keras_weights"):
        load_keras(tmp_path / "w.weights.h5")


# ------------------------------------------------------------------ export
def _graftnet_cnn() -> Network:
    torch.manual_seed(0)
    net = Network([
        Rescaling(1 / 4, name="scale"),
        Conv2d(6, 3, padding=1, activation="leaky_relu(0.1)", name="conv1"),
        BatchNorm(momentum=0.05, eps=1e-3, name="bn1"),
        Activation("elu(0.5)", name="act1"),
        MaxPool(2, name="pool1"),
        Conv2d(4, 3, stride=2, activation="relu", name="conv2"),
        AvgPool(1, name="pool2"),
        Flatten(name="flatten"),  # graftnet's (C, H, W) order: the Dense kernel is reordered on export
        Dropout(0.3, name="dropout"),
        Dense(5, "softmax", name="outputs"),
    ], (3, 12, 12), name="graftnet_cnn")
    with torch.no_grad():
        net.layer("bn1").running_mean.uniform_(-1, 1)
        net.layer("bn1").running_var.uniform_(0.5, 2)
    return net.freeze("conv1")


@pytest.mark.parametrize("make", [
    lambda: Network.mlp(12, [10, 8], 3, activation="selu", batch_norm=True, dropout=0.1, l2=1e-4, max_norm=2.0),
    _graftnet_cnn,
    lambda: Network([Conv2d(4, 3, activation="gelu"), GlobalAvgPool(), Dense(2, "sigmoid")], (2, 6, 6)),
])
def test_round_trip_through_keras_load_model(tmp_path, rng, make):
    net = make().eval()
    path = save_keras(net, tmp_path / "net.keras")
    model = keras.models.load_model(path)
    x = rng.normal(size=(6, *net.input_shape)).astype("float32")
    keras_x = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.abs(model.predict(keras_x, verbose=0) - expected).max() <= TOLERANCE
    back, report = load_keras(path)  # and into graftnet again
    assert report.ok and max_diff(back, model, keras_x) <= TOLERANCE
    frozen = {layer.name for layer in model.layers if not layer.trainable}
    assert frozen & set(net.layer_names) == set(net.frozen)  # (a split-off activation follows its layer)


def test_export_splits_a_parametrised_activation_into_its_own_layer(tmp_path):
    path = save_keras(_graftnet_cnn(), tmp_path / "cnn.keras")
    model = keras.models.load_model(path)
    assert model.get_layer("conv1_activation").__class__.__name__ == "LeakyReLU"
    assert model.get_layer("bn1").momentum == pytest.approx(0.95)


def test_export_refuses_what_keras_cannot_express_and_writes_nothing(tmp_path):
    net = Network([Dense(3, "rrelu")], (4,))
    with pytest.raises(ImportFormatError, match=r"activation 'rrelu' has no Keras equivalent"):
        save_keras(net, tmp_path / "x.keras")
    assert list(tmp_path.iterdir()) == []


def test_keras_layout_arrays_are_what_keras_holds(tmp_path):
    net = _graftnet_cnn()
    model = keras.models.load_model(save_keras(net, tmp_path / "cnn.keras"))
    arrays = keras_layout_arrays(net)
    np.testing.assert_array_equal(arrays["conv2/kernel"], model.get_layer("conv2").kernel.numpy())
    np.testing.assert_array_equal(arrays["outputs/kernel"], model.get_layer("outputs").kernel.numpy())
