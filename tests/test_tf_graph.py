"""TF1 meta graphs rebuilt as graftnet networks, checked against graphs real TensorFlow wrote.

The fixtures tests/fixtures/tf/meta_*/ come from scripts/make_tf_meta_fixtures.py (TensorFlow
2.21 in TF1 mode): the book's ch. 10 and ch. 11 listings saved by ``tf.train.Saver``, with
``reference.npz`` (inputs and TF's outputs), ``operations.json`` (``graph.get_operations()``)
and ``training.json`` (what the listing set). TensorFlow is not needed here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from graftnet.cli import main
from graftnet.errors import CheckpointError, ConfigError, ImportFormatError
from graftnet.io.checkpoint import load_model
from graftnet.io.tf_checkpoint import load_tf_checkpoint
from graftnet.io.tf_graph import graph_to_network, import_meta_graph, read_meta_graph, training_setup
from graftnet.layers import Activation, BatchNorm, Conv2d, Dense, Flatten, MaxPool
from graftnet.network import Network
from graftnet.train import fit
from graftnet.transfer import graft

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
GRAPHS = ["meta_ch10", "meta_clip", "meta_bn", "meta_dropout", "meta_cnn", "meta_activations", "meta_cnn_bn",
          "meta_freeze"]
ATOL = 1e-5


def prefix(name: str) -> Path:
    return FIXTURES / name / "model.ckpt"


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name / "reference.npz", allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def expected_training(name: str) -> dict:
    return json.loads((FIXTURES / name / "training.json").read_text())


def as_input(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t  # NHWC -> the network's (C, H, W)


@pytest.fixture(scope="module")
def imported():
    return {name: import_meta_graph(prefix(name)) for name in GRAPHS}


# ------------------------------------------------------------------ the rebuilt network
@pytest.mark.parametrize("name", GRAPHS)
def test_outputs_equal_tensorflows(imported, name):
    net = imported[name].network.eval()
    ref = reference(name)
    with torch.no_grad():
        out = net(as_input(ref["inputs"])).numpy()
    assert out.shape == ref["outputs"].shape
    np.testing.assert_allclose(out, ref["outputs"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", GRAPHS)
def test_operations_are_tensorflows_get_operations(imported, name):
    ops = json.loads((FIXTURES / name / "operations.json").read_text())
    rows = imported[name].operation_rows()
    assert [(r["name"], r["type"]) for r in rows] == [tuple(op) for op in ops]
    # every op is accounted for: mapped to an existing layer, or ignored with a reason
    layers = set(imported[name].network.layer_names)
    assert all((r["layer"] in layers) != bool(r["ignored"]) for r in rows)


def test_book_ch10_names_and_scopes(imported):
    imp = imported["meta_ch10"]
    assert imp.network.layer_names == ["dnn/hidden1", "dnn/hidden2", "dnn/outputs"]  # neuron_layer's tf.Variable
    assert [s.units for s in imp.network.specs] == [300, 100, 10]  # the book's size
    assert [s.activation for s in imp.network.specs] == ["relu", "relu", None]
    rows = {r["name"]: r for r in imp.operation_rows()}
    assert rows["dnn/hidden1/MatMul"]["layer"] == rows["dnn/hidden1/add"]["layer"] == "dnn/hidden1"
    assert rows["loss/loss"]["ignored"] == "training: loss"
    assert rows["eval/accuracy"]["ignored"] == "evaluation"
    assert rows["train/GradientDescent"]["layer"] == ""
    ref = reference("meta_ch10")
    got = imp.network.intermediate(as_input(ref["inputs"]), [imp.network.info["tensorflow"]["tensors"]
                                                            ["dnn/hidden2/Relu:0"]])
    np.testing.assert_allclose(next(iter(got.values())).detach().numpy(), ref["dnn/hidden2/Relu:0"], atol=ATOL)


def test_tf_layers_dense_named_by_variable_scope(imported):
    net = imported["meta_clip"].network
    assert net.layer_names == ["hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "outputs"]


def test_batchnorm_elu_listing(imported):
    net = imported["meta_bn"].network
    assert [s.type for s in net.specs] == ["dense", "batchnorm", "activation"] * 2 + ["dense", "batchnorm"]
    bns = [s for s in net.specs if s.type == "batchnorm"]
    tf_bn = expected_training("meta_bn")["batchnorm"]
    assert all(s.eps == pytest.approx(tf_bn["epsilon"]) for s in bns)
    assert all(s.momentum == pytest.approx(1 - tf_bn["momentum"]) for s in bns)  # PyTorch's momentum
    assert [s.activation for s in net.specs if s.type == "activation"] == ["elu", "elu"]


def test_dropout_listing_keeps_dropout_layers(imported):
    net = imported["meta_dropout"].network
    drops = [s for s in net.specs if s.type == "dropout"]
    assert [s.rate for s in drops] == expected_training("meta_dropout")["dropout"]
    assert net.layer_names[:3] == ["dropout", "hidden1", "dnn/dropout"]
    net.train()
    x = as_input(reference("meta_dropout")["inputs"])
    assert not torch.equal(net(x), net(x))  # dropout is live when training, identity in eval (parity test)


def test_cnn_is_channels_last_after_conv(imported):
    net = imported["meta_cnn"].network
    assert [s.type for s in net.specs] == ["conv2d", "maxpool", "flatten", "dense"]
    assert net.input_shape == (2, 8, 8)
    assert net.specs[2].channels_last is True
    ref = reference("meta_cnn")
    got = net.intermediate(as_input(ref["inputs"]), ["cnn/pool1"])["cnn/pool1"]
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).detach().numpy(), ref["cnn/pool1:0"], atol=ATOL)


def test_activations_listing(imported):
    net = imported["meta_activations"].network
    assert [s.activation for s in net.specs] == ["selu", "leaky_relu(0.2)", "leaky_relu(0.01)", "tanh", "sigmoid",
                                                 "elu", None]  # hidden3: the book's maximum(0.01 * z, z)
    proba = import_meta_graph(prefix("meta_activations"), outputs=["dnn/Y_proba:0"]).network.eval()
    assert proba.specs[-1].activation == "softmax"
    ref = reference("meta_activations")
    with torch.no_grad():
        np.testing.assert_allclose(proba(as_input(ref["inputs"])).numpy(), ref["dnn/Y_proba:0"], atol=ATOL)


def test_cnn_with_fused_batchnorm_and_tf_layers_names(imported):
    net = imported["meta_cnn_bn"].network
    assert net.layer_names == ["conv1", "bn1", "relu1", "pool1", "flatten", "outputs"]
    conv, bn, pool = net.specs[0], net.specs[1], net.specs[3]
    assert (conv.stride, conv.padding, pool.type, pool.padding) == ((2, 2), "same", "avgpool", "same")
    want = expected_training("meta_cnn_bn")["batchnorm"]
    assert bn.eps == pytest.approx(want["epsilon"]) and bn.momentum == pytest.approx(1 - want["momentum"])
    assert net.specs[4].channels_last is True


def test_image_shape_puts_a_flatten_first():
    imp = import_meta_graph(prefix("meta_clip"), image_shape=(1, 28, 28))
    assert imp.network.input_shape == (1, 28, 28) and imp.network.layer_names[0] == "flatten"
    ref = reference("meta_clip")
    with torch.no_grad():
        out = imp.network.eval()(torch.from_numpy(ref["inputs"]).reshape(-1, 1, 28, 28))
    np.testing.assert_allclose(out.numpy(), ref["outputs"], atol=ATOL)
    with pytest.raises(ConfigError, match="image_shape"):
        import_meta_graph(prefix("meta_clip"), image_shape=(3, 28, 28))


# ------------------------------------------------------------------ training part
@pytest.mark.parametrize("name", GRAPHS)
def test_training_settings_are_the_listings(imported, name):
    want, got = expected_training(name), imported[name].training
    optimizer = got["optimizer"]
    assert optimizer["lr"] == want["lr"]
    assert optimizer["type"] == {"sgd": "sgd", "momentum": "sgd", "nesterov": "sgd", "adam": "adam",
                                 "rmsprop": "rmsprop"}[want["optimizer"]]
    if want["optimizer"] in ("momentum", "nesterov"):
        assert optimizer["momentum"] == want["momentum"]
        assert optimizer["nesterov"] is (want["optimizer"] == "nesterov")
    if want["optimizer"] == "rmsprop":
        assert optimizer["rho"] == want["rho"] and optimizer["eps"] == want["epsilon"]
    if want["optimizer"] == "adam":
        assert optimizer["betas"] == [want["beta1"], want["beta2"]] and optimizer["eps"] == want["epsilon"]
    assert got["clip_value"] == want["clip_value"]
    assert got["training_op"] == want["training_op"]
    assert got["loss"]["type"] == want["loss"] and got["loss"]["tensor"] == "loss/loss:0"
    step = got["global_step"]
    assert (step["variable"] if step else None) == want["global_step"]


def test_global_step_and_update_ops(imported):
    training = imported["meta_bn"].training
    assert training["global_step"]["value"] == 20  # the fixture trained 20 steps
    assert len(training["update_ops"]) == expected_training("meta_bn")["update_ops"]
    assert training["update_ops_run_with_training_op"] is True


def test_max_norm_ops_are_recorded_and_continue(imported):
    want = expected_training("meta_dropout")["max_norm"]
    got = imported["meta_dropout"].training["max_norm"]
    assert {layer: [r["threshold"], r["tf_axes"][0]] for layer, r in got.items()} == want


def test_training_setup_continues_with_the_graphs_settings():
    net = import_meta_graph(prefix("meta_dropout")).network
    kwargs = training_setup(net)
    assert kwargs == {"optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False}}
    from graftnet.data import from_arrays

    rng = np.random.default_rng(0)
    data = from_arrays(rng.random((64, 784), dtype=np.float32) * 40, rng.integers(0, 10, 64),
                       classes=[str(i) for i in range(10)])
    before = net.layer("hidden1").weight.detach().clone()
    fit(net, data, epochs=1, batch_size=16, verbose=False, **kwargs)
    after = net.layer("hidden1").weight.detach()
    assert not torch.equal(before, after)
    # the book's clip_by_norm(kernel, axes=1): each input unit's outgoing weights, torch's columns
    assert after.norm(dim=0).max().item() <= 1.0 + 1e-5
    assert before.norm(dim=0).max().item() <= 1.0 + 1e-5  # TF clipped them too


def test_freezing_by_var_list_continues_frozen():
    imp = import_meta_graph(prefix("meta_freeze"))
    assert imp.training["trained_layers"] == expected_training("meta_freeze")["trained_layers"]
    net = imp.network
    assert net.frozen == []
    training_setup(net)
    assert net.frozen == ["hidden1", "hidden2"]  # the training op's var_list was hidden[34]|outputs


def test_max_norm_axes_map_to_torch_renorm_dims():
    from graftnet.io.tf_graph import _renorm_dim

    assert _renorm_dim([1], 2) == 1 and _renorm_dim([0], 2) == 0  # Dense (in, out): per input / output unit
    assert _renorm_dim([0, 1, 2], 4) == 0 and _renorm_dim([0, 1, 3], 4) == 1  # Conv (H, W, in, out)
    assert _renorm_dim([0, 1], 4) is None and _renorm_dim(None, 2) is None
    w = torch.randn(5, 3)  # torch (out, in); TF's kernel is its transpose
    tf_clipped = _tf_clip_by_norm(w.T.numpy(), 0.5, axes=1)
    torch.testing.assert_close(torch.renorm(w, 2, _renorm_dim([1], 2), 0.5), torch.from_numpy(tf_clipped.T))


def _tf_clip_by_norm(t: np.ndarray, clip_norm: float, axes: int) -> np.ndarray:
    """tf.clip_by_norm's formula: t * clip_norm / max(l2norm(t, axes), clip_norm)."""
    norm = np.sqrt((t * t).sum(axis=axes, keepdims=True))
    return t * clip_norm / np.maximum(norm, clip_norm)


