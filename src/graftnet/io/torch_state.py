"""PyTorch weights in and out: state dicts (``.safetensors``, ``.pt``/``.pth``/``.bin``) and modules.

Loading never unpickles anything but tensors: ``.pt`` files go through
``torch.load(..., weights_only=True)``, and a file holding any other pickled object is
refused. Keys are mapped through optional regex rename rules, every key and shape is
checked before anything is copied, and the result is a ``MappingReport``::

    >>> net = Network.mlp(784, [300, 100], 10)
    >>> report = load_state(net, "mlp.pt", rename=[(r"fc1\\.(.*)", r"hidden1.\\1")])
    >>> print(report)          # matched / missing / unexpected / mismatched keys
    >>> save_state(net, "mlp.safetensors")

Converting a module itself (its layers, not only its weights) is ``graftnet.io.torch_fx.from_torch``;
``from_torch_module`` is its graftnet 0.1 spelling.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from graftnet.errors import ImportFormatError, brief_error, format_names
from graftnet.io.checkpoint import atomic_output
from graftnet.io.mapping import MappingReport, apply_rename, load_tensors
from graftnet.network import Network

__all__ = ["RenameRules", "from_torch_module", "load_state", "read_state", "save_state", "spec_from_safetensors"]

RenameRules = list[tuple[str, str]] | Mapping[str, str] | None
_WRAPPERS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


# ================================================================================ reading
def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a ``.safetensors`` or ``torch.save``'d state dict, and notes on the way.

    Wrappers such as ``{"state_dict": ...}`` or ``{"model": ...}`` (a training checkpoint)
    are unwrapped; other entries of such a checkpoint (epoch, optimizer state) are left out
    and named in the notes.

    Raises:
        ImportFormatError: the file is missing, corrupt, holds pickled objects other than
            tensors, or holds no dict of tensors.

        >>> tensors, notes = read_state("resnet.pth")
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ImportFormatError(f"no state dict at {path}: it {what}")
    with open(path, "rb") as f:
        head = f.read(16)
    pickled_suffix = path.suffix.lower() in _PICKLE_SUFFIXES and not _looks_safetensors(head)
    if head.startswith(b"PK") or head[:1] == b"\x80" or pickled_suffix:
        obj = _torch_load(path)
    else:
        return _safetensors_load(path), []
    notes: list[str] = []
    obj = _unwrap(obj, notes, str(path))
    return _flatten(obj, str(path), notes), notes


def _looks_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON object."""
    return len(head) > 8 and head[8:9] == b"{"


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, MemoryError, OverflowError) as err:
        raise ImportFormatError(f"{path} cannot be read as safetensors ({brief_error(err, with_type=False)}); "
                                f"it is truncated, corrupt or not a weights file") from None


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found is None:  # the unpickler stumbled on bytes that are not a pickle at all
            raise ImportFormatError(f"{path} is not a valid PyTorch file ({_unpickle_detail(err)}); it is "
                                    f"truncated, corrupt or not a torch.save file") from None
        raise ImportFormatError(
            f"{path} contains pickled objects other than tensors, which graftnet will not unpickle "
            f"(running them could execute code): the file refers to {found.group(1)}. Re-save only the "
            f"weights, e.g. torch.save(model.state_dict(), path), or use safetensors") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError,
            MemoryError, OverflowError, UnicodeDecodeError, zipfile.BadZipFile, NotImplementedError) as err:
        raise ImportFormatError(f"{path} cannot be read as a PyTorch file ({brief_error(err)}); it is "
                                f"truncated, corrupt or not a torch.save file") from None


def _unpickle_detail(err: BaseException) -> str:
    """What torch's weights-only unpickler refused, without its how-to-bypass advice."""
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
    return found.group(1).strip()[:200] if found else brief_error(err, with_type=False)


def _unwrap(obj: Any, notes: list[str], source: str) -> Any:
    """Peel ``{"state_dict": {...}, "epoch": 3, ...}`` style wrappers, noting what is left out."""
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            return obj
        others = [str(k) for k in obj if k != key]
        notes.append(f"unwrapped {key!r}" + (f"; left out {', '.join(others)}" if others else ""))
        obj = obj[key]
    return obj


