"""graft, set_weights/get_weights, freezing helpers and staged fine-tuning plans."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graftnet.cache import FeatureCache, weights_fingerprint
from graftnet.data import digits
from graftnet.errors import CheckpointError, ConfigError, ShapeError
from graftnet.io.checkpoint import load_model, read_checkpoint, save_model
from graftnet.layers import Conv2d, Dense, Flatten, MaxPool
from graftnet.network import Network
from graftnet.optim import SGD
from graftnet.train import fit
from graftnet.transfer import FineTune, Stage, freeze_below, get_weights, graft, set_weights, unfreeze_top

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "book_ab_finetune.toml"


@pytest.fixture(scope="module")
def small():
    """sklearn's 8x8 digits: 1,197 / 300 / 300 examples."""
    return digits()


def _base(data, seed: int = 0, hidden=(16, 16, 16)) -> Network:
    torch.manual_seed(seed)
    return Network.mlp(data.input_shape, list(hidden), data.n_outputs, name="a")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ----------------------------------------------------------------- set_weights / get_weights
def test_set_weights_book_example():
    net = Network([Dense(3, name="hidden1")], input_shape=(2,))
    set_weights(net, {"hidden1": [np.array([[1, 2, 3], [4, 5, 6]]), np.array([7, 8, 9])]}, layout="keras")
    assert net(torch.tensor([[10.0, 11.0]])).tolist() == [[61.0, 83.0, 105.0]]
    assert net.layer("hidden1").weight.tolist() == [[1, 4], [2, 5], [3, 6]]  # torch keeps (out, in)


def test_set_weights_torch_layout_and_single_layer_form():
    net = Network([Dense(3, name="hidden1")], input_shape=(2,))
    set_weights(net, "hidden1", [[[1, 4], [2, 5], [3, 6]], [7, 8, 9]], layout="torch")
    assert net(torch.tensor([[10.0, 11.0]])).tolist() == [[61.0, 83.0, 105.0]]
    kernel, bias = get_weights(net, "hidden1")
    assert kernel.tolist() == [[1, 2, 3], [4, 5, 6]] and bias.tolist() == [7, 8, 9]
    assert get_weights(net, "hidden1", layout="torch")[0].shape == (3, 2)


def test_set_weights_names_layer_and_both_shapes():
    net = Network([Dense(3, name="hidden1")], input_shape=(2,))
    with pytest.raises(ShapeError, match=r"'hidden1' kernel has shape \(3, 2\) but 'hidden1' expects \(2, 3\).*"
                                         r"layout='torch'"):
        set_weights(net, "hidden1", [np.zeros((3, 2)), np.zeros(3)])
    with pytest.raises(ShapeError, match=r"'hidden1' bias has shape \(4,\) but 'hidden1' expects \(3,\)"):
        set_weights(net, "hidden1", [np.zeros((2, 3)), np.zeros(4)])
    with pytest.raises(ShapeError, match=r"takes 2 arrays in keras layout \(kernel, bias\), got 1"):
        set_weights(net, "hidden1", [np.zeros((2, 3))])
    with pytest.raises(ConfigError, match="No such layer: 'hiden1'.*Did you mean 'hidden1'"):
        set_weights(net, "hiden1", [np.zeros((2, 3)), np.zeros(3)])


def test_set_weights_is_all_or_nothing():
    net = Network([Dense(3, name="hidden1"), Dense(2, name="outputs")], input_shape=(2,))
    before = _state(net)
    with pytest.raises(ShapeError, match="outputs"):
        set_weights(net, {"hidden1": [np.ones((2, 3)), np.ones(3)], "outputs": [np.ones((4, 2)), np.ones(2)]})
    assert _max_diff(before, _state(net)) == 0.0


