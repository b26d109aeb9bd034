"""PyTorch weights in and out: state dicts (``.safetensors``, ``.pt``/``.pth``/``.bin``) and modules.

Loading never unpickles anything but tensors: ``.pt`` files go through
``torch.load(..., weights_only=True)``, and a file holding any other pickled object is
refused. Keys are mapped through optional regex rename rules, every key and shape is
checked before anything is copied, and the result is a ``MappingReport``::

    >>> net = Network.mlp(784, [300, 100], 10)
    >>> report = load_state(net, "mlp.pt", rename=[(r"fc1\\.(.*)", r"hidden1.\\1")])
    >>> print(report)          # matched / missing / unexpected / mismatched keys
    >>> save_state(net, "mlp.safetensors")

``from_torch_module`` turns a plain ``nn.Sequential`` (Linear, Conv2d, BatchNorm,
activations, pooling, Flatten, Dropout) into a graftnet ``Network`` with the same weights.
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

from graftnet.errors import GraftnetError, ImportFormatError, brief_error, format_names
from graftnet.io.checkpoint import atomic_output
from graftnet.io.mapping import MappingReport, apply_rename, load_tensors
from graftnet.layers import (
    Activation,
    AlphaDropout,
    AvgPool,
    BatchNorm,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    LayerSpec,
    MaxPool,
)
from graftnet.network import Network

__all__ = ["RenameRules", "SUPPORTED_MODULES", "from_torch_module", "load_state", "read_state",
           "save_state", "spec_from_safetensors"]

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
SUPPORTED_MODULES = ("Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "ReLU", "LeakyReLU", "ELU", "SELU",
                     "GELU", "Sigmoid", "Tanh", "Softmax", "Identity", "MaxPool2d", "AvgPool2d",
                     "AdaptiveAvgPool2d (output size 1, before Flatten)", "Flatten", "Dropout", "AlphaDropout")


class _NotConvertible(Exception):
    pass


def _layer_name(name: str, module: nn.Module) -> str:
    """Torch child names ('0', 'features.3') -> valid, unique-looking graftnet names."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
        return name
    return f"{type(module).__name__.lower()}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"


def _spec_for(module: nn.Module, name: str, following: nn.Module | None) -> LayerSpec:
    """The graftnet spec reproducing ``module``."""
    if isinstance(module, nn.Linear):
        return Dense(module.out_features, bias=module.bias is not None, name=name)
    if isinstance(module, nn.Conv2d):
        return _conv_spec(module, name)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not module.track_running_stats:
            raise _NotConvertible("track_running_stats=False is not supported")
        return BatchNorm(momentum=module.momentum, eps=module.eps, affine=module.affine, name=name)
    activation = _activation_for(module)
    if activation is not None:
        return Activation(activation, name=name)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool_spec(module, name)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        if size not in (1, (1, 1)) or not isinstance(following, nn.Flatten):
            raise _NotConvertible("only AdaptiveAvgPool2d(1) followed by Flatten is supported")
        return GlobalAvgPool(name=name)
    if isinstance(module, nn.Flatten):
        if (module.start_dim, module.end_dim) != (1, -1):
            raise _NotConvertible(f"Flatten(start_dim={module.start_dim}, end_dim={module.end_dim}) is not supported")
        return Flatten(name=name)
    if isinstance(module, nn.AlphaDropout):
        return AlphaDropout(module.p, name=name)
    if isinstance(module, nn.Dropout):
        return Dropout(module.p, name=name)
    raise _NotConvertible(f"{type(module).__name__} is not supported; "
                          f"supported modules: {', '.join(SUPPORTED_MODULES)}")