def test_training_setup_needs_a_graph():
    with pytest.raises(ConfigError, match="no TensorFlow training settings"):
        training_setup(Network.mlp(4, [3], 2))


# ------------------------------------------------------------------ selectors
def test_tensor_name_selects_up_to_here(imported):
    base = imported["meta_clip"].network
    assert base.select("dnn/hidden3/Relu:0") == ["hidden1", "hidden2", "hidden3"]
    new = graft(base, reuse="dnn/hidden3/Relu:0", head=[Dense(20, "relu", name="new_hidden4"), Dense(10)])
    assert new.layer_names == ["hidden1", "hidden2", "hidden3", "new_hidden4", "outputs"]
    torch.testing.assert_close(new.layer("hidden3").weight, base.layer("hidden3").weight)
    with pytest.raises(ConfigError, match=r"inside layer 'hidden3'.*Did you mean 'dnn/hidden3/Relu:0'"):
        base.select("dnn/hidden3/BiasAdd:0")  # inside hidden3, before its activation
    with pytest.raises(ConfigError, match="not imported from a TF graph"):
        Network.mlp(4, [3], 2).select("dnn/hidden1/Relu:0")


# ------------------------------------------------------------------ twin check
def cnn_twin(channels_last: bool, activation: str = "relu") -> Network:
    return Network([Conv2d(4, 3, padding="same", activation=activation, name="conv1"), MaxPool(2, name="pool1"),
                    Flatten(channels_last=channels_last, name="flat"), Dense(3, name="outputs")], input_shape=(2, 8, 8))


