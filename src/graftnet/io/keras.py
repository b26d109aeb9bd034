"""Keras models in and out: legacy HDF5 (``.h5``), Keras 3 archives (``.keras``), weights files.

Files are read with ``h5py`` and ``zipfile`` only; Keras itself is never imported. A
``.keras`` archive is read member by member in memory and never extracted, so a member
path such as ``../evil`` cannot write anywhere. HDF5 is parsed in a forked child process
with a time limit (``READ_TIMEOUT_S``): libhdf5 can loop forever or crash on a corrupt file,
and that must end in an ``ImportFormatError``, not a hung or crashed program.

Conversion is explicit, layer by layer, and keeps Keras' layer names:

- a Dense kernel is stored (in, out) by Keras and becomes ``weight`` (out, in);
- a Conv2D kernel is stored (kh, kw, in, out) (HWIO) and becomes OIHW;
- Keras images are channels-last (N, H, W, C); graftnet's are (N, C, H, W), so a Keras
  input shape (28, 28, 1) becomes ``input_shape=(1, 28, 28)``: feed the imported network
  ``x.permute(0, 3, 1, 2)`` of what Keras was fed. (Models built with
  ``data_format="channels_first"`` keep their input as it is.)
- the Flatten after a conv stack becomes ``Flatten(channels_last=True)``, which flattens in
  Keras' (H, W, C) order, so the next Dense kernel lines up without a permutation;
- BatchNormalization keeps gamma/beta/moving statistics and epsilon; PyTorch's momentum is
  ``1 - keras_momentum``.

    >>> net, report = load_keras("mnist_cnn.keras")      # or "mnist_cnn.h5"
    >>> print(report)                                      # every key that was loaded
    >>> save_keras(net, "back.keras")                      # keras.models.load_model reads it

Supported Keras layers: see ``SUPPORTED_LAYERS``. Anything else (or an option graftnet
cannot reproduce exactly, such as dilation or ``padding="same"`` with strides) is an
``ImportFormatError`` that names the layer and lists what is supported.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import multiprocessing
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from graftnet.errors import CheckpointError, GraftnetError, ImportFormatError, brief_error, format_names
from graftnet.io.checkpoint import atomic_output
from graftnet.io.mapping import MappingReport, Transform, kernel_from_torch, kernel_to_torch, load_tensors
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
    Rescaling,
    parse_activation,
)
from graftnet.network import Network

__all__ = [
    "SUPPORTED_LAYERS",
    "SUPPORTED_ACTIVATIONS",
    "keras_layout_arrays",
    "keras_layout_mapping",
    "load_keras",
    "load_keras_weights",
    "save_keras",
]

SUPPORTED_LAYERS = (
    "InputLayer", "Dense", "Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
    "Flatten", "Dropout", "AlphaDropout", "BatchNormalization", "Activation", "ReLU", "LeakyReLU",
    "ELU", "Softmax", "Rescaling", "Normalization",
)
_ALIASES = {"MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D",
            "GlobalAvgPool2D": "GlobalAveragePooling2D", "Convolution2D": "Conv2D"}
# Keras activation name -> graftnet activation string (Keras' leaky_relu *function* uses 0.2).
_ACTIVATIONS_IN = {"linear": None, "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
                   "softmax": "softmax", "elu": "elu", "selu": "selu", "gelu": "gelu",
                   "leaky_relu": "leaky_relu(0.2)"}
SUPPORTED_ACTIVATIONS = tuple(_ACTIVATIONS_IN)
_INITIALIZERS = {"GlorotUniform": "glorot_uniform", "GlorotNormal": "glorot_normal",
                 "HeNormal": "he_normal", "HeUniform": "he_uniform", "LecunNormal": "lecun_normal",
                 "LecunUniform": "lecun_uniform", "TruncatedNormal": "truncated_normal", "Zeros": "zeros"}
_ARCHIVE_MEMBERS = ("metadata.json", "config.json", "model.weights.h5")
_MAX_JSON_BYTES = 64 * 2**20
_MAX_WEIGHTS_BYTES = 8 * 2**30
_KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), used by Normalization
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
READ_TIMEOUT_S = 60.0  # for reading an HDF5 file, plus 1 s per 20 MB (see _read_h5_isolated)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


# =========================================================================== reading files
@dataclass
class _V3Group:
    """One ``layers/<path>/vars`` group of a Keras 3 weights file."""

    path: str
    name: str | None  # the layer name Keras >= 3.1x records as an attribute, if any
    arrays: list[np.ndarray]


@dataclass
class _KerasFile:
    """What a Keras file holds, read into memory."""

    source: str
    kind: str
    config: dict[str, Any] | None = None  # {"class_name": "Sequential", "config": {...}}
    legacy: dict[str, list[tuple[str, np.ndarray]]] | None = None  # layer -> [(weight, array)]
    v3: list[_V3Group] | None = None
    ignored: list[str] = field(default_factory=list)  # optimizer state and the like
    keras_version: str | None = None

    def has_weights(self) -> bool:
        return self.legacy is not None or self.v3 is not None


def _fail(source: str, message: str) -> ImportFormatError:
    if len(message) > 2000:  # a hostile config can hold very long names
        message = message[:2000] + " [...]"
    return ImportFormatError(f"{source}: {message}")


def _read_keras_file(path: str | Path) -> _KerasFile:
    """Open a .h5/.keras/.weights.h5 file; every failure is an ``ImportFormatError``."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        raise _fail(source, "is a directory; graftnet reads Keras files saved with "
                    "model.save('x.keras') or model.save('x.h5') (a TensorFlow SavedModel is not supported)")
    if not path.is_file():
        raise ImportFormatError(f"no Keras file at {source}: it does not exist")
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as err:
        raise _fail(source, f"cannot be read ({err.strerror or err})") from None
    try:
        if magic.startswith(_ZIP_MAGICS):
            return _read_archive(path.read_bytes(), source)
        if magic == _HDF5_MAGIC:
            return _read_h5_isolated(source, path=path)
    except GraftnetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError,
            MemoryError, RecursionError, EOFError, NotImplementedError, zlib.error, zipfile.BadZipFile) as err:
        raise _fail(source, f"is truncated or corrupt ({brief_error(err)})") from None
    raise _fail(source, f"is not a Keras file: it starts with {magic[:8]!r}, expected an HDF5 file "
                "(model.save('x.h5'), *.weights.h5) or a .keras zip archive")


def _parse_h5(source: str, path: Path | None, data: bytes | None) -> _KerasFile:
    """Read an HDF5 file (or its bytes) in this process."""
    size = len(data) if data is not None else os.path.getsize(path)  # type: ignore[arg-type]
    try:
        with h5py.File(io.BytesIO(data) if data is not None else path, "r") as h5:
            return _read_h5(h5, source, size)
    except GraftnetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError,
            MemoryError, RecursionError, EOFError, NotImplementedError, UnicodeDecodeError) as err:
        raise _fail(source, f"is truncated or corrupt ({brief_error(err)})") from None


