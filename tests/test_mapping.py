"""load_tensors / apply_rename / MappingReport: the all-or-nothing loader every importer uses."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn

from graftnet.errors import CheckpointError, ConfigError, ShapeError
from graftnet.io.mapping import MappingReport, apply_rename, load_tensors
from graftnet.layers import BatchNorm, Dense
from graftnet.network import Network


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(hidden1=nn.Linear(3, 4), bn1=nn.BatchNorm1d(4), outputs=nn.Linear(4, 2)))


def tf_style_tensors() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Source tensors in TF layout (kernels (in, out)) and the names they map to."""
    rng = np.random.default_rng(0)
    tensors = {
        "hidden1/kernel": rng.standard_normal((3, 4)).astype(np.float32),
        "hidden1/bias": rng.standard_normal(4),  # float64: converted to the target's float32
        "bn1/gamma": rng.random(4, dtype=np.float32),
        "bn1/beta": rng.standard_normal(4).astype(np.float32),
        "bn1/moving_mean": rng.standard_normal(4).astype(np.float32),
        "bn1/moving_variance": rng.random(4, dtype=np.float32) + 0.5,
        "outputs/kernel": rng.standard_normal((4, 2)).astype(np.float32),
        "outputs/bias": rng.standard_normal(2).astype(np.float32),
    }
    names = {"hidden1/kernel": "hidden1.weight", "hidden1/bias": "hidden1.bias", "bn1/gamma": "bn1.weight",
             "bn1/beta": "bn1.bias", "bn1/moving_mean": "bn1.running_mean", "bn1/moving_variance": "bn1.running_var",
             "outputs/kernel": "outputs.weight", "outputs/bias": "outputs.bias"}
    return tensors, names


TRANSPOSE = {"hidden1/kernel": torch.t, "outputs/kernel": torch.t}


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------- apply_rename
def test_apply_rename_chains_rules_in_order_on_full_matches() -> None:
    rules = [(r"dnn/(.*)", r"\1"), (r"(\w+)/kernel", r"\1.weight"), (r"(\w+)/bias", r"\1.bias")]
    renamed = apply_rename(["dnn/hidden1/kernel", "dnn/hidden1/bias", "global_step", "xdnn/a/kernel"], rules)
    assert renamed == {"dnn/hidden1/kernel": "hidden1.weight", "dnn/hidden1/bias": "hidden1.bias",
                       "global_step": "global_step",  # no rule matches: unchanged
                       "xdnn/a/kernel": "xdnn/a/kernel"}  # "dnn/(.*)" must match the whole key


def test_apply_rename_accepts_a_dict_of_rules() -> None:
    assert apply_rename(["hidden1.weight"], {r"hidden(\d)\.(.*)": r"fc\1.\2"}) == {"hidden1.weight": "fc1.weight"}


def test_apply_rename_refuses_two_keys_landing_on_one_name() -> None:
    with pytest.raises(ConfigError, match=r"'a/kernel' and 'b/kernel' both map to 'layer.weight'"):
        apply_rename(["a/kernel", "b/kernel"], [(r"\w/kernel", "layer.weight")])


def test_apply_rename_names_a_bad_regex() -> None:
    with pytest.raises(ConfigError, match=r"rename rule 0: 'hidden\(' is not a valid regex"):
        apply_rename(["x"], [("hidden(", "y")])


# ---------------------------------------------------------------------------------- load_tensors
def test_load_tensors_copies_transposes_and_converts_dtypes() -> None:
    net = small_net()
    tensors, names = tf_style_tensors()
    report = load_tensors(net, tensors, rename=names, transforms=TRANSPOSE, source="model.ckpt")
    assert report.ok
    assert report.transposed == ["hidden1.weight", "outputs.weight"]
    assert report.matched[0] == ("hidden1/kernel", "hidden1.weight")
    assert len(report.matched) == 8
    assert torch.equal(net.hidden1.weight, torch.from_numpy(tensors["hidden1/kernel"]).t())
    assert net.hidden1.bias.dtype == torch.float32
    assert torch.equal(net.hidden1.bias, torch.from_numpy(tensors["hidden1/bias"]).float())
    assert torch.equal(net.bn1.running_var, torch.from_numpy(tensors["bn1/moving_variance"]))
    assert net.hidden1.weight.requires_grad  # still a trainable parameter, loaded in place


def test_load_tensors_reproduces_a_reference_forward_pass() -> None:
    tensors, names = tf_style_tensors()
    net = small_net()
    load_tensors(net, tensors, rename=names, transforms=TRANSPOSE)
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    h = x @ tensors["hidden1/kernel"] + tensors["hidden1/bias"].astype(np.float32)
    h = (h - tensors["bn1/moving_mean"]) / np.sqrt(tensors["bn1/moving_variance"] + 1e-5)
    expected = (h * tensors["bn1/gamma"] + tensors["bn1/beta"]) @ tensors["outputs/kernel"] + tensors["outputs/bias"]
    with torch.no_grad():
        got = net.eval()(torch.from_numpy(x))
    torch.testing.assert_close(got, torch.from_numpy(expected), atol=1e-5, rtol=1e-5)


def test_num_batches_tracked_missing_from_the_source_is_a_note_not_an_error() -> None:
    net = small_net()
    tensors, names = tf_style_tensors()
    report = load_tensors(net, tensors, rename=names, transforms=TRANSPOSE)
    assert report.missing == []
    assert report.notes == ["bn1.num_batches_tracked: not in the source; kept at 0"]


