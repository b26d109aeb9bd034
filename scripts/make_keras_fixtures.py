"""Write the Keras 2 fixtures in tests/fixtures/keras/ with real tf.keras (tf_keras 2.x).

graftnet's Keras importer is tested against Keras 3 models built in the tests themselves
(Keras 3 runs on the PyTorch backend). Files written by Keras 2 need TensorFlow, which is
not a graftnet dependency, so they are made once with this script and committed::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
    TF_CPP_MIN_LOG_LEVEL=3 /tmp/tfvenv/bin/python scripts/make_keras_fixtures.py

Fixtures (seeded; ``reference.npz`` holds inputs and tf.keras' predictions, no pickle):
  keras2_cnn.h5         Sequential CNN: Rescaling, Conv2D(same, relu), BatchNormalization
                        (scale=False), MaxPooling2D, Conv2D(stride 2), LeakyReLU, ELU,
                        AveragePooling2D, Flatten, Dropout, Dense(softmax), saved with
                        ``model.save("x.h5")`` (legacy HDF5, weight names "conv1/kernel:0").
  keras2_cnn.keras      the same model in tf.keras' .keras zip (Keras 3-like layout without
                        layer names in the weights file).
  keras2_cnn_weights.h5 the same weights from ``model.save_weights("x.h5")`` (legacy, by name).
  keras2_mlp.h5         a functional MLP: Input, Dense(relu, L2), BatchNormalization,
                        Activation(selu), Dropout, Dense.
  keras2_book.h5        the book's classic ``Flatten(input_shape=[28, 28])`` MLP.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tf_keras as keras

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "keras"


def _randomise_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    """Non-trivial BatchNorm statistics, as if trained."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.normal(0.5, 0.3, w.shape).astype("float32") if "variance" not in v.name
                               else rng.uniform(0.5, 2.0, w.shape).astype("float32")
                               for v, w in zip(layer.weights, layer.get_weights())])


def cnn() -> keras.Model:
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=(12, 12, 3)),
        keras.layers.Rescaling(1 / 255.0, name="rescale"),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.BatchNormalization(scale=False, name="bn1"),
        keras.layers.MaxPooling2D(name="pool1"),
        keras.layers.Conv2D(8, 3, strides=2, name="conv2"),
        keras.layers.LeakyReLU(alpha=0.2, name="lrelu"),
        keras.layers.ELU(alpha=0.7, name="elu"),
        keras.layers.AveragePooling2D(pool_size=1, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dropout(0.25, name="dropout"),
        keras.layers.Dense(10, activation="softmax", name="outputs"),
    ], name="keras2_cnn")


def mlp() -> keras.Model:
    inputs = keras.Input((20,), name="features")
    x = keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.l2(1e-3),
                           name="hidden1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("selu", name="act1")(x)
    x = keras.layers.Dropout(0.1, name="dropout1")(x)
    outputs = keras.layers.Dense(3, name="outputs")(x)
    return keras.Model(inputs, outputs, name="keras2_mlp")


def book() -> keras.Model:
    return keras.Sequential([
        keras.layers.Flatten(input_shape=[28, 28]),
        keras.layers.Dense(30, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(42)
    rng = np.random.default_rng(42)
    arrays = {}
    models = {"cnn": (cnn(), rng.uniform(0, 255, (8, 12, 12, 3))),
              "mlp": (mlp(), rng.normal(size=(8, 20))),
              "book": (book(), rng.uniform(size=(8, 28, 28)))}
    for key, (model, x) in models.items():
        _randomise_batchnorm(model, rng)
        x = x.astype("float32")
        arrays[f"{key}_x"], arrays[f"{key}_y"] = x, model.predict(x, verbose=0)
        model.save(OUT / f"keras2_{key}.h5")
        if key == "cnn":
            model.save(OUT / "keras2_cnn.keras")
            model.save_weights(OUT / "keras2_cnn_weights.h5")
    np.savez(OUT / "reference.npz", **arrays)
    (OUT / "manifest.json").write_text(json.dumps({
        "tf_keras": keras.__version__, "made_by": "scripts/make_keras_fixtures.py",
        "files": sorted(p.name for p in OUT.iterdir() if p.name != "manifest.json")}, indent=1) + "\n")


if __name__ == "__main__":
    main()
