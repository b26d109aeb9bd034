"""Bringing networks in and out: graftnet checkpoints, Keras, TensorFlow, PyTorch, NumPy, ONNX.

One converter per foreign format, each with an explicit key map, explicit transposes and
a shape check per tensor; all of them report what matched through ``MappingReport``.
"""
