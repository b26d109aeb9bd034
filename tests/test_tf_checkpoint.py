"""Reading TensorFlow checkpoints without TensorFlow, checked against checkpoints real TF wrote.

The fixtures in tests/fixtures/tf/ come from scripts/make_tf_fixtures.py (TensorFlow 2.21):
each holds the checkpoint, ``variables.npz`` (TF's own reading of every variable) and
``reference.npz`` (inputs and the TF model's outputs). TensorFlow is not needed here.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graftnet.errors import CheckpointError, ConfigError, ImportFormatError
from graftnet.io.tf_checkpoint import (
    CRC32C_BACKEND,
    _crc32c,
    _crc32c_python,
    _masked_crc32c,
    load_tf_checkpoint,
    read_tf_checkpoint,
    tf_to_graftnet_names,
)
from graftnet.layers import Activation, BatchNorm, Conv2d, Dense, Flatten, MaxPool
from graftnet.network import Network

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
ALL_FIXTURES = ["tf1", "tf1_scoped", "tf1_dtypes", "tf2_mlp", "tf2_cnn", "keras2_cnn"]
BOOK = FIXTURES / "tf1" / "my_model_final.ckpt"
ATOL = 1e-5


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name / "reference.npz", allow_pickle=False) as data:
        return dict(data)


def run(net: Network, inputs: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(torch.from_numpy(inputs))


def book_mlp() -> Network:
    return Network.mlp(784, [300, 50, 50, 50, 50], 10)  # hidden1..hidden5 (ReLU), outputs (linear)


def cnn(channels_last_flatten: bool = True) -> Network:
    """The fixtures' CNN in PyTorch layout: (2, 8, 8) -> conv 3x3x4 -> BN -> ReLU -> pool -> dense 3."""
    return Network([Conv2d(4, 3, name="conv1"), BatchNorm(eps=MANIFEST["batchnorm_epsilon"], name="bn1"),
                    Activation("relu", name="relu1"), MaxPool(2, name="pool1"),
                    Flatten(channels_last=channels_last_flatten, name="flatten"), Dense(3, name="outputs")],
                   input_shape=(2, 8, 8))


@pytest.fixture(scope="module")
def book() -> dict[str, np.ndarray]:
    return read_tf_checkpoint(BOOK)


# ---------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_variable_equals_what_tensorflow_read(name: str) -> None:
    checkpoint = read_tf_checkpoint(FIXTURES / name)
    with np.load(FIXTURES / name / "variables.npz", allow_pickle=False) as expected:
        assert sorted(checkpoint) == sorted(expected.files)
        for key in expected.files:
            assert checkpoint[key].dtype == expected[key].dtype, key
            assert checkpoint[key].shape == expected[key].shape, key
            np.testing.assert_array_equal(checkpoint[key], expected[key], err_msg=key)
    assert checkpoint.dtypes == MANIFEST["dtypes"][name]


def test_dtypes_are_kept_and_bfloat16_becomes_float32() -> None:
    checkpoint = read_tf_checkpoint(FIXTURES / "tf1_dtypes")
    dtypes = {key.split("/")[1]: str(array.dtype) for key, array in checkpoint.items()}
    assert dtypes == {"bfloat16": "float32", "bool": "bool", "empty": "float32", "float16": "float16",
                      "float32": "float32", "float64": "float64", "int16": "int16", "int32": "int32",
                      "int64": "int64", "int8": "int8", "scalar": "float32", "uint8": "uint8"}
    assert checkpoint["values/scalar"].shape == () and checkpoint["values/scalar"] == 2.5
    assert checkpoint["values/empty"].shape == (0, 4)
    assert checkpoint.skipped == {"values/text": "string tensor: not a weight graftnet can load"}
    assert checkpoint["values/float32"].flags.writeable


def test_the_book_checkpoint_has_the_chapter_11_layout(book: dict[str, np.ndarray]) -> None:
    shapes = {key: value.shape for key, value in book.items()}
    assert shapes["hidden1/kernel"] == (784, 300) and shapes["hidden5/kernel"] == (50, 50)
    assert shapes["outputs/kernel"] == (50, 10) and shapes["outputs/bias"] == (10,)
    assert book.object_graph is None and not book.has_object_graph


def test_tf2_checkpoints_expose_their_object_graph() -> None:
    checkpoint = read_tf_checkpoint(FIXTURES / "tf2_cnn")
    assert checkpoint.has_object_graph
    assert b"sequential_1/conv1/kernel" in checkpoint.object_graph  # Keras' variable path, in the graph
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in checkpoint and checkpoint.skipped == {}


