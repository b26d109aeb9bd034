"""Layer specs: TensorFlow's "same" padding, Reshape's orders, Normalization's statistics,
JSON round trips and the errors for bad settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graftnet.errors import ConfigError, ShapeError
from graftnet.layers import (
    LAYER_TYPES,
    AvgPool,
    Conv2d,
    Cropping2D,
    DepthwiseConv2d,
    GlobalAvgPool,
    GlobalMaxPool,
    LayerNormalization,
    MaxPool,
    Normalization,
    ReLU,
    Rescaling,
    Reshape,
    SeparableConv2d,
    ZeroPadding2D,
    layer_from_dict,
    tf_same_padding,
)


def _tf_same_pool(x: np.ndarray, k: int, s: int, reduce) -> np.ndarray:
    """TensorFlow's "same" pooling by its definition: each window reduces only the pixels
    inside the image; windows start at -pad_top, -pad_left."""
    _, _, h, w = x.shape
    top, _, left, _ = tf_same_padding((h, w), k, s)
    out_h, out_w = -(-h // s), -(-w // s)
    out = np.empty((*x.shape[:2], out_h, out_w), dtype=np.float64)
    for i in range(out_h):
        for j in range(out_w):
            r0, c0 = i * s - top, j * s - left
            window = x[:, :, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]
            out[:, :, i, j] = reduce(window, axis=(2, 3))
    return out


@pytest.mark.parametrize("spec, reduce", [(AvgPool(3, 2, "same"), np.mean), (MaxPool(3, 2, "same"), np.max),
                                          (AvgPool(4, 3, "same"), np.mean), (AvgPool(2, 1, "same"), np.mean)])
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_same_pooling_is_tensorflows(spec, reduce, size):
    x = torch.randn(2, 3, *size)
    expected = _tf_same_pool(x.double().numpy(), spec.pool_size, spec.stride, reduce)
    module = spec.build((3, *size))
    assert spec.output_shape((3, *size)) == expected.shape[1:]
    np.testing.assert_allclose(module(x).numpy(), expected, atol=1e-6)


def test_same_convolution_at_stride_2_pads_the_odd_pixel_at_the_bottom_right():
    torch.manual_seed(0)
    conv = Conv2d(4, 3, stride=2, padding="same").build((3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    assert tf_same_padding((8, 8), 3, 2) == (0, 1, 0, 1)
    torch.testing.assert_close(conv(x), expected)
    assert Conv2d(4, 3, stride=2, padding="same").output_shape((3, 8, 7)) == (4, 4, 4)  # ceil(size / stride)


def test_dilated_same_convolution_keeps_the_size():
    spec = Conv2d(2, 3, padding="same", dilation=2)
    assert spec.output_shape((1, 9, 9)) == (2, 9, 9)
    assert Conv2d(2, 3, dilation=2).output_shape((1, 9, 9)) == (2, 5, 5)  # valid: 9 - 2 * (3 - 1)


def test_depthwise_output_channel_c_times_multiplier_plus_m_filters_input_channel_c():
    dw = DepthwiseConv2d(1, depth_multiplier=2, bias=False).build((3, 2, 2))
    with torch.no_grad():
        dw.weight.copy_(torch.arange(1.0, 7.0).reshape(6, 1, 1, 1))  # output o scales by o + 1
    x = torch.tensor([1.0, 10.0, 100.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert dw(x)[0, :, 0, 0].tolist() == [1.0, 2.0, 30.0, 40.0, 500.0, 600.0]


def test_separable_is_depthwise_then_pointwise():
    torch.manual_seed(0)
    module = SeparableConv2d(5, 3, padding="same", depth_multiplier=2).build((3, 6, 6))
    x = torch.randn(2, 3, 6, 6)
    depthwise = F.conv2d(x, module.depthwise.weight, padding=1, groups=3)
    torch.testing.assert_close(module(x), F.conv2d(depthwise, module.pointwise.weight, module.pointwise.bias))


def test_reshape_orders():
    x = torch.arange(12.0).reshape(1, 3, 2, 2)  # (B, C, H, W)
    plain = Reshape((12,)).build((3, 2, 2))(x)
    keras_order = Reshape((12,), channels_last=True).build((3, 2, 2))(x)
    assert plain[0].tolist() == list(range(12))
    assert keras_order[0].tolist() == x.permute(0, 2, 3, 1).reshape(-1).tolist()  # (H, W, C) order
    back = Reshape((3, 2, 2), channels_last=True).build((12,))(keras_order)
    torch.testing.assert_close(back, x)  # fills (H, W, C), returns (C, H, W)
    assert Reshape((-1, 4)).output_shape((3, 2, 2)) == (3, 4)


def test_relu_follows_keras_definition():
    x = torch.tensor([-2.0, 0.1, 0.5, 3.0, 9.0])
    assert ReLU(6.0).build((5,))(x).tolist() == pytest.approx([0.0, 0.1, 0.5, 3.0, 6.0])
    # below the threshold: negative_slope * (x - threshold); above it x, capped at max_value
    y = ReLU(max_value=4.0, threshold=0.2, negative_slope=0.1).build((5,))(x)
    assert y.tolist() == pytest.approx([-0.22, -0.01, 0.5, 3.0, 4.0])


def test_normalization_statistics_are_weights_unless_given():
    adapted = Normalization(axis=1).build((3, 4, 4))
    assert sorted(adapted.state_dict()) == ["mean", "variance"]
    given = Normalization(axis=1, mean=(1.0, 2.0, 3.0), variance=4.0).build((3, 4, 4))
    assert list(given.state_dict()) == []
    x = torch.full((1, 3, 4, 4), 5.0)
    assert given(x)[0, :, 0, 0].tolist() == [2.0, 1.5, 1.0]  # (x - mean) / sqrt(variance)
    assert Normalization(axis=None, mean=0.0, variance=0.0).build((2,))(torch.ones(1, 2)).tolist() == [[1e7, 1e7]]


def test_layer_norm_normalises_the_given_axes():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    module = LayerNormalization(axis=1, epsilon=1e-5).build((3, 4, 5))
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (3,), eps=1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(module(x), expected)
    assert module.weight.shape == (3,)


def test_per_channel_rescaling_and_keepdims():
    x = torch.ones(1, 3, 2, 2)
    assert Rescaling((1.0, 2.0, 3.0), (0.0, 0.0, 1.0)).build((3, 2, 2))(x)[0, :, 0, 0].tolist() == [1.0, 2.0, 4.0]
    assert GlobalAvgPool(keepdims=True).output_shape((3, 5, 5)) == (3, 1, 1)
    assert GlobalMaxPool().build((3, 2, 2))(torch.arange(12.0).reshape(1, 3, 2, 2)).tolist() == [[3.0, 7.0, 11.0]]


@pytest.mark.parametrize("spec", [
    Conv2d(4, 3, 2, "same", dilation=(1, 2)), DepthwiseConv2d(5, 2, "same", depth_multiplier=3),
    SeparableConv2d(4, 3, padding=1), MaxPool(3, 2, "same"), AvgPool(3, 1, 1), ZeroPadding2D(((0, 1), (2, 3))),
    Cropping2D(1), Reshape((-1,), channels_last=True), ReLU(6.0, 0.1, 0.2), Normalization(1, (1.0, 2.0), (3.0, 4.0)),
    LayerNormalization((1, 2, 3), 1e-5, center=False), Rescaling((1.0, 2.0), 0.5), GlobalMaxPool(keepdims=True),
], ids=lambda spec: spec.type)
def test_specs_round_trip_through_json(spec):
    assert layer_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_every_single_input_layer_type_rebuilds_from_its_dict():
    for kind, cls in LAYER_TYPES.items():
        if cls.__module__ != "graftnet.layers":
            continue  # merge layers and blocks are tested with the network
        required = {"dense": {"units": 2}, "conv2d": {"filters": 2}, "separable_conv2d": {"filters": 2}}
        spec = layer_from_dict({"type": kind, **required.get(kind, {})})
        assert isinstance(spec, cls) and layer_from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("make, error, message", [
    (lambda: Conv2d(2, padding="full"), ConfigError, r"padding must be 'valid', 'same' or a number"),
    (lambda: ZeroPadding2D((1, 2, 3)), ConfigError, r"padding must be n, \(h, w\) or \(\(top, bottom\)"),
    (lambda: Reshape((2, -1, -1)), ConfigError, r"at most one -1"),
    (lambda: Reshape((5,)).output_shape((3, 2, 2)), ShapeError, r"cannot reshape input \(3, 2, 2\) \(12 values\)"),
    (lambda: MaxPool(2, padding=2), ConfigError, r"more than half the pool size"),
    (lambda: Cropping2D(2).output_shape((1, 4, 4)), ShapeError, r"leaves nothing"),
    (lambda: Rescaling((1.0, 2.0)).output_shape((3, 4, 4)), ShapeError, r"2 scale values for 3 channels"),
    (lambda: LayerNormalization(axis=0).output_shape((3,)), ShapeError, r"axis 0 is not a non-batch axis"),
])
def test_bad_settings_say_what_is_wrong(make, error, message):
    with pytest.raises(error, match=message):
        make()
