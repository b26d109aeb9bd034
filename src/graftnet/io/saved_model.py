"""Read TensorFlow SavedModel directories without TensorFlow, and rebuild the network they hold.

A SavedModel is a directory::

    saved_model.pb        SavedModel proto: meta graphs, each with its graph (ops and tf.functions),
                          signatures ("serving_default") and object graph (which variables and layers)
    keras_metadata.pb     tf_keras (Keras 2) only: each layer's Keras config, as JSON
    fingerprint.pb        hashes of the above (not needed to load)
    variables/            a TF2 object-based checkpoint: variables.index + variables.data-*

Everything is parsed by hand with the protobuf wire decoder of ``tf_checkpoint``; the
``variables/`` checkpoint is read by ``read_tf_checkpoint``. Two routes rebuild the network:

- **Keras 2 / tf_keras** (``model.save("dir")`` with ``keras_metadata.pb``): the root
  object's metadata is the model's Keras config, which goes through the same converter as
  a ``.h5`` file (``io/keras.py``): layer names, ``trainable=False``, BatchNorm epsilon and
  the Flatten order come from the config; each layer's values come from ``variables/``.
- **Keras 3 ``model.export(dir)`` / ``tf.saved_model.save(model, dir)``** (no Keras
  config): the serving function's ops are mapped to graftnet layers by the TensorFlow graph
  mapper (``io/tf_graph.py``); the object graph says which variable each captured input of
  that function reads. An op the mapper cannot map is an error naming it.

    >>> net, report = load_saved_model("tests/fixtures/tf/savedmodel/keras2_cnn")
    >>> net(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2))   # Keras (N, H, W, C) input -> (N, 3)

Images are channels-last in TensorFlow: feed the network ``x.permute(0, 3, 1, 2)`` of
what TensorFlow was fed, as for any Keras import.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graftnet.errors import GraftnetError, ImportFormatError, brief_error, format_names
from graftnet.io.mapping import MappingReport
from graftnet.io.tf_checkpoint import (
    ProtoValue,
    TFCheckpoint,
    _as_bytes,
    _as_int,
    _Corrupt,
    _parse_object_graph,
    _proto_fields,
    _varint,
    read_tf_checkpoint,
)
from graftnet.network import Network

__all__ = ["SavedModel", "SavedObject", "Signature", "is_saved_model", "load_saved_model", "read_saved_model"]

SAVED_MODEL_PB = "saved_model.pb"
KERAS_METADATA_PB = "keras_metadata.pb"
_MAX_PB_BYTES = 2**31  # protobuf's own limit for one message

# DataType enum codes (tensorflow/core/framework/types.proto) that a serving input can have.
_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
                9: "int64", 10: "bool", 14: "bfloat16", 19: "float16", 20: "resource"}
_KINDS = {4: "user_object", 5: "asset", 6: "function", 7: "variable", 8: "bare_concrete_function",
          9: "constant", 10: "resource", 12: "captured_tensor"}


# ============================================================================== the proto
@dataclass(frozen=True)
class TensorSpec:
    """A signature's input or output: the graph tensor (``serving_default_x:0``), dtype, shape."""

    tensor: str
    dtype: str
    shape: tuple[int | None, ...] | None  # None: unknown rank; None in it: unknown size