def _read_h5_isolated(source: str, *, path: Path | None = None, data: bytes | None = None) -> _KerasFile:
    """``_parse_h5`` in a forked child process, so a corrupt file cannot hang or crash us.

    libhdf5 loops forever on some corrupt files (e.g. a damaged global heap behind a string
    attribute) and can crash on others; neither can be interrupted from Python. The child
    sends back plain arrays and JSON (an ``.npz`` file, read without pickle). Where ``fork``
    is not available (Windows, macOS' default) the file is read in this process.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        return _parse_h5(source, path, data)
    size = len(data) if data is not None else os.path.getsize(path)  # type: ignore[arg-type]
    timeout = READ_TIMEOUT_S + size / 20e6
    with tempfile.TemporaryDirectory(prefix="graftnet-h5-") as tmp:
        out = Path(tmp) / "result.npz"
        with warnings.catch_warnings():  # Python >= 3.12 warns about fork() in threaded programs
            warnings.simplefilter("ignore", DeprecationWarning)
            child = multiprocessing.get_context("fork").Process(
                target=_h5_child, args=(source, path, data, out), daemon=True)
            child.start()
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join()
            raise _fail(source, f"reading it took more than {timeout:.0f} s, so it was stopped: the HDF5 "
                        f"library loops on some corrupt files; the file is corrupt or truncated")
        if child.exitcode != 0 or not out.exists():
            raise _fail(source, f"the HDF5 library crashed reading it (exit code {child.exitcode}); "
                        f"the file is corrupt or truncated")
        return _unpack(out)


def _h5_child(source: str, path: Path | None, data: bytes | None, out: Path) -> None:
    """Runs in the forked child: read, then write the result (or the error) to ``out``."""
    try:
        _pack(_parse_h5(source, path, data), out)
    except GraftnetError as err:
        _pack_json({"error": str(err)}, {}, out)
    except Exception as err:  # noqa: BLE001 - a bug, reported to the parent, which raises it
        _pack_json({"bug": brief_error(err)}, {}, out)


def _pack_json(meta: dict[str, Any], arrays: dict[str, np.ndarray], out: Path) -> None:
    encoded = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with open(out, "wb") as f:
        np.savez(f, __meta__=encoded, **arrays)


def _pack(kfile: _KerasFile, out: Path) -> None:
    arrays: dict[str, np.ndarray] = {}

    def ref(array: np.ndarray) -> str:
        key = f"a{len(arrays)}"
        arrays[key] = array
        return key

    legacy = None if kfile.legacy is None else {
        layer: [[name, ref(a)] for name, a in weights] for layer, weights in kfile.legacy.items()}
    v3 = None if kfile.v3 is None else [[g.path, g.name, [ref(a) for a in g.arrays]] for g in kfile.v3]
    meta = {"source": kfile.source, "kind": kfile.kind, "config": kfile.config, "legacy": legacy, "v3": v3,
            "ignored": kfile.ignored, "keras_version": kfile.keras_version}
    _pack_json(meta, arrays, out)


def _unpack(out: Path) -> _KerasFile:
    with np.load(out, allow_pickle=False) as npz:
        meta = json.loads(npz["__meta__"].tobytes().decode("utf-8"))
        if "error" in meta:
            raise ImportFormatError(meta["error"])
        if "bug" in meta:
            raise RuntimeError(f"graftnet failed reading an HDF5 file: {meta['bug']}")
        legacy = None if meta["legacy"] is None else {
            layer: [(name, npz[key]) for name, key in weights] for layer, weights in meta["legacy"].items()}
        v3 = None if meta["v3"] is None else [
            _V3Group(path, name, [npz[key] for key in keys]) for path, name, keys in meta["v3"]]
    return _KerasFile(meta["source"], meta["kind"], config=meta["config"], legacy=legacy, v3=v3,
                      ignored=meta["ignored"], keras_version=meta["keras_version"])


def _read_archive(data: bytes, source: str) -> _KerasFile:
    """A Keras 3 ``.keras`` zip: config.json + model.weights.h5 (+ metadata.json), read in memory."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        _check_members(names, source)
        sizes = {info.filename: info.file_size for info in infos}
        config = _read_json_member(archive, "config.json", sizes, source)
        metadata = _read_json_member(archive, "metadata.json", sizes, source) if "metadata.json" in sizes else {}
        kfile = _KerasFile(source=source, kind=".keras archive", config=_model_config(config, source),
                           keras_version=str(metadata.get("keras_version")) if isinstance(metadata, dict)
                           and metadata.get("keras_version") else None)
        if "model.weights.h5" not in sizes:
            return kfile
        if sizes["model.weights.h5"] > _MAX_WEIGHTS_BYTES:
            raise _fail(source, f"model.weights.h5 claims {sizes['model.weights.h5']:,} bytes; "
                        f"graftnet reads at most {_MAX_WEIGHTS_BYTES:,}")
        weights = archive.read("model.weights.h5")
    if not weights.startswith(_HDF5_MAGIC):
        raise _fail(source, "model.weights.h5 inside the archive is not an HDF5 file")
    inner = _read_h5_isolated(f"{source}:model.weights.h5", data=weights)
    kfile.v3, kfile.ignored = inner.v3, inner.ignored
    if inner.legacy is not None:
        raise _fail(source, "model.weights.h5 holds legacy (Keras 2 save_weights) weights, "
                    "not the Keras 3 layout a .keras archive must have")
    return kfile


def _check_members(names: list[str], source: str) -> None:
    """Refuse archives with members that climb out, repeat, or are not part of a .keras file."""
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
            raise _fail(source, f"refusing a .keras archive with member path {name!r}, which "
                        f"climbs out of the archive; nothing was extracted or written")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise _fail(source, f"refusing a .keras archive with repeated members: {', '.join(repeated)}")
    if "config.json" not in names:
        raise _fail(source, f"is a zip archive without config.json, so not a .keras model "
                    f"(members: {format_names(names, limit=8)})")
    unexpected = [n for n in names if n not in _ARCHIVE_MEMBERS and not n.startswith("assets/")]
    if "model.weights.npz" in names or "model.weights.json" in names:
        raise _fail(source, "weights stored as model.weights.npz or sharded model.weights.json are "
                    "not supported; save the model with the default HDF5 weights")
    if unexpected:
        raise _fail(source, f"refusing a .keras archive with unexpected member(s) "
                    f"{', '.join(map(repr, unexpected[:10]))}; a .keras file holds "
                    f"{', '.join(_ARCHIVE_MEMBERS)} (and assets/)")
    assets = [n for n in names if n.startswith("assets/") and not n.endswith("/")]
    if assets:
        raise _fail(source, f"the model has assets ({', '.join(assets[:5])}), which only layers "
                    f"graftnet does not support use (e.g. text lookups)")


def _read_json_member(archive: zipfile.ZipFile, name: str, sizes: dict[str, int], source: str) -> Any:
    if sizes[name] > _MAX_JSON_BYTES:
        raise _fail(source, f"{name} claims {sizes[name]:,} bytes; graftnet reads at most {_MAX_JSON_BYTES:,}")
    return _parse_json(archive.read(name), f"{source}:{name}")


def _parse_json(raw: bytes | str, where: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ImportFormatError(f"{where} is not valid JSON ({brief_error(err)}); the file is truncated "
                                f"or corrupt") from None


def _model_config(config: Any, where: str) -> dict[str, Any]:
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ImportFormatError(f"{where}: the model config is not a Keras model description "
                                f"(expected an object with 'class_name' and 'config')")
    return config


def _read_h5(h5: h5py.File, source: str, file_size: int) -> _KerasFile:
    """Legacy full models, legacy weights-only files and Keras 3 weights files."""
    attrs = h5.attrs
    version = _attr_str(attrs.get("keras_version"))
    if "model_config" in attrs:
        config = _model_config(_parse_json(_attr_str(attrs["model_config"]) or "", f"{source} (model_config)"),
                               f"{source} (model_config)")
        if "model_weights" not in h5:
            raise _fail(source, "has a model_config but no model_weights group; the file is incomplete")
        group = h5["model_weights"]
        version = version or _attr_str(group.attrs.get("keras_version"))
        return _KerasFile(source, "legacy HDF5 model", config=config,
                          legacy=_read_legacy_weights(group, source, file_size), keras_version=version)
    if "layer_names" in attrs:
        return _KerasFile(source, "legacy HDF5 weights", legacy=_read_legacy_weights(h5, source, file_size),
                          keras_version=version)
    if "layers" in h5 or "_layer_checkpoint_dependencies" in h5 or "vars" in h5:
        groups, ignored = _read_v3_weights(h5, source, file_size)
        return _KerasFile(source, "Keras 3 weights", v3=groups, ignored=ignored, keras_version=version)
    top = list(h5.keys())[:10]
    raise _fail(source, f"is an HDF5 file but not a Keras model or weights file: no model_config "
                f"or layer_names attribute and no layers group (top-level entries: {format_names(top)})")


def _attr_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string attribute, got {type(value).__name__}")


def _attr_str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [_attr_str(value) or ""]
    return [_attr_str(v) or "" for v in np.asarray(value).reshape(-1)]


def _read_array(dataset: Any, where: str, file_size: int) -> np.ndarray:
    if not isinstance(dataset, h5py.Dataset):
        raise ImportFormatError(f"{where} is not an array (found an HDF5 {type(dataset).__name__})")
    if dataset.dtype.kind not in "fiub":
        raise ImportFormatError(f"{where} has dtype {dataset.dtype}; expected numbers")
    nbytes = int(dataset.size or 0) * dataset.dtype.itemsize
    limit = file_size if dataset.compression is None else _MAX_WEIGHTS_BYTES
    if nbytes > limit:
        raise ImportFormatError(f"{where} claims {nbytes:,} bytes, more than the file holds; the file is corrupt")
    return np.asarray(dataset[()])


def _read_legacy_weights(group: h5py.Group, source: str, file_size: int) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``layer_names`` -> each layer's ``weight_names`` -> arrays (Keras 2 and Keras 3 ``.h5``)."""
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for layer in _attr_str_list(group.attrs.get("layer_names")):
        if layer not in group:
            raise _fail(source, f"lists layer {layer!r} in layer_names but has no group for it")
        layer_group = group[layer]
        arrays = []
        for weight in _attr_str_list(layer_group.attrs.get("weight_names")):
            if weight not in layer_group:
                raise _fail(source, f"layer {layer!r} lists weight {weight!r} but does not hold it")
            array = _read_array(layer_group[weight], f"{source}: {layer}/{weight}", file_size)
            arrays.append((_short_weight_name(weight), array))
        out[layer] = arrays
    return out


def _short_weight_name(name: str) -> str:
    """'seq/bn1/moving_mean' or 'bn1/moving_mean:0' -> 'moving_mean'."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


def _read_v3_weights(h5: h5py.File, source: str, file_size: int) -> tuple[list[_V3Group], list[str]]:
    """Keras 3 layout: ``layers/<snake_class>[_k]/vars/<i>``; the rest (optimizer) is ignored."""
    root = "layers" if "layers" in h5 else "_layer_checkpoint_dependencies"
    groups: list[_V3Group] = []
    if root in h5:
        for key in h5[root]:
            layer = h5[root][key]
            if not isinstance(layer, h5py.Group):
                raise _fail(source, f"{root}/{key} is not a group")
            if "vars" in layer:
                groups.append(_read_vars(layer["vars"], f"layers/{key}", source, file_size))
    ignored: list[str] = []
    for key in h5:
        item = h5[key]
        if key in (root, "vars"):
            continue
        if isinstance(item, h5py.Dataset):
            ignored.append(key)
        else:
            item.visit(lambda name, key=key, item=item: ignored.append(f"{key}/{name}")
                       if isinstance(item[name], h5py.Dataset) else None)
    natural = [[int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)] for name in ignored]
    return groups, [name for _, name in sorted(zip(natural, ignored))]


def _read_vars(group: Any, path: str, source: str, file_size: int) -> _V3Group:
    if not isinstance(group, h5py.Group):
        raise _fail(source, f"{path}/vars is not a group")
    keys = list(group.keys())
    if sorted(keys, key=lambda k: int(k) if k.isdigit() else -1) != [str(i) for i in range(len(keys))]:
        raise _fail(source, f"{path}/vars holds {format_names(keys)}; expected arrays named 0..{len(keys) - 1}")
    arrays = [_read_array(group[str(i)], f"{source}: {path}/vars/{i}", file_size) for i in range(len(keys))]
    return _V3Group(path, _attr_str(group.attrs.get("name")), arrays)


# ====================================================================== model structure
def _layer_list(model: dict[str, Any], source: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The model's layer entries in the order data flows, and the model's own config."""
    kind = model["class_name"]
    config = model.get("config")
    if kind == "Sequential":
        layers = config if isinstance(config, list) else (config or {}).get("layers")  # Keras 2.0-2.2: a list
        if not isinstance(layers, list):
            raise _fail(source, "the Sequential config has no list of layers")
        return [_entry(e, source) for e in layers], config if isinstance(config, dict) else {}
    if kind in ("Functional", "Model"):
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise _fail(source, f"the {kind} config has no list of layers")
        return _chain(config, source), config
    raise _fail(source, f"the model is a {kind!r}; graftnet imports Sequential models and "
                f"functional models that are a single chain of layers (subclassed models have no config to read)")


def _entry(entry: Any, source: str) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) \
            or not isinstance(entry.get("config"), dict):
        raise _fail(source, f"a layer entry is not a Keras layer description: {str(entry)[:200]}")
    return entry


