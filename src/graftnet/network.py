"""Network: a graph of named layers, built from a JSON-able spec.

Everything in transfer learning is said with layer names ("reuse hidden[123]", "freeze
block[1-4].*", "cache the output of hidden2"), so a ``Network`` is a graph whose layers carry
those names, plus the spec it was built from, so it can be saved without pickle and rebuilt
exactly. A chain is the graph in which every layer reads the one before it, and needs no
more words than it always did::

    >>> net = Network.mlp((1, 28, 28), [300, 100], 10)
    >>> net.layer_names
    ['flatten', 'hidden1', 'hidden2', 'outputs']
    >>> net.select("hidden[12]")
    ['hidden1', 'hidden2']
    >>> net.freeze("hidden1").frozen
    ['hidden1']

A layer may name its ``inputs`` (default: the layer before it, or the network's input for
the first layer); merge layers (``Add``, ``Concatenate``, ... in :mod:`graftnet.merge`) join
branches; and a whole network can be one layer of another (``Block``), whose layers then
have *paths* (``vgg16/block5_conv1``)::

    >>> res = Network([Conv2d(8, 3, padding="same", name="conv"), BatchNorm(name="bn"),
    ...                Add(name="skip", inputs=["conv", "bn"]), Flatten(), Dense(10, name="outputs")],
    ...               input_shape=(3, 8, 8))
    >>> top = Network([Block(res, name="base"), Dense(1, "sigmoid", name="head")], input_shape=(3, 8, 8))
    >>> top.layer_names[:3], top.blocks
    (['base/conv', 'base/bn', 'base/skip'], ['base'])

The spec is a flat list of layers in an order in which each layer comes after its inputs,
as torch.fx's node list is: a nested block is spelled out as its layers' paths.

Selectors, accepted by every method that picks layers:
  - a regex over paths, matched in full: ``"hidden[123]"``, ``"vgg16/block5_.*"``; a regex
    that matches a block's path picks all of that block's layers (``"vgg16"``);
  - a slice of positions over all layers: ``":-1"`` (all but the last), ``"2:"``, ``"1:3"``;
    positions within a block: ``"vgg16/-4:"`` (its last four layers);
  - Keras' list of a model's layers: ``"vgg16.layers[15:]"`` picks exactly what
    ``vgg_base.layers[15:]`` picks in Keras (the block's input layer counts as position 0
    when the model it came from had one, as Keras' functional models do; a nested model
    counts as one entry of its parent's list);
  - a list of exact names (or block paths), a single position (``int``), or ``"all"`` / ``None``;
  - in a network imported from a TensorFlow graph, a tensor name (``"dnn/hidden3/Relu:0"``):
    the layer that computes it and all it depends on ("reuse up to here").
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from graftnet.errors import ConfigError, ShapeError, did_you_mean, format_names
from graftnet.layers import (
    LAYER_TYPES,
    Activation,
    BatchNorm,
    BatchNormModule,
    Dense,
    Dropout,
    Flatten,
    LayerSpec,
    layer_from_dict,
    parse_activation,
)

__all__ = ["Block", "Network", "Selector", "SPEC_FORMAT", "default_init"]

SPEC_FORMAT = "graftnet.network/2"
_READABLE_FORMATS = ("graftnet.network/1", SPEC_FORMAT)  # /1: chains, written by graftnet 0.1
INPUT = "input"  # the default name of a network's input
Selector = str | int | Sequence[str] | None
Shape = tuple[int, ...]
_PART = r"[A-Za-z0-9_][A-Za-z0-9_\-]*"
_NAME_RE = re.compile(rf"^{_PART}(?:[./]{_PART})*$")  # '/' separates blocks; '.' as in torch's names
_SLICE_RE = re.compile(r"^\s*(-?\d+)?\s*:\s*(-?\d+)?\s*$")
_TENSOR_RE = re.compile(r"^\s*[A-Za-z0-9_.][A-Za-z0-9_./\-]*:\d+\s*$")  # a TF tensor: "dnn/hidden3/Relu:0"
_KERAS_LIST_RE = re.compile(r"^\s*(?:(?P<block>.+?)[./])?layers\s*\[(?P<index>[^\]]*)\]\s*$")
_DEFAULT_PREFIX = {"dense": "dense", "conv2d": "conv", "maxpool": "pool", "avgpool": "pool",
                   "global_avg_pool": "gap", "flatten": "flatten", "batchnorm": "bn",
                   "dropout": "dropout", "alpha_dropout": "dropout", "activation": "act",
                   "rescaling": "rescale", "network": "block"}


# ===================================================================== a network as a layer
@dataclass
class Block(LayerSpec):
    """A whole network used as one layer of another, like a Keras model inside a Sequential.

    ``network`` is a :class:`Network` (its weights and frozen layers come along) or its
    ``to_spec()`` dict. The block's layers get paths ``<name>/<layer>``; the block reads
    ``inputs`` (default: the layer before it) in place of the inner network's input, and its
    output is the inner network's output. The name defaults to the inner network's name.
    """

    type: ClassVar[str] = "network"
    network: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.network, Network):
            self.name = self.name or self.network.name
        elif isinstance(self.network, dict):
            self.name = self.name or self.network.get("name")
        else:
            raise ConfigError(f"Block {self.name or ''!r}: expected a Network or a network spec (dict), got "
                              f"{type(self.network).__name__}")

    @property
    def spec(self) -> dict[str, Any]:
        return self.network.to_spec() if isinstance(self.network, Network) else self.network

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "name": self.name, "spec": self.spec}
        if self.inputs is not None:
            out["inputs"] = list(self.inputs)
        return out


def _block_from_dict(d: dict[str, Any], where: str) -> Block:
    unknown = sorted(set(d) - {"type", "name", "inputs", "spec"})
    if unknown:
        raise ConfigError(f"{where} (network): unknown key(s) {', '.join(map(repr, unknown))}; a nested network "
                          f"takes name, inputs, spec")
    if not isinstance(d.get("spec"), dict):
        raise ConfigError(f"{where} (network): 'spec' must be a network spec (a mapping with input_shape and layers)")
    inputs = d.get("inputs")
    return Block(d["spec"], name=d.get("name"), inputs=[inputs] if isinstance(inputs, str) else inputs)


def _spec_from_dict(d: Any, where: str) -> LayerSpec:
    if isinstance(d, dict) and d.get("type") == Block.type:
        return _block_from_dict(d, where)
    return layer_from_dict(d, where=where)


LAYER_TYPES[Block.type] = Block  # so that listings of known types include it


# ===================================================================== running a graph
class _Plan:
    """The layers to run, in order, to compute ``outputs`` from ``given`` tensors.

    Each step's inputs are looked up by name; a tensor is dropped as soon as nothing later
    reads it (a VGG16 forward then holds one activation at a time). A plan for a chain runs
    as a plain loop.
    """

    def __init__(self, net: Network, given: tuple[str, ...], outputs: tuple[str, ...], nodes: Sequence[int]) -> None:
        self.given, self.outputs = given, outputs
        self.given_shapes = tuple(net.shape_of(g) for g in given)
        needed = set(outputs)
        steps = []
        for i in reversed(nodes):  # keep only what the outputs depend on
            name = net.layer_names[i]
            if name in needed and name not in given:
                steps.append(i)
                needed.update(net._inputs[name])
        missing = needed - set(given) - {net.layer_names[i] for i in steps}
        if missing:
            raise ConfigError(f"network {net.name!r}: cannot compute {', '.join(outputs)} from "
                              f"{', '.join(given)}: {', '.join(sorted(missing))} would be needed too")
        steps.reverse()
        last_use: dict[str, int] = {}
        for k, i in enumerate(steps):
            for src in net._inputs[net.layer_names[i]]:
                last_use[src] = k
        keep = set(outputs)
        drops: list[list[str]] = [[] for _ in steps]
        for src, k in last_use.items():
            if src not in keep:
                drops[k].append(src)
        self.steps = [(net.layer_names[i], net._layer[net.layer_names[i]], net._inputs[net.layer_names[i]],
                       net.specs[i].merges, drops[k]) for k, i in enumerate(steps)]
        names = [s[0] for s in self.steps]
        self.chain = (len(given) == 1 and len(outputs) == 1 and bool(steps) and outputs[0] == names[-1]
                      and all(s[2] == ((given[0],) if k == 0 else (names[k - 1],)) for k, s in enumerate(self.steps)))
        self.modules = [s[1] for s in self.steps]

    def run(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if self.chain and isinstance(x, torch.Tensor):
            for module in self.modules:
                x = module(x)
            return x
        env = self.values(x)
        outs = [env[o] for o in self.outputs]
        return outs[0] if len(outs) == 1 else _pack(outs)

    def values(self, x: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the steps; the outputs (and anything still read later) by name."""
        env = dict(zip(self.given, _unpack(x, self.given_shapes)))
        for name, module, inputs, merges, drop in self.steps:
            env[name] = module(*(env[i] for i in inputs)) if merges else module(env[inputs[0]])
            for gone in drop:
                del env[gone]
        return env