def bn_twin(eps: float, momentum: float = 0.1) -> Network:
    layers = []
    for dense, bn, act, units in (("hidden1", "batch_normalization", "elu1", 20),
                                  ("hidden2", "batch_normalization_1", "elu2", 10)):
        layers += [Dense(units, name=dense), BatchNorm(eps=eps, momentum=momentum, name=bn),
                   Activation("elu", name=act)]
    layers += [Dense(10, name="outputs"), BatchNorm(eps=eps, momentum=momentum, name="batch_normalization_2")]
    return Network(layers, input_shape=(784,))


def test_twin_that_matches_is_verified_and_computes_tfs_outputs():
    net = cnn_twin(channels_last=True)
    report = load_tf_checkpoint(net, prefix("meta_cnn"))
    assert report.ok and report.layout == {"conv1": "verified against model.ckpt.meta",
                                           "outputs": "verified against model.ckpt.meta"}
    ref = reference("meta_cnn")
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(as_input(ref["inputs"])).numpy(), ref["outputs"], atol=ATOL)


def test_twin_with_the_wrong_flatten_order_is_an_error():
    net = cnn_twin(channels_last=False)
    before = net.layer("outputs").weight.detach().clone()
    with pytest.raises(CheckpointError, match=r"layer 'outputs' .*channels-last.*channels_last=False"):
        load_tf_checkpoint(net, prefix("meta_cnn"))
    assert torch.equal(before, net.layer("outputs").weight)  # nothing was loaded


