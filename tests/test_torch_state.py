"""PyTorch state dicts in and out: rename rules, strict reports, refusing pickles, nn.Sequential import."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from graftnet.errors import CheckpointError, ImportFormatError
from graftnet.io.torch_state import (
    from_torch_module,
    load_state,
    read_state,
    save_state,
    spec_from_safetensors,
)
from graftnet.network import Network

def _leave_marker(path: str) -> None:
    Path(path).write_text("unpickling ran code")


class Payload:
    """An object whose unpickling would run code (it would write a file at ``path``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (_leave_marker, (str(self.path),))


def torch_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(6, 5), act=nn.ReLU(), fc2=nn.Linear(5, 3)))


def graftnet_mlp() -> Network:
    torch.manual_seed(1)
    return Network.mlp(6, [5], 3)  # hidden1 (relu), outputs


RULES = [(r"fc1\.(.*)", r"hidden1.\1"), (r"fc2\.(.*)", r"outputs.\1")]


def same_outputs(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> bool:
    x = torch.randn(8, *shape)
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_pt_state_dict_with_rename_rules_reproduces_the_module(tmp_path):
    module = torch_mlp()
    torch.save(module.state_dict(), tmp_path / "mlp.pt")
    net = graftnet_mlp()
    report = load_state(net, tmp_path / "mlp.pt", rename=RULES)
    assert report.ok
    assert report.matched == [("fc1.weight", "hidden1.weight"), ("fc1.bias", "hidden1.bias"),
                              ("fc2.weight", "outputs.weight"), ("fc2.bias", "outputs.bias")]
    assert same_outputs(module, net, (6,))


def test_rename_rules_as_a_dict_and_from_a_dict_of_tensors():
    net = graftnet_mlp()
    report = load_state(net, torch_mlp().state_dict(), rename=dict(RULES))
    assert report.ok and report.source == "<state dict>"


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_training_checkpoint_wrappers_are_unwrapped(tmp_path, wrapper):
    module = torch_mlp()
    torch.save({wrapper: module.state_dict(), "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pth")
    net = graftnet_mlp()
    report = load_state(net, tmp_path / "ckpt.pth", rename=RULES)
    assert report.notes == [f"unwrapped {wrapper!r}; left out epoch, optimizer"]
    assert same_outputs(module, net, (6,))


def test_a_pickled_object_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"x": Payload(marker), "w": torch.zeros(2)}, tmp_path / "evil.pt")
    with pytest.raises(ImportFormatError, match=r"evil\.pt contains pickled objects other than tensors, which "
                                                 r"graftnet will not unpickle.*refers to .*_leave_marker"):
        load_state(graftnet_mlp(), tmp_path / "evil.pt")
    assert not marker.exists()


def test_legacy_non_zip_torch_files_load(tmp_path):
    module = torch_mlp()
    torch.save(module.state_dict(), tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    net = graftnet_mlp()
    assert load_state(net, tmp_path / "old.bin", rename=RULES).ok
    assert same_outputs(module, net, (6,))


def test_strict_load_names_every_problem_and_changes_nothing():
    state = torch_mlp().state_dict()
    state = {"hidden1.weight": torch.zeros(5, 4), "hidden1.bias": state["fc1.bias"], "extra.weight": torch.zeros(1)}
    net = graftnet_mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"2 missing, 1 unexpected, 1 mismatched; nothing was loaded"
                                              r"(.|\n)*'hidden1.weight' -> 'hidden1.weight': source shape \(5, 4\), "
                                              r"target shape \(5, 6\)(.|\n)*unexpected 'extra.weight'"):
        load_state(net, state)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_non_strict_load_reports_missing_unexpected_and_mismatched():
    state = {"hidden1.weight": torch.zeros(5, 4), "hidden1.bias": torch.ones(5), "extra.weight": torch.zeros(1)}
    net = graftnet_mlp()
    report = load_state(net, state, strict=False)
    assert not report.ok
    assert report.matched == [("hidden1.bias", "hidden1.bias")]
    assert report.missing == ["outputs.weight", "outputs.bias"]
    assert report.unexpected == ["extra.weight"]
    assert report.mismatched == [("hidden1.weight", "hidden1.weight", (5, 4), (5, 6))]
    assert torch.equal(net.layer("hidden1").bias, torch.ones(5))  # what fits was loaded


def test_safetensors_round_trip_keeps_weights_and_spec(tmp_path):
    net = Network.mlp((1, 8, 8), [7], 3, batch_norm=True)
    with torch.no_grad():
        net.layer("bn1").running_var.uniform_(0.5, 2.0)
    path = save_state(net, tmp_path / "net.safetensors")
    copy = Network.from_spec(spec_from_safetensors(path))
    report = load_state(copy, path)
    assert report.ok and len(report.matched) == len(net.state_dict())
    assert all(torch.equal(v, copy.state_dict()[k]) for k, v in net.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["net.safetensors"]  # no temporary file left


def test_read_state_refuses_a_file_without_a_dict_of_tensors(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ImportFormatError, match=r"list\.pt holds a list, not a dict of tensors"):
        read_state(tmp_path / "list.pt")


def test_from_torch_module_converts_a_cnn_with_batchnorm():
    torch.manual_seed(2)
    module = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, bias=False), nn.LeakyReLU(0.1), nn.AvgPool2d(1), nn.ELU(0.5),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(6, 5), nn.SELU(), nn.GELU(),
        nn.Linear(5, 3), nn.Softmax(dim=1))
    with torch.no_grad():
        module[1].running_mean.uniform_(-1, 1)
        module[1].running_var.uniform_(0.5, 2)
    module.train()
    net = from_torch_module(module, (3, 10, 10))
    assert module.training  # its mode is left as it was
    assert net.layer_names[:3] == ["conv2d_0", "batchnorm2d_1", "relu_2"]
    assert same_outputs(module, net, (3, 10, 10))


