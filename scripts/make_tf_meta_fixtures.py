"""Write the TF1 meta-graph fixtures in tests/fixtures/tf/meta_*/ with real TensorFlow.

graftnet rebuilds a network from a ``.meta`` file (a MetaGraphDef) without TensorFlow; these
fixtures are the book's TF1 listings (Hands-On Machine Learning, ch. 10 and 11, as our source
notes ``../shared/seeds/002_*.txt`` and ``003_*.txt`` give them), built and saved by TensorFlow
itself, in TF1 mode (``VariableV2``, ``Switch``/``Merge`` control flow, ``tf.layers``), with:

  ``model.ckpt.meta`` / ``.index`` / ``.data-00000-of-00001``  what ``tf.train.Saver().save`` wrote
  ``reference.npz``    ``inputs`` and TensorFlow's ``outputs`` (inference: training=False), plus
                       the output of named tensors (e.g. ``dnn/hidden3/Relu:0``) where the listing
                       reuses them; plain ``np.savez``, no pickle
  ``operations.json``  ``[[name, type], ...]`` of ``graph.get_operations()``, in order
  ``training.json``    what the listing set: learning rate, momentum, clipping threshold, ...

Fixtures (all seeded; the weights are trained a few steps on random data so they are not the
initial ones):
  meta_ch10/     ch. 10: ``neuron_layer`` (tf.Variable kernel/bias, MatMul + add) under ``dnn``,
                 784-300-100-10 ReLU, ``loss``/``train``/``eval`` scopes, SGD 0.01: the book's
                 architecture at its real size (about 1.1 MB of weights).
  meta_clip/     ch. 11.1.4 / 11.2.1: ``tf.layers.dense`` hidden1..hidden5 + outputs under ``dnn``,
                 gradients clipped by value to [-1, 1], SGD 0.01 (the graph ``import_meta_graph``
                 restores in 11.2.1); small layers (20, 10, 10, 10, 10).
  meta_bn/       ch. 11.1.3: dense -> ``tf.layers.batch_normalization(momentum=0.9)`` -> ELU, the
                 ``training`` placeholder_with_default, UPDATE_OPS as control dependencies of the
                 training op, global step; 784-20-10-10.
  meta_dropout/  ch. 11.4.3 dropout (rate 0.5 on X, hidden1, hidden2) + ch. 11.4.4 max-norm
                 (clip_by_norm(axes=1) + assign on hidden1/kernel and hidden2/kernel, threshold
                 1.0), Momentum 0.01 / 0.9; 784-16-8-10.
  meta_cnn/      a small NHWC CNN: conv1 (3x3, 4, SAME, ReLU) -> pool1 (max 2x2) -> tf.reshape to
                 flat (channels-last order) -> outputs (3), Adam 0.001.
  meta_activations/ selu, tf.nn.leaky_relu(alpha=0.2), the book's maximum(0.01 z, z), tanh, sigmoid,
                 elu, and ``Y_proba`` = softmax(logits); RMSProp.
  meta_cnn_bn/   conv (stride 2, SAME) -> fused batch norm (momentum 0.99) -> ReLU -> average pool
                 (3, stride 1, SAME) -> tf.layers.flatten -> dense; Nesterov momentum.
  meta_freeze/   ch. 11.2.3 freezing by var_list: only hidden3, hidden4 and outputs are trained.
  meta_cumsum/   an MLP with a ``tf.cumsum`` between its layers: an op graftnet does not map.

TensorFlow is not a graftnet dependency: run this with the separate environment of
``scripts/make_tf_fixtures.py`` (tensorflow-cpu 2.21 + tf-keras 2.21)::

    TF_CPP_MIN_LOG_LEVEL=3 /tmp/tfvenv/bin/python scripts/make_tf_meta_fixtures.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1.layers needs Keras 2 (tf_keras)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_v2_behavior()  # the book's TF1: VariableV2, Switch/Merge, tf.layers
v1 = tf.compat.v1

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tf"
PREFIX = "model.ckpt"


def _fresh(name: str) -> Path:
    out = ROOT / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def _placeholders(n_inputs):
    shape = (None, n_inputs) if isinstance(n_inputs, int) else (None, *n_inputs)
    X = v1.placeholder(tf.float32, shape=shape, name="X")
    y = v1.placeholder(tf.int32, shape=(None), name="y")
    return X, y


def _loss_and_eval(logits, y):
    with tf.name_scope("loss"):
        xentropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        loss = tf.reduce_mean(xentropy, name="loss")
    with tf.name_scope("eval"):
        correct = v1.nn.in_top_k(logits, y, 1)
        accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name="accuracy")
    return loss, accuracy


def _finish(out: Path, graph, X, y, logits, training_op, rng, n_inputs, *, extra_ops=(), feed_train=None,
            tensors=(), steps=5, training: dict) -> None:
    """Train ``steps`` steps on random data, save, and write the references."""
    shape = (n_inputs,) if isinstance(n_inputs, int) else tuple(n_inputs)
    n_classes = int(logits.shape[-1])
    inputs = rng.random((6, *shape), dtype=np.float32)
    with graph.as_default():
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(steps):
                xb = rng.random((32, *shape), dtype=np.float32)
                yb = rng.integers(0, n_classes, 32).astype(np.int32)
                sess.run(training_op, {X: xb, y: yb, **(feed_train or {})})
                for op in extra_ops:
                    sess.run(op)
            outputs = sess.run(logits, {X: inputs})
            named = {name: sess.run(graph.get_tensor_by_name(name), {X: inputs}) for name in tensors}
            saver.save(sess, str(out / PREFIX))
    (out / "checkpoint").unlink()  # absolute paths of this machine; the prefix is what tests use
    np.savez(out / "reference.npz", inputs=inputs, outputs=outputs, **named)
    operations = [[op.name, op.type] for op in graph.get_operations()]
    (out / "operations.json").write_text(json.dumps(operations, indent=0) + "\n")
    (out / "training.json").write_text(json.dumps(training, indent=1, sort_keys=True) + "\n")


def neuron_layer(X, n_neurons, name, activation=None):
    """The ch. 10 listing's own dense layer."""
    with tf.name_scope(name):
        n_inputs = int(X.get_shape()[1])
        stddev = 2 / np.sqrt(n_inputs)
        init = tf.random.truncated_normal((n_inputs, n_neurons), stddev=stddev)
        W = tf.Variable(init, name="kernel")
        b = tf.Variable(tf.zeros([n_neurons]), name="bias")
        Z = tf.matmul(X, W) + b
        if activation is not None:
            return activation(Z)
        return Z


