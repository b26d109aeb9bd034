"""The layers keras.applications needs, one small real Keras 3 model each: imported from
``.h5`` and ``.keras`` with Keras' outputs, exported back with ``save_keras`` and loaded
by ``keras.models.load_model`` with the same outputs.

Weights are random from a fixed seed (biases and statistics too, so nothing is left at
its initial value); models run in inference mode.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported (conftest sets it too)

from collections.abc import Callable  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from graftnet.errors import ImportFormatError  # noqa: E402
from graftnet.io.keras import load_keras, save_keras  # noqa: E402
from graftnet.layers import Reshape  # noqa: E402
from graftnet.network import Network  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*", "ignore::UserWarning:keras.*")

L = keras.layers
TOLERANCE = 1e-5
INPUT = (8, 8, 3)  # even sizes: TensorFlow's "same" pads asymmetrically at stride 2

# id -> (the layers after the input, the graftnet spec type(s) the import must hold)
CASES: dict[str, tuple[Callable[[], list[keras.layers.Layer]], set[str]]] = {
    "conv_same_stride2": (lambda: [L.Conv2D(4, 3, strides=2, padding="same", name="c")], {"Conv2d"}),
    "conv_same_even_kernel": (lambda: [L.Conv2D(4, 2, padding="same", name="c")], {"Conv2d"}),
    "conv_same_dilated": (lambda: [L.Conv2D(4, 3, padding="same", dilation_rate=2, name="c")], {"Conv2d"}),
    "conv_valid_dilated": (lambda: [L.Conv2D(4, 3, dilation_rate=(2, 1), activation="silu", name="c")],
                           {"Conv2d"}),
    "depthwise_same_stride2": (lambda: [L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2,
                                                          activation="relu6", name="dw")], {"DepthwiseConv2d"}),
    "depthwise_dilated_no_bias": (lambda: [L.DepthwiseConv2D(5, padding="same", dilation_rate=2, use_bias=False,
                                                             name="dw")], {"DepthwiseConv2d"}),
    "separable": (lambda: [L.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2,
                                             activation="swish", name="sep")], {"SeparableConv2d"}),
    "separable_no_bias": (lambda: [L.SeparableConv2D(4, 3, use_bias=False, name="sep")], {"SeparableConv2d"}),
    "maxpool_same": (lambda: [L.MaxPooling2D(3, strides=2, padding="same", name="p")], {"MaxPool"}),
    # Keras' torch backend pads an asymmetric "same" average pool by replicating the edge,
    # which is not TensorFlow's average (tests/test_layers.py checks graftnet against TF's
    # definition); on 7x7 the 3x3 stride-2 padding is symmetric and Keras agrees with TF.
    "avgpool_same": (lambda: [L.Cropping2D(((0, 1), (0, 1))), L.AveragePooling2D(3, strides=2, padding="same",
                                                                                 name="p")],
                     {"Cropping2D", "AvgPool"}),
    "avgpool_same_pool2": (lambda: [L.Cropping2D(((0, 1), (0, 0))), L.AveragePooling2D(2, padding="same", name="p")],
                           {"Cropping2D", "AvgPool"}),
    "zero_padding": (lambda: [L.ZeroPadding2D(((0, 1), (2, 1)), name="zp")], {"ZeroPadding2D"}),
    "cropping": (lambda: [L.Cropping2D(((1, 0), (2, 1)), name="crop")], {"Cropping2D"}),
    "global_max": (lambda: [L.GlobalMaxPooling2D(name="gmp")], {"GlobalMaxPool"}),
    "global_max_keepdims": (lambda: [L.GlobalMaxPooling2D(keepdims=True, name="gmp"), L.Conv2D(2, 1, name="c")],
                            {"GlobalMaxPool", "Conv2d"}),
    "squeeze_excite": (lambda: [L.GlobalAveragePooling2D(name="gap"), L.Reshape((1, 1, 3), name="r"),
                                L.Conv2D(2, 1, activation="hard_sigmoid", name="c")],
                       {"GlobalAvgPool", "Reshape", "Conv2d"}),
    "gap_keepdims": (lambda: [L.GlobalAveragePooling2D(keepdims=True, name="gap"), L.Flatten()],
                     {"GlobalAvgPool", "Flatten"}),
    "reshape_image": (lambda: [L.Reshape((4, 4, 12), name="r"), L.Conv2D(3, 1, name="c")], {"Reshape", "Conv2d"}),
    "reshape_flat": (lambda: [L.Reshape((-1,), name="r"), L.Dense(3, name="d")], {"Reshape", "Dense"}),
    "relu6": (lambda: [L.ReLU(max_value=6.0, name="r")], {"ReLU"}),
    "relu_threshold_slope": (lambda: [L.ReLU(max_value=0.8, threshold=0.2, negative_slope=0.1, name="r")], {"ReLU"}),
    "relu_threshold": (lambda: [L.ReLU(threshold=0.5, name="r")], {"ReLU"}),
    "normalization_adapted": (lambda: [L.Normalization(axis=-1, name="norm")], {"Normalization"}),
    "normalization_given": (lambda: [L.Normalization(axis=-1, mean=[0.5, -1.0, 2.0], variance=[1.0, 4.0, 0.25],
                                                     name="norm")], {"Normalization"}),
    "normalization_scalar": (lambda: [L.Normalization(axis=None, name="norm")], {"Normalization"}),
    "rescaling_per_channel": (lambda: [L.Rescaling([0.5, 2.0, -1.0], offset=[0.1, 0.2, 0.3], name="rs")],
                              {"Rescaling"}),
    "layer_norm_channels": (lambda: [L.LayerNormalization(name="ln")], {"LayerNormalization"}),
    "layer_norm_all_axes": (lambda: [L.LayerNormalization(axis=[1, 2, 3], epsilon=1e-5, name="ln")],
                            {"LayerNormalization"}),
    "layer_norm_width_channels_no_center": (lambda: [L.LayerNormalization(axis=[2, 3], center=False, name="ln")],
                                     {"LayerNormalization"}),
    "batchnorm_keras_defaults": (lambda: [L.BatchNormalization(name="bn")], {"BatchNorm"}),
}
ACTIVATIONS = ["relu6", "silu", "swish", "hard_sigmoid", "hard_silu", "hard_swish", "softplus", "softsign", "mish"]
FIGURES: dict[str, float] = {}  # max abs differences, printed with -s


def _model(layers: list[keras.layers.Layer], seed: int) -> keras.Model:
    """A Sequential with random weights: biases, means and variances included."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(INPUT), *layers])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.Normalization) and layer.input_mean is None:
            layer.adapt(rng.normal(1.0, 2.0, (32, *INPUT)).astype("float32"))
            continue
        values = []
        for weight in layer.weights:
            value = rng.normal(0.0, 0.5, weight.shape)
            if "variance" in weight.path or "count" in weight.path:
                value = np.abs(value) + 0.5
            values.append(value.astype("float32"))
        layer.set_weights(values)
    return model


