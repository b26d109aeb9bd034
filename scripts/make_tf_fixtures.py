"""Write the TensorFlow checkpoint fixtures in tests/fixtures/tf/ with real TensorFlow.

graftnet reads TensorFlow checkpoints without TensorFlow; these fixtures are what its tests
check the reader against. Each fixture directory holds the checkpoint TensorFlow wrote,
``variables.npz`` (every variable as TensorFlow's own reader returns it) and
``reference.npz`` (fixed inputs and the TensorFlow model's outputs). ``manifest.json``
records the versions used and each variable's TensorFlow dtype.

TensorFlow is not a graftnet dependency: run this with a separate environment::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
    TF_CPP_MIN_LOG_LEVEL=3 /tmp/tfvenv/bin/python scripts/make_tf_fixtures.py

Fixtures (all seeded; arrays are plain ``np.savez``, no pickle):
  tf1/        the book's ch. 11 MLP (784-300-50-50-50-50-10, ReLU, linear outputs) saved by
              ``tf.compat.v1.train.Saver`` as ``my_model_final.ckpt``, plus ``global_step``.
  tf1_scoped/ a small MLP with BatchNorm under a ``dnn/`` scope, trained one step with
              Momentum so optimizer slots (``.../Momentum``) exist.
  tf1_dtypes/ one variable per dtype graftnet reads (and a string one it skips).
  tf2_mlp/    a Keras 3 MLP with auto names (dense, dense_1, ...) in
              ``tf.train.Checkpoint(model=..., optimizer=Adam)``.
  tf2_cnn/    a Keras 3 CNN named conv1, bn1, pool1, flatten, outputs (Conv2D, BatchNorm, ReLU,
              MaxPool, Flatten, Dense), same kind of checkpoint.
  keras2_cnn/ the same CNN built with tf_keras (Keras 2) and auto names: object-based keys
              ``model/layer_with_weights-K/...``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tf"
BOOK_LAYOUT = [("hidden1", 300), ("hidden2", 50), ("hidden3", 50), ("hidden4", 50), ("hidden5", 50), ("outputs", 10)]
BN_EPSILON = 1e-3  # Keras' default, used by every BatchNorm here
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def _fresh(name: str) -> Path:
    out = ROOT / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def _dump_variables(prefix: str, out: Path) -> dict[str, str]:
    """Save every variable as TF's reader returns it to variables.npz; return key -> TF dtype name."""
    reader = tf.train.load_checkpoint(prefix)
    arrays, dtypes = {}, {}
    for key, dtype in sorted(reader.get_variable_to_dtype_map().items()):
        dtypes[key] = dtype.name
        if key == OBJECT_GRAPH or dtype == tf.string:
            continue
        value = reader.get_tensor(key)
        if dtype == tf.bfloat16:
            value = np.asarray(value).astype(np.float32)  # exact: bfloat16 values are float32 values
        arrays[key] = np.asarray(value)
    np.savez(out / "variables.npz", **arrays)
    return dtypes


# --------------------------------------------------------------------------------- TF1
def _dense_variables(name: str, n_in: int, n_out: int, rng: np.random.Generator) -> tuple[tf.Variable, tf.Variable]:
    with tf.compat.v1.variable_scope(name):
        # He-scaled kernels and non-zero biases, so a bias that fails to load shows in the outputs.
        kernel = tf.compat.v1.get_variable(
            "kernel", initializer=(rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32))
        bias = tf.compat.v1.get_variable("bias", initializer=(rng.standard_normal(n_out) * 0.1).astype(np.float32))
    return kernel, bias


