"""``.h5`` export (Keras 2 / tf.keras HDF5) against real Keras 3 here and tf_keras via a checked fixture.

tf_keras needs TensorFlow, which this environment does not have: scripts/make_h5_export_fixtures.py
wrote tests/fixtures/keras_h5_export/*.h5 with ``save_keras_h5`` and recorded what tf_keras 2.21
computed from them. The tests check that today's writer still writes those files and that the
recorded tf_keras outputs and frozen flags are graftnet's; Keras 3 is checked live.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from graftnet.errors import ImportFormatError  # noqa: E402
from graftnet.io.keras import load_keras, load_keras_weights, save_keras, save_keras_h5  # noqa: E402
from graftnet.layers import Conv2d, Dense, GlobalAvgPool  # noqa: E402
from graftnet.merge import Add  # noqa: E402
from graftnet.network import Block, Network  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "keras_h5_export"
MODELS = ("cnn", "nested", "residual")
sys.path.insert(0, str(ROOT / "scripts"))
from make_h5_export_fixtures import build as _seeded_build  # noqa: E402


def build(name: str) -> Network:
    with torch.random.fork_rng():  # the builders seed torch; leave the other tests' RNG alone
        return _seeded_build(name)


def _outputs(net: Network, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)).numpy()


def _keras_trainable(model) -> dict[str, bool]:
    flags = {}
    for layer in model.layers:
        inner = getattr(layer, "layers", None)
        for sub in inner or [layer]:
            flags[f"{layer.name}/{sub.name}" if inner else layer.name] = bool(sub.trainable)
    return flags


@pytest.mark.parametrize("name", MODELS)
def test_keras3_load_model_reads_h5_with_same_outputs_and_frozen_layers(tmp_path, name):
    net = build(name)
    x = np.load(FIXTURES / "graftnet.npz")["inputs_nhwc"]
    path = save_keras(net, tmp_path / f"{name}.h5")  # the suffix picks the HDF5 writer
    with h5py.File(path) as h5:
        assert "model_config" in h5.attrs and "layer_names" in h5["model_weights"].attrs
    model = keras.models.load_model(path, compile=False)
    out = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(out, _outputs(net, x), atol=1e-5)
    flags = _keras_trainable(model)
    frozen = {k for k, v in flags.items() if not v}
    assert frozen == set(net.frozen)
    back, report = load_keras(path)  # and graftnet reads its own .h5 back
    assert report.ok and back.frozen == net.frozen
    np.testing.assert_allclose(_outputs(back, x), _outputs(net, x), atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_tf_keras_outputs_recorded_for_todays_h5_files(tmp_path, name):
    """The committed .h5 is what save_keras_h5 writes today, and tf_keras computed graftnet's outputs."""
    committed = FIXTURES / f"{name}.h5"
    net = build(name)
    assert load_keras_weights(net, committed).ok  # the committed values, whatever torch's RNG gives today
    fresh = save_keras_h5(net, tmp_path / f"{name}.h5")
    with h5py.File(committed) as old, h5py.File(fresh) as new:
        assert json.loads(new.attrs["model_config"]) == json.loads(old.attrs["model_config"]), \
            "the .h5 writer changed: rerun scripts/make_h5_export_fixtures.py write, then check under tf_keras"
        names = list(old["model_weights"].attrs["layer_names"])
        assert list(new["model_weights"].attrs["layer_names"]) == names
        for layer in names:
            weights = list(old["model_weights"][layer].attrs["weight_names"])
            assert list(new["model_weights"][layer].attrs["weight_names"]) == weights
            for w in weights:
                np.testing.assert_array_equal(new["model_weights"][layer][w][()], old["model_weights"][layer][w][()])
    x = np.load(FIXTURES / "graftnet.npz")["inputs_nhwc"]
    np.testing.assert_allclose(np.load(FIXTURES / "tf_keras.npz")[name], _outputs(net, x), atol=1e-5)
    recorded = json.loads((FIXTURES / "tf_keras.json").read_text())["trainable"][name]
    assert {k for k, v in recorded.items() if not v} == set(net.frozen)


def test_graph_with_nested_block_is_refused_and_nothing_is_written(tmp_path):
    base = Network([Conv2d(4, 3, padding="same", name="conv1")], (2, 8, 8), name="base")
    net = Network([Block(base, name="base"), Conv2d(4, 1, name="side"), Add(name="add", inputs=["base", "side"]),
                   GlobalAvgPool(name="gap"), Dense(3, name="outputs")], (2, 8, 8), name="graph")
    with pytest.raises(ImportFormatError, match=r"nested model\(s\) base.*\.keras"):
        save_keras(net, tmp_path / "graph.h5")
    assert list(tmp_path.iterdir()) == []
    save_keras(net, tmp_path / "graph.keras")  # the .keras format has no such limit


def test_activation_keras2_and_3_disagree_on_is_refused(tmp_path):
    net = Network([Dense(4, activation="hard_sigmoid", name="gate")], (3,))
    with pytest.raises(ImportFormatError, match="'gate'.*hard_sigmoid.*Keras 2"):
        save_keras(net, tmp_path / "gate.h5")
    assert list(tmp_path.iterdir()) == []