def make_ch10() -> None:
    out, rng, graph = _fresh("meta_ch10"), np.random.default_rng(10), tf.Graph()
    with graph.as_default():
        v1.set_random_seed(42)
        X, y = _placeholders(28 * 28)
        with tf.name_scope("dnn"):
            hidden1 = neuron_layer(X, 300, name="hidden1", activation=tf.nn.relu)
            hidden2 = neuron_layer(hidden1, 100, name="hidden2", activation=tf.nn.relu)
            logits = neuron_layer(hidden2, 10, name="outputs")
        loss, _ = _loss_and_eval(logits, y)
        learning_rate = 0.01
        with tf.name_scope("train"):
            optimizer = v1.train.GradientDescentOptimizer(learning_rate)
            training_op = optimizer.minimize(loss)
    _finish(out, graph, X, y, logits, training_op, rng, 28 * 28, tensors=["dnn/hidden2/Relu:0"],
            training={"optimizer": "sgd", "lr": learning_rate, "loss": "sparse_softmax_cross_entropy",
                      "training_op": "train/GradientDescent", "clip_value": None, "global_step": None})


def make_clip() -> None:
    out, rng, graph = _fresh("meta_clip"), np.random.default_rng(11), tf.Graph()
    with graph.as_default():
        v1.set_random_seed(42)
        X, y = _placeholders(28 * 28)
        with tf.name_scope("dnn"):
            hidden1 = v1.layers.dense(X, 20, activation=tf.nn.relu, name="hidden1")
            hidden2 = v1.layers.dense(hidden1, 10, activation=tf.nn.relu, name="hidden2")
            hidden3 = v1.layers.dense(hidden2, 10, activation=tf.nn.relu, name="hidden3")
            hidden4 = v1.layers.dense(hidden3, 10, activation=tf.nn.relu, name="hidden4")
            hidden5 = v1.layers.dense(hidden4, 10, activation=tf.nn.relu, name="hidden5")
            logits = v1.layers.dense(hidden5, 10, name="outputs")
        loss, _ = _loss_and_eval(logits, y)
        learning_rate = 0.01
        threshold = 1.0
        optimizer = v1.train.GradientDescentOptimizer(learning_rate)
        grads_and_vars = optimizer.compute_gradients(loss)
        capped_gvs = [(tf.clip_by_value(grad, -threshold, threshold), var) for grad, var in grads_and_vars]
        training_op = optimizer.apply_gradients(capped_gvs)
    _finish(out, graph, X, y, logits, training_op, rng, 28 * 28, tensors=["dnn/hidden3/Relu:0"],
            training={"optimizer": "sgd", "lr": learning_rate, "loss": "sparse_softmax_cross_entropy",
                      "training_op": "GradientDescent", "clip_value": threshold, "global_step": None})