def test_set_weights_conv_keras_layout_matches_reference():
    net = Network([Conv2d(4, 3, name="conv1")], input_shape=(2, 5, 5))
    kernel = np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype(np.float32)  # (kh, kw, in, out)
    set_weights(net, "conv1", {"kernel": kernel, "bias": np.arange(4, dtype=np.float32)})
    x = torch.randn(1, 2, 5, 5)
    expected = F.conv2d(x, torch.from_numpy(kernel).permute(3, 2, 0, 1), torch.arange(4.0))
    torch.testing.assert_close(net(x), expected)
    np.testing.assert_array_equal(get_weights(net, "conv1")[0], kernel)


# ----------------------------------------------------------------- graft
def test_graft_copies_by_default_and_shares_when_asked(small):
    base = _base(small)
    before = _state(base)
    copied = graft(base, reuse=":-1", head=Dense(small.n_outputs))
    fit(copied, small, epochs=1, batch_size=64, verbose=False, seed=0, cache=False)
    assert _max_diff(before, _state(base)) == 0.0
    assert _max_diff({k: v for k, v in before.items() if k.startswith("hidden1")},
                     {k: v for k, v in _state(copied).items() if k.startswith("hidden1")}) > 0

    shared = graft(base, reuse=":-1", head=Dense(small.n_outputs), share=True)
    assert shared.layer("hidden1") is base.layer("hidden1")
    fit(shared, small, epochs=1, batch_size=64, verbose=False, seed=0, cache=False)
    assert torch.equal(base.layer("hidden1").weight, shared.layer("hidden1").weight)
    assert not torch.equal(before["hidden1.weight"], base.layer("hidden1").weight)
    assert shared.lineage["shared"] is True


def test_graft_selection_must_be_a_bottom_run(small):
    base = _base(small)
    with pytest.raises(ConfigError, match=r"leaves out hidden2, which 'hidden3' depends on.*reuse=':4'"):
        graft(base, reuse="hidden[13]", head=Dense(10))
    with pytest.raises(ConfigError, match=r"matched no layer; layers are flatten, hidden1..hidden3, outputs"):
        graft(base, reuse="hidden[6-9]", head=Dense(10))
    with pytest.raises(ConfigError, match="not a valid regex"):
        graft(base, reuse="hidden[", head=Dense(10))
    model = graft(base, reuse="hidden[12]", head=Dense(10))  # flatten comes along: parameter-free
    assert model.layer_names == ["flatten", "hidden1", "hidden2", "outputs"]


def test_graft_names_new_layers_without_clashes(small):
    base = _base(small)
    model = graft(base, reuse="hidden[123]", head=[Dense(20, "relu"), Dense(10)])
    assert model.layer_names == ["flatten", "hidden1", "hidden2", "hidden3", "hidden4", "outputs"]
    with pytest.raises(ConfigError, match="head layer name 'hidden2' is already used by a reused layer"):
        graft(base, reuse="hidden[123]", head=[Dense(20, name="hidden2"), Dense(10)])
    head = Dense(10)
    graft(base, head=head)
    assert head.name is None  # the caller's spec is not modified


def test_graft_head_shape_error_names_both_shapes():
    torch.manual_seed(0)
    cnn = Network([Conv2d(4, 3, name="conv1"), MaxPool(2, name="pool1"), Flatten(name="flatten"),
                   Dense(10, name="outputs")], input_shape=(1, 14, 14), name="cnn")
    with pytest.raises(ShapeError, match=r"cannot take the output of 'pool1', of shape \(4, 6, 6\).*flat"):
        graft(cnn, reuse=":2", head=Dense(5))
    head = Network([Dense(5, name="outputs")], input_shape=(100,))
    with pytest.raises(ShapeError, match=r"takes input of shape \(100,\).*'flatten'.*\(144,\)"):
        graft(cnn, reuse=":3", head=head)
    assert graft(cnn, reuse=":3", head=Dense(5)).output_shape == (5,)