def test_twin_with_the_wrong_activation_is_an_error():
    with pytest.raises(CheckpointError, match=r"layer 'conv1' \(activation elu.*the graph's is relu"):
        load_tf_checkpoint(cnn_twin(True, activation="elu"), prefix("meta_cnn"))


def test_twin_with_pytorchs_batchnorm_epsilon_is_an_error():
    assert set(load_tf_checkpoint(bn_twin(1e-3), prefix("meta_bn")).layout.values()) == {
        "verified against model.ckpt.meta"}
    with pytest.raises(CheckpointError) as err:
        load_tf_checkpoint(bn_twin(1e-5), prefix("meta_bn"))
    assert "layer 'batch_normalization' (BatchNorm eps=1e-05, the graph's is 0.001)" in str(err.value)
    with pytest.raises(CheckpointError,
                       match=r"'batch_normalization_1' \(BatchNorm momentum=0.01 .*0.1 \(TF momentum 0.9"):
        load_tf_checkpoint(bn_twin(1e-3, momentum=0.01), prefix("meta_bn"))


def test_without_a_meta_each_layer_is_not_verifiable(tmp_path):
    for f in (FIXTURES / "meta_cnn").glob("model.ckpt.[id]*"):
        shutil.copy(f, tmp_path / f.name)  # the checkpoint without its .meta
    report = load_tf_checkpoint(cnn_twin(channels_last=False), tmp_path / "model.ckpt")
    assert report.ok
    assert set(report.layout) == {"conv1", "outputs"}
    assert all(v.startswith("not verifiable") for v in report.layout.values())
    assert "layout not verifiable" in str(report)
    assert load_tf_checkpoint(cnn_twin(False), prefix("meta_cnn"), meta=False).layout["conv1"].startswith(
        "not verifiable")


# ------------------------------------------------------------------ bad input
def test_truncated_meta_names_the_file(tmp_path):
    data = (FIXTURES / "meta_clip" / "model.ckpt.meta").read_bytes()
    bad = tmp_path / "model.ckpt.meta"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImportFormatError, match=rf"{bad}: not a readable TensorFlow meta graph.*truncated"):
        read_meta_graph(bad)


