"""Write tests/fixtures/tf/ftrl/ftrl_steps.npz: a few FTRL-Proximal steps computed by TensorFlow.

graftnet's ``FtrlProximal`` (torch) is checked against these numbers. Each case starts from
the same weights and applies the same fixed gradient sequence, once through TensorFlow's own
kernel (``tf.raw_ops.ResourceApplyFtrlV2``, what the book's ``tf.train.FtrlOptimizer`` runs)
and once through Keras' ``Ftrl`` (which adds ``beta``). Arrays are plain ``np.savez``, no pickle.

TensorFlow is not a graftnet dependency: run this with a separate environment::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.21.0
    TF_CPP_MIN_LOG_LEVEL=3 /tmp/tfvenv/bin/python scripts/make_tf_ftrl_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tf" / "ftrl"
STEPS, SIZE = 5, 8

# name -> settings (Keras' argument names); "kernel" cases run ResourceApplyFtrlV2, "keras" ones keras Ftrl
CASES = {
    "kernel_default": dict(learning_rate=0.1),
    "kernel_l1_l2": dict(learning_rate=0.5, l1_regularization_strength=0.3, l2_regularization_strength=0.2),
    "kernel_shrinkage_power": dict(learning_rate=0.2, learning_rate_power=-0.7, initial_accumulator_value=0.5,
                                   l1_regularization_strength=0.05, l2_shrinkage_regularization_strength=0.1),
    "keras_beta": dict(learning_rate=0.3, l1_regularization_strength=0.1, l2_regularization_strength=0.05, beta=0.4),
    "keras_all": dict(learning_rate=0.05, learning_rate_power=-0.3, initial_accumulator_value=0.2,
                      l1_regularization_strength=0.02, l2_regularization_strength=0.1,
                      l2_shrinkage_regularization_strength=0.03, beta=0.1),
}
DEFAULTS = dict(learning_rate_power=-0.5, initial_accumulator_value=0.1, l1_regularization_strength=0.0,
                l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0, beta=0.0)


def run_kernel(settings: dict, w0: np.ndarray, grads: np.ndarray) -> np.ndarray:
    s = {**DEFAULTS, **settings}
    var = tf.Variable(w0.astype(np.float32))
    accum = tf.Variable(np.full_like(w0, s["initial_accumulator_value"], dtype=np.float32))
    linear = tf.Variable(np.zeros_like(w0, dtype=np.float32))
    out = []
    for g in grads:
        tf.raw_ops.ResourceApplyFtrlV2(
            var=var.handle, accum=accum.handle, linear=linear.handle, grad=tf.constant(g, tf.float32),
            lr=s["learning_rate"], l1=s["l1_regularization_strength"], l2=s["l2_regularization_strength"],
            l2_shrinkage=s["l2_shrinkage_regularization_strength"], lr_power=s["learning_rate_power"])
        out.append(var.numpy().copy())
    return np.stack(out)


def run_keras(settings: dict, w0: np.ndarray, grads: np.ndarray) -> np.ndarray:
    opt = tf.keras.optimizers.Ftrl(**settings)
    var = tf.Variable(w0.astype(np.float32))
    out = []
    for g in grads:
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
        out.append(var.numpy().copy())
    return np.stack(out)


def main() -> None:
    rng = np.random.default_rng(16)
    w0 = rng.normal(0, 1, SIZE).astype(np.float32)
    grads = rng.normal(0, 1, (STEPS, SIZE)).astype(np.float32)
    grads[:, :2] *= 0.05  # small gradients: l1 holds these weights at exactly zero
    arrays = {"w0": w0, "grads": grads}
    for name, settings in CASES.items():
        runner = run_kernel if name.startswith("kernel") else run_keras
        arrays[f"{name}/weights"] = runner(settings, w0, grads)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / "ftrl_steps.npz", **arrays)
    manifest = {"tensorflow": tf.__version__, "keras": tf.keras.__version__, "steps": STEPS,
                "cases": {k: {**DEFAULTS, **v} for k, v in CASES.items()}}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {OUT} with TensorFlow {tf.__version__}")


if __name__ == "__main__":
    main()
