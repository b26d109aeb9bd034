"""Keras graphs and nested models in and out, against real Keras 3 (PyTorch backend).

Every model here is built by real Keras from a fixed seed (``keras.applications`` with
``weights=None``; BatchNorm statistics and Normalization statistics set to random values, so
that a wrong mapping changes the outputs), saved as ``.h5`` and ``.keras``, imported, and
compared with ``model.predict`` on the same inputs. Nothing large is committed: each family
is built once per module, at 32x32.
"""

from __future__ import annotations

import json
import os
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported (conftest sets it too)

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from graftnet.cli import main  # noqa: E402
from graftnet.errors import ImportFormatError  # noqa: E402
from graftnet.io.keras import load_keras, save_keras  # noqa: E402
from graftnet.io.onnx import check_onnx, export_onnx  # noqa: E402
from graftnet.layers import BatchNorm, Conv2d, Dense, Flatten, GlobalAvgPool, MaxPool  # noqa: E402
from graftnet.merge import Add, Concatenate  # noqa: E402
from graftnet.network import Block, Network  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*", "ignore::UserWarning:keras.*")

L = keras.layers
A = keras.applications
SIZE = 32  # the smallest input every family accepts
FAMILIES = {"vgg16": A.VGG16, "vgg19": A.VGG19, "resnet50": A.ResNet50, "mobilenetv2": A.MobileNetV2,
            "efficientnetb0": A.EfficientNetB0, "densenet121": A.DenseNet121}


def graftnet_predict(net: Network, x: np.ndarray) -> np.ndarray:
    """Run an imported network on Keras-ordered inputs; image outputs back in Keras' order."""
    net.eval()
    with torch.no_grad():
        y = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def parity(net: Network, model: keras.Model, x: np.ndarray) -> tuple[float, float]:
    """(max abs difference to Keras' predict, max abs of Keras' output)."""
    expected = model.predict(x, verbose=0)
    return float(np.abs(graftnet_predict(net, x) - expected).max()), float(np.abs(expected).max())


def randomize_statistics(model: keras.Model, seed: int = 0) -> None:
    """BatchNorm and Normalization statistics away from their initial 0/1, so the test can fail."""
    rng = np.random.default_rng(seed)

    def visit(layer: keras.layers.Layer) -> None:
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                visit(inner)
        elif isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.uniform(-0.5, 0.5, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.uniform(-0.5, 0.5, c).astype("float32"))
        elif isinstance(layer, L.Normalization) and getattr(layer, "adapt_mean", None) is not None:
            shape = layer.adapt_mean.shape
            layer.adapt_mean.assign(rng.uniform(50, 150, shape).astype("float32"))
            layer.adapt_variance.assign(rng.uniform(1e3, 4e3, shape).astype("float32"))
            layer.finalize_state()

    visit(model)