def test_from_torch_module_keeps_valid_child_names():
    net = from_torch_module(torch_mlp(), (6,))
    assert net.layer_names == ["fc1", "act", "fc2"]


def test_from_torch_module_names_the_module_it_cannot_convert():
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.Upsample(scale_factor=2)))
    with pytest.raises(ImportFormatError, match=r"(?s)module '1.0' \(Upsample\): Upsample is not supported"
                                                r".*supported modules: Linear"):
        from_torch_module(module, (1, 6, 6))


def test_from_torch_module_converts_more_than_sequentials():
    """It is the fx converter under graftnet 0.1's name: a module with a skip converts too."""

    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x))) + x

    torch.manual_seed(0)
    net = from_torch_module(Skip(), (4,))
    assert net.layer_names == ["fc1", "relu", "fc2", "add"]
    assert net.inputs_of("add") == ["fc2", "input"]
    with pytest.raises(ImportFormatError, match=r"Linear is one layer: wrap it, e.g. nn.Sequential\(module\)"):
        from_torch_module(nn.Linear(2, 2), (2,))


class _Plain:
    """A class a pickle refers to by name (never instantiated on loading)."""


def _raw_pickle(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case, refers_to", [
    ("zip_object", f"{__name__}._Plain"),
    ("legacy_object", f"{__name__}._Plain"),
    ("module", "torch.nn.modules.linear.Linear"),
    ("numpy", "numpy"),
    ("raw_os_system", "os.system"),  # a plain pickle that would run a command: torch's wording differs here
    ("raw_protocol4_object", f"{__name__}._Plain"),
])
def test_every_pickle_refusal_names_the_global_and_gives_no_bypass_advice(tmp_path, case, refers_to):
    """Whatever torch's weights-only loader says (it words these cases differently, and some of
    its messages advise weights_only=False), graftnet names the global the file refers to, does not
    call the file corrupt, and never repeats the advice to load with weights_only=False."""
    import pickle

    import numpy as np

    path = tmp_path / f"{case}.pt"
    if case == "zip_object":
        torch.save({"w": torch.zeros(2), "o": _Plain()}, path)
    elif case == "legacy_object":
        torch.save({"w": torch.zeros(2), "o": _Plain()}, path, _use_new_zipfile_serialization=False)
    elif case == "module":
        torch.save(nn.Linear(2, 2), path)
    elif case == "numpy":
        torch.save({"w": np.zeros(3)}, path)
    elif case == "raw_os_system":
        _raw_pickle(path, b"\x80\x02cos\nsystem\n(X\x04\x00\x00\x00trueS'x'\ntR.")
    else:
        _raw_pickle(path, pickle.dumps(_Plain(), protocol=4))
    with pytest.raises(ImportFormatError) as raised:
        load_state(graftnet_mlp(), path)
    message = str(raised.value)
    assert f"{case}.pt contains pickled objects other than tensors" in message
    assert f"refers to {refers_to}" in message
    assert "weights_only" not in message and "corrupt" not in message and "truncated" not in message


def test_a_truncated_or_foreign_pickle_is_called_so(tmp_path):
    import pickle

    cut = _raw_pickle(tmp_path / "cut.pt", pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(ImportFormatError,
                       match=r"cut\.pt (is not a valid|cannot be read as a) PyTorch file .*truncated, corrupt") as raised:
        load_state(graftnet_mlp(), cut)
    assert "weights_only" not in str(raised.value)
    plain = _raw_pickle(tmp_path / "plain.pt", pickle.dumps({"a": 1}, protocol=4))  # whole, but not torch.save's
    with pytest.raises(ImportFormatError, match=r"plain\.pt is a pickle that torch's weights-only loader cannot "
                                                r"read .*re-save it with torch\.save") as raised:
        load_state(graftnet_mlp(), plain)
    assert "weights_only=False" not in str(raised.value) and "corrupt" not in str(raised.value)


def test_pickle_globals_reads_opcodes_without_running_anything():
    import pickle

    from graftnet.io.torch_state import pickle_globals

    assert pickle_globals(pickle.dumps(OrderedDict(a=1), protocol=2)) == (["collections.OrderedDict"], True)
    assert pickle_globals(pickle.dumps(_Plain(), protocol=4)) == ([f"{__name__}._Plain"], True)
    assert pickle_globals(b"\x80\x02cos\nsystem\n") == (["os.system"], False)  # truncated: no whole stream