def test_foreign_file_as_meta(tmp_path):
    bad = tmp_path / "model.ckpt.meta"
    bad.write_bytes((FIXTURES / "meta_clip" / "reference.npz").read_bytes())  # a zip archive
    with pytest.raises(ImportFormatError, match=str(bad)):
        read_meta_graph(bad)
    bad.write_bytes(b"")
    with pytest.raises(ImportFormatError, match="no graph_def|no operations"):
        read_meta_graph(bad)


def test_unmappable_op_names_file_and_node():
    with pytest.raises(ImportFormatError) as err:
        import_meta_graph(prefix("meta_cumsum"))
    message = str(err.value)
    assert str(FIXTURES / "meta_cumsum" / "model.ckpt.meta") in message
    assert "op 'dnn/running' (Cumsum)" in message


def mixed(tmp_path: Path, meta_from: str, ckpt_from: str) -> Path:
    shutil.copy(FIXTURES / meta_from / "model.ckpt.meta", tmp_path / "model.ckpt.meta")
    for f in (FIXTURES / ckpt_from).glob("model.ckpt.[id]*"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "model.ckpt"


def test_checkpoint_that_disagrees_with_its_meta(tmp_path):
    (tmp_path / "a").mkdir()
    shapes = mixed(tmp_path / "a", "meta_clip", "meta_dropout")
    with pytest.raises(CheckpointError, match=r"does not match its meta graph.*'hidden1/kernel' has shape \(784, 16\) "
                                              r"in the checkpoint, \(784, 20\) in the graph"):
        import_meta_graph(shapes)
    (tmp_path / "b").mkdir()
    missing = mixed(tmp_path / "b", "meta_clip", "meta_ch10")
    with pytest.raises(CheckpointError, match=r"variable 'hidden1/kernel' is missing"):
        import_meta_graph(missing)


def test_cli_bad_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["import", str(prefix("meta_cumsum")), "-o", str(out)]) == 2
    assert "dnn/running" in capsys.readouterr().err and not out.exists()
    (tmp_path / "b").mkdir()
    assert main(["import", str(mixed(tmp_path / "b", "meta_clip", "meta_dropout")), "-o", str(out)]) == 2
    assert "hidden1/kernel" in capsys.readouterr().err and not out.exists()


