"""TensorFlow graphs without TensorFlow: meta graphs in, graftnet networks out.

A TF1 ``tf.train.Saver`` writes ``my_model_final.ckpt.meta`` beside the checkpoint: a
``MetaGraphDef`` (protobuf) holding the whole graph, every operation of it by name, as
``tf.train.import_meta_graph`` restores it. This module parses that file by hand (the wire
format is public; no TensorFlow, no protobuf runtime) and rebuilds the network the graph
computes, with the checkpoint's values::

    >>> imported = import_meta_graph("tests/fixtures/tf/meta_ch10/model.ckpt")
    >>> imported.network.layer_names
    ['dnn/hidden1', 'dnn/hidden2', 'dnn/outputs']
    >>> imported.training["optimizer"]
    {'type': 'sgd', 'lr': 0.01, 'momentum': 0.0, 'nesterov': False}

What is mapped (on the path from the input placeholder to the output, at inference, i.e.
with every ``training`` placeholder at its default ``False``):

  - ``MatMul`` + ``BiasAdd``/``Add``/``AddV2`` (``tf.layers.dense``, the book's
    ``neuron_layer``) -> ``Dense``; ``Conv2D`` (+ bias) -> ``Conv2d``; an activation right
    after one becomes its ``activation``;
  - ``Relu``, ``Relu6``, ``Elu``, ``Selu``, ``LeakyRelu`` (and ``maximum(a * z, z)``),
    ``Sigmoid``, ``Tanh``, ``Softmax``, ``Softplus`` -> activations;
  - ``tf.layers.batch_normalization`` in its inference form (``x * gamma * rsqrt(var + eps)
    + (beta - mean * ...)``) and ``FusedBatchNorm*`` -> ``BatchNorm`` with TF's epsilon,
    and momentum from the graph's ``AssignMovingAvg`` (PyTorch's ``1 - momentum``);
  - ``tf.layers.dropout`` (a ``cond`` on ``training``) -> ``Dropout(rate)``;
  - ``MaxPool``/``AvgPool`` -> pooling; ``Reshape``/``tf.layers.flatten`` to (batch, -1)
    -> ``Flatten``, channels-last after convolutions (``Flatten(channels_last=True)``);
    ``Mean`` over H, W -> ``GlobalAvgPool``;
  - ``Identity``, ``StopGradient``, ``Switch``/``Merge`` conds: followed through.

Layer names come from the variable scope of a layer's kernel (``hidden1`` for
``tf.layers.dense(..., name="hidden1")`` even inside ``tf.name_scope("dnn")``, ``dnn/hidden1``
for the book's ``neuron_layer``), else from the op's name scope (``dnn/dropout``, ``Elu``).
Images stay NHWC in the graph; the network takes (C, H, W) inputs, as every graftnet importer.

The training part is recognised and recorded, not run: the loss, the optimizer
(``GradientDescent``, ``Momentum``, ``Adam``, ``RMSProp``, ``Adagrad``) with its learning
rate and settings, which variables it trains, gradient clipping by value
(``clip_by_value``), max-norm assign ops (``tf.assign(w, tf.clip_by_norm(w, t, axes))``),
the global step, UPDATE_OPS and the training op. ``training_setup(net)`` turns that record
into the arguments of ``graftnet.train.fit`` (and installs the max-norm constraints), so
training continues with the graph's own settings.

Every op of the graph is accounted for: ``ImportedGraph.operations()`` lists them in
``get_operations()`` order with the layer each became or why it was ignored. An op on the
inference path that graftnet cannot map is an ``ImportFormatError`` naming the file and
the node.

For SavedModel concrete functions, ``graph_to_network`` takes a ``FunctionDef``'s node list
(``parse_function_library``) and a ``resources`` map from captured resource inputs to
variable names.
"""

from __future__ import annotations

import math
import os
import re
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graftnet.errors import CheckpointError, ConfigError, ImportFormatError, format_names
from graftnet.io.tf_checkpoint import (
    _DTYPES,
    _OTHER_DTYPES,
    _as_bytes,
    _as_int,
    _Corrupt,
    _proto_fields,
    _varint,
)

__all__ = [
    "TFNode",
    "TFFunction",
    "TFMetaGraph",
    "GraphMapping",
    "ImportedGraph",
    "parse_graph_def",
    "parse_function_library",
    "read_meta_graph",
    "graph_to_network",
    "import_meta_graph",
    "training_setup",
    "verify_twin",
    "MAPPED_OPS",
]


# ============================================================================ protobuf
def _text(value: Any, what: str) -> str:
    return _as_bytes(value, what).decode("utf-8", "replace")


def _dtype_name(code: int) -> str:
    code = code - 100 if code > 100 else code  # *_REF dtypes of VariableV2 outputs
    if code in _DTYPES:
        return _DTYPES[code][0]
    return _OTHER_DTYPES.get(code, f"dtype{code}")


def _packed(value: Any, kind: str, what: str) -> list[Any]:
    """Values of a repeated scalar field: packed (bytes) or one unpacked element."""
    if isinstance(value, int):
        if kind == "f":
            return [struct.unpack("<f", value.to_bytes(4, "little"))[0]]
        if kind == "d":
            return [struct.unpack("<d", value.to_bytes(8, "little"))[0]]
        return [value]
    if kind == "f":
        return list(np.frombuffer(value, "<f4").astype(float))
    if kind == "d":
        return list(np.frombuffer(value, "<f8").astype(float))
    out, pos = [], 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(item)
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_shape(buf: bytes, what: str) -> tuple[int | None, ...] | None:
    dims: list[int | None] = []
    for number, value in _proto_fields(buf, what):
        if number == 2:
            size = 0
            for sub, sub_value in _proto_fields(_as_bytes(value, what), what):
                if sub == 1:
                    size = _as_int(sub_value, what, signed=True)
            dims.append(None if size < 0 else size)
        elif number == 3 and _as_int(value, what):
            return None  # unknown rank
    return tuple(dims)


_TENSOR_VALUES = {5: ("f", "float32"), 6: ("d", "float64"), 7: ("i", "int32"), 10: ("i", "int64"),
                  11: ("i", "bool"), 13: ("i", "float16")}


def _parse_tensor(buf: bytes, what: str) -> np.ndarray:
    """A TensorProto as an array (numeric dtypes; strings as an object array of bytes)."""
    dtype, shape, content, values, strings = 1, (), None, [], []
    for number, value in _proto_fields(buf, what):
        if number == 1:
            dtype = _as_int(value, what)
        elif number == 2:
            shape = _parse_shape(_as_bytes(value, what), what) or ()
        elif number == 4:
            content = _as_bytes(value, what)
        elif number in _TENSOR_VALUES:
            values += _packed(value, _TENSOR_VALUES[number][0], what)
        elif number == 8:
            strings.append(_as_bytes(value, what))
    if any(d is None for d in shape):
        raise _Corrupt(f"{what}: a constant of unknown shape {shape}")
    count = math.prod(shape)  # type: ignore[arg-type]
    if dtype == 7:  # string
        arr = np.empty(count, dtype=object)
        for i in range(count):
            arr[i] = strings[min(i, len(strings) - 1)] if strings else b""
        return arr.reshape(shape)
    if dtype not in _DTYPES:
        return np.zeros(shape, dtype=np.float32)  # resource/variant constants: never on the path
    np_dtype = np.dtype(_DTYPES[dtype][1])
    if content is not None:
        if len(content) != count * np_dtype.itemsize:
            raise _Corrupt(f"{what}: {len(content)} bytes of tensor content for shape {shape}")
        return np.frombuffer(content, np_dtype).reshape(shape).copy()
    if dtype in (3, 5, 6, 9, 4, 17, 22, 23):  # int32/int16/int8/int64/uint8/...: varints, signed
        values = [_signed(v) for v in values]
    if dtype == 19:  # half_val holds the float16 bits
        flat = np.array(values, dtype=np.uint16).view(np.float16)
    else:
        flat = np.array(values, dtype=np_dtype if dtype != 14 else np.float32)
    if flat.size == 0:
        return np.zeros(shape, dtype=np_dtype)
    if flat.size < count:  # TF stores a splat as its last value
        flat = np.concatenate([flat, np.full(count - flat.size, flat[-1], dtype=flat.dtype)])
    return flat[:count].reshape(shape)


def _parse_attr(buf: bytes, what: str) -> Any:
    for number, value in _proto_fields(buf, what):
        if number == 1:
            return _parse_list(_as_bytes(value, what), what)
        if number == 2:
            raw = _as_bytes(value, what)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw
        if number == 3:
            return _signed(_as_int(value, what))
        if number == 4:
            return _packed(value, "f", what)[0]
        if number == 5:
            return bool(value)
        if number == 6:
            return _dtype_name(_as_int(value, what))
        if number == 7:
            return _parse_shape(_as_bytes(value, what), what)
        if number == 8:
            return _parse_tensor(_as_bytes(value, what), what)
        if number == 10:
            return _name_attr_list(_as_bytes(value, what), what)
        if number == 9:
            return _text(value, what)
    return None


def _parse_list(buf: bytes, what: str) -> list[Any]:
    out: list[Any] = []
    for number, value in _proto_fields(buf, what):
        if number == 2:
            out.append(_text(value, what))
        elif number == 3:
            out += [_signed(v) for v in _packed(value, "i", what)]
        elif number == 4:
            out += _packed(value, "f", what)
        elif number == 5:
            out += [bool(v) for v in _packed(value, "i", what)]
        elif number == 6:
            out += [_dtype_name(v) for v in _packed(value, "i", what)]
        elif number == 7:
            out.append(_parse_shape(_as_bytes(value, what), what))
        elif number == 8:
            out.append(_parse_tensor(_as_bytes(value, what), what))
        elif number == 9:
            out.append(_name_attr_list(_as_bytes(value, what), what))
    return out


def _name_attr_list(buf: bytes, what: str) -> str:
    for number, value in _proto_fields(buf, what):
        if number == 1:
            return _text(value, what)
    return ""


def _attr_map(entries: list[bytes], what: str) -> dict[str, Any]:
    attrs = {}
    for entry in entries:
        key, value = "", b""
        for number, item in _proto_fields(entry, what):
            if number == 1:
                key = _text(item, what)
            elif number == 2:
                value = _as_bytes(item, what)
        attrs[key] = _parse_attr(value, f"{what} attr {key!r}")
    return attrs