def make_bn() -> None:
    out, rng, graph = _fresh("meta_bn"), np.random.default_rng(12), tf.Graph()
    with graph.as_default():
        v1.set_random_seed(42)
        X, y = _placeholders(28 * 28)
        training = v1.placeholder_with_default(False, shape=(), name="training")
        hidden1 = v1.layers.dense(X, 20, name="hidden1")
        bn1 = v1.layers.batch_normalization(hidden1, training=training, momentum=0.9)
        bn1_act = tf.nn.elu(bn1)
        hidden2 = v1.layers.dense(bn1_act, 10, name="hidden2")
        bn2 = v1.layers.batch_normalization(hidden2, training=training, momentum=0.9)
        bn2_act = tf.nn.elu(bn2)
        logits_before_bn = v1.layers.dense(bn2_act, 10, name="outputs")
        logits = v1.layers.batch_normalization(logits_before_bn, training=training, momentum=0.9)
        loss, _ = _loss_and_eval(logits, y)
        learning_rate = 0.01
        global_step = v1.train.get_or_create_global_step()
        with tf.name_scope("train"):
            optimizer = v1.train.GradientDescentOptimizer(learning_rate)
            extra_update_ops = v1.get_collection(v1.GraphKeys.UPDATE_OPS)
            with tf.control_dependencies(extra_update_ops):
                training_op = optimizer.minimize(loss, global_step=global_step)
    _finish(out, graph, X, y, logits, training_op, rng, 28 * 28, feed_train={training: True}, steps=20,
            training={"optimizer": "sgd", "lr": learning_rate, "loss": "sparse_softmax_cross_entropy",
                      "training_op": "train/GradientDescent", "clip_value": None, "global_step": "global_step",
                      "batchnorm": {"momentum": 0.9, "epsilon": 0.001}, "update_ops": 6})


def make_dropout() -> None:
    out, rng, graph = _fresh("meta_dropout"), np.random.default_rng(13), tf.Graph()
    with graph.as_default():
        v1.set_random_seed(42)
        X, y = _placeholders(28 * 28)
        training = v1.placeholder_with_default(False, shape=(), name="training")
        dropout_rate = 0.5  # == 1 - keep_prob
        X_drop = v1.layers.dropout(X, dropout_rate, training=training)
        with tf.name_scope("dnn"):
            hidden1 = v1.layers.dense(X_drop, 16, activation=tf.nn.relu, name="hidden1")
            hidden1_drop = v1.layers.dropout(hidden1, dropout_rate, training=training)
            hidden2 = v1.layers.dense(hidden1_drop, 8, activation=tf.nn.relu, name="hidden2")
            hidden2_drop = v1.layers.dropout(hidden2, dropout_rate, training=training)
            logits = v1.layers.dense(hidden2_drop, 10, name="outputs")
        loss, _ = _loss_and_eval(logits, y)
        learning_rate, momentum = 0.01, 0.9
        with tf.name_scope("train"):
            optimizer = v1.train.MomentumOptimizer(learning_rate, momentum)
            training_op = optimizer.minimize(loss)
        threshold = 1.0
        weights = graph.get_tensor_by_name("hidden1/kernel:0")
        clipped_weights = tf.clip_by_norm(weights, clip_norm=threshold, axes=1)
        clip_weights = v1.assign(weights, clipped_weights)
        weights2 = graph.get_tensor_by_name("hidden2/kernel:0")
        clipped_weights2 = tf.clip_by_norm(weights2, clip_norm=threshold, axes=1)
        clip_weights2 = v1.assign(weights2, clipped_weights2)
    _finish(out, graph, X, y, logits, training_op, rng, 28 * 28, feed_train={training: True},
            extra_ops=(clip_weights, clip_weights2),
            training={"optimizer": "momentum", "lr": learning_rate, "momentum": momentum,
                      "loss": "sparse_softmax_cross_entropy", "training_op": "train/Momentum", "clip_value": None,
                      "global_step": None, "dropout": [dropout_rate] * 3,
                      "max_norm": {"hidden1": [threshold, 1], "hidden2": [threshold, 1]}})