def test_graft_lineage_is_saved_and_reloaded(small, tmp_path):
    base = _base(small)
    save_model(base, tmp_path / "a")
    model = graft(str(tmp_path / "a"), reuse="hidden[12]", head=[Dense(8, "relu"), Dense(10)], freeze=True)
    lineage = model.lineage
    assert lineage["base"] == "a" and lineage["base_path"] == str(tmp_path / "a")
    assert lineage["base_fingerprint"] == weights_fingerprint(base)
    assert lineage["reused"] == {"flatten": "flatten", "hidden1": "hidden1", "hidden2": "hidden2"}
    assert lineage["new"] == ["hidden3", "outputs"]
    assert model.frozen == ["flatten", "hidden1", "hidden2"]
    summary = model.summary()
    assert "reused from a:hidden1" in summary and "origin" in summary
    save_model(model, tmp_path / "b")
    loaded = load_model(tmp_path / "b")
    assert loaded.lineage == json.loads(json.dumps(lineage))
    assert loaded.frozen == ["flatten", "hidden1", "hidden2"]
    assert [r["origin"] for r in loaded.summary_rows()][-2:] == ["new", "new"]
    torch.testing.assert_close(loaded.layer("hidden1").weight, base.layer("hidden1").weight)


def test_graft_refuses_layers_whose_spec_cannot_be_rebuilt(small):
    base = _base(small)
    base.spec_of("hidden2").activation = "swishy"  # e.g. a spec edited by hand
    with pytest.raises(ConfigError, match=r"layer 'hidden2' of 'a' cannot be rebuilt from its spec.*swishy"):
        graft(base, reuse=":-1", head=Dense(10))


