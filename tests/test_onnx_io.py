"""ONNX export: ONNX Runtime must give graftnet's outputs."""

from __future__ import annotations

import onnx
import pytest
import torch

import graftnet.io.onnx as onnx_io
from graftnet.errors import ConfigError
from graftnet.io.onnx import check_onnx, export_onnx
from graftnet.layers import (
    Activation,
    AvgPool,
    BatchNorm,
    Conv2d,
    Cropping2D,
    Dense,
    DepthwiseConv2d,
    Dropout,
    Flatten,
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
)
from graftnet.network import Network

TOLERANCE = 1e-5


def mlp() -> Network:
    torch.manual_seed(0)
    return Network.mlp(20, [16, 8], 4, activation="selu", batch_norm=True, dropout=0.2, output_activation="softmax")


def cnn() -> Network:
    torch.manual_seed(0)
    net = Network([Conv2d(6, 3, padding="same", activation="relu"), BatchNorm(), MaxPool(2),
                   Conv2d(8, 3, stride=2, activation="leaky_relu(0.1)"), Flatten(channels_last=True), Dropout(0.3),
                   Dense(16, "gelu"), Dense(5)], (3, 12, 12), name="cnn")
    with torch.no_grad():
        net.layer("bn1").running_mean.uniform_(-1, 1)
        net.layer("bn1").running_var.uniform_(0.5, 2)
    return net


def backbone_layers() -> Network:
    """Every layer keras.applications needs, with statistics that are not the initial ones."""
    torch.manual_seed(0)
    net = Network([
        Rescaling((0.5, 1.0, 2.0), (0.1, 0.0, -0.1), name="rescale"), Normalization(1, name="norm"),
        ZeroPadding2D(((0, 1), (0, 1)), name="pad"), Conv2d(8, 3, 2, "same", activation="silu", name="stem"),
        DepthwiseConv2d(3, 2, "same", depth_multiplier=2, activation="relu6", name="dw"),
        BatchNorm(eps=1e-3, name="bn"), ReLU(6.0, name="relu6"), ReLU(2.0, 0.1, 0.2, name="relu_threshold"),
        SeparableConv2d(8, 3, padding="same", dilation=2, activation="hard_swish", name="sep"),
        Conv2d(8, 2, padding="same", activation="hard_sigmoid", name="even"), Cropping2D(((1, 0), (0, 1)), name="crop"),
        MaxPool(3, 2, "same", name="maxpool"), AvgPool(3, 2, "same", name="avgpool"),
        LayerNormalization(1, name="ln"), GlobalMaxPool(keepdims=True, name="gmp"),
        Reshape((8,), channels_last=True, name="reshape"), Activation("mish", name="mish"),
        Reshape((8, 1, 1), name="se_reshape"), GlobalAvgPool(name="gap"), Dense(3, name="out"),
    ], (3, 16, 16), name="backbone_layers")
    with torch.no_grad():
        net.layer("norm").mean.uniform_(-1, 1)
        net.layer("norm").variance.uniform_(0.5, 2)
        net.layer("bn").running_var.uniform_(0.5, 2)
    return net


@pytest.mark.parametrize("make", [mlp, cnn, backbone_layers])
def test_onnx_runtime_output_equals_graftnet_output(tmp_path, make):
    net = make().train()
    path = export_onnx(net, tmp_path / "net.onnx")
    assert net.training  # the network's mode is restored
    for batch in (1, 7):  # the batch axis is dynamic
        x = torch.randn(batch, *net.input_shape)
        assert check_onnx(net, path, x) <= TOLERANCE
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]


def test_fixed_batch_size_and_opset(tmp_path):
    net = Network([Conv2d(2, 3), GlobalAvgPool(), Dense(3)], (1, 8, 8))
    path = export_onnx(net, tmp_path / "fixed.onnx", batch_size=3, opset=18)
    model = onnx.load(path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 1, 8, 8]
    assert model.opset_import[0].version == 18
    assert check_onnx(net, path, torch.randn(3, 1, 8, 8)) <= TOLERANCE


def test_bad_batch_size_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match=r"batch_size must be a positive integer or None"):
        export_onnx(mlp(), tmp_path / "x.onnx", batch_size=0)
    assert list(tmp_path.iterdir()) == []


def test_without_onnxscript_the_torchscript_exporter_is_used(tmp_path, monkeypatch):
    calls = []
    export = torch.onnx.export

    def spy(*args, **kwargs):
        calls.append(kwargs["dynamo"])
        return export(*args, **kwargs)

    monkeypatch.setattr(onnx_io, "_has_onnxscript", lambda: False)
    monkeypatch.setattr(torch.onnx, "export", spy)
    net = cnn()
    path = export_onnx(net, tmp_path / "legacy.onnx")
    assert calls == [False]
    assert check_onnx(net, path, torch.randn(5, *net.input_shape)) <= TOLERANCE
