"""Per-layer parity on the keras.applications families (not a timed test).

Every single-input layer of VGG16/19, ResNet50, MobileNetV2, EfficientNetB0 and DenseNet121
(64x64 inputs, random weights from a fixed seed) goes through graftnet's Keras converter
and runs against Keras' own layer on a random input; prints the worst max abs difference
per family, relative to max(1, |output|). Merge layers (Add, Multiply, Concatenate) are
left to the graph importer.

    KERAS_BACKEND=torch PYTHONPATH=src python bench/keras_family_layers.py
"""
import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from graftnet.io import keras as gk  # noqa: E402

fams = {"VGG16": keras.applications.VGG16, "VGG19": keras.applications.VGG19, "ResNet50": keras.applications.ResNet50,
        "MobileNetV2": keras.applications.MobileNetV2, "EfficientNetB0": keras.applications.EfficientNetB0,
        "DenseNet121": keras.applications.DenseNet121}
rng = np.random.default_rng(0)
for fam, make in fams.items():
    keras.utils.set_random_seed(0)
    model = make(weights=None, input_shape=(64, 64, 3))
    worst, count, skipped = 0.0, 0, set()
    for layer in model.layers:
        cls = type(layer).__name__
        if cls in ("InputLayer",) or cls not in gk.SUPPORTED_LAYERS:
            skipped.add(cls); continue
        values = []
        for w in layer.weights:
            v = rng.normal(0, 0.3, w.shape)
            if "variance" in w.path or "count" in w.path: v = np.abs(v) + 0.5
            values.append(v.astype("float32"))
        layer.set_weights(values)
        in_shape = tuple(layer.input.shape[1:])
        shape = (in_shape[2], in_shape[0], in_shape[1]) if len(in_shape) == 3 else in_shape
        weights = [(w.path.rsplit("/", 1)[-1], np.asarray(w.numpy())) for w in layer.weights]
        ctx = gk._Context(shape, "channels_last", lambda n: weights, [])
        entry = {"class_name": cls, "config": json.loads(json.dumps(layer.get_config(), default=str)), "name": layer.name}
        plan = gk._convert(entry, ctx)
        module = plan.spec.build(shape).eval()
        state = module.state_dict()
        for name, arr in weights:
            if name in plan.dropped: continue
            t = torch.from_numpy(arr)
            t = plan.transforms[name](t) if name in plan.transforms else t
            state[plan.targets[name]].copy_(t.reshape(state[plan.targets[name]].shape))
        x = rng.normal(0, 1, (2, *in_shape)).astype("float32")
        expected = keras.ops.convert_to_numpy(layer(x, training=False))
        with torch.no_grad():
            xt = torch.from_numpy(x)
            y = module(xt.permute(0, 3, 1, 2) if xt.dim() == 4 else xt).numpy()
        y = y.transpose(0, 2, 3, 1) if y.ndim == 4 else y
        diff = float(np.abs(y - expected).max() / max(1.0, np.abs(expected).max()))
        if diff > worst: worst, worst_layer = diff, layer.name
        count += 1
    print(f"{fam}: {count} layers, worst max abs diff (relative to max(1, |output|)) {worst:.1e} at {worst_layer}; "
          f"not converted here: {sorted(skipped)}", flush=True)