# ------------------------------------------------------------------ CLI
def test_cli_import_and_inspect(tmp_path, capsys):
    out = tmp_path / "book"
    assert main(["import", str(prefix("meta_ch10")), "-o", str(out)]) == 0
    model = load_model(out)
    ref = reference("meta_ch10")
    with torch.no_grad():
        np.testing.assert_allclose(model.eval()(as_input(ref["inputs"])).numpy(), ref["outputs"], atol=ATOL)
    assert model.info["tensorflow"]["training"]["optimizer"]["lr"] == 0.01
    assert model.select("dnn/hidden2/Relu:0") == ["dnn/hidden1", "dnn/hidden2"]  # survives save/load
    capsys.readouterr()
    assert main(["inspect", str(out), "--operations"]) == 0
    assert capsys.readouterr().out.splitlines() == model.operations()
    assert main(["inspect", str(FIXTURES / "meta_ch10" / "model.ckpt.meta"), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    ops = json.loads((FIXTURES / "meta_ch10" / "operations.json").read_text())
    assert [r["name"] for r in listing["operations"]] == [n for n, _ in ops]
    assert main(["inspect", str(prefix("meta_ch10"))]) == 0
    text = capsys.readouterr().out
    assert "dnn/hidden1/MatMul" in text and "-> dnn/hidden1" in text and "train/GradientDescent" in text


def test_cli_output_tensor_and_twin(tmp_path, capsys):
    out = tmp_path / "proba"
    assert main(["import", str(prefix("meta_activations")), "--tf-output", "dnn/Y_proba:0", "-o", str(out)]) == 0
    assert load_model(out).specs[-1].activation == "softmax"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(cnn_twin(channels_last=False).to_spec()))
    assert main(["import", str(prefix("meta_cnn")), "--spec", str(spec), "-o", str(tmp_path / "twin")]) == 2
    err = capsys.readouterr().err
    assert "layer 'outputs'" in err and "channels_last=False" in err and not (tmp_path / "twin").exists()
    spec.write_text(json.dumps(cnn_twin(channels_last=True).to_spec()))
    assert main(["import", str(prefix("meta_cnn")), "--spec", str(spec), "-o", str(tmp_path / "twin"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layout"] == {"conv1": "verified against model.ckpt.meta",
                                                             "outputs": "verified against model.ckpt.meta"}


def test_cli_import_continues_training(tmp_path, capsys):
    rng = np.random.default_rng(1)
    npz = tmp_path / "digits28.npz"
    np.savez(npz, x_train=rng.random((64, 1, 28, 28), dtype=np.float32) * 40, y_train=rng.integers(0, 10, 64),
             x_valid=rng.random((16, 1, 28, 28), dtype=np.float32), y_valid=rng.integers(0, 10, 16))
    out = tmp_path / "more"
    args = ["import", str(prefix("meta_dropout")), "-o", str(out), "--data", str(npz), "--epochs", "1",
            "--batch-size", "16"]
    assert main(args) == 2  # the graph takes 784 features: the error says how to take the images
    assert "--input-shape 1 28 28" in capsys.readouterr().err and not out.exists()
    assert main(args + ["--input-shape", "1", "28", "28"]) == 0
    model = load_model(out)
    assert model.info["continued_training"] == {"epochs": 1, "batch_size": 16, "optimizer": {
        "type": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False}}
    weight = model.layer("hidden1").weight.detach()
    original = import_meta_graph(prefix("meta_dropout")).network.layer("hidden1").weight.detach()
    assert not torch.equal(weight, original) and weight.norm(dim=0).max().item() <= 1.0 + 1e-5
    assert main(args + ["--input-shape", "1", "28", "28", "--lr", "0.05", "-o", str(tmp_path / "lr")]) == 0
    assert load_model(tmp_path / "lr").info["continued_training"]["optimizer"]["lr"] == 0.05


# ------------------------------------------------------------------ function graphs (SavedModel side)
def test_graph_to_network_on_resource_inputs():
    """A function body: variables arrive as captured resource inputs read by ReadVariableOp."""
    from graftnet.io.tf_graph import TFNode

    rng = np.random.default_rng(2)
    kernel, bias = rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    nodes = [TFNode("x", "Placeholder", attrs={"dtype": "float32", "shape": (None, 3)}),
             TFNode("dense/MatMul/ReadVariableOp", "ReadVariableOp", ["kernel_resource:0"]),
             TFNode("dense/MatMul", "MatMul", ["x:0", "dense/MatMul/ReadVariableOp:0"]),
             TFNode("dense/BiasAdd/ReadVariableOp", "ReadVariableOp", ["bias_resource:0"]),
             TFNode("dense/BiasAdd", "BiasAdd", ["dense/MatMul:0", "dense/BiasAdd/ReadVariableOp:0"]),
             TFNode("dense/Tanh", "Tanh", ["dense/BiasAdd:0"])]
    mapping = graph_to_network(nodes, {"sequential/dense/kernel": kernel, "sequential/dense/bias": bias},
                               outputs=["dense/Tanh:0"], resources={"kernel_resource": "sequential/dense/kernel",
                                                                     "bias_resource": "sequential/dense/bias"})
    net = mapping.network
    assert net.layer_names == ["sequential/dense"] and net.specs[0].activation == "tanh"
    x = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), np.tanh(x @ kernel + bias), atol=1e-6)
    assert mapping.tensors["dense/Tanh:0"] == "sequential/dense"


def test_docstring_examples(monkeypatch):
    import doctest

    import graftnet.io.tf_graph as module

    monkeypatch.chdir(Path(__file__).parents[1])  # the examples name tests/fixtures/... from the repository root
    results = doctest.testmod(module)
    assert results.attempted >= 3 and results.failed == 0


def test_a_deep_path_is_followed():
    from graftnet.io.tf_graph import TFNode

    nodes = [TFNode("x", "Placeholder", attrs={"dtype": "float32", "shape": (None, 3)}),
             TFNode("w", "VariableV2", attrs={"shape": (3, 2)}),
             TFNode("dense/MatMul", "MatMul", ["x:0", "w:0"])]
    for i in range(3000):  # far past Python's default recursion limit of 1000
        nodes.append(TFNode(f"id{i}", "Identity", [f"{nodes[-1].name}:0"]))
    mapping = graph_to_network(nodes, {"w": np.ones((3, 2), np.float32)}, outputs=["id2999:0"])
    assert mapping.network.layer_names == ["dense"] and len(mapping.layer_ops["dense"]) == 3002
