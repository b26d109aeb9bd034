"""Write the SavedModel fixtures in tests/fixtures/tf/savedmodel/ with real TensorFlow.

graftnet reads SavedModel directories without TensorFlow; these fixtures are what its
tests check the reader against. Each fixture directory holds the SavedModel TensorFlow
wrote (``saved_model.pb``, ``fingerprint.pb``, ``variables/``; ``keras_metadata.pb`` for
tf_keras) and ``reference.npz`` (fixed NHWC inputs and the model's outputs, as TensorFlow
computes them after reloading the directory). ``manifest.json`` records the versions used.

TensorFlow is not a graftnet dependency: run this with a separate environment::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
    TF_CPP_MIN_LOG_LEVEL=3 /tmp/tfvenv/bin/python scripts/make_tf_savedmodel_fixtures.py

Fixtures (all seeded; arrays are plain ``np.savez``, no pickle):
  keras2_cnn/      tf_keras (Keras 2) Sequential CNN, ``model.save(dir)`` (SavedModel with
                   keras_metadata.pb); conv1 is frozen (``trainable=False``).
  keras2_nested/   tf_keras Sequential([base, Flatten(), Dense]) whose functional base (conv, BN,
                   ReLU, pool) is frozen: the shape of the VGG16 transfer workflow.
  keras3_saved/    the same CNN in Keras 3 (conv1 frozen), ``tf.saved_model.save(model, dir)``.
  keras3_export/   the same CNN in Keras 3 (conv1 frozen), ``model.export(dir)``.
  keras3_mlp/      a Keras 3 MLP (Dense relu / Dropout / Dense elu / Dense softmax), ``model.export``.
  module_cumsum/   a ``tf.Module`` whose serving function uses ``tf.math.cumsum``: a graph with
                   an op graftnet does not map.

CNN: (8, 8, 2) NHWC -> conv1 3x3x4 -> bn1 (eps 1e-3) -> relu1 -> pool1 2x2 -> flatten -> outputs (3).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tf" / "savedmodel"
BN_EPSILON = 1e-3


def _fresh(name: str) -> Path:
    out = ROOT / name
    if out.exists():
        shutil.rmtree(out)
    return out


def _cnn_layers(layers):
    return [
        layers.Conv2D(4, 3, bias_initializer="random_normal", name="conv1"),
        layers.BatchNormalization(epsilon=BN_EPSILON, beta_initializer="random_normal",
                                  gamma_initializer="random_uniform", name="bn1"),
        layers.ReLU(name="relu1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Flatten(name="flatten"),
        layers.Dense(3, bias_initializer="random_normal", name="outputs"),
    ]


def _randomize_bn(model, rng: np.random.Generator) -> None:
    """Moving statistics far from their initial 0 and 1, so a lost one shows in the outputs."""
    for layer in model.layers:
        if hasattr(layer, "moving_mean"):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))


def _train(model, shape: tuple[int, ...], rng: np.random.Generator) -> None:
    labels = rng.integers(0, model.output_shape[-1], 16)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(rng.random((16, *shape), dtype=np.float32), labels, epochs=1, batch_size=8, verbose=0)
    _randomize_bn(model, rng)


def _reference(out: Path, inputs: np.ndarray, outputs: np.ndarray, **extra: np.ndarray) -> None:
    np.savez(out / "reference.npz", inputs_nhwc=inputs, outputs=outputs, **extra)


def _serve(directory: Path, inputs: np.ndarray) -> np.ndarray:
    """What the saved directory computes, reloaded with TensorFlow itself."""
    loaded = tf.saved_model.load(str(directory))
    fn = loaded.signatures["serving_default"]
    result = fn(tf.constant(inputs))
    return next(iter(result.values())).numpy()


def make_keras2_cnn() -> None:
    import tf_keras

    out = _fresh("keras2_cnn")
    rng = np.random.default_rng(31)
    tf_keras.utils.set_random_seed(31)
    model = tf_keras.Sequential([tf_keras.Input((8, 8, 2))] + _cnn_layers(tf_keras.layers), name="keras2_cnn")
    _train(model, (8, 8, 2), rng)
    model.get_layer("conv1").trainable = False
    model.save(str(out), save_format="tf", include_optimizer=False)
    inputs = rng.random((4, 8, 8, 2), dtype=np.float32)
    expected = model(inputs, training=False).numpy()
    reloaded = tf_keras.models.load_model(str(out))
    assert np.allclose(reloaded(inputs, training=False).numpy(), expected, atol=1e-6)
    _reference(out, inputs, expected)


def make_keras2_nested() -> None:
    """Sequential([base, Flatten(), Dense(3)]) with a frozen functional base: the VGG16 workflow's shape."""
    import tf_keras

    out = _fresh("keras2_nested")
    rng = np.random.default_rng(35)
    tf_keras.utils.set_random_seed(35)
    inputs = tf_keras.Input((8, 8, 2), name="base_input")
    x = tf_keras.layers.Conv2D(4, 3, padding="same", bias_initializer="random_normal", name="block1_conv1")(inputs)
    x = tf_keras.layers.BatchNormalization(epsilon=BN_EPSILON, beta_initializer="random_normal", name="block1_bn")(x)
    x = tf_keras.layers.ReLU(name="block1_relu")(x)
    x = tf_keras.layers.MaxPooling2D(2, name="block1_pool")(x)
    base = tf_keras.Model(inputs, x, name="base")
    model = tf_keras.Sequential([base, tf_keras.layers.Flatten(name="flatten"),
                                 tf_keras.layers.Dense(3, bias_initializer="random_normal", name="outputs")],
                                name="keras2_nested")
    model.build((None, 8, 8, 2))
    _train(model, (8, 8, 2), rng)
    _randomize_bn(base, rng)
    base.trainable = False
    model.save(str(out), save_format="tf", include_optimizer=False)
    inputs_nhwc = rng.random((4, 8, 8, 2), dtype=np.float32)
    expected = model(inputs_nhwc, training=False).numpy()
    reloaded = tf_keras.models.load_model(str(out))
    assert np.allclose(reloaded(inputs_nhwc, training=False).numpy(), expected, atol=1e-6)
    _reference(out, inputs_nhwc, expected)