@pytest.mark.parametrize("form", ["prefix", "index", "data", "meta", "directory"])
def test_a_checkpoint_can_be_named_five_ways(form: str) -> None:
    directory = FIXTURES / "tf1_scoped"
    path = {"prefix": directory / "model.ckpt-1", "index": directory / "model.ckpt-1.index",
            "data": directory / "model.ckpt-1.data-00000-of-00001", "meta": directory / "model.ckpt-1.meta",
            "directory": directory}[form]
    checkpoint = read_tf_checkpoint(path)
    assert checkpoint.prefix == directory / "model.ckpt-1"
    assert "dnn/hidden1/kernel" in checkpoint


def test_a_moved_directory_whose_state_file_holds_an_absolute_path_still_reads(tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(FIXTURES / "tf2_mlp", moved)
    (moved / "checkpoint").write_text('model_checkpoint_path: "/nowhere/training/ckpt-1"\n')
    assert read_tf_checkpoint(moved).prefix == moved / "ckpt-1"


def test_a_single_file_checkpoint_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "old.ckpt").write_bytes(b"\x00" * 64)
    with pytest.raises(ImportFormatError, match=r"old\.ckpt is a single file, not a TensorFlow checkpoint.*V1 format"):
        read_tf_checkpoint(tmp_path / "old.ckpt")


def test_a_missing_checkpoint_lists_what_is_there() -> None:
    with pytest.raises(FileNotFoundError, match=r"my_model\.ckpt\.index does not exist; index files in .*tf1: "
                                                r"my_model_final\.ckpt\.index"):
        read_tf_checkpoint(FIXTURES / "tf1" / "my_model.ckpt")


# ---------------------------------------------------------------------------------- names
def test_tf1_names_map_by_name_with_the_common_scope_stripped_and_slots_ignored() -> None:
    names = ["dnn/hidden1/kernel", "dnn/hidden1/kernel/Momentum", "dnn/hidden1/bias", "dnn/bn1/gamma",
             "dnn/bn1/beta", "dnn/bn1/moving_mean", "dnn/bn1/moving_variance", "dnn/outputs/kernel/Adam_1",
             "dnn/outputs/kernel", "global_step", "beta1_power"]
    assert tf_to_graftnet_names(names) == {
        "dnn/hidden1/kernel": "hidden1.weight", "dnn/hidden1/bias": "hidden1.bias", "dnn/bn1/gamma": "bn1.weight",
        "dnn/bn1/beta": "bn1.bias", "dnn/bn1/moving_mean": "bn1.running_mean",
        "dnn/bn1/moving_variance": "bn1.running_var", "dnn/outputs/kernel": "outputs.weight"}


def test_a_single_layer_keeps_its_name() -> None:
    assert tf_to_graftnet_names(["hidden1/kernel", "hidden1/bias"]) == {"hidden1/kernel": "hidden1.weight",
                                                                          "hidden1/bias": "hidden1.bias"}


def test_object_based_names_map_by_position_and_optimizer_state_is_ignored() -> None:
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    names = ["model/layer_with_weights-0/kernel" + suffix, "model/layer_with_weights-1/moving_variance" + suffix,
             "model/layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m" + suffix,
             "optimizer/iter" + suffix, "save_counter" + suffix]
    assert tf_to_graftnet_names(names, layers=["conv1", "bn1"]) == {
        names[0]: "conv1.weight", names[1]: "bn1.running_var"}
    with pytest.raises(ConfigError, match=r"layer_with_weights-0.*pass layers="):
        tf_to_graftnet_names(names)


# ---------------------------------------------------------------------------------- the book's model
def test_the_book_checkpoint_loads_into_an_mlp_and_reproduces_tensorflow() -> None:
    net = book_mlp()
    report = load_tf_checkpoint(net, BOOK)
    assert report.ok
    assert report.ignored == ["global_step"]
    assert report.transposed == [f"{layer}.weight" for layer in ["hidden1", "hidden2", "hidden3", "hidden4",
                                                                   "hidden5", "outputs"]]
    assert report.source == str(BOOK)
    ref = reference("tf1")
    torch.testing.assert_close(run(net, ref["inputs"]), torch.from_numpy(ref["outputs"]), atol=ATOL, rtol=ATOL)


