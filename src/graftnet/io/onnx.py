"""Export a network to ONNX and check it against ONNX Runtime.

``export_onnx`` uses PyTorch's ``torch.export``-based exporter (``dynamo=True``), which
needs ``onnxscript`` (the ``graftnet[onnx]`` extra); without it, it falls back to the older
TorchScript exporter that PyTorch still ships. The network is exported in inference mode
(Dropout off, BatchNorm on its running statistics), with one input ``input`` of shape
(batch, *network.input_shape) and one output ``output``; the batch axis is dynamic unless
``batch_size`` is given. The file is checked with ``onnx.checker`` before it replaces
``path``::

    >>> export_onnx(net, "net.onnx")
    >>> check_onnx(net, "net.onnx", torch.randn(8, 1, 28, 28)) <= 1e-5   # max abs difference
    True
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from graftnet.errors import ConfigError, ImportFormatError, ShapeError
from graftnet.io.checkpoint import atomic_output

__all__ = ["DEFAULT_OPSET", "check_onnx", "export_onnx"]

DEFAULT_OPSET = 18  # the lowest opset torch's dynamo exporter implements without converting down
INPUT_NAME, OUTPUT_NAME = "input", "output"
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "torch._dynamo", "torch.fx")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's progress prints, log lines and deprecation warnings."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _input_shape(module: nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = input_shape or getattr(module, "input_shape", None)
    if shape is None:
        raise ConfigError(f"export_onnx needs input_shape= for a {type(module).__name__} "
                          f"(a graftnet Network knows its own)")
    return tuple(int(s) for s in shape)


def export_onnx(network: nn.Module, path: str | Path, *, batch_size: int | None = None,
                opset: int = DEFAULT_OPSET, input_shape: tuple[int, ...] | None = None) -> Path:
    """Write ``network`` as an ONNX model at ``path`` and check it with ``onnx.checker``.

    Args:
        network: a graftnet ``Network`` (or any module, with ``input_shape``).
        path: the ``.onnx`` file; written to a temporary name, then renamed.
        batch_size: a fixed batch size, or None for a dynamic batch axis.
        opset: the ONNX opset version.
        input_shape: one example's shape, for modules other than a ``Network``.

        >>> export_onnx(Network.mlp(784, [300, 100], 10), "mlp.onnx")
    """
    import onnx

    path = Path(path)
    shape = _input_shape(network, input_shape)
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer or None (dynamic), got {batch_size!r}")
    example = torch.zeros(batch_size or 2, *shape)  # 2, not 1: torch.export treats size-1 axes as fixed
    was_training = network.training
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    network.eval()
    try:
        with atomic_output(path) as tmp:
            _export(network, example.to(device), str(tmp), batch_size is None, opset)
            onnx.checker.check_model(str(tmp), full_check=True)
    finally:
        network.train(was_training)
    return path


def _has_onnxscript() -> bool:
    """Whether torch's dynamo-based exporter can run (it needs onnxscript)."""
    return importlib.util.find_spec("onnxscript") is not None


def _export(network: nn.Module, example: torch.Tensor, path: str, dynamic: bool, opset: int) -> None:
    with _quiet():
        if _has_onnxscript():
            dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
            torch.onnx.export(network, (example,), path, dynamo=True, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
        else:
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
            torch.onnx.export(network, (example,), path, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)


def check_onnx(network: nn.Module, path: str | Path, x: torch.Tensor | np.ndarray) -> float:
    """Run ``path`` in ONNX Runtime and ``network`` in PyTorch on ``x``: the max abs difference.

    ``x`` is a batch, (N, *input_shape). The network runs in inference mode.

        >>> check_onnx(net, "net.onnx", torch.randn(4, 784)) < 1e-5
        True
    """
    import onnxruntime as ort

    batch = torch.as_tensor(x, dtype=torch.float32)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable models
        raise ImportFormatError(f"{path} cannot be loaded by ONNX Runtime: {err}") from None
    expected_shape = session.get_inputs()[0].shape
    if len(expected_shape) != batch.dim():
        raise ShapeError(f"{path} takes inputs of shape {expected_shape}, got a batch of shape {tuple(batch.shape)}")
    (onnx_out,) = session.run([OUTPUT_NAME], {session.get_inputs()[0].name: batch.numpy()})
    was_training = network.training
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    network.eval()
    try:
        with torch.no_grad():
            torch_out = network(batch.to(device)).cpu().numpy()
    finally:
        network.train(was_training)
    return float(np.abs(torch_out - onnx_out).max())
