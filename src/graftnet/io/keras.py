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

Graphs and nested models:

- a functional model's layers read what their inbound nodes name (``inputs=[...]``); Add,
  Subtract, Multiply, Average, Maximum, Minimum and Concatenate become graftnet's merge
  layers (Keras' channels-last ``axis=-1`` is graftnet's channels axis 1). Keras' layer order
  and names are kept, the network's ``input_name`` is the InputLayer's name, and
  ``block_inputs`` records which models list an InputLayer first, so that
  ``net.select("vgg16.layers[15:]")`` picks what Keras' ``vgg16.layers[15:]`` holds;
- a model nested in another (``Sequential([VGG16(include_top=False), Flatten(), ...])``) is
  spelled out in place: its layers are named ``vgg16/block1_conv1``, ..., read what the
  nested model reads, and are frozen if it (or they) had ``trainable=False``. Its weights are
  found under the nested model's group in a legacy ``.h5`` (weight names such as
  ``block1_conv1/kernel``) and under ``layers/functional/layers/...`` in a ``.keras`` file;
- a layer called more than once (a shared layer) is refused, naming it: graftnet layers are
  called once. So are models with several inputs or outputs.

    >>> net, report = load_keras("mnist_cnn.keras")      # or "mnist_cnn.h5"
    >>> print(report)                                      # every key that was loaded
    >>> save_keras(net, "back.keras")                      # keras.models.load_model reads it

- a DepthwiseConv2D kernel (kh, kw, C, mult) becomes (C * mult, 1, kh, kw); a
  SeparableConv2D's depthwise and pointwise kernels go to ``depthwise.weight`` and
  ``pointwise.weight``; ``padding="same"`` is TensorFlow's at any stride;
- Reshape targets are turned into graftnet's (C, H, W) order; a reshape that mixes
  channels and pixels becomes ``Reshape(..., channels_last=True)``, which reads and fills
  in Keras' (H, W, C) order;
- axes (Normalization, LayerNormalization) are turned from Keras' channels-last count into
  graftnet's (channels are axis 1); an adapted Normalization's mean and variance load into
  its buffers (its ``count`` is left out and listed as ignored).