def test_reusing_hidden123_of_the_book_model_computes_what_tensorflow_computed() -> None:
    net = book_mlp()
    load_tf_checkpoint(net, BOOK)
    lower, _ = net.split("hidden3")
    ref = reference("tf1")
    torch.testing.assert_close(run(lower, ref["inputs"]), torch.from_numpy(ref["hidden3"]), atol=ATOL, rtol=ATOL)


def test_loading_only_hidden123_into_a_new_network_with_its_own_head() -> None:
    torch.manual_seed(0)
    net = Network.mlp(784, [300, 50, 50], 5)  # a new task: 5 classes
    head = net.outputs.weight.detach().clone()
    with pytest.raises(CheckpointError, match=r"(?s)my_model_final\.ckpt.*'outputs/kernel' -> 'outputs\.weight': "
                                              r"source shape \(50, 10\) \(transposed: \(10, 50\)\), "
                                              r"target shape \(5, 50\)"):
        load_tf_checkpoint(net, BOOK)
    report = load_tf_checkpoint(net, BOOK, strict=False)
    assert [target for _, target in report.matched] == [f"hidden{i}.{p}" for i in (1, 2, 3)
                                                        for p in ("weight", "bias")]
    assert report.unexpected == ["hidden4/bias", "hidden4/kernel", "hidden5/bias", "hidden5/kernel"]
    assert [m[:2] for m in report.mismatched] == [("outputs/bias", "outputs.bias"),
                                                  ("outputs/kernel", "outputs.weight")]
    assert torch.equal(net.outputs.weight, head)
    ref = reference("tf1")
    torch.testing.assert_close(run(net.split("hidden3")[0], ref["inputs"]), torch.from_numpy(ref["hidden3"]),
                               atol=ATOL, rtol=ATOL)


def test_rename_maps_the_book_layers_onto_other_names() -> None:
    net = Network([Dense(300, "relu", name="fc1"), Dense(50, "relu", name="fc2"), Dense(50, "relu", name="fc3"),
                   Dense(50, "relu", name="fc4"), Dense(50, "relu", name="fc5"), Dense(10, name="logits")], (784,))
    report = load_tf_checkpoint(net, BOOK, rename=[(r"hidden(\d)\.(.*)", r"fc\1.\2"), (r"outputs\.(.*)", r"logits.\1")])
    assert report.ok and ("outputs/bias", "logits.bias") in report.matched
    ref = reference("tf1")
    torch.testing.assert_close(run(net, ref["inputs"]), torch.from_numpy(ref["outputs"]), atol=ATOL, rtol=ATOL)


