"""gn.backbones.torchvision_resnet*: torchvision's graphs built natively, loading torchvision state dicts."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torchvision_reference import randomize_batchnorm, resnet18, resnet34, resnet50

import graftnet as gn
from graftnet.backbones.torchvision_family import TORCHVISION_WEIGHTS, load_torchvision_weights
from graftnet.errors import CheckpointError


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _reference(make, seed: int, num_classes: int = 1000) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(make(num_classes=num_classes), seed=seed).eval()


def _graph(net: gn.Network) -> list[dict]:
    """The spec's layers without the initializers (the builder's convs use He's, a converted
    module's the default; the weights are loaded over either)."""
    return [{k: v for k, v in layer.items() if k != "init"} for layer in net.to_spec()["layers"]]


@pytest.mark.parametrize("make, build", [(resnet18, gn.backbones.torchvision_resnet18),
                                         (resnet50, gn.backbones.torchvision_resnet50)])
def test_the_builder_is_the_graph_from_torch_makes_and_loads_a_torchvision_pth_exactly(tmp_path, make, build):
    module = _reference(make, seed=0, num_classes=10)
    path = tmp_path / "resnet.pth"
    torch.save(module.state_dict(), path)  # what torchvision's files are: a state dict, readable weights-only
    net = build(num_classes=10, input_shape=(3, 32, 32), weights=path)
    assert _graph(net) == _graph(gn.from_torch(module, torch.randn(2, 3, 32, 32)))
    assert list(net.state_dict()) == list(module.state_dict())
    assert net.info["weights"]["ok"] and not net.info["weights"]["ignored"]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (net.eval()(x) - module(x)).abs().max().item() <= 1e-5


def test_resnet34_has_torchvision_keys_and_loads_safetensors(tmp_path):
    module = _reference(resnet34, seed=1, num_classes=10)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp_path / "resnet34.safetensors"))
    net = gn.backbones.torchvision_resnet34(num_classes=10, input_shape=(3, 32, 32),
                                            weights=tmp_path / "resnet34.safetensors")
    assert list(net.state_dict()) == list(module.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (net.eval()(x) - module(x)).abs().max().item() <= 1e-5


def test_a_file_without_batchnorm_counters_loads_and_says_so():
    module = _reference(resnet18, seed=2)
    old_style = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    net = gn.backbones.torchvision_resnet18(input_shape=(3, 32, 32), weights=old_style)
    notes = net.info["weights"]["notes"]
    assert net.info["weights"]["ok"]
    assert any(n.startswith("bn1.num_batches_tracked: not in the source") for n in notes)


def test_a_head_of_another_size_or_no_head_is_left_out_and_reported():
    module = _reference(resnet18, seed=3)  # 1000 classes, as torchvision's files
    state = module.state_dict()
    net = gn.backbones.torchvision_resnet18(num_classes=5, input_shape=(3, 32, 32), weights=state)
    report = net.info["weights"]
    assert report["ignored"] == ["fc.weight", "fc.bias"]
    assert any("fc has shape (1000, 512), the model's (5, 512)" in n for n in report["notes"])
    assert torch.equal(net.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])

    base = gn.backbones.torchvision_resnet18(include_top=False, pooling="avg", input_shape=(3, 32, 32),
                                             weights=state)
    assert base.layer_names[-2:] == ["avgpool", "flatten"] and base.output_shape == (512,)
    assert any("the model has no fc (include_top=False)" in n for n in base.info["weights"]["notes"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = torch.flatten(module.avgpool(module.layer4(module.layer3(module.layer2(module.layer1(
            module.maxpool(module.relu(module.bn1(module.conv1(x))))))))), 1)
        assert (base.eval()(x) - features).abs().max().item() <= 1e-5


def test_keys_that_do_not_fit_load_nothing_and_are_named():
    module = _reference(resnet18, seed=4)
    state = dict(module.state_dict())
    state["layer1.0.conv3.weight"] = torch.zeros(1)
    net = gn.backbones.torchvision_resnet18(input_shape=(3, 32, 32))
    before = net.state_dict()["conv1.weight"].clone()
    with pytest.raises(CheckpointError, match=r"(?s)nothing was loaded.*unexpected 'layer1.0.conv3.weight'"):
        load_torchvision_weights(net, state)
    assert torch.equal(net.state_dict()["conv1.weight"], before)


def test_named_weights_offline_say_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CheckpointError) as caught:
        gn.backbones.torchvision_resnet18(weights="IMAGENET1K_V1", download=False)
    message = str(caught.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    with pytest.raises(CheckpointError, match=r"no such file, and not a torchvision weights name; resnet50 has "
                                              r"IMAGENET1K_V1, IMAGENET1K_V2"):
        gn.backbones.torchvision_resnet50(weights="IMAGENET1K_V3", download=False)


def test_a_cached_file_under_torchvision_name_is_checked_against_its_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(_reference(resnet18, seed=5).state_dict(), folder / "resnet18-f37072fd.pth")  # not the real file
    with pytest.raises(CheckpointError, match=r"resnet18-f37072fd.pth: SHA-256 .* does not start with f37072fd"):
        gn.backbones.torchvision_resnet18(input_shape=(3, 32, 32), weights="DEFAULT", download=False)


def test_every_canonical_url_carries_its_hash_prefix_in_its_file_name():
    for arch, files in TORCHVISION_WEIGHTS.items():
        for file in files.values():
            assert file.url.startswith("https://download.pytorch.org/models/")
            assert file.filename == f"{arch}-{file.sha256_prefix}.pth"