def make_cnn() -> None:
    out, rng, graph = _fresh("meta_cnn"), np.random.default_rng(14), tf.Graph()
    with graph.as_default():
        v1.set_random_seed(42)
        X, y = _placeholders((8, 8, 2))
        with tf.name_scope("cnn"):
            conv1 = v1.layers.conv2d(X, 4, 3, padding="same", activation=tf.nn.relu, name="conv1")
            pool1 = tf.nn.max_pool2d(conv1, ksize=2, strides=2, padding="VALID", name="pool1")
            flat = tf.reshape(pool1, shape=[-1, 4 * 4 * 4], name="flat")
            logits = v1.layers.dense(flat, 3, name="outputs")
        loss, _ = _loss_and_eval(logits, y)
        with tf.name_scope("train"):
            training_op = v1.train.AdamOptimizer(0.001).minimize(loss)
    _finish(out, graph, X, y, logits, training_op, rng, (8, 8, 2), tensors=["cnn/pool1:0"],
            training={"optimizer": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8,
                      "loss": "sparse_softmax_cross_entropy", "training_op": "train/Adam", "clip_value": None,
                      "global_step": None})


def make_activations() -> None:
    out, rng, graph = _fresh("meta_activations"), np.random.default_rng(16), tf.Graph()
    with graph.as_default():
        v1.set_random_seed(42)
        X, y = _placeholders(6)

        def leaky_relu(z, name=None):  # ch. 11.1.2's own
            return tf.maximum(0.01 * z, z, name=name)

        with tf.name_scope("dnn"):
            hidden1 = v1.layers.dense(X, 5, activation=tf.nn.selu, name="hidden1")
            hidden2 = v1.layers.dense(hidden1, 5, activation=lambda z: tf.nn.leaky_relu(z, alpha=0.2), name="hidden2")
            hidden3 = v1.layers.dense(hidden2, 5, activation=leaky_relu, name="hidden3")
            hidden4 = v1.layers.dense(hidden3, 5, activation=tf.nn.tanh, name="hidden4")
            hidden5 = v1.layers.dense(hidden4, 5, activation=tf.nn.sigmoid, name="hidden5")
            hidden6 = v1.layers.dense(hidden5, 5, activation=tf.nn.elu, name="hidden6")
            logits = v1.layers.dense(hidden6, 3, name="outputs")
            v1.nn.softmax(logits, name="Y_proba")
        loss, _ = _loss_and_eval(logits, y)
        with tf.name_scope("train"):
            training_op = v1.train.RMSPropOptimizer(0.001, decay=0.9, momentum=0.0, epsilon=1e-10).minimize(loss)
    _finish(out, graph, X, y, logits, training_op, rng, 6, tensors=["dnn/Y_proba:0"],
            training={"optimizer": "rmsprop", "lr": 0.001, "rho": 0.9, "epsilon": 1e-10,
                      "loss": "sparse_softmax_cross_entropy", "training_op": "train/RMSProp", "clip_value": None,
                      "global_step": None})