def inputs_for(name: str, n: int = 4, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "efficientnetb0":  # it rescales and normalises 0..255 pixels itself
        return rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")
    return rng.normal(size=(n, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def family_files(tmp_path_factory):
    """Build each (family, include_top) once and save each format once, on first use: (model, path)."""
    made: dict[tuple[str, bool], tuple[keras.Model, dict[str, Path]]] = {}
    folder = tmp_path_factory.mktemp("families")

    def get(name: str, top: bool, suffix: str) -> tuple[keras.Model, Path]:
        if (name, top) not in made:
            keras.utils.set_random_seed(0)
            options = {"classes": 10} if top else {}
            model = FAMILIES[name](weights=None, include_top=top, input_shape=(SIZE, SIZE, 3), **options)
            randomize_statistics(model)
            made[name, top] = model, {}
        model, paths = made[name, top]
        if suffix not in paths:
            paths[suffix] = folder / f"{name}_{'top' if top else 'notop'}.{suffix}"
            model.save(paths[suffix])
        return model, paths[suffix]

    return get


# ------------------------------------------------------------------ families
# Without the top: every family in both formats. With it (a few more layers of kinds the rest
# covers): each family in one format, alternating, marked slow; bench/keras_import.py runs the grid.
TOP_FORMAT = {"vgg16": "h5", "vgg19": "keras", "resnet50": "h5", "mobilenetv2": "keras", "efficientnetb0": "keras",
              "densenet121": "h5"}  # (DenseNet's .keras save is the slowest)
CASES = [(name, False, suffix) for name in FAMILIES for suffix in ("h5", "keras")] + [
    pytest.param(name, True, TOP_FORMAT[name], marks=pytest.mark.slow) for name in FAMILIES]


@pytest.mark.parametrize("name, top, suffix", CASES)
def test_application_family_outputs_match_keras(family_files, name, top, suffix):
    model, path = family_files(name, top, suffix)
    net, report = load_keras(path)
    assert report.ok and not report.unexpected
    diff, scale = parity(net, model, inputs_for(name))
    assert diff <= 1e-4 and diff <= 1e-5 * max(scale, 1.0), f"{name}: max abs difference {diff:.3g} (scale {scale:.3g})"


def test_resnet50_keeps_keras_layer_order_and_keras_list_selectors(family_files):
    model, path = family_files("resnet50", False, "keras")
    net, _ = load_keras(path)
    assert net.keras_layers() == [layer.name for layer in model.layers]  # the InputLayer first, as in Keras
    assert net.input_name == model.layers[0].name and net.block_inputs == {"": model.layers[0].name}
    picked = net.select("layers[150:]")
    assert picked == [layer.name for layer in model.layers[150:]]
    assert net.inputs_of("conv2_block1_add") == ["conv2_block1_0_bn", "conv2_block1_3_bn"]
    np.testing.assert_array_equal(net.layer("conv5_block3_3_bn").running_var.numpy(),
                                  model.get_layer("conv5_block3_3_bn").moving_variance.numpy())


def test_densenet_concatenate_axis_is_channels(family_files):
    _, path = family_files("densenet121", False, "h5")
    net, _ = load_keras(path)
    concat = net.spec_of("conv2_block1_concat")
    assert isinstance(concat, Concatenate) and concat.axis == 1  # Keras' NHWC axis -1 is graftnet's NCHW 1
    assert net.shape_of("conv2_block1_concat")[0] == 96


# ------------------------------------------------------------------ hand-made graphs
def merges_model() -> keras.Model:
    """Every Keras merge layer, and a Concatenate over height (axis 1 in NHWC, 2 in NCHW)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 2), name="pixels")
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = L.Conv2D(4, 1, name="b")(inputs)
    c = L.BatchNormalization(name="c")(b)
    merged = [L.Add(name="add")([a, b, c]), L.Subtract(name="subtract")([a, b]), L.Multiply(name="multiply")([a, c]),
              L.Average(name="average")([b, c]), L.Maximum(name="maximum")([a, c]), L.Minimum(name="minimum")([a, b])]
    x = L.Concatenate(name="channels")(merged)
    x = L.Concatenate(axis=1, name="height")([x, L.Conv2D(24, 3, padding="same", name="d")(x)])
    x = L.Flatten(name="flatten")(x)
    return keras.Model(inputs, L.Dense(3, name="outputs")(x), name="merges")


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_every_merge_layer_and_concatenate_axes_match_keras(tmp_path, suffix):
    model = merges_model()
    randomize_statistics(model)
    model.save(tmp_path / f"merges.{suffix}")
    net, report = load_keras(tmp_path / f"merges.{suffix}")
    assert report.ok and net.input_name == "pixels"
    assert net.layer_names == [layer.name for layer in model.layers[1:]]
    assert net.inputs_of("add") == ["a", "b", "c"] and net.spec_of("height").axis == 2
    x = np.random.default_rng(0).normal(size=(5, 6, 6, 2)).astype("float32")
    assert parity(net, model, x)[0] <= 1e-5


# ------------------------------------------------------------------ the nested transfer model
@pytest.fixture(scope="module")
def nested_vgg(tmp_path_factory):
    """The Keras transfer recipe: a frozen VGG16 base in a Sequential, its new head trained a little."""
    keras.utils.set_random_seed(5)
    base = A.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    base.trainable = False
    model = keras.Sequential([base, L.Flatten(name="flatten"), L.Dense(256, "relu", name="dense"),
                              L.Dense(1, "sigmoid", name="dense_1")], name="transfer")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, SIZE, SIZE, 3)).astype("float32")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    before = model.get_layer("dense").kernel.numpy().copy()
    model.fit(x, rng.integers(0, 2, 32), epochs=1, batch_size=16, verbose=0)
    assert not np.allclose(before, model.get_layer("dense").kernel.numpy())  # the head did train
    folder = tmp_path_factory.mktemp("nested")
    paths = {suffix: folder / f"transfer.{suffix}" for suffix in ("h5", "keras")}
    for path in paths.values():
        model.save(path)
    return model, base, paths, x[:4] * 3


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_nested_vgg16_imports_with_paths_frozen_base_and_its_weights(nested_vgg, suffix):
    model, base, paths, x = nested_vgg
    net, report = load_keras(paths[suffix])
    assert report.ok and not report.unexpected and not report.missing
    assert ("vgg16/block1_conv1/kernel", "vgg16.block1_conv1.weight") in report.matched
    assert net.blocks == ["vgg16"] and net.layer_names[0] == "vgg16/block1_conv1"
    assert net.layer_names[-3:] == ["flatten", "dense", "dense_1"]
    assert net.frozen == net.block("vgg16") and "dense" in net.trainable
    kernel = base.get_layer("block5_conv3").kernel.numpy()  # (kh, kw, in, out)
    np.testing.assert_array_equal(net.layer("vgg16/block5_conv3").weight.detach().numpy(), kernel.transpose(3, 2, 0, 1))
    diff, scale = parity(net, model, x)
    assert diff <= 1e-5 * max(scale, 1.0)
    # Keras' `for layer in vgg_base.layers[15:]` in graftnet: the same layers
    assert net.select("vgg16.layers[15:]") == [f"vgg16/{layer.name}" for layer in base.layers[15:]]
    assert net.keras_layers("vgg16")[0] == f"vgg16/{base.layers[0].name}"


# ------------------------------------------------------------------ export of graftnet graphs
def resnet_like() -> Network:
    """A small residual network with BatchNorm (random statistics), a concatenation and a frozen stem."""
    torch.manual_seed(0)
    block = Network([Conv2d(8, 3, padding="same", activation="relu", name="conv_a"), BatchNorm(name="bn_a"),
                     Conv2d(8, 3, padding="same", name="conv_b"), Add(name="add", inputs=["input", "conv_b"]),
                     Conv2d(4, 1, name="side", inputs=["input"]), Concatenate(name="concat", inputs=["add", "side"])],
                    (8, 8, 8), name="stage1")
    net = Network([Conv2d(8, 3, padding="same", name="stem"), BatchNorm(name="stem_bn"), Block(block),
                   MaxPool(2, name="pool"), Conv2d(6, 3, stride=2, padding="same", name="strided"),
                   Add(name="skip", inputs=["strided", "strided"]), GlobalAvgPool(name="gap"),
                   Flatten(name="flatten"), Dense(3, "softmax", name="outputs")], (3, 16, 16), name="resnet_like")
    with torch.no_grad():
        for name in ("stem_bn", "stage1/bn_a"):
            net.layer(name).running_mean.uniform_(-0.5, 0.5)
            net.layer(name).running_var.uniform_(0.5, 1.5)
    return net.freeze("stem.*").eval()


def test_graph_exports_to_keras_functional_with_the_same_outputs(tmp_path):
    net = resnet_like()
    model = keras.models.load_model(save_keras(net, tmp_path / "graph.keras"))
    config = json.loads(zipfile.ZipFile(tmp_path / "graph.keras").read("config.json"))
    assert config["class_name"] == "Functional"
    assert [layer.name for layer in model.get_layer("stage1").layers][:2] == ["stage1_input", "conv_a"]
    assert {layer.name for layer in model.layers if not layer.trainable} == {"stem", "stem_bn"}
    x = np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.abs(model.predict(x.transpose(0, 2, 3, 1), verbose=0) - expected).max() <= 1e-5
    back, report = load_keras(tmp_path / "graph.keras")
    assert report.ok and back.layer_names == net.layer_names and back.frozen == net.frozen
    assert parity(back, model, x.transpose(0, 2, 3, 1))[0] <= 1e-5


def small_nested_keras(frozen: bool = True) -> keras.Model:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    base = keras.Model(inputs, L.Add(name="add")([x, L.Conv2D(4, 1, name="shortcut")(inputs)]), name="base")
    base.trainable = not frozen
    model = keras.Sequential([keras.Input((8, 8, 3)), base, L.GlobalAveragePooling2D(name="gap"),
                              L.Dense(2, name="head")], name="small")
    randomize_statistics(model)
    return model


def test_nested_model_exports_to_keras_as_a_nested_model(tmp_path):
    model = small_nested_keras()
    model.save(tmp_path / "small.keras")
    net, _ = load_keras(tmp_path / "small.keras")
    assert net.frozen == net.block("base")
    back = keras.models.load_model(save_keras(net, tmp_path / "back.keras"))
    assert [layer.name for layer in back.layers] == [net.input_name, "base", "gap", "head"]
    inner = back.get_layer("base")
    assert [layer.name for layer in inner.layers] == ["image", "conv", "bn", "shortcut", "add"]
    assert not inner.trainable and not any(layer.trainable for layer in inner.layers[1:])
    assert back.get_layer("head").trainable
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    assert np.abs(back.predict(x, verbose=0) - model.predict(x, verbose=0)).max() <= 1e-5
    again, report = load_keras(tmp_path / "back.keras")
    assert report.ok and again.frozen == net.frozen and again.layer_names == net.layer_names


@pytest.mark.slow
def test_a_graph_with_a_nested_block_exports_to_onnx(tmp_path):
    net = resnet_like()  # residual and concatenating merges, and the nested block stage1
    assert net.blocks == ["stage1"] and not net.is_chain
    export_onnx(net, tmp_path / "graph.onnx")
    assert check_onnx(net, tmp_path / "graph.onnx", torch.randn(3, *net.input_shape)) <= 1e-5


# ------------------------------------------------------------------ bad input
def test_shared_layer_is_refused_naming_it(tmp_path):
    inputs = keras.Input((4,))
    shared = L.Dense(3, name="shared")
    a, b = shared(L.Dense(4, name="left")(inputs)), shared(L.Dense(4, name="right")(inputs))
    keras.Model(inputs, L.Add(name="merge")([a, b])).save(tmp_path / "shared.keras")
    with pytest.raises(ImportFormatError, match=r"layer 'shared' \(Dense\) is a shared layer: it is called on 2 inputs "
                                                r"\(left; right\)"):
        load_keras(tmp_path / "shared.keras")


def test_shared_layer_in_an_h5_file_is_refused_and_the_cli_writes_nothing(tmp_path, capsys):
    inputs = keras.Input((4,))
    shared = L.Dense(4, name="twice")
    keras.Model(inputs, shared(shared(inputs))).save(tmp_path / "shared.h5")
    assert main(["import", str(tmp_path / "shared.h5"), "-o", str(tmp_path / "out")]) == 2
    assert "layer 'twice' (Dense) is a shared layer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_unsupported_layer_type_in_a_graph_and_a_nested_model_is_listed(tmp_path):
    inputs = keras.Input((8, 8, 3), name="image")
    x = L.UpSampling2D(name="up")(inputs)
    base = keras.Model(inputs, L.Conv2D(2, 1, name="conv")(x), name="base")
    model = keras.Sequential([keras.Input((8, 8, 3)), base, L.GaussianNoise(0.1, name="noise"),
                              L.SpatialDropout2D(0.1, name="sdrop"), L.Flatten(), L.Dense(2)])
    model.save(tmp_path / "bad.keras")
    with pytest.raises(ImportFormatError, match=r"not supported: UpSampling2D \(up\); GaussianNoise \(noise\); "
                                                r"SpatialDropout2D \(sdrop\)"):
        load_keras(tmp_path / "bad.keras")


def test_merge_of_mismatched_shapes_in_an_edited_config_names_the_layers(tmp_path):
    small_nested_keras().save(tmp_path / "small.keras")
    with zipfile.ZipFile(tmp_path / "small.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    base = config["config"]["layers"][1]
    shortcut = next(layer for layer in base["config"]["layers"] if layer["name"] == "shortcut")
    shortcut["config"]["kernel_size"] = [3, 3]  # now (6, 6, 4) against the conv's (8, 8, 4)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "edited.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ImportFormatError, match=r"layer 'base/add' \(Add\).*cannot merge shapes \(4, 8, 8\), "
                                                r"\(4, 6, 6\) from base/bn, base/shortcut"):
        load_keras(tmp_path / "edited.keras")


def test_export_refuses_a_block_that_is_not_one_nested_model(tmp_path):
    net = Network([Dense(4, name="inner/a"), Dense(4, name="inner/b"), Dense(4, name="c", inputs=["inner/a"]),
                   Add(name="join", inputs=["inner/b", "c"])], (4,), name="leaky")  # inner/a is read outside
    with pytest.raises(ImportFormatError, match=r"block 'inner' reads input and is read at inner/a, inner/b"):
        save_keras(net, tmp_path / "leaky.keras")
    assert list(tmp_path.iterdir()) == []


def test_batchnorm_on_a_large_image_is_not_taken_for_a_corrupt_config(tmp_path):
    """The guard against configs that ask for far more parameters than the file holds counts
    BatchNorm as four vectors over the channels, not over every pixel (ResNet50 at 224x224)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((200, 200, 1)), L.Conv2D(1, 1, name="conv"), L.BatchNormalization(name="bn"),
                              L.LayerNormalization(name="ln"), L.GlobalAveragePooling2D(name="gap")])
    randomize_statistics(model)
    model.save(tmp_path / "big.keras")
    net, report = load_keras(tmp_path / "big.keras")
    x = np.random.default_rng(0).normal(size=(2, 200, 200, 1)).astype("float32")
    assert report.ok and parity(net, model, x)[0] <= 1e-5
