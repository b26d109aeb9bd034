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
import struct
import warnings
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

__all__ = ["RenameRules", "from_torch_module", "load_state", "pickle_globals", "read_state", "save_state",
           "spec_from_safetensors"]

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
        with warnings.catch_warnings():  # torch's note on the pickle protocol says nothing to our user
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ImportFormatError(_refusal(path, err)) from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError,
            MemoryError, OverflowError, UnicodeDecodeError, zipfile.BadZipFile, NotImplementedError,
            AssertionError, struct.error) as err:  # torch's legacy reader asserts on damaged storage keys
        raise ImportFormatError(f"{path} cannot be read as a PyTorch file ({_without_advice(err)}); it is "
                                f"truncated, corrupt or not a torch.save file") from None


# torch.load(weights_only=True) accepts these globals (state dicts, tensors, storages); the set
# torch itself keeps is used where this torch exposes it.
_TENSOR_GLOBALS = frozenset({
    "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state", "torch.Size", "torch.Tensor", "torch.device",
    "torch.nn.parameter.Parameter", "torch.serialization._get_layout", "builtins.set", "builtins.bytearray",
    "_codecs.encode", "torch.FloatStorage", "torch.DoubleStorage", "torch.HalfStorage", "torch.LongStorage",
    "torch.IntStorage", "torch.ShortStorage", "torch.CharStorage", "torch.ByteStorage", "torch.BoolStorage",
    "torch.BFloat16Storage", "torch.storage.UntypedStorage", "torch.float32", "torch.float64", "torch.float16",
    "torch.bfloat16", "torch.int64", "torch.int32", "torch.int16", "torch.int8", "torch.uint8", "torch.bool"})


def _allowed_globals() -> frozenset[str]:
    try:
        from torch import _weights_only_unpickler as unpickler

        return _TENSOR_GLOBALS | frozenset(unpickler._get_allowed_globals())
    except (ImportError, AttributeError, TypeError):  # another torch: the built-in list alone
        return _TENSOR_GLOBALS


def _pickles_in(path: Path) -> list[bytes]:
    """The pickle streams of a torch file: ``*/data.pkl`` in a zip, else the file's bytes."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
    return [path.read_bytes()]


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"})


def pickle_globals(data: bytes) -> tuple[list[str], bool]:
    """The globals (``module.name``) a pickle refers to, read from its opcodes without running it,
    and whether at least one whole pickle stream parsed (a legacy torch file holds several in a
    row, then raw storage bytes: those end the scan; a truncated file parses none).

        >>> pickle_globals(pickle.dumps(collections.OrderedDict()))
        (['collections.OrderedDict'], True)
    """
    import pickletools

    found: list[str] = []
    pos, streams = 0, 0
    while pos < len(data):
        strings: list[str] = []
        memo: dict[int, str] = {}
        end = None
        try:
            for op, arg, at in pickletools.genops(data[pos:]):
                if op.name in _STRING_OPS:
                    strings.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                    memo[int(arg)] = strings[-1]
                elif op.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                    strings.append(memo[int(arg)])
                elif op.name in ("GLOBAL", "INST"):
                    found.append(_py3_name(str(arg).replace(" ", ".")))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(_py3_name(f"{strings[-2]}.{strings[-1]}"))
                if op.name == "STOP":
                    end = at + 1
        except Exception:  # noqa: BLE001 - bytes that are not pickle end the scan (raw storages, damage)
            break
        if end is None:
            break
        streams += 1
        pos += end
    return list(dict.fromkeys(found)), streams > 0


def _py3_name(name: str) -> str:
    """Protocol-2 pickles say ``__builtin__.set``; Python 3 (and torch's list) ``builtins.set``."""
    return "builtins." + name[len("__builtin__."):] if name.startswith("__builtin__.") else name


def _refusal(path: Path, err: BaseException) -> str:
    """Why torch's weights-only loader refused ``path``, in graftnet's words: the global the
    file refers to when it holds objects, never torch's advice to load with weights_only=False."""
    try:
        streams = _pickles_in(path)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        streams = []
    allowed = _allowed_globals()
    refused: list[str] = []
    parsed = bool(streams)
    for data in streams:
        names, complete = pickle_globals(data)
        refused += [n for n in names if n not in allowed]
        parsed = parsed and complete
    if refused:
        return (f"{path} contains pickled objects other than tensors, which graftnet will not unpickle "
                f"(loading them could run code): the file refers to {format_names(refused)}. Re-save only "
                f"the weights, e.g. torch.save(model.state_dict(), path), or use safetensors")
    detail = _without_advice(err)
    if parsed:
        return (f"{path} is a pickle that torch's weights-only loader cannot read ({detail}); graftnet reads "
                f"only torch.save files of tensors: re-save it with torch.save(model.state_dict(), path), "
                f"or use safetensors")
    return (f"{path} is not a valid PyTorch file ({detail}); it is truncated, corrupt or not a "
            f"torch.save file")


def _without_advice(err: BaseException) -> str:
    """torch's message, first line, without its advice on bypassing the weights-only loader."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if found:
        return found.group(1).strip()[:200]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    keep = [line for line in lines if "weights_only" not in line and "Weights only load failed" not in line
            and "torch.serialization" not in line and "trust" not in line.lower()]
    text = (keep[0] if keep else (brief_error(err, with_type=False) if "weights_only" not in text
                                  else type(err).__name__))
    return text[:200]


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
