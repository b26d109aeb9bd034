"""Weights as a NumPy ``.npz`` archive, keyed ``<layer>/<param>``, both ways; never pickled.

Two layouts:

- ``layout="torch"`` (the default): PyTorch's names and shapes, ``hidden1/weight`` (out, in),
  ``conv1/weight`` (out, in, kh, kw), ``bn1/running_var``, ``bn1/num_batches_tracked``.
  Works for any ``nn.Module`` (a key ``a.b.weight`` is stored as ``a.b/weight``).
- ``layout="keras"``: Keras' names and shapes for a graftnet ``Network``,
  ``hidden1/kernel`` (in, out), ``conv1/kernel`` (kh, kw, in, out), ``bn1/gamma``,
  ``bn1/moving_variance``, as ``keras_layer.set_weights`` expects them.

Files are read with ``allow_pickle=False`` always::

    >>> save_npz(net, "weights.npz")
    >>> report = load_npz(net, "weights.npz")
    >>> save_npz(net, "weights_keras.npz", layout="keras")
"""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch.nn as nn

from graftnet.errors import ConfigError, ImportFormatError, brief_error
from graftnet.io.checkpoint import atomic_output
from graftnet.io.mapping import MappingReport, apply_rename, load_tensors
from graftnet.network import Network

__all__ = ["Layout", "load_npz", "read_npz", "save_npz"]

Layout = Literal["torch", "keras"]
_LAYOUTS = ("torch", "keras")


def _check_layout(layout: str, module: nn.Module) -> None:
    if layout not in _LAYOUTS:
        raise ConfigError(f"layout={layout!r}: expected one of {', '.join(_LAYOUTS)}")
    if layout == "keras" and not isinstance(module, Network):
        raise ConfigError(f"layout='keras' needs a graftnet Network, got {type(module).__name__}")


def _npz_key(state_key: str) -> str:
    """'hidden1.weight' -> 'hidden1/weight' (the last dot separates layer and parameter)."""
    layer, _, param = state_key.rpartition(".")
    return f"{layer}/{param}" if layer else param


def save_npz(module: nn.Module, path: str | Path, *, layout: Layout = "torch") -> Path:
    """Write every weight of ``module`` to ``path`` (uncompressed ``.npz``), atomically.

        >>> save_npz(Network.mlp(4, [3], 2), "w.npz")
        >>> sorted(np.load("w.npz"))
        ['hidden1/bias', 'hidden1/weight', 'outputs/bias', 'outputs/weight']
    """
    _check_layout(layout, module)
    if layout == "keras":
        from graftnet.io.keras import keras_layout_arrays

        arrays = keras_layout_arrays(module)  # type: ignore[arg-type]
    else:
        arrays = {_npz_key(k): v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickled objects); errors are ``ImportFormatError``."""
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"no .npz file at {path}: it {'is a directory' if path.is_dir() else 'does not exist'}")
    with open(path, "rb") as f:
        head = f.read(6)
    if head == b"\x93NUMPY":
        raise ImportFormatError(f"{path} is a single .npy array, not an .npz archive of named arrays")
    if not head.startswith(b"PK"):
        raise ImportFormatError(f"{path} is not an .npz archive (it starts with {head!r}); it is "
                                f"truncated, corrupt or another kind of file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ImportFormatError(f"{path} is a single .npy array, not an .npz archive of named arrays")
        with data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except ImportFormatError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise ImportFormatError(f"{path} holds pickled Python objects, which graftnet will not "
                                    f"load; save plain numeric arrays") from None
        raise ImportFormatError(f"{path} cannot be read as .npz ({brief_error(err)}); "
                                f"it is truncated or corrupt") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, TypeError, MemoryError,
            NotImplementedError, UnicodeDecodeError, OverflowError, SyntaxError, tokenize.TokenError) as err:
        # SyntaxError / TokenError: numpy parses each member's header as a Python literal
        raise ImportFormatError(f"{path} cannot be read as .npz ({brief_error(err)}); it is "
                                f"truncated, corrupt or not an .npz file") from None
    odd = [f"{key} ({array.dtype})" for key, array in arrays.items() if array.dtype.kind not in "biuf"]
    if odd:
        raise ImportFormatError(f"{path} holds arrays that are not numbers: {', '.join(odd[:5])}; weights are "
                                f"bool, integer or float arrays")
    return arrays


def load_npz(module: nn.Module, path: str | Path, strict: bool = True, *, layout: Layout = "torch",
             rename: list[tuple[str, str]] | Mapping[str, str] | None = None) -> MappingReport:
    """Load ``<layer>/<param>`` arrays from ``path`` into ``module``, checking every key and shape.

    Args:
        module: the network to load into.
        path: an ``.npz`` written by ``save_npz`` or by hand (``np.savez(f, **{"hidden1/weight": w})``).
        strict: raise ``CheckpointError`` (loading nothing) on any missing, unexpected or
            mismatched key.
        layout: ``"torch"`` or ``"keras"``: the names and shapes the file uses.
        rename: regex rules applied to the file's keys first (``[(r"dense_(\\d)/(.*)", r"hidden\\1/\\2")]``).

        >>> load_npz(net, "weights_keras.npz", layout="keras").transposed
        ['hidden1.weight', 'outputs.weight']
    """
    _check_layout(layout, module)
    arrays = read_npz(path)
    if rename:
        mapped = apply_rename(arrays, rename)
        arrays = {mapped[k]: v for k, v in arrays.items()}
    if layout == "keras":
        from graftnet.io.keras import keras_layout_mapping

        targets, transforms = keras_layout_mapping(module)  # type: ignore[arg-type]
    else:
        targets = {k: ".".join(k.rsplit("/", 1)) for k in arrays}  # 'a.b/weight' -> 'a.b.weight'
        transforms = {}
    return load_tensors(module, arrays, strict=strict, transforms=transforms, source=str(path), rename=targets)
