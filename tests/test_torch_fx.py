"""gn.from_torch: any traceable PyTorch module as a graftnet graph, with its names, weights and outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision_reference import randomize_batchnorm, resnet18, resnet50

import graftnet as gn
from graftnet.errors import ImportFormatError


@pytest.fixture(autouse=True)
def _one_thread():
    """Small convolutions run faster on one thread than on cores other tests are using."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def outputs_agree(module: nn.Module, net: gn.Network, x: torch.Tensor) -> float:
    module.eval()
    net.eval()
    with torch.no_grad():
        return (module(x) - net(x)).abs().max().item()


class SmallResNet(nn.Module):
    """A residual CNN written the way people write them: modules and functions mixed."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8, eps=1e-3, momentum=0.01)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding="same"), nn.BatchNorm2d(8), nn.ReLU())
        self.side = nn.Conv2d(8, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        y = self.block(x)
        y += x  # the residual, in place, as torchvision writes it
        y = F.max_pool2d(y, 2)
        z = torch.cat([y, self.side(y).sigmoid()], dim=1)  # (B, 12, 4, 4)
        z = self.pool(z)
        return self.fc(self.drop(z.view(z.size(0), -1)))


def test_a_small_residual_cnn_keeps_its_names_its_keys_and_its_outputs():
    torch.manual_seed(0)
    module = randomize_batchnorm(SmallResNet())
    module.train()
    x = torch.randn(3, 3, 8, 8)
    net = gn.from_torch(module, x)
    assert module.training  # its mode is left as it was
    assert net.layer_names == ["stem", "bn", "relu", "block.0", "block.1", "block.2", "add", "max_pool2d", "side",
                               "sigmoid", "cat", "pool", "view", "drop", "fc"]
    assert net.inputs_of("add") == ["block.2", "relu"]
    assert net.inputs_of("cat") == ["max_pool2d", "sigmoid"]
    assert list(net.state_dict()) == list(module.state_dict())  # 'block.1.running_var', ...
    bn = net.spec_of("bn")
    assert (bn.eps, bn.momentum) == (1e-3, 0.01)  # carried over exactly
    assert net.spec_of("block.0").padding == "same" and net.spec_of("stem").padding == 1
    assert outputs_agree(module, net, torch.randn(5, 3, 8, 8)) <= 1e-5
    assert net.info["parity"]["max_abs_diff"] <= 1e-5
    rebuilt = gn.Network.from_spec(net.to_spec())  # a plain graftnet graph: it saves and rebuilds
    assert rebuilt.layer_names == net.layer_names


class FunctionalMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.out = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.norm = nn.BatchNorm1d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.fc1(x), 0.2)
        x = torch.tanh(self.norm(x)) * 2.0 + 0.5
        x = F.elu(self.fc2(x), alpha=0.7) - F.gelu(x)
        x = F.silu(x) + F.hardswish(x) + F.relu6(x) + F.selu(x) + x.relu() + torch.relu(x) + x.sigmoid()
        x = F.dropout(self.fc3(x), p=0.1, training=self.training)
        return F.softmax(self.out(x), dim=1)


def test_an_mlp_with_functional_activations_converts():
    torch.manual_seed(1)
    module = FunctionalMLP()
    net = gn.from_torch(module, torch.randn(4, 6))
    activations = {spec.name: spec.activation for spec in net.specs if spec.type == "activation"}
    assert activations == {"leaky_relu": "leaky_relu(0.2)", "tanh": "tanh", "elu": "elu(0.7)", "gelu": "gelu",
                           "silu": "silu", "hardswish": "hard_swish", "relu6": "relu6", "selu": "selu",
                           "relu": "relu", "relu_1": "relu", "sigmoid": "sigmoid", "softmax": "softmax"}
    assert net.spec_of("dropout").rate == 0.1
    assert [net.spec_of(n).type for n in ("mul", "add", "sub")] == ["rescaling", "rescaling", "subtract"]
    assert outputs_agree(module, net, torch.randn(8, 6)) <= 1e-5


def test_a_torchvision_resnet18_keeps_torchvision_names_keys_and_outputs(tmp_path):
    torch.manual_seed(2)
    module = randomize_batchnorm(resnet18(num_classes=10))
    net = gn.from_torch(module, torch.randn(2, 3, 32, 32))
    assert net.layer_names[:11] == ["conv1", "bn1", "relu", "maxpool", "layer1.0.conv1", "layer1.0.bn1",
                                    "layer1.0.relu", "layer1.0.conv2", "layer1.0.bn2", "layer1.0.add",
                                    "layer1.0.relu_1"]
    assert net.inputs_of("layer2.0.add") == ["layer2.0.bn2", "layer2.0.downsample.1"]
    assert net.inputs_of("layer2.0.downsample.0") == ["layer1.1.relu_1"]
    assert net.layer_names[-3:] == ["avgpool", "flatten", "fc"]
    assert list(net.state_dict()) == list(module.state_dict())  # 'layer4.1.conv2.weight', ...
    for key, value in module.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    x = torch.randn(3, 3, 32, 32)
    assert outputs_agree(module, net, x) <= 1e-5
    gn.save_model(net, tmp_path / "resnet18")  # spec + safetensors, names with dots included
    loaded = gn.load_model(tmp_path / "resnet18")
    assert loaded.layer_names == net.layer_names
    assert outputs_agree(module, loaded, x) <= 1e-5


def test_a_torchvision_resnet50_converts():
    torch.manual_seed(3)
    module = randomize_batchnorm(resnet50(num_classes=10))
    net = gn.from_torch(module, torch.randn(2, 3, 32, 32))
    assert [n for n in net.layer_names if n.startswith("layer4.0.")] == [
        "layer4.0.conv1", "layer4.0.bn1", "layer4.0.relu", "layer4.0.conv2", "layer4.0.bn2", "layer4.0.relu_1",
        "layer4.0.conv3", "layer4.0.bn3", "layer4.0.downsample.0", "layer4.0.downsample.1", "layer4.0.add",
        "layer4.0.relu_2"]
    assert net.spec_of("layer4.0.conv2").stride == 2  # v1.5: the stride on the 3x3 conv
    assert list(net.state_dict()) == list(module.state_dict())
    assert outputs_agree(module, net, torch.randn(2, 3, 32, 32)) <= 1e-5


def test_modules_that_forward_never_calls_are_left_out_and_listed():
    class WithSpare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.spare = nn.Linear(3, 2), nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            unused = self.spare(x)  # noqa: F841 - computed, never used: dead code fx drops
            return self.fc(x)

    net = gn.from_torch(WithSpare(), torch.randn(2, 3))
    assert net.layer_names == ["fc"]
    assert net.info["left_out"] == ["spare.weight", "spare.bias"]


class Unconvertible(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 4, batch_first=True)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, T, 4)
        ordered, _ = torch.sort(out[:, -1], dim=1)
        return self.fc(self.fc(ordered))  # the same weights twice


def test_every_obstacle_is_listed_at_once_naming_modules_and_operations():
    with pytest.raises(ImportFormatError) as caught:
        gn.from_torch(Unconvertible(), torch.randn(2, 3, 4))
    message = str(caught.value)
    assert "module 'rnn' (LSTM): LSTM is not supported" in message
    assert "operation 'getitem_2' (operator.getitem): indexes or slices a tensor" in message  # out[:, -1]
    assert "operation 'sort' (torch.sort): is not supported" in message
    assert "module 'fc' (Linear) is called 2 times (fx nodes fc, fc_1)" in message
    assert "supported modules: Linear, Conv2d" in message


def test_a_reshape_other_than_flatten_is_refused_with_its_shapes():
    class Regroup(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).view(x.size(0), 2, -1)

    with pytest.raises(ImportFormatError, match=r"operation 'view' \(Tensor.view\): reshapes \(B, 4, 4, 4\) to "
                                                r"\(B, 2, 32\); graftnet reshapes to \(batch, -1\) only"):
        gn.from_torch(Regroup(), torch.randn(2, 1, 6, 6))


def test_a_data_dependent_branch_reports_what_fx_said():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                return self.fc(x)
            return x

    with pytest.raises(ImportFormatError, match=r"torch.fx cannot trace Branchy: .*symbolically traced variables "
                                                r"cannot be used as inputs to control flow"):
        gn.from_torch(Branchy(), torch.randn(2, 3))


def test_transfer_on_a_converted_resnet_selects_by_torch_names_freezes_and_fits(tmp_path):
    from graftnet.data import digits, from_arrays

    torch.manual_seed(4)
    module = randomize_batchnorm(resnet18(num_classes=10))
    net = gn.from_torch(module, torch.randn(2, 3, 32, 32))
    stage4 = net.select("layer4.*")
    assert stage4[0] == "layer4.0.conv1" and stage4[-1] == "layer4.1.relu_1" and len(stage4) == 16
    net.freeze().unfreeze("layer4.*|fc")
    assert net.trainable[:1] == ["layer4.0.conv1"] and net.trainable[-1] == "fc"

    data = digits()  # sklearn's 8x8 digits, (N, 1, 8, 8), as 3-channel 32x32 images
    def images(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    task = from_arrays(images(data.train.x[:192]), data.train.y[:192], images(data.valid.x[:64]),
                       data.valid.y[:64], classes=data.classes)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    history = gn.fit(net, task, epochs=1, batch_size=64, optimizer=gn.Adam(lr=1e-3), seed=0, verbose=False)
    after = net.state_dict()
    assert torch.equal(after["layer3.1.conv2.weight"], before["layer3.1.conv2.weight"])  # frozen
    assert torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])  # frozen BatchNorm: inference mode
    assert not torch.equal(after["layer4.1.conv2.weight"], before["layer4.1.conv2.weight"])  # trained
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    assert len(history) == 1 and "cache_build_seconds" in history.last()  # the frozen stages ran once, cached


def test_forward_takes_one_tensor_other_arguments_are_fixed_at_their_defaults():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
            return self.fc(x) if scale is None else self.fc(x) * scale

    class Pair(Scaled):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.fc(x) + y

    assert gn.from_torch(Scaled(), torch.randn(2, 2)).layer_names == ["fc"]
    with pytest.raises(ImportFormatError, match=r"Pair.forward takes 2 tensor inputs \(x, y\); a graftnet network "
                                                r"takes one"):
        gn.from_torch(Pair(), torch.randn(2, 2))