@dataclass
class TFNode:
    """One ``NodeDef``: inputs as ``"node:k"`` tensors; control inputs apart, without ``^``."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    control_inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    device: str = ""


def _tensor_name(ref: str) -> str:
    """``"x"`` -> ``"x:0"``; ``"x:1"`` stays."""
    return ref if re.search(r":\d+$", ref) else f"{ref}:0"


def _parse_node(buf: bytes, what: str) -> TFNode:
    name, op, device, inputs, controls, attrs = "", "", "", [], [], []
    for number, value in _proto_fields(buf, what):
        if number == 1:
            name = _text(value, what)
        elif number == 2:
            op = _text(value, what)
        elif number == 3:
            ref = _text(value, what)
            if ref.startswith("^"):
                controls.append(ref[1:])
            else:
                inputs.append(ref)
        elif number == 4:
            device = _text(value, what)
        elif number == 5:
            attrs.append(_as_bytes(value, what))
    if not name or not op:
        raise _Corrupt(f"{what}: a node without a name or an op")
    return TFNode(name, op, inputs, controls, _attr_map(attrs, f"node {name!r}"), device)


def parse_graph_def(data: bytes, *, source: str = "GraphDef") -> list[TFNode]:
    """The nodes of a serialized ``GraphDef``, in file order (``get_operations()`` order).

    Raises ImportFormatError naming ``source`` for malformed bytes.
    """
    try:
        return _graph_nodes(data)[0]
    except _Corrupt as err:
        raise ImportFormatError(f"{source}: not a readable TensorFlow GraphDef ({err})") from None


def _graph_nodes(data: bytes) -> tuple[list[TFNode], bytes | None]:
    nodes, library = [], None
    for number, value in _proto_fields(data, "GraphDef"):
        if number == 1:
            nodes.append(_parse_node(_as_bytes(value, "GraphDef"), f"node {len(nodes)}"))
        elif number == 2:
            library = _as_bytes(value, "GraphDef")
    for node in nodes:
        node.inputs = [_tensor_name(i) for i in node.inputs]
    return nodes, library


@dataclass
class TFFunction:
    """One ``FunctionDef`` of a graph's library (tf.function bodies, SavedModel functions)."""

    name: str
    input_args: list[tuple[str, str]]  # (name, dtype)
    output_args: list[tuple[str, str]]
    nodes: list[TFNode]
    ret: dict[str, str]  # output arg -> tensor ("node:k")


# The output args of multi-output ops, to turn a FunctionDef's "node:arg:k" into "node:k".
_OUTPUT_ARGS = {
    "FusedBatchNorm": ["y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2"],
    "FusedBatchNormV2": ["y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2"],
    "FusedBatchNormV3": ["y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2",
                         "reserve_space_3"],
    "Switch": ["output_false", "output_true"],
    "Merge": ["output", "value_index"],
}


def _parse_arg(buf: bytes, what: str) -> tuple[str, str]:
    name, dtype = "", "?"
    for number, value in _proto_fields(buf, what):
        if number == 1:
            name = _text(value, what)
        elif number == 3:
            dtype = _dtype_name(_as_int(value, what))
    return name, dtype


def _parse_function(buf: bytes, what: str) -> TFFunction:
    name, inputs, outputs, nodes, ret = "", [], [], [], {}
    for number, value in _proto_fields(buf, what):
        if number == 1:  # OpDef signature
            for sub, item in _proto_fields(_as_bytes(value, what), what):
                if sub == 1:
                    name = _text(item, what)
                elif sub == 2:
                    inputs.append(_parse_arg(_as_bytes(item, what), what))
                elif sub == 3:
                    outputs.append(_parse_arg(_as_bytes(item, what), what))
        elif number == 3:
            nodes.append(_parse_node(_as_bytes(value, what), f"{what} node {len(nodes)}"))
        elif number == 4:
            fields = dict(_proto_fields(_as_bytes(value, what), what))
            ret[_text(fields.get(1, b""), what)] = _text(fields.get(2, b""), what)
    ops = {n.name: n.op for n in nodes}

    def normal(ref: str) -> str:
        parts = ref.split(":")
        if len(parts) == 1:
            return f"{ref}:0"  # a function argument
        if len(parts) == 2:
            return ref
        node, arg, k = parts[0], parts[1], int(parts[2])
        names = _OUTPUT_ARGS.get(ops.get(node, ""))
        return f"{node}:{names.index(arg) + k if names and arg in names else k}"

    for node in nodes:
        node.inputs = [normal(i) for i in node.inputs]
    return TFFunction(name, inputs, outputs, nodes, {k: normal(v) for k, v in ret.items()})


def parse_function_library(data: bytes, *, source: str = "FunctionDefLibrary") -> dict[str, TFFunction]:
    """The functions of a serialized ``FunctionDefLibrary`` by name; node inputs normalised to
    ``"node:k"`` (a function argument ``x`` is ``"x:0"``)."""
    try:
        functions = {}
        for number, value in _proto_fields(data, "FunctionDefLibrary"):
            if number == 1:
                function = _parse_function(_as_bytes(value, "FunctionDefLibrary"), f"function {len(functions)}")
                functions[function.name] = function
        return functions
    except (_Corrupt, ValueError) as err:
        raise ImportFormatError(f"{source}: not a readable TensorFlow function library ({err})") from None


@dataclass
class TFMetaGraph:
    """What a ``.meta`` file holds that graftnet uses."""

    path: Path
    nodes: list[TFNode]
    collections: dict[str, list[Any]]
    tf_version: str = ""
    library: dict[str, TFFunction] = field(default_factory=dict)

    def node(self, name: str) -> TFNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _parse_collection(buf: bytes, what: str) -> list[Any]:
    for number, value in _proto_fields(buf, what):
        inner = _as_bytes(value, what)
        items: list[Any] = []
        for sub, item in _proto_fields(inner, what):
            if sub != 1:
                continue
            if number == 1:  # NodeList
                items.append(_text(item, what))
            elif number == 2:  # BytesList (serialized VariableDef, ...)
                items.append(_as_bytes(item, what))
            elif number == 3:
                items += [_signed(v) for v in _packed(item, "i", what)]
            elif number == 4:
                items += _packed(item, "f", what)
        return items
    return []


_VARIABLE_COLLECTIONS = {"variables", "trainable_variables", "global_step", "local_variables", "model_variables",
                         "moving_average_variables"}


def _variable_def_name(buf: bytes, what: str) -> str:
    """``VariableDef.variable_name`` (field 1) without its ``:0``."""
    for number, value in _proto_fields(buf, what):
        if number == 1:
            return _text(value, what).rsplit(":", 1)[0]
    return ""


def read_meta_graph(path: str | os.PathLike[str]) -> TFMetaGraph:
    """Parse a ``.meta`` file (a serialized ``MetaGraphDef``).

    ``path`` is the ``.meta`` file or the checkpoint prefix beside it. Raises
    ImportFormatError naming the file when it is missing, truncated or not a meta graph.
    """
    meta = _meta_path(Path(path))
    data = meta.read_bytes()
    graph, collections, version, library = None, {}, "", {}
    try:
        for number, value in _proto_fields(data, "MetaGraphDef"):
            if number == 1:
                for sub, item in _proto_fields(_as_bytes(value, "meta_info_def"), "meta_info_def"):
                    if sub == 5:
                        version = _text(item, "meta_info_def")
            elif number == 2:
                graph = _as_bytes(value, "graph_def")
            elif number == 4:
                fields = dict(_proto_fields(_as_bytes(value, "collection_def"), "collection_def"))
                key = _text(fields.get(1, b""), "collection_def")
                items = _parse_collection(_as_bytes(fields.get(2, b""), key), f"collection {key!r}")
                if key in _VARIABLE_COLLECTIONS:  # serialized VariableDefs: keep the variables' names
                    items = [_variable_def_name(i, key) if isinstance(i, bytes) else i for i in items]
                collections[key] = items
        if graph is None:
            raise _Corrupt("it has no graph_def")
        nodes, lib = _graph_nodes(graph)
        if lib:
            library = parse_function_library(lib, source=str(meta))
    except _Corrupt as err:
        raise ImportFormatError(f"{meta}: not a readable TensorFlow meta graph (a MetaGraphDef, as "
                                f"tf.train.Saver writes to .meta files): {err}; the file is truncated, corrupt "
                                f"or of another kind") from None
    if not nodes:
        raise ImportFormatError(f"{meta}: the meta graph holds no operations")
    return TFMetaGraph(meta, nodes, collections, version, library)


def _meta_path(path: Path) -> Path:
    if path.suffix == ".meta":
        candidates = [path]
    elif path.is_dir():
        candidates = sorted(path.glob("*.meta"))
        if len(candidates) > 1:
            raise ImportFormatError(f"{path} holds several .meta files ({format_names([c.name for c in candidates])}); "
                                    f"name one")
    else:
        stem = re.sub(r"\.(index|data-\d{5}-of-\d{5})$", "", str(path))
        candidates = [Path(f"{stem}.meta")]
    if not candidates or not candidates[0].is_file():
        where = candidates[0] if candidates else path / "*.meta"
        raise ImportFormatError(f"no TensorFlow meta graph at {where}: tf.train.Saver().save writes "
                                f"'<prefix>.meta' beside '<prefix>.index' (unless write_meta_graph=False)")
    return candidates[0]


# ============================================================================ mapping
ACTIVATION_OPS = {"Relu": "relu", "Relu6": "relu6", "Elu": "elu", "Selu": "selu", "Sigmoid": "sigmoid",
                  "Tanh": "tanh", "Softmax": "softmax", "Softplus": "softplus", "Softsign": "softsign"}
_PASS = {"Identity", "StopGradient", "PreventGradient", "Snapshot", "IdentityN", "CheckNumerics",
         "EnsureShape"}
_FOLDABLE = {"Add", "AddV2", "Sub", "Mul", "RealDiv", "Rsqrt", "Sqrt", "Neg", "Maximum", "Minimum", "Cast",
             "Pack", "StridedSlice", "Prod", "ConcatV2", "Reshape", "Square"}
MAPPED_OPS = sorted({"MatMul", "BiasAdd", "Add", "AddV2", "Conv2D", "MaxPool", "AvgPool", "Reshape", "Mean",
                     "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "LeakyRelu", "Switch", "Merge",
                     "Mul", "Sub", "Maximum", *ACTIVATION_OPS, *_PASS})
_VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp"}
_OPTIMIZERS = {  # Apply op -> (optimizer name, input positions of its settings)
    "ApplyGradientDescent": ("sgd", {"lr": 1}),
    "ApplyMomentum": ("momentum", {"lr": 2, "momentum": 4}),
    "ApplyAdam": ("adam", {"lr": 5, "beta1": 6, "beta2": 7, "epsilon": 8}),
    "ApplyRMSProp": ("rmsprop", {"lr": 3, "rho": 4, "momentum": 5, "epsilon": 6}),
    "ApplyAdagrad": ("adagrad", {"lr": 2}),
}
_OPTIMIZERS.update({f"Resource{k}": v for k, v in list(_OPTIMIZERS.items())})
_OPT_GRAD = {"ApplyGradientDescent": 2, "ApplyMomentum": 3, "ApplyAdam": 9, "ApplyRMSProp": 7, "ApplyAdagrad": 3}
_OPT_GRAD.update({f"Resource{k}": v for k, v in list(_OPT_GRAD.items())})
_LOSSES = {"SparseSoftmaxCrossEntropyWithLogits": "sparse_softmax_cross_entropy",
           "SoftmaxCrossEntropyWithLogits": "softmax_cross_entropy"}


class _Dead:
    """The untaken side of a ``Switch`` (TF's dead tensor)."""


DEAD = _Dead()


@dataclass
class _Param:
    """A value computed from variables and constants only (no activation): BN's folded scale."""

    expr: Any  # ("var", name) | ("const", array) | (op, *args)
    ops: list[str] = field(default_factory=list)


@dataclass
class _Act:
    """An activation: the output of graftnet layer ``layer`` (``"input"`` for the input).
    ``shape`` is TF's, without the batch axis (NHWC for images)."""

    layer: str
    shape: tuple[int, ...]


@dataclass
class _Pending:
    """A layer under construction: MatMul/Conv2D waiting for its bias and activation, or
    a per-feature affine (BatchNorm's inference form) waiting for its shift."""

    kind: str  # "dense" | "conv" | "affine"
    source: _Act
    ops: list[str]
    params: dict[str, Any]
    done: _Act | None = None
    folded: bool = False  # an activation became part of the layer
    out_op: str = ""  # the op whose output is the layer's output (before a folded activation)


class _Unmappable(Exception):
    def __init__(self, node: TFNode, why: str) -> None:
        super().__init__(why)
        self.node, self.why = node, why


@dataclass
class GraphMapping:
    """What ``graph_to_network`` built and how each op was used."""

    network: Any  # graftnet.network.Network
    layer_ops: dict[str, list[str]]
    ignored: dict[str, str]
    tensors: dict[str, str]
    variables: dict[str, str]  # variable -> state-dict key ("hidden1/kernel" -> "hidden1.weight")
    variable_layers: dict[str, str]  # variable -> layer
    layout: dict[str, dict[str, Any]]
    input_tensor: str
    output_tensor: str
    training: dict[str, Any] | None = None
    loaded: bool = False

    def op_rows(self, nodes: Sequence[TFNode]) -> list[dict[str, str]]:
        """One row per op in graph order: name, type, and the layer it became or why it was ignored."""
        owner = {op: layer for layer, ops in self.layer_ops.items() for op in ops}
        rows = []
        for node in nodes:
            if node.name in owner:
                rows.append({"name": node.name, "type": node.op, "layer": owner[node.name], "ignored": ""})
            else:
                rows.append({"name": node.name, "type": node.op, "layer": "",
                             "ignored": self.ignored.get(node.name, "not on the path to the output")})
        return rows