def _activation_for(module: nn.Module) -> str | None:
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.LeakyReLU):
        return f"leaky_relu({module.negative_slope!r})"
    if isinstance(module, nn.ELU):
        return f"elu({module.alpha!r})"
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            raise _NotConvertible("GELU(approximate='tanh') is not supported (only the exact GELU)")
        return "gelu"
    if isinstance(module, nn.Softmax):
        if module.dim not in (1, -1):
            raise _NotConvertible(f"Softmax(dim={module.dim}) is not supported (dim=1 only)")
        return "softmax"
    simple = {nn.SELU: "selu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Identity: "linear"}
    return next((v for k, v in simple.items() if isinstance(module, k)), None)


def _conv_spec(module: nn.Conv2d, name: str) -> Conv2d:
    if module.dilation != (1, 1) or module.groups != 1 or module.padding_mode != "zeros":
        raise _NotConvertible(f"dilation={module.dilation}, groups={module.groups}, padding_mode="
                              f"{module.padding_mode!r} are not supported (1, 1, 'zeros' only)")
    padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    return Conv2d(module.out_channels, tuple(module.kernel_size), tuple(module.stride), padding,  # type: ignore[arg-type]
                  bias=module.bias is not None, name=name)


def _pool_spec(module: nn.MaxPool2d | nn.AvgPool2d, name: str) -> LayerSpec:
    padding = module.padding if isinstance(module.padding, int) else max(module.padding)
    dilation = getattr(module, "dilation", 1)
    if padding != 0 or module.ceil_mode or dilation not in (1, (1, 1)) or getattr(module, "divisor_override", None):
        raise _NotConvertible("padding, ceil_mode, dilation and divisor_override are not supported")
    cls = MaxPool if isinstance(module, nn.MaxPool2d) else AvgPool
    return cls(module.kernel_size, module.stride or module.kernel_size, name=name)  # type: ignore[arg-type]


def _children(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf modules of (nested) Sequentials in order, with their state-dict prefixes."""
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            out += _children(child, f"{full}.")
        else:
            out.append((full, child))
    return out


def from_torch_module(module: nn.Module, input_shape: tuple[int, ...] | list[int], *,
                      name: str = "torch_model") -> Network:
    """Convert a plain ``nn.Sequential`` into a graftnet ``Network`` with the same weights.

    Layer names are the Sequential's child names when they are valid graftnet names
    (``nn.Sequential(OrderedDict(hidden1=...))``), else ``<type>_<index>`` (``linear_0``).
    The result is checked: both are run on a random batch and must agree.

        >>> seq = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))
        >>> net = from_torch_module(seq, (1, 28, 28))
        >>> net.layer_names
        ['flatten_0', 'linear_1', 'relu_2', 'linear_3']
    """
    if not isinstance(module, nn.Sequential):
        raise ImportFormatError(f"from_torch_module converts nn.Sequential models, got {type(module).__name__}; "
                                f"for other modules load their state dict into a graftnet Network with load_state")
    children = _children(module)
    specs, rename = [], {}
    for i, (child_name, child) in enumerate(children):
        following = children[i + 1][1] if i + 1 < len(children) else None
        layer = _layer_name(child_name, child)
        try:
            spec = _spec_for(child, layer, following)
        except (_NotConvertible, GraftnetError) as err:
            raise ImportFormatError(f"cannot convert module {child_name!r} ({type(child).__name__}): {err}") from None
        specs.append(spec)
        for key in child.state_dict():
            rename[f"{child_name}.{key}"] = f"{layer}.{key}"
    try:
        net = Network(specs, tuple(input_shape), name=name)
    except GraftnetError as err:
        raise ImportFormatError(f"cannot convert the module: {err}") from None
    report = load_tensors(net, module.state_dict(), strict=True, source=type(module).__name__, rename=rename)
    net.info.update(source=f"torch {type(module).__name__}", import_report=report.to_dict())
    _check_same_outputs(module, net, tuple(input_shape))
    return net


@torch.no_grad()
def _check_same_outputs(module: nn.Module, net: Network, input_shape: tuple[int, ...]) -> None:
    was_training = module.training
    module.eval()
    net.eval()
    try:
        x = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0))
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        expected = module(x.to(device)).cpu()
        got = net.to(device)(x.to(device)).cpu()
    finally:
        module.train(was_training)
    diff = (expected - got).abs().max().item() if expected.shape == got.shape else float("inf")
    if not diff <= 1e-4 * max(1.0, expected.abs().max().item()):
        raise ImportFormatError(f"the converted network does not reproduce the module (max abs difference "
                                f"{diff:.3g}; output shapes {tuple(expected.shape)} and {tuple(got.shape)})")
