"""Keras 3 (TensorFlow backend) side of the benchmarks, run in its own process.

TensorFlow and torch each bring a thread pool; in one process they would compete for
the two cores, so ``bench/run.py`` starts this file with another interpreter (one that
has ``tensorflow-cpu`` and ``keras``, e.g. /tmp/benchvenv) and talks to it with one JSON
object per line on stdin/stdout. Only one side computes at any time.

Requests (each answered by one JSON line; ``{"error": ...}`` on failure):
    {"op": "hello", "threads": 2}                       -> versions
    {"op": "load", "name": "fashion", "x": "x.npy", "y": "y.npy"}
    {"op": "mlp", "id": "m", "hidden": [300, 100], "outputs": 10, "frozen": 0, "lr": 0.01}
    {"op": "vgg_base", "id": "v", "size": 150}
    {"op": "epoch", "id": "m", "data": "fashion", "batch": 200} -> {"seconds": s, "wall": w}
    {"op": "predict", "id": "v", "data": "imgs", "batch": 32}  -> {"seconds": s}
    {"op": "vgg_workflow", "model": "m.keras", "train": "t", "valid": "v", "test": "s", "epochs": [30, 30],
     "batch": 20, "lr": 2e-5}  -> per stage: fit wall seconds, epoch seconds, accuracies
    {"op": "quit"}
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

MODELS: dict = {}
DATA: dict = {}


def hello(req: dict) -> dict:
    import tensorflow as tf

    threads = int(req.get("threads", 2))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "backend": keras.backend.backend(),
            "intra_op_threads": threads, "inter_op_threads": threads}


def load(req: dict) -> dict:
    DATA[req["name"]] = (np.load(req["x"]), np.load(req["y"]) if req.get("y") else None)
    x = DATA[req["name"]][0]
    return {"shape": list(x.shape)}


def mlp(req: dict) -> dict:
    """Sequential Flatten-Dense...-Dense(outputs) with ReLU, SGD; the lowest ``frozen``
    Dense layers get ``trainable=False`` (set before compile, as the book does)."""
    import keras

    layers = [keras.Input(tuple(req.get("input_shape", [28, 28]))), keras.layers.Flatten()]
    for i, units in enumerate(req["hidden"], start=1):
        layers.append(keras.layers.Dense(units, activation=req.get("activation", "relu"),
                                         kernel_initializer=req.get("init", "glorot_uniform"), name=f"hidden{i}"))
    layers.append(keras.layers.Dense(req["outputs"], activation="softmax", name="outputs"))
    model = keras.Sequential(layers)
    for layer in model.layers[1:1 + int(req.get("frozen", 0))]:
        layer.trainable = False
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(req.get("lr", 0.01)),
                  metrics=["accuracy"])
    MODELS[req["id"]] = model
    return {"params": model.count_params(),
            "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights))}


def vgg_base(req: dict) -> dict:
    """keras.applications.VGG16 without its top, random weights, channels-last input."""
    import keras

    size = int(req.get("size", 150))
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    MODELS[req["id"]] = model
    return {"params": model.count_params(), "output_shape": list(model.output_shape[1:])}


class _EpochClock:
    """Keras callback: seconds from on_epoch_begin to on_epoch_end (excludes fit's set-up)."""

    def __init__(self) -> None:
        import keras

        outer = self

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.seconds = time.perf_counter() - outer.t0

        self.callback = Clock()
        self.seconds = 0.0


def epoch(req: dict) -> dict:
    model = MODELS[req["id"]]
    x, y = DATA[req["data"]]
    clock = _EpochClock()
    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=int(req["batch"]), epochs=1, shuffle=True, verbose=0,
                     callbacks=[clock.callback])
    wall = time.perf_counter() - t0
    return {"seconds": clock.seconds, "wall": wall, "loss": float(hist.history["loss"][-1])}


def predict(req: dict) -> dict:
    model = MODELS[req["id"]]
    x, _ = DATA[req["data"]]
    t0 = time.perf_counter()
    out = model.predict(x, batch_size=int(req["batch"]), verbose=0)
    return {"seconds": time.perf_counter() - t0, "output_shape": list(out.shape)}


def vgg_workflow(req: dict) -> dict:
    """The notes' VGG16 workflow (seed 004) on a model graftnet exported (``.keras``, so both
    sides start from the same weights): every layer of the nested ``vgg16`` base
    ``trainable = False``, compile, ``fit``; then ``vgg_base.layers[15:]`` trainable, compile
    again, ``fit`` again. RMSprop, binary cross-entropy, validation data at every epoch."""
    import keras

    model = keras.models.load_model(req["model"], compile=False)
    vgg_base = model.get_layer("vgg16")
    (xt, yt), (xv, yv), (xs, ys) = DATA[req["train"]], DATA[req["valid"]], DATA[req["test"]]
    stages = []
    for stage, epochs in zip(("frozen", "block5"), req["epochs"]):
        if stage == "frozen":
            for layer in vgg_base.layers:
                layer.trainable = False
        else:
            for layer in vgg_base.layers[15:]:
                layer.trainable = True
        model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=float(req["lr"])),
                      loss="binary_crossentropy", metrics=["acc"])
        seconds: list = []

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                seconds.append(time.perf_counter() - self.t0)

        t0 = time.perf_counter()
        hist = model.fit(xt, yt, epochs=int(epochs), batch_size=int(req["batch"]), validation_data=(xv, yv),
                         shuffle=True, verbose=0, callbacks=[Clock()])
        stages.append({"stage": stage, "wall": time.perf_counter() - t0, "epoch_seconds": seconds,
                       "trainable": [w.path for w in model.trainable_weights],
                       "loss": hist.history["loss"], "val_acc": hist.history["val_acc"]})
    test = model.evaluate(xs, ys, verbose=0, return_dict=True)
    return {"stages": stages, "test_accuracy": float(test["acc"]), "test_loss": float(test["loss"])}


OPS = {"hello": hello, "load": load, "mlp": mlp, "vgg_base": vgg_base, "epoch": epoch, "predict": predict,
       "vgg_workflow": vgg_workflow}


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # anything TF prints goes to stderr, the protocol keeps stdout
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        try:
            reply = OPS[req["op"]](req)
        except Exception as err:  # reported to the parent, which marks the contender failed
            reply = {"error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