def make_tf1_book() -> dict[str, str]:
    """The book's ch. 11 checkpoint: hidden1..hidden5 (ReLU) and outputs (linear), 784 inputs."""
    out = _fresh("tf1")
    rng = np.random.default_rng(11)
    inputs = rng.random((4, 784), dtype=np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 784), name="X")
        layer, n_in, hidden3 = x, 784, None
        for name, units in BOOK_LAYOUT:
            kernel, bias = _dense_variables(name, n_in, units, rng)
            layer = tf.matmul(layer, kernel) + bias
            if name != "outputs":
                layer = tf.nn.relu(layer)
            if name == "hidden3":
                hidden3 = layer
            n_in = units
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            logits, h3 = sess.run([layer, hidden3], {x: inputs})
            prefix = saver.save(sess, str(out / "my_model_final.ckpt"), write_meta_graph=False)
    np.savez(out / "reference.npz", inputs=inputs, outputs=logits, hidden3=h3)
    return _dump_variables(prefix, out)


def make_tf1_scoped() -> dict[str, str]:
    """dnn/hidden1 (6->5) -> dnn/bn1 -> ReLU -> dnn/outputs (5->3), one Momentum step taken."""
    out = _fresh("tf1_scoped")
    rng = np.random.default_rng(12)
    inputs = rng.random((4, 6), dtype=np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 6), name="X")
        with tf.compat.v1.variable_scope("dnn"):
            k1, b1 = _dense_variables("hidden1", 6, 5, rng)
            with tf.compat.v1.variable_scope("bn1"):
                gamma = tf.compat.v1.get_variable("gamma", initializer=rng.uniform(0.5, 1.5, 5).astype(np.float32))
                beta = tf.compat.v1.get_variable("beta", initializer=rng.normal(0, 0.1, 5).astype(np.float32))
                mean = tf.compat.v1.get_variable(
                    "moving_mean", initializer=rng.normal(0, 0.5, 5).astype(np.float32), trainable=False)
                var = tf.compat.v1.get_variable(
                    "moving_variance", initializer=rng.uniform(0.5, 2, 5).astype(np.float32), trainable=False)
            k2, b2 = _dense_variables("outputs", 5, 3, rng)
        z = tf.matmul(x, k1) + b1
        z = tf.nn.relu(tf.nn.batch_normalization(z, mean, var, beta, gamma, BN_EPSILON))  # inference mode
        logits = tf.matmul(z, k2) + b2
        step = tf.compat.v1.train.get_or_create_global_step()
        loss = tf.reduce_mean(tf.square(logits))
        train = tf.compat.v1.train.MomentumOptimizer(0.01, 0.9).minimize(loss, global_step=step)
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(train, {x: inputs})
            outputs = sess.run(logits, {x: inputs})
            prefix = saver.save(sess, str(out / "model.ckpt"), global_step=step, write_meta_graph=False)
    np.savez(out / "reference.npz", inputs=inputs, outputs=outputs)
    return _dump_variables(prefix, out)


def make_tf1_dtypes() -> dict[str, str]:
    """One variable per dtype, plus a scalar, an empty tensor and a string variable."""
    out = _fresh("tf1_dtypes")
    rng = np.random.default_rng(13)
    graph = tf.Graph()
    with graph.as_default():
        values = {
            "float16": tf.constant(rng.standard_normal((2, 3)), tf.float16),
            "float32": tf.constant(rng.standard_normal((3, 2)), tf.float32),
            "float64": tf.constant(rng.standard_normal((2, 2, 2)), tf.float64),
            "bfloat16": tf.constant(rng.standard_normal((5,)), tf.bfloat16),
            "int8": tf.constant(rng.integers(-128, 128, (4,)), tf.int8),
            "int16": tf.constant(rng.integers(-2**15, 2**15, (4,)), tf.int16),
            "int32": tf.constant(rng.integers(-2**31, 2**31, (2, 2)), tf.int32),
            "int64": tf.constant(rng.integers(-2**62, 2**62, (3,)), tf.int64),
            "uint8": tf.constant(rng.integers(0, 256, (2, 3)), tf.uint8),
            "bool": tf.constant(rng.random((3, 2)) > 0.5, tf.bool),
            "scalar": tf.constant(2.5, tf.float32),
            "empty": tf.zeros((0, 4), tf.float32),
            "text": tf.constant("not a weight", tf.string),
        }
        for name, value in values.items():
            tf.compat.v1.Variable(value, name=f"values/{name}", trainable=False)
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(sess, str(out / "dtypes.ckpt"), write_meta_graph=False)
    return _dump_variables(prefix, out)