def _scope(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


_NAME_PART = re.compile(r"[^A-Za-z0-9_\-]")


def _op_layer_name(node: TFNode) -> str:
    """A parameter-free layer's name: the tf.layers scope of ``pool1/AvgPool`` (``pool1``), else the op's name."""
    scope, _, last = node.name.rpartition("/")
    if scope and re.fullmatch(rf"{re.escape(node.op)}(_\d+)?", last):
        return scope
    return node.name


def _layer_name(raw: str) -> str:
    parts = [p for p in raw.split("/") if p]
    parts = [_NAME_PART.sub("_", p) if p[0] not in "-" else "_" + _NAME_PART.sub("_", p[1:]) for p in parts]
    return "/".join(parts) or "layer"


class _Mapper:
    def __init__(self, nodes: Sequence[TFNode], variables: Mapping[str, Any], resources: Mapping[str, str],
                 source: str) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.order = [n.name for n in nodes]
        self.variables = variables
        self.resources = {_tensor_name(k): v for k, v in resources.items()}
        self.source = source
        self.memo: dict[str, Any] = {}
        self.specs: list[Any] = []
        self.inputs_of: dict[str, str] = {}
        self.layer_ops: dict[str, list[str]] = {}
        self.tensors: dict[str, str] = {}
        self.var_keys: dict[str, str] = {}
        self.var_layers: dict[str, str] = {}
        self.layout: dict[str, dict[str, Any]] = {}
        self.values: dict[str, np.ndarray] = {}  # state-dict key -> array in torch layout
        self.names: set[str] = set()
        self.input_tensor = ""
        self.input_layer = "input"
        self.consumers: dict[str, list[str]] = {}
        for n in nodes:
            for t in n.inputs:
                self.consumers.setdefault(t, []).append(n.name)

    # ------------------------------------------------------------------ helpers
    def node_of(self, tensor: str) -> TFNode:
        name = tensor.rsplit(":", 1)[0]
        if name not in self.nodes:
            raise ImportFormatError(f"{self.source}: the graph reads {tensor!r}, but it has no node {name!r}")
        return self.nodes[name]

    def unique(self, raw: str) -> str:
        name = _layer_name(raw)
        if name not in self.names and name != self.input_layer:
            self.names.add(name)
            return name
        k = 1
        while f"{name}_{k}" in self.names:
            k += 1
        self.names.add(f"{name}_{k}")
        return f"{name}_{k}"

    def const(self, value: Any) -> np.ndarray | None:
        if isinstance(value, _Param) and value.expr[0] == "const":
            return value.expr[1]
        return None

    def var_name(self, value: Any) -> str | None:
        if isinstance(value, _Param) and value.expr[0] == "var":
            return value.expr[1]
        return None

    # ------------------------------------------------------------------ evaluation
    def value(self, tensor: str) -> Any:
        if tensor in self.memo:
            return self.memo[tensor]
        if tensor == self.input_tensor:
            return _Act(self.input_layer, self.input_shape)
        if tensor in self.resources:
            self.memo[tensor] = _Param(("var", self.resources[tensor]), [])
            return self.memo[tensor]
        node = self.node_of(tensor)
        index = int(tensor.rsplit(":", 1)[1])
        try:
            result = self.evaluate(node, index)
        except _Unmappable as err:
            raise ImportFormatError(
                f"{self.source}: op {err.node.name!r} ({err.node.op}) on the path from {self.input_tensor} to the "
                f"output cannot be mapped to a graftnet layer: {err.why}. graftnet maps "
                f"{', '.join(MAPPED_OPS)} (and constants, variables, conds on 'training')") from None
        self.memo[tensor] = result
        return result

    def evaluate(self, node: TFNode, index: int) -> Any:
        op = node.op
        if op == "Const":
            return _Param(("const", np.asarray(node.attrs.get("value"))), [node.name])
        if op in _VARIABLE_OPS:
            name = node.attrs.get("shared_name") or node.name if op == "VarHandleOp" else node.name
            return _Param(("var", name), [node.name])
        if op == "ReadVariableOp":
            inner = self.value(node.inputs[0])
            return self._param_through(inner, node)
        if op == "PlaceholderWithDefault":
            return self._param_through(self.value(node.inputs[0]), node)
        if op == "Placeholder":
            raise _Unmappable(node, f"it is a second input placeholder ({node.name}:0) besides "
                                    f"{self.input_tensor}; graftnet networks have one input")
        if op == "Switch":  # the condition first: the untaken side is not evaluated at all
            pred = self.const(self.value(node.inputs[1]))
            if pred is None:
                raise _Unmappable(node, "its condition is not a constant or a training placeholder with a default")
            if bool(pred) != bool(index):
                return DEAD
            data = self.value(node.inputs[0])
            self.note(data, node)
            return data
        inputs = []
        for t in node.inputs:
            inputs.append(self.value(t))
            if inputs[-1] is DEAD and op != "Merge":
                return DEAD
        if op == "Merge":
            live = [v for v in inputs if v is not DEAD]
            if not live:
                return DEAD
            value = live[0]
            if index == 0:
                return self.merge(node, inputs, value)
            return _Param(("const", np.int32(inputs.index(value))), [])  # value_index
        if all(isinstance(v, _Param) for v in inputs):
            return self.fold(node, inputs)
        if op in _PASS:
            self.note(inputs[0], node)
            return inputs[0]
        return self.layer_op(node, inputs)

    def _param_through(self, inner: Any, node: TFNode) -> Any:
        if isinstance(inner, _Param):
            return _Param(inner.expr, inner.ops + [node.name])
        return inner

    def note(self, value: Any, node: TFNode) -> None:
        """Record that ``node`` passes ``value`` along (it belongs to the same layer)."""
        if isinstance(value, _Act) and value.layer != self.input_layer:
            self.layer_ops[value.layer].append(node.name)
        elif isinstance(value, _Pending):
            value.ops.append(node.name)
        elif isinstance(value, _Param):
            value.ops.append(node.name)

    def fold(self, node: TFNode, inputs: list[_Param]) -> _Param:
        """Constant folding where all inputs are constants; else a symbolic expression."""
        ops = [o for v in inputs for o in v.ops] + [node.name]
        consts = [self.const(v) for v in inputs]
        if all(c is not None for c in consts):
            value = _fold_const(node, consts)  # type: ignore[arg-type]
            if value is not None:
                return _Param(("const", value), ops)
        if node.op in _PASS or node.op == "Cast":  # a cast between float types changes no value graftnet keeps
            return _Param(inputs[0].expr, ops)
        return _Param((node.op, *[v.expr for v in inputs]), ops)

    # ------------------------------------------------------------------ layers
    def act_of(self, value: Any) -> _Act:
        """An activation from a value; a pending layer is finished without an activation."""
        if isinstance(value, _Act):
            return value
        if isinstance(value, _Pending):
            return self.finish(value, None)
        raise AssertionError(value)

    def layer_op(self, node: TFNode, inputs: list[Any]) -> Any:
        op = node.op
        data = [v for v in inputs if not isinstance(v, _Param)]
        params = [v for v in inputs if isinstance(v, _Param)]
        if op == "MatMul":
            if not isinstance(inputs[0], (_Act, _Pending)) or self.var_name(inputs[1]) is None:
                raise _Unmappable(node, "graftnet maps MatMul(activation, kernel variable)")
            if node.attrs.get("transpose_a"):
                raise _Unmappable(node, "transpose_a=True")
            x = self.act_of(inputs[0])
            return _Pending("dense", x, [node.name, *inputs[1].ops],
                            {"kernel": inputs[1].expr[1], "transpose_b": bool(node.attrs.get("transpose_b"))})
        if op == "Conv2D":
            if self.var_name(inputs[1]) is None:
                raise _Unmappable(node, "graftnet maps Conv2D(activation, filter variable)")
            if node.attrs.get("data_format", "NHWC") != "NHWC":
                raise _Unmappable(node, f"data_format {node.attrs.get('data_format')}; graftnet maps NHWC graphs")
            x = self.act_of(inputs[0])
            return _Pending("conv", x, [node.name, *inputs[1].ops], {"kernel": inputs[1].expr[1], "attrs": node.attrs})
        if op in ("BiasAdd", "Add", "AddV2") and len(data) == 1 and len(params) == 1:
            target = data[0]
            if isinstance(target, _Pending) and target.done is None and "bias" not in target.params:
                if target.kind in ("dense", "conv") and self.var_name(params[0]) is not None:
                    target.params["bias"] = params[0].expr[1]
                    target.ops += [node.name, *params[0].ops]
                    target.out_op = node.name
                    return target
                if target.kind == "affine":
                    target.params["shift"] = params[0]
                    target.ops += [node.name, *params[0].ops]
                    target.out_op = node.name
                    return self.finish(target, None)
            raise _Unmappable(node, "an addition of a constant or variable that is not a layer's bias")
        if op in ("Mul",) and len(data) == 1 and len(params) == 1:
            x = self.act_of(data[0])
            return _Pending("affine", x, [node.name, *params[0].ops], {"scale": params[0]})
        if op in ACTIVATION_OPS or op == "LeakyRelu":
            activation = ACTIVATION_OPS.get(op) or f"leaky_relu({float(node.attrs.get('alpha', 0.2)):g})"
            return self.activation(node, data[0], activation)
        if op == "Maximum" and len(data) == 2:
            # the book's leaky_relu: tf.maximum(alpha * z, z)
            for a, b in ((data[0], data[1]), (data[1], data[0])):
                if isinstance(a, _Pending) and a.kind == "affine" and a.done is None and "shift" not in a.params:
                    alpha = self.const(a.params["scale"])
                    z = self.act_of(b)
                    if alpha is not None and np.ndim(alpha) == 0 and a.source.layer == z.layer:
                        a.done = z  # the scaled copy is part of the activation, not a layer of its own
                        activation = f"leaky_relu({float(alpha):g})"
                        last = self.specs[-1] if self.specs else None
                        if isinstance(b, _Pending) and last is not None and last.name == z.layer \
                                and last.type in ("dense", "conv2d") and last.activation is None:
                            last.activation = activation  # the layer's own activation, as tf.layers.dense's
                            b.folded = True
                            self.layout[z.layer]["activation"] = activation
                            self.tensors = {t: n for t, n in self.tensors.items() if n != z.layer}
                            self.tensors[f"{node.name}:0"] = z.layer
                            self.layer_ops[z.layer] += [node.name] + [o for o in a.ops
                                                                      if o not in self.layer_ops[z.layer]]
                            return z
                        act = self.activation(node, z, activation)
                        self.layer_ops[act.layer] += [o for o in a.ops if o not in self.layer_ops[act.layer]]
                        return act
            raise _Unmappable(node, "a maximum of two activations that is not maximum(alpha * z, z)")
        if op in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"):
            return self.fused_bn(node, inputs)
        if op in ("MaxPool", "AvgPool"):
            return self.pool(node, self.act_of(data[0]))
        if op == "Reshape":
            return self.reshape(node, self.act_of(data[0]), params[0] if params else None)
        if op == "Mean" and len(data) == 1:
            axes = self.const(params[0]) if params else None
            x = self.act_of(data[0])
            if axes is not None and len(x.shape) == 3 and sorted(np.atleast_1d(axes).tolist()) == [1, 2] \
                    and not node.attrs.get("keep_dims"):
                from graftnet.layers import GlobalAvgPool

                return self.add_layer(GlobalAvgPool(name=self.unique(_op_layer_name(node))), x,
                                      [node.name, *params[0].ops],
                                      (x.shape[2],))
            raise _Unmappable(node, "a mean that is not a global average over height and width")
        if len(data) > 1:
            raise _Unmappable(node, "it joins several activations")
        raise _Unmappable(node, "no graftnet layer computes it")

    def merge(self, node: TFNode, inputs: list[Any], value: Any) -> Any:
        """A cond's Merge: the inference branch's value; a dropout cond becomes a Dropout layer."""
        rate = self.dropout_rate(node)
        if rate is None or not isinstance(value, (_Act, _Pending)):
            self.note(value, node)
            return value
        from graftnet.layers import Dropout

        x = self.act_of(value)
        scope = node.name
        for suffix in ("/cond/Merge", "/Merge"):
            if scope.endswith(suffix):
                scope = scope[: -len(suffix)]
                break
        ops = [n for n in self.order if n.startswith(scope + "/") and n not in self.claimed()]
        return self.add_layer(Dropout(rate, name=self.unique(scope)), x, ops, x.shape)

    def claimed(self) -> set[str]:
        return {op for ops in self.layer_ops.values() for op in ops}

    def dropout_rate(self, merge: TFNode) -> float | None:
        """The rate of a dropout cond (the training branch compares a RandomUniform with it)."""
        scope = merge.name.rsplit("/", 1)[0]
        nodes = [self.nodes[n] for n in self.order if n.startswith(scope + "/")]
        if not any(n.op in ("RandomUniform", "StatelessRandomUniformV2") for n in nodes):
            return None
        for n in nodes:
            if n.op == "GreaterEqual":
                threshold = self.nodes.get(n.inputs[1].rsplit(":", 1)[0])
                if threshold is not None and threshold.op == "Const":
                    return float(np.asarray(threshold.attrs["value"]))
        return None

    def activation(self, node: TFNode, x: Any, activation: str) -> _Act:
        if isinstance(x, _Pending) and x.kind in ("dense", "conv") and x.done is None:
            x.ops.append(node.name)
            x.folded = True
            act = self.finish(x, activation)
        else:
            from graftnet.layers import Activation

            source = self.act_of(x)
            act = self.add_layer(Activation(activation, name=self.unique(_op_layer_name(node))), source, [node.name],
                                 source.shape)
            self.layout[act.layer]["activation"] = activation
        self.tensors[f"{node.name}:0"] = act.layer
        return act

    def finish(self, pending: _Pending, activation: str | None) -> _Act:
        if pending.done is not None:
            if pending.folded:
                raise ImportFormatError(f"{self.source}: the output of {pending.ops[0]!r} is read both before and "
                                        f"after its activation; graftnet cannot split a layer so")
            return pending.done
        if pending.kind == "dense":
            act = self.dense(pending, activation)
        elif pending.kind == "conv":
            act = self.conv(pending, activation)
        else:
            act = self.batchnorm(pending)
        pending.done = act
        if not pending.folded:
            self.tensors.setdefault(f"{pending.out_op or pending.ops[0]}:0", act.layer)
        return act

    def var_value(self, name: str, what: str) -> Any:
        if name not in self.variables:
            raise CheckpointError(f"{self.source}: the graph's {what} reads variable {name!r}, which the checkpoint "
                                  f"does not hold; it holds {format_names(list(self.variables))}")
        return self.variables[name]

    def var_shape(self, name: str, what: str) -> tuple[int, ...]:
        value = self.var_value(name, what)
        return tuple(value.shape) if hasattr(value, "shape") else tuple(value)

    def bind(self, layer: str, param: str, var: str, value: np.ndarray | None) -> None:
        key = f"{layer.replace('/', '.')}.{param}"
        self.var_keys[var] = key
        self.var_layers[var] = layer
        if value is not None:
            self.values[key] = value

    def array(self, name: str, what: str) -> np.ndarray | None:
        value = self.var_value(name, what)
        return np.asarray(value) if isinstance(value, np.ndarray) else None

    def dense(self, p: _Pending, activation: str | None) -> _Act:
        from graftnet.layers import Dense

        x = p.source
        if len(x.shape) != 1:
            raise ImportFormatError(f"{self.source}: {p.ops[0]!r} (MatMul) reads a tensor of shape {x.shape}; a "
                                    f"Dense layer needs a flat input")
        kernel = p.params["kernel"]
        shape = self.var_shape(kernel, f"MatMul {p.ops[0]!r}")
        n_in, units = (shape[1], shape[0]) if p.params["transpose_b"] else shape
        if n_in != x.shape[0]:
            raise CheckpointError(f"{self.source}: variable {kernel!r} has shape {shape}, but {p.ops[0]!r} multiplies "
                                  f"it with a tensor of {x.shape[0]} features")
        bias = p.params.get("bias")
        name = self.unique(_scope(kernel) or _scope(p.ops[0]) or p.ops[0])
        act = self.add_layer(Dense(units, activation, bias=bias is not None, name=name), x, p.ops, (units,))
        value = self.array(kernel, "MatMul")
        self.bind(name, "weight", kernel, None if value is None else (value if p.params["transpose_b"] else value.T))
        if bias is not None:
            self._bind_bias(name, bias, units)
        self.layout[name]["activation"] = activation or "linear"
        return act

    def _bind_bias(self, name: str, bias: str, units: int) -> None:
        shape = self.var_shape(bias, "BiasAdd")
        if shape != (units,):
            raise CheckpointError(f"{self.source}: bias {bias!r} has shape {shape}, layer {name!r} has {units} units")
        self.bind(name, "bias", bias, self.array(bias, "BiasAdd"))

    def conv(self, p: _Pending, activation: str | None) -> _Act:
        from graftnet.layers import Conv2d

        x, attrs, kernel = p.source, p.params["attrs"], p.params["kernel"]
        if len(x.shape) != 3:
            raise ImportFormatError(f"{self.source}: {p.ops[0]!r} (Conv2D) reads a tensor of shape {x.shape}, not an "
                                    f"image (height, width, channels)")
        kh, kw, c_in, filters = self.var_shape(kernel, f"Conv2D {p.ops[0]!r}")
        if c_in != x.shape[2]:
            raise CheckpointError(f"{self.source}: filter {kernel!r} has {c_in} input channels, its input has "
                                  f"{x.shape[2]}")
        strides, dilations = attrs.get("strides", [1, 1, 1, 1]), attrs.get("dilations", [1, 1, 1, 1])
        padding = str(attrs.get("padding", "VALID")).lower()
        if padding not in ("same", "valid"):
            raise ImportFormatError(f"{self.source}: {p.ops[0]!r} has padding {attrs.get('padding')}; graftnet "
                                    f"maps SAME and VALID")
        bias = p.params.get("bias")
        name = self.unique(_scope(kernel) or _scope(p.ops[0]))
        spec = Conv2d(filters, (kh, kw), stride=(strides[1], strides[2]), padding=padding, activation=activation,
                      bias=bias is not None, dilation=(dilations[1], dilations[2]), name=name)
        c, h, w = spec.output_shape((x.shape[2], x.shape[0], x.shape[1]))
        act = self.add_layer(spec, x, p.ops, (h, w, c))
        value = self.array(kernel, "Conv2D")
        self.bind(name, "weight", kernel, None if value is None else value.transpose(3, 2, 0, 1))
        if bias is not None:
            self._bind_bias(name, bias, filters)
        self.layout[name]["activation"] = activation or "linear"
        return act

    def batchnorm(self, p: _Pending) -> _Act:
        """``x * scale + shift`` where scale = gamma * rsqrt(var + eps), shift = beta - mean * scale."""
        scale, shift = p.params["scale"].expr, p.params.get("shift")
        found = _match_bn(scale, shift.expr if shift is not None else None)
        if found is None:
            raise ImportFormatError(f"{self.source}: op {p.ops[0]!r} (Mul) scales an activation by variables in a way "
                                    f"that is not batch normalisation's inference form; graftnet cannot map it")
        return self.add_bn(p.source, p.ops, **found)

    def fused_bn(self, node: TFNode, inputs: list[Any]) -> _Act:
        if node.attrs.get("is_training", True):
            raise _Unmappable(node, "a FusedBatchNorm in training mode (is_training=True) on the inference path")
        names = [self.var_name(v) for v in inputs[1:5]]
        if any(n is None for n in names):
            raise _Unmappable(node, "its scale, offset, mean and variance are not variables")
        x = self.act_of(inputs[0])
        ops = [node.name] + [o for v in inputs[1:5] for o in v.ops]
        return self.add_bn(x, ops, gamma=names[0], beta=names[1], mean=names[2], variance=names[3],
                           eps=float(node.attrs.get("epsilon", 1e-3)))

    def add_bn(self, x: _Act, ops: list[str], *, mean: str, variance: str, eps: float, gamma: str | None = None,
               beta: str | None = None) -> _Act:
        from graftnet.layers import BatchNorm

        scope = _scope(mean) or _scope(ops[0])
        momentum = self.bn_momentum(scope, mean)
        features = x.shape[-1]
        name = self.unique(scope)
        affine = gamma is not None and beta is not None
        act = self.add_layer(BatchNorm(momentum=momentum if momentum is not None else 0.01, eps=eps, affine=affine,
                                       name=name), x, ops, x.shape)
        for param, var in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", variance)):
            if var is None:
                continue
            shape = self.var_shape(var, "batch normalisation")
            if shape != (features,):
                raise CheckpointError(f"{self.source}: variable {var!r} has shape {shape}; batch normalisation "
                                      f"{name!r} normalises {features} features")
            self.bind(name, param, var, self.array(var, "batch normalisation"))
        self.layout[name].update(eps=eps, momentum=momentum, tf_momentum=None if momentum is None else 1 - momentum)
        return act

    def bn_momentum(self, scope: str, mean: str) -> float | None:
        """PyTorch's momentum: the ``decay`` (1 - TF momentum) of the moving-average update."""
        for name in self.order:
            if name.startswith(scope + "/") and name.endswith("AssignMovingAvg/decay") \
                    and self.nodes[name].op == "Const":
                return round(float(np.asarray(self.nodes[name].attrs["value"])), 7)
        return None

    def pool(self, node: TFNode, x: _Act) -> _Act:
        from graftnet.layers import AvgPool, MaxPool

        if node.attrs.get("data_format", "NHWC") != "NHWC" or len(x.shape) != 3:
            raise _Unmappable(node, "graftnet maps NHWC pooling of images")
        ksize, strides = node.attrs.get("ksize", [1, 2, 2, 1]), node.attrs.get("strides", [1, 2, 2, 1])
        cls = MaxPool if node.op == "MaxPool" else AvgPool
        spec = cls(pool_size=(ksize[1], ksize[2]), stride=(strides[1], strides[2]),
                   padding=str(node.attrs.get("padding", "VALID")).lower(), name=self.unique(_op_layer_name(node)))
        c, h, w = spec.output_shape((x.shape[2], x.shape[0], x.shape[1]))
        act = self.add_layer(spec, x, [node.name], (h, w, c))
        self.tensors[f"{node.name}:0"] = act.layer
        return act

    def reshape(self, node: TFNode, x: _Act, shape_param: _Param | None) -> _Act:
        from graftnet.layers import Flatten

        target = self.const(shape_param) if shape_param is not None else None
        if target is None or np.ndim(target) != 1:
            raise _Unmappable(node, "its target shape is not a constant")
        target = [int(t) for t in target]
        n = math.prod(x.shape)
        if len(target) == 2 and target[0] < 0 and target[1] in (-1, n):
            ops = [node.name, *shape_param.ops]  # type: ignore[union-attr]
            channels_last = len(x.shape) == 3
            act = self.add_layer(Flatten(channels_last=channels_last, name=self.unique(_op_layer_name(node))), x, ops,
                                 (n,))
            self.layout[act.layer]["channels_last"] = channels_last
            self.tensors[f"{node.name}:0"] = act.layer
            return act
        if target[1:] == list(x.shape):
            self.note(x, node)
            return x
        raise _Unmappable(node, f"a reshape of {tuple(x.shape)} to {tuple(target)} that is not a flatten")

    def add_layer(self, spec: Any, x: _Act, ops: list[str], shape: tuple[int, ...]) -> _Act:
        self.specs.append(spec)
        self.inputs_of[spec.name] = x.layer
        self.layer_ops[spec.name] = list(dict.fromkeys(ops))
        self.layout[spec.name] = {"type": spec.type}
        return _Act(spec.name, tuple(int(s) for s in shape))


def _fold_const(node: TFNode, c: list[np.ndarray]) -> np.ndarray | None:
    op = node.op
    try:
        if op in ("Add", "AddV2"):
            return np.add(c[0], c[1])
        if op == "Sub":
            return np.subtract(c[0], c[1])
        if op == "Mul":
            return np.multiply(c[0], c[1])
        if op == "RealDiv":
            return np.divide(c[0], c[1])
        if op == "Neg":
            return np.negative(c[0])
        if op in _PASS or op in ("PlaceholderWithDefault", "ReadVariableOp"):
            return c[0]
        if op == "Pack":
            return np.stack(c, axis=int(node.attrs.get("axis", 0)))
        if op == "ConcatV2":
            return np.concatenate(c[:-1], axis=int(c[-1]))
        if op == "Cast":
            return c[0]
        if op == "Maximum":
            return np.maximum(c[0], c[1])
        if op == "Minimum":
            return np.minimum(c[0], c[1])
        if op == "Rsqrt":
            return 1 / np.sqrt(c[0])
    except (ValueError, TypeError, IndexError):
        return None
    return None


def _match_bn(scale: Any, shift: Any) -> dict[str, Any] | None:
    """gamma/eps/variance from ``scale`` and beta/mean from ``shift`` (expressions), if it is BN."""

    def rsqrt(expr: Any) -> tuple[str, float] | None:  # Rsqrt(Add(var, eps)) -> (variance, eps)
        if isinstance(expr, tuple) and expr[0] == "Rsqrt" and isinstance(expr[1], tuple) \
                and expr[1][0] in ("Add", "AddV2"):
            a, b = expr[1][1], expr[1][2]
            if a[0] == "var" and b[0] == "const":
                eps = np.asarray(b[1])
                return a[1], float(str(eps.reshape(()))) if eps.dtype == np.float32 else float(eps)
        return None

    gamma = None
    found = rsqrt(scale)
    if found is None and isinstance(scale, tuple) and scale[0] == "Mul":
        for a, b in ((scale[1], scale[2]), (scale[2], scale[1])):
            if rsqrt(a) is not None and b[0] == "var":
                found, gamma = rsqrt(a), b[1]
    if found is None or shift is None:
        return None
    variance, eps = found
    beta, mean_term = None, None
    if shift[0] == "Sub" and shift[1][0] == "var":
        beta, mean_term = shift[1][1], shift[2]
    elif shift[0] == "Neg":
        mean_term = shift[1]
    if not (isinstance(mean_term, tuple) and mean_term[0] == "Mul"):
        return None
    mean = next((t[1] for t in mean_term[1:] if t[0] == "var"), None)
    if mean is None or scale not in mean_term[1:]:
        return None
    return {"gamma": gamma, "beta": beta, "mean": mean, "variance": variance, "eps": eps}


def _is_float_placeholder(node: TFNode) -> bool:
    return node.op == "Placeholder" and node.attrs.get("dtype") in ("float32", "float64", "float16", "bfloat16")


def _ancestors(nodes: Mapping[str, TFNode], tensor: str) -> set[str]:
    seen: set[str] = set()
    stack = [tensor.rsplit(":", 1)[0]]
    while stack:
        name = stack.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        stack += [i.rsplit(":", 1)[0] for i in nodes[name].inputs]
    return seen


def _default_output(nodes: Sequence[TFNode], by_name: Mapping[str, TFNode], source: str) -> str:
    for node in nodes:
        if node.op in _LOSSES:
            return node.inputs[0]  # the logits
    raise ImportFormatError(f"{source}: the graph has no softmax cross-entropy loss that says which tensor is the "
                            f"output; name it (outputs=['dnn/outputs/BiasAdd:0'], or graftnet import --tf-output)")


def _default_input(nodes: Sequence[TFNode], by_name: Mapping[str, TFNode], output: str, source: str) -> str:
    needed = _ancestors(by_name, output)
    found = [n.name for n in nodes if _is_float_placeholder(n) and n.name in needed]
    if len(found) != 1:
        raise ImportFormatError(f"{source}: {len(found)} float placeholders feed {output} "
                                f"({format_names(found) if found else 'none'}); name the input (inputs=['X:0'], or "
                                f"graftnet import --tf-input)")
    return f"{found[0]}:0"


def _input_shape(node: TFNode, source: str) -> tuple[int, ...]:
    shape = node.attrs.get("shape")
    if shape is None or len(shape) < 2 or any(d is None for d in shape[1:]):
        raise ImportFormatError(f"{source}: input placeholder {node.name!r} has shape {shape}; graftnet needs "
                                f"(batch, features) or (batch, height, width, channels) with known sizes")
    return tuple(int(d) for d in shape[1:])  # type: ignore[arg-type]


def graph_to_network(
    nodes: Sequence[TFNode],
    variables: Mapping[str, Any],
    *,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    resources: Mapping[str, str] | None = None,
    name: str = "network",
    source: str = "graph",
    input_shape: Sequence[int] | None = None,
    image_shape: Sequence[int] | None = None,
) -> GraphMapping:
    """Rebuild the network a TensorFlow graph computes from ``inputs`` to ``outputs``.

    Args:
        nodes: the graph's nodes (``parse_graph_def``, ``read_meta_graph(...).nodes``, or a
            ``FunctionDef``'s ``nodes``).
        variables: variable name -> value (``np.ndarray``: loaded into the network) or shape.
        inputs: the input tensor (one), e.g. ``["X:0"]``; default: the float placeholder
            the output depends on.
        outputs: the output tensor (one); default: the logits a softmax cross-entropy reads.
        resources: captured resource tensors of a function -> variable names.
        name / source: the network's name; the file, for messages.
        input_shape: TF's shape of one example (NHWC), where the input node has none
            (a function argument).
        image_shape: (C, H, W) images for a graph whose input is flat (the book's MNIST
            graphs take 784 features): the network starts with ``Flatten(channels_last=True)``
            named ``flatten``, so it takes the images as graftnet's datasets hold them.

    Returns:
        a ``GraphMapping``: the network (with values when ``variables`` held arrays), which
        ops each layer stands for, what was ignored and why, tensor -> layer names.
    """
    from graftnet.network import Network

    by_name = {n.name: n for n in nodes}
    if outputs is not None and len(outputs) != 1:
        raise ConfigError(f"outputs={list(outputs)}: graftnet imports one output tensor")
    if inputs is not None and len(inputs) != 1:
        raise ConfigError(f"inputs={list(inputs)}: graftnet imports one input tensor")
    output = _tensor_name(outputs[0]) if outputs else _default_output(nodes, by_name, source)
    input_tensor = _tensor_name(inputs[0]) if inputs else _default_input(nodes, by_name, output, source)
    mapper = _Mapper(nodes, variables, resources or {}, source)
    mapper.input_tensor = input_tensor
    input_node = by_name.get(input_tensor.rsplit(":", 1)[0])
    if input_shape is not None:
        mapper.input_shape = tuple(int(d) for d in input_shape)
    elif input_node is not None:
        mapper.input_shape = _input_shape(input_node, source)
    else:
        raise ConfigError(f"{source}: no node for input {input_tensor!r}; pass input_shape=")
    mapper.input_layer = "input"
    if output.rsplit(":", 1)[0] not in by_name:
        raise ConfigError(f"{source}: no op {output.rsplit(':', 1)[0]!r} for the output {output!r}")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # the evaluation recurses along the path: deep graphs need room
    try:
        value = mapper.value(output)
    except RecursionError:
        raise ImportFormatError(f"{source}: the path from {input_tensor} to {output} is too deep for graftnet's "
                                f"graph reader") from None
    finally:
        sys.setrecursionlimit(limit)
    if value is DEAD or isinstance(value, _Param):
        raise ImportFormatError(f"{source}: the output {output} does not depend on the input {input_tensor} "
                                f"at inference")
    last = mapper.act_of(value)
    if last.layer == "input":
        raise ImportFormatError(f"{source}: nothing to map between {input_tensor} and {output}")
    mapper.tensors.setdefault(output, last.layer)
    specs = mapper.specs
    if image_shape is not None:
        from graftnet.layers import Flatten

        image_shape = tuple(int(d) for d in image_shape)
        if len(mapper.input_shape) != 1 or math.prod(image_shape) != mapper.input_shape[0]:
            raise ConfigError(f"{source}: image_shape {image_shape} has {math.prod(image_shape)} values, but the "
                              f"graph's input {input_tensor} takes {mapper.input_shape}; image_shape applies to "
                              f"a flat input of the same size")
        flat = Flatten(channels_last=True, name=mapper.unique("flatten"))
        for spec in specs:
            if mapper.inputs_of[spec.name] == "input":
                mapper.inputs_of[spec.name] = flat.name
        specs.insert(0, flat)
        mapper.inputs_of[flat.name] = "input"
        mapper.layer_ops[flat.name] = []
        mapper.layout[flat.name] = {"type": "flatten", "channels_last": True, "added": "image_shape"}
    chain = [s.name for s in specs]
    for i, spec in enumerate(specs):
        wanted = mapper.inputs_of[spec.name]
        before = "input" if i == 0 else chain[i - 1]
        if wanted != before:
            spec.inputs = [wanted]
    shape = mapper.input_shape
    net_input = image_shape or ((shape[2], shape[0], shape[1]) if len(shape) == 3 else shape)
    network = Network(specs, input_shape=net_input, name=name, output=last.layer if last.layer != chain[-1] else None)
    loaded = False
    if mapper.values:
        state = network.state_dict()
        with torch.no_grad():
            for key, array in mapper.values.items():
                if key not in state:
                    raise AssertionError(f"{key} not in the network's state")
                if tuple(state[key].shape) != tuple(array.shape):
                    raise CheckpointError(f"{source}: {key} has shape {tuple(array.shape)}, the layer needs "
                                          f"{tuple(state[key].shape)}")
                state[key].copy_(torch.as_tensor(np.ascontiguousarray(array), dtype=state[key].dtype))
        loaded = len(mapper.values) == len([k for k in state if not k.endswith("num_batches_tracked")])
    claimed = mapper.claimed()
    ignored = {n.name: _why_ignored(n) for n in nodes if n.name not in claimed}
    ignored[input_tensor.rsplit(":", 1)[0]] = "the network's input"
    return GraphMapping(network, mapper.layer_ops, ignored, mapper.tensors, mapper.var_keys, mapper.var_layers,
                        mapper.layout,
                        input_tensor, output, loaded=loaded)


def _why_ignored(node: TFNode) -> str:
    name, op = node.name, node.op
    if op in _VARIABLE_OPS or op in ("VarIsInitializedOp",):
        return "variable (its value is loaded from the checkpoint)"
    if "/Initializer/" in name or name.endswith("/Assign") or name.endswith("/IsInitialized") or name == "init":
        return "variable initializer"
    if name.startswith("save/") or op in ("SaveV2", "RestoreV2"):
        return "saver"
    if name.startswith("gradients") or op.endswith("Grad") or op == "BroadcastGradientArgs":
        return "training: gradient"
    if op in _OPTIMIZERS or "/update_" in name:
        return "training: optimizer update"
    if op in _LOSSES or name.startswith("loss/"):
        return "training: loss"
    if name.startswith("eval/") or op == "InTopKV2":
        return "evaluation"
    if "AssignMovingAvg" in name:
        return "training: batch-norm moving-average update (UPDATE_OPS)"
    if "clip_by_norm" in name or op in ("Assign", "AssignVariableOp") and "Assign" in name:
        return "training: max-norm / assign"
    if "clip_by_value" in name:
        return "training: gradient clipping"
    if op in ("Placeholder", "PlaceholderWithDefault"):
        return "training input (labels, training flag)"
    if name.startswith("train/") or "global_step" in name:
        return "training"
    if "/moments/" in name or "/cond" in name or "dropout" in name:
        return "training branch of a cond on 'training'"
    return "not on the path from the input to the output"


# ============================================================================ training part
def _const_of(by_name: Mapping[str, TFNode], tensor: str, depth: int = 6) -> float | None:
    node = by_name.get(tensor.rsplit(":", 1)[0])
    while node is not None and depth > 0:
        if node.op == "Const":
            value = np.asarray(node.attrs.get("value"))
            if value.size != 1:
                return None
            # a float32 constant as the number the listing wrote (0.01, not 0.009999999776)
            return float(str(value.reshape(()))) if value.dtype == np.float32 else float(value)
        if node.op in ("Identity", "Cast", "ReadVariableOp") and node.inputs:
            node = by_name.get(node.inputs[0].rsplit(":", 1)[0])
            depth -= 1
            continue
        return None
    return None


def _var_of(by_name: Mapping[str, TFNode], tensor: str) -> str | None:
    node = by_name.get(tensor.rsplit(":", 1)[0])
    for _ in range(8):
        if node is None:
            return None
        if node.op in _VARIABLE_OPS:
            return node.attrs.get("shared_name") or node.name if node.op == "VarHandleOp" else node.name
        if not node.inputs:
            return None
        node = by_name.get(node.inputs[0].rsplit(":", 1)[0])
    return None


def read_training(nodes: Sequence[TFNode], collections: Mapping[str, list[Any]], mapping: GraphMapping,
                  global_step_value: int | None = None) -> dict[str, Any] | None:
    """What the graph's training part says: loss, optimizer, clipping, max-norm, global step, UPDATE_OPS."""
    by_name = {n.name: n for n in nodes}
    applies = [n for n in nodes if n.op in _OPTIMIZERS]
    losses = [n for n in nodes if n.op in _LOSSES]
    if not applies and not losses:
        return None
    out: dict[str, Any] = {}
    if losses:
        loss = losses[0]
        readers = [n.name for n in nodes if f"{loss.name}:0" in n.inputs and n.op == "Mean"]
        out["loss"] = {"type": _LOSSES[loss.op], "op": loss.name, "tensor": f"{readers[0]}:0" if readers else None,
                       "logits": loss.inputs[0], "labels": loss.inputs[1]}
    if applies:
        kinds = {_OPTIMIZERS[n.op][0] for n in applies}
        if len(kinds) > 1:
            out["notes"] = [f"several optimizers ({', '.join(sorted(kinds))}); the first is recorded"]
        first = applies[0]
        kind, settings = _OPTIMIZERS[first.op]
        values = {k: _const_of(by_name, first.inputs[i]) for k, i in settings.items() if i < len(first.inputs)}
        optimizer: dict[str, Any]
        if kind == "sgd":
            optimizer = {"type": "sgd", "lr": values["lr"], "momentum": 0.0, "nesterov": False}
        elif kind == "momentum":
            optimizer = {"type": "sgd", "lr": values["lr"], "momentum": values.get("momentum"),
                         "nesterov": bool(first.attrs.get("use_nesterov"))}
        elif kind == "adam":
            optimizer = {"type": "adam", "lr": values["lr"], "betas": [values.get("beta1"), values.get("beta2")],
                         "eps": values.get("epsilon")}
        elif kind == "rmsprop":
            optimizer = {"type": "rmsprop", "lr": values["lr"], "rho": values.get("rho"),
                         "momentum": values.get("momentum"), "eps": values.get("epsilon")}
        else:
            optimizer = {"type": kind, "lr": values["lr"]}
        out["optimizer"] = optimizer
        out["tf_optimizer"] = first.op
        trained = [v for v in (_var_of(by_name, n.inputs[0]) for n in applies) if v]
        out["trained_variables"] = trained
        out["trained_layers"] = [layer for layer in mapping.layer_ops
                                 if any(mapping.variable_layers.get(v) == layer for v in trained)]
        # the training op: the optimizer's own op, <scope>/<Name>, that groups the updates
        match = re.match(r"(.*?)/update_", first.name)
        op_name = match.group(1) if match else None
        train_ops = collections.get("train_op") or []
        out["training_op"] = op_name if op_name in by_name else (train_ops[0] if train_ops else None)
        out["clip_value"], out["clip_norm"] = _gradient_clipping(by_name, applies)
    out["max_norm"] = _max_norm(nodes, by_name, mapping)
    step = collections.get("global_step") or [n.name for n in nodes if n.name == "global_step"
                                               and n.op in _VARIABLE_OPS]
    out["global_step"] = {"variable": step[0], "value": global_step_value} if step else None
    updates = list(collections.get("update_ops") or [])
    out["update_ops"] = updates
    if updates and out.get("training_op"):
        ancestors = _control_ancestors(by_name, out["training_op"])
        out["update_ops_run_with_training_op"] = all(u in ancestors for u in updates)
    return out


def _control_ancestors(by_name: Mapping[str, TFNode], name: str) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        n = stack.pop()
        if n in seen or n not in by_name:
            continue
        seen.add(n)
        node = by_name[n]
        stack += node.control_inputs + [i.rsplit(":", 1)[0] for i in node.inputs if not i.startswith("gradients")]
    return seen


def _gradient_clipping(by_name: Mapping[str, TFNode], applies: list[TFNode]) -> tuple[float | None, float | None]:
    """clip_by_value(grad, -t, t) before every update -> t; tf.clip_by_global_norm -> its norm."""
    thresholds = set()
    norms = set()
    for node in applies:
        grad = by_name.get(node.inputs[_OPT_GRAD[node.op]].rsplit(":", 1)[0])
        if grad is None:
            return None, None
        if grad.op == "ClipByValue":
            lo, hi = _const_of(by_name, grad.inputs[1]), _const_of(by_name, grad.inputs[2])
        elif grad.op == "Maximum":  # clip_by_value: maximum(minimum(g, hi), lo)
            inner = by_name.get(grad.inputs[0].rsplit(":", 1)[0])
            lo = _const_of(by_name, grad.inputs[1])
            hi = _const_of(by_name, inner.inputs[1]) if inner is not None and inner.op == "Minimum" else None
        elif "clip_by_global_norm" in grad.name:
            norm = next((_const_of(by_name, f"{n}:0") for n in by_name
                         if n.startswith(grad.name.split("clip_by_global_norm")[0] + "clip_by_global_norm")
                         and n.endswith("/Const") and _const_of(by_name, f"{n}:0") is not None), None)
            norms.add(norm)
            continue
        else:
            return None, None
        if lo is None or hi is None or lo != -hi:
            return None, None
        thresholds.add(hi)
    if len(thresholds) == 1 and not norms:
        return thresholds.pop(), None
    if len(norms) == 1 and not thresholds:
        return None, norms.pop()
    return None, None


def _max_norm(nodes: Sequence[TFNode], by_name: Mapping[str, TFNode], mapping: GraphMapping) -> dict[str, Any]:
    """``tf.assign(w, tf.clip_by_norm(w, t, axes))`` ops: layer -> threshold, TF axes, torch dim."""
    found: dict[str, Any] = {}
    for node in nodes:
        if node.op not in ("Assign", "AssignVariableOp") or len(node.inputs) < 2:
            continue
        value = by_name.get(node.inputs[1].rsplit(":", 1)[0])
        if value is None or not re.search(r"(^|/)clip_by_norm(_\d+)?/truediv$", value.name) and \
                not re.search(r"(^|/)clip_by_norm(_\d+)?$", value.name):
            continue
        var = _var_of(by_name, node.inputs[0])
        scope = value.name.rsplit("/truediv", 1)[0] if value.name.endswith("/truediv") else value.name
        threshold = _const_of(by_name, f"{scope}/Maximum/y:0")
        axes_node = by_name.get(f"{scope}/Sum/reduction_indices")
        axes = np.atleast_1d(np.asarray(axes_node.attrs["value"])).tolist() if axes_node is not None else None
        layer = mapping.variable_layers.get(var or "")
        if layer is None or threshold is None or not mapping.variables.get(var or "", "").endswith(".weight"):
            continue
        rank = 2 if mapping.layout.get(layer, {}).get("type") == "dense" else 4
        found[layer] = {"variable": var, "threshold": threshold, "tf_axes": axes,
                        "torch_dim": _renorm_dim(axes, rank), "op": node.name}
    return found


def _renorm_dim(axes: list[int] | None, rank: int) -> int | None:
    """The ``torch.renorm`` dim of a TF ``clip_by_norm(kernel, axes)``, or None if torch cannot say it.

    A TF kernel is (*spatial, in, out), a torch weight (out, in, *spatial). clip_by_norm takes
    one norm over ``axes`` per slice of the other axes; renorm keeps one dim and takes the norm
    over the rest. So the axes kept must be just ``out`` (torch dim 0) or just ``in`` (dim 1):
    Dense (in, out) ``axes=[1]`` (the book's) -> one norm per input unit -> dim 1.
    """
    if axes is None:
        return None
    kept = set(range(rank)) - {a % rank for a in axes}
    if kept == {rank - 1}:
        return 0
    if kept == {rank - 2}:
        return 1
    return None


# ============================================================================ import
@dataclass
class ImportedGraph:
    """A meta graph rebuilt as a graftnet network, with how every op was used."""

    network: Any
    mapping: GraphMapping
    meta: TFMetaGraph
    checkpoint: Path | None

    @property
    def training(self) -> dict[str, Any] | None:
        return self.mapping.training

    def report(self) -> Any:
        """A ``MappingReport``: checkpoint variable -> network key, kernels transposed, the
        rest of the checkpoint (optimizer slots, global step) ignored."""
        from graftnet.io.mapping import MappingReport

        report = MappingReport(source=str(self.checkpoint or self.meta.path))
        for var, key in self.mapping.variables.items():
            report.matched.append((var, key))
            layer = self.mapping.variable_layers.get(var, "")
            if key.endswith(".weight") and self.mapping.layout.get(layer, {}).get("type") in ("dense", "conv2d"):
                report.transposed.append(key)
        if self.checkpoint is not None:
            from graftnet.io.tf_checkpoint import read_tf_checkpoint

            names = read_tf_checkpoint(self.checkpoint).keys()
            report.ignored = [k for k in names if k not in self.mapping.variables]
        else:
            report.notes.append("no checkpoint loaded: the layers keep fresh weights")
        ignored = sum(1 for r in self.operation_rows() if not r["layer"])
        report.notes.append(f"rebuilt from {self.meta.path.name}: {len(self.network.layer_names)} layers from "
                            f"{len(self.meta.nodes) - ignored} ops; {ignored} ops ignored (training, initializers, "
                            f"saver; `graftnet inspect {self.meta.path.name}` lists them)")
        return report

    def operation_rows(self) -> list[dict[str, str]]:
        return self.mapping.op_rows(self.meta.nodes)

    def operations(self) -> list[str]:
        """``get_operations()``: every op name in graph order, with what graftnet made of it."""
        rows = self.operation_rows()
        width = min(48, max(len(r["name"]) for r in rows))
        type_width = min(24, max(len(r["type"]) for r in rows))
        return [f"{r['name']:<{width}}  {r['type']:<{type_width}}  "
                + (f"-> {r['layer']}" if r["layer"] else f"ignored: {r['ignored']}") for r in rows]


def _tf_info(mapping: GraphMapping, meta: TFMetaGraph, checkpoint: Path | None) -> dict[str, Any]:
    return {"meta_graph": str(meta.path), "checkpoint": str(checkpoint) if checkpoint else None,
            "tensorflow_version": meta.tf_version, "input": mapping.input_tensor, "output": mapping.output_tensor,
            "tensors": dict(mapping.tensors), "variables": dict(mapping.variables),
            "layout": mapping.layout, "training": mapping.training,
            "ops": {layer: ops for layer, ops in mapping.layer_ops.items()}}


def import_meta_graph(
    path: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    load_values: bool = True,
    name: str | None = None,
    image_shape: Sequence[int] | None = None,
) -> ImportedGraph:
    """Rebuild the network of a ``.meta`` file and load its checkpoint's values, like
    ``tf.train.import_meta_graph`` + ``saver.restore``.

    Args:
        path: the ``.meta`` file, or the checkpoint prefix beside it (``my_model_final.ckpt``).
        checkpoint: the checkpoint to load (default: the prefix of ``path``). Every variable
            the network reads must be there with the shape the graph gives it.
        inputs / outputs: tensor names, when the defaults (the one float placeholder; the
            logits of the loss) do not apply.
        load_values: False builds the network only (fresh weights).
        image_shape: (C, H, W) when the graph takes flat images (the book's 784 MNIST
            features) and the network should take images: a ``Flatten`` comes first.

    The network's ``info["tensorflow"]`` records the tensor -> layer names (so selectors
    may name ``"dnn/hidden3/Relu:0"``), each layer's layout as the graph has it and the
    training part (``training_setup`` turns it into ``fit`` arguments).
    """
    from graftnet.io.tf_checkpoint import read_tf_checkpoint

    meta = read_meta_graph(path)
    prefix: Path | None = None
    values: dict[str, Any]
    if load_values:
        prefix = Path(checkpoint) if checkpoint is not None else Path(str(meta.path)[: -len(".meta")])
        ckpt = read_tf_checkpoint(prefix)
        values = dict(ckpt)
        prefix = ckpt.prefix
        _check_checkpoint_against_meta(meta, ckpt)
    else:
        values = {n.name: _variable_shape(n, meta.path) for n in meta.nodes if n.op in _VARIABLE_OPS}
    source = str(meta.path)
    mapping = graph_to_network(meta.nodes, values, inputs=inputs, outputs=outputs,
                               name=name or meta.path.name.split(".")[0], source=source, image_shape=image_shape)
    step_var = (meta.collections.get("global_step") or ["global_step"])[0]
    step = values.get(step_var)
    mapping.training = read_training(meta.nodes, meta.collections, mapping,
                                     int(np.asarray(step)) if isinstance(step, np.ndarray) else None)
    net = mapping.network
    net.info["tensorflow"] = _tf_info(mapping, meta, prefix)
    return ImportedGraph(net, mapping, meta, prefix)


def _variable_shape(node: TFNode, source: Path) -> tuple[int, ...]:
    shape = node.attrs.get("shape")
    if shape is None or any(d is None for d in shape):
        raise ImportFormatError(f"{source}: variable {node.name!r} has no known shape ({shape})")
    return tuple(int(d) for d in shape)


def _check_checkpoint_against_meta(meta: TFMetaGraph, ckpt: Any) -> None:
    """Every variable of the graph in the checkpoint with the graph's shape: else an error naming both."""
    problems = []
    for node in meta.nodes:
        if node.op not in _VARIABLE_OPS:
            continue
        name = node.attrs.get("shared_name") or node.name if node.op == "VarHandleOp" else node.name
        shape = node.attrs.get("shape")
        if name not in ckpt:
            if name not in getattr(ckpt, "skipped", {}):
                problems.append(f"variable {name!r} is missing")
            continue
        if shape is not None and all(d is not None for d in shape) and tuple(ckpt[name].shape) != tuple(shape):
            problems.append(f"variable {name!r} has shape {tuple(ckpt[name].shape)} in the checkpoint, "
                            f"{tuple(shape)} in the graph")
    if problems:
        raise CheckpointError(f"checkpoint {ckpt.prefix} does not match its meta graph {meta.path}: "
                              f"{'; '.join(problems[:6])}{' ...' if len(problems) > 6 else ''}; nothing was loaded")


# ============================================================================ training setup
def training_setup(net: Any, *, apply_to_network: bool = True) -> dict[str, Any]:
    """``graftnet.train.fit`` keyword arguments that continue training as the graph trained:
    the optimizer and its learning rate, gradient clipping by value or norm. With
    ``apply_to_network`` the network is set up as the graph trained it too: its max-norm
    assign ops become max-norm constraints of those layers (applied after each step, along the
    axis the graph used), and layers whose variables the training op does not update (its
    ``var_list``, as in the book's 11.2.3) are frozen.

        >>> net = import_meta_graph("tests/fixtures/tf/meta_clip/model.ckpt").network
        >>> training_setup(net)
        {'optimizer': {'type': 'sgd', 'lr': 0.01, 'momentum': 0.0, 'nesterov': False}, 'clip_value': 1.0}
    """
    training = (getattr(net, "info", {}).get("tensorflow") or {}).get("training")
    if not training or not training.get("optimizer"):
        raise ConfigError(f"network {getattr(net, 'name', '?')!r} records no TensorFlow training settings "
                          f"(it was not imported from a meta graph with an optimizer)")
    optimizer = {k: v for k, v in training["optimizer"].items() if v is not None}
    kwargs: dict[str, Any] = {"optimizer": optimizer}
    if training.get("clip_value") is not None:
        kwargs["clip_value"] = training["clip_value"]
    if training.get("clip_norm") is not None:
        kwargs["clip_norm"] = training["clip_norm"]
    if apply_to_network:
        for layer, rule in (training.get("max_norm") or {}).items():
            if rule.get("torch_dim") is None:
                raise ConfigError(f"the graph clips {rule['variable']!r} by norm over TF axes {rule['tf_axes']}, which "
                                  f"no per-unit max-norm of graftnet reproduces; pass apply_to_network=False and "
                                  f"constrain layer {layer!r} yourself")
            module = net.layer(layer)
            module.max_norm_limit = float(rule["threshold"])
            module.max_norm_dim = int(rule["torch_dim"])
        trained = training.get("trained_layers")
        if trained is not None:
            untrained = [name for name, module in net.named_layers()
                         if any(True for _ in module.parameters()) and name not in trained]
            if untrained:
                net.freeze(untrained)  # the training op's var_list left them out: they stay as they are
    return kwargs


# ============================================================================ twin check
def _effective_activation(net: Any, layer: str) -> str:
    """A layer's activation, or that of an Activation layer that alone reads it."""
    spec = net.spec_of(layer)
    own = getattr(spec, "activation", None)
    if own not in (None, "linear"):
        return str(own)
    readers = net.readers_of(layer)
    if len(readers) == 1 and net.spec_of(readers[0]).type == "activation":
        return str(net.spec_of(readers[0]).activation)
    return "linear"


def _flatten_before(net: Any, layer: str) -> tuple[str, bool] | None:
    """(name, channels_last) of the Flatten that feeds ``layer`` through parameter-free layers,
    when it flattens images with more than one channel and pixel (where the order matters)."""
    name = layer
    for _ in range(len(net.layer_names)):
        inputs = net.inputs_of(name)
        if len(inputs) != 1 or inputs[0] == net.input_name:
            return None
        name = inputs[0]
        spec = net.spec_of(name)
        if spec.type == "flatten":
            shape = net.shape_of(net.inputs_of(name)[0])
            if len(shape) == 3 and shape[0] > 1 and shape[1] * shape[2] > 1:
                return name, bool(spec.channels_last)
            return None
        if spec.type not in ("activation", "dropout", "alpha_dropout"):
            return None
    return None


def _norm_activation(text: str) -> str:
    from graftnet.layers import parse_activation

    name, args = parse_activation(text)
    return name + (f"({', '.join(f'{a:g}' for a in args)})" if args else "")


def verify_twin(network: Any, targets: Mapping[str, str], meta: str | os.PathLike[str]) -> dict[str, str]:
    """Check a hand-built ``network`` against the graph in ``meta`` before values load into it.

    ``targets`` maps TF variable names to the network's state-dict keys (what the loader
    is about to do). For each target layer, its activation, BatchNorm epsilon and momentum
    and the order of a Flatten feeding it must be what the graph computes. Returns layer ->
    status; raises CheckpointError naming every layer that differs and how.
    """
    graph = read_meta_graph(meta)
    shapes = {}
    for node in graph.nodes:
        if node.op in _VARIABLE_OPS and node.attrs.get("shape") is not None \
                and all(d is not None for d in node.attrs["shape"]):
            name = node.attrs.get("shared_name") or node.name if node.op == "VarHandleOp" else node.name
            shapes[name] = tuple(int(d) for d in node.attrs["shape"])
    mapping = graph_to_network(graph.nodes, shapes, source=str(graph.path))
    twin = mapping.network
    pairs: dict[str, str] = {}
    key_layer = {}
    for name, _ in network.named_layers():
        key_layer[name.replace("/", ".")] = name
    for var, key in targets.items():
        layer = key_layer.get(key.rsplit(".", 1)[0])
        if layer is not None and var in mapping.variable_layers:
            pairs.setdefault(layer, mapping.variable_layers[var])
    problems, status = [], {}
    where = graph.path.name
    for layer, graph_layer in pairs.items():
        mine, theirs = network.spec_of(layer), twin.spec_of(graph_layer)
        differs = []
        if mine.type != theirs.type:
            differs.append(f"it is a {mine.type} layer, the graph's {graph_layer!r} is a {theirs.type}")
        else:
            if mine.type == "batchnorm":
                if not math.isclose(mine.eps, theirs.eps, rel_tol=1e-4):
                    differs.append(f"BatchNorm eps={mine.eps:g}, the graph's is {theirs.eps:g}")
                graph_momentum = mapping.layout[graph_layer].get("momentum")
                if graph_momentum is not None and not math.isclose(mine.momentum, graph_momentum, rel_tol=1e-4):
                    differs.append(f"BatchNorm momentum={mine.momentum:g} (PyTorch's), the graph's is "
                                   f"{graph_momentum:g} (TF momentum {1 - graph_momentum:g})")
            a, b = _norm_activation(_effective_activation(network, layer)), \
                _norm_activation(_effective_activation(twin, graph_layer))
            if a != b:
                differs.append(f"activation {a}, the graph's is {b}")
            if mine.type == "dense":
                f_mine, f_theirs = _flatten_before(network, layer), _flatten_before(twin, graph_layer)
                if f_theirs is not None and (f_mine is None or f_mine[1] != f_theirs[1]):
                    order = "channels-last (H, W, C)" if f_theirs[1] else "channels-first (C, H, W)"
                    got = "no Flatten" if f_mine is None else \
                        f"Flatten {f_mine[0]!r} with channels_last={f_mine[1]}"
                    differs.append(f"the graph flattens the feature maps before it in {order} order "
                                   f"({f_theirs[0]!r}), the network has {got}")
        if differs:
            problems.append(f"layer {layer!r} ({'; '.join(differs)})")
        else:
            status[layer] = f"verified against {where}"
    if problems:
        raise CheckpointError(f"the network does not compute what {graph.path} computes, so its values would give "
                              f"other outputs: {'; '.join(problems)}; nothing was loaded. Build the twin to match, "
                              f"or import the graph itself (graftnet import {where})")
    return status