def _flatten(obj: Any, source: str, notes: list[str], prefix: str = "") -> dict[str, torch.Tensor]:
    """A dict of tensors (nested dicts joined with '.'); anything else is an error."""
    if not isinstance(obj, Mapping):
        raise ImportFormatError(f"{source} holds a {type(obj).__name__}, not a dict of tensors "
                                f"(a state dict); save model.state_dict() instead of the model")
    out: dict[str, torch.Tensor] = {}
    skipped = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):
            out.update(_flatten(value, source, notes, prefix=f"{name}."))
        else:
            skipped.append(name)
    if skipped:
        notes.append(f"left out non-tensor entries: {format_names(skipped)}")
    return out


# ================================================================================ loading
def load_state(module: nn.Module, path_or_dict: str | Path | Mapping[str, Any], *,
               rename: RenameRules = None, strict: bool = True) -> MappingReport:
    """Load a PyTorch state dict into ``module`` (a graftnet ``Network`` or any module).

    Args:
        module: what to load into; its ``state_dict()`` keys are the targets.
        path_or_dict: a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` file, or a dict of tensors.
        rename: regex rules ``[(pattern, replacement), ...]`` (or a dict) applied in order to
            each source key, each matching the whole key: ``[(r"fc(\\d)\\.(.*)", r"hidden\\1.\\2")]``.
        strict: raise ``CheckpointError`` (and load nothing) if any key is missing,
            unexpected or of the wrong shape. ``strict=False`` loads what fits and reports the rest.

    Returns:
        The ``MappingReport``: matched, missing, unexpected and mismatched keys.

        >>> report = load_state(net, {"hidden1.weight": w, "hidden1.bias": b}, strict=False)
        >>> report.missing
        ['outputs.weight', 'outputs.bias']
    """
    if isinstance(path_or_dict, Mapping):
        notes: list[str] = []
        source = "<state dict>"
        tensors = _flatten(_unwrap(path_or_dict, notes, source), source, notes)
    else:
        source = str(path_or_dict)
        tensors, notes = read_state(path_or_dict)
    mapping = apply_rename(tensors, rename) if rename else None
    report = load_tensors(module, tensors, strict=strict, source=source, rename=mapping)
    report.notes += notes
    return report


# ================================================================================ saving
def save_state(network: nn.Module, path: str | Path) -> Path:
    """Write ``network``'s state dict as safetensors (keys ``hidden1.weight``, ...), atomically.

    A graftnet ``Network`` also stores its spec in the file's metadata (``graftnet_spec``),
    so ``graftnet import`` can rebuild it without a separate spec.

        >>> save_state(net, "net.safetensors")
    """
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in network.state_dict().items()}
    metadata = {"format": "pt"}
    if isinstance(network, Network):
        metadata["graftnet_spec"] = json.dumps(network.to_spec())
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def spec_from_safetensors(path: str | Path) -> dict[str, Any] | None:
    """The graftnet spec ``save_state`` stored in a safetensors file, or None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("graftnet_spec")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


# ======================================================================== modules -> Network
def from_torch_module(module: nn.Module, input_shape: tuple[int, ...] | list[int], *,
                      name: str = "torch_model") -> Network:
    """Convert a torch module into a graftnet ``Network`` with the same weights (graftnet 0.1's
    name for :func:`graftnet.io.torch_fx.from_torch`, the one converter, which it calls).

    It differs only in its names and its check: layers keep the module's names where they
    are plain names (``nn.Sequential(OrderedDict(hidden1=...))``), else ``<type>_<name>``
    (``linear_0``, ``conv2d_features_3``), as graftnet 0.1 named them; both are run on a
    random batch of four examples of ``input_shape`` and must agree within 1e-4.

        >>> seq = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))
        >>> net = from_torch_module(seq, (1, 28, 28))
        >>> net.layer_names
        ['flatten_0', 'linear_1', 'relu_2', 'linear_3']
    """
    from graftnet.io.torch_fx import from_torch

    example = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0))
    return from_torch(module, example, name=name, tolerance=1e-4, _layer_name=_layer_name)


def _layer_name(name: str, module: nn.Module | None) -> str:
    """Torch names ('0', 'features.3') -> graftnet 0.1's names ('linear_0', 'conv2d_features_3')."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
        return name
    kind = type(module).__name__.lower() if module is not None else "op"
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