def test_the_book_checkpoint_loads_into_any_module() -> None:
    from collections import OrderedDict

    layers = OrderedDict((name, torch.nn.Linear(n_in, n_out)) for name, n_in, n_out in
                         [("hidden1", 784, 300), ("hidden2", 300, 50), ("hidden3", 50, 50), ("hidden4", 50, 50),
                          ("hidden5", 50, 50), ("outputs", 50, 10)])
    net = torch.nn.Sequential(layers)
    assert load_tf_checkpoint(net, BOOK).ok
    x = torch.from_numpy(reference("tf1")["inputs"])
    with torch.no_grad():
        for i, layer in enumerate(net):
            x = layer(x) if i == len(net) - 1 else torch.relu(layer(x))
    torch.testing.assert_close(x, torch.from_numpy(reference("tf1")["outputs"]), atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------------------------- other layouts
def test_a_scoped_tf1_model_with_batchnorm_and_momentum_slots() -> None:
    net = Network([Dense(5, name="hidden1"), BatchNorm(eps=MANIFEST["batchnorm_epsilon"], name="bn1"),
                   Activation("relu", name="act1"), Dense(3, name="outputs")], (6,))
    report = load_tf_checkpoint(net, FIXTURES / "tf1_scoped")
    assert report.ok
    assert sorted(report.ignored) == sorted(["global_step"] + [f"dnn/{v}/Momentum" for v in [
        "bn1/beta", "bn1/gamma", "hidden1/bias", "hidden1/kernel", "outputs/bias", "outputs/kernel"]])
    assert report.notes == ["bn1.num_batches_tracked: not in the source; kept at 0"]
    ref = reference("tf1_scoped")
    torch.testing.assert_close(run(net, ref["inputs"]), torch.from_numpy(ref["outputs"]), atol=ATOL, rtol=ATOL)


def test_a_keras3_mlp_with_auto_names_loads_by_position() -> None:
    net = Network.mlp(20, [16, 8], 3)
    report = load_tf_checkpoint(net, FIXTURES / "tf2_mlp")
    assert report.ok
    assert report.matched[0] == ("sequential/dense/kernel", "hidden1.weight")
    assert "optimizer/_variables/2/.ATTRIBUTES/VARIABLE_VALUE" in report.ignored
    ref = reference("tf2_mlp")
    torch.testing.assert_close(run(net, ref["inputs"]), torch.from_numpy(ref["outputs"]), atol=ATOL, rtol=ATOL)


def test_matching_keras3_auto_names_by_name_fails_with_suggestions() -> None:
    net = Network.mlp(20, [16, 8], 3)
    with pytest.raises(CheckpointError, match=r"unexpected 'sequential/dense_2/kernel' -> 'dense_2\.weight': "
                                              r"no such key in the model"):
        load_tf_checkpoint(net, FIXTURES / "tf2_mlp", match="name")


@pytest.mark.parametrize("match", ["position", "name"])
def test_a_keras3_cnn_with_batchnorm_reproduces_tensorflow(match: str) -> None:
    net = cnn()
    report = load_tf_checkpoint(net, FIXTURES / "tf2_cnn", match=match)
    assert report.ok and report.transposed == ["conv1.weight", "outputs.weight"]
    assert ("sequential_1/bn1/moving_variance", "bn1.running_var") in report.matched
    ref = reference("tf2_cnn")
    nchw = np.ascontiguousarray(ref["inputs_nhwc"].transpose(0, 3, 1, 2))  # Keras NHWC -> PyTorch NCHW
    torch.testing.assert_close(run(net, nchw), torch.from_numpy(ref["outputs"]), atol=ATOL, rtol=ATOL)


def test_a_keras2_cnn_with_layer_with_weights_keys_reproduces_tensorflow() -> None:
    net = cnn()
    report = load_tf_checkpoint(net, FIXTURES / "keras2_cnn")
    assert report.ok
    assert report.matched[0] == ("conv2d/kernel", "conv1.weight")
    ref = reference("keras2_cnn")
    nchw = np.ascontiguousarray(ref["inputs_nhwc"].transpose(0, 3, 1, 2))
    torch.testing.assert_close(run(net, nchw), torch.from_numpy(ref["outputs"]), atol=ATOL, rtol=ATOL)


def test_position_matching_needs_a_tf2_checkpoint() -> None:
    with pytest.raises(ConfigError, match=r"TF1 \(name-based\) checkpoint.*match='name'"):
        load_tf_checkpoint(book_mlp(), BOOK, match="position")


# ---------------------------------------------------------------------------------- damage
def copy_fixture(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def first_data_block(index: bytes) -> tuple[int, int]:
    """(offset, size) of the index's first data block: it starts at 0 and, in these small
    files, is the only one, so it ends 5 bytes (its trailer) before the meta-index block."""
    footer = index[-48:]
    offset = shift = pos = 0
    while True:  # the footer starts with the meta-index block's offset, a varint
        offset |= (footer[pos] & 0x7F) << shift
        shift, pos = shift + 7, pos + 1
        if footer[pos - 1] < 0x80:
            return 0, offset - 5


def test_a_truncated_index_is_named(tmp_path: Path) -> None:
    index = copy_fixture("tf2_cnn", tmp_path) / "ckpt-1.index"
    index.write_bytes(index.read_bytes()[:-10])
    with pytest.raises(ImportFormatError, match=r"ckpt-1\.index: bad magic number .*not a TensorFlow checkpoint "
                                                r"index, or truncated"):
        read_tf_checkpoint(index)
    index.write_bytes(b"\x00" * 20)
    with pytest.raises(ImportFormatError, match=r"ckpt-1\.index: the file is 20 bytes, shorter than a table footer"):
        read_tf_checkpoint(index)


def test_a_flipped_byte_in_the_index_fails_its_block_checksum(tmp_path: Path) -> None:
    index = copy_fixture("tf2_cnn", tmp_path) / "ckpt-1.index"
    data = bytearray(index.read_bytes())
    data[40] ^= 0x01
    index.write_bytes(bytes(data))
    with pytest.raises(ImportFormatError, match=r"ckpt-1\.index: data block at offset 0 \(bytes 0\.\.\d+\): "
                                                r"checksum mismatch"):
        read_tf_checkpoint(index)


def test_a_compressed_index_block_is_refused_by_name(tmp_path: Path) -> None:
    index = copy_fixture("tf1", tmp_path) / "my_model_final.ckpt.index"
    data = bytearray(index.read_bytes())
    offset, size = first_data_block(bytes(data))
    data[offset + size] = 1  # block type: snappy
    crc = _masked_crc32c(bytes(data[offset:offset + size + 1]))  # covers the type byte
    data[offset + size + 1:offset + size + 5] = crc.to_bytes(4, "little")
    index.write_bytes(bytes(data))
    with pytest.raises(ImportFormatError, match=r"my_model_final\.ckpt\.index: data block at offset 0 is compressed "
                                                r"\(snappy, type 1\)"):
        read_tf_checkpoint(index)


def test_a_truncated_data_file_is_named(tmp_path: Path) -> None:
    data = copy_fixture("tf2_cnn", tmp_path) / "ckpt-1.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ImportFormatError, match=r"ckpt-1\.data-00000-of-00001: truncated: '.+' needs bytes "
                                                r"\d+\.\.\d+, the file has 1000 bytes"):
        read_tf_checkpoint(data.parent)


def test_a_flipped_bit_in_a_tensor_is_a_checksum_mismatch(tmp_path: Path) -> None:
    data = copy_fixture("tf1", tmp_path) / "my_model_final.ckpt.data-00000-of-00001"
    content = bytearray(data.read_bytes())
    content[100] ^= 0x10  # inside hidden1/kernel, the largest tensor, in the middle of the file's first MB
    data.write_bytes(bytes(content))
    with pytest.raises(ImportFormatError, match=r"my_model_final\.ckpt\.data-00000-of-00001: checksum mismatch for "
                                                r"'hidden\d/(kernel|bias)'.*the file is corrupt"):
        read_tf_checkpoint(data.parent)


def test_a_missing_data_shard_is_named(tmp_path: Path) -> None:
    directory = copy_fixture("tf2_mlp", tmp_path)
    (directory / "ckpt-1.data-00000-of-00001").unlink()
    with pytest.raises(ImportFormatError, match=r"data shard ckpt-1\.data-00000-of-00001 is missing \(the index "
                                                r"lists 1 shard\(s\); found: \(none\)\)"):
        read_tf_checkpoint(directory)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_fixture("tf2_cnn", tmp_path_factory.mktemp("damaged"))


INDEX = (FIXTURES / "tf2_cnn" / "ckpt-1.index").read_bytes()
DATA = (FIXTURES / "tf2_cnn" / "ckpt-1.data-00000-of-00001").read_bytes()


def damaged(original: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    content = bytearray(original)
    for position, mask in flips:
        content[position % len(content)] ^= mask
    return bytes(content[:cut])


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(INDEX)), flips=st.lists(st.tuples(st.integers(0, len(INDEX) - 1),
                                                               st.integers(1, 255)), max_size=4))