@dataclass(frozen=True)
class Signature:
    """A SignatureDef: named inputs and outputs and the method (``tensorflow/serving/predict``)."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method: str


@dataclass
class SavedObject:
    """One node of the SavedObjectGraph (the same node ids as the ``variables/`` checkpoint's)."""

    kind: str  # user_object, variable, function, bare_concrete_function, ...
    children: list[tuple[int, str]] = field(default_factory=list)  # (node id, local name)
    identifier: str = ""  # user objects: "_tf_keras_layer", "trackable_list_wrapper", ...
    variable_name: str = ""  # variables: "keras3_cnn/conv1/kernel"
    shape: tuple[int | None, ...] | None = None
    trainable: bool = False
    functions: list[str] = field(default_factory=list)  # functions: their concrete functions


@dataclass
class KerasMetadataNode:
    """One entry of keras_metadata.pb: a Keras object, where it is, and its JSON metadata."""

    node_id: int
    node_path: str  # "root", "root.layer_with_weights-0", ...
    identifier: str  # "_tf_keras_sequential", "_tf_keras_layer", "_tf_keras_metric", ...
    metadata: dict[str, Any]


@dataclass
class SavedModel:
    """What a SavedModel directory holds, parsed (values of variables not yet read).

    Attributes:
        path: the directory.
        schema_version: ``saved_model_schema_version`` (1 for every TF2 SavedModel).
        tags: the chosen meta graph's tags (``["serve"]``).
        tensorflow_version: the TensorFlow that wrote it ("2.21.0"), or "".
        signatures: name -> Signature, e.g. ``"serving_default"``.
        objects: the SavedObjectGraph's nodes, by node id.
        concrete_functions: function name -> the node ids of the variables it captures, in
            the order of its trailing (resource) arguments.
        graph_def: the serialized GraphDef (ops, and tf.functions in its library).
        keras_metadata: keras_metadata.pb's nodes (tf_keras only), else None.
    """

    path: Path
    schema_version: int
    tags: list[str]
    tensorflow_version: str
    signatures: dict[str, Signature]
    objects: list[SavedObject]
    concrete_functions: dict[str, list[int]]
    graph_def: bytes
    keras_metadata: list[KerasMetadataNode] | None = None

    @property
    def pb_path(self) -> Path:
        return self.path / SAVED_MODEL_PB

    def variable_names(self) -> dict[int, str]:
        """Node id -> variable name, for every variable of the object graph."""
        return {i: o.variable_name for i, o in enumerate(self.objects) if o.kind == "variable"}


def is_saved_model(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding ``saved_model.pb`` (or for that file itself)."""
    path = Path(path)
    return (path.is_dir() and (path / SAVED_MODEL_PB).is_file()) or (path.name == SAVED_MODEL_PB and path.is_file())


def _directory(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.name == SAVED_MODEL_PB and path.is_file():
        return path.parent
    if path.is_dir():
        if not (path / SAVED_MODEL_PB).is_file():
            present = sorted(p.name for p in path.iterdir())
            raise ImportFormatError(f"{path} is not a SavedModel directory: it has no {SAVED_MODEL_PB} "
                                    f"(it holds {format_names(present, limit=10)})")
        return path
    raise ImportFormatError(f"no SavedModel at {path}: it does not exist")


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > _MAX_PB_BYTES:
            raise ImportFormatError(f"{path}: {size:,} bytes, more than a protobuf message can be (2 GiB)")
        return path.read_bytes()
    except OSError as err:
        raise ImportFormatError(f"{path}: cannot read the {what} ({err.strerror or err})") from None


def read_saved_model(path: str | os.PathLike[str], *, tags: Sequence[str] = ("serve",)) -> SavedModel:
    """Parse a SavedModel directory's ``saved_model.pb`` (and ``keras_metadata.pb``).

    Args:
        path: the directory, or its ``saved_model.pb``.
        tags: which meta graph to read when there are several (the one whose tags hold all of
            these); a single meta graph is read whatever its tags.

    Raises:
        ImportFormatError: not a SavedModel, or a truncated or foreign ``saved_model.pb`` /
            ``keras_metadata.pb``; the message names the file.

        >>> sm = read_saved_model("tests/fixtures/tf/savedmodel/keras3_export")
        >>> sorted(sm.signatures)
        ['__saved_model_init_op', 'serve', 'serving_default']
    """
    directory = _directory(path)
    pb = directory / SAVED_MODEL_PB
    data = _read_bytes(pb, "SavedModel")
    try:
        model = _parse_saved_model(data, directory, tuple(tags))
    except _Corrupt as err:
        raise ImportFormatError(f"{pb}: not a readable SavedModel ({err}); the file is truncated, corrupt "
                                f"or not a saved_model.pb") from None
    metadata = directory / KERAS_METADATA_PB
    if metadata.is_file():
        try:
            model.keras_metadata = _parse_keras_metadata(_read_bytes(metadata, "Keras metadata"))
        except _Corrupt as err:
            raise ImportFormatError(f"{metadata}: not a readable keras_metadata.pb ({err}); the file is "
                                    f"truncated or corrupt") from None
    return model


def _fields(buf: ProtoValue, what: str) -> list[tuple[int, ProtoValue]]:
    return _proto_fields(_as_bytes(buf, what), what)


def _text(value: ProtoValue, what: str) -> str:
    try:
        return _as_bytes(value, what).decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(f"{what}: a string field is not UTF-8") from None


def _parse_saved_model(data: bytes, directory: Path, tags: tuple[str, ...]) -> SavedModel:
    if not data:
        raise _Corrupt("the file is empty")
    schema, metas = None, []
    for number, value in _proto_fields(data, "SavedModel"):
        if number == 1:
            schema = _as_int(value, "saved_model_schema_version")
        elif number == 2:
            metas.append(_as_bytes(value, "meta graph"))
        else:  # SavedModel has two fields; anything else is some other file
            raise _Corrupt(f"field {number} is not part of a SavedModel message (which has fields 1 and 2)")
    if not metas:
        raise _Corrupt("it holds no meta graph")
    parsed = [_parse_meta_graph(m) for m in metas]
    if len(parsed) == 1:
        chosen = parsed[0]
    else:
        matching = [p for p in parsed if set(tags) <= set(p["tags"])]
        if not matching:
            raise _Corrupt(f"no meta graph has the tags {list(tags)}; it has {[p['tags'] for p in parsed]}")
        chosen = matching[0]
    if not chosen["graph_def"]:
        raise _Corrupt("its meta graph has no graph")
    return SavedModel(path=directory, schema_version=schema if schema is not None else 0, tags=chosen["tags"],
                      tensorflow_version=chosen["tf_version"], signatures=chosen["signatures"],
                      objects=chosen["objects"], concrete_functions=chosen["concrete"],
                      graph_def=chosen["graph_def"])


def _parse_meta_graph(buf: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"tags": [], "tf_version": "", "signatures": {}, "objects": [], "concrete": {},
                           "graph_def": b""}
    for number, value in _proto_fields(buf, "meta graph"):
        if number == 1:  # MetaInfoDef
            for sub, sub_value in _fields(value, "meta_info_def"):
                if sub == 4:
                    out["tags"].append(_text(sub_value, "tags"))
                elif sub == 5:
                    out["tf_version"] = _text(sub_value, "tensorflow_version")
        elif number == 2:
            out["graph_def"] = _as_bytes(value, "graph_def")
        elif number == 5:  # map<string, SignatureDef>
            key, signature = _map_entry(value, "signature_def")
            out["signatures"][_text(key, "signature name")] = _parse_signature(signature)
        elif number == 7:
            out["objects"], out["concrete"] = _parse_object_graph_def(_as_bytes(value, "object_graph_def"))
    return out


def _map_entry(value: ProtoValue, what: str) -> tuple[bytes, bytes]:
    entry = dict(_fields(value, what))
    return _as_bytes(entry.get(1, b""), what), _as_bytes(entry.get(2, b""), what)


def _parse_shape(buf: bytes, what: str) -> tuple[int | None, ...] | None:
    dims: list[int | None] = []
    for number, value in _proto_fields(buf, what):
        if number == 2:
            size = _as_int(dict(_fields(value, what)).get(1, 0), what, signed=True)
            dims.append(None if size < 0 else size)
        elif number == 3 and _as_int(value, what):
            return None
    return tuple(dims)


def _parse_tensor_info(buf: bytes) -> TensorSpec:
    fields = dict(_proto_fields(buf, "tensor info"))
    shape = fields.get(3)
    return TensorSpec(tensor=_text(fields.get(1, b""), "tensor name"),
                      dtype=_DTYPE_NAMES.get(_as_int(fields.get(2, 0), "dtype"), "other"),
                      shape=None if shape is None else _parse_shape(_as_bytes(shape, "tensor shape"), "tensor shape"))


def _parse_signature(buf: bytes) -> Signature:
    inputs, outputs, method = {}, {}, ""
    for number, value in _proto_fields(buf, "signature"):
        if number in (1, 2):
            key, info = _map_entry(value, "signature tensor")
            (inputs if number == 1 else outputs)[_text(key, "signature key")] = _parse_tensor_info(info)
        elif number == 3:
            method = _text(value, "method_name")
    return Signature(inputs, outputs, method)


def _repeated_ints(values: list[ProtoValue], what: str) -> list[int]:
    """A repeated int32 field, packed (proto3's default) or not."""
    out: list[int] = []
    for value in values:
        if isinstance(value, int):
            out.append(value)
            continue
        pos = 0
        while pos < len(value):
            number, pos = _varint(value, pos)
            out.append(number)
    return out


def _parse_object_graph_def(buf: bytes) -> tuple[list[SavedObject], dict[str, list[int]]]:
    objects, concrete = [], {}
    for number, value in _proto_fields(buf, "object graph"):
        if number == 1:
            objects.append(_parse_object(_as_bytes(value, "saved object")))
        elif number == 2:  # map<string, SavedConcreteFunction>
            key, function = _map_entry(value, "concrete function")
            bound = [v for n, v in _proto_fields(function, "concrete function") if n == 2]
            concrete[_text(key, "function name")] = _repeated_ints(bound, "bound_inputs")
    return objects, concrete


def _parse_object(buf: bytes) -> SavedObject:
    what = "saved object"
    obj = SavedObject(kind="")
    for number, value in _proto_fields(buf, what):
        if number == 1:  # ObjectReference { int32 node_id = 1; string local_name = 2; }
            ref = dict(_fields(value, what))
            obj.children.append((_as_int(ref.get(1, 0), what), _text(ref.get(2, b""), what)))
        elif number in _KINDS:
            obj.kind = _KINDS[number]
            sub = _fields(value, what)
            if number == 4:
                obj.identifier = _text(dict(sub).get(1, b""), what)
            elif number == 6:
                obj.functions = [_text(v, what) for n, v in sub if n == 1]
            elif number == 8:
                obj.functions = [_text(v, what) for n, v in sub if n == 1]
            elif number == 7:  # SavedVariable
                fields = dict(sub)
                obj.variable_name = _text(fields.get(6, b""), what)
                obj.trainable = bool(_as_int(fields.get(3, 0), what))
                if 2 in fields:
                    obj.shape = _parse_shape(_as_bytes(fields[2], what), what)
    return obj


def _parse_keras_metadata(data: bytes) -> list[KerasMetadataNode]:
    nodes = []
    for number, value in _proto_fields(data, "Keras metadata"):
        if number != 1:
            raise _Corrupt(f"field {number} is not part of a SavedMetadata message (which has field 1)")
        fields = dict(_fields(value, "Keras metadata node"))
        raw = _text(fields.get(5, b""), "metadata")
        try:
            metadata = json.loads(raw) if raw else {}
        except (json.JSONDecodeError, RecursionError) as err:
            node_path = _text(fields.get(3, b""), "node_path")
            raise _Corrupt(f"the metadata of {node_path!r} is not valid JSON ({brief_error(err)})") from None
        nodes.append(KerasMetadataNode(node_id=_as_int(fields.get(2, 0), "node_id"),
                                       node_path=_text(fields.get(3, b""), "node_path"),
                                       identifier=_text(fields.get(4, b""), "identifier"),
                                       metadata=metadata if isinstance(metadata, dict) else {}))
    if not nodes:
        raise _Corrupt("it holds no Keras objects")
    return nodes


# ============================================================================== variables
def _read_variables(model: SavedModel) -> tuple[TFCheckpoint, dict[int, str]]:
    """The ``variables/`` checkpoint and, per object-graph node id, the checkpoint key of its value."""
    directory = model.path / "variables"
    prefix = directory / "variables"
    if not Path(f"{prefix}.index").is_file():
        present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        where = (f"{directory} holds {format_names(present, limit=8)}" if directory.is_dir()
                 else f"{directory} does not exist")
        n_vars = len(model.variable_names())
        raise ImportFormatError(f"{model.path} is a SavedModel without variables: {prefix}.index is missing "
                                f"({where}), but its object graph names {n_vars} variable(s) "
                                f"({format_names(sorted(set(model.variable_names().values())), limit=6)}); copy the "
                                f"whole directory, variables/ included")
    checkpoint = read_tf_checkpoint(prefix)
    if checkpoint.object_graph is None:
        raise ImportFormatError(f"{prefix}.index: a SavedModel's variables must be an object-based (TF2) "
                                f"checkpoint; this one has no object graph")
    try:
        nodes = _parse_object_graph(checkpoint.object_graph)
    except _Corrupt as err:
        raise ImportFormatError(f"{prefix}.index: object graph: {err}") from None
    keys = {i: node.variables[0][0] for i, node in enumerate(nodes) if node.variables}
    return checkpoint, keys


def _value(model: SavedModel, checkpoint: TFCheckpoint, keys: dict[int, str], node_id: int) -> np.ndarray:
    """The value of the variable at object node ``node_id``, checked against what saved_model.pb says of it."""
    obj = model.objects[node_id]
    name, key = obj.variable_name, keys.get(node_id)
    if key is None or key not in checkpoint:
        why = checkpoint.skipped.get(key, "not in the checkpoint") if key else "no checkpoint entry for its node"
        raise ImportFormatError(f"{checkpoint.prefix}: variable {name!r} (object node {node_id}) has no value: {why}")
    stored = _checkpoint_names(checkpoint).get(key, name)
    value = checkpoint[key]
    if stored != name or (obj.shape is not None and None not in obj.shape and tuple(value.shape) != obj.shape):
        raise ImportFormatError(f"{checkpoint.prefix}: object node {node_id} holds {stored!r} of shape "
                                f"{tuple(value.shape)}, but {SAVED_MODEL_PB} says it is {name!r} of shape "
                                f"{obj.shape}: variables/ does not belong to this saved_model.pb")
    return value


def _checkpoint_names(checkpoint: TFCheckpoint) -> dict[str, str]:
    """Checkpoint key -> the variable's name, from the checkpoint's own object graph."""
    cached = getattr(checkpoint, "_graftnet_names", None)
    if cached is None:
        nodes = _parse_object_graph(checkpoint.object_graph or b"")
        cached = {key: full for node in nodes for key, full in node.variables}
        checkpoint._graftnet_names = cached  # type: ignore[attr-defined]
    return cached


# ============================================================================== Keras 2 route
_KERAS_LAYER_IDS = ("_tf_keras_layer", "_tf_keras_model", "_tf_keras_sequential", "_tf_keras_network",
                    "_tf_keras_input_layer")


def _variable_ids(model: SavedModel, node_id: int) -> list[int]:
    """The variables of a Keras 2 layer object, in ``layer.weights`` order (its ``variables`` list)."""
    obj = model.objects[node_id]
    listed = [c for c, name in obj.children if name == "variables"]
    if listed and 0 <= listed[0] < len(model.objects):
        return [c for c, _ in model.objects[listed[0]].children
                if 0 <= c < len(model.objects) and model.objects[c].kind == "variable"]
    return [c for c, _ in obj.children if 0 <= c < len(model.objects) and model.objects[c].kind == "variable"]


def _keras2_weights(model: SavedModel, checkpoint: TFCheckpoint, keys: dict[int, str]
                    ) -> tuple[dict[str, list[tuple[str, np.ndarray]]], list[str]]:
    """Legacy-``.h5``-shaped weights: top-level layer name -> [(variable name, value)], and the
    checkpoint keys used."""
    assert model.keras_metadata is not None
    legacy: dict[str, list[tuple[str, np.ndarray]]] = {}
    used: list[str] = []
    for node in model.keras_metadata:
        parts = node.node_path.split(".")
        if len(parts) != 2 or node.identifier not in _KERAS_LAYER_IDS or not parts[1].startswith("layer"):
            continue  # the model itself, a nested model's layers (in their model's list), metrics
        if not 0 <= node.node_id < len(model.objects):
            raise ImportFormatError(f"{model.path / KERAS_METADATA_PB}: {node.node_path!r} is object node "
                                    f"{node.node_id}, but {SAVED_MODEL_PB} has {len(model.objects)} objects")
        name = str(node.metadata.get("name") or parts[1])
        if name in legacy:
            continue  # "layer_with_weights-0" and "layer-0" are the same layer
        arrays = []
        for var in _variable_ids(model, node.node_id):
            var_name = model.objects[var].variable_name
            arrays.append((var_name, _value(model, checkpoint, keys, var)))
            used.append(keys[var])
        legacy[name] = arrays
    return legacy, used


def _untuple(value: Any, depth: int = 0) -> Any:
    """Keras 2's SavedModel JSON writes tuples and shapes as ``{"class_name": "__tuple__", "items": [...]}``
    (``"TensorShape"`` likewise); turn them into the lists a ``.h5`` config holds."""
    if depth > 200:
        raise ImportFormatError("keras_metadata.pb: the model config is nested more than 200 levels deep")
    if isinstance(value, dict):
        if value.get("class_name") in ("__tuple__", "TensorShape") and isinstance(value.get("items"), list):
            return [_untuple(v, depth + 1) for v in value["items"]]
        return {k: _untuple(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_untuple(v, depth + 1) for v in value]
    return value


def _load_keras2(model: SavedModel, input_shape: tuple[int, ...] | None) -> tuple[Network, MappingReport]:
    from graftnet.io.keras import import_keras_config

    assert model.keras_metadata is not None
    metadata_path = model.path / KERAS_METADATA_PB
    root = next((n for n in model.keras_metadata if n.node_path == "root"), None)
    if root is None or not isinstance(root.metadata.get("config"), dict) or "class_name" not in root.metadata:
        raise ImportFormatError(f"{metadata_path}: no Keras model config for the root object (is it a "
                                f"Keras model? identifiers: "
                                f"{format_names(sorted({n.identifier for n in model.keras_metadata}), limit=6)})")
    metadata = _untuple(root.metadata)
    config = metadata.get("model_config")  # what model.get_config() gave, as in a .h5 file
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        config = {"class_name": metadata["class_name"], "config": metadata["config"]}
    build_shape = metadata.get("build_input_shape")
    if isinstance(build_shape, list) and not config["config"].get("build_input_shape"):
        config["config"] = {**config["config"], "build_input_shape": build_shape}
    checkpoint, keys = _read_variables(model)
    legacy, used = _keras2_weights(model, checkpoint, keys)
    net, report = import_keras_config(config, legacy, source=str(model.path), kind="tf_keras SavedModel",
                                      keras_version=str(root.metadata.get("keras_version") or "2"),
                                      input_shape=input_shape)
    used_keys = set(used)
    report.ignored += [k for k in sorted(checkpoint) if k not in used_keys]
    net.info.update(tensorflow_version=model.tensorflow_version or None)
    return net, report


# ============================================================================== graph route
def _serving_function(model: SavedModel, signature: str) -> tuple[str, Signature]:
    if signature not in model.signatures:
        callable_ = sorted(k for k in model.signatures if not k.startswith("__"))
        raise ImportFormatError(f"{model.pb_path}: no signature {signature!r}; it has "
                                f"{format_names(callable_)} (pass signature=...)")
    sig = model.signatures[signature]
    if len(sig.inputs) != 1 or len(sig.outputs) != 1:
        raise ImportFormatError(f"{model.pb_path}: signature {signature!r} has {len(sig.inputs)} input(s) "
                                f"({format_names(sig.inputs)}) and {len(sig.outputs)} output(s) "
                                f"({format_names(sig.outputs)}); graftnet imports one input and one output")
    return signature, sig


def _load_graph(model: SavedModel, signature: str, input_shape: tuple[int, ...] | None
                ) -> tuple[Network, MappingReport]:
    try:
        from graftnet.io import tf_graph
    except ImportError:  # the graph mapper lives in io/tf_graph.py
        raise ImportFormatError(f"{model.path}: a SavedModel without Keras metadata is rebuilt from its graph, "
                                f"and this graftnet has no TensorFlow graph mapper (graftnet.io.tf_graph)") from None
    name, sig = _serving_function(model, signature)
    (input_key, input_spec), = sig.inputs.items()
    (_, output_spec), = sig.outputs.items()
    source = str(model.pb_path)
    nodes = tf_graph.parse_graph_def(model.graph_def, source=source)
    library_bytes = [v for n, v in _proto_fields(model.graph_def, "GraphDef") if n == 2]  # GraphDef.library
    library = tf_graph.parse_function_library(_as_bytes(library_bytes[0], "library"), source=source) \
        if library_bytes else {}
    by_name = {n.name: n for n in nodes}
    call = by_name.get(output_spec.tensor.split(":", 1)[0])
    if call is None:
        raise ImportFormatError(f"{source}: signature {name!r} reads {output_spec.tensor}, which is not a node "
                                f"of the graph")
    function, inputs, resources = _innermost_call(call, by_name, library, model, input_spec.tensor, source)
    shape = tuple(input_shape) if input_shape is not None else _example_shape(input_spec, model, name)
    checkpoint, keys = _read_variables(model)
    # Keras 3 names variables "<model>/<layer>/<weight>": the layers are named after the last two parts.
    full_names = {var: model.objects[var].variable_name for var in resources.values()}
    model_name, names = _strip_model_scope(full_names, model.path.name)
    variables = {names[var]: _value(model, checkpoint, keys, var) for var in full_names}
    nodes = _keras_op_names(_plain_reads(function.nodes), model_name, {n.rsplit("/", 1)[0] for n in variables})
    mapping = tf_graph.graph_to_network(
        nodes, variables, inputs=inputs, outputs=list(function.ret.values())[:1],
        resources={arg: names[var] for arg, var in resources.items()},
        name=model_name, source=source, input_shape=shape)
    frozen = _frozen_layers(model, mapping.variable_layers, {names[v]: full for v, full in full_names.items()})
    if frozen:
        mapping.network.freeze(frozen)
    report = _graph_report(mapping, variables, checkpoint, {keys[var] for var in resources.values()}, source)
    mapping.network.info.update(source=str(model.path), format="SavedModel (graph)", signature=name,
                                input_key=input_key, tensorflow_version=model.tensorflow_version or None,
                                layer_ops=mapping.layer_ops, frozen_recorded=_records_trainable(model))
    return mapping.network, report


def _trainable_lists(model: SavedModel) -> tuple[set[str], set[str]] | None:
    """The variable names in the root's ``trainable_variables`` and ``non_trainable_variables`` lists
    (Keras 3 ``model.export`` writes them), or None where the SavedModel has none."""
    if not model.objects:
        return None
    lists = {name: child for child, name in model.objects[0].children
             if name in ("trainable_variables", "non_trainable_variables") and 0 <= child < len(model.objects)}
    if len(lists) != 2:
        return None
    names = model.variable_names()
    trainable, frozen = ({names[c] for c, _ in model.objects[lists[key]].children if c in names}
                         for key in ("trainable_variables", "non_trainable_variables"))
    return trainable, frozen


def _records_trainable(model: SavedModel) -> bool:
    return _trainable_lists(model) is not None


def _frozen_layers(model: SavedModel, variable_layers: dict[str, str], full: dict[str, str]) -> list[str]:
    """Layers all of whose variables the SavedModel lists as non-trainable (BatchNorm's moving
    statistics never train, so they do not count)."""
    lists = _trainable_lists(model)
    if lists is None:
        return []  # tf.saved_model.save of a Keras 3 model does not record trainable=False
    trainable, non_trainable = lists
    by_layer: dict[str, list[str]] = {}
    for var, layer in variable_layers.items():
        if var.rsplit("/", 1)[-1] not in ("moving_mean", "moving_variance"):
            by_layer.setdefault(layer, []).append(full.get(var, var))
    return [layer for layer, variables in by_layer.items()
            if all(v in non_trainable and v not in trainable for v in variables)]


def _example_shape(spec: TensorSpec, model: SavedModel, signature: str) -> tuple[int, ...]:
    """The signature input's shape without its batch axis; every size must be known."""
    if spec.shape is None or len(spec.shape) < 2 or any(d is None for d in spec.shape[1:]):
        raise ImportFormatError(f"{model.pb_path}: signature {signature!r} takes {spec.tensor} of shape "
                                f"{spec.shape} (unknown sizes); pass input_shape= (TensorFlow's order, "
                                f"e.g. (28, 28, 1))")
    return tuple(int(d) for d in spec.shape[1:])  # type: ignore[arg-type]


def _graph_report(mapping: Any, variables: dict[str, np.ndarray], checkpoint: TFCheckpoint, used: set[str],
                  source: str) -> MappingReport:
    """What was loaded where; a variable the serving function reads but no layer took is an error."""
    unused = sorted(set(variables) - set(mapping.variables))
    if unused:
        raise ImportFormatError(f"{source}: the serving function reads variable(s) {format_names(unused)} that "
                                f"no graftnet layer took; the graph was not fully mapped")
    if not mapping.loaded:
        state = [k for k in mapping.network.state_dict() if not k.endswith("num_batches_tracked")]
        empty = sorted(set(state) - set(mapping.variables.values()))
        raise ImportFormatError(f"{source}: no variable of the serving function gives {format_names(empty)}")
    report = MappingReport(source=source)
    report.matched = [(var, key) for var, key in mapping.variables.items()]
    report.ignored = [k for k in sorted(checkpoint) if k not in used]
    return report


def _strip_model_scope(full_names: dict[int, str], fallback: str) -> tuple[str, dict[int, str]]:
    """(model name, node id -> variable name without it) when all variables share a first scope
    and have two more parts (Keras 3: ``keras3_cnn/conv1/kernel`` -> ``conv1/kernel``)."""
    parts = {var: name.split("/") for var, name in full_names.items()}
    scopes = {p[0] for p in parts.values()}
    stripped = {var: "/".join(p[1:]) for var, p in parts.items()}
    if len(scopes) == 1 and all(len(p) >= 3 for p in parts.values()) \
            and len(set(stripped.values())) == len(set(full_names.values())):
        return scopes.pop(), stripped
    return fallback, dict(full_names)


_BIAS_READS = ("Reshape", "Squeeze", "Identity")


def _node_of(by_name: dict[str, Any], tensor: str) -> Any:
    return by_name.get(tensor.rsplit(":", 1)[0])


def _plain_reads(nodes: list[Any]) -> list[Any]:
    """Undo two detours of Keras 3's TensorFlow graphs, so the graph mapper sees the plain form:

    - a convolution's bias is read as ``Squeeze(Reshape(ReadVariableOp(bias)))``, the same
      vector: its BiasAdd reads the variable itself, as a Dense's BiasAdd does;
    - Flatten reshapes to ``Pack(StridedSlice(Shape(x), 0, 1), n)``, i.e. ``(batch, n)``: the
      Reshape reads a constant ``[-1, n]`` instead.
    """
    by_name = {n.name: n for n in nodes}
    out = []
    for node in nodes:
        if node.op == "BiasAdd" and len(node.inputs) == 2:
            source, seen = node.inputs[1], 0
            while seen < 4 and _node_of(by_name, source) is not None and _node_of(by_name, source).op in _BIAS_READS:
                source, seen = _node_of(by_name, source).inputs[0], seen + 1
            reader = _node_of(by_name, source)
            if seen and reader is not None and reader.op == "ReadVariableOp":
                node = copy.copy(node)
                node.inputs = [node.inputs[0], source]
        elif node.op == "Reshape" and len(node.inputs) == 2:
            target = _batch_flatten_target(by_name, node)
            if target is not None:
                const = type(node)(name=f"{node.name}/flatten_shape", op="Const",
                                   attrs={"dtype": "int32", "value": np.array([-1, target], dtype=np.int32)})
                out.append(const)
                node = copy.copy(node)
                node.inputs = [node.inputs[0], f"{const.name}:0"]
        out.append(node)
    return out


def _batch_flatten_target(by_name: dict[str, Any], reshape: Any) -> int | None:
    """n when ``reshape`` is ``Reshape(x, Pack(StridedSlice(Shape(x))[0], Const n))``, else None."""
    pack = _node_of(by_name, reshape.inputs[1])
    if pack is None or pack.op != "Pack" or len(pack.inputs) != 2:
        return None
    batch, size = _node_of(by_name, pack.inputs[0]), _node_of(by_name, pack.inputs[1])
    if batch is None or batch.op != "StridedSlice" or size is None or size.op != "Const":
        return None
    shape = _node_of(by_name, batch.inputs[0])
    if shape is None or shape.op != "Shape" or shape.inputs[:1] != reshape.inputs[:1]:
        return None
    begin, end = (_node_of(by_name, t) for t in batch.inputs[1:3])
    values = [np.asarray(n.attrs.get("value")).reshape(-1).tolist() if n is not None and n.op == "Const" else None
              for n in (begin, end)]
    if values != [[0], [1]] or int(batch.attrs.get("shrink_axis_mask", 0)) != 1:
        return None
    n = np.asarray(size.attrs.get("value")).reshape(-1)
    return int(n[0]) if n.size == 1 else None


_KERAS3_POOL_OPS = {"MaxPool2d": "MaxPool", "AvgPool2d": "AvgPool"}


def _keras_op_names(nodes: list[Any], model_name: str, layers: set[str]) -> list[Any]:
    """Keras 3 traces a model's call under ``<model>_1/<layer>_1/...`` while its variables are
    ``<model>/<layer>/...``: rename the ops ``<layer>/...`` so that the layers the mapper names
    after their op scopes get Keras' names (``keras3_cnn_1/flatten_1/Reshape`` -> ``flatten/Reshape``)."""
    prefix = re.compile(rf"{re.escape(model_name)}(?:_\d+)?/([^/]+)/(.+)")
    scopes = {m.group(1) for m in (prefix.fullmatch(n.name) for n in nodes) if m}
    strip = {scope: re.sub(r"_\d+$", "", scope) for scope in scopes}
    # A weighted layer's scope must come out as its variables' layer name; and no two scopes may merge.
    if any(scope not in layers and strip[scope] not in layers for scope in scopes if scope in layers
           or strip[scope] in layers) or len(set(strip.values())) != len(strip):
        strip = {scope: scope for scope in scopes}
    renamed = {}
    for node in nodes:
        match = prefix.fullmatch(node.name)
        if match:
            rest = match.group(2)
            if rest in _KERAS3_POOL_OPS and _KERAS3_POOL_OPS[rest] == node.op:  # "MaxPool2d" is a MaxPool
                rest = node.op
            renamed[node.name] = f"{strip[match.group(1)]}/{rest}"
    if len(set(renamed.values()) | ({n.name for n in nodes} - set(renamed))) != len(nodes):
        return nodes  # the new names would clash with others: keep TensorFlow's

    def tensor(ref: str) -> str:
        name, _, index = ref.rpartition(":")
        return f"{renamed.get(name, name)}:{index}" if name else renamed.get(ref, ref)

    out = []
    for node in nodes:
        node = copy.copy(node)
        node.name = renamed.get(node.name, node.name)
        node.inputs = [tensor(t) for t in node.inputs]
        node.control_inputs = [renamed.get(c, c) for c in node.control_inputs]
        out.append(node)
    return out


def _innermost_call(call: Any, by_name: dict[str, Any], library: dict[str, Any], model: SavedModel,
                    input_tensor: str, source: str) -> tuple[Any, list[str], dict[str, int]]:
    """Follow (Stateful)PartitionedCall nodes from the signature's output to the function whose body
    holds the model's ops. Returns that function, its input tensor (the signature's input) and, per
    captured resource argument ``"arg:0"``, the object-graph node id of the variable it reads."""
    if call.op not in ("StatefulPartitionedCall", "PartitionedCall"):
        raise ImportFormatError(f"{source}: the serving output {call.name!r} is a {call.op} op, not a call of "
                                f"the saved function")
    fname = call.attrs.get("f")
    if fname not in library:
        raise ImportFormatError(f"{source}: node {call.name!r} calls function {fname!r}, which is not in the "
                                f"graph's function library")
    bound = model.concrete_functions.get(fname)
    if bound is None:
        raise ImportFormatError(f"{source}: function {fname!r} is not a concrete function of the object graph, "
                                f"so which variables it reads is unknown")
    function = library[fname]
    args = [a for a, _ in function.input_args]
    n_user = len(args) - len(bound)
    if n_user != 1:
        raise ImportFormatError(f"{source}: function {fname!r} takes {n_user} input(s) besides its "
                                f"{len(bound)} variables; graftnet imports one input")
    if call.inputs[:1] != [input_tensor]:
        raise ImportFormatError(f"{source}: node {call.name!r} is called on {call.inputs[:1]}, not on the "
                                f"signature's input {input_tensor}")
    resources = {f"{arg}:0": var for arg, var in zip(args[n_user:], bound)}  # arg tensor -> variable node
    # A signature wrapper calls the traced function once, passing its arguments on: follow it down.
    for _ in range(8):
        calls = [n for n in function.nodes if n.op in ("StatefulPartitionedCall", "PartitionedCall")]
        if len(calls) != 1 or calls[0].attrs.get("f") not in library:
            break
        inner = library[calls[0].attrs["f"]]
        inner_args = [f"{a}:0" for a, _ in inner.input_args]
        passed = dict(zip(inner_args, calls[0].inputs))
        if not passed or passed[inner_args[0]] != f"{args[0]}:0":
            break
        resources = {arg: resources[src] for arg, src in passed.items() if src in resources}
        function, args = inner, [a for a, _ in inner.input_args]
    return function, [f"{args[0]}:0"], resources


# ============================================================================== the entry point
def load_saved_model(path: str | os.PathLike[str], *, input_shape: tuple[int, ...] | None = None,
                     signature: str = "serving_default") -> tuple[Network, MappingReport]:
    """Import a Keras model saved as a TensorFlow SavedModel directory, weights included.

    Args:
        path: the directory (or its ``saved_model.pb``).
        input_shape: the Keras input shape without the batch axis, e.g. ``(28, 28, 1)``,
            where the SavedModel records none with known sizes.
        signature: the serving signature whose function is rebuilt (graph route only).

    Returns:
        ``(network, report)``: Keras' layer names, values from ``variables/``, frozen
        layers frozen (tf_keras); ``report.ignored`` lists what was not loaded (optimizer
        state, metrics, the second copy of each variable that ``model.export`` keeps).

    Raises:
        ImportFormatError: a truncated or foreign ``saved_model.pb``, a SavedModel without
            ``variables/``, a layer or an op graftnet cannot map (named), a variable whose
            value is missing or of the wrong shape (named).

        >>> net, report = load_saved_model("tests/fixtures/tf/savedmodel/keras2_cnn")
        >>> net.frozen
        ['conv1']
    """
    model = read_saved_model(path)
    try:
        if model.keras_metadata is not None:
            return _load_keras2(model, input_shape)
        return _load_graph(model, signature, input_shape)
    except GraftnetError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError) as err:  # a structure that does not fit
        raise ImportFormatError(f"{model.path}: malformed SavedModel ({brief_error(err)})") from None