def test_graft_refuses_a_plain_module():
    with pytest.raises(TypeError, match="graft needs a graftnet Network.*got Linear"):
        graft(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------- freezing helpers
def test_freeze_below_and_unfreeze_top(small):
    model = _base(small)
    assert freeze_below(model, "hidden2").frozen == ["flatten", "hidden1", "hidden2"]
    assert unfreeze_top(model, 1) == ["hidden2"]
    assert model.frozen == ["flatten", "hidden1"]
    model.freeze(":-1")
    assert unfreeze_top(model, 2, within="hidden.*") == ["hidden2", "hidden3"]
    with pytest.raises(ConfigError, match="No such layer: 'hidden9'"):
        freeze_below(model, "hidden9")
    with pytest.raises(ConfigError, match=r"unfreeze: no such layer\(s\) 'hidden7'; layers are flatten, hidden1"):
        model.unfreeze(["hidden7"])
    with pytest.raises(ConfigError, match=r"within='hidden9' matched no layer"):
        unfreeze_top(model, 1, within="hidden9")
    with pytest.raises(ConfigError, match="k must be a whole number >= 1"):
        unfreeze_top(model, 0)


def test_frozen_batchnorm_keeps_its_statistics_and_bn_affine_trains_scale(small):
    torch.manual_seed(0)
    base = Network.mlp(small.input_shape, [16, 16], small.n_outputs, batch_norm=True, name="bn")
    fit(base, small, epochs=1, batch_size=64, verbose=False, seed=0, cache=False)
    model = graft(base, reuse=":-1", head=Dense(small.n_outputs))
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    FineTune([Stage(1, train="outputs")]).fit(model, small, batch_size=64, verbose=False, seed=0, cache=False)
    assert all(torch.equal(stats[k], model.state_dict()[k]) for k in stats)

    gamma = model.layer("bn2").weight.detach().clone()
    FineTune([Stage(1, train="hidden2|outputs", bn_affine=True)]).fit(model, small, batch_size=64,
                                                                       verbose=False, seed=0)
    assert torch.equal(stats["bn2.running_mean"], model.state_dict()["bn2.running_mean"])
    assert not torch.equal(gamma, model.layer("bn2").weight)  # scale/shift trained, statistics frozen


# ----------------------------------------------------------------- plans
def test_book_recipe_in_three_lines(fashion):
    task_b = fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt").head(train=200, valid=200, test=200)
    torch.manual_seed(0)
    model_a = Network.mlp(fashion.input_shape, [32] * 3, 8, activation="selu", name="model_a")
    reused_before = model_a.layer("hidden1").weight.detach().clone()

    model_b = graft(model_a, reuse=":-1", head=Dense(1, "sigmoid"))
    plan = FineTune([Stage(4, train="outputs"), Stage(16, train="all", lr=1e-4)])
    history = plan.fit(model_b, task_b, optimizer=SGD(lr=1e-3), verbose=False, seed=0, cache=FeatureCache())

    assert history["stage"] == ["stage-1"] * 4 + ["stage-2"] * 16
    assert history["lr"][:4] == [1e-3] * 4 and history["lr"][4:] == [1e-4] * 16
    assert history.epochs[0]["cache_cut"] == "hidden3"
    assert history["epoch"] == list(range(1, 21))
    assert torch.equal(model_a.layer("hidden1").weight, reused_before)
    assert model_b.frozen == []  # the last stage trained every layer


def test_optimizer_holds_only_trainable_layers_after_each_stage_change(small, tmp_path):
    model = graft(_base(small), reuse=":-1", head=Dense(small.n_outputs))
    hidden1 = model.layer("hidden1").weight.detach().clone()
    plan = FineTune([Stage(1, train="outputs"), Stage(1, train="hidden3|outputs"), Stage(1, train="all")])
    plan.fit(model, small, checkpoint=tmp_path / "plan", batch_size=64, verbose=False, seed=0)
    layers = []
    for i in (1, 2, 3):
        _, restored = read_checkpoint(tmp_path / "plan" / f"stage-{i}")
        groups = restored["state"]["optimizer"]["param_groups"]
        layers.append([g["layer"] for g in groups])
    assert layers == [["outputs"], ["hidden3", "outputs"], ["hidden1", "hidden2", "hidden3", "outputs"]]
    state = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert state["completed"] == 3 and state["stages"][0]["frozen"] == ["flatten", "hidden1", "hidden2", "hidden3"]
    assert state["stages"][0]["cache_cut"] == "hidden3" and len(state["stages"][0]["cache_prefix"]) == 64
    assert not torch.equal(hidden1, model.layer("hidden1").weight)


def _interrupt_at(epoch: int):
    def callback(row, model):
        if row["epoch"] == epoch:
            raise KeyboardInterrupt(f"stopped at epoch {epoch}")
    return callback


@pytest.mark.parametrize("cut", [3, 4])  # 3: stage 1 done, stage 2 not checkpointed; 4: mid stage 2
def test_interrupted_plan_resumes_exactly(small, tmp_path, cut):
    start = graft(_base(small), reuse=":-1", head=Dense(small.n_outputs))
    plan = FineTune([Stage(2, train="outputs"), Stage(3, train="all", lr=0.05)], optimizer=SGD(lr=0.1, momentum=0.9))
    kwargs = {"batch_size": 64, "verbose": False, "seed": 3}

    straight = copy.deepcopy(start)
    expected = plan.fit(straight, small, **kwargs)

    interrupted = copy.deepcopy(start)
    with pytest.raises(KeyboardInterrupt):
        plan.fit(interrupted, small, checkpoint=tmp_path / "ck", callbacks=[_interrupt_at(cut)], **kwargs)
    assert json.loads((tmp_path / "ck" / "plan.json").read_text())["completed"] == 1

    resumed = copy.deepcopy(start)  # as a new process would: the starting model, then resume
    history = plan.fit(resumed, small, checkpoint=tmp_path / "ck", resume=True, **kwargs)
    assert _max_diff(_state(straight), _state(resumed)) < 1e-6
    assert history["stage"] == expected["stage"] and history["epoch"] == [1, 2, 3, 4, 5]
    assert np.allclose(history["loss"], expected["loss"], atol=1e-6)


def test_resume_refuses_another_plan(small, tmp_path):
    model = graft(_base(small), reuse=":-1", head=Dense(small.n_outputs))
    FineTune([Stage(1, train="outputs")]).fit(model, small, checkpoint=tmp_path / "ck", verbose=False, seed=0)
    with pytest.raises(CheckpointError, match="holds another plan"):
        FineTune([Stage(2, train="outputs")]).fit(model, small, checkpoint=tmp_path / "ck", resume=True,
                                                  verbose=False)


def test_gradual_unfreezing_stages(small):
    model = graft(_base(small), reuse=":-1", head=Dense(small.n_outputs))
    plan = FineTune.gradual(reused=":-1", head="outputs", epochs_per_stage=1, k=2, lr=0.1, lr_decay=0.5)
    stages = plan.expand(model).stages
    assert [s.name for s in stages] == ["head", "top2", "top3"]
    assert [s.layers(model) for s in stages] == [["outputs"], ["hidden2", "hidden3", "outputs"],
                                                 ["hidden1", "hidden2", "hidden3", "outputs"]]
    history = plan.fit(model, small, batch_size=128, verbose=False, seed=0)
    assert history["lr"] == [0.1, 0.05, 0.025] and history["stage"] == ["head", "top2", "top3"]


def test_plan_from_toml_matches_the_python_recipe():
    plan = FineTune.from_toml(RECIPE)
    assert [(s.epochs, s.train, s.lr) for s in plan.stages] == [(4, "outputs", None), (16, "all", 1e-4)]
    assert plan.defaults["optimizer"] == {"type": "sgd", "lr": 1e-3} and plan.data == "fashion:B"
    assert FineTune.from_dict(plan.to_dict()).to_dict() == plan.to_dict()


def test_plan_errors_name_the_key_and_list_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'optimiser'; valid keys are .*optimizer.*"
                                          r"Did you mean 'optimizer'"):
        FineTune.from_dict({"stage": [{"epochs": 1}], "optimiser": "sgd"})
    with pytest.raises(ConfigError, match=r"stage\[1\]: unknown key 'epoch'; valid keys are epochs, train"):
        FineTune.from_dict({"stage": [{"epochs": 1}, {"epoch": 2}]})
    with pytest.raises(ConfigError, match="no plan file at"):
        FineTune.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[stage]\nepochs = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        FineTune.from_toml(bad)
    with pytest.raises(ConfigError, match="unknown optimizer 'sgdd'"):
        Stage(1, optimizer="sgdd")