def test_a_damaged_index_only_ever_raises_import_format_error(scratch: Path, cut: int,
                                                              flips: list[tuple[int, int]]) -> None:
    (scratch / "ckpt-1.index").write_bytes(damaged(INDEX, cut, flips))
    started = time.perf_counter()
    try:
        read_tf_checkpoint(scratch / "ckpt-1")
    except ImportFormatError as err:
        assert "ckpt-1" in str(err)
    assert time.perf_counter() - started < 1.0


@settings(max_examples=50, deadline=2000)
@given(flips=st.lists(st.tuples(st.integers(0, len(DATA) - 1), st.integers(1, 255)), min_size=1, max_size=3,
                      unique_by=lambda flip: flip[0]))
def test_any_damage_to_the_data_file_is_detected(scratch: Path, flips: list[tuple[int, int]]) -> None:
    (scratch / "ckpt-1.index").write_bytes(INDEX)
    (scratch / "ckpt-1.data-00000-of-00001").write_bytes(damaged(DATA, len(DATA), flips))
    try:
        with pytest.raises(ImportFormatError, match=r"ckpt-1\.data-00000-of-00001: checksum mismatch"):
            read_tf_checkpoint(scratch / "ckpt-1")
    finally:
        (scratch / "ckpt-1.data-00000-of-00001").write_bytes(DATA)


# ---------------------------------------------------------------------------------- crc32c
def test_crc32c_matches_the_standard_check_value() -> None:
    assert _crc32c_python(b"123456789") == 0xE3069283  # RFC 3720's CRC32C check value
    assert _crc32c(b"123456789") == 0xE3069283
    assert CRC32C_BACKEND in ("google-crc32c", "crc32c", "pure-python")
