"""``graftnet import`` and ``graftnet export``: reports printed, models equal, nothing written on error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from graftnet.cli import main
from graftnet.cli.convert import detect_format
from graftnet.io.checkpoint import load_model, save_model
from graftnet.io.keras import load_keras
from graftnet.io.npz import read_npz
from graftnet.io.torch_state import read_state
from graftnet.network import Network

FIXTURES = Path(__file__).parent / "fixtures"
KERAS2 = FIXTURES / "keras"
BOOK_CKPT = FIXTURES / "tf" / "tf1" / "my_model_final.ckpt"


def predict(net: Network, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x)).numpy()


@pytest.fixture
def saved_cnn(tmp_path) -> tuple[Path, Network]:
    net, _ = load_keras(KERAS2 / "keras2_cnn.h5")
    return save_model(net, tmp_path / "models" / "cnn"), net


def test_import_keras_h5_prints_the_report_and_saves_a_model(tmp_path, capsys):
    assert main(["import", str(KERAS2 / "keras2_cnn.h5"), "-o", str(tmp_path / "cnn")]) == 0
    out = capsys.readouterr().out
    assert "conv1/kernel        -> conv1.weight  (transposed)" in out
    assert "10 matched, 0 missing, 0 unexpected, 0 mismatched" in out
    assert f"saved {tmp_path / 'cnn'}: 11 layers" in out
    model = load_model(tmp_path / "cnn")
    reference = np.load(KERAS2 / "reference.npz")
    x = reference["cnn_x"].transpose(0, 3, 1, 2)  # Keras NHWC -> graftnet NCHW
    assert np.abs(predict(model, np.ascontiguousarray(x)) - reference["cnn_y"]).max() <= 1e-5
    assert model.info["import_report"]["ok"] is True


def test_import_tf_checkpoint_with_a_spec(tmp_path, capsys):
    spec = tmp_path / "book.json"
    spec.write_text(json.dumps(Network.mlp(784, [300, 50, 50, 50, 50], 10).to_spec()))
    assert main(["import", str(BOOK_CKPT), "--spec", str(spec), "-o", str(tmp_path / "book")]) == 0
    assert "hidden1/kernel -> hidden1.weight  (transposed)" in capsys.readouterr().out
    reference = np.load(FIXTURES / "tf" / "tf1" / "reference.npz")
    model = load_model(tmp_path / "book")
    assert np.abs(predict(model, reference["inputs"]) - reference["outputs"]).max() <= 1e-5


def test_import_torch_state_dict_like_another_model_with_rename(tmp_path, saved_cnn, capsys):
    folder, net = saved_cnn
    state = {k.replace("conv", "features."): v for k, v in net.state_dict().items()}  # features.1.weight, ...
    torch.save(state, tmp_path / "w.pt")
    code = main(["import", str(tmp_path / "w.pt"), "--like", str(folder),
                 "--rename", r"features\.(\d)\.(.*)=conv\1.\2", "-o", str(tmp_path / "from-torch")])
    assert code == 0
    assert re.search(r"features\.1\.weight +-> conv1\.weight", capsys.readouterr().out)
    model = load_model(tmp_path / "from-torch")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in net.state_dict().items())


def test_export_then_import_every_format(tmp_path, saved_cnn, capsys):
    folder, net = saved_cnn
    x = np.random.default_rng(0).normal(size=(3, 3, 12, 12)).astype("float32")
    for fmt, name in [("safetensors", "w.safetensors"), ("npz", "w.npz"), ("keras", "w.keras"), ("onnx", "w.onnx")]:
        assert main(["export", str(folder), "--format", fmt, "-o", str(tmp_path / name)]) == 0
        out = capsys.readouterr().out
        assert f"wrote {tmp_path / name} ({fmt})" in out
        assert "max abs difference" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "w.keras", "w.npz", "w.onnx", "w.safetensors"]
    assert main(["import", str(tmp_path / "w.safetensors"), "-o", str(tmp_path / "a")]) == 0  # spec inside
    assert main(["import", str(tmp_path / "w.npz"), "--like", str(folder), "-o", str(tmp_path / "b")]) == 0
    assert main(["import", str(tmp_path / "w.keras"), "-o", str(tmp_path / "c")]) == 0
    for copy in "abc":
        assert np.abs(predict(load_model(tmp_path / copy), x) - predict(net, x)).max() <= 1e-5


def test_export_npz_in_keras_layout(tmp_path, saved_cnn):
    folder, _ = saved_cnn
    assert main(["export", str(folder), "-o", str(tmp_path / "k.npz"), "--layout", "keras"]) == 0
    assert read_npz(tmp_path / "k.npz")["conv1/kernel"].shape == (3, 3, 3, 6)  # HWIO


def test_import_of_a_corrupt_file_fails_and_writes_nothing(tmp_path, capsys):
    data = (KERAS2 / "keras2_cnn.h5").read_bytes()
    (tmp_path / "broken.h5").write_bytes(data[: len(data) // 3])
    assert main(["import", str(tmp_path / "broken.h5"), "-o", str(tmp_path / "out")]) == 2
    assert "graftnet: error:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.h5"]


def test_import_of_weights_only_needs_an_architecture(tmp_path, capsys):
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pt")
    assert main(["import", str(tmp_path / "w.pt"), "-o", str(tmp_path / "out")]) == 2
    assert "give the target architecture with --spec spec.json or --like models/OTHER" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_import_mismatch_fails_and_writes_nothing(tmp_path, saved_cnn, capsys):
    folder, _ = saved_cnn
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "w.pt")
    assert main(["import", str(tmp_path / "w.pt"), "--like", str(folder), "-o", str(tmp_path / "out")]) == 2
    assert "nothing was loaded" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_partial_import_keeps_fresh_weights_for_the_rest(tmp_path, saved_cnn, capsys):
    folder, net = saved_cnn
    torch.save({"conv1.weight": net.state_dict()["conv1.weight"]}, tmp_path / "w.pt")
    assert main(["import", str(tmp_path / "w.pt"), "--like", str(folder), "--partial", "--json",
                 "-o", str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["matched"] == [["conv1.weight", "conv1.weight"]] and "outputs.weight" in report["missing"]


def test_existing_outputs_are_not_replaced_without_overwrite(tmp_path, saved_cnn, capsys):
    folder, _ = saved_cnn
    (tmp_path / "w.npz").write_bytes(b"keep me")
    assert main(["export", str(folder), "-o", str(tmp_path / "w.npz")]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "w.npz").read_bytes() == b"keep me"
    assert main(["export", str(folder), "-o", str(tmp_path / "w.npz"), "--overwrite"]) == 0
    assert "conv1/weight" in read_npz(tmp_path / "w.npz")


def test_export_format_from_suffix_or_an_error(tmp_path, saved_cnn, capsys):
    folder, _ = saved_cnn
    assert main(["export", str(folder), "-o", str(tmp_path / "w.safetensors")]) == 0
    assert "conv1.weight" in read_state(tmp_path / "w.safetensors")[0]
    assert main(["export", str(folder), "-o", str(tmp_path / "w.bin")]) == 2
    assert "cannot tell the export format from 'w.bin'" in capsys.readouterr().err


def test_detect_format():
    assert detect_format(KERAS2 / "keras2_cnn.h5") == "keras"
    assert detect_format(KERAS2 / "keras2_cnn.keras") == "keras"
    assert detect_format(BOOK_CKPT) == "tf"
    assert detect_format(BOOK_CKPT.parent) == "tf"


SAVEDMODELS = FIXTURES / "tf" / "savedmodel"


@pytest.mark.parametrize("name", ["keras2_cnn", "keras3_export"])
def test_import_saved_model_directory(tmp_path, capsys, name):
    assert detect_format(SAVEDMODELS / name) == "savedmodel"
    assert main(["import", str(SAVEDMODELS / name), "-o", str(tmp_path / "cnn")]) == 0
    out = capsys.readouterr().out
    assert "conv1/kernel" in out and "8 matched" in out
    ref = np.load(SAVEDMODELS / name / "reference.npz")
    net = load_model(tmp_path / "cnn")
    assert np.abs(predict(net, ref["inputs_nhwc"].transpose(0, 3, 1, 2).copy()) - ref["outputs"]).max() <= 1e-5
    assert net.frozen == ["conv1"]


def test_import_unmappable_saved_model_fails_naming_the_op_and_writes_nothing(tmp_path, capsys):
    assert main(["import", str(SAVEDMODELS / "module_cumsum"), "-o", str(tmp_path / "out")]) == 2
    assert "op 'Cumsum' (Cumsum)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_h5_is_verified_and_keeps_frozen_layers(tmp_path, saved_cnn, capsys):
    folder, net = saved_cnn
    frozen = load_model(folder).freeze("conv1")
    save_model(frozen, tmp_path / "frozen")
    assert main(["export", str(tmp_path / "frozen"), "-o", str(tmp_path / "w.h5")]) == 0
    assert "max abs difference" in capsys.readouterr().out
    back, _ = load_keras(tmp_path / "w.h5")
    assert back.frozen == ["conv1"]
    import h5py

    with h5py.File(tmp_path / "w.h5") as h5:
        assert json.loads(h5.attrs["model_config"])["class_name"] == "Sequential"  # Keras 2's HDF5 layout
