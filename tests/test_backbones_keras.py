"""Keras-named backbones against real keras.applications models (Keras 3, PyTorch backend).

Each test builds the Keras model with ``weights=None`` from a fixed seed, gives every
BatchNormalization (and EfficientNet's Normalization) statistics and scales far from their
defaults, writes its weights with Keras' own legacy HDF5 writer (the layout of the files
``keras.applications`` downloads), loads that file into the graftnet builder and compares
predictions on the same images.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported (conftest sets it too)

import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group  # noqa: E402

import graftnet as gn  # noqa: E402
from graftnet.errors import CheckpointError, ConfigError  # noqa: E402
from graftnet.io.download import fetch_verified  # noqa: E402

FAMILIES = {
    "vgg16": keras.applications.VGG16,
    "vgg19": keras.applications.VGG19,
    "resnet50": keras.applications.ResNet50,
    "mobilenetv2": keras.applications.MobileNetV2,
    "efficientnetb0": keras.applications.EfficientNetB0,
    "densenet121": keras.applications.DenseNet121,
}
SIZE = 40  # small, and odd feature maps appear (40 -> 20 -> 10 -> 5): both of correct_pad's cases


def _keras_model(family: str, **kwargs) -> keras.Model:
    keras.backend.clear_session()  # fresh layer names: input_layer, zero_padding2d, rescaling, ...
    keras.utils.set_random_seed(7)
    model = FAMILIES[family](weights=None, **kwargs)
    rng = np.random.default_rng(7)
    for layer in model.layers:  # statistics far from their defaults, or the test could not fail
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.2, n).astype("float32"))
        elif isinstance(layer, keras.layers.Normalization):
            layer.adapt_mean.assign(np.array([0.485, 0.456, 0.406], "float32"))
            layer.adapt_variance.assign(np.array([0.229, 0.224, 0.225], "float32") ** 2)
            layer.finalize_state()  # what adapt() ends with: the layer computes with the new statistics
    return model


def _legacy_h5(model: keras.Model, path: Path) -> Path:
    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, model)  # the writer of Keras' legacy .h5 weights files
    return path


def _images(family: str, size: int, n: int = 2) -> np.ndarray:
    """(N, H, W, 3) preprocessed as each family expects (EfficientNet takes raw pixels)."""
    pixels = np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")
    if family == "efficientnetb0":
        return pixels
    return gn.backbones.preprocess_input(pixels.transpose(0, 3, 1, 2), family).transpose(0, 2, 3, 1).copy()


def _predict(net: gn.Network, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = net.eval()(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2))
    return (out.permute(0, 2, 3, 1) if out.dim() == 4 else out).numpy()


def _names(net: gn.Network) -> list[str]:
    return [entry for entry in net.keras_layers()]  # type: ignore[misc]


def _parity(tmp_path: Path, family: str, size: int, **kwargs) -> float:
    model = _keras_model(family, input_shape=(size, size, 3), **kwargs)
    path = _legacy_h5(model, tmp_path / f"{family}.h5")
    net = getattr(gn.backbones, family)(weights=path, input_shape=(size, size, 3), **kwargs)
    assert _names(net) == [layer.name for layer in model.layers]
    x = _images(family, size)
    ref = model.predict(x, verbose=0)
    out = _predict(net, x)
    assert out.shape == ref.shape
    diff = float(np.abs(out - ref).max())
    scale = float(np.abs(ref).max())
    print(f"\n{family} {kwargs or ''} at {size}x{size}: max abs diff {diff:.3g} (output scale {scale:.3g})")
    assert diff <= 1e-4, (family, diff, scale)
    return diff


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A VGG16 without its top at 32x32, and its legacy HDF5 weights file."""
    model = _keras_model("vgg16", include_top=False, input_shape=(32, 32, 3))
    return model, _legacy_h5(model, tmp_path_factory.mktemp("vgg16") / "vgg16_notop.h5")


# one Keras model per family (building them is what takes the time); pooling on two of them
@pytest.mark.parametrize("family, pooling", [("vgg16", None), ("vgg19", "max"), ("resnet50", None),
                                             ("mobilenetv2", "avg"), ("efficientnetb0", None),
                                             ("densenet121", None)])
def test_family_without_top_matches_keras(tmp_path, family, pooling):
    _parity(tmp_path, family, SIZE, include_top=False, pooling=pooling)


@pytest.mark.parametrize("family, size", [("vgg16", 64), ("efficientnetb0", 32)])
def test_family_with_top_matches_keras(tmp_path, family, size):
    # VGG's Flatten sees a 2x2x512 map at 64x64, so Keras' (H, W, C) order matters; EfficientNet's
    # top has a Dropout before its Dense
    _parity(tmp_path, family, size, include_top=True, classes=10)