def _pack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Several tensors that cross a cut, side by side in one (B, F1 + F2 + ...) tensor."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)


def _unpack(x: torch.Tensor | Sequence[torch.Tensor], shapes: Sequence[Shape]) -> list[torch.Tensor]:
    if not isinstance(x, torch.Tensor):
        if len(x) != len(shapes):
            raise ShapeError(f"expected {len(shapes)} input tensors, got {len(x)}")
        return list(x)
    if len(shapes) == 1:
        return [x]
    sizes = [math.prod(s) for s in shapes]
    if x.dim() != 2 or x.shape[1] != sum(sizes):
        raise ShapeError(f"expected the packed inputs {', '.join(map(str, shapes))} as one (B, {sum(sizes)}) "
                         f"tensor, got {tuple(x.shape)}")
    return [part.reshape(x.shape[0], *shape) for part, shape in zip(torch.split(x, sizes, dim=1), shapes)]


class _Group(nn.Module):
    """A container for the modules of one path component (``vgg16`` in ``vgg16/block1_conv1``)."""


# ===================================================================== the network
class Network(nn.Module):
    """A graph of named layers with the spec that rebuilds it.

    Args:
        layers: layer specs (``Dense(300, "relu")``, merges, ``Block``s), each after its
            inputs; unnamed ones get ``dense1``, ``conv1``, ... in order.
        input_shape: shape of one example, channels-first: ``(784,)`` or ``(1, 28, 28)``.
        name: a label for summaries and saved models.
        output: the layer whose output is the network's (default: the last one).
        input_name: the name layers use to read the network's input (default ``"input"``).

    Frozen layers (``freeze``) have ``requires_grad=False`` and always run in inference
    mode: BatchNorm keeps its statistics, Dropout is off. State-dict keys are the layer
    paths with ``.`` between parts: ``hidden1.weight``, ``vgg16.block1_conv1.bias``.
    """

    def __init__(self, layers: Sequence[LayerSpec], input_shape: Sequence[int], name: str = "network", *,
                 output: str | None = None, input_name: str = INPUT,
                 block_inputs: dict[str, str | None] | None = None) -> None:
        super().__init__()
        if not isinstance(input_name, str) or not _NAME_RE.match(input_name):
            raise ConfigError(f"input_name must be a valid layer name, got {input_name!r}")
        self.name = name
        self.input_shape = _check_shape(input_shape)
        self.input_name = input_name
        self.block_inputs: dict[str, str | None] = dict(block_inputs or {})
        leaves, sources, out = _flatten(list(layers), input_name, input_name, "", self.block_inputs)
        if output is not None:
            if output not in {s.name for s in leaves}:
                raise ConfigError(f"network {name!r}: output={output!r} is not a layer; layers are "
                                  f"{format_names(s.name for s in leaves)}")
            out = output
        self._build(leaves, out, name)
        self._given: tuple[str, ...] = (input_name,)
        self._given_shapes: tuple[Shape, ...] = (self.input_shape,)
        self._outputs: tuple[str, ...] = (self.output_name,)
        self._plans: dict[tuple[int, int | None], _Plan] = {}
        self._frozen: set[str] = set()
        self._bn_affine: set[str] = set()  # frozen BatchNorms whose scale/shift still train
        self.lineage: dict[str, Any] | None = None  # where reused layers came from (transfer.graft)
        self.info: dict[str, Any] = {}  # metadata saved beside the weights: data, classes, metrics
        self.collections: dict[str, list[str]] = {}  # named groups of important outputs (add_to_collection)
        for prefix, source in sources:  # nested networks bring their frozen layers (and weights, if built)
            self._adopt(prefix, source)

    def _build(self, leaves: list[LayerSpec], output: str, name: str) -> None:
        shapes: dict[str, Shape] = {self.input_name: self.input_shape}
        self._given, self._given_shapes = (self.input_name,), (self.input_shape,)
        self.specs: list[LayerSpec] = leaves  # one per layer, named by path, inputs resolved
        self.shapes: list[Shape] = []  # output shape of each layer, batch axis excluded
        self._inputs: dict[str, tuple[str, ...]] = {}
        self._layer: dict[str, nn.Module] = {}
        self._index: dict[str, int] = {}
        previous = self.input_name
        for i, spec in enumerate(leaves):
            ins = (previous,) if spec.inputs is None else tuple(spec.inputs)
            previous = spec.name  # type: ignore[assignment]
            in_shapes = [shapes[s] for s in ins]
            try:
                if spec.merges:
                    module, shape = spec.build(in_shapes), spec.output_shape(in_shapes)  # type: ignore[arg-type]
                else:
                    if len(ins) != 1:
                        raise ShapeError(f"layer {spec.name!r} ({spec.type}) takes one input, got {len(ins)} "
                                         f"({', '.join(ins)}); join them first with a merge layer such as "
                                         f"Add or Concatenate")
                    module, shape = spec.build(in_shapes[0]), spec.output_shape(in_shapes[0])
            except ShapeError as err:
                raise ShapeError(f"network {name!r}: {err}") from None
            shapes[spec.name] = shape  # type: ignore[index]
            self.shapes.append(shape)
            self._inputs[spec.name] = ins  # type: ignore[index]
            self._layer[spec.name] = module  # type: ignore[index]
            self._index[spec.name] = i  # type: ignore[index]
            _register(self, spec.name, module)  # type: ignore[arg-type]
        self.output_name = output
        self._readers: dict[str, list[int]] = {n: [] for n in [self.input_name, *self._index]}
        for i, spec in enumerate(leaves):
            for src in self._inputs[spec.name]:  # type: ignore[index]
                self._readers[src].append(i)
        needed = self._ancestors([output]) | {output}
        dead = [n for n in self._index if n not in needed]
        if dead:
            raise ConfigError(f"network {name!r}: layer(s) {format_names(dead)} feed nothing that reaches the "
                              f"output {output!r}; remove them, or name the output with output=...")

    def _adopt(self, prefix: str, source: Network | dict[str, Any]) -> None:
        """Copy a nested network's weights and frozen state into the block at ``prefix``."""
        if isinstance(source, Network):
            key = re.sub(r"[/.]", ".", prefix)
            state = {key + k: v for k, v in source.state_dict().items()}
            self.load_state_dict({**self.state_dict(), **state})
            frozen, affine = source.frozen, source.bn_affine
        else:
            frozen, affine = source.get("frozen") or [], source.get("bn_affine") or []
        if frozen:
            self.freeze([prefix + n for n in frozen], bn_affine=[prefix + n for n in affine] or False)

    # ----------------------------------------------------------------- building
    @classmethod
    def mlp(
        cls,
        input_shape: int | Sequence[int],
        hidden: Sequence[int],
        n_outputs: int,
        *,
        activation: str = "relu",
        init: str | None = None,
        output_activation: str | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
        l2: float = 0.0,
        max_norm: float | None = None,
        name: str = "mlp",
    ) -> Network:
        """The book's multilayer perceptron: ``hidden1..hiddenN`` then ``outputs``.

        ``init`` defaults to what suits the activation (He for the ReLU family, LeCun for
        SELU, Glorot otherwise). Image inputs get a ``flatten`` layer first.

        >>> Network.mlp(784, [300, 100], 10).layer_names
        ['hidden1', 'hidden2', 'outputs']
        """
        shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        init = init or default_init(activation)
        layers: list[LayerSpec] = [Flatten(name="flatten")] if len(shape) > 1 else []
        for i, units in enumerate(hidden, start=1):
            layers.append(Dense(units, None if batch_norm else activation, init=init, l2=l2,
                                max_norm=max_norm, name=f"hidden{i}"))
            if batch_norm:
                layers += [BatchNorm(name=f"bn{i}"), Activation(activation, name=f"act{i}")]
            if dropout:
                layers.append(Dropout(dropout, name=f"dropout{i}"))
        layers.append(Dense(n_outputs, output_activation, init="glorot_uniform", name="outputs"))
        return cls(layers, shape, name=name)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], source: str = "spec") -> Network:
        """Rebuild a network (layers, frozen state, lineage) from ``to_spec()``'s dict.

        Reads the chain specs graftnet 0.1 wrote (``graftnet.network/1``) as well.
        """
        if not isinstance(spec, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(spec).__name__}")
        missing = [k for k in ("input_shape", "layers") if k not in spec]
        if missing:
            raise ConfigError(f"{source}: missing key(s) {', '.join(missing)}; a network spec has "
                              f"format, name, input_shape, layers, frozen")
        fmt = spec.get("format", SPEC_FORMAT)
        if fmt not in _READABLE_FORMATS:
            raise ConfigError(f"{source}: unsupported spec format {fmt!r}; this graftnet reads "
                              f"{', '.join(map(repr, _READABLE_FORMATS))}")
        if not isinstance(spec["layers"], list):
            raise ConfigError(f"{source}: 'layers' must be a list of layer specs")
        layers = [_spec_from_dict(d, f"{source}: layers[{i}]") for i, d in enumerate(spec["layers"])]
        outputs = spec.get("outputs")
        if outputs is not None and (not isinstance(outputs, list) or len(outputs) != 1):
            raise ConfigError(f"{source}: 'outputs' must be a list of one layer name, got {outputs!r}")
        net = cls(layers, spec["input_shape"], name=spec.get("name", "network"),
                  output=outputs[0] if outputs else None, input_name=spec.get("input_name", INPUT),
                  block_inputs=spec.get("block_inputs"))
        frozen = spec.get("frozen", [])
        if frozen:
            net.freeze(list(frozen), bn_affine=spec.get("bn_affine", []) or False)
        net.lineage = spec.get("lineage")
        collections = spec.get("collections") or {}
        if not isinstance(collections, dict) or not all(isinstance(v, list) for v in collections.values()):
            raise ConfigError(f"{source}: 'collections' must map a name to a list of layer names, got {collections!r}")
        for key, members in collections.items():
            for member in members:
                net.add_to_collection(key, member)
        return net

    def to_spec(self) -> dict[str, Any]:
        """JSON-able description: everything needed to rebuild this network but its weights."""
        if self._given != (self.input_name,):
            raise ConfigError(f"a part of network {self.name!r} that starts at {', '.join(self._given)} cannot be "
                              f"saved on its own; save the whole network")
        layers = [spec.to_dict() for spec in self.specs]
        out: dict[str, Any] = {"format": SPEC_FORMAT, "name": self.name, "input_shape": list(self.input_shape)}
        if self.input_name != INPUT:
            out["input_name"] = self.input_name
        out["layers"] = layers
        if self.output_name != self.specs[-1].name:
            out["outputs"] = [self.output_name]
        if self.block_inputs:
            out["block_inputs"] = dict(self.block_inputs)
        out.update({"frozen": self.frozen, "bn_affine": self.bn_affine, "lineage": self.lineage})
        if self.collections:
            out["collections"] = {k: list(v) for k, v in self.collections.items()}
        return out

    # ---------------------------------------------------------------- collections
    def add_to_collection(self, name: str, layer: str) -> Network:
        """Name an important output so that a later user fetches it by name (TF's collections).

        ``layer`` is a layer's path or the network's input name; a collection may hold several,
        in the order they were added. Collections are saved in ``spec.json``.

        >>> net = Network.mlp(4, [3], 2).add_to_collection("logits", "outputs")
        >>> net.fetch(torch.zeros(1, 4), "logits").shape
        torch.Size([1, 2])
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a collection name is a non-empty string, got {name!r}")
        if layer != self.input_name and layer not in self._index:
            raise ConfigError(f"add_to_collection({name!r}, {layer!r}): no such layer; layers are "
                              f"{format_names([self.input_name, *self._index])}"
                              f"{did_you_mean(layer, list(self._index))}")
        members = self.collections.setdefault(name, [])
        if layer not in members:
            members.append(layer)
        return self

    def get_collection(self, name: str) -> list[str]:
        """The layer names in collection ``name``."""
        if name not in self.collections:
            existing = format_names(self.collections) if self.collections else "none"
            raise ConfigError(f"no collection {name!r}; collections are {existing}")
        return list(self.collections[name])

    def fetch(self, x: torch.Tensor, name: str) -> torch.Tensor | list[torch.Tensor]:
        """Run ``x`` and return what collection ``name`` holds (or layer ``name``'s output).

        A collection of one layer gives its tensor, a longer one a list in the collection's
        order; only the layers those outputs need run.
        """
        if name in self.collections:
            members = self.collections[name]
        elif name == self.input_name or name in self._index:
            members = [name]
        else:
            existing = format_names(self.collections) if self.collections else "none"
            raise ConfigError(f"fetch: {name!r} is neither a collection nor a layer; collections are "
                              f"{existing}; layers are {format_names(self._index)}")
        layers = [m for m in members if m != self.input_name]
        got = self.intermediate(x, layers) if layers else {}
        got[self.input_name] = x
        out = [got[m] for m in members]
        return out[0] if name not in self.collections or len(out) == 1 else out

    def operations(self) -> list[str]:
        """One line per layer, as TensorFlow's ``graph.get_operations()`` lists a graph:
        name, type, the tensors it reads, its output shape (batch axis as None).

        >>> print("\\n".join(Network.mlp(784, [300], 10).operations()))
        hidden1  dense(relu)  <- input    (None, 300)
        outputs  dense        <- hidden1  (None, 10)
        """
        rows = [(r["name"], r["type"], ", ".join(r["inputs"]), str((None, *r["output_shape"])))
                for r in self.summary_rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return [f"{n:<{widths[0]}}  {t:<{widths[1]}}  <- {i:<{widths[2]}}  {shape}" for n, t, i, shape in rows]

    # ---------------------------------------------------------------- naming
    @property
    def layer_names(self) -> list[str]:
        """Every layer's path, in an order in which each layer comes after its inputs."""
        return list(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._layer.values())

    @property
    def output_shape(self) -> Shape:
        """Shape of one example's output (several outputs of a part: packed side by side)."""
        shapes = [self.shape_of(o) for o in self._outputs]
        return shapes[0] if len(shapes) == 1 else (sum(math.prod(s) for s in shapes),)

    def shape_of(self, name: str) -> Shape:
        """The output shape of layer ``name`` (or of the network's input)."""
        if name in self._given:
            return self._given_shapes[self._given.index(name)]
        if name in self._index:
            return self.shapes[self._index[name]]
        self.layer(name)  # raises the error that lists the layers
        raise AssertionError

    def layer(self, name: str) -> nn.Module:
        """The module called ``name`` (or the container of block ``name``); an error lists the names."""
        if name in self._layer:
            return self._layer[name]
        if name in self.blocks:
            module: nn.Module = self
            for part in re.split(r"[/.]", name):
                module = module._modules[part]  # type: ignore[assignment]
            return module
        raise ConfigError(f"No such layer: {name!r}. Existing layers are: "
                          f"{format_names(self.layer_names)}.{did_you_mean(name, self.layer_names + self.blocks)}")

    def _put(self, name: str, module: nn.Module) -> None:
        """Use ``module`` as layer ``name`` (``graft(share=True)``: the base's own module)."""
        self.index(name)
        self._layer[name] = module
        _register(self, name, module)
        self._plans.clear()

    def named_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """(path, module) of every layer, in order."""
        return iter(self._layer.items())

    def spec_of(self, name: str) -> LayerSpec:
        return self.specs[self.index(name)]

    def index(self, name: str) -> int:
        if name not in self._index:
            self.layer(name)
            raise ConfigError(f"{name!r} is a block, not a layer; its layers are {format_names(self.block(name))}")
        return self._index[name]

    def inputs_of(self, name: str) -> list[str]:
        """The names of the layers (or the network input) that ``name`` reads."""
        self.index(name)
        return list(self._inputs[name])

    def readers_of(self, name: str) -> list[str]:
        """The layers that read the output of ``name``."""
        if name not in self._readers:
            self.layer(name)
        return [self.layer_names[i] for i in self._readers.get(name, [])]

    @property
    def blocks(self) -> list[str]:
        """Paths of the nested networks, outermost first (``['vgg16']``)."""
        found: dict[str, None] = {}
        for path in self._index:
            parts = path.split("/")[:-1]
            for k in range(1, len(parts) + 1):
                found["/".join(parts[:k])] = None
        return list(found)

    def block(self, path: str) -> list[str]:
        """The layers of block ``path``, in order."""
        if path not in self.blocks:
            raise ConfigError(f"No such block: {path!r}. Blocks are: {format_names(self.blocks)}"
                              f"{did_you_mean(path, self.blocks)}")
        return [n for n in self._index if n.startswith(path + "/")]

    def block_of(self, name: str) -> str:
        """The block a layer is in (``''`` at the top)."""
        return name.rsplit("/", 1)[0] if "/" in name else ""

    @property
    def is_chain(self) -> bool:
        """Whether every layer reads the one before it (and the first one the input)."""
        names = [self.input_name, *self._index]
        return self.output_name == names[-1] and all(self._inputs[n] == (names[i],) for i, n in enumerate(names[1:]))

    def select(self, selector: Selector, *, what: str = "selector") -> list[str]:
        """Names picked by ``selector``, in network order. Matching nothing is an error.

        >>> Network.mlp(4, [3, 3, 3], 2).select(":-1")
        ['hidden1', 'hidden2', 'hidden3']
        """
        picked = _select(self, selector, what)
        if not picked:
            hint = ""
            if isinstance(selector, str) and self.blocks and "/" not in selector:
                hint = f"; inside blocks, match the path, e.g. '{self.blocks[0]}/{selector}'"
            raise ConfigError(f"{what}={selector!r} matched no layer; layers are {format_names(self.layer_names)}"
                              f"{hint}")
        return picked

    def keras_layers(self, block: str = "") -> list[str | list[str]]:
        """What Keras' ``model.layers`` lists for the model at ``block`` (``''``: this one).

        Each entry is a layer name, a nested block's layers (a list), or the input layer
        (its name) when the model had one. ``"vgg16.layers[15:]"`` selects from this list.
        """
        prefix = block + "/" if block else ""
        if block and block not in self.blocks:
            raise ConfigError(f"No such block: {block!r}. Blocks are: {format_names(self.blocks)}")
        entries: dict[str, list[str]] = {}
        for path in self._index:
            if path.startswith(prefix):
                head = path[len(prefix):].split("/", 1)[0]
                entries.setdefault(prefix + head, []).append(path)
        items: list[str | list[str]] = []
        keras_input = self.block_inputs.get(block)
        if keras_input:
            items.append(prefix + keras_input)
        for key, paths in entries.items():
            items.append(paths if key in self.blocks else key)
        return items

    # -------------------------------------------------------------- freezing
    @property
    def frozen(self) -> list[str]:
        """Names of frozen layers, in network order."""
        return [n for n in self._index if n in self._frozen]

    @property
    def bn_affine(self) -> list[str]:
        """Frozen BatchNorm layers whose scale/shift still train (``freeze(bn_affine=...)``)."""
        return [n for n in self._index if n in self._bn_affine]

    @property
    def trainable(self) -> list[str]:
        """Names of layers that train (parameter-free layers count as trainable unless frozen)."""
        return [n for n in self._index if n not in self._frozen]

    def freeze(self, selector: Selector = "all", *, bn_affine: bool | Selector = False) -> Network:
        """Stop the selected layers from learning: no gradients, inference mode.

        ``bn_affine=True`` keeps the scale/shift of frozen BatchNorm layers trainable while
        their statistics stay frozen (or pass a selector of the BatchNorms to treat so).
        Returns ``self`` so calls chain.
        """
        picked = self.select(selector, what="freeze")
        if bn_affine is True:
            affine = {n for n in picked if isinstance(self._layer[n], BatchNormModule)}
        elif bn_affine:
            affine = set(self.select(bn_affine, what="bn_affine"))
        else:
            affine = set()
        for name in picked:
            module = self._layer[name]
            for p in module.parameters():
                p.requires_grad_(name in affine)
            module.train(False)
        self._frozen |= set(picked)
        self._bn_affine = (self._bn_affine - set(picked)) | affine
        return self

    def unfreeze(self, selector: Selector = "all") -> Network:
        """Let the selected layers learn again (they follow the network's train/eval mode)."""
        picked = self.select(selector, what="unfreeze")
        for name in picked:
            module = self._layer[name]
            for p in module.parameters():
                p.requires_grad_(True)
            module.train(self.training)
        self._frozen -= set(picked)
        self._bn_affine -= set(picked)
        return self

    def train(self, mode: bool = True) -> Network:
        super().train(mode)
        for name in self._frozen:
            self._layer[name].train(False)
        return self

    # --------------------------------------------------------------- running
    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run layers ``start`` to ``stop`` (positions, end excluded) on a batch.

        ``x`` is what crosses the cut before ``start``: the input for ``start=0``, else the
        outputs of the layers below ``start`` that layers from ``start`` on read (one tensor in
        a chain; several in a graph, given as a tuple or packed side by side as
        ``forward(x, stop=start)`` returns them). The result is the network's output, or
        what crosses the cut before ``stop``.
        """
        key = (start, stop)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(start, stop)
        return plan.run(x)

    def _make_plan(self, start: int, stop: int | None) -> _Plan:
        n = len(self._index)
        start = start % n if start < 0 else start
        stop_i = n if stop is None else (stop % n if stop < 0 else min(stop, n))
        outputs = self._outputs if stop_i == n else self.cut_names(stop_i)
        return _Plan(self, self.cut_names(start), outputs, range(start, stop_i))

    def cut_names(self, k: int) -> tuple[str, ...]:
        """What crosses the cut before position ``k``: the outputs of layers (or inputs) below
        ``k`` that layers from ``k`` on read, or that are the network's output; in order.

        >>> Network.mlp(4, [3, 3], 2).cut_names(2)
        ('hidden2',)
        """
        if k <= 0:
            return self._given
        names = [*self._given, *self.layer_names[:k]]
        return tuple(s for s in names if s in self._outputs or any(r >= k for r in self._readers.get(s, [])))

    def intermediate(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The outputs of the layers ``names`` on a batch (running only what they need)."""
        wanted = tuple(dict.fromkeys(names))
        for name in wanted:
            self.index(name)
        env = _Plan(self, self._given, wanted, range(len(self._index))).values(x)
        return {n: env[n] for n in wanted}

    def inference_batch_size(self, start: int = 0, budget_bytes: int = 64 * 2**20, limit: int = 8192) -> int:
        """Examples per batch for inference from layer ``start`` on: as many as keep the
        largest float32 activation within ``budget_bytes`` (at least 16, at most ``limit``).

        A small MLP gets ``limit``; VGG16 at 150x150 (64x150x150 floats after conv1) gets 16.
        """
        shapes = [self.shape_of(s) for s in self.cut_names(start)] + self.shapes[start:]
        largest = max(math.prod(s) for s in shapes) * 4  # bytes of one example's largest activation
        return int(min(max(budget_bytes // largest, 16), limit))

    def split(self, at: str | int) -> tuple[Network, Network]:
        """Cut after layer ``at`` into (lower, upper) networks that share this one's modules.

        In a graph the lower part returns every tensor the upper part reads, packed side by
        side when there are several (``cut_names`` says which).
        """
        k = (self.index(at) if isinstance(at, str) else at % len(self)) + 1
        return self._view(0, k), self._view(k, len(self))

    def _view(self, start: int, stop: int) -> Network:
        if not (start == 0 or stop == len(self)):
            raise ConfigError("a view of a network is a lower part (from 0) or an upper part (to the end)")
        names = self.layer_names[start:stop]
        view = Network.__new__(Network)
        nn.Module.__init__(view)
        view.name, view.input_name, view.block_inputs = self.name, self.input_name, {}
        view._given = self.cut_names(start)
        view._given_shapes = tuple(self.shape_of(g) for g in view._given)
        view.input_shape = (view._given_shapes[0] if len(view._given) == 1
                            else (sum(math.prod(s) for s in view._given_shapes),))
        view.specs, view.shapes = self.specs[start:stop], self.shapes[start:stop]
        view._inputs = {n: self._inputs[n] for n in names}
        view._layer = {n: self._layer[n] for n in names}
        view._index = {n: i for i, n in enumerate(names)}
        for n in names:
            _register(view, n, self._layer[n])
        view._readers = {s: [] for s in [*view._given, *names]}
        for i, n in enumerate(names):
            for src in view._inputs[n]:
                view._readers[src].append(i)
        view._outputs = self._outputs if stop == len(self) else self.cut_names(stop)
        view.output_name = view._outputs[0]
        view._plans = {}
        view._frozen, view._bn_affine = self._frozen & set(names), self._bn_affine & set(names)
        view.lineage, view.info, view.collections = None, {}, {}
        view.train(self.training)
        return view

    def _ancestors(self, names: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = [n for n in names if n in self._inputs]
        while todo:
            name = todo.pop()
            for src in self._inputs[name]:
                if src in self._inputs and src not in seen:
                    seen.add(src)
                    todo.append(src)
        return seen

    def ancestors(self, name: str) -> list[str]:
        """Every layer ``name`` depends on, in network order."""
        self.index(name)
        found = self._ancestors([name])
        return [n for n in self._index if n in found]

    # ----------------------------------------------------------- regularizing
    def penalty(self) -> torch.Tensor | None:
        """Sum of the l1/l2 penalties of trainable layers (``None`` when there are none)."""
        terms = [m.penalty() for n, m in self._layer.items()
                 if n not in self._frozen and hasattr(m, "penalty")]
        terms = [t for t in terms if t is not None]
        return torch.stack(terms).sum() if terms else None

    def has_constraints(self) -> bool:
        return (any(getattr(s, "max_norm", None) for s in self.specs)
                or any(hasattr(m, "weight_mask") or getattr(m, "max_norm_limit", None) for m in self._layer.values()))

    def apply_constraints(self) -> None:
        """Apply max-norm constraints and pruning masks (``graftnet.sparse``) of trainable
        layers (call after each optimizer step)."""
        with torch.no_grad():
            for name, module in self._layer.items():
                if name in self._frozen:
                    continue
                if hasattr(module, "apply_max_norm"):
                    module.apply_max_norm()
                mask = getattr(module, "weight_mask", None)
                if mask is not None:
                    module.weight.mul_(mask)  # pruned weights stay exactly zero

    # ---------------------------------------------------------------- describing
    def count_params(self, name: str | None = None, trainable_only: bool = False) -> int:
        module = self if name is None else self.layer(name)
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per layer: name, type, inputs, block, output shape, params, trainable, origin."""
        origins = (self.lineage or {}).get("layers", {})
        rows = []
        for name, spec, shape in zip(self.layer_names, self.specs, self.shapes):
            n_params = self.count_params(name)
            if name in self._bn_affine:
                trainable = "scale/shift"
            elif name in self._frozen:
                trainable = "frozen"
            else:
                trainable = "yes" if n_params else "-"
            kind = spec.type
            act = getattr(spec, "activation", None)
            if act and spec.type != "activation" and isinstance(act, str) and parse_activation(act)[0] != "linear":
                kind += f"({act})"
            rows.append({"name": name, "type": kind, "inputs": list(self._inputs[name]), "block": self.block_of(name),
                         "output_shape": shape, "params": n_params, "trainable": trainable,
                         "origin": origins.get(name, "")})
        return rows

    def summary(self) -> str:
        """A table like Keras' ``model.summary()`` plus where each layer came from.

        A graph also shows what each layer reads (``inputs``: ``-`` for the layer before it).
        """
        rows = self.summary_rows()
        show_origin = any(r["origin"] for r in rows)
        graph = not self.is_chain
        header = (["layer", "type"] + (["inputs"] if graph else []) + ["output shape", "params", "trainable"]
                  + (["origin"] if show_origin else []))
        previous, body = self.input_name, []
        for r in rows:
            reads = "-" if r["inputs"] == [previous] else ", ".join(r["inputs"])
            previous = r["name"]
            body.append([r["name"], r["type"]] + ([reads] if graph else [])
                        + ["(None, " + ", ".join(map(str, r["output_shape"])) + ")", f"{r['params']:,}",
                           r["trainable"]] + ([r["origin"]] if show_origin else []))
        numeric = header.index("params")
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
        line = lambda cells: "  ".join(c.rjust(w) if i == numeric else c.ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        total, trainable = self.count_params(), self.count_params(trainable_only=True)
        out = [f"{self.name}: input (None, {', '.join(map(str, self.input_shape))})", line(header),
               "-" * (sum(widths) + 2 * (len(widths) - 1))]
        block = ""
        for r, b in zip(rows, body):
            if r["block"] != block and self.blocks:
                block = r["block"]
                out.append(f"[{block or self.name}]")
            out.append(line(b))
        out.append(f"params: {total:,} total, {trainable:,} trainable, {total - trainable:,} frozen")
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"Network({self.name!r}, layers=[{format_names(self.layer_names)}], frozen=[{format_names(self.frozen)}])"


def default_init(activation: str | None) -> str:
    """The initializer that suits ``activation``: He for the ReLU family, LeCun for SELU, else Glorot.

        >>> default_init("leaky_relu(0.2)"), default_init("selu"), default_init(None)
        ('he_normal', 'lecun_normal', 'glorot_uniform')
    """
    name = parse_activation(activation)[0]
    if name in ("relu", "leaky_relu", "rrelu", "elu", "gelu"):
        return "he_normal"
    return "lecun_normal" if name == "selu" else "glorot_uniform"


def _check_shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape must be a list of positive integers, got {shape!r}") from None
    if not out or any(s < 1 for s in out):
        raise ConfigError(f"input_shape must be a non-empty list of positive integers, got {list(out)}")
    return out


# ===================================================================== specs -> a flat graph
def _assign_names(specs: list[LayerSpec], input_name: str) -> list[LayerSpec]:
    if not specs:
        raise ConfigError("a network needs at least one layer")
    taken = {s.name for s in specs if isinstance(s, LayerSpec) and s.name}
    counters: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, LayerSpec):
            raise ConfigError(f"layers[{i}] is a {type(spec).__name__}, expected a layer spec such as Dense(10)")
        if spec.name is None:
            prefix = _DEFAULT_PREFIX.get(spec.type, spec.type)
            while True:
                counters[prefix] = counters.get(prefix, 0) + 1
                candidate = prefix if prefix == "flatten" and counters[prefix] == 1 else f"{prefix}{counters[prefix]}"
                if candidate not in taken:
                    break
            spec.name = candidate
            taken.add(candidate)
        elif not isinstance(spec.name, str) or not _NAME_RE.match(spec.name):
            raise ConfigError(f"layer name {spec.name!r} is not valid: use letters, digits, '_' or '-', with '/' "
                              f"between a block and its layers and '.' between parts (as in 'layer4.1.conv2')")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"layer name {spec.name!r} is used twice; layer names must be unique")
        if spec.name == input_name:
            raise ConfigError(f"layer name {spec.name!r} is the name of the network's input; rename the layer")
        seen.add(spec.name)  # type: ignore[arg-type]
    return specs


def _flatten(specs: list[LayerSpec], input_name: str, outer_input: str, prefix: str,
             block_inputs: dict[str, str | None]) -> tuple[list[LayerSpec], list[tuple[str, Any]], str]:
    """Leaf specs (copies named by path, inputs resolved to paths), nested Networks to take
    weights from, and the path of the output. Blocks are expanded in place."""
    specs = _assign_names(specs, input_name)
    local = [s.name for s in specs]
    alias: dict[str, str] = {input_name: outer_input}  # a name at this level -> the path it stands for
    leaves: list[LayerSpec] = []
    sources: list[tuple[str, Any]] = []
    previous = outer_input
    for i, spec in enumerate(specs):
        refs = list(spec.inputs) if spec.inputs is not None else None
        if refs is not None and not refs:
            raise ConfigError(f"layer {prefix}{spec.name!r}: inputs=[] names no layer; leave inputs out to read "
                              f"the layer before")
        resolved = [previous] if refs is None else [_resolve(r, alias, local, i, specs, prefix) for r in refs]
        if isinstance(spec, Block):
            if len(resolved) != 1:
                raise ConfigError(f"block {prefix}{spec.name!r} takes one input, got {len(resolved)}")
            inner = spec.spec
            if not isinstance(inner, dict) or "layers" not in inner:
                raise ConfigError(f"block {prefix}{spec.name!r}: its spec has no 'layers'")
            inner_layers = [_spec_from_dict(d, f"block {prefix}{spec.name!r}: layers[{k}]")
                            for k, d in enumerate(inner["layers"])]
            path = f"{prefix}{spec.name}/"
            inner_input = inner.get("input_name", INPUT)
            sub, sub_sources, out = _flatten(inner_layers, inner_input, resolved[0], path, block_inputs)
            for key, value in (inner.get("block_inputs") or {}).items():
                block_inputs[path + key if key else path[:-1]] = value
            outputs = inner.get("outputs")
            if outputs:
                out = path + outputs[0]
            leaves += sub
            sources += sub_sources
            sources.append((path, spec.network))
            alias[spec.name] = out  # type: ignore[index]
        else:
            leaf = copy.copy(spec)
            # a leaf keeps inputs=None where it reads the layer before it, so that a list of specs
            # taken from a chain (net.specs) still builds a chain after layers are added or removed
            leaf.name = prefix + spec.name  # type: ignore[operator]
            leaf.inputs = None if resolved == [previous] else resolved
            if leaf.merges:
                leaf.check_arity(len(resolved))  # type: ignore[attr-defined]
            leaves.append(leaf)
            alias[spec.name] = leaf.name  # type: ignore[index]
        previous = alias[spec.name]  # type: ignore[index]
    return leaves, sources, previous


def _resolve(ref: str, alias: dict[str, str], local: list[str], i: int, specs: list[LayerSpec], prefix: str) -> str:
    name = f"{prefix}{specs[i].name}"
    if not isinstance(ref, str):
        raise ConfigError(f"layer {name!r}: inputs must be layer names, got {ref!r}")
    if ref in alias:
        return alias[ref]
    if ref in local:  # a layer listed later (or itself): a cycle, or an order to fix
        cycle = _find_cycle(specs, local)
        if cycle:
            raise ConfigError(f"the layers form a cycle: {' -> '.join(prefix + c for c in cycle)}; a network is a "
                              f"graph without cycles")
        raise ConfigError(f"layer {name!r} reads {prefix}{ref!r}, which is listed after it; list each layer after "
                          f"the layers it reads")
    nested = [p for p in alias.values() if p == prefix + ref]
    if nested:
        return nested[0]
    known = [k for k in alias if k in local or k == next(iter(alias))]
    raise ConfigError(f"layer {name!r} reads {ref!r}, which does not exist; it can read "
                      f"{format_names(known)}.{did_you_mean(ref, known)}")


def _find_cycle(specs: list[LayerSpec], local: list[str]) -> list[str] | None:
    previous = {s.name: (local[k - 1] if k else None) for k, s in enumerate(specs)}
    edges = {s.name: [r for r in (s.inputs if s.inputs is not None else [previous[s.name]]) if r in local]
             for s in specs}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if not state.get(nxt):
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in local:
        if not state.get(node):
            found = visit(node)
            if found:
                return list(reversed(found))
    return None


def _register(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at ``path`` in ``root``'s module tree (``a/b.c`` -> root.a.b.c), so that
    state-dict keys read like the path."""
    parts = re.split(r"[/.]", path)
    node = root
    for k, part in enumerate(parts[:-1]):
        child = node._modules.get(part)
        if child is None:
            child = _Group()
            node._modules[part] = child  # as for the layer itself below: 'block', 'layer' are torch names too
        elif not isinstance(child, _Group):
            raise ConfigError(f"layer name {path!r} clashes with layer {'.'.join(parts[:k + 1])!r}: a layer's name "
                              f"cannot be the start of another's path")
        node = child
    if isinstance(node._modules.get(parts[-1]), _Group):
        raise ConfigError(f"layer name {path!r} is also the start of other layers' paths; rename it")
    node._modules[parts[-1]] = module


# ===================================================================== selectors
def _select(net: Network, selector: Selector, what: str) -> list[str]:
    names = net.layer_names
    if selector is None or (isinstance(selector, str) and selector.strip().lower() in ("all", "*")):
        return list(names)
    if isinstance(selector, bool):
        raise ConfigError(f"{what}={selector!r} is not a selector; use a regex, a slice such as ':-1', or names")
    if isinstance(selector, int):
        try:
            return [names[selector]]
        except IndexError:
            raise ConfigError(f"{what}={selector} is out of range: the network has {len(names)} layers "
                              f"({format_names(names)})") from None
    if isinstance(selector, str):
        return _select_text(net, selector, what)
    if isinstance(selector, Iterable):
        wanted = list(selector)
        blocks = net.blocks
        unknown = [w for w in wanted if w not in net._index and w not in blocks]
        if unknown:
            raise ConfigError(f"{what}: no such layer(s) {', '.join(map(repr, unknown))}; layers are "
                              f"{format_names(names)}.{did_you_mean(str(unknown[0]), names + blocks)}")
        picked = {w for w in wanted if w in net._index}
        for w in wanted:
            if w in blocks:
                picked.update(net.block(w))
        return [n for n in names if n in picked]
    raise ConfigError(f"{what}={selector!r}: expected a regex, a slice such as ':-1', a position or a list of names")


def _select_text(net: Network, selector: str, what: str) -> list[str]:
    names = net.layer_names
    sl = _SLICE_RE.match(selector)
    if sl:
        return names[_slice(sl)]
    if selector.strip().lstrip("-").isdigit():
        return _select(net, int(selector), what)
    if _TENSOR_RE.match(selector):
        return _select_tensor(net, selector.strip(), what)
    keras = _KERAS_LIST_RE.match(selector)
    if keras:
        return _select_keras_list(net, keras.group("block") or "", keras.group("index"), selector, what)
    if "/" in selector:  # positions within a block: "vgg16/-4:" or "vgg16/3"
        block, _, rest = selector.rpartition("/")
        inner = _SLICE_RE.match(rest)
        if block in net.blocks and (inner or rest.strip().lstrip("-").isdigit()):
            layers = net.block(block)
            if inner:
                return layers[_slice(inner)]
            try:
                return [layers[int(rest)]]
            except IndexError:
                raise ConfigError(f"{what}={selector!r}: block {block!r} has {len(layers)} layers") from None
    try:
        pattern = re.compile(selector)
    except re.error as err:
        raise ConfigError(f"{what}={selector!r} is not a valid regex ({err}); layers are {format_names(names)}") from None
    blocks = [b for b in net.blocks if pattern.fullmatch(b)]
    return [n for n in names if pattern.fullmatch(n) or any(n.startswith(b + "/") for b in blocks)]


def _select_tensor(net: Network, selector: str, what: str) -> list[str]:
    """A TensorFlow tensor name (``"dnn/hidden3/Relu:0"``) of an imported graph: the layer that
    computes it and everything it depends on ("reuse up to here")."""
    tf = net.info.get("tensorflow") or {}
    tensors = tf.get("tensors") or {}
    if selector not in tensors:
        op = selector.rsplit(":", 1)[0]
        inside = next((layer for layer, ops in (tf.get("ops") or {}).items() if op in ops), None)
        where = f"; {op!r} is computed inside layer {inside!r} (e.g. before its activation), not at its output" \
            if inside else ""
        known = format_names(list(tensors)) if tensors else "none (the network was not imported from a TF graph)"
        raise ConfigError(f"{what}={selector!r} names a TensorFlow tensor that is no layer's output{where}; "
                          f"the layers' TensorFlow tensors are {known}.{did_you_mean(selector, list(tensors))}")
    wanted, stack = set(), [tensors[selector]]
    while stack:
        name = stack.pop()
        if name in wanted or name not in net._index:
            continue
        wanted.add(name)
        stack += list(net._inputs[name])
    return [n for n in net.layer_names if n in wanted]


def _slice(match: re.Match[str]) -> slice:
    start, stop = (int(g) if g is not None else None for g in match.groups())
    return slice(start, stop)


def _select_keras_list(net: Network, block: str, index: str, selector: str, what: str) -> list[str]:
    if block and block not in net.blocks:
        raise ConfigError(f"{what}={selector!r}: no block {block!r}; blocks are {format_names(net.blocks)}")
    items = net.keras_layers(block)
    sl = _SLICE_RE.match(index)
    if sl:
        chosen = items[_slice(sl)]
    elif index.strip().lstrip("-").isdigit():
        try:
            chosen = [items[int(index)]]
        except IndexError:
            raise ConfigError(f"{what}={selector!r}: that model lists {len(items)} layers") from None
    else:
        raise ConfigError(f"{what}={selector!r}: expected a position or a slice inside layers[...], e.g. layers[15:]")
    picked: set[str] = set()
    for item in chosen:
        picked.update(item if isinstance(item, list) else [item])
    return [n for n in net.layer_names if n in picked]  # the input layer, if chosen, has no weights to pick

