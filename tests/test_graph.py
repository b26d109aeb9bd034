"""Graph networks: inputs, merge layers, nested blocks, path selectors, cuts, transfer and the
cache on graphs, and the errors for graphs that cannot be."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from graftnet import (
    SGD,
    Activation,
    Add,
    Average,
    BatchNorm,
    Block,
    Concatenate,
    Conv2d,
    Dense,
    FeatureCache,
    FineTune,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Maximum,
    Minimum,
    Multiply,
    Network,
    Stage,
    Subtract,
    fit,
    graft,
    load_model,
    save_model,
)
from graftnet.cache import cache_cut
from graftnet.data import digits
from graftnet.errors import ConfigError, ShapeError

FIXTURES = Path(__file__).parent / "fixtures"


def residual(name: str = "res") -> Network:
    """A small ResNet: a stem, two residual blocks with BatchNorm, a head."""
    torch.manual_seed(0)
    return Network([
        Conv2d(8, 3, padding="same", name="stem"), BatchNorm(name="stem_bn"), Activation("relu", name="stem_relu"),
        Conv2d(8, 3, padding="same", name="b1_conv"), BatchNorm(name="b1_bn"),
        Add(name="b1_add", inputs=["stem_relu", "b1_bn"]), Activation("relu", name="b1_out"),
        Conv2d(8, 3, padding="same", name="b2_conv"), BatchNorm(name="b2_bn"),
        Add(name="b2_add", inputs=["b1_out", "b2_bn"]), Activation("relu", name="b2_out"),
        GlobalAvgPool(name="gap"), Dense(10, name="outputs")], (1, 8, 8), name=name)


def reference_forward(net: Network, x: torch.Tensor) -> torch.Tensor:
    """The residual network written out by hand in eval mode, from its own modules."""
    L = net.layer
    h = F.relu(L("stem_bn")(L("stem")(x)))
    h = F.relu(h + L("b1_bn")(L("b1_conv")(h)))
    h = F.relu(h + L("b2_bn")(L("b2_conv")(h)))
    return L("outputs")(h.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def data():
    return digits()


def _randomize_bn(net: Network) -> None:
    with torch.no_grad():
        for name, module in net.named_layers():
            if hasattr(module, "running_mean"):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)


# ----------------------------------------------------------------- building and running
def test_a_residual_graph_computes_what_it_says():
    net = residual().eval()
    _randomize_bn(net)
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(net(x), reference_forward(net, x), atol=1e-6)
    assert net.inputs_of("b1_add") == ["stem_relu", "b1_bn"] and net.readers_of("stem_relu") == ["b1_conv", "b1_add"]
    assert not net.is_chain and Network.mlp(4, [3], 2).is_chain


@pytest.mark.parametrize("merge, expected", [
    (Add, lambda a, b: a + b), (Subtract, lambda a, b: a - b), (Multiply, lambda a, b: a * b),
    (Average, lambda a, b: (a + b) / 2), (Maximum, torch.maximum), (Minimum, torch.minimum),
    (Concatenate, lambda a, b: torch.cat([a, b], dim=1)),
])
def test_each_merge_layer_matches_torch(merge, expected):
    net = Network([Dense(6, name="a"), Dense(6, "tanh", name="b", inputs=["input"]),
                   merge(name="m", inputs=["a", "b"])], (4,))
    x = torch.randn(3, 4)
    a, b = net.layer("a")(x), net.layer("b")(x)
    assert torch.allclose(net(x), expected(a, b)) and net.output_shape == tuple(expected(a, b).shape[1:])


def test_multiply_broadcasts_a_squeeze_excite_gate():
    # the gate: one value per channel, (4, 1, 1), from an 8x8 convolution over the whole image
    net = Network([Conv2d(4, 1, name="features"), Conv2d(4, 8, name="gate", activation="sigmoid", inputs=["input"]),
                   Multiply(name="scale", inputs=["features", "gate"])], (2, 8, 8))
    x = torch.randn(2, 2, 8, 8)
    assert net.shape_of("gate") == (4, 1, 1) and net.output_shape == (4, 8, 8)
    assert torch.allclose(net(x), net.layer("features")(x) * net.layer("gate")(x))


def test_concatenate_axis_counts_the_batch_axis_as_torch_does():
    net = Network([Conv2d(3, 1, name="a"), Conv2d(5, 1, name="b", inputs=["input"]),
                   Concatenate(name="cat", inputs=["a", "b"]), Concatenate(axis=-1, name="wide", inputs=["cat", "cat"])],
                  (2, 4, 4))
    assert net.shape_of("cat") == (8, 4, 4) and net.output_shape == (8, 4, 8)


def test_spec_round_trip_through_json_gives_the_same_network(tmp_path):
    net = residual().eval()
    _randomize_bn(net)
    net.freeze("stem.*")
    spec = json.loads(json.dumps(net.to_spec()))
    assert spec["format"] == "graftnet.network/2"
    assert "inputs" not in spec["layers"][1] and spec["layers"][5]["inputs"] == ["stem_relu", "b1_bn"]
    save_model(net, tmp_path / "res")
    back = load_model(tmp_path / "res").eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(back(x), net(x)) and back.frozen == ["stem", "stem_bn", "stem_relu"]


def test_models_saved_by_graftnet_0_1_still_load():
    net = load_model(FIXTURES / "graftnet01" / "cnn").eval()
    io = load_file(FIXTURES / "graftnet01" / "cnn_io.safetensors")
    assert json.loads((FIXTURES / "graftnet01" / "cnn" / "spec.json").read_text())["format"] == "graftnet.network/1"
    assert net.frozen == ["conv1", "bn1"] and torch.allclose(net(io["x"]), io["y"], atol=1e-7)


def test_forward_in_parts_equals_the_whole():
    net = residual().eval()
    x = torch.randn(3, 1, 8, 8)
    for k in range(1, len(net)):
        crossing = net.forward(x, stop=k)  # packed when several tensors cross
        assert torch.allclose(net.forward(crossing, start=k), net(x), atol=1e-6), net.layer_names[k]
    lower, upper = net.split("b2_conv")
    assert net.cut_names(8) == ("b1_out", "b2_conv") and lower.output_shape == (2 * 8 * 8 * 8,)
    assert torch.allclose(upper(lower(x)), net(x), atol=1e-6)
    parts = net.intermediate(x, ["b1_out", "gap"])
    assert parts["gap"].shape == (3, 8) and torch.allclose(parts["gap"], net.forward(x, stop=12), atol=1e-6)


# ----------------------------------------------------------------- blocks and paths
def test_a_network_nests_inside_another_with_its_weights_and_frozen_layers():
    base = residual("base")
    _randomize_bn(base)
    base.freeze("stem|stem_bn|b1_.*")
    top = Network([Block(base), Dense(1, "sigmoid", name="head")], (1, 8, 8), name="transfer")
    assert top.blocks == ["base"] and top.layer_names[0] == "base/stem" and top.layer_names[-1] == "head"
    assert top.frozen == ["base/stem", "base/stem_bn", "base/b1_conv", "base/b1_bn", "base/b1_add", "base/b1_out"]
    assert "base.b1_bn.running_mean" in top.state_dict()
    x = torch.randn(2, 1, 8, 8)
    base.eval(), top.eval()
    assert torch.allclose(top(x), top.layer("head")(base(x)), atol=1e-6)
    assert top.inputs_of("head") == ["base/outputs"] and top.block_of("base/b2_bn") == "base"
    rebuilt = Network.from_spec(json.loads(json.dumps(top.to_spec())))
    rebuilt.load_state_dict(top.state_dict())
    assert torch.allclose(rebuilt.eval()(x), top(x)) and rebuilt.frozen == top.frozen


def test_a_block_from_a_spec_dict_and_torch_style_dotted_names():
    inner = {"name": "layer4", "input_shape": [4], "layers": [
        {"type": "dense", "name": "0.fc1", "units": 4}, {"type": "dense", "name": "0.fc2", "units": 4},
        {"type": "add", "name": "0.add", "inputs": ["input", "0.fc2"]}]}
    net = Network([Dense(4, name="stem"), Block(inner), Dense(2, name="fc")], (3,))
    assert net.layer_names == ["stem", "layer4/0.fc1", "layer4/0.fc2", "layer4/0.add", "fc"]
    assert list(net.state_dict())[:4] == ["stem.weight", "stem.bias", "layer4.0.fc1.weight", "layer4.0.fc1.bias"]
    assert net.inputs_of("layer4/0.add") == ["stem", "layer4/0.fc2"]


def test_selectors_speak_in_paths_blocks_and_positions_within_a_block():
    top = Network([Block(residual("base")), Flatten(name="flat"), Dense(1, name="head")], (1, 8, 8))
    assert top.select("base/b2_.*") == ["base/b2_conv", "base/b2_bn", "base/b2_add", "base/b2_out"]
    assert top.select("base") == top.block("base") and len(top.select("base")) == 13
    assert top.select("base/-2:") == ["base/gap", "base/outputs"] and top.select("base/0") == ["base/stem"]
    assert top.select(["base", "head"]) == [*top.block("base"), "head"]
    assert top.select("layers[1:]") == ["flat", "head"]  # Keras' list: the nested model is entry 0
    with pytest.raises(ConfigError, match=r"matched no layer.*match the path, e.g. 'base/b2_.\*'"):
        top.select("b2_.*")


def test_keras_layers_15_on_selects_what_keras_selects():
    keras = pytest.importorskip("keras")
    kbase = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    expected = [layer.name for layer in kbase.layers[15:]]
    layers, cfg = [], {1: (64, 2), 2: (128, 2), 3: (256, 3), 4: (512, 3), 5: (512, 3)}
    for b, (filters, n) in cfg.items():
        layers += [Conv2d(filters, 3, padding="same", activation="relu", name=f"block{b}_conv{i}") for i in range(1, n + 1)]
        layers.append(MaxPool(2, name=f"block{b}_pool"))
    vgg = Network(layers, (3, 32, 32), name="vgg16", input_name=kbase.layers[0].name,
                  block_inputs={"": kbase.layers[0].name})
    top = Network([Block(vgg), Flatten(name="flatten"), Dense(1, "sigmoid", name="dense")], (3, 32, 32))
    picked = top.select("vgg16.layers[15:]")
    assert picked == [f"vgg16/{n}" for n in expected] == ["vgg16/block5_conv1", "vgg16/block5_conv2",
                                                           "vgg16/block5_conv3", "vgg16/block5_pool"]
    assert vgg.select("layers[15:]") == expected and vgg.keras_layers()[0] == kbase.layers[0].name
    assert vgg.select("layers[:2]") == ["block1_conv1"]  # entry 0 is the input layer, which has no weights


def test_summary_shows_inputs_and_blocks():
    top = Network([Block(residual("base")), Dense(1, name="head")], (1, 8, 8))
    text = top.summary()
    assert "inputs" in text.splitlines()[1] and "[base]" in text and "[network]" in text
    row = next(line for line in text.splitlines() if line.startswith("base/b1_add"))
    assert "base/stem_relu, base/b1_bn" in row
    chain = Network.mlp(4, [3], 2).summary()
    assert "inputs" not in chain and "[" not in chain.splitlines()[-2]


# ----------------------------------------------------------------- bad graphs
def test_a_cycle_is_named():
    with pytest.raises(ConfigError, match=r"cycle: a -> b -> a"):
        Network([Dense(4, name="a", inputs=["b"]), Dense(4, name="b")], (4,))


def test_a_layer_listed_before_its_input_is_an_order_error():
    with pytest.raises(ConfigError, match=r"'a' reads 'b', which is listed after it"):
        Network([Dense(4, name="a", inputs=["b"]), Dense(4, name="b", inputs=["input"]),
                 Add(name="c", inputs=["a", "b"])], (4,))


def test_an_input_that_does_not_exist_lists_what_does():
    with pytest.raises(ConfigError, match=r"'b' reads 'hiden1', which does not exist; it can read input, hidden1.*"
                                          r"Did you mean 'hidden1'"):
        Network([Dense(4, name="hidden1"), Dense(4, name="b", inputs=["hiden1"])], (4,))


def test_a_merge_of_mismatched_shapes_names_both_inputs():
    with pytest.raises(ShapeError, match=r"'m' \(add\) cannot merge shapes \(4\), \(5\) from a, b"):
        Network([Dense(4, name="a"), Dense(5, name="b", inputs=["input"]), Add(name="m", inputs=["a", "b"])], (3,))
    with pytest.raises(ConfigError, match=r"'m' \(add\) takes at least 2 inputs, got 1"):
        Network([Dense(4, name="a"), Add(name="m", inputs=["a"])], (3,))
    with pytest.raises(ShapeError, match=r"'d' \(dense\) takes one input, got 2 \(a, b\).*merge layer"):
        Network([Dense(4, name="a"), Dense(4, name="b", inputs=["input"]), Dense(2, name="d", inputs=["a", "b"])], (3,))


def test_a_layer_that_reaches_no_output_is_an_error():
    with pytest.raises(ConfigError, match=r"layer\(s\) side feed nothing that reaches the output 'b'"):
        Network([Dense(4, name="a"), Dense(4, name="side"), Dense(2, name="b", inputs=["a"])], (3,))


# ----------------------------------------------------------------- transfer on graphs
def test_graft_at_any_layer_keeps_what_it_depends_on(data):
    base = residual()
    net = graft(base, at="b1_out", head=[GlobalAvgPool(name="pool"), Dense(10)])
    assert net.layer_names == base.layer_names[:7] + ["pool", "outputs"]
    assert net.lineage["layers"]["b1_add"] == "reused from res:b1_add" and net.lineage["layers"]["pool"] == "new"
    x = torch.randn(2, 1, 8, 8)
    net.eval(), base.eval()
    assert torch.allclose(net.forward(x, stop=7), base.intermediate(x, ["b1_out"])["b1_out"], atol=1e-6)
    top = graft(base, reuse=":-1", head=Dense(3))  # drop the top, as on a chain
    assert top.inputs_of("outputs") == ["gap"] and top.layer_names[:-1] == base.layer_names[:-1]


def test_graft_refuses_a_selection_that_cuts_what_a_reused_layer_needs():
    with pytest.raises(ConfigError, match=r"leaves out stem, stem_bn, b1_conv, b1_bn, which 'b1_add' depends on"):
        graft(residual(), reuse=["b1_add"], head=Dense(2))
    two_ends = Network([Dense(4, name="a"), Dense(4, name="b", inputs=["input"]), Add(name="c", inputs=["a", "b"])], (3,))
    with pytest.raises(ConfigError, match=r"end in 2 places \(a, b\).*at="):
        graft(two_ends, reuse="a|b", head=Dense(2))


def test_staged_fine_tuning_and_per_layer_rates_on_a_graph(data):
    model = graft(residual(), reuse=":-1", head=Dense(10), freeze=True)
    plan = FineTune([Stage(1, train="outputs"), Stage(1, train=["b2_.*", "outputs"], lr=0.01,
                                                       lr_mult={"b2_conv": 0.5})], optimizer=SGD(lr=0.05))
    before = model.layer("stem").weight.detach().clone()
    history = plan.fit(model, data, batch_size=64, verbose=False, seed=0)
    assert history["stage"] == ["stage-1", "stage-2"] and torch.equal(before, model.layer("stem").weight)
    assert history.epochs[0]["cache_cut"] == "gap" and history.epochs[1]["cache_cut"] == "b1_out"


def test_a_graph_plan_resumes_mid_plan_with_the_same_weights(data, tmp_path):
    start = graft(residual(), reuse=":-1", head=Dense(10))
    plan = FineTune([Stage(1, train="outputs"), Stage(2, train="b2_.*|outputs", lr=0.02)], optimizer=SGD(lr=0.05))
    kwargs = {"batch_size": 128, "verbose": False, "seed": 1}
    straight = copy.deepcopy(start)
    plan.fit(straight, data, **kwargs)

    def stop_at_2(row, model):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        plan.fit(copy.deepcopy(start), data, checkpoint=tmp_path / "ck", callbacks=[stop_at_2], **kwargs)
    resumed = copy.deepcopy(start)
    plan.fit(resumed, data, checkpoint=tmp_path / "ck", resume=True, **kwargs)
    diff = max((a - b).abs().max().item() for a, b in zip(straight.state_dict().values(), resumed.state_dict().values())
               if a.is_floating_point())
    assert diff < 1e-6


# ----------------------------------------------------------------- the cache on graphs
def test_the_cut_of_a_residual_network_and_what_crosses_it():
    net = residual()
    net.freeze(net.layer_names[:8])  # up to b2_conv: b1_out and b2_conv cross the cut
    assert cache_cut(net) == 8 and net.cut_names(8) == ("b1_out", "b2_conv")
    net.unfreeze("all").freeze(net.layer_names[:7])  # up to b1_out: one tensor
    assert cache_cut(net) == 7 and net.cut_names(7) == ("b1_out",)


@pytest.mark.parametrize("frozen_upto", [7, 8])
def test_one_epoch_with_and_without_the_cache_gives_the_same_weights(data, frozen_upto):
    results = []
    for cache in (FeatureCache(), False):
        net = residual()
        _randomize_bn(net)
        net.freeze(net.layer_names[:frozen_upto])
        history = fit(net, data, epochs=1, batch_size=64, optimizer=SGD(lr=0.05, momentum=0.9), cache=cache,
                      verbose=False, seed=0)
        results.append((net.state_dict(), history))
    (cached, h_cached), (plain, _) = results
    assert max((cached[k] - plain[k]).abs().max().item() for k in cached if cached[k].is_floating_point()) < 1e-5
    assert h_cached.epochs[0]["cache_cut"] == ("b1_out" if frozen_upto == 7 else "b2_conv")
    if frozen_upto == 8:
        assert h_cached.epochs[0]["cache_tensors"] == "b1_out, b2_conv"


def test_a_stale_graph_entry_is_never_used(data):
    cache = FeatureCache()
    net = residual()
    net.freeze(net.layer_names[:7])
    fit(net, data, epochs=1, batch_size=128, cache=cache, verbose=False, seed=0)
    with torch.no_grad():
        net.layer("b1_conv").weight.add_(0.1)  # a frozen weight changed by hand
    fit(net, data, epochs=1, batch_size=128, cache=cache, verbose=False, seed=0)
    fit(net, data, epochs=1, batch_size=128, cache=cache, verbose=False, seed=0)
    stats = cache.stats()
    assert stats["misses"] == 4 and stats["hits"] == 2  # train + valid built twice, reused once


def test_the_graft_command_attaches_a_head_at_any_layer_of_a_saved_graph(tmp_path, capsys):
    from graftnet.cli import main

    save_model(residual(), tmp_path / "res")
    code = main(["graft", str(tmp_path / "res"), "--at", "b1_out", "--freeze", "reused", "--add", "gap",
                 "--add", "10", "--out", str(tmp_path / "cut")])
    assert code == 0
    net = load_model(tmp_path / "cut")
    assert net.layer_names == residual().layer_names[:7] + ["gap1", "outputs"]
    assert net.frozen == net.layer_names[:7] and "b1_add" in capsys.readouterr().out


def test_a_study_runs_on_a_graph_base_including_dropped_blocks(data, tmp_path):
    from graftnet import study

    base = residual("resbase")
    fit(base, data, epochs=1, batch_size=128, verbose=False, seed=0)
    result = study.run(base, data, seeds=[0, 1], epochs=1, head_epochs=0, batch_size=128, report=False,
                       variants=["scratch", "frozen", "drop-top1"], out=tmp_path, progress=lambda s: None)
    runs = {r["variant"]: r for r in result.runs if r["seed"] == 0}
    assert runs["frozen"]["cache"]["cut"] == "gap"  # the whole frozen base computed once
    assert runs["drop-top1"]["cache"]["cut"] == "head_flatten"  # b2 dropped, b1's output flattened for the head
    assert all(0.0 <= r["test"]["accuracy"] <= 1.0 for r in result.runs)