def test_stage_with_unknown_layer_fails_before_training(small):
    model = graft(_base(small), reuse=":-1", head=Dense(small.n_outputs))
    before = _state(model)
    with pytest.raises(ConfigError, match=r"train='hidden9' matched no layer; layers are flatten, hidden1..hidden3"):
        FineTune([Stage(1, train="hidden9")]).fit(model, small, verbose=False)
    assert _max_diff(before, _state(model)) == 0.0


# ------------------------------------------------------------ stop_gradient
def test_graft_stop_gradient_freezes_and_caches_below_and_trains_above(small, tmp_path):
    base = _base(small)
    model = graft(base, reuse="hidden[123]", head=Dense(small.n_outputs), stop_gradient="hidden2")
    assert model.frozen == ["flatten", "hidden1", "hidden2"] and model.lineage["stop_gradient"] == "hidden2"
    before = _state(model)
    history = fit(model, small, epochs=1, batch_size=64, optimizer=SGD(lr=0.1), seed=0, verbose=False,
                  cache=FeatureCache())
    after = _state(model)
    for key in ("hidden1.weight", "hidden2.bias"):
        assert torch.equal(before[key], after[key]), key
    for key in ("hidden3.weight", "outputs.weight"):  # reused above the boundary: still trains
        assert not torch.equal(before[key], after[key]), key
    assert history.epochs[-1]["cache_cut"] == "hidden2"
    save_model(model, tmp_path / "m")
    assert load_model(tmp_path / "m").frozen == ["flatten", "hidden1", "hidden2"]


def test_graft_stop_gradient_must_be_a_reused_layer(small):
    with pytest.raises(ConfigError, match=r"stop_gradient='outputs' is not among the reused layers"):
        graft(_base(small), reuse="hidden[12]", head=Dense(small.n_outputs), stop_gradient="outputs")