def test_keras_layers_slice_selects_what_keras_selects(vgg16_file):
    model, _ = vgg16_file
    net = gn.backbones.vgg16(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert net.select("layers[15:]") == [layer.name for layer in model.layers[15:]]
    assert net.freeze().unfreeze("layers[15:]").trainable == ["block5_conv1", "block5_conv2", "block5_conv3",
                                                               "block5_pool"]


def test_file_with_other_layer_names_loads_by_order_as_keras_does(tmp_path, vgg16_file):
    model, original = vgg16_file
    path = tmp_path / "renamed.h5"
    path.write_bytes(original.read_bytes())
    with h5py.File(path, "r+") as f:  # as older releases, whose layer names differ from today's
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        for name in names:
            f.move(name, f"old_{name}")
        f.attrs["layer_names"] = [f"old_{n}".encode() for n in names]
    net = gn.backbones.vgg16(include_top=False, weights=None, input_shape=(32, 32, 3))
    report = gn.backbones.load_keras_application_weights(net, path)
    assert report.ok and "matched by the order" in " ".join(report.notes)
    x = _images("vgg16", 32)
    assert np.abs(_predict(net, x) - model.predict(x, verbose=0)).max() <= 1e-4


def test_file_of_another_family_is_refused_naming_the_layers(vgg16_file):
    _, path = vgg16_file
    with pytest.raises(CheckpointError, match=r"holds weights for 13 layers.*has 16 layers.*block3_conv4"):
        gn.backbones.vgg19(include_top=False, weights=path, input_shape=(32, 32, 3))


def test_weights_that_are_not_a_file_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="is not a file; expected None"):
        gn.backbones.vgg16(weights=tmp_path / "nope.h5")
    with pytest.raises(ConfigError, match="must be at least 32x32"):
        gn.backbones.resnet50(include_top=False, weights=None, input_shape=(16, 16, 3))


@pytest.mark.parametrize("family", ["vgg16", "resnet50", "mobilenetv2", "densenet121", "efficientnetb0"])
def test_preprocess_input_matches_keras(family):
    module = {"vgg16": keras.applications.vgg16, "resnet50": keras.applications.resnet50,
              "mobilenetv2": keras.applications.mobilenet_v2, "densenet121": keras.applications.densenet,
              "efficientnetb0": keras.applications.efficientnet}[family]
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 5, 6, 3)).astype("float32")
    ref = module.preprocess_input(pixels.copy())
    out = gn.backbones.preprocess_input(torch.from_numpy(pixels).permute(0, 3, 1, 2), family)
    assert np.abs(out.permute(0, 2, 3, 1).numpy() - np.asarray(ref)).max() <= 1e-4


def test_imagenet_offline_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    expected = tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with pytest.raises(CheckpointError) as err:
        gn.backbones.vgg16(include_top=False, input_shape=(32, 32, 3), download=False)
    message = str(err.value)
    assert str(expected) in message
    assert ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5") in message
    assert "md5 6d6bbae143d832006294945121d1f1fc" in message


def test_imagenet_file_in_keras_cache_with_wrong_hash_is_not_used(tmp_path, monkeypatch, vgg16_file):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    _, path = vgg16_file
    cached = tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match=r"is there but its md5 is [0-9a-f]{32}, expected "
                                              r"6d6bbae143d832006294945121d1f1fc"):
        gn.backbones.vgg16(include_top=False, input_shape=(32, 32, 3), download=False)
    assert cached.read_bytes() == path.read_bytes()  # nothing was deleted or overwritten


def test_download_is_verified_and_atomic(tmp_path):
    source = tmp_path / "served.h5"
    source.write_bytes(b"weights" * 100)
    good = hashlib.md5(source.read_bytes()).hexdigest()
    target = tmp_path / "cache" / "models" / "w.h5"
    assert fetch_verified(source.as_uri(), target, file_hash=good) == target
    assert target.read_bytes() == source.read_bytes()
    other = tmp_path / "cache" / "models" / "v.h5"
    with pytest.raises(CheckpointError, match="downloaded file's md5 is .* nothing was written"):
        fetch_verified(source.as_uri(), other, file_hash="0" * 32)
    assert not other.exists() and os.listdir(other.parent) == ["w.h5"]
    with pytest.raises(CheckpointError, match=r"could not be downloaded .* download http://127\.0\.0\.1:9/v\.h5 "
                                              r"\(md5 0{32}\) and put it at"):
        fetch_verified("http://127.0.0.1:9/v.h5", other, file_hash="0" * 32, timeout=2)
