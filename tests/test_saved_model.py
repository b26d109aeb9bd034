"""SavedModel directories from real TensorFlow 2.21 (scripts/make_tf_savedmodel_fixtures.py), read
without TensorFlow: outputs equal TensorFlow's, frozen layers, and clear errors on bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from graftnet.errors import ImportFormatError
from graftnet.io.saved_model import load_saved_model, read_saved_model

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tf" / "savedmodel"


def _tf_inputs_outputs(name: str) -> tuple[torch.Tensor, np.ndarray]:
    ref = np.load(FIXTURES / name / "reference.npz")
    if "inputs_nhwc" in ref:
        return torch.from_numpy(ref["inputs_nhwc"]).permute(0, 3, 1, 2), ref["outputs"]  # NHWC -> NCHW
    return torch.from_numpy(ref["inputs"]), ref["outputs"]


def _outputs(net, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net.eval()(x).numpy()


BASE = ["base/block1_conv1", "base/block1_bn", "base/block1_relu", "base/block1_pool"]


@pytest.mark.parametrize("name, frozen", [("keras2_cnn", ["conv1"]), ("keras2_nested", BASE),
                                          ("keras3_export", ["conv1"]), ("keras3_saved", []), ("keras3_mlp", [])])
def test_saved_model_imports_with_tensorflows_outputs(name, frozen):
    net, report = load_saved_model(FIXTURES / name)
    assert report.ok
    x, expected = _tf_inputs_outputs(name)
    np.testing.assert_allclose(_outputs(net, x), expected, atol=1e-5)
    assert net.frozen == frozen


@pytest.mark.parametrize("name", ["keras2_cnn", "keras3_export", "keras3_saved"])
def test_cnn_keeps_keras_layer_names_and_kinds(name):
    net, _ = load_saved_model(FIXTURES / name)
    assert net.layer_names == ["conv1", "bn1", "relu1", "pool1", "flatten", "outputs"]
    bn = net.spec_of("bn1")
    assert bn.eps == pytest.approx(1e-3)  # Keras' epsilon, not PyTorch's 1e-5
    assert net.spec_of("flatten").channels_last  # Keras flattens (H, W, C)


def test_keras2_nested_model_keeps_its_block_and_keras_list():
    net, _ = load_saved_model(FIXTURES / "keras2_nested")
    assert net.layer_names == [*BASE, "flatten", "outputs"]
    assert net.select("base.layers[1:]") == BASE  # what Keras' base.layers[1:] holds (after its InputLayer)


def test_keras2_ignores_metrics_and_keras3_export_the_second_copy_of_each_variable():
    _, report = load_saved_model(FIXTURES / "keras2_cnn")
    assert report.ignored == ["keras_api/metrics/0/count/.ATTRIBUTES/VARIABLE_VALUE",
                              "keras_api/metrics/0/total/.ATTRIBUTES/VARIABLE_VALUE"]
    _, report = load_saved_model(FIXTURES / "keras3_export")
    assert len(report.matched) == 8 and len(report.ignored) == 8


def test_read_saved_model_lists_signatures_and_the_keras_metadata():
    sm = read_saved_model(FIXTURES / "keras2_cnn" / "saved_model.pb")
    assert sm.tags == ["serve"] and sm.tensorflow_version == "2.21.0"
    assert "serving_default" in sm.signatures
    root = next(n for n in sm.keras_metadata if n.node_path == "root")
    assert root.identifier == "_tf_keras_sequential" and root.metadata["name"] == "keras2_cnn"
    assert read_saved_model(FIXTURES / "keras3_export").keras_metadata is None


def test_imported_saved_model_trains_and_saves(tmp_path):
    from graftnet.io.checkpoint import load_model, save_model

    net, _ = load_saved_model(FIXTURES / "keras3_export")
    x, _ = _tf_inputs_outputs("keras3_export")
    save_model(net, tmp_path / "model")
    back = load_model(tmp_path / "model")
    np.testing.assert_allclose(_outputs(back, x), _outputs(net, x), atol=1e-6)
    assert back.frozen == ["conv1"]


# ------------------------------------------------------------------------------ bad input
def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_saved_model_pb_names_the_file(tmp_path, keep):
    directory = _copy("keras3_export", tmp_path)
    pb = directory / "saved_model.pb"
    data = pb.read_bytes()
    pb.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ImportFormatError, match=rf"{pb}.*truncated"):
        load_saved_model(directory)


def test_foreign_file_as_saved_model_pb(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "saved_model.pb").write_bytes(b'{"not": "a SavedModel"}\n')
    with pytest.raises(ImportFormatError, match=r"saved_model\.pb: not a readable SavedModel"):
        load_saved_model(directory)
    (directory / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ImportFormatError, match="empty"):
        load_saved_model(directory)


def test_truncated_keras_metadata_names_the_file(tmp_path):
    directory = _copy("keras2_cnn", tmp_path)
    metadata = directory / "keras_metadata.pb"
    metadata.write_bytes(metadata.read_bytes()[:4000])
    with pytest.raises(ImportFormatError, match=rf"{metadata}"):
        load_saved_model(directory)


@pytest.mark.parametrize("name", ["keras2_cnn", "keras3_export"])
def test_saved_model_without_variables_names_them(tmp_path, name):
    directory = _copy(name, tmp_path)
    shutil.rmtree(directory / "variables")
    with pytest.raises(ImportFormatError, match=r"without variables.*variables\.index is missing.*conv1/kernel"):
        load_saved_model(directory)


def test_unmappable_op_names_the_file_and_the_node():
    with pytest.raises(ImportFormatError, match=r"module_cumsum/saved_model\.pb: op 'Cumsum' \(Cumsum\).*cannot be "
                                                r"mapped"):
        load_saved_model(FIXTURES / "module_cumsum")


def test_unsupported_keras_layer_in_keras_metadata_is_named(tmp_path):
    """keras_metadata.pb rewritten with a layer type graftnet lacks: the converter names it."""
    from graftnet.io.saved_model import KERAS_METADATA_PB

    directory = _copy("keras2_cnn", tmp_path)
    path = directory / KERAS_METADATA_PB
    data = path.read_bytes()
    assert data.count(b'"MaxPooling2D"') >= 1
    # same length, so the protobuf lengths stay valid: a layer type graftnet does not know
    path.write_bytes(data.replace(b'"MaxPooling2D"', b'"MaxPooling3D"'))
    with pytest.raises(ImportFormatError, match=r"MaxPooling3D \(pool1\)"):
        load_saved_model(directory)


def test_variables_of_another_model_are_refused_naming_the_variable(tmp_path):
    directory = _copy("keras3_export", tmp_path)
    shutil.rmtree(directory / "variables")
    shutil.copytree(FIXTURES / "keras3_mlp" / "variables", directory / "variables")
    with pytest.raises(ImportFormatError, match=r"variables/variables: .*'keras3_cnn/.*does not belong to this "
                                                r"saved_model\.pb"):
        load_saved_model(directory)


def test_not_a_saved_model_directory(tmp_path):
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(ImportFormatError, match=r"no saved_model\.pb \(it holds weights\.h5\)"):
        load_saved_model(tmp_path)
    with pytest.raises(ImportFormatError, match="does not exist"):
        load_saved_model(tmp_path / "nothing")