# --------------------------------------------------------------------------------- TF2
def _randomize_bn_statistics(model, rng: np.random.Generator) -> None:
    """Give BatchNorm moving statistics values far from their initial 0 and 1."""
    for layer in model.layers:
        if hasattr(layer, "moving_mean"):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))


def _train_and_save(model, inputs: np.ndarray, out: Path, rng: np.random.Generator) -> str:
    """Two Adam epochs (so optimizer variables exist), then save model + optimizer."""
    labels = rng.integers(0, model.output_shape[-1], len(inputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(inputs, labels, epochs=2, batch_size=4, verbose=0)
    _randomize_bn_statistics(model, rng)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    return checkpoint.save(str(out / "ckpt"))


def make_tf2_mlp() -> dict[str, str]:
    import keras

    out = _fresh("tf2_mlp")
    rng = np.random.default_rng(21)
    keras.utils.set_random_seed(21)
    init = {"bias_initializer": "random_normal"}
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, "relu", **init),
                              keras.layers.Dense(8, "relu", **init), keras.layers.Dense(3, **init)])
    prefix = _train_and_save(model, rng.random((16, 20), dtype=np.float32), out, rng)
    inputs = rng.random((4, 20), dtype=np.float32)
    np.savez(out / "reference.npz", inputs=inputs, outputs=model(inputs, training=False).numpy())
    return _dump_variables(prefix, out)


def _cnn(layers, names: bool):
    """(8, 8, 2) NHWC -> conv 3x3x4 -> BN -> ReLU -> maxpool 2 -> flatten -> dense 3."""
    name = (lambda n: {"name": n}) if names else (lambda n: {})
    return [
        layers.Conv2D(4, 3, bias_initializer="random_normal", **name("conv1")),
        layers.BatchNormalization(epsilon=BN_EPSILON, beta_initializer="random_normal",
                                  gamma_initializer="random_uniform", **name("bn1")),
        layers.ReLU(**name("relu1")),
        layers.MaxPooling2D(2, **name("pool1")),
        layers.Flatten(**name("flatten")),
        layers.Dense(3, bias_initializer="random_normal", **name("outputs")),
    ]


def _save_cnn(keras_module, out: Path, names: bool, seed: int) -> str:
    rng = np.random.default_rng(seed)
    keras_module.utils.set_random_seed(seed)
    model = keras_module.Sequential([keras_module.Input((8, 8, 2))] + _cnn(keras_module.layers, names))
    prefix = _train_and_save(model, rng.random((16, 8, 8, 2), dtype=np.float32), out, rng)
    inputs = rng.random((4, 8, 8, 2), dtype=np.float32)  # NHWC, as Keras takes them
    np.savez(out / "reference.npz", inputs_nhwc=inputs, outputs=model(inputs, training=False).numpy())
    return prefix


def make_tf2_cnn() -> dict[str, str]:
    import keras

    out = _fresh("tf2_cnn")
    return _dump_variables(_save_cnn(keras, out, names=True, seed=22), out)


def make_keras2_cnn() -> dict[str, str]:
    import tf_keras

    out = _fresh("keras2_cnn")
    return _dump_variables(_save_cnn(tf_keras, out, names=False, seed=23), out)


def main() -> None:
    import keras
    import tf_keras

    makers = {"tf1": make_tf1_book, "tf1_scoped": make_tf1_scoped, "tf1_dtypes": make_tf1_dtypes,
              "tf2_mlp": make_tf2_mlp, "tf2_cnn": make_tf2_cnn, "keras2_cnn": make_keras2_cnn}
    manifest = {
        "made_by": "scripts/make_tf_fixtures.py",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_keras": tf_keras.__version__,
        "numpy": np.__version__,
        "batchnorm_epsilon": BN_EPSILON,
        "dtypes": {name: make() for name, make in makers.items()},
    }
    (ROOT / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"wrote {ROOT} ({total / 1e6:.2f} MB) with TensorFlow {tf.__version__}")


if __name__ == "__main__":
    main()