Supported Keras layers: see ``SUPPORTED_LAYERS``. A model with other layer types is an
``ImportFormatError`` that lists every such type and its layers at once; an option graftnet
cannot reproduce exactly (``groups``, Keras 2's hard_sigmoid, ...) names the layer and the option.
"""

from __future__ import annotations

import copy
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
    Cropping2D,
    Dense,
    DepthwiseConv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    GlobalMaxPool,
    LayerNormalization,
    LayerSpec,
    MaxPool,
    Normalization,
    ReLU,
    Rescaling,
    Reshape,
    SeparableConv2d,
    ZeroPadding2D,
    parse_activation,
    tf_same_padding,
)
from graftnet.merge import Add, Average, Concatenate, Maximum, MergeSpec, Minimum, Multiply, Subtract
from graftnet.network import INPUT, Network

__all__ = [
    "SUPPORTED_LAYERS",
    "SUPPORTED_ACTIVATIONS",
    "keras_layout_arrays",
    "import_keras_config",
    "keras_layout_mapping",
    "load_keras",
    "load_keras_weights",
    "save_keras",
    "save_keras_h5",
]

SUPPORTED_LAYERS = (
    "InputLayer", "Dense", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D",
    "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D",
    "Flatten", "Reshape", "Dropout", "AlphaDropout", "BatchNormalization", "LayerNormalization",
    "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Rescaling", "Normalization",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "Sequential", "Functional", "Model",
)
_ALIASES = {"MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D",
            "GlobalAvgPool2D": "GlobalAveragePooling2D", "GlobalMaxPool2D": "GlobalMaxPooling2D",
            "Convolution2D": "Conv2D", "SeparableConvolution2D": "SeparableConv2D"}
_IMAGE_LAYERS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D",
                 "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping2D")
# Keras activation name -> graftnet activation string (Keras' leaky_relu *function* uses 0.2).
_ACTIVATIONS_IN = {"linear": None, "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
                   "softmax": "softmax", "elu": "elu", "selu": "selu", "gelu": "gelu",
                   "leaky_relu": "leaky_relu(0.2)", "relu6": "relu6", "silu": "silu", "swish": "silu",
                   "hard_sigmoid": "hard_sigmoid", "hard_silu": "hard_silu", "hard_swish": "hard_silu",
                   "softplus": "softplus", "softsign": "softsign", "mish": "mish"}
SUPPORTED_ACTIVATIONS = tuple(_ACTIVATIONS_IN)
_INITIALIZERS = {"GlorotUniform": "glorot_uniform", "GlorotNormal": "glorot_normal",
                 "HeNormal": "he_normal", "HeUniform": "he_uniform", "LecunNormal": "lecun_normal",
                 "LecunUniform": "lecun_uniform", "TruncatedNormal": "truncated_normal", "Zeros": "zeros"}
_ARCHIVE_MEMBERS = ("metadata.json", "config.json", "model.weights.h5")
_MAX_JSON_BYTES = 64 * 2**20
_MAX_WEIGHTS_BYTES = 8 * 2**30
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
            arrays.append((weight.split(":", 1)[0], array))  # full names: a nested model's say whose they are
        out[layer] = arrays
    return out


def _legacy_by_path(legacy: dict[str, list[tuple[str, np.ndarray]]],
                    nested: set[str] | None) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Legacy weights by graftnet path: ``{"vgg16/block1_conv1": [("kernel", array), ...]}``.

    A legacy ``.h5`` file holds a nested model's weights in one group named after the nested
    model, with weight names that say which inner layer owns each one (``block1_conv1/kernel``
    in Keras 3, ``block1_conv1/kernel:0`` in tf.keras 2). ``nested`` names the top-level
    layers that are models (from the model config); without a config, a group whose short
    weight names repeat is taken to be a nested model.
    """
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for layer, weights in legacy.items():
        short = [_short_weight_name(w) for w, _ in weights]
        is_nested = layer in nested if nested is not None else len(set(short)) < len(short)
        if not is_nested:
            out[layer] = [(s, a) for s, (_, a) in zip(short, weights)]
            continue
        for (weight, array), leaf in zip(weights, short):
            owner = [part for part in weight.split("/")[:-1] if part != layer] or [layer]
            out.setdefault(f"{layer}/{'/'.join(owner)}", []).append((leaf, array))
    return out


def _short_weight_name(name: str) -> str:
    """'seq/bn1/moving_mean' or 'bn1/moving_mean:0' -> 'moving_mean'."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


def _read_v3_weights(h5: h5py.File, source: str, file_size: int) -> tuple[list[_V3Group], list[str]]:
    """Keras 3 layout: ``layers/<snake_class>[_k]/vars/<i>``; the rest (optimizer) is ignored."""
    root = "layers" if "layers" in h5 else "_layer_checkpoint_dependencies"
    groups: list[_V3Group] = []
    if root in h5:
        _read_v3_layers(h5[root], root, "layers", "", groups, source, file_size, 0)
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


def _read_v3_layers(group: h5py.Group, where: str, path: str, parent: str | None, groups: list[_V3Group],
                    source: str, file_size: int, depth: int) -> None:
    """The ``<path>/<layer>/vars`` groups under ``group``, and those of nested models
    (``layers/functional/layers/conv2d/vars``), whose names become paths (``vgg16/block1_conv1``)."""
    if depth > 16:
        raise _fail(source, f"{where} nests models more than 16 deep")
    for key in group:
        layer = group[key]
        if not isinstance(layer, h5py.Group):
            raise _fail(source, f"{where}/{key} is not a group")
        name = None
        if "vars" in layer:
            found = _read_vars(layer["vars"], f"{path}/{key}", source, file_size)
            name = found.name if parent == "" else (f"{parent}/{found.name}" if parent and found.name else None)
            found.name = name
            groups.append(found)
        if "layers" in layer and isinstance(layer["layers"], h5py.Group):  # a nested model's own layers
            _read_v3_layers(layer["layers"], f"{where}/{key}/layers", f"{path}/{key}/layers", name, groups,
                            source, file_size, depth + 1)


def _read_vars(group: Any, path: str, source: str, file_size: int) -> _V3Group:
    if not isinstance(group, h5py.Group):
        raise _fail(source, f"{path}/vars is not a group")
    keys = list(group.keys())
    if sorted(keys, key=lambda k: int(k) if k.isdigit() else -1) != [str(i) for i in range(len(keys))]:
        raise _fail(source, f"{path}/vars holds {format_names(keys)}; expected arrays named 0..{len(keys) - 1}")
    arrays = [_read_array(group[str(i)], f"{source}: {path}/vars/{i}", file_size) for i in range(len(keys))]
    return _V3Group(path, _attr_str(group.attrs.get("name")), arrays)


# ====================================================================== model structure
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


_MERGES: dict[str, type[MergeSpec]] = {"Add": Add, "Subtract": Subtract, "Multiply": Multiply, "Average": Average,
                                        "Maximum": Maximum, "Minimum": Minimum, "Concatenate": Concatenate}
_NESTED = ("Sequential", "Functional", "Model")
_MAX_DEPTH = 16  # models nested in models


def _model_layers(kind: str, config: Any, where: str, source: str) -> list[dict[str, Any]]:
    """A model's layer entries, in Keras' ``model.layers`` order (plus a Sequential's InputLayer)."""
    if kind == "Sequential":
        layers = config if isinstance(config, list) else config.get("layers") if isinstance(config, dict) else None
        if not isinstance(layers, list):  # (Keras 2.0-2.2 wrote a Sequential's config as a bare list)
            raise _fail(source, f"{where}: the Sequential config has no list of layers")
    elif kind in ("Functional", "Model"):
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise _fail(source, f"{where}: the {kind} config has no list of layers")
        layers = config["layers"]
    else:
        raise _fail(source, f"the model is a {kind!r}; graftnet imports Sequential and functional models "
                    f"(subclassed models have no config to read)")
    return [_entry(e, source) for e in layers]


def _model_entries(model: dict[str, Any], source: str) -> list[tuple[str, dict[str, Any], str]]:
    """Every layer entry of a model and of the models nested in it, as ``(graftnet path,
    entry, Keras 3 weights-file path)``: ``("vgg16/block1_conv1", {...},
    "layers/functional/layers/conv2d")``."""
    out: list[tuple[str, dict[str, Any], str]] = []

    def walk(kind: str, config: Any, prefix: str, v3_prefix: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise _fail(source, f"models are nested more than {_MAX_DEPTH} deep")
        entries = _model_layers(kind, config, f"nested model {prefix[:-1]!r}" if prefix else "the model", source)
        if kind == "Sequential":  # Sequential.layers leaves out its InputLayer; functional models list theirs
            entries = [e for e in entries if e["class_name"] != "InputLayer"]
        for entry, v3 in zip(entries, _v3_paths([e["class_name"] for e in entries])):
            path, v3_path = prefix + _entry_name(entry), f"{v3_prefix}/{v3}" if v3_prefix else v3
            out.append((path, entry, v3_path))
            if entry["class_name"] in _NESTED:
                walk(entry["class_name"], entry["config"], path + "/", v3_path, depth + 1)

    walk(model["class_name"], model.get("config"), "", "", 0)
    return out


@dataclass
class _Graph:
    """A Keras model, with the models nested in it spelled out, as graftnet layers."""

    plans: list[_Plan]  # in Keras' layer order
    in_shapes: dict[str, list[tuple[int, ...]]]  # layer path -> the shapes it reads (graftnet order)
    input_name: str
    output: str
    block_inputs: dict[str, str | None]


class _Walker:
    """Turns a model config into graftnet layers that read their inputs by path.

    A Sequential's layers read the layer before; a functional model's layers read what
    their inbound node names; a nested model is spelled out in place, its layers named
    ``<model>/<layer>``, reading what the nested model reads. Keras' layer order is kept,
    so that graftnet's ``"vgg16.layers[15:]"`` picks what Keras' ``vgg16.layers[15:]`` does.
    """

    def __init__(self, source: str, input_shape: tuple[int, ...], layout: str,
                 by_layer: dict[str, list[tuple[str, np.ndarray]]], notes: list[str], keras_major: int) -> None:
        self.source, self.input_shape, self.layout = source, input_shape, layout
        self.by_layer, self.notes, self.keras_major = by_layer, notes, keras_major
        self.plans: list[_Plan] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.in_shapes: dict[str, list[tuple[int, ...]]] = {}
        self.block_inputs: dict[str, str | None] = {}
        self.input_name = INPUT

    def run(self, model: dict[str, Any]) -> _Graph:
        config = model.get("config")
        frozen = isinstance(config, dict) and config.get("trainable") is False
        output = self.model(model["class_name"], config, "", None, frozen, 0)
        if not self.plans:
            raise _fail(self.source, "has no layers graftnet could import (only an input layer)")
        return _Graph(self.plans, self.in_shapes, self.input_name, output, self.block_inputs)

    def _start(self, name: str) -> str:
        self.input_name = name
        self.shapes[name] = self.input_shape
        return name

    def model(self, kind: str, config: Any, prefix: str, input_ref: str | None, frozen: bool, depth: int) -> str:
        """Add a model's layers; returns the path of the layer whose output is the model's."""
        where = f"nested model {prefix[:-1]!r}" if prefix else "the model"
        if depth > _MAX_DEPTH:
            raise _fail(self.source, f"models are nested more than {_MAX_DEPTH} deep")
        entries = _model_layers(kind, config, where, self.source)
        if kind == "Sequential":
            previous = input_ref
            for i, entry in enumerate(entries):
                if entry["class_name"] == "InputLayer":
                    if i > 0:
                        raise _fail(self.source, f"layer {prefix + _entry_name(entry)!r} (InputLayer) is not the "
                                    f"first layer of {where}")
                    previous = previous or self._start(_entry_name(entry))
                    continue
                previous = self.layer(entry, prefix, [previous or self._start(INPUT)], frozen, depth)
            if previous is None or previous == input_ref:
                raise _fail(self.source, f"{where} has no layers")
            return previous
        inputs = _endpoints(config.get("input_layers"), "input_layers", self.source)
        outputs = _endpoints(config.get("output_layers"), "output_layers", self.source)
        if len(inputs) != 1 or len(outputs) != 1:
            raise _fail(self.source, f"{where} has {len(inputs)} input(s) ({', '.join(inputs)}) and "
                        f"{len(outputs)} output(s) ({', '.join(outputs)}); graftnet imports models with one "
                        f"input and one output")
        input_ref = input_ref or self._start(inputs[0])
        self.block_inputs[prefix[:-1]] = inputs[0]  # Keras' model.layers starts with this InputLayer
        defined = {_entry_name(e) for e in entries}
        alias: dict[str, str] = {}  # a layer's name in this model -> the path of its output
        for entry in entries:
            name, cls = _entry_name(entry), entry["class_name"]
            if name in alias:
                raise _fail(self.source, f"two layers of {where} are named {name!r}")
            if cls == "InputLayer":
                if name != inputs[0]:
                    raise _fail(self.source, f"{where} has an input layer {name!r} that is not its input "
                                f"({inputs[0]!r}); graftnet imports models with one input")
                alias[name] = input_ref
                continue
            nodes = _inbound(entry, self.source)
            if len(nodes) > 1:
                raise _fail(self.source, f"layer {prefix + name!r} ({cls}) is a shared layer: it is called on "
                            f"{len(nodes)} inputs ({'; '.join(', '.join(n) for n in nodes)}); graftnet layers are "
                            f"called once, so a model with shared layers cannot be imported")
            if not nodes or not nodes[0]:
                raise _fail(self.source, f"layer {prefix + name!r} ({cls}) of {where} has no inbound node, so it "
                            f"reads nothing")
            refs = []
            for src in nodes[0]:
                if src not in alias:
                    why = "which is listed after it" if src in defined else f"which {where} does not define"
                    raise _fail(self.source, f"layer {prefix + name!r} ({cls}) reads {src!r}, {why}")
                refs.append(alias[src])
            alias[name] = self.layer(entry, prefix, refs, frozen, depth)
        if outputs[0] not in alias:
            raise _fail(self.source, f"{where}'s output layer {outputs[0]!r} is not one of its layers")
        return alias[outputs[0]]

    def layer(self, entry: dict[str, Any], prefix: str, refs: list[str], frozen: bool, depth: int) -> str:
        cls = _ALIASES.get(entry["class_name"], entry["class_name"])
        cfg, path = entry["config"], prefix + _entry_name(entry)
        if path in self.shapes or any(p.startswith(path + "/") for p in self.shapes):
            raise _fail(self.source, f"two layers are named {path!r}")
        frozen = frozen or cfg.get("trainable", True) is False
        if cls in _NESTED:
            if len(refs) != 1:
                raise _fail(self.source, f"nested model {path!r} reads {len(refs)} inputs ({', '.join(refs)}); "
                            f"graftnet imports nested models with one input")
            return self.model(cls, cfg, path + "/", refs[0], frozen, depth + 1)
        in_shapes = [self.shapes[r] for r in refs]
        try:
            if cls in _MERGES:
                plan = _convert_merge(path, cls, cfg, _Context(in_shapes[0], self.layout, lambda n: [], self.notes))
            elif len(refs) != 1:
                raise _Unsupported(f"it takes {len(refs)} inputs ({', '.join(refs)}); graftnet's {cls} takes one")
            else:
                ctx = _Context(in_shapes[0], self.layout, lambda n: self.by_layer.get(n, []), self.notes,
                               self.keras_major)
                plan = _convert({**entry, "name": path}, ctx)
            assert plan.spec is not None
            plan.spec.inputs = list(refs)
            shape = plan.spec.output_shape(in_shapes if plan.spec.merges else in_shapes[0])  # type: ignore[arg-type]
        except (_Unsupported, GraftnetError) as err:
            raise _fail(self.source, f"cannot import layer {path!r} ({entry['class_name']}): {err}") from None
        plan.frozen = plan.frozen or frozen
        self.shapes[path], self.in_shapes[path] = shape, in_shapes
        self.plans.append(plan)
        return path


def _convert_merge(name: str, cls: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    """Add, Subtract, ... Concatenate; Keras' channels-last axis becomes graftnet's."""
    if cls != "Concatenate":
        return _Plan(name, cls, _MERGES[cls](name=name))
    axes, _ = _keras_axes(cfg.get("axis", -1), ctx)
    if len(axes) != 1:
        raise _Unsupported(f"axis={cfg.get('axis')!r} is not one axis")
    return _Plan(name, cls, Concatenate(axis=axes[0], name=name))


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
    consumes: bool = False  # weights are folded into the spec, not loaded
    dropped: list[str] = field(default_factory=list)  # Keras weights graftnet has no use for (a count)
    frozen: bool = False


@dataclass
class _Context:
    """What a converter needs: the incoming shape (graftnet's) and the image layout."""

    shape: tuple[int, ...]
    layout: str  # "channels_last" | "channels_first": how Keras held the (C, H, W) tensor
    weights: Callable[[str], list[tuple[str, np.ndarray]]]
    notes: list[str]
    keras_major: int = 3  # Keras 2's hard_sigmoid is 0.2 x + 0.5, Keras 3's relu6(x + 3) / 6


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


def _activation(value: Any, ctx: _Context | None = None) -> str | None:
    if value is None:
        return None
    if value == "hard_sigmoid" and ctx is not None and ctx.keras_major < 3:
        raise _Unsupported("Keras 2's hard_sigmoid (clip(0.2 x + 0.5, 0, 1)) is not supported; graftnet's "
                           "is Keras 3's relu6(x + 3) / 6")
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


def _window(cfg: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """kernel_size, stride, padding and dilation of a Keras convolution, checked."""
    _need_rank(ctx, 3, "a convolution needs an image input")
    _need_layout(cfg, ctx)
    _plain_kernel(cfg)
    padding = cfg.get("padding", "valid")
    if padding not in ("valid", "same"):
        raise _Unsupported(f"padding={padding!r} is not supported ('valid' or 'same')")
    return {"kernel_size": _pair_of(cfg, "kernel_size"), "stride": _pair_of(cfg, "strides", 1),
            "padding": padding, "dilation": _pair_of(cfg, "dilation_rate", 1)}


def _int_option(cfg: dict[str, Any], key: str, default: Any = None) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Unsupported(f"{key}={value!r} is not an integer")
    return value


def _convert_conv(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    window = _window(cfg, ctx)
    if cfg.get("groups", 1) != 1:
        raise _Unsupported(f"groups={cfg.get('groups')} is not supported (only 1)")
    bias = bool(cfg.get("use_bias", True))
    spec = Conv2d(_int_option(cfg, "filters"), activation=_activation(cfg.get("activation"), ctx),
                  init=_initializer(cfg.get("kernel_initializer")), bias=bias, name=name,
                  **window, **_regularization(cfg, ctx, name, [0, 1, 2]))
    return _weighted(name, "Conv2D", spec, bias, kernel_to_torch)


def _depthwise_to_torch(kernel: torch.Tensor) -> torch.Tensor:
    """Keras' depthwise kernel (kh, kw, C, mult) -> torch's (C * mult, 1, kh, kw)."""
    kh, kw, channels, multiplier = kernel.shape
    return kernel.reshape(kh, kw, channels * multiplier).permute(2, 0, 1).unsqueeze(1)


def _depthwise_from_torch(weight: torch.Tensor, multiplier: int) -> torch.Tensor:
    """torch's (C * mult, 1, kh, kw) -> Keras' (kh, kw, C, mult)."""
    out, _, kh, kw = weight.shape
    return weight.squeeze(1).permute(1, 2, 0).reshape(kh, kw, out // multiplier, multiplier)


def _convert_depthwise(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    window = _window(cfg, ctx)
    bias = bool(cfg.get("use_bias", True))
    regularizer_cfg = {**cfg, "kernel_regularizer": cfg.get("depthwise_regularizer"),
                       "kernel_constraint": cfg.get("depthwise_constraint")}
    spec = DepthwiseConv2d(depth_multiplier=_int_option(cfg, "depth_multiplier", 1),
                           activation=_activation(cfg.get("activation"), ctx),
                           init=_initializer(cfg.get("depthwise_initializer")), bias=bias, name=name,
                           **window, **_regularization(regularizer_cfg, ctx, name, [0, 1, 2]))
    return _weighted(name, "DepthwiseConv2D", spec, bias, _depthwise_to_torch)


def _convert_separable(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    window = _window(cfg, ctx)
    bias = bool(cfg.get("use_bias", True))
    for key in ("depthwise_regularizer", "pointwise_regularizer", "depthwise_constraint", "pointwise_constraint"):
        if cfg.get(key):
            ctx.notes.append(f"{name}: {key} dropped (graftnet's SeparableConv2d has none)")
    spec = SeparableConv2d(_int_option(cfg, "filters"), depth_multiplier=_int_option(cfg, "depth_multiplier", 1),
                           activation=_activation(cfg.get("activation"), ctx),
                           init=_initializer(cfg.get("depthwise_initializer")), bias=bias, name=name, **window)
    return _separable_plan(name, spec)


def _separable_plan(name: str, spec: SeparableConv2d) -> _Plan:
    weights = ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if spec.bias else [])
    targets = {"depthwise_kernel": "depthwise.weight", "pointwise_kernel": "pointwise.weight",
               "bias": "pointwise.bias"}
    return _Plan(name, "SeparableConv2D", spec, weights, {w: targets[w] for w in weights},
                 {"depthwise_kernel": _depthwise_to_torch, "pointwise_kernel": kernel_to_torch})


def _convert_pool(name: str, cfg: dict[str, Any], ctx: _Context, cls: str) -> _Plan:
    _need_rank(ctx, 3, f"{cls} needs an image input")
    _need_layout(cfg, ctx)
    padding = cfg.get("padding", "valid")
    if padding not in ("valid", "same"):
        raise _Unsupported(f"padding={padding!r} is not supported ('valid' or 'same')")
    pool = _pair_of(cfg, "pool_size", 2)
    strides = _pair_of(cfg, "strides") if cfg.get("strides") is not None else pool
    spec_cls = MaxPool if cls == "MaxPooling2D" else AvgPool
    return _Plan(name, cls, spec_cls(pool, strides, padding, name=name))


def _convert_global_pool(name: str, cfg: dict[str, Any], ctx: _Context, cls: str) -> _Plan:
    _need_rank(ctx, 3, f"{cls} needs an image input")
    _need_layout(cfg, ctx)
    spec_cls = GlobalMaxPool if cls == "GlobalMaxPooling2D" else GlobalAvgPool
    # keepdims: Keras' (1, 1, C) is graftnet's (C, 1, 1), the same values in the same order
    return _Plan(name, cls, spec_cls(keepdims=bool(cfg.get("keepdims", False)), name=name))


def _convert_padding(name: str, cfg: dict[str, Any], ctx: _Context, cls: str) -> _Plan:
    _need_rank(ctx, 3, f"{cls} needs an image input")
    _need_layout(cfg, ctx)
    key = "padding" if cls == "ZeroPadding2D" else "cropping"
    spec = (ZeroPadding2D if cls == "ZeroPadding2D" else Cropping2D)(cfg.get(key, 1), name=name)
    return _Plan(name, cls, spec)


def _reshape_orders_agree(in_shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether a row-major reshape over graftnet's order equals Keras' over channels-last data."""
    index = torch.arange(math.prod(in_shape), dtype=torch.float32).reshape(1, *in_shape)
    plain = Reshape(target).build(in_shape)(index)
    keras_order = Reshape(target, channels_last=True).build(in_shape)(index)
    return bool(torch.equal(plain, keras_order))


def _convert_reshape(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    target = cfg.get("target_shape")
    if not isinstance(target, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in target):
        raise _Unsupported(f"target_shape={target!r} is not a list of integers")
    target_shape = tuple(target)
    if len(target_shape) > 3:
        raise _Unsupported(f"target_shape={target} has {len(target)} axes; graftnet holds vectors and images")
    if ctx.layout == "channels_first":  # Keras reshapes the (C, H, W) tensor as it is
        return _Plan(name, "Reshape", Reshape(target_shape, name=name))
    if len(target_shape) == 3:
        h, w, c = target_shape
        target_shape = (c, h, w)  # Keras' (H, W, C) -> graftnet's (C, H, W)
    spec = Reshape(target_shape, channels_last=True, name=name)
    resolved = spec.output_shape(ctx.shape)
    if _reshape_orders_agree(ctx.shape, resolved):  # e.g. (C,) -> (C, 1, 1): no transposes needed
        spec = Reshape(target_shape, name=name)
    return _Plan(name, "Reshape", spec)


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
        act = _activation(cfg.get("activation"), ctx)
    elif cls == "ReLU":
        max_value, threshold = _num(cfg, "max_value"), float(_num(cfg, "threshold", 0.0))
        slope = float(_num(cfg, "negative_slope", 0.0))
        if max_value is not None or threshold != 0.0:
            return _Plan(name, cls, ReLU(None if max_value is None else float(max_value), threshold, slope,
                                         name=name))
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


def _values(value: Any, what: str) -> float | tuple[float, ...]:
    """A number, or a list (or a Keras-serialised array) of one value per channel."""
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        value = (value.get("config") or {}).get("value")
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise _Unsupported(f"{what}={str(value)[:80]} is not a number or a list of numbers") from None
    if array.size == 0:
        raise _Unsupported(f"{what} is empty")
    if np.all(array == array[0]):
        return float(array[0])
    return tuple(float(v) for v in array)


def _need_channel_vector(values: float | tuple[float, ...], what: str, ctx: _Context) -> None:
    """Keras broadcasts a list against the last axis: graftnet's channels only if channels-last."""
    if isinstance(values, tuple) and len(ctx.shape) == 3 and ctx.layout == "channels_first":
        raise _Unsupported(f"{what} has {len(values)} values for the last axis of a channels_first image "
                           f"(its width); graftnet takes one value per channel")


def _convert_rescaling(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    scale, offset = _values(cfg.get("scale", 1.0), "scale"), _values(cfg.get("offset", 0.0), "offset")
    _need_channel_vector(scale, "scale", ctx)
    _need_channel_vector(offset, "offset", ctx)
    return _Plan(name, "Rescaling", Rescaling(scale, offset, name=name))


def _keras_axes(axis: Any, ctx: _Context) -> tuple[tuple[int, ...], list[int]]:
    """Keras axes (with the batch axis, channels-last images) as graftnet's, and the permutation
    that puts an array over Keras' axes (sorted) into graftnet's (sorted) order."""
    rank = len(ctx.shape) + 1
    axes = [axis] if isinstance(axis, int) and not isinstance(axis, bool) else axis
    if not isinstance(axes, list) or not axes or not all(isinstance(a, int) and -rank <= a < rank for a in axes):
        raise _Unsupported(f"axis={axis!r} is not an axis of a tensor of rank {rank}")
    keras_axes = sorted({a % rank for a in axes})
    if 0 in keras_axes:
        raise _Unsupported(f"axis={axis!r} includes the batch axis")
    if rank == 4 and ctx.layout == "channels_last":
        to_graftnet = {1: 2, 2: 3, 3: 1}  # Keras (N, H, W, C) -> graftnet (N, C, H, W)
        mapped = [to_graftnet[a] for a in keras_axes]
    else:
        mapped = list(keras_axes)
    return tuple(sorted(mapped)), [int(i) for i in np.argsort(mapped)]


def _permuted(perm: list[int]) -> Transform | None:
    if perm == sorted(perm):
        return None
    return lambda array: array.permute(*perm)


def _convert_normalization(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    if cfg.get("invert"):
        raise _Unsupported("invert=True is not supported")
    keras_axis = cfg.get("axis", -1)
    axis, perm = (None, [0]) if keras_axis in (None, []) else _keras_axes(keras_axis, ctx)  # Keras saves None as []
    if len(perm) > 1 and _permuted(perm) is not None:
        raise _Unsupported(f"axis={cfg.get('axis')} keeps several axes in an order graftnet does not reproduce")
    mean, variance = cfg.get("mean"), cfg.get("variance")
    graftnet_axis = None if axis is None else (axis[0] if len(axis) == 1 else axis)
    if mean is not None and variance is not None:  # given in the config: Keras stores no weights
        spec = Normalization(graftnet_axis, _values(mean, "mean"), _values(variance, "variance"), name=name)
        return _Plan(name, "Normalization", spec)
    if not ctx.weights(name):
        raise _Unsupported("the file holds no mean and variance for it (was it adapted?)")
    spec = Normalization(graftnet_axis, name=name)
    reshape: Transform = lambda array: array.reshape(-1) if array.dim() > 1 else array  # noqa: E731
    return _Plan(name, "Normalization", spec, ["mean", "variance", "count"],
                 {"mean": "mean", "variance": "variance"}, {"mean": reshape, "variance": reshape},
                 dropped=["count"])


def _convert_layer_norm(name: str, cfg: dict[str, Any], ctx: _Context) -> _Plan:
    if cfg.get("rms_scaling"):
        raise _Unsupported("rms_scaling=True is not supported")
    axes, perm = _keras_axes(cfg.get("axis", -1), ctx)
    center, scale = bool(cfg.get("center", True)), bool(cfg.get("scale", True))
    spec = LayerNormalization(axes[0] if len(axes) == 1 else axes, float(_num(cfg, "epsilon", 1e-3)),
                              center, scale, name=name)
    return _layer_norm_plan(name, spec, _permuted(perm))


def _layer_norm_plan(name: str, spec: LayerNormalization, transform: Transform | None) -> _Plan:
    weights = (["gamma"] if spec.scale else []) + (["beta"] if spec.center else [])
    targets = {"gamma": "weight", "beta": "bias"}
    transforms = {w: transform for w in weights} if transform is not None else {}
    return _Plan(name, "LayerNormalization", spec, weights, {w: targets[w] for w in weights}, transforms)


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
        "DepthwiseConv2D": lambda: _convert_depthwise(name, cfg, ctx),
        "SeparableConv2D": lambda: _convert_separable(name, cfg, ctx),
        "MaxPooling2D": lambda: _convert_pool(name, cfg, ctx, cls),
        "AveragePooling2D": lambda: _convert_pool(name, cfg, ctx, cls),
        "GlobalAveragePooling2D": lambda: _convert_global_pool(name, cfg, ctx, cls),
        "GlobalMaxPooling2D": lambda: _convert_global_pool(name, cfg, ctx, cls),
        "ZeroPadding2D": lambda: _convert_padding(name, cfg, ctx, cls),
        "Cropping2D": lambda: _convert_padding(name, cfg, ctx, cls),
        "Flatten": lambda: _convert_flatten(name, cfg, ctx),
        "Reshape": lambda: _convert_reshape(name, cfg, ctx),
        "Dropout": lambda: _convert_dropout(name, cfg, ctx, cls),
        "AlphaDropout": lambda: _convert_dropout(name, cfg, ctx, cls),
        "BatchNormalization": lambda: _convert_batchnorm(name, cfg, ctx),
        "Rescaling": lambda: _convert_rescaling(name, cfg, ctx),
        "Normalization": lambda: _convert_normalization(name, cfg, ctx),
        "LayerNormalization": lambda: _convert_layer_norm(name, cfg, ctx),
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
def _keras_input_shape(layers: list[dict[str, Any]], model_cfg: dict[str, Any],
                       source: str = "", depth: int = 0) -> list[Any] | None:
    """The Keras input shape (no batch axis) recorded anywhere in the config, or None."""
    first = layers[0]["config"] if layers else {}
    if layers and layers[0]["class_name"] in _NESTED and depth < _MAX_DEPTH and not first.get("batch_input_shape"):
        inner = _model_layers(layers[0]["class_name"], first, "a nested model", source)  # Sequential([VGG16(...)])
        found = _keras_input_shape(inner, first if isinstance(first, dict) else {}, source, depth + 1)
        if found is not None:
            return found
    candidates = [first.get("batch_shape"), first.get("batch_input_shape"), model_cfg.get("build_input_shape"),
                  (layers[0].get("build_config") or {}).get("input_shape") if layers else None]
    for shape in candidates:
        if isinstance(shape, list) and len(shape) >= 2:
            return shape[1:]
    if layers and isinstance(first.get("input_shape"), list):  # very old Keras 2
        return first["input_shape"]
    return None


def _layout(entries: list[tuple[str, dict[str, Any], str]]) -> str:
    """channels_first if the first layer that says so says so; Keras' default otherwise."""
    for _, entry, _ in entries:
        if _ALIASES.get(entry["class_name"], entry["class_name"]) in _IMAGE_LAYERS:
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


def import_keras_config(config: dict[str, Any], weights: dict[str, list[tuple[str, np.ndarray]]], *, source: str,
                        kind: str, keras_version: str | None = None,
                        input_shape: tuple[int, ...] | None = None) -> tuple[Network, MappingReport]:
    """Build a network from a Keras model config and load its weights: ``load_keras`` without a file.

    For formats that hold a Keras config and weights elsewhere than a ``.h5``/``.keras`` file
    (a tf_keras SavedModel's ``keras_metadata.pb`` and ``variables/``).

    Args:
        config: ``{"class_name": "Sequential", "config": {...}}`` as Keras writes it.
        weights: legacy-``.h5``-shaped: top-level layer name -> ``[(weight name, array)]``, the
            weight names as Keras 2 gives them (``conv1/kernel``; a nested model's say which
            inner layer owns each weight, ``block1_conv1/kernel``).
        source: the file or directory, for messages; kind: what it is ("tf_keras SavedModel").
    """
    kfile = _KerasFile(source, kind, config=_model_config(config, source), legacy=weights,
                       keras_version=keras_version)
    try:
        return _import(kfile, input_shape)
    except _Unsupported as err:
        raise _fail(source, str(err)) from None
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as err:
        if isinstance(err, GraftnetError):
            raise
        raise _fail(source, f"has a malformed model config ({brief_error(err)})") from None


def _import(kfile: _KerasFile, input_shape: tuple[int, ...] | None) -> tuple[Network, MappingReport]:
    model = kfile.config
    assert model is not None
    entries = _model_entries(model, kfile.source)
    _check_layer_types([e for _, e, _ in entries], kfile.source)
    top_layers = _model_layers(model["class_name"], model.get("config"), "the model", kfile.source)
    model_cfg = model.get("config") if isinstance(model.get("config"), dict) else {}
    keras_shape = (list(input_shape) if input_shape is not None
                   else _keras_input_shape(top_layers, model_cfg, kfile.source))
    if keras_shape is None:
        raise _fail(kfile.source, "records no input shape; pass input_shape= (Keras order, e.g. (28, 28, 1))")
    layout = _layout(entries)
    shape = _graftnet_input_shape(keras_shape, layout, kfile.source)
    by_layer = _weights_by_layer(kfile, entries)
    notes: list[str] = []
    graph = _Walker(kfile.source, shape, layout, by_layer, notes, _keras_major(kfile.keras_version)).run(model)
    _check_size(graph, by_layer, kfile.source)
    name = model_cfg.get("name") if isinstance(model_cfg.get("name"), str) else "keras_model"
    try:
        net = Network([p.spec for p in graph.plans if p.spec is not None], shape, name=name, output=graph.output,
                      input_name=graph.input_name, block_inputs=graph.block_inputs)
    except GraftnetError as err:
        raise _fail(kfile.source, f"cannot be rebuilt in graftnet: {err}") from None
    report = _load_plans(net, graph.plans, by_layer, kfile, strict=True)
    report.notes += notes
    frozen = [p.keras_name for p in graph.plans if p.frozen and p.spec is not None]
    if frozen:
        net.freeze(frozen)
    net.info.update(source=kfile.source, format=kfile.kind, keras_version=kfile.keras_version,
                    keras_input_shape=list(keras_shape), input_layout=layout if len(shape) == 3 else None)
    return net, report


def _keras_major(version: str | None) -> int:
    match = re.match(r"\s*(\d+)", version or "")
    return int(match.group(1)) if match else 3


def _check_layer_types(entries: list[dict[str, Any]], source: str) -> None:
    """Refuse a model with layer types graftnet lacks, naming every such type at once."""
    unsupported: dict[str, list[str]] = {}
    for entry in entries:
        cls = _ALIASES.get(entry["class_name"], entry["class_name"])
        if cls not in SUPPORTED_LAYERS:
            unsupported.setdefault(cls, []).append(_entry_name(entry))
    if not unsupported:
        return
    listed = "; ".join(f"{cls} ({format_names(names, limit=3)})" for cls, names in unsupported.items())
    raise _fail(source, f"cannot be imported: layer type(s) not supported: {listed}; supported layers: "
                f"{', '.join(SUPPORTED_LAYERS)}")


def _n_params(spec: LayerSpec, in_shape: tuple[int, ...]) -> int:
    """Parameters and statistics a layer will allocate (from shapes only, nothing is built)."""
    if isinstance(spec, Dense):
        return in_shape[0] * spec.units + spec.units
    if isinstance(spec, Conv2d):
        kh, kw = _pair2(spec.kernel_size)
        return spec.filters * in_shape[0] * kh * kw + spec.filters
    if isinstance(spec, DepthwiseConv2d):
        kh, kw = _pair2(spec.kernel_size)
        return in_shape[0] * spec.depth_multiplier * (kh * kw + 1)
    if isinstance(spec, SeparableConv2d):
        kh, kw = _pair2(spec.kernel_size)
        channels = in_shape[0] * spec.depth_multiplier
        return channels * kh * kw + channels * spec.filters + spec.filters
    if isinstance(spec, BatchNorm):
        return 4 * in_shape[0]  # scale, shift, mean, variance per channel
    if isinstance(spec, (LayerNormalization, Normalization)):  # two vectors over the normalised / kept axes
        axes = () if spec.axis is None else (spec.axis,) if isinstance(spec.axis, int) else tuple(spec.axis)
        rank = len(in_shape) + 1
        return 2 * math.prod(in_shape[a % rank - 1] for a in axes if 0 < a % rank < rank)
    return 0


def _check_size(graph: _Graph, by_layer: dict[str, list[tuple[str, np.ndarray]]], source: str) -> None:
    """Refuse a config that would allocate far more than the file's weights (a corrupt or hostile
    config could otherwise ask for terabytes before any shape is checked)."""
    wanted = sum(_n_params(p.spec, graph.in_shapes[p.keras_name][0]) for p in graph.plans if p.spec is not None)
    stored = sum(int(a.size) for arrays in by_layer.values() for _, a in arrays)
    if wanted > 2 * stored + 100_000:
        raise _fail(source, f"its config describes {wanted:,} parameters but the file holds only {stored:,} "
                    f"weights; the config or the weights are corrupt")


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


def _weights_by_layer(kfile: _KerasFile, entries: list[tuple[str, dict[str, Any], str]] | None = None
                      ) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Keras layer path -> [(weight name or index, array)] for a full model file.

    Paths are graftnet's: ``dense``, or ``vgg16/block1_conv1`` for a layer of a nested model.
    Keras 3 files name weights by position and layer path; the model config (any graph, not
    only chains) gives each layer's name and weight names.
    """
    entries = entries if entries is not None else _model_entries(kfile.config or {}, kfile.source)
    if kfile.legacy is not None:
        nested = {path for path, entry, _ in entries if "/" not in path and entry["class_name"] in _NESTED}
        return _legacy_by_path(kfile.legacy, nested)
    groups = kfile.v3 or []
    named = {g.name: g for g in groups if g.name}
    if groups and len(named) == len(groups):
        return _name_positional({name: [(str(i), a) for i, a in enumerate(g.arrays)]
                                 for name, g in named.items()}, entries)
    by_path = {g.path: g for g in groups}
    found = {path: [(str(i), a) for i, a in enumerate(by_path[v3].arrays)]
             for path, _, v3 in entries if v3 in by_path}
    return _name_positional(found, entries)


def _config_weight_names(entry: dict[str, Any]) -> list[str] | None:
    """The names of a layer's variables in Keras' order, from its config (None if unknown)."""
    cls, cfg = _ALIASES.get(entry["class_name"], entry["class_name"]), entry["config"]
    if cls in ("Dense", "Conv2D", "DepthwiseConv2D"):
        return ["kernel", "bias"] if cfg.get("use_bias", True) else ["kernel"]
    if cls == "SeparableConv2D":
        return ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
    if cls == "LayerNormalization":
        return (["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else [])
    if cls == "BatchNormalization":
        return ((["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else [])
                + ["moving_mean", "moving_variance"])
    if cls == "Normalization":
        return ["mean", "variance", "count"]
    return None


def _name_positional(found: dict[str, list[tuple[str, np.ndarray]]],
                     entries: list[tuple[str, dict[str, Any], str]]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Give Keras 3's positional variables (0, 1, ...) the names their layer's config implies."""
    names = {path: _config_weight_names(e) for path, e, _ in entries}
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
    ignored: list[str] = []
    planned = {p.keras_name for p in plans}
    for plan in plans:
        if plan.consumes:
            continue
        arrays = _named_arrays(plan, by_layer.get(plan.keras_name, []), kfile.source)
        for weight, array in arrays.items():
            key = f"{plan.keras_name}/{weight}"
            if weight in plan.dropped:
                ignored.append(key)
                continue
            tensors[key] = array
            rename[key] = _state_key(plan.keras_name, plan.targets[weight])
            if weight in plan.transforms:
                transforms[key] = plan.transforms[weight]
        for param, value in plan.fills.items():
            key = f"{plan.keras_name}/({param}={value:g})"
            target = dict(net.named_parameters())[_state_key(plan.keras_name, param)]
            tensors[key], rename[key] = torch.full_like(target, value), _state_key(plan.keras_name, param)
    for layer, arrays in by_layer.items():  # weights of layers that are not in the model at all
        if layer not in planned:
            tensors.update({f"{layer}/{w}": a for w, a in arrays})
    try:
        report = load_tensors(net, tensors, strict=strict, transforms=transforms, source=kfile.source, rename=rename)
    except CheckpointError as err:
        raise ImportFormatError(str(err)) from None
    report.ignored += ignored + kfile.ignored
    return report


def _state_key(path: str, param: str) -> str:
    """A layer path and a parameter as a state-dict key: ``vgg16/block1_conv1`` -> ``vgg16.block1_conv1.weight``."""
    return f"{path.replace('/', '.')}.{param}"


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
def _in_shapes(net: Network) -> dict[str, tuple[int, ...]]:
    """Each layer's (first) input shape, in a chain or a graph."""
    return {name: net.shape_of(net.inputs_of(name)[0]) for name in net.layer_names}


def _flatten_orders(net: Network) -> dict[str, tuple[int, int, int]]:
    """Dense layers fed by a channels-first Flatten of a (C, H, W) tensor with C > 1.

    Keras flattens images in (H, W, C) order; such a Dense's Keras kernel rows must be
    permuted to graftnet's (C, H, W) order. Returns ``{dense name: (C, H, W)}``.
    """
    out: dict[str, tuple[int, int, int]] = {}
    in_shapes = _in_shapes(net)
    for name, spec in zip(net.layer_names, net.specs):
        in_shape = in_shapes[name]
        if not (isinstance(spec, Flatten) and len(in_shape) == 3 and in_shape[0] > 1 and not spec.channels_last):
            continue
        pending = (in_shape[0], in_shape[1], in_shape[2])
        todo = [name]
        while todo:  # follow the flattened vector through order-keeping layers to the Dense layers it feeds
            for reader in net.readers_of(todo.pop()):
                reader_spec = net.spec_of(reader)
                if isinstance(reader_spec, Dense):
                    out[reader] = pending
                elif isinstance(reader_spec, (Dropout, Activation, Rescaling)) and not reader_spec.merges:
                    todo.append(reader)
                else:
                    raise ImportFormatError(
                        f"layer {reader!r} ({reader_spec.type}) sits between a channels-first Flatten of "
                        f"{pending} and a Dense layer; graftnet can only reorder a Dense kernel between "
                        f"Keras' (H, W, C) and its (C, H, W) order. Use Flatten(channels_last=True)")
        if _reads_through(net, name, net.output_name):
            raise ImportFormatError(f"network {net.name!r} ends with a channels-first Flatten of {pending}, whose "
                                    f"output order Keras cannot reproduce; use Flatten(channels_last=True)")
    return out


def _reads_through(net: Network, flatten: str, output: str) -> bool:
    """Whether ``output`` is ``flatten`` seen through Dropout/Activation/Rescaling layers."""
    while output != flatten:
        spec = net.spec_of(output)
        if not isinstance(spec, (Dropout, Activation, Rescaling)):
            return False
        output = net.inputs_of(output)[0]
        if output == net.input_name:
            return False
    return True


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
    in_shapes = _in_shapes(net)
    for spec, in_shape in zip(net.specs, [in_shapes[n] for n in net.layer_names]):
        name = spec.name or ""
        if isinstance(spec, Dense):
            plans.append(_weighted(name, "Dense", spec, spec.bias, _dense_from_keras(orders.get(name))))
        elif isinstance(spec, Conv2d):
            plans.append(_weighted(name, "Conv2D", spec, spec.bias, kernel_to_torch))
        elif isinstance(spec, DepthwiseConv2d):
            plans.append(_weighted(name, "DepthwiseConv2D", spec, spec.bias, _depthwise_to_torch))
        elif isinstance(spec, SeparableConv2d):
            plans.append(_separable_plan(name, spec))
        elif isinstance(spec, LayerNormalization):
            perm = _axes_out(spec.axis, in_shape)[1]
            plans.append(_layer_norm_plan(name, spec, _permuted([int(i) for i in np.argsort(perm)])))
        elif isinstance(spec, Normalization) and (spec.mean is None or spec.variance is None):  # adapted
            plans.append(_Plan(name, "Normalization", spec, ["mean", "variance", "count"],
                               {"mean": "mean", "variance": "variance"}, dropped=["count"]))
        elif isinstance(spec, BatchNorm):
            weights = (["gamma", "beta"] if spec.affine else []) + ["moving_mean", "moving_variance"]
            targets = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                       "moving_variance": "running_var"}
            optional = {"gamma": 1.0, "beta": 0.0} if spec.affine else {}  # Keras scale/center=False
            plans.append(_Plan(name, "BatchNormalization", spec, weights, {w: targets[w] for w in weights},
                               optional=optional))
    return plans


def _to_keras(weight: torch.Tensor, plan: _Plan, keras_weight: str, chw: tuple[int, int, int] | None,
              in_shape: tuple[int, ...]) -> np.ndarray:
    """A torch parameter in Keras' layout (the inverse of the import transforms)."""
    spec = plan.spec
    if isinstance(spec, DepthwiseConv2d) and keras_weight == "kernel":
        weight = _depthwise_from_torch(weight, spec.depth_multiplier)  # (C * mult, 1, kh, kw) -> (kh, kw, C, mult)
    elif isinstance(spec, SeparableConv2d) and keras_weight == "depthwise_kernel":
        weight = _depthwise_from_torch(weight, spec.depth_multiplier)
    elif keras_weight in ("kernel", "pointwise_kernel"):
        if plan.keras_class == "Dense" and chw is not None:
            weight = weight[:, _hwc_index(chw)]  # (out, CHW) -> (out, HWC), Keras' Flatten order
        weight = kernel_from_torch(weight)  # (out, in) -> (in, out); OIHW -> HWIO
    elif isinstance(spec, LayerNormalization):
        weight = weight.permute(*_axes_out(spec.axis, in_shape)[1])  # graftnet's axis order -> Keras'
    return weight.detach().cpu().float().contiguous().numpy()  # (np.ascontiguousarray makes 0-d arrays 1-d)


def _axes_out(axis: int | tuple[int, ...] | None, in_shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """graftnet axes (with the batch axis) as Keras axes of channels-last data, and the
    permutation that puts an array over graftnet's (sorted) axes into Keras' (sorted) order."""
    if axis is None:
        return [], []
    rank = len(in_shape) + 1
    axes = sorted({a % rank for a in ((axis,) if isinstance(axis, int) else axis)})
    mapped = [{1: 3, 2: 1, 3: 2}[a] for a in axes] if rank == 4 else axes
    return sorted(mapped), [int(i) for i in np.argsort(mapped)]


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
    in_shapes = _in_shapes(network)
    return {f"{plan.keras_name}/{w}": _to_keras(state[_state_key(plan.keras_name, plan.targets[w])], plan, w,
                                                 orders.get(plan.keras_name), in_shapes[plan.keras_name])
            for plan in _graftnet_plans(network) for w in plan.weights if w not in plan.dropped}


def keras_layout_mapping(network: Network) -> tuple[dict[str, str], dict[str, Transform]]:
    """For arrays keyed as ``keras_layout_arrays`` gives them: ``(rename, transforms)`` for
    ``mapping.load_tensors`` (source key -> state-dict key, source key -> layout conversion)."""
    rename, transforms = {}, {}
    for plan in _graftnet_plans(network):
        for weight in [w for w in plan.weights if w not in plan.dropped]:
            key = f"{plan.keras_name}/{weight}"
            rename[key] = _state_key(plan.keras_name, plan.targets[weight])
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
        by_layer = _legacy_by_path(kfile.legacy, None)
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
            if weight in plan.dropped:
                notes.append(f"{key} left out (graftnet keeps no {weight})")
                continue
            tensors[key], rename[key] = array, _state_key(layer, plan.targets[weight])
            if weight in plan.transforms:
                transforms[key] = plan.transforms[weight]
        for weight in [w for w in plan.weights if w not in named and named and w not in plan.dropped]:
            key, target = f"{layer}/({weight}={plan.optional[weight]:g})", _state_key(layer, plan.targets[weight])
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
                    "softmax": "softmax", "selu": "selu", "gelu": "gelu", "relu6": "relu6", "silu": "silu",
                    "swish": "silu", "hard_sigmoid": "hard_sigmoid", "hard_silu": "hard_silu",
                    "hard_swish": "hard_silu", "softplus": "softplus", "softsign": "softsign", "mish": "mish"}


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


def _export_layer(spec: LayerSpec, frozen: bool, weights: list[np.ndarray],
                  in_shape: tuple[int, ...]) -> list[_KerasLayer]:
    """One graftnet layer as Keras layers: one, or with a ZeroPadding2D before it (pixel
    padding Keras' "same" does not give) or a separate parametrised activation after it."""
    name = spec.name or spec.type
    base = {"name": name, "trainable": not frozen, "dtype": "float32"}
    if isinstance(spec, (Dense, Conv2d, DepthwiseConv2d, SeparableConv2d)):
        act, extra = _activation_out(spec.activation, f"{name}_activation", frozen)
        before: list[_KerasLayer] = []
        if isinstance(spec, Dense):
            layer = _KerasLayer("Dense", {**base, "units": spec.units, "activation": act, "use_bias": spec.bias,
                                          **_kernel_options(spec, 0)}, weights)
        else:
            padding, padding_layer = _padding_out(spec, in_shape, f"{name}_padding", frozen)
            layer = _KerasLayer(_CONV_CLASSES[type(spec)], {**base, **_conv_config(spec, padding, act)}, weights)
            if padding_layer is not None:
                before = [padding_layer]
                layer.input_shape = _keras_shape(ZeroPadding2D(padding_layer.config["padding"]).output_shape(in_shape))
        return before + [layer] + ([extra] if extra is not None else [])
    if isinstance(spec, (MaxPool, AvgPool)):
        if spec.padding not in ("valid", "same") and _pair2(spec.padding) != (0, 0):
            raise ImportFormatError(f"layer {name!r}: pooling with padding={spec.padding} pixels has no Keras "
                                    f"equivalent ('valid' or 'same' only)")
        pool = list(_pair2(spec.pool_size))
        return [_KerasLayer("MaxPooling2D" if isinstance(spec, MaxPool) else "AveragePooling2D",
                            {**base, "pool_size": pool, "strides": list(_pair2(spec.stride or spec.pool_size)),
                             "padding": "same" if spec.padding == "same" else "valid",
                             "data_format": "channels_last"})]
    if isinstance(spec, GlobalAvgPool):  # GlobalMaxPool too
        cls = "GlobalMaxPooling2D" if isinstance(spec, GlobalMaxPool) else "GlobalAveragePooling2D"
        return [_KerasLayer(cls, {**base, "data_format": "channels_last", "keepdims": spec.keepdims})]
    if isinstance(spec, Flatten):
        return [_KerasLayer("Flatten", {**base, "data_format": "channels_last"})]
    if isinstance(spec, ZeroPadding2D):
        return [_KerasLayer("ZeroPadding2D", {**base, "padding": [list(p) for p in spec.padding],
                                              "data_format": "channels_last"})]
    if isinstance(spec, Cropping2D):
        return [_KerasLayer("Cropping2D", {**base, "cropping": [list(p) for p in spec.cropping],
                                           "data_format": "channels_last"})]
    if isinstance(spec, Reshape):
        return [_export_reshape(spec, base, in_shape)]
    if isinstance(spec, BatchNorm):
        return [_export_batchnorm(spec, base, weights)]
    if isinstance(spec, LayerNormalization):
        return [_KerasLayer("LayerNormalization", {**base, "axis": _axes_out(spec.axis, in_shape)[0],
                                                   "epsilon": spec.epsilon, "center": spec.center,
                                                   "scale": spec.scale, "rms_scaling": False}, weights)]
    if isinstance(spec, Normalization):  # the statistics go into the config, as Normalization(mean=...)
        mean, variance = weights if weights else (np.asarray(spec.mean), np.asarray(spec.variance))
        return [_KerasLayer("Normalization", {
            **base, "axis": None if spec.axis is None else _axes_out(spec.axis, in_shape)[0], "invert": False,
            "mean": mean.tolist(), "variance": variance.tolist()})]
    if isinstance(spec, Dropout):  # AlphaDropout too
        return [_KerasLayer("AlphaDropout" if isinstance(spec, AlphaDropout) else "Dropout",
                            {**base, "rate": spec.rate, "seed": None, "noise_shape": None})]
    if isinstance(spec, Activation):
        act, extra = _activation_out(spec.activation, name, frozen)
        return [extra] if extra is not None else [_KerasLayer("Activation", {**base, "activation": act})]
    if isinstance(spec, ReLU):
        return [_KerasLayer("ReLU", {**base, "max_value": spec.max_value, "negative_slope": spec.negative_slope,
                                     "threshold": spec.threshold})]
    if isinstance(spec, Rescaling):
        return [_KerasLayer("Rescaling", {**base, "scale": _keras_values(spec.scale),
                                          "offset": _keras_values(spec.offset)})]
    raise ImportFormatError(f"layer {name!r} ({spec.type}) has no Keras export")


_CONV_CLASSES = {Conv2d: "Conv2D", DepthwiseConv2d: "DepthwiseConv2D", SeparableConv2d: "SeparableConv2D"}


def _conv_config(spec: Conv2d | DepthwiseConv2d | SeparableConv2d, padding: str, act: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"kernel_size": list(_pair2(spec.kernel_size)), "strides": list(_pair2(spec.stride)),
                           "padding": padding, "data_format": "channels_last",
                           "dilation_rate": list(_pair2(spec.dilation)), "activation": act, "use_bias": spec.bias}
    if isinstance(spec, Conv2d):
        return {**cfg, "filters": spec.filters, "groups": 1, **_kernel_options(spec, [0, 1, 2])}
    if isinstance(spec, DepthwiseConv2d):
        options = {key.replace("kernel", "depthwise"): value for key, value in _kernel_options(spec, [0, 1, 2]).items()}
        return {**cfg, "depth_multiplier": spec.depth_multiplier, **options}
    init = _keras_object("keras.initializers", _INITIALIZER_CLASSES.get(spec.init, "GlorotUniform"), {"seed": None})
    return {**cfg, "filters": spec.filters, "depth_multiplier": spec.depth_multiplier,
            "depthwise_initializer": init, "pointwise_initializer": init,
            "bias_initializer": _keras_object("keras.initializers", "Zeros", {})}


def _keras_values(value: float | tuple[float, ...]) -> float | list[float]:
    return float(value) if isinstance(value, (int, float)) else [float(v) for v in value]


def _export_reshape(spec: Reshape, base: dict[str, Any], in_shape: tuple[int, ...]) -> _KerasLayer:
    out_shape = spec.output_shape(in_shape)
    if not spec.channels_last and not _reshape_orders_agree(in_shape, out_shape):
        raise ImportFormatError(f"layer {spec.name!r}: a reshape of {in_shape} to {out_shape} in graftnet's "
                                f"(C, H, W) order has no Keras equivalent on channels-last data; use "
                                f"Reshape(..., channels_last=True)")
    target = [out_shape[1], out_shape[2], out_shape[0]] if len(out_shape) == 3 else list(out_shape)
    return _KerasLayer("Reshape", {**base, "target_shape": target})


def _pair2(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _padding_out(spec: Conv2d | DepthwiseConv2d | SeparableConv2d, in_shape: tuple[int, ...], name: str,
                 frozen: bool) -> tuple[str, _KerasLayer | None]:
    """Keras' padding for a convolution, plus a ZeroPadding2D before it where "same" is not it."""
    if spec.padding in ("valid", "same"):
        return str(spec.padding), None
    ph, pw = _pair2(spec.padding)
    if (ph, pw) == (0, 0):
        return "valid", None
    if (ph, ph, pw, pw) == tf_same_padding((in_shape[1], in_shape[2]), spec.kernel_size, spec.stride,
                                           spec.dilation):
        return "same", None
    padding = _KerasLayer("ZeroPadding2D", {"name": name, "trainable": not frozen, "dtype": "float32",
                                            "padding": [[ph, ph], [pw, pw]], "data_format": "channels_last"})
    padding.input_shape = _keras_shape(in_shape)
    return "valid", padding


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
    weight_names = {plan.keras_name: [w for w in plan.weights if w not in plan.dropped]
                    for plan in _graftnet_plans(network)}
    shapes = [network.input_shape, *network.shapes]
    frozen = set(network.frozen)
    layers = []
    for i, (name, spec) in enumerate(zip(network.layer_names, network.specs)):
        weights = [arrays[f"{name}/{w}"] for w in weight_names.get(name, [])]
        for layer in _export_layer(spec, name in frozen, weights, shapes[i]):
            if layer.input_shape is None:  # a split-off activation runs on the layer's output
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
            for i, array in enumerate([] if layer.class_name == "Normalization" else layer.weights):
                group.create_dataset(str(i), data=array.astype(np.float32))
    return buffer.getvalue()


# ------------------------------------------------------------------ graphs: a functional model
_Tensor = tuple[str, list[int]]  # a Keras tensor: the name of the layer that makes it, its shape (Keras order)


@dataclass
class _KerasModel:
    """A functional Keras model to write: the whole network, or one nested block of it."""

    name: str
    input_name: str
    input_shape: list[int]
    items: list[Any]  # (_KerasLayer, inbound tensors) or (_KerasModel, inbound tensors), in model.layers order
    output: str
    trainable: bool


def _merge_out(spec: MergeSpec, name: str, frozen: bool, in_shapes: list[tuple[int, ...]]) -> _KerasLayer:
    base = {"name": name, "trainable": not frozen, "dtype": "float32"}
    cls = {Add: "Add", Subtract: "Subtract", Multiply: "Multiply", Average: "Average", Maximum: "Maximum",
           Minimum: "Minimum", Concatenate: "Concatenate"}.get(type(spec))  # type: ignore[call-overload]
    if cls is None:
        raise ImportFormatError(f"layer {spec.name!r} ({spec.type}) has no Keras export")
    if isinstance(spec, Concatenate):
        rank = len(in_shapes[0]) + 1
        axis = spec.axis % rank
        base["axis"] = {1: -1, 2: 1, 3: 2}[axis] if rank == 4 else axis  # graftnet (N, C, H, W) -> Keras (N, H, W, C)
    return _KerasLayer(cls, base)


def _model_members(network: Network) -> dict[str, list[str]]:
    """For the network ('') and each block: its layers and directly nested blocks, in order."""
    members: dict[str, list[str]] = {"": [], **{b: [] for b in network.blocks}}
    for name in network.layer_names:
        parts = name.split("/")
        for k in range(len(parts)):
            parent, child = "/".join(parts[:k]), "/".join(parts[:k + 1])
            if not members[parent] or members[parent][-1] != child:
                if child in members[parent]:
                    raise ImportFormatError(f"cannot export to Keras: the layers of block {child!r} are not "
                                            f"contiguous in network {network.name!r}, so it is not one nested model")
                members[parent].append(child)
    return members


def _keras_model(network: Network, path: str, members: dict[str, list[str]], arrays: dict[str, np.ndarray],
                 weight_names: dict[str, list[str]]) -> _KerasModel:
    prefix = path + "/" if path else ""
    inside = set(network.block(path)) if path else set(network.layer_names)
    if path:
        external = sorted({s for n in inside for s in network.inputs_of(n) if s not in inside})
        outputs = [n for n in network.block(path)
                   if n == network.output_name or any(r not in inside for r in network.readers_of(n))]
        if len(external) != 1 or len(outputs) != 1:
            raise ImportFormatError(f"cannot export to Keras: block {path!r} reads {format_names(external)} and "
                                    f"is read at {format_names(outputs)}; a nested Keras model has one input and "
                                    f"one output")
        leaf = path.rsplit("/", 1)[-1]
        input_name = network.block_inputs.get(path) or f"{leaf}_input"
        input_shape, output = _keras_shape(network.shape_of(external[0])), outputs[0]
    else:
        leaf, input_name = network.name, network.input_name
        input_shape, output = _keras_shape(network.input_shape), network.output_name
    frozen = set(network.frozen)
    made: dict[str, _Tensor] = {}  # graftnet path -> the Keras tensor holding its output in this model

    def tensor(src: str) -> _Tensor:
        if src not in inside:
            return (input_name, input_shape)
        rel = src[len(prefix):]
        if "/" in rel:  # the output of a nested block: the nested model's name
            return (rel.split("/", 1)[0], _keras_shape(network.shape_of(src)))
        return made[src]

    items: list[Any] = []
    for member in members[path]:
        if member in members:  # a nested block
            sub = _keras_model(network, member, members, arrays, weight_names)
            sub_layers = set(network.block(member))
            reads = sorted({s for n in sub_layers for s in network.inputs_of(n) if s not in sub_layers})
            items.append((sub, [tensor(reads[0])]))  # (_keras_model checked that there is one)
            continue
        spec, name = copy.copy(network.spec_of(member)), member[len(prefix):]
        spec.name = name
        sources = network.inputs_of(member)
        in_shapes = [network.shape_of(s) for s in sources]
        inbound = [tensor(s) for s in sources]
        out_shape = _keras_shape(network.shape_of(member))
        if spec.merges:
            layer = _merge_out(spec, name, member in frozen, in_shapes)  # type: ignore[arg-type]
            layer.input_shape = [_keras_shape(s) for s in in_shapes]  # type: ignore[assignment]
            items.append((layer, inbound))
            made[member] = (name, out_shape)
            continue
        weights = [arrays[f"{member}/{w}"] for w in weight_names.get(member, [])]
        layers = _export_layer(spec, member in frozen, weights, in_shapes[0])
        for k, layer in enumerate(layers):
            if layer.input_shape is None:  # a split-off activation runs on the layer's output
                layer.input_shape = _keras_shape(in_shapes[0]) if layer.config["name"] == name else out_shape
            items.append((layer, inbound))
            following = layers[k + 1].input_shape if k + 1 < len(layers) else None
            inbound = [(layer.config["name"], following if following is not None else out_shape)]
        made[member] = inbound[0]
    names = [input_name] + [item.name if isinstance(item, _KerasModel) else item.config["name"] for item, _ in items]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ImportFormatError(f"cannot export to Keras: layer name(s) {', '.join(clash)} would repeat in "
                                f"{'block ' + repr(path) if path else 'the model'} (an activation split into its own "
                                f"layer takes the name <layer>_activation, a padding <layer>_padding)")
    trainable = not path or not inside <= frozen
    return _KerasModel(leaf, input_name, input_shape, items, tensor(output)[0], trainable)


def _keras_tensor(t: _Tensor) -> dict[str, Any]:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [None, *t[1]], "dtype": "float32", "keras_history": [t[0], 0, 0]}}


def _functional_config(model: _KerasModel) -> dict[str, Any]:
    layers = [{**_keras_object("keras.layers", "InputLayer", {
        "batch_shape": [None, *model.input_shape], "dtype": "float32", "sparse": False, "name": model.input_name}),
        "name": model.input_name, "inbound_nodes": []}]
    for item, inbound in model.items:
        if isinstance(item, _KerasModel):
            entry = _functional_config(item)
            args: list[Any] = [_keras_tensor(inbound[0])]
        else:
            entry = _keras_object("keras.layers", item.class_name, item.config)
            merge = item.class_name in _MERGES
            entry["build_config"] = {"input_shape": [[None, *s] for s in item.input_shape] if merge  # type: ignore[union-attr]
                                     else [None, *(item.input_shape or [])]}
            args = [[_keras_tensor(t) for t in inbound]] if merge else [_keras_tensor(inbound[0])]
        entry["name"] = item.name if isinstance(item, _KerasModel) else item.config["name"]
        entry["inbound_nodes"] = [{"args": args, "kwargs": {}}]
        layers.append(entry)
    out = _keras_object("keras.src.models.functional", "Functional", {
        "name": model.name, "trainable": model.trainable, "layers": layers,
        "input_layers": [model.input_name, 0, 0], "output_layers": [model.output, 0, 0]})
    out["registered_name"] = "Functional"
    return out


def _functional_weights(network: Network, model: _KerasModel) -> bytes:
    """model.weights.h5 of a functional model: layers/<snake class>[_k]/vars/<i> over model.layers
    (its InputLayer first), a nested model's under layers/functional[_k]/layers/..."""
    buffer = io.BytesIO()

    def write(h5: h5py.File, where: str, km: _KerasModel) -> None:
        entries: list[Any] = [None] + [item for item, _ in km.items]
        classes = ["InputLayer"] + ["Functional" if isinstance(i, _KerasModel) else i.class_name for i in entries[1:]]
        for item, path in zip(entries, _v3_paths(classes)):
            full = f"{where}/{path}" if where else path
            group = h5.create_group(full).create_group("vars")
            if item is None:
                group.attrs["name"] = km.input_name
            elif isinstance(item, _KerasModel):
                group.attrs["name"] = item.name
                write(h5, full, item)
            else:
                group.attrs["name"] = item.config["name"]
                for i, array in enumerate([] if item.class_name == "Normalization" else item.weights):
                    group.create_dataset(str(i), data=array.astype(np.float32))

    with h5py.File(buffer, "w") as h5:
        h5.create_group("vars").attrs["name"] = network.name
        write(h5, "", model)
    return buffer.getvalue()


def _export_functional(network: Network) -> tuple[dict[str, Any], bytes]:
    arrays = keras_layout_arrays(network)
    weight_names = {plan.keras_name: [w for w in plan.weights if w not in plan.dropped]
                    for plan in _graftnet_plans(network)}
    model = _keras_model(network, "", _model_members(network), arrays, weight_names)
    config = _functional_config(model)
    config["build_config"] = {"input_shape": [None, *model.input_shape]}
    return config, _functional_weights(network, model)


def save_keras(network: Network, path: str | Path) -> Path:
    """Export ``network`` as a Keras 3 ``.keras`` archive (``keras.models.load_model`` reads it).

    A chain is written as a Sequential, any other graph as a functional model (each layer
    with its inbound node; merge layers as Keras' Add, Concatenate, ...), and each nested
    block as a nested functional model whose layers keep their names without the block's
    path (``vgg16/block1_conv1`` is ``block1_conv1`` inside the Keras model ``vgg16``). Images
    are channels-last: a graftnet input (C, H, W) becomes a Keras input (H, W, C). Frozen layers are saved with ``trainable=False``. An
    activation with a parameter (``leaky_relu(0.1)``, ``elu(0.5)``) inside a Dense or Conv2d
    becomes a separate Keras layer named ``<layer>_activation``. The file is written to a
    temporary name and renamed, so a failed export leaves nothing behind. A path ending in
    ``.h5`` (or ``.hdf5``) is written in Keras 2 / tf.keras HDF5 format instead: see ``save_keras_h5``.

        >>> save_keras(Network.mlp(784, [300, 100], 10), "mlp.keras")
    """
    if not isinstance(network, Network):
        raise TypeError(f"save_keras needs a graftnet Network, got {type(network).__name__}")
    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return save_keras_h5(network, path)
    if network.is_chain and not network.blocks:
        layers = _export_layers(network)
        config, weights = _keras_config(network, layers), _weights_h5(network, layers)
    else:
        config, weights = _export_functional(network)
    metadata = {"keras_version": "3.0.0", "date_saved": _dt.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
                "exported_by": "graftnet"}
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", weights)
    return path


# ================================================================ export: Keras 2 / tf.keras HDF5
H5_KERAS_VERSION = "2.21.0"  # the tf.keras format version written into .h5 files (Keras 2's layout)
_NOT_IN_H5 = {"hard_sigmoid": "Keras 2's hard_sigmoid is 0.2x + 0.5, Keras 3's is relu6(x + 3) / 6",
              "hard_silu": "tf_keras has no hard_silu"}
_NON_TRAINABLE_WEIGHTS = {"moving_mean", "moving_variance"}


def _keras2_object(value: Any) -> Any:
    """A Keras 3 config value in Keras 2's form: ``{"module", "class_name", "config", "registered_name"}``
    objects become ``{"class_name", "config"}``, recursively."""
    if isinstance(value, dict):
        if "module" in value and "class_name" in value and "config" in value:
            return {"class_name": value["class_name"], "config": _keras2_object(value["config"])}
        return {k: _keras2_object(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keras2_object(v) for v in value]
    return value


def _keras2_layer(layer: _KerasLayer) -> dict[str, Any]:
    for key in ("activation",):
        act = layer.config.get(key)
        if act in _NOT_IN_H5:
            raise ImportFormatError(f"layer {layer.config['name']!r}: activation {act!r} cannot be written to .h5 "
                                    f"so that Keras 2 and Keras 3 compute the same ({_NOT_IN_H5[act]}); use .keras")
    config = _keras2_object(layer.config)
    if config.get("rms_scaling") is False:  # a Keras 3 option; tf_keras' LayerNormalization has none
        del config["rms_scaling"]
    return {"class_name": layer.class_name, "config": config}


def _keras2_input(name: str, shape: list[int]) -> dict[str, Any]:
    return {"class_name": "InputLayer", "config": {"batch_input_shape": [None, *shape], "dtype": "float32",
                                                    "sparse": False, "ragged": False, "name": name}}


def _item_name(item: Any) -> str:
    return item.name if isinstance(item, _KerasModel) else item.config["name"]


def _reads_in_order(model: _KerasModel) -> bool:
    """True when each item reads the one before it (the first the input) and the last is the output."""
    previous = model.input_name
    for item, inbound in model.items:
        if [source for source, _ in inbound] != [previous]:
            return False
        previous = _item_name(item)
    return model.output == previous


def _keras2_functional(model: _KerasModel, where: str = "the model") -> dict[str, Any]:
    """A functional model in Keras 2's config: inbound nodes as ``[[[layer, 0, 0, {}], ...]]``."""
    nested = [item.name for item, _ in model.items if isinstance(item, _KerasModel)]
    if nested:
        # tf_keras counts a nested model's call as its node 1 (node 0 is the one it was built
        # with), Keras 3 as node 0: no .h5 config is read the same by both.
        raise ImportFormatError(f"cannot export to .h5: {where} is a graph with nested model(s) "
                                f"{format_names(nested)} inside; Keras 2 and Keras 3 number a nested model's "
                                f"nodes differently in .h5 configs. Save as .keras, or make the nested blocks "
                                f"part of a chain (Sequential([base, Flatten(), Dense(...)]) exports)")
    layers = [{**_keras2_input(model.input_name, model.input_shape), "name": model.input_name, "inbound_nodes": []}]
    for item, inbound in model.items:
        entry = _keras2_layer(item)
        entry["name"] = item.config["name"]
        entry["inbound_nodes"] = [[[source, 0, 0, {}] for source, _ in inbound]]
        layers.append(entry)
    return {"class_name": "Functional", "config": {
        "name": model.name, "trainable": model.trainable, "layers": layers,
        "input_layers": [[model.input_name, 0, 0]], "output_layers": [[model.output, 0, 0]]}}


def _keras2_entry(item: Any) -> dict[str, Any]:
    """A Sequential's entry: a layer, or a nested model (a Sequential if a chain, else functional)."""
    if not isinstance(item, _KerasModel):
        return _keras2_layer(item)
    if _reads_in_order(item):
        return _keras2_sequential(item)
    return _keras2_functional(item, f"block {item.name!r}")


def _keras2_sequential(model: _KerasModel) -> dict[str, Any]:
    return {"class_name": "Sequential", "config": {
        "name": model.name, "trainable": model.trainable,
        "layers": [_keras2_input(model.input_name, model.input_shape)] + [_keras2_entry(i) for i, _ in model.items]}}


def _legacy_weights(item: Any, owner_trainable: bool = True) -> list[tuple[str, np.ndarray, bool]]:
    """(weight name, array, trainable) of a layer or nested model, as Keras 2 names them (``conv1/kernel:0``)."""
    if isinstance(item, _KerasModel):
        return [w for sub, _ in item.items for w in _legacy_weights(sub, owner_trainable and item.trainable)]
    if item.class_name == "Normalization":
        return []  # its statistics are in its config
    name, trainable = item.config["name"], owner_trainable and item.config.get("trainable", True)
    names = _config_weight_names({"class_name": item.class_name, "config": item.config}) or []
    if len(names) != len(item.weights):
        raise ImportFormatError(f"layer {name!r} ({item.class_name}): {len(item.weights)} weights to write, "
                                f"its Keras config implies {len(names)} ({', '.join(names)})")
    return [(f"{name}/{w}:0", a, trainable and w not in _NON_TRAINABLE_WEIGHTS) for w, a in zip(names, item.weights)]


def _write_layer_group(group: h5py.Group, item: Any) -> None:
    # Keras loads a layer's (or nested model's) weights by position in trainable_weights +
    # non_trainable_weights order, so that is the order written.
    weights = _legacy_weights(item)
    ordered = [w for w in weights if w[2]] + [w for w in weights if not w[2]]
    group.attrs["weight_names"] = np.array([n.encode("utf-8") for n, _, _ in ordered], dtype="S")
    for weight_name, array, _ in ordered:
        group.create_dataset(weight_name, data=np.asarray(array, dtype=np.float32))


def save_keras_h5(network: Network, path: str | Path) -> Path:
    """Export ``network`` as a Keras 2 / tf.keras HDF5 model file (``model.save("x.h5")``'s format).

    Both Keras 3's and tf_keras' ``load_model("x.h5")`` open it and compute the same outputs
    as ``network`` (channels-last images, as for ``.keras``). The file holds the model config
    (JSON, attribute ``model_config``) and a ``model_weights`` group with one group per layer
    (``layer_names``, each with its ``weight_names``: ``conv1/kernel:0``, ...), written in the
    trainable-then-non-trainable order Keras loads by. Frozen layers (and blocks) come back
    ``trainable=False``. A chain (blocks included, as ``Sequential([vgg16, Flatten(), Dense(10)])``)
    is a Sequential, a graph a functional model; a graph that has nested blocks is refused,
    as tf_keras and Keras 3 number a nested model's nodes differently in ``.h5`` configs.
    Activations whose meaning differs between Keras 2 and 3 (``hard_sigmoid``) are refused:
    use ``.keras`` for those. Written to a temporary name and renamed, so a failed export
    leaves nothing behind.

        >>> save_keras_h5(Network.mlp(784, [300, 100], 10), "mlp.h5")   # or save_keras(net, "mlp.h5")
    """
    if not isinstance(network, Network):
        raise TypeError(f"save_keras_h5 needs a graftnet Network, got {type(network).__name__}")
    path = Path(path)
    arrays = keras_layout_arrays(network)
    weight_names = {plan.keras_name: [w for w in plan.weights if w not in plan.dropped]
                    for plan in _graftnet_plans(network)}
    model = _keras_model(network, "", _model_members(network), arrays, weight_names)
    items: list[tuple[str, Any]] = [(_item_name(item), item) for item, _ in model.items]
    if _reads_in_order(model):  # Sequential([vgg16, Flatten(), Dense(10)]) included
        config = _keras2_sequential(model)
    else:
        config = _keras2_functional(model)
        items = [(model.input_name, None)] + items  # a functional model lists its InputLayer
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["keras_version"] = H5_KERAS_VERSION
        h5.attrs["backend"] = "tensorflow"
        h5.attrs["model_config"] = json.dumps(config)
        h5.attrs["exported_by"] = "graftnet"
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([name.encode("utf-8") for name, _ in items], dtype="S")
        weights.attrs["backend"] = "tensorflow"
        weights.attrs["keras_version"] = H5_KERAS_VERSION
        for name, item in items:
            group = weights.create_group(name)
            if item is None:
                group.attrs["weight_names"] = np.array([], dtype="S")
            else:
                _write_layer_group(group, item)
    return path
