"""Network: named layers, selectors, freezing, specs, summaries."""

import json

import pytest
import torch

from graftnet.errors import ConfigError, ShapeError
from graftnet.layers import (
    Activation,
    AlphaDropout,
    AvgPool,
    BatchNorm,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Rescaling,
    layer_from_dict,
    parse_activation,
)
from graftnet.network import Network


@pytest.fixture
def book_net() -> Network:
    torch.manual_seed(0)
    return Network.mlp(784, [300, 50, 50, 50, 50], 10)


def test_mlp_names_follow_the_book(book_net):
    assert book_net.layer_names == ["hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "outputs"]
    assert book_net.shapes == [(300,), (50,), (50,), (50,), (50,), (10,)]
    assert Network.mlp((1, 28, 28), [10], 2).layer_names == ["flatten", "hidden1", "outputs"]


@pytest.mark.parametrize("selector, expected", [
    ("hidden[123]", ["hidden1", "hidden2", "hidden3"]),
    ("hidden[34]|outputs", ["hidden3", "hidden4", "outputs"]),
    (":-1", ["hidden1", "hidden2", "hidden3", "hidden4", "hidden5"]),
    ("4:", ["hidden5", "outputs"]),
    ("1:3", ["hidden2", "hidden3"]),
    (["outputs", "hidden1"], ["hidden1", "outputs"]),
    (-1, ["outputs"]),
    ("all", ["hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "outputs"]),
])
def test_selectors(book_net, selector, expected):
    assert book_net.select(selector) == expected


def test_selector_is_a_full_match_not_a_search(book_net):
    # "hidden1" must not also pick "hidden10"-style names, and "idden1" matches nothing
    with pytest.raises(ConfigError, match=r"matched no layer; layers are hidden1\.\.hidden5, outputs"):
        book_net.select("idden1")


def test_bad_selectors_list_the_layers(book_net):
    with pytest.raises(ConfigError, match=r"not a valid regex.*hidden1\.\.hidden5, outputs"):
        book_net.select("hidden[12")
    with pytest.raises(ConfigError, match=r"no such layer\(s\) 'hiden2'.*Did you mean 'hidden2'"):
        book_net.select(["hiden2"])
    with pytest.raises(ConfigError, match="out of range: the network has 6 layers"):
        book_net.select(9)
    with pytest.raises(ConfigError, match=r"No such layer: 'hidden9'\. Existing layers are: hidden1\.\.hidden5, outputs"):
        book_net.layer("hidden9")


def test_freeze_stops_gradients_and_keeps_frozen_layers_in_eval_mode():
    net = Network([Dense(8, "relu", name="h1"), BatchNorm(name="bn"), Dropout(0.5, name="drop"),
                   Dense(2, name="out")], (4,))
    net.freeze("h1|bn|drop")
    net.train()
    assert not net.bn.training and not net.drop.training and net.out.training
    assert all(not p.requires_grad for n, p in net.named_parameters() if not n.startswith("out."))
    stats = net.bn.running_mean.clone()
    net(torch.randn(16, 4) * 3 + 1)
    assert torch.equal(net.bn.running_mean, stats)  # frozen BatchNorm keeps its statistics
    x = torch.randn(5, 4)
    assert torch.equal(net(x), net(x))  # frozen dropout is off
    net.unfreeze("bn")
    assert net.bn.training and net.bn.weight.requires_grad
    assert net.frozen == ["h1", "drop"]


def test_bn_affine_keeps_scale_and_shift_trainable_with_frozen_statistics():
    net = Network([Dense(8, name="h1"), BatchNorm(name="bn"), Dense(2, name="out")], (4,))
    net.freeze(":2", bn_affine=True)
    net.train()
    assert net.bn.weight.requires_grad and not net.h1.weight.requires_grad and not net.bn.training
    assert [r["trainable"] for r in net.summary_rows()] == ["frozen", "scale/shift", "yes"]


def test_spec_round_trip_rebuilds_the_same_network(book_net):
    book_net.freeze("hidden[12]")
    spec = json.loads(json.dumps(book_net.to_spec()))
    rebuilt = Network.from_spec(spec)
    rebuilt.load_state_dict(book_net.state_dict())
    x = torch.randn(3, 784)
    assert torch.equal(rebuilt(x), book_net(x))
    assert rebuilt.frozen == ["hidden1", "hidden2"]
    assert rebuilt.to_spec() == book_net.to_spec()


def test_spec_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"layers\[1\]: unknown layer type 'dens'.*Did you mean 'dense'"):
        Network.from_spec({"input_shape": [4], "layers": [{"type": "dense", "units": 3}, {"type": "dens"}]})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'unit'"):
        layer_from_dict({"type": "dense", "unit": 3})
    with pytest.raises(ConfigError, match="missing key"):
        Network.from_spec({"layers": []})
    with pytest.raises(ConfigError, match="unknown activation 'rleu'.*Did you mean 'relu'"):
        Dense(3, "rleu")
    with pytest.raises(ConfigError, match="unknown initializer 'he_norm'"):
        Dense(3, init="he_norm")
    with pytest.raises(ConfigError, match="used twice"):
        Network([Dense(3, name="a"), Dense(3, name="a")], (4,))


def test_shapes_that_do_not_fit_are_explained():
    with pytest.raises(ShapeError, match=r"expects flat \(features,\) input, got input shape \(1, 28, 28\) - add a Flatten"):
        Network([Dense(10)], (1, 28, 28))
    with pytest.raises(ShapeError, match="does not fit input"):
        Network([Conv2d(4, 5)], (1, 3, 3))


def test_cnn_shapes_and_summary():
    net = Network([Conv2d(8, 3, padding="same", activation="relu"), BatchNorm(), MaxPool(2),
                   Conv2d(16, 3), AvgPool(2), GlobalAvgPool(), Dense(10)], (3, 32, 32))
    assert net.layer_names == ["conv1", "bn1", "pool1", "conv2", "pool2", "gap1", "dense1"]
    assert net.shapes == [(8, 32, 32), (8, 32, 32), (8, 16, 16), (16, 14, 14), (16, 7, 7), (16,), (10,)]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    text = net.summary()
    row = next(line for line in text.splitlines() if line.startswith("conv1 "))
    assert row.split() == ["conv1", "conv2d(relu)", "(None,", "8,", "32,", "32)", "224", "yes"]
    assert "params: 1,578 total, 1,578 trainable, 0 frozen" in text


def test_forward_range_and_split_share_modules(book_net):
    x = torch.randn(4, 784)
    lower, upper = book_net.split("hidden2")
    assert lower.layer_names == ["hidden1", "hidden2"] and upper.input_shape == (50,)
    assert torch.allclose(upper(lower(x)), book_net(x))
    assert torch.allclose(book_net(book_net(x, stop=2), start=2), book_net(x))
    assert lower.hidden1 is book_net.hidden1


def test_initializers_have_the_documented_scale():
    torch.manual_seed(0)
    he = Dense(2000, init="he_normal").build((1000,)).weight
    lecun = Dense(2000, init="lecun_normal").build((1000,)).weight
    glorot = Dense(2000, init="glorot_uniform").build((1000,)).weight
    assert he.std().item() == pytest.approx((2 / 1000) ** 0.5, rel=0.02)
    assert lecun.std().item() == pytest.approx((1 / 1000) ** 0.5, rel=0.02)
    assert glorot.abs().max().item() <= (6 / 3000) ** 0.5
    assert torch.count_nonzero(Dense(5, init="zeros").build((3,)).weight) == 0
    assert Dense(5).build((3,)).bias.abs().sum() == 0


@pytest.mark.parametrize("text, reference", [
    ("relu", torch.relu),
    ("leaky_relu(0.2)", lambda x: torch.nn.functional.leaky_relu(x, 0.2)),
    ("elu", torch.nn.functional.elu),
    ("selu", torch.selu),
    ("gelu", torch.nn.functional.gelu),
    ("sigmoid", torch.sigmoid),
    ("tanh", torch.tanh),
    (None, lambda x: x),
])
def test_activations_match_torch(text, reference):
    layer = Activation(text).build((6,)) if text else Dense(6, name="d").build((6,))
    x = torch.linspace(-3, 3, 12).reshape(2, 6)
    if text is None:
        with torch.no_grad():
            layer.weight.copy_(torch.eye(6))
    assert torch.allclose(layer(x), reference(x))


def test_activation_arguments_are_parsed_and_checked():
    assert parse_activation("leaky_relu(0.3)") == ("leaky_relu", (0.3,))
    assert parse_activation("rrelu") == ("rrelu", (1 / 8, 1 / 3))
    with pytest.raises(ConfigError, match="takes at most 1 argument"):
        parse_activation("elu(1, 2)")


def test_max_norm_and_penalties():
    net = Network([Dense(5, l1=0.1, l2=0.01, max_norm=1.0, name="h"), Dense(2, name="out")], (3,))
    with torch.no_grad():
        net.h.weight.fill_(2.0)
    expected = 0.1 * (2.0 * 15) + 0.01 * (4.0 * 15)
    assert net.penalty().item() == pytest.approx(expected)
    net.apply_constraints()
    assert torch.allclose(net.h.weight.norm(dim=1), torch.ones(5))
    net.freeze("h")
    assert net.penalty() is None  # frozen layers are not penalised


def test_dropout_variants_and_rescaling():
    net = Network([Rescaling(1 / 255, name="scale"), Flatten(), AlphaDropout(0.1), Dropout(0.2)], (1, 2, 2))
    assert net.layer_names == ["scale", "flatten", "dropout1", "dropout2"]
    net.eval()
    assert torch.allclose(net(torch.full((1, 1, 2, 2), 255.0)), torch.ones(1, 4))
    with pytest.raises(ConfigError, match=r"dropout rate must be in \[0, 1\)"):
        Dropout(1.5)


def test_channels_last_flatten_orders_like_keras():
    x = torch.arange(12.0).reshape(1, 3, 2, 2)  # (B, C, H, W)
    flat = Flatten(channels_last=True).build((3, 2, 2))(x)
    assert flat.tolist() == [[0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]]


def test_default_init_suits_the_activation_and_is_what_mlp_uses() -> None:
    from graftnet.network import default_init

    assert [default_init(a) for a in ("relu", "leaky_relu(0.2)", "elu", "gelu", "selu", "tanh", None)] == [
        "he_normal", "he_normal", "he_normal", "he_normal", "lecun_normal", "glorot_uniform", "glorot_uniform"]
    assert Network.mlp(4, [3], 2, activation="selu").specs[0].init == "lecun_normal"


# ------------------------------------------------------------ collections and operations
def test_collections_fetch_outputs_by_name_and_survive_a_save(tmp_path):
    import graftnet as gn

    net = Network.mlp(4, [5, 3], 2)
    net.add_to_collection("logits", "outputs").add_to_collection("important", "input")
    net.add_to_collection("important", "hidden2")
    x = torch.randn(6, 4)
    hidden = net.intermediate(x, ["hidden2"])["hidden2"]
    torch.testing.assert_close(net.fetch(x, "logits"), net(x))
    fetched_x, fetched_h = net.fetch(x, "important")
    assert fetched_x is x
    torch.testing.assert_close(fetched_h, hidden)
    gn.save_model(net, tmp_path / "m")
    spec = json.loads((tmp_path / "m" / "spec.json").read_text())
    assert spec["collections"] == {"logits": ["outputs"], "important": ["input", "hidden2"]}
    loaded = gn.load_model(tmp_path / "m")
    assert loaded.get_collection("important") == ["input", "hidden2"]
    torch.testing.assert_close(loaded.fetch(x, "logits"), net(x))


def test_collection_errors_name_what_exists():
    net = Network.mlp(4, [5], 2)
    with pytest.raises(ConfigError, match=r"add_to_collection\('logits', 'hidden9'\): no such layer; layers are"):
        net.add_to_collection("logits", "hidden9")
    with pytest.raises(ConfigError, match="neither a collection nor a layer; collections are none"):
        net.fetch(torch.zeros(1, 4), "logits")
    spec = net.to_spec()
    assert "collections" not in spec  # absent when empty: older readers see the same spec
    spec["collections"] = {"x": ["nope"]}
    with pytest.raises(ConfigError, match="no such layer"):
        Network.from_spec(spec)


def test_operations_list_every_layer_with_inputs_and_shapes():
    from graftnet import Add, Conv2d

    net = Network([Conv2d(4, 3, padding="same", name="conv"), Add(name="skip", inputs=["input", "conv"])],
                  input_shape=(4, 6, 6))
    assert net.operations() == ["conv  conv2d  <- input        (None, 4, 6, 6)",
                                "skip  add     <- input, conv  (None, 4, 6, 6)"]