def test_strict_mismatch_raises_names_everything_and_loads_nothing() -> None:
    net = small_net()
    before = snapshot(net)
    tensors, names = tf_style_tensors()
    tensors["outputs/kernel"] = np.zeros((4, 3), np.float32)
    with pytest.raises(CheckpointError) as caught:
        load_tensors(net, tensors, rename=names, transforms=TRANSPOSE, source="my_model.ckpt")
    message = str(caught.value)
    assert "my_model.ckpt" in message
    assert "'outputs/kernel' -> 'outputs.weight': source shape (4, 3) (transposed: (3, 4)), target shape (2, 4)" \
        in message
    assert "nothing was loaded" in message
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a failed strict load changed the module"


def test_strict_unexpected_key_suggests_a_close_match_and_lists_the_model() -> None:
    net = small_net()
    tensors, names = tf_style_tensors()
    names["hidden1/kernel"] = "hiden1.weight"
    with pytest.raises(CheckpointError, match=r"unexpected 'hidden1/kernel' -> 'hiden1.weight': no such key in "
                                              r"the model\. Did you mean 'hidden1\.weight'\?") as caught:
        load_tensors(net, tensors, rename=names, transforms=TRANSPOSE)
    assert "the model has: hidden1.weight, hidden1.bias, bn1.weight" in str(caught.value)
    assert "missing (in the model, not in the source): hidden1.weight" in str(caught.value)


def test_non_strict_loads_what_fits_and_reports_the_rest() -> None:
    net = small_net()
    before = snapshot(net)
    tensors, names = tf_style_tensors()
    del tensors["bn1/beta"]
    tensors["outputs/bias"] = np.zeros(7, np.float32)
    tensors["extra/kernel"] = np.zeros((2, 2), np.float32)
    report = load_tensors(net, tensors, rename=names, transforms=TRANSPOSE, strict=False)
    assert not report.ok
    assert report.missing == ["bn1.bias"]
    assert report.unexpected == ["extra/kernel"]
    assert report.mismatched == [("outputs/bias", "outputs.bias", (7,), (2,))]
    assert torch.equal(net.bn1.bias, before["bn1.bias"])
    assert torch.equal(net.outputs.bias, before["outputs.bias"])
    assert torch.equal(net.bn1.weight, torch.from_numpy(tensors["bn1/gamma"]))


def test_a_transform_that_does_not_fit_the_tensor_is_a_mismatch() -> None:
    net = small_net()
    tensors, names = tf_style_tensors()
    tensors["outputs/kernel"] = np.zeros((2, 2, 2), np.float32)  # torch.t refuses 3-D tensors
    report = load_tensors(net, tensors, rename=names, transforms=TRANSPOSE, strict=False)
    assert report.mismatched == [("outputs/kernel", "outputs.weight", (2, 2, 2), (2, 4))]
    assert "outputs.weight" not in report.transposed


def test_two_sources_for_one_target_are_refused() -> None:
    net = small_net()
    with pytest.raises(ConfigError, match="'a' and 'b' both map to 'outputs.bias'"):
        load_tensors(net, {"a": np.zeros(2), "b": np.zeros(2)}, rename={"a": "outputs.bias", "b": "outputs.bias"})


def test_torch_tensors_and_a_graftnet_network_work_without_rename() -> None:
    net = Network([Dense(4, "relu", name="hidden1"), BatchNorm(name="bn1"), Dense(2, name="outputs")], (3,))
    source = {k: torch.randn_like(v.float()) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    report = load_tensors(net, source)
    assert report.ok and report.transposed == [] and len(report.matched) == 9
    assert torch.equal(net.outputs.weight, source["outputs.weight"])


def test_report_to_dict_is_json_and_str_is_readable() -> None:
    net = small_net()
    tensors, names = tf_style_tensors()
    tensors["outputs/bias"] = np.zeros(7, np.float32)
    report = load_tensors(net, tensors, rename=names, transforms=TRANSPOSE, strict=False, source="x.ckpt")
    report.ignored = ["global_step"]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["mismatched"] == [["outputs/bias", "outputs.bias", [7], [2]]]
    assert data["transposed"] == ["hidden1.weight", "outputs.weight"]
    text = str(report)
    assert text.splitlines()[0] == ("x.ckpt: 7 matched, 0 missing, 0 unexpected, 1 mismatched, "
                                    "2 transposed, 1 ignored (INCOMPLETE)")
    assert "hidden1/kernel      -> hidden1.weight  (transposed)" in text
    assert "MISMATCHED outputs/bias -> outputs.bias: source (7,), target (2,)" in text
    assert "ignored: global_step" in text


def test_empty_report_is_ok() -> None:
    assert MappingReport().ok


def test_kernel_layouts_round_trip_and_match_keras_conventions() -> None:
    from graftnet.io.mapping import kernel_from_torch, kernel_to_torch

    dense = torch.arange(6.0).reshape(2, 3)  # Keras (in, out)
    assert torch.equal(kernel_to_torch(dense), dense.t())
    conv = torch.randn(3, 5, 2, 4)  # HWIO
    oihw = kernel_to_torch(conv)
    assert oihw.shape == (4, 2, 3, 5) and torch.equal(oihw[1, 0, 2, 4], conv[2, 4, 0, 1])
    assert torch.equal(kernel_from_torch(oihw), conv)
    conv1d = torch.randn(3, 2, 7)  # (W, I, O)
    assert kernel_to_torch(conv1d).shape == (7, 2, 3)
    assert torch.equal(kernel_from_torch(kernel_to_torch(conv1d)), conv1d)
    with pytest.raises(ShapeError, match=r"2 to 5 axes, got shape \(4,\)"):
        kernel_to_torch(torch.zeros(4))