def _entry_name(entry: dict[str, Any]) -> str:
    name = entry.get("name", entry["config"].get("name"))
    return name if isinstance(name, str) else str(name)


def _inbound(entry: dict[str, Any], source: str) -> list[list[str]]:
    """Names of the layers feeding each call ("node") of a functional layer (Keras 2 and 3)."""
    nodes = entry.get("inbound_nodes") or []
    if not isinstance(nodes, list):
        raise _fail(source, f"layer {_entry_name(entry)!r}: inbound_nodes is not a list")
    out = []
    for node in nodes:
        if isinstance(node, dict):  # Keras 3: {"args": [...keras tensors...], "kwargs": {...}}
            out.append(list(_keras_tensor_sources(node)))
        elif isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
            out.append([str(t[0]) for t in node if isinstance(t, list) and t])
        else:
            raise _fail(source, f"layer {_entry_name(entry)!r}: cannot read inbound node {str(node)[:100]}")
    return out


def _keras_tensor_sources(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            history = (obj.get("config") or {}).get("keras_history")
            if isinstance(history, list) and history:
                yield str(history[0])
            return
        for value in obj.values():
            yield from _keras_tensor_sources(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _keras_tensor_sources(value)


def _endpoints(value: Any, what: str, source: str) -> list[str]:
    """input_layers / output_layers: [[name, 0, 0], ...] (Keras 2) or [name, 0, 0] (Keras 3, single)."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value[0]]
    if isinstance(value, list) and all(isinstance(v, list) and v and isinstance(v[0], str) for v in value):
        return [v[0] for v in value]
    raise _fail(source, f"cannot read the functional model's {what}: {str(value)[:100]}")


def _chain(config: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """A functional model's layers from input to output, if they form one chain."""
    entries = [_entry(e, source) for e in config["layers"]]
    by_name = {_entry_name(e): e for e in entries}
    inputs = _endpoints(config.get("input_layers"), "input_layers", source)
    outputs = _endpoints(config.get("output_layers"), "output_layers", source)
    if len(inputs) != 1 or len(outputs) != 1:
        raise _fail(source, f"the model has {len(inputs)} input(s) ({', '.join(inputs)}) and "
                    f"{len(outputs)} output(s) ({', '.join(outputs)}); graftnet imports one-input, "
                    f"one-output chains")
    consumers: dict[str, list[str]] = {}
    feeds: dict[str, str] = {}
    for name, entry in by_name.items():
        nodes = _inbound(entry, source)
        if len(nodes) > 1:
            raise _fail(source, f"layer {name!r} ({entry['class_name']}) is called {len(nodes)} times "
                        f"(a shared layer); graftnet imports chains where each layer is used once")
        if nodes:
            if len(nodes[0]) != 1:
                raise _fail(source, f"the model is not a chain: layer {name!r} ({entry['class_name']}) "
                            f"takes {len(nodes[0])} inputs ({', '.join(nodes[0]) or 'none'}); graftnet "
                            f"imports Sequential models and single-chain functional models")
            feeds[name] = nodes[0][0]
            consumers.setdefault(nodes[0][0], []).append(name)
    for name, users in consumers.items():
        if len(users) > 1:
            raise _fail(source, f"the model is not a chain: the output of layer {name!r} feeds "
                        f"{len(users)} layers ({', '.join(users)}); graftnet imports single chains")
    order = [outputs[0]]
    while order[-1] in feeds:
        order.append(feeds[order[-1]])
        if len(order) > len(by_name):
            raise _fail(source, "the model's layers form a cycle")
    order.reverse()
    if order[0] != inputs[0]:
        raise _fail(source, f"the chain from the output {outputs[0]!r} starts at {order[0]!r}, "
                    f"not at the model input {inputs[0]!r}")
    unknown = [n for n in order if n not in by_name]
    if unknown:
        raise _fail(source, f"the model refers to layer(s) {', '.join(unknown)} it does not define")
    unused = [n for n in by_name if n not in order]
    if unused:
        raise _fail(source, f"layer(s) {', '.join(unused)} are not on the path from input to output; "
                    f"graftnet imports single chains")
    return [by_name[n] for n in order]


# =========================================================================== conversion
@dataclass
class _Plan:
    """One Keras layer turned into a graftnet layer, and where its Keras weights go."""

    keras_name: str
    keras_class: str
    spec: LayerSpec | None  # None for InputLayer
    weights: list[str] = field(default_factory=list)  # Keras weight names, in Keras' order
    targets: dict[str, str] = field(default_factory=dict)  # Keras weight name -> torch param name
    transforms: dict[str, Transform] = field(default_factory=dict)
    fills: dict[str, float] = field(default_factory=dict)  # torch params Keras lacks -> constant
    optional: dict[str, float] = field(default_factory=dict)  # Keras weights a file may lack -> value
    consumes: bool = False  # weights are folded into the spec (Normalization), not loaded
    frozen: bool = False


@dataclass
class _Context:
    """What a converter needs: the incoming shape (graftnet's) and the image layout."""

    shape: tuple[int, ...]
    layout: str  # "channels_last" | "channels_first": how Keras held the (C, H, W) tensor
    weights: Callable[[str], list[tuple[str, np.ndarray]]]
    notes: list[str]


class _Unsupported(Exception):
    """Raised by a converter; turned into an ImportFormatError naming the layer."""


def _num(cfg: dict[str, Any], key: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Unsupported(f"{key}={value!r} is not a number")
    return value


def _pair_of(cfg: dict[str, Any], key: str, default: Any = None) -> tuple[int, int]:
    value = cfg.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (value[0], value[1])
    raise _Unsupported(f"{key}={value!r} is not one or two positive integers")


def _activation(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in _ACTIVATIONS_IN:
        shown = value.get("class_name", value) if isinstance(value, dict) else value
        raise _Unsupported(f"activation {shown!r} is not supported; supported activations: "
                           f"{', '.join(SUPPORTED_ACTIVATIONS)}")
    return _ACTIVATIONS_IN[value]


def _initializer(value: Any) -> str:
    name = value.get("class_name") if isinstance(value, dict) else value
    if isinstance(name, str):
        snake = _snake(name)
        return _INITIALIZERS.get(name) or (snake if snake in _INITIALIZERS.values() else "glorot_uniform")
    return "glorot_uniform"


def _regularization(cfg: dict[str, Any], ctx: _Context, name: str, kernel_axes: list[int]) -> dict[str, Any]:
    """Keras kernel L1/L2 regularizers and MaxNorm constraints, as graftnet l1/l2/max_norm."""
    out: dict[str, Any] = {}
    reg = cfg.get("kernel_regularizer")
    if isinstance(reg, dict):
        kind, args = reg.get("class_name"), reg.get("config") or {}
        if kind in ("L1", "L2", "L1L2", "l1", "l2", "l1_l2"):
            out["l1"] = float(args.get("l1", 0.0) or 0.0)
            out["l2"] = float(args.get("l2", 0.0) or 0.0)
        else:
            ctx.notes.append(f"{name}: kernel regularizer {kind} dropped (graftnet has l1/l2)")
    constraint = cfg.get("kernel_constraint")
    if isinstance(constraint, dict):
        args = constraint.get("config") or {}
        axis = args.get("axis", 0)
        axes = [axis] if isinstance(axis, int) else axis
        if constraint.get("class_name") == "MaxNorm" and list(axes or []) == kernel_axes:
            out["max_norm"] = float(args.get("max_value", 2.0))
        else:
            ctx.notes.append(f"{name}: kernel constraint {constraint.get('class_name')} dropped")
    for key in ("bias_regularizer", "activity_regularizer", "bias_constraint"):
        if cfg.get(key):
            ctx.notes.append(f"{name}: {key} dropped (graftnet has none)")
    return out


def _need_rank(ctx: _Context, rank: int, what: str) -> None:
    if len(ctx.shape) != rank:
        raise _Unsupported(f"it receives a tensor of shape {ctx.shape} (graftnet order); {what}")


def _need_layout(cfg: dict[str, Any], ctx: _Context) -> None:
    data_format = cfg.get("data_format") or "channels_last"
    if data_format != ctx.layout:
        raise _Unsupported(f"data_format={data_format!r} differs from the rest of the model ({ctx.layout!r})")


def _convert_dense(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    _need_rank(ctx, 1, "Keras applies Dense to the last axis of such tensors; graftnet needs a Flatten before it")
    _plain_kernel(cfg)
    bias = bool(cfg.get("use_bias", True))
    units = cfg.get("units")
    if not isinstance(units, int) or isinstance(units, bool):
        raise _Unsupported(f"units={units!r} is not an integer")
    spec = Dense(units, _activation(cfg.get("activation")), init=_initializer(cfg.get("kernel_initializer")),
                 bias=bias, name=name, **_regularization(cfg, ctx, name, [0]))
    return _weighted(name, "Dense", spec, bias, kernel_to_torch)


def _plain_kernel(cfg: dict[str, Any]) -> None:
    """Refuse LoRA and quantized kernels: their weights are not a plain kernel."""
    for option in ("lora_rank", "quantization_config"):
        if cfg.get(option):
            raise _Unsupported(f"{option}={cfg.get(option)!r} is not supported (plain float kernels only)")


def _weighted(name: str, cls: str, spec: LayerSpec, bias: bool, transform: Transform) -> _Plan:
    weights = ["kernel", "bias"] if bias else ["kernel"]
    targets = {"kernel": "weight", "bias": "bias"} if bias else {"kernel": "weight"}
    return _Plan(name, cls, spec, weights, targets, {"kernel": transform})


def _convert_conv(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    _need_rank(ctx, 3, "Conv2D needs an image input")
    _need_layout(cfg, ctx)
    _plain_kernel(cfg)
    if _pair_of(cfg, "dilation_rate", 1) != (1, 1):
        raise _Unsupported(f"dilation_rate={cfg.get('dilation_rate')} is not supported (only 1)")
    if cfg.get("groups", 1) != 1:
        raise _Unsupported(f"groups={cfg.get('groups')} is not supported (only 1)")
    strides, padding = _pair_of(cfg, "strides", 1), cfg.get("padding", "valid")
    if padding not in ("valid", "same") or (padding == "same" and strides != (1, 1)):
        raise _Unsupported(f"padding={padding!r} with strides={list(strides)} is not supported: "
                           f"graftnet imports padding 'valid', and 'same' with stride 1 (TensorFlow pads "
                           f"'same' asymmetrically when striding)")
    bias = bool(cfg.get("use_bias", True))
    filters = cfg.get("filters")
    if not isinstance(filters, int) or isinstance(filters, bool):
        raise _Unsupported(f"filters={filters!r} is not an integer")
    spec = Conv2d(filters, _pair_of(cfg, "kernel_size"), strides, padding, _activation(cfg.get("activation")),
                  init=_initializer(cfg.get("kernel_initializer")), bias=bias, name=name,
                  **_regularization(cfg, ctx, name, [0, 1, 2]))
    return _weighted(name, "Conv2D", spec, bias, kernel_to_torch)


def _convert_pool(name: str, cfg: dict[str, Any], ctx: _Context, cls: str) -> _Plan:
    _need_rank(ctx, 3, f"{cls} needs an image input")
    _need_layout(cfg, ctx)
    if cfg.get("padding", "valid") != "valid":
        raise _Unsupported(f"padding={cfg.get('padding')!r} is not supported (only 'valid')")
    pool = _pair_of(cfg, "pool_size", 2)
    strides = _pair_of(cfg, "strides") if cfg.get("strides") is not None else pool
    spec_cls = MaxPool if cls == "MaxPooling2D" else AvgPool
    return _Plan(name, cls, spec_cls(pool, strides, name=name))


def _convert_gap(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    _need_rank(ctx, 3, "GlobalAveragePooling2D needs an image input")
    _need_layout(cfg, ctx)
    if cfg.get("keepdims"):
        raise _Unsupported("keepdims=True is not supported")
    return _Plan(name, "GlobalAveragePooling2D", GlobalAvgPool(name=name))


def _convert_flatten(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    data_format = cfg.get("data_format") or "channels_last"
    if len(ctx.shape) == 3:
        # Keras flattens (H, W, C); with data_format="channels_first" it transposes (C, H, W) to
        # (H, W, C) first. A channels_first model with a channels_last Flatten flattens (C, H, W).
        if ctx.layout == "channels_last" and data_format == "channels_first":
            raise _Unsupported("data_format='channels_first' on a channels-last tensor flattens in "
                               "(W, C, H) order, which graftnet does not reproduce")
        channels_last = not (ctx.layout == "channels_first" and data_format == "channels_last")
        return _Plan(name, "Flatten", Flatten(channels_last=channels_last, name=name))
    if data_format == "channels_first" and len(ctx.shape) == 2:
        raise _Unsupported("data_format='channels_first' on a 2-D tensor transposes it, which "
                           "graftnet does not reproduce")
    return _Plan(name, "Flatten", Flatten(name=name))


def _channel_axis_ok(axis: Any, ctx: _Context) -> bool:
    axes = axis if isinstance(axis, list) else [axis]
    if len(axes) != 1 or not isinstance(axes[0], int):
        return False
    rank = len(ctx.shape) + 1  # with the batch axis
    keras_axis = axes[0] % rank
    if len(ctx.shape) == 1:
        return keras_axis == 1
    return keras_axis == (rank - 1 if ctx.layout == "channels_last" else 1)


def _convert_batchnorm(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    if len(ctx.shape) not in (1, 3) or not _channel_axis_ok(cfg.get("axis", -1), ctx):
        raise _Unsupported(f"axis={cfg.get('axis')} on a tensor of shape {ctx.shape} (graftnet order) "
                           f"is not supported: graftnet normalises features or image channels")
    for option in ("renorm", "virtual_batch_size", "adjustment"):
        if cfg.get(option):
            raise _Unsupported(f"{option}={cfg.get(option)!r} is not supported")
    center, scale = bool(cfg.get("center", True)), bool(cfg.get("scale", True))
    momentum = round(1.0 - float(_num(cfg, "momentum", 0.99)), 12)  # torch momentum = 1 - keras momentum
    spec = BatchNorm(momentum=momentum, eps=float(_num(cfg, "epsilon", 1e-3)), affine=center or scale, name=name)
    weights = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean", "moving_variance"]
    targets = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
    fills = {}
    if center != scale:
        fills = {"weight": 1.0} if not scale else {"bias": 0.0}
        ctx.notes.append(f"{name}: Keras {'scale' if not scale else 'center'}=False; graftnet's "
                         f"BatchNorm has both, so {next(iter(fills))} is set to {next(iter(fills.values()))}")
    return _Plan(name, "BatchNormalization", spec, weights, {w: targets[w] for w in weights}, fills=fills)


def _convert_activation(name: str, cfg: dict[str, Any], ctx: _Context, cls: str) -> _Plan:
    if cls == "Activation":
        act = _activation(cfg.get("activation"))
    elif cls == "ReLU":
        if cfg.get("max_value") is not None or _num(cfg, "threshold", 0.0) != 0.0:
            raise _Unsupported("max_value/threshold are not supported (plain or leaky ReLU only)")
        slope = float(_num(cfg, "negative_slope", 0.0))
        act = "relu" if slope == 0.0 else f"leaky_relu({slope!r})"
    elif cls == "LeakyReLU":
        act = f"leaky_relu({float(_num(cfg, 'negative_slope', _num(cfg, 'alpha', 0.3)))!r})"
    elif cls == "ELU":
        act = f"elu({float(_num(cfg, 'alpha', 1.0))!r})"
    else:  # Softmax
        if len(ctx.shape) != 1 and not _channel_axis_ok(cfg.get("axis", -1), ctx):
            raise _Unsupported(f"softmax over axis {cfg.get('axis')} is not supported (only the feature axis)")
        act = "softmax"
    return _Plan(name, cls, Activation(act or "linear", name=name))


def _scalar(value: Any, what: str) -> float:
    """A number, or a Keras-serialised array whose entries are all equal."""
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        value = (value.get("config") or {}).get("value")
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size == 0 or not np.all(array == array[0]):
        raise _Unsupported(f"{what} varies per feature ({array.size} values); graftnet's Rescaling "
                           f"takes one scale and one offset")
    return float(array[0])


def _convert_rescaling(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    return _Plan(name, "Rescaling", Rescaling(_scalar(cfg.get("scale", 1.0), "scale"),
                                              _scalar(cfg.get("offset", 0.0), "offset"), name=name))


def _convert_normalization(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    if cfg.get("invert"):
        raise _Unsupported("invert=True is not supported")
    mean, variance, consumes = cfg.get("mean"), cfg.get("variance"), False
    if mean is None or variance is None:
        weights = dict(ctx.weights(name))
        if "mean" not in weights or "variance" not in weights:
            raise _Unsupported("the file holds no mean and variance for it (was it adapted?)")
        mean, variance, consumes = weights["mean"], weights["variance"], True
    mean_value, var_value = _scalar(mean, "mean"), _scalar(variance, "variance")
    scale = 1.0 / max(math.sqrt(var_value), _KERAS_EPSILON)
    ctx.notes.append(f"{name}: Normalization(mean={mean_value:.6g}, variance={var_value:.6g}) "
                     f"imported as Rescaling(scale={scale:.6g}, offset={-mean_value * scale:.6g})")
    return _Plan(name, "Normalization", Rescaling(scale, -mean_value * scale, name=name), consumes=consumes)


def _convert_dropout(name: str, cfg: dict[str, Any], ctx: _Context, cls: str) -> _Plan:
    if cfg.get("noise_shape"):
        ctx.notes.append(f"{name}: noise_shape={cfg.get('noise_shape')} dropped (graftnet drops units independently)")
    rate = float(_num(cfg, "rate", 0.5))
    return _Plan(name, cls, (AlphaDropout if cls == "AlphaDropout" else Dropout)(rate, name=name))


def _convert(entry: dict[str, Any], ctx: _Context) -> _Plan:
    cls = _ALIASES.get(entry["class_name"], entry["class_name"])
    cfg, name = entry["config"], _entry_name(entry)
    if cls == "InputLayer":
        return _Plan(name, cls, None)
    converters: dict[str, Callable[[], _Plan]] = {
        "Dense": lambda: _convert_dense(name, cfg, ctx),
        "Conv2D": lambda: _convert_conv(name, cfg, ctx),
        "MaxPooling2D": lambda: _convert_pool(name, cfg, ctx, cls),
        "AveragePooling2D": lambda: _convert_pool(name, cfg, ctx, cls),
        "GlobalAveragePooling2D": lambda: _convert_gap(name, cfg, ctx),
        "Flatten": lambda: _convert_flatten(name, cfg, ctx),
        "Dropout": lambda: _convert_dropout(name, cfg, ctx, cls),
        "AlphaDropout": lambda: _convert_dropout(name, cfg, ctx, cls),
        "BatchNormalization": lambda: _convert_batchnorm(name, cfg, ctx),
        "Rescaling": lambda: _convert_rescaling(name, cfg, ctx),
        "Normalization": lambda: _convert_normalization(name, cfg, ctx),
    }
    for act_cls in ("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax"):
        converters[act_cls] = lambda act_cls=act_cls: _convert_activation(name, cfg, ctx, act_cls)
    if cls not in converters:
        nested = " (a nested model: import it on its own)" if cls in ("Sequential", "Functional", "Model") else ""
        raise _Unsupported(f"layer type {cls!r} is not supported{nested}; supported layers: "
                           f"{', '.join(SUPPORTED_LAYERS)}")
    plan = converters[cls]()
    plan.frozen = cfg.get("trainable", True) is False
    return plan


# ===================================================================== input shape, layout
def _keras_input_shape(layers: list[dict[str, Any]], model_cfg: dict[str, Any]) -> list[Any] | None:
    """The Keras input shape (no batch axis) recorded anywhere in the config, or None."""
    first = layers[0]["config"] if layers else {}
    candidates = [first.get("batch_shape"), first.get("batch_input_shape"), model_cfg.get("build_input_shape"),
                  (layers[0].get("build_config") or {}).get("input_shape") if layers else None]
    for shape in candidates:
        if isinstance(shape, list) and len(shape) >= 2:
            return shape[1:]
    if layers and isinstance(first.get("input_shape"), list):  # very old Keras 2
        return first["input_shape"]
    return None


def _layout(layers: list[dict[str, Any]]) -> str:
    """channels_first if the first layer that says so says so; Keras' default otherwise."""
    for entry in layers:
        if _ALIASES.get(entry["class_name"], entry["class_name"]) in (
                "Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D"):
            return entry["config"].get("data_format") or "channels_last"
    return "channels_last"


def _graftnet_input_shape(keras_shape: list[Any], layout: str, source: str) -> tuple[int, ...]:
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in keras_shape):
        raise _fail(source, f"the model's input shape {keras_shape} has unknown sizes; pass input_shape= "
                    f"(Keras order, e.g. (28, 28, 1))")
    if len(keras_shape) == 3 and layout == "channels_last":
        h, w, c = keras_shape
        return (c, h, w)
    if len(keras_shape) > 3:
        raise _fail(source, f"input shape {keras_shape} has {len(keras_shape)} axes; graftnet imports "
                    f"feature vectors and 2-D images")
    return tuple(keras_shape)


# ======================================================================= loading models
def load_keras(path: str | Path, *, input_shape: tuple[int, ...] | None = None) -> tuple[Network, MappingReport]:
    """Import a Keras model saved as ``.h5`` (tf.keras, Keras 2 or 3) or ``.keras`` (Keras 3).

    Args:
        path: the file; its kind is read from its bytes, not from its suffix.
        input_shape: the Keras input shape without the batch axis, e.g. ``(28, 28, 1)``; it
            replaces the recorded one, and is needed when the file records none or one with
            unknown sizes such as ``(None, None, 3)``.

    Returns:
        ``(network, report)``: the network with Keras' layer names and weights, and what
        was loaded. Keras layers marked ``trainable=False`` are frozen.

    Raises:
        ImportFormatError: the file is not a Keras model, is corrupt, or uses a layer or
            option graftnet cannot reproduce (the message names it).

        >>> net, report = load_keras("cnn.keras")
        >>> net(torch.from_numpy(x_keras).permute(0, 3, 1, 2))   # Keras (N, H, W, C) input
    """
    kfile = _read_keras_file(path)
    if kfile.config is None:
        raise _fail(kfile.source, f"is a weights-only file ({kfile.kind}) with no model config; load it "
                    f"into a network of the same layers with load_keras_weights(network, path)")
    if not kfile.has_weights():
        raise _fail(kfile.source, "holds a model config but no weights (model.weights.h5 is missing)")
    try:
        return _import(kfile, input_shape)
    except _Unsupported as err:  # raised outside a layer: should not happen, but say what
        raise _fail(kfile.source, str(err)) from None
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as err:
        if isinstance(err, GraftnetError):
            raise
        raise _fail(kfile.source, f"has a malformed model config ({brief_error(err)})") from None


def _import(kfile: _KerasFile, input_shape: tuple[int, ...] | None) -> tuple[Network, MappingReport]:
    layers, model_cfg = _layer_list(kfile.config, kfile.source)  # type: ignore[arg-type]
    keras_shape = list(input_shape) if input_shape is not None else _keras_input_shape(layers, model_cfg)
    if keras_shape is None:
        raise _fail(kfile.source, "records no input shape; pass input_shape= (Keras order, e.g. (28, 28, 1))")
    layout = _layout(layers)
    shape = _graftnet_input_shape(keras_shape, layout, kfile.source)
    by_layer = _weights_by_layer(kfile)
    notes: list[str] = []
    plans = _plans(layers, shape, layout, by_layer, notes, kfile.source)
    specs = [p.spec for p in plans if p.spec is not None]
    if not specs:
        raise _fail(kfile.source, "has no layers graftnet could import (only an input layer)")
    _check_size(plans, shape, by_layer, kfile.source)
    name = model_cfg.get("name") if isinstance(model_cfg.get("name"), str) else "keras_model"
    try:
        net = Network(specs, shape, name=name)
    except GraftnetError as err:
        raise _fail(kfile.source, f"cannot be rebuilt in graftnet: {err}") from None
    report = _load_plans(net, plans, by_layer, kfile, strict=True)
    report.notes += notes
    frozen = [p.keras_name for p in plans if p.frozen and p.spec is not None]
    if model_cfg.get("trainable") is False:
        frozen = net.layer_names
    if frozen:
        net.freeze(frozen)
    net.info.update(source=kfile.source, format=kfile.kind, keras_version=kfile.keras_version,
                    keras_input_shape=list(keras_shape), input_layout=layout if len(shape) == 3 else None)
    return net, report


def _n_params(spec: LayerSpec, in_shape: tuple[int, ...]) -> int:
    """Parameters and statistics a layer will allocate (from shapes only, nothing is built)."""
    if isinstance(spec, Dense):
        return in_shape[0] * spec.units + spec.units
    if isinstance(spec, Conv2d):
        kh, kw = _pair2(spec.kernel_size)
        return spec.filters * in_shape[0] * kh * kw + spec.filters
    if isinstance(spec, BatchNorm):
        return 4 * in_shape[0]
    return 0


def _check_size(plans: list[_Plan], shape: tuple[int, ...],
                by_layer: dict[str, list[tuple[str, np.ndarray]]], source: str) -> None:
    """Refuse a config that would allocate far more than the file's weights (a corrupt or hostile
    config could otherwise ask for terabytes before any shape is checked)."""
    wanted = 0
    for plan in plans:
        if plan.spec is not None:
            wanted += _n_params(plan.spec, shape)
            shape = plan.spec.output_shape(shape)
    stored = sum(int(a.size) for arrays in by_layer.values() for _, a in arrays)
    if wanted > 2 * stored + 100_000:
        raise _fail(source, f"its config describes {wanted:,} parameters but the file holds only {stored:,} "
                    f"weights; the config or the weights are corrupt")


def _plans(layers: list[dict[str, Any]], shape: tuple[int, ...], layout: str,
           by_layer: dict[str, list[tuple[str, np.ndarray]]], notes: list[str], source: str) -> list[_Plan]:
    plans = []
    seen: set[str] = set()
    for i, entry in enumerate(layers):
        name = _entry_name(entry)
        if name in seen:
            raise _fail(source, f"two layers are named {name!r}")
        seen.add(name)
        ctx = _Context(shape, layout, lambda n: by_layer.get(n, []), notes)
        if entry["class_name"] == "InputLayer" and i > 0:
            raise _fail(source, f"layer {name!r} (InputLayer) is not the first layer")
        try:
            plan = _convert(entry, ctx)
        except _Unsupported as err:
            raise _fail(source, f"cannot import layer {name!r} ({entry['class_name']}): {err}") from None
        except GraftnetError as err:  # a spec graftnet refuses (e.g. a bad rate)
            raise _fail(source, f"cannot import layer {name!r} ({entry['class_name']}): {err}") from None
        if plan.spec is not None:
            try:
                shape = plan.spec.output_shape(shape)
            except GraftnetError as err:
                raise _fail(source, f"layer {name!r} ({entry['class_name']}): {err}") from None
        plans.append(plan)
    return plans


def _snake(class_name: str) -> str:
    """Keras' file path for a layer class: 'BatchNormalization' -> 'batch_normalization'."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _v3_paths(class_names: list[str]) -> list[str]:
    """The ``layers/<snake>[_k]`` path Keras 3 gives each layer, in model.layers order."""
    used: dict[str, int] = {}
    paths = []
    for cls in class_names:
        snake = _snake(cls)
        used[snake] = used[snake] + 1 if snake in used else 0
        paths.append(f"layers/{snake}" + (f"_{used[snake]}" if used[snake] else ""))
    return paths


def _weights_by_layer(kfile: _KerasFile) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Keras layer name -> [(weight name or index, array)] for a full model file.

    Keras 3 files name weights by position and layer path; the model config (any graph, not
    only chains) gives each layer's name and weight names.
    """
    if kfile.legacy is not None:
        return kfile.legacy
    groups = kfile.v3 or []
    model = kfile.config or {}
    config = model.get("config")
    config_layers = config if isinstance(config, list) else (config or {}).get("layers")
    if not isinstance(config_layers, list):
        raise _fail(kfile.source, "the model config has no list of layers")
    entries = [_entry(e, kfile.source) for e in config_layers]
    named = {g.name: g for g in groups if g.name}
    if groups and len(named) == len(groups):
        return _name_positional({name: [(str(i), a) for i, a in enumerate(g.arrays)]
                                 for name, g in named.items()}, entries)
    if model["class_name"] == "Sequential":  # Sequential.layers leaves out its InputLayer
        entries = [e for e in entries if e["class_name"] != "InputLayer"]
    by_path = {g.path: g for g in groups}
    paths = _v3_paths([e["class_name"] for e in entries])
    found = {_entry_name(e): [(str(i), a) for i, a in enumerate(by_path[p].arrays)]
             for e, p in zip(entries, paths) if p in by_path}
    return _name_positional(found, entries)


def _config_weight_names(entry: dict[str, Any]) -> list[str] | None:
    """The names of a layer's variables in Keras' order, from its config (None if unknown)."""
    cls, cfg = _ALIASES.get(entry["class_name"], entry["class_name"]), entry["config"]
    if cls in ("Dense", "Conv2D"):
        return ["kernel", "bias"] if cfg.get("use_bias", True) else ["kernel"]
    if cls == "BatchNormalization":
        return ((["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else [])
                + ["moving_mean", "moving_variance"])
    if cls == "Normalization":
        return ["mean", "variance", "count"]
    return None


def _name_positional(found: dict[str, list[tuple[str, np.ndarray]]],
                     entries: list[dict[str, Any]]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Give Keras 3's positional variables (0, 1, ...) the names their layer's config implies."""
    names = {_entry_name(e): _config_weight_names(e) for e in entries}
    out = {}
    for layer, arrays in found.items():
        expected = names.get(layer)
        positional = all(n.isdigit() for n, _ in arrays)
        if positional and expected is not None and len(expected) == len(arrays):
            arrays = [(w, a) for w, (_, a) in zip(expected, arrays)]
        out[layer] = arrays
    return out


def _load_plans(net: Network, plans: list[_Plan], by_layer: dict[str, list[tuple[str, np.ndarray]]],
                kfile: _KerasFile, *, strict: bool) -> MappingReport:
    tensors: dict[str, Any] = {}
    rename: dict[str, str] = {}
    transforms: dict[str, Transform] = {}
    planned = {p.keras_name for p in plans}
    for plan in plans:
        if plan.consumes:
            continue
        arrays = _named_arrays(plan, by_layer.get(plan.keras_name, []), kfile.source)
        for weight, array in arrays.items():
            key = f"{plan.keras_name}/{weight}"
            tensors[key] = array
            rename[key] = f"{plan.keras_name}.{plan.targets[weight]}"
            if weight in plan.transforms:
                transforms[key] = plan.transforms[weight]
        for param, value in plan.fills.items():
            key = f"{plan.keras_name}/({param}={value:g})"
            target = dict(net.named_parameters())[f"{plan.keras_name}.{param}"]
            tensors[key], rename[key] = torch.full_like(target, value), f"{plan.keras_name}.{param}"
    for layer, arrays in by_layer.items():  # weights of layers that are not in the model at all
        if layer not in planned:
            tensors.update({f"{layer}/{w}": a for w, a in arrays})
    try:
        report = load_tensors(net, tensors, strict=strict, transforms=transforms, source=kfile.source, rename=rename)
    except CheckpointError as err:
        raise ImportFormatError(str(err)) from None
    report.ignored += kfile.ignored
    return report


def _named_arrays(plan: _Plan, arrays: list[tuple[str, np.ndarray]], source: str) -> dict[str, np.ndarray]:
    """Match a layer's stored arrays to the weight names its config implies."""
    if not arrays:
        return {}
    names = [n for n, _ in arrays]
    absent = set(plan.weights) - set(names)
    if len(set(names)) == len(names) and set(names) <= set(plan.weights) and absent <= set(plan.optional):
        return dict(arrays)
    if len(arrays) == len(plan.weights) and all(n.isdigit() or n not in plan.weights for n in names):
        return {w: a for w, (_, a) in zip(plan.weights, arrays)}  # Keras 3 stores them by position
    raise _fail(source, f"layer {plan.keras_name!r} ({plan.keras_class}) holds weights "
                f"{', '.join(names)}; its config implies {', '.join(plan.weights) or 'none'}")


# ======================================================================= weights only
def _flatten_orders(net: Network) -> dict[str, tuple[int, int, int]]:
    """Dense layers fed by a channels-first Flatten of a (C, H, W) tensor with C > 1.

    Keras flattens images in (H, W, C) order; such a Dense's Keras kernel rows must be
    permuted to graftnet's (C, H, W) order. Returns ``{dense name: (C, H, W)}``.
    """
    out: dict[str, tuple[int, int, int]] = {}
    pending: tuple[int, int, int] | None = None
    shapes = [net.input_shape, *net.shapes]
    for i, spec in enumerate(net.specs):
        if isinstance(spec, Flatten):
            in_shape = shapes[i]
            channels_first = len(in_shape) == 3 and in_shape[0] > 1 and not spec.channels_last
            pending = (in_shape[0], in_shape[1], in_shape[2]) if channels_first else None
        elif pending is not None and isinstance(spec, Dense):
            out[spec.name or ""] = pending
            pending = None
        elif pending is not None and not isinstance(spec, (Dropout, Activation, Rescaling)):
            raise ImportFormatError(
                f"layer {spec.name!r} ({spec.type}) sits between a channels-first Flatten of "
                f"{pending} and a Dense layer; graftnet can only reorder a Dense kernel between "
                f"Keras' (H, W, C) and its (C, H, W) order. Use Flatten(channels_last=True)")
    if pending is not None:
        raise ImportFormatError(f"network {net.name!r} ends with a channels-first Flatten of {pending}, whose "
                                f"output order Keras cannot reproduce; use Flatten(channels_last=True)")
    return out


def _hwc_index(chw: tuple[int, int, int]) -> torch.Tensor:
    """``idx[k]`` = the (C, H, W)-order position of the k-th (H, W, C)-order feature."""
    c, h, w = chw
    return torch.arange(c * h * w).reshape(c, h, w).permute(1, 2, 0).reshape(-1)


def _dense_from_keras(chw: tuple[int, int, int] | None) -> Transform:
    if chw is None:
        return kernel_to_torch
    inverse = torch.argsort(_hwc_index(chw))
    return lambda k: kernel_to_torch(k)[:, inverse]  # (HWC, out) -> (out, CHW)


def _graftnet_plans(net: Network) -> list[_Plan]:
    """What each layer with parameters expects from Keras, for loading weights by name."""
    orders = _flatten_orders(net)
    plans = []
    for spec in net.specs:
        name = spec.name or ""
        if isinstance(spec, Dense):
            plans.append(_weighted(name, "Dense", spec, spec.bias, _dense_from_keras(orders.get(name))))
        elif isinstance(spec, Conv2d):
            plans.append(_weighted(name, "Conv2D", spec, spec.bias, kernel_to_torch))
        elif isinstance(spec, BatchNorm):
            weights = (["gamma", "beta"] if spec.affine else []) + ["moving_mean", "moving_variance"]
            targets = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                       "moving_variance": "running_var"}
            optional = {"gamma": 1.0, "beta": 0.0} if spec.affine else {}  # Keras scale/center=False
            plans.append(_Plan(name, "BatchNormalization", spec, weights, {w: targets[w] for w in weights},
                               optional=optional))
    return plans


def _to_keras(weight: torch.Tensor, keras_class: str, keras_weight: str,
              chw: tuple[int, int, int] | None) -> np.ndarray:
    """A torch parameter in Keras' layout (the inverse of the import transforms)."""
    if keras_weight == "kernel":
        if keras_class == "Dense" and chw is not None:
            weight = weight[:, _hwc_index(chw)]  # (out, CHW) -> (out, HWC), Keras' Flatten order
        weight = kernel_from_torch(weight)  # (out, in) -> (in, out); OIHW -> HWIO
    return np.ascontiguousarray(weight.detach().cpu().float().numpy())


def keras_layout_arrays(network: Network) -> dict[str, np.ndarray]:
    """Every weight under Keras' name and in Keras' layout, as ``save_keras`` writes them.

    Keys are ``"<layer>/<keras weight>"``: ``hidden1/kernel`` (in, out), ``conv1/kernel``
    (kh, kw, in, out), ``bn1/gamma``, ``bn1/moving_variance``; BatchNorm's step counter is
    left out.

        >>> sorted(keras_layout_arrays(Network.mlp(4, [3], 2)))
        ['hidden1/bias', 'hidden1/kernel', 'outputs/bias', 'outputs/kernel']
    """
    orders = _flatten_orders(network)
    state = network.state_dict()
    return {f"{plan.keras_name}/{w}": _to_keras(state[f"{plan.keras_name}.{plan.targets[w]}"], plan.keras_class,
                                                 w, orders.get(plan.keras_name))
            for plan in _graftnet_plans(network) for w in plan.weights}


def keras_layout_mapping(network: Network) -> tuple[dict[str, str], dict[str, Transform]]:
    """For arrays keyed as ``keras_layout_arrays`` gives them: ``(rename, transforms)`` for
    ``mapping.load_tensors`` (source key -> state-dict key, source key -> layout conversion)."""
    rename, transforms = {}, {}
    for plan in _graftnet_plans(network):
        for weight in plan.weights:
            key = f"{plan.keras_name}/{weight}"
            rename[key] = f"{plan.keras_name}.{plan.targets[weight]}"
            if weight in plan.transforms:
                transforms[key] = plan.transforms[weight]
    return rename, transforms


def load_keras_weights(network: Network, path: str | Path, *, strict: bool = True) -> MappingReport:
    """Load Keras weights into an existing network, layer by layer name.

    Reads ``model.save_weights("x.weights.h5")`` files (Keras 3), legacy ``.h5`` weights
    and full models (Keras 2/3), and ``.keras`` archives. Layer names must match (a Keras 3
    weights file from before layer names were recorded is matched by layer type and
    position instead, and the report says so). Kernels are converted as in ``load_keras``.
    Strict by default: anything missing, unexpected or of the wrong shape raises
    ``CheckpointError`` and loads nothing.

        >>> net = Network([Dense(10, "relu", name="hidden1"), Dense(2, name="outputs")], (4,))
        >>> report = load_keras_weights(net, "weights.weights.h5")
    """
    kfile = _read_keras_file(path)
    if not kfile.has_weights():
        raise _fail(kfile.source, "holds no weights")
    plans = _graftnet_plans(network)
    notes: list[str] = []
    if kfile.config is not None:
        try:
            by_layer = _weights_by_layer(kfile)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as err:
            if isinstance(err, GraftnetError):
                raise
            raise _fail(kfile.source, f"has a malformed model config ({brief_error(err)})") from None
    elif kfile.legacy is not None:
        by_layer = kfile.legacy
    else:
        by_layer = _v3_by_name(kfile.v3 or [], plans, notes)
    tensors: dict[str, Any] = {}
    rename: dict[str, str] = {}
    transforms: dict[str, Transform] = {}
    planned = {p.keras_name: p for p in plans}
    for layer, arrays in by_layer.items():
        plan = planned.get(layer)
        if plan is None:
            tensors.update({f"{layer}/{w}": a for w, a in arrays})
            continue
        named = _named_arrays(plan, arrays, kfile.source)
        for weight, array in named.items():
            key = f"{layer}/{weight}"
            tensors[key], rename[key] = array, f"{layer}.{plan.targets[weight]}"
            if weight in plan.transforms:
                transforms[key] = plan.transforms[weight]
        for weight in [w for w in plan.weights if w not in named and named]:
            key, target = f"{layer}/({weight}={plan.optional[weight]:g})", f"{layer}.{plan.targets[weight]}"
            tensors[key] = torch.full_like(network.state_dict()[target], plan.optional[weight])
            rename[key] = target
            notes.append(f"{layer}: the file has no {weight} (Keras center/scale=False); "
                         f"set to {plan.optional[weight]:g}")
    report = load_tensors(network, tensors, strict=strict, transforms=transforms, source=kfile.source, rename=rename)
    report.ignored += kfile.ignored
    report.notes += notes
    return report


def _v3_by_name(groups: list[_V3Group], plans: list[_Plan],
                notes: list[str]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Keras 3 weights by layer name; files without names are matched by class and position."""
    named = {g.name: g for g in groups if g.name}
    if groups and len(named) == len(groups):
        return {n: [(str(i), a) for i, a in enumerate(g.arrays)] for n, g in named.items()}
    by_class: dict[str, list[_V3Group]] = {}
    for group in sorted(groups, key=lambda g: _path_order(g.path)):
        by_class.setdefault(_path_order(group.path)[0], []).append(group)
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    counters: dict[str, int] = {}
    for plan in plans:
        snake = _snake(plan.keras_class)
        k = counters.get(snake, 0)
        counters[snake] = k + 1
        if k < len(by_class.get(snake, [])):
            group = by_class[snake][k]
            out[plan.keras_name] = [(str(i), a) for i, a in enumerate(group.arrays)]
            notes.append(f"{group.path} -> {plan.keras_name} (matched by layer type and position: "
                         f"the file records no layer names)")
    for snake, class_groups in by_class.items():
        for group in class_groups[counters.get(snake, 0):]:
            out[group.path] = [(str(i), a) for i, a in enumerate(group.arrays)]
    return out


def _path_order(path: str) -> tuple[str, int]:
    """'layers/dense_2' -> ('dense', 2); 'layers/dense' -> ('dense', 0)."""
    leaf = path.rsplit("/", 1)[-1]
    match = re.fullmatch(r"(.*?)_(\d+)", leaf)
    return (match.group(1), int(match.group(2))) if match else (leaf, 0)


# ============================================================================ export
def _keras_object(module: str, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


_INITIALIZER_CLASSES = {v: k for k, v in _INITIALIZERS.items()}
_ACTIVATIONS_OUT = {"linear": "linear", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
                    "softmax": "softmax", "selu": "selu", "gelu": "gelu"}


@dataclass
class _KerasLayer:
    class_name: str
    config: dict[str, Any]
    weights: list[np.ndarray] = field(default_factory=list)
    input_shape: list[int] | None = None  # Keras order, no batch axis, for build_config


def _activation_out(text: str | None, name: str, frozen: bool) -> tuple[str, _KerasLayer | None]:
    """A Keras activation string, or 'linear' plus a separate layer for parametrised ones."""
    act, args = parse_activation(text)
    if act in _ACTIVATIONS_OUT:
        return _ACTIVATIONS_OUT[act], None
    base = {"name": name, "trainable": not frozen, "dtype": "float32"}
    if act == "elu":
        return ("elu", None) if args[0] == 1.0 else ("linear", _KerasLayer("ELU", {**base, "alpha": args[0]}))
    if act == "leaky_relu" and args[0] == 0.2:
        return "leaky_relu", None  # Keras' leaky_relu activation function uses 0.2
    if act == "leaky_relu":
        return "linear", _KerasLayer("LeakyReLU", {**base, "negative_slope": args[0]})
    raise ImportFormatError(f"layer {name!r}: activation {text!r} has no Keras equivalent; "
                            f"exportable activations: {', '.join(_ACTIVATIONS_OUT)}, elu, leaky_relu")


def _kernel_options(spec: Dense | Conv2d, axes: int | list[int]) -> dict[str, Any]:
    reg = None
    if spec.l1 or spec.l2:
        reg = _keras_object("keras.regularizers", "L1L2", {"l1": spec.l1, "l2": spec.l2})
    constraint = None
    if spec.max_norm:
        constraint = _keras_object("keras.constraints", "MaxNorm", {"max_value": spec.max_norm, "axis": axes})
    init = _keras_object("keras.initializers", _INITIALIZER_CLASSES.get(spec.init, "GlorotUniform"), {"seed": None})
    return {"kernel_initializer": init, "kernel_regularizer": reg, "kernel_constraint": constraint,
            "bias_initializer": _keras_object("keras.initializers", "Zeros", {}),
            "bias_regularizer": None, "bias_constraint": None}


def _export_layer(spec: LayerSpec, frozen: bool, weights: list[np.ndarray]) -> list[_KerasLayer]:
    """One graftnet layer as one Keras layer (two for a parametrised activation)."""
    name = spec.name or spec.type
    base = {"name": name, "trainable": not frozen, "dtype": "float32"}
    if isinstance(spec, (Dense, Conv2d)):
        act, extra = _activation_out(spec.activation, f"{name}_activation", frozen)
        if isinstance(spec, Dense):
            cfg = {**base, "units": spec.units, "activation": act, "use_bias": spec.bias, **_kernel_options(spec, 0)}
        else:
            cfg = {**base, "filters": spec.filters, "kernel_size": list(_pair2(spec.kernel_size)),
                   "strides": list(_pair2(spec.stride)), "padding": _keras_padding(spec),
                   "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1,
                   "activation": act, "use_bias": spec.bias, **_kernel_options(spec, [0, 1, 2])}
        layer = _KerasLayer("Dense" if isinstance(spec, Dense) else "Conv2D", cfg, weights)
        return [layer] + ([extra] if extra is not None else [])
    if isinstance(spec, (MaxPool, AvgPool)):
        if spec.padding not in ("valid", "same") and _pair2(spec.padding) != (0, 0):
            raise ImportFormatError(f"layer {name!r}: pooling with padding={spec.padding} pixels has no Keras "
                                    f"equivalent ('valid' or 'same' only)")
        pool = list(_pair2(spec.pool_size))
        return [_KerasLayer("MaxPooling2D" if isinstance(spec, MaxPool) else "AveragePooling2D",
                            {**base, "pool_size": pool, "strides": list(_pair2(spec.stride or spec.pool_size)),
                             "padding": "valid", "data_format": "channels_last"})]
    if isinstance(spec, GlobalAvgPool):
        return [_KerasLayer("GlobalAveragePooling2D", {**base, "data_format": "channels_last", "keepdims": False})]
    if isinstance(spec, Flatten):
        return [_KerasLayer("Flatten", {**base, "data_format": "channels_last"})]
    if isinstance(spec, BatchNorm):
        return [_export_batchnorm(spec, base, weights)]
    if isinstance(spec, Dropout):  # AlphaDropout too
        return [_KerasLayer("AlphaDropout" if isinstance(spec, AlphaDropout) else "Dropout",
                            {**base, "rate": spec.rate, "seed": None, "noise_shape": None})]
    if isinstance(spec, Activation):
        act, extra = _activation_out(spec.activation, name, frozen)
        return [extra] if extra is not None else [_KerasLayer("Activation", {**base, "activation": act})]
    if isinstance(spec, Rescaling):
        return [_KerasLayer("Rescaling", {**base, "scale": spec.scale, "offset": spec.offset})]
    raise ImportFormatError(f"layer {name!r} ({spec.type}) has no Keras export")


def _pair2(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _keras_padding(spec: Conv2d) -> str:
    if spec.padding in ("valid", "same"):
        return str(spec.padding)
    (ph, pw), (kh, kw), stride = _pair2(spec.padding), _pair2(spec.kernel_size), _pair2(spec.stride)
    if (ph, pw) == (0, 0):
        return "valid"
    if stride == (1, 1) and kh % 2 == 1 and kw % 2 == 1 and (ph, pw) == (kh // 2, kw // 2):
        return "same"
    raise ImportFormatError(f"layer {spec.name!r}: padding={spec.padding} with kernel {spec.kernel_size} and "
                            f"stride {spec.stride} has no Keras Conv2D equivalent ('valid' or 'same' only)")


def _export_batchnorm(spec: BatchNorm, base: dict[str, Any], weights: list[np.ndarray]) -> _KerasLayer:
    if spec.momentum is None:
        raise ImportFormatError(f"layer {spec.name!r}: BatchNorm with momentum=None (a cumulative "
                                f"average) has no Keras equivalent")
    cfg = {**base, "axis": -1, "momentum": round(1.0 - spec.momentum, 12), "epsilon": spec.eps,
           "center": spec.affine, "scale": spec.affine}
    return _KerasLayer("BatchNormalization", cfg, weights)


def _keras_shape(shape: tuple[int, ...]) -> list[int]:
    """graftnet (C, H, W) -> Keras (H, W, C); other shapes are the same."""
    return [shape[1], shape[2], shape[0]] if len(shape) == 3 else list(shape)


def _export_layers(network: Network) -> list[_KerasLayer]:
    arrays = keras_layout_arrays(network)
    weight_names = {plan.keras_name: plan.weights for plan in _graftnet_plans(network)}
    shapes = [network.input_shape, *network.shapes]
    frozen = set(network.frozen)
    layers = []
    for i, (name, spec) in enumerate(zip(network.layer_names, network.specs)):
        weights = [arrays[f"{name}/{w}"] for w in weight_names.get(name, [])]
        for layer in _export_layer(spec, name in frozen, weights):
            layer.input_shape = _keras_shape(shapes[i] if layer.config["name"] == name else shapes[i + 1])
            layers.append(layer)
    names = [layer.config["name"] for layer in layers]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ImportFormatError(f"cannot export to Keras: layer name(s) {', '.join(clash)} would repeat "
                                f"(an activation split into its own layer takes the name <layer>_activation)")
    return layers


def _keras_config(network: Network, layers: list[_KerasLayer]) -> dict[str, Any]:
    input_shape = _keras_shape(network.input_shape)
    entries = [_keras_object("keras.layers", "InputLayer", {
        "batch_shape": [None, *input_shape], "dtype": "float32", "sparse": False, "name": "input_layer"})]
    for layer in layers:
        entry = _keras_object("keras.layers", layer.class_name, layer.config)
        entry["build_config"] = {"input_shape": [None, *(layer.input_shape or [])]}
        entries.append(entry)
    model = _keras_object("keras", "Sequential", {
        "name": network.name, "trainable": True, "dtype": "float32", "layers": entries,
        "build_input_shape": [None, *input_shape]})
    model["build_config"] = {"input_shape": [None, *input_shape]}
    return model


def _weights_h5(network: Network, layers: list[_KerasLayer]) -> bytes:
    """model.weights.h5 in Keras 3's layout: layers/<snake class>[_k]/vars/<i>."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_group("vars").attrs["name"] = network.name
        for layer, path in zip(layers, _v3_paths([layer.class_name for layer in layers])):
            group = h5.create_group(path).create_group("vars")
            group.attrs["name"] = layer.config["name"]
            for i, array in enumerate(layer.weights):
                group.create_dataset(str(i), data=array.astype(np.float32))
    return buffer.getvalue()


def save_keras(network: Network, path: str | Path) -> Path:
    """Export ``network`` as a Keras 3 ``.keras`` archive (``keras.models.load_model`` reads it).

    The Keras model is a Sequential with channels-last images: a graftnet input (C, H, W)
    becomes a Keras input (H, W, C). Frozen layers are saved with ``trainable=False``. An
    activation with a parameter (``leaky_relu(0.1)``, ``elu(0.5)``) inside a Dense or Conv2d
    becomes a separate Keras layer named ``<layer>_activation``. The file is written to a
    temporary name and renamed, so a failed export leaves nothing behind.

        >>> save_keras(Network.mlp(784, [300, 100], 10), "mlp.keras")
    """
    if not isinstance(network, Network):
        raise TypeError(f"save_keras needs a graftnet Network, got {type(network).__name__}")
    path = Path(path)
    layers = _export_layers(network)
    config = _keras_config(network, layers)
    weights = _weights_h5(network, layers)
    metadata = {"keras_version": "3.0.0", "date_saved": _dt.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
                "exported_by": "graftnet"}
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", weights)
    return path