def make_cnn_bn() -> None:
    out, rng, graph = _fresh("meta_cnn_bn"), np.random.default_rng(17), tf.Graph()
    with graph.as_default():
        v1.set_random_seed(42)
        X, y = _placeholders((6, 6, 3))
        training = v1.placeholder_with_default(False, shape=(), name="training")
        conv1 = v1.layers.conv2d(X, 4, 3, strides=2, padding="same", name="conv1")
        bn1 = v1.layers.batch_normalization(conv1, training=training, momentum=0.99, name="bn1")
        act1 = tf.nn.relu(bn1, name="relu1")
        pool1 = v1.layers.average_pooling2d(act1, 3, 1, padding="same", name="pool1")
        flat = v1.layers.flatten(pool1, name="flatten")
        logits = v1.layers.dense(flat, 3, name="outputs")
        loss, _ = _loss_and_eval(logits, y)
        with tf.name_scope("train"):
            extra_update_ops = v1.get_collection(v1.GraphKeys.UPDATE_OPS)
            with tf.control_dependencies(extra_update_ops):
                training_op = v1.train.MomentumOptimizer(0.01, 0.9, use_nesterov=True).minimize(loss)
    _finish(out, graph, X, y, logits, training_op, rng, (6, 6, 3), feed_train={training: True}, steps=10,
            training={"optimizer": "nesterov", "lr": 0.01, "momentum": 0.9, "loss": "sparse_softmax_cross_entropy",
                      "training_op": "train/Momentum", "clip_value": None, "global_step": None,
                      "batchnorm": {"momentum": 0.99, "epsilon": 0.001}, "update_ops": 2})


def make_freeze() -> None:
    """11.2.3: only hidden3, hidden4 and outputs train (var_list), hidden1-2 stay frozen."""
    out, rng, graph = _fresh("meta_freeze"), np.random.default_rng(18), tf.Graph()
    with graph.as_default():
        v1.set_random_seed(42)
        X, y = _placeholders(12)
        with tf.name_scope("dnn"):
            hidden1 = v1.layers.dense(X, 8, activation=tf.nn.relu, name="hidden1")
            hidden2 = v1.layers.dense(hidden1, 6, activation=tf.nn.relu, name="hidden2")
            hidden3 = v1.layers.dense(hidden2, 6, activation=tf.nn.relu, name="hidden3")
            hidden4 = v1.layers.dense(hidden3, 4, activation=tf.nn.relu, name="hidden4")
            logits = v1.layers.dense(hidden4, 3, name="outputs")
        loss, _ = _loss_and_eval(logits, y)
        with tf.name_scope("train"):
            optimizer = v1.train.GradientDescentOptimizer(0.01)
            train_vars = v1.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES, scope="hidden[34]|outputs")
            training_op = optimizer.minimize(loss, var_list=train_vars)
    _finish(out, graph, X, y, logits, training_op, rng, 12, steps=3,
            training={"optimizer": "sgd", "lr": 0.01, "loss": "sparse_softmax_cross_entropy",
                      "training_op": "train/GradientDescent", "clip_value": None, "global_step": None,
                      "trained_layers": ["hidden3", "hidden4", "outputs"]})


def make_cumsum() -> None:
    out, rng, graph = _fresh("meta_cumsum"), np.random.default_rng(15), tf.Graph()
    with graph.as_default():
        v1.set_random_seed(42)
        X, y = _placeholders(6)
        with tf.name_scope("dnn"):
            hidden1 = v1.layers.dense(X, 5, activation=tf.nn.relu, name="hidden1")
            running = tf.cumsum(hidden1, axis=1, name="running")
            logits = v1.layers.dense(running, 3, name="outputs")
        loss, _ = _loss_and_eval(logits, y)
        with tf.name_scope("train"):
            training_op = v1.train.GradientDescentOptimizer(0.01).minimize(loss)
    _finish(out, graph, X, y, logits, training_op, rng, 6, steps=1,
            training={"optimizer": "sgd", "lr": 0.01, "loss": "sparse_softmax_cross_entropy",
                      "training_op": "train/GradientDescent", "clip_value": None, "global_step": None})


def main() -> None:
    for make in (make_ch10, make_clip, make_bn, make_dropout, make_cnn, make_activations, make_cnn_bn, make_freeze,
                 make_cumsum):
        make()
    sizes = {p.name: sum(f.stat().st_size for f in p.iterdir()) for p in sorted(ROOT.glob("meta_*")) if p.is_dir()}
    manifest = {"made_by": "scripts/make_tf_meta_fixtures.py", "tensorflow": tf.__version__,
                "numpy": np.__version__, "bytes": sizes}
    (ROOT / "meta_manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {', '.join(f'{k} ({v / 1e6:.2f} MB)' for k, v in sizes.items())} with TensorFlow {tf.__version__}")


if __name__ == "__main__":
    main()
