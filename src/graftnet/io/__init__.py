"""Bringing networks in and out: graftnet checkpoints, Keras, TensorFlow, PyTorch, NumPy, ONNX.

One converter per foreign format, each with an explicit key map, explicit transposes and
a shape check per tensor; all of them report what matched through ``MappingReport``.
The entry points are importable from here; each converter module is imported on first
use, so ``import graftnet`` does not pay for h5py or ONNX::

    >>> from graftnet.io import load_keras, save_model
    >>> net, report = load_keras("mnist_cnn.h5")
    >>> save_model(net, "models/mnist-cnn")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graftnet.io.checkpoint import load_model, save_model
    from graftnet.io.keras import load_keras, load_keras_weights, save_keras, save_keras_h5
    from graftnet.io.mapping import MappingReport
    from graftnet.io.npz import load_npz, save_npz
    from graftnet.io.onnx import check_onnx, export_onnx
    from graftnet.io.saved_model import load_saved_model, read_saved_model
    from graftnet.io.tf_checkpoint import load_tf_checkpoint, read_tf_checkpoint
    from graftnet.io.torch_state import load_state, save_state

# public name -> the module (under graftnet.io) that defines it
_ENTRY_POINTS = {
    "load_model": "checkpoint", "save_model": "checkpoint",
    "load_keras": "keras", "save_keras": "keras", "save_keras_h5": "keras", "load_keras_weights": "keras",
    "load_saved_model": "saved_model", "read_saved_model": "saved_model",
    "read_tf_checkpoint": "tf_checkpoint", "load_tf_checkpoint": "tf_checkpoint",
    "load_state": "torch_state", "save_state": "torch_state",
    "save_npz": "npz", "load_npz": "npz",
    "export_onnx": "onnx", "check_onnx": "onnx",
    "MappingReport": "mapping",
}

__all__ = [
    "MappingReport", "check_onnx", "export_onnx", "load_keras", "load_keras_weights", "load_model", "load_npz",
    "load_saved_model", "load_state", "load_tf_checkpoint", "read_saved_model", "read_tf_checkpoint", "save_keras",
    "save_keras_h5", "save_model", "save_npz", "save_state",
]


def __getattr__(name: str) -> Any:
    """Import the converter module that defines ``name`` on first use (PEP 562)."""
    module = _ENTRY_POINTS.get(name)
    if module is None:
        raise AttributeError(f"module 'graftnet.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"graftnet.io.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
