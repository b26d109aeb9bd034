"""Check graftnet's ``.h5`` export against tf_keras, and keep the result as a fixture.

tf_keras (Keras 2) needs TensorFlow, which graftnet's environment (and CI) does not have. So
the check runs once, here, and its result is committed: tests/fixtures/keras_h5_export/ holds
the ``.h5`` files graftnet wrote, the inputs, and what tf_keras computed from each file and
which layers it reported frozen. The tests then check that today's ``save_keras_h5`` still
writes those very files (config and weights) and that graftnet computes tf_keras' outputs.

Two steps, two environments::

    PYTHONPATH=src /work/main/.venv/bin/python scripts/make_h5_export_fixtures.py write
    TF_CPP_MIN_LOG_LEVEL=3 /tmp/tfvenv/bin/python scripts/make_h5_export_fixtures.py check   # tf_keras

Models (seeded): ``cnn`` conv1 + bn1 frozen, a chain with an ELU Dense and Dropout;
``nested`` Sequential([base, Flatten(), Dense]) with base/conv1 + base/bn1 frozen (the VGG16
workflow's shape); ``residual`` a functional graph with an Add.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "keras_h5_export"
MODELS = ("cnn", "nested", "residual")


def build(name: str):
    import torch

    from graftnet.layers import BatchNorm, Conv2d, Dense, Dropout, Flatten, GlobalAvgPool, MaxPool, ReLU
    from graftnet.merge import Add
    from graftnet.network import Block, Network

    torch.manual_seed({"cnn": 1, "nested": 2, "residual": 3}[name])
    if name == "cnn":
        net = Network([Conv2d(4, 3, name="conv1"), BatchNorm(name="bn1", eps=1e-3), ReLU(name="relu1"),
                       MaxPool(2, name="pool1"), Flatten(name="flatten", channels_last=True),
                       Dense(8, activation="elu", name="hidden"), Dropout(0.2, name="dropout"),
                       Dense(3, name="outputs")], (2, 8, 8), name="cnn")
        frozen = ["conv1", "bn1"]
    elif name == "nested":
        base = Network([Conv2d(4, 3, padding="same", name="conv1"), BatchNorm(name="bn1", eps=1e-3),
                        ReLU(name="relu1"), Conv2d(4, 3, name="conv2", activation="relu")], (2, 8, 8), name="base")
        net = Network([Block(base, name="base"), Flatten(name="flatten", channels_last=True),
                       Dense(3, name="outputs")], (2, 8, 8), name="nested")
        frozen = ["base/conv1", "base/bn1"]
    else:
        net = Network([Conv2d(4, 3, padding="same", name="conv1", activation="relu"),
                       Conv2d(4, 3, padding="same", name="conv2"), Add(name="add", inputs=["conv1", "conv2"]),
                       GlobalAvgPool(name="gap"), Dense(3, name="outputs", activation="softmax")],
                      (2, 8, 8), name="residual")
        frozen = ["conv1"]
    with torch.no_grad():  # moving statistics far from 0 and 1, so a lost one shows
        for _, module in net.named_layers():
            if hasattr(module, "running_mean"):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    net.freeze(frozen)
    return net.eval()


def write() -> None:
    import torch

    from graftnet.io.keras import save_keras_h5

    OUT.mkdir(parents=True, exist_ok=True)
    inputs = np.random.default_rng(5).random((4, 8, 8, 2), dtype=np.float32)  # NHWC, as Keras takes them
    outputs = {}
    for name in MODELS:
        net = build(name)
        save_keras_h5(net, OUT / f"{name}.h5")
        with torch.no_grad():
            outputs[name] = net(torch.from_numpy(inputs).permute(0, 3, 1, 2)).numpy()
    np.savez(OUT / "graftnet.npz", inputs_nhwc=inputs, **outputs)


def check() -> None:
    import tensorflow as tf
    import tf_keras

    inputs = np.load(OUT / "graftnet.npz")["inputs_nhwc"]
    outputs, trainable = {}, {}
    for name in MODELS:
        model = tf_keras.models.load_model(str(OUT / f"{name}.h5"), compile=False)
        outputs[name] = model(inputs, training=False).numpy()
        flags = {}
        for layer in model.layers:
            inner = getattr(layer, "layers", None)
            for sub in inner or [layer]:
                flags[f"{layer.name}/{sub.name}" if inner else layer.name] = bool(sub.trainable)
        trainable[name] = flags
    np.savez(OUT / "tf_keras.npz", **outputs)
    (OUT / "tf_keras.json").write_text(json.dumps(
        {"checked_by": "scripts/make_h5_export_fixtures.py check", "tf_keras": tf_keras.__version__,
         "tensorflow": tf.__version__, "trainable": trainable}, indent=1, sort_keys=True) + "\n")
    for name in MODELS:
        print(name, float(np.abs(outputs[name] - np.load(OUT / "graftnet.npz")[name]).max()))


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1] if len(sys.argv) > 1 else "write"]()