def _keras_x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, (5, *INPUT)).astype("float32")


def _predict(net: Network, x: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()  # Keras' (N, H, W, C) -> (N, C, H, W)


def _keras_order(y: np.ndarray) -> np.ndarray:
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y  # graftnet's (N, C, H, W) -> Keras' (N, H, W, C)


def _check(model: keras.Model, tmp_path, label: str, expected_types: set[str]) -> None:
    x = _keras_x()
    expected = model.predict(x, verbose=0)
    for suffix in ("h5", "keras"):
        model.save(tmp_path / f"model.{suffix}")
        net, report = load_keras(tmp_path / f"model.{suffix}")
        assert report.ok, report
        assert {type(s).__name__ for s in net.specs} == expected_types
        diff = float(np.abs(_keras_order(_predict(net, x)) - expected).max())
        FIGURES[f"{label}.{suffix}"] = diff
        assert diff <= TOLERANCE, f"{label}.{suffix}: max abs difference {diff:.2e}"
    exported = keras.models.load_model(save_keras(net, tmp_path / "back.keras"))
    diff = float(np.abs(exported.predict(x, verbose=0) - expected).max())
    FIGURES[f"{label}.export"] = diff
    assert diff <= TOLERANCE, f"{label} exported: max abs difference {diff:.2e}"
    print(f"{label}: h5 {FIGURES[label + '.h5']:.1e}, keras {FIGURES[label + '.keras']:.1e}, export {diff:.1e}")


@pytest.mark.parametrize("case", list(CASES))
def test_keras_layer_imports_and_exports_with_keras_outputs(tmp_path, case):
    make, expected_types = CASES[case]
    _check(_model(make(), seed=len(case)), tmp_path, case, expected_types)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_keras_activation_imports_and_exports_with_keras_outputs(tmp_path, activation):
    layers = [L.Conv2D(4, 3, activation=activation, name="conv"), L.Activation(activation, name="act")]
    _check(_model(layers, seed=3), tmp_path, activation, {"Conv2d", "Activation"})


def test_reshape_of_channels_last_data_follows_keras_order(tmp_path):
    """A reshape that mixes channels and pixels is imported with Keras' (H, W, C) order and
    exported as the same Keras Reshape; a graftnet-order one that Keras cannot express is refused."""
    model = _model([L.Reshape((2, 16, 6), name="r")], seed=1)
    model.save(tmp_path / "r.keras")
    net, _ = load_keras(tmp_path / "r.keras")
    assert net.spec_of("r") == Reshape((6, 2, 16), channels_last=True, name="r")
    plain = Network([Reshape((6, 2, 16), name="r")], (3, 8, 8))
    with pytest.raises(ImportFormatError, match=r"'r'.*no Keras equivalent.*channels_last=True"):
        save_keras(plain, tmp_path / "plain.keras")
    assert not (tmp_path / "plain.keras").exists()


def test_squeeze_excite_reshape_needs_no_reordering(tmp_path):
    model = _model([L.GlobalAveragePooling2D(), L.Reshape((1, 1, 3), name="r")], seed=2)
    model.save(tmp_path / "se.keras")
    net, _ = load_keras(tmp_path / "se.keras")
    assert net.spec_of("r") == Reshape((3, 1, 1), name="r")  # (C,) -> (C, 1, 1) is the same in both orders


def test_keras_2_hard_sigmoid_is_refused(tmp_path):
    """Keras 2's hard_sigmoid is clip(0.2 x + 0.5): a file from Keras 2 must not get Keras 3's."""
    import h5py

    model = _model([L.Activation("hard_sigmoid", name="hs")], seed=0)
    model.save(tmp_path / "k2.h5")
    with h5py.File(tmp_path / "k2.h5", "r+") as h5:
        h5.attrs["keras_version"] = "2.15.0"
    with pytest.raises(ImportFormatError, match=r"'hs' \(Activation\).*Keras 2's hard_sigmoid"):
        load_keras(tmp_path / "k2.h5")


def test_pixel_padding_keras_lacks_is_exported_as_zero_padding(tmp_path):
    """A stride-2 convolution padded by 1 pixel on each side is not Keras' "same" (which pads
    only the bottom/right on even sizes): the export puts a ZeroPadding2D before it."""
    from graftnet.layers import Conv2d, DepthwiseConv2d, Flatten, SeparableConv2d

    torch.manual_seed(0)
    net = Network([Conv2d(4, 3, stride=2, padding=1, name="conv"), DepthwiseConv2d(3, padding=1, name="dw"),
                   SeparableConv2d(3, 3, padding=(2, 0), name="sep"), Flatten(channels_last=True)], (3, 8, 8)).eval()
    model = keras.models.load_model(save_keras(net, tmp_path / "net.keras"))
    assert [type(layer).__name__ for layer in model.layers] == ["ZeroPadding2D", "Conv2D", "DepthwiseConv2D",
                                                                "ZeroPadding2D", "SeparableConv2D", "Flatten"]
    x = _keras_x()
    diff = float(np.abs(model.predict(x, verbose=0) - _predict(net, x)).max())
    assert diff <= TOLERANCE