def _keras3_cnn(seed: int):
    import keras

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8, 8, 2))] + _cnn_layers(keras.layers), name="keras3_cnn")
    _train(model, (8, 8, 2), rng)
    model.get_layer("conv1").trainable = False  # its variables are saved with trainable=False
    return model, rng


def make_keras3_saved() -> None:
    out = _fresh("keras3_saved")
    model, rng = _keras3_cnn(32)
    tf.saved_model.save(model, str(out))
    inputs = rng.random((4, 8, 8, 2), dtype=np.float32)
    expected = model(inputs, training=False).numpy()
    assert np.allclose(_serve(out, inputs), expected, atol=1e-6)
    _reference(out, inputs, expected)


def make_keras3_export() -> None:
    out = _fresh("keras3_export")
    model, rng = _keras3_cnn(33)
    model.export(str(out), verbose=False)
    inputs = rng.random((4, 8, 8, 2), dtype=np.float32)
    expected = model(inputs, training=False).numpy()
    assert np.allclose(_serve(out, inputs), expected, atol=1e-6)
    _reference(out, inputs, expected)


def make_keras3_mlp() -> None:
    import keras

    out = _fresh("keras3_mlp")
    rng = np.random.default_rng(34)
    keras.utils.set_random_seed(34)
    init = {"bias_initializer": "random_normal"}
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, "relu", name="hidden1", **init),
                              keras.layers.Dropout(0.3, name="dropout"),
                              keras.layers.Dense(5, "elu", name="hidden2", **init),
                              keras.layers.Dense(3, "softmax", name="outputs", **init)], name="keras3_mlp")
    _train(model, (6,), rng)
    model.export(str(out), verbose=False)
    inputs = rng.random((4, 6), dtype=np.float32)
    expected = model(inputs, training=False).numpy()
    assert np.allclose(_serve(out, inputs), expected, atol=1e-6)
    np.savez(out / "reference.npz", inputs=inputs, outputs=expected)


class _Cumsum(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable(np.linspace(0.5, 1.5, 6).astype(np.float32), name="scale")

    @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.math.cumsum(x * self.scale, axis=1)}


def make_module_cumsum() -> None:
    out = _fresh("module_cumsum")
    module = _Cumsum()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.__call__})


def main() -> None:
    import keras
    import tf_keras

    import sys

    ROOT.mkdir(parents=True, exist_ok=True)
    makers = {"keras2_cnn": make_keras2_cnn, "keras2_nested": make_keras2_nested, "keras3_saved": make_keras3_saved,
              "keras3_export": make_keras3_export, "keras3_mlp": make_keras3_mlp, "module_cumsum": make_module_cumsum}
    for name in sys.argv[1:] or makers:  # names given: only those
        makers[name]()
    manifest = {"made_by": "scripts/make_tf_savedmodel_fixtures.py", "tensorflow": tf.__version__,
                "keras": keras.__version__, "tf_keras": tf_keras.__version__, "numpy": np.__version__,
                "batchnorm_epsilon": BN_EPSILON}
    (ROOT / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    for directory in sorted(p for p in ROOT.iterdir() if p.is_dir()):
        size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        print(f"{directory.name}: {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
