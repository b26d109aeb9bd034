"""Any PyTorch module as a graftnet graph: trace it with torch.fx, turn each node into a layer.

``from_torch`` traces ``module.forward`` with ``torch.fx.symbolic_trace``, maps every node
of the traced graph to a graftnet layer, builds the ``Network``, copies the weights in and
checks that both give the same outputs on ``example_input``::

    >>> import graftnet as gn
    >>> net = gn.from_torch(resnet18, torch.randn(2, 3, 32, 32))
    >>> net.layer_names[:6]
    ['conv1', 'bn1', 'relu', 'maxpool', 'layer1.0.conv1', 'layer1.0.bn1']
    >>> net.info["parity"]["max_abs_diff"]        # against resnet18(example_input)
    0.0

Names are the module's own. A call of a submodule is the layer of that qualified name
(``layer4.1.conv2``), so state-dict keys stay the same (``layer4.1.conv2.weight``); a
function or tensor method gets its fx node's name inside the module it was called from
(``out += identity`` in ``layer4.1`` is ``layer4.1.add``; a second ``F.relu`` there is
``layer4.1.relu_1``). A parameter-free module called twice (torchvision's ``relu``) becomes
one layer per call (``layer4.1.relu``, ``layer4.1.relu_1``); a module with weights called
twice (shared weights) is refused.

What graftnet cannot convert is listed all at once, each obstacle naming the module
(qualified name and type) or the operation (fx node and its target), before anything is
built. ``SUPPORTED_MODULES`` and ``SUPPORTED_FUNCTIONS`` say what converts.
"""

from __future__ import annotations

import inspect
import math
import operator
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from graftnet.errors import GraftnetError, ImportFormatError, brief_error, format_names
from graftnet.io.mapping import load_tensors
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
)
from graftnet.merge import Add, Concatenate, Maximum, Minimum, Multiply, Subtract
from graftnet.network import Network

__all__ = ["SUPPORTED_FUNCTIONS", "SUPPORTED_MODULES", "from_torch"]

Shape = tuple[int, ...]

SUPPORTED_MODULES = (
    "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "ReLU", "ReLU6", "LeakyReLU", "ELU", "SELU", "GELU",
    "SiLU", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh", "Softmax", "Identity", "MaxPool2d", "AvgPool2d",
    "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Flatten", "Dropout", "AlphaDropout")
SUPPORTED_FUNCTIONS = (
    "+ - * / (two tensors, or a tensor and a number)", "torch.add/sub/mul/div", "torch.cat", "torch.maximum",
    "torch.minimum", "torch.flatten / x.flatten / x.view or x.reshape to (batch, -1)", "x.mean((2, 3))",
    "F.relu / torch.relu / x.relu() and the other activations", "F.softmax", "F.max_pool2d", "F.avg_pool2d",
    "F.adaptive_avg_pool2d", "F.dropout", "x.contiguous()")


class _Refused(Exception):
    """Why one node cannot be converted (collected, then reported together)."""


# ============================================================================ the entry point
def from_torch(module: nn.Module, example_input: torch.Tensor, *, name: str | None = None,
               tolerance: float = 1e-5, _layer_name: Callable[[str, nn.Module | None], str] | None = None
               ) -> Network:
    """Convert ``module`` into a graftnet ``Network`` with its names and weights, and check it.

    Args:
        module: an ``nn.Module`` whose ``forward`` takes one tensor and returns one, built from
            the modules in ``SUPPORTED_MODULES`` and the operations in ``SUPPORTED_FUNCTIONS``.
        example_input: a batch, ``(B, *input_shape)``; it fixes the network's input shape and
            is what both are run on to check the conversion.
        name: the network's name (default: the module's class name).
        tolerance: the largest max abs difference between the module's and the network's
            outputs on ``example_input`` (in eval mode), relative to the output's largest
            magnitude when that exceeds 1. Above it the conversion is an error.

    Returns:
        The network, on the module's device. ``net.info["parity"]`` holds the measured
        ``max_abs_diff``; ``net.info["import_report"]`` the weights' ``MappingReport``;
        parameters of submodules that ``forward`` never calls are listed in
        ``net.info["left_out"]``.

    Raises:
        ImportFormatError: torch.fx cannot trace the module (with what fx said), some modules
            or operations cannot be converted (every one of them is listed), or the outputs
            differ by more than ``tolerance``.

        >>> net = from_torch(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), torch.randn(4, 1, 8, 8))
        >>> net.layer_names
        ['0', '1']
    """
    if not isinstance(module, nn.Module):
        raise ImportFormatError(f"from_torch converts a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        got = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise ImportFormatError(f"example_input must be a batch tensor (B, *input_shape), got {got}")
    if torch.fx.Tracer().is_leaf_module(module, ""):
        raise ImportFormatError(f"from_torch converts a module built from layers; {type(module).__name__} is one "
                                f"layer: wrap it, e.g. nn.Sequential(module)")
    state = module.state_dict()
    device = next((t.device for t in state.values()), example_input.device)
    example_input = example_input.to(device)
    graph = _trace(module, example_input)
    converter = _Converter(module, graph, _layer_name)
    converter.run()
    if converter.obstacles:
        raise ImportFormatError(_obstacle_message(module, converter.obstacles))
    kind = type(module).__name__
    try:
        net = Network(converter.specs, tuple(example_input.shape[1:]), name=name or kind,
                      output=converter.output, input_name=converter.input_name)
    except GraftnetError as err:
        raise ImportFormatError(f"cannot convert {kind}: the converted graph does not build: {err}") from None
    tensors = {key: state[key] for key in converter.rename}
    report = load_tensors(net, tensors, strict=True, source=kind, rename=converter.rename)
    left_out = [key for key in state if key not in converter.rename]
    if left_out:
        report.notes.append(f"left out (their modules are never called in forward): {format_names(left_out)}")
    net.to(device)
    diff, scale = _max_abs_diff(module, net, example_input)
    parity = {"max_abs_diff": diff, "tolerance": tolerance, "output_scale": scale,
              "example_shape": list(example_input.shape)}
    if not diff <= tolerance * max(1.0, scale):
        raise ImportFormatError(f"the converted network does not reproduce {kind}: max abs difference {diff:.3g} "
                                f"on example_input (tolerance {tolerance:g} x max(1, output scale {scale:.3g}))")
    net.info.update(source=f"torch {kind}", import_report=report.to_dict(), parity=parity, left_out=left_out)
    return net


def _trace(module: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The module's fx graph (traced in eval mode, the mode a converted model is checked in),
    with dead code removed and every node's output shape recorded."""
    import torch.fx

    was_training = module.training
    module.eval()
    try:
        try:
            graph_module = torch.fx.symbolic_trace(module, concrete_args=_defaults_of(module))
        except Exception as err:  # fx raises TraceError, TypeError, RuntimeError, ... from user code
            raise ImportFormatError(
                f"torch.fx cannot trace {type(module).__name__}: {brief_error(err, limit=400)}. fx runs forward "
                f"with symbolic tensors, so Python control flow that depends on a tensor's values (if x.sum() > 0) "
                f"cannot be recorded; make forward's branches depend on settings only") from None
        inputs = [n.name for n in graph_module.graph.nodes if n.op == "placeholder" and not n.args]  # no default
        if len(inputs) != 1:
            raise ImportFormatError(f"{type(module).__name__}.forward takes {len(inputs)} tensor inputs "
                                    f"({', '.join(inputs)}); a graftnet network takes one (arguments with "
                                    f"default values are fixed at them)")
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
        try:
            with torch.no_grad():
                _ShapeRecorder(graph_module).run(example)
        except Exception as err:  # the module itself fails on example_input
            raise ImportFormatError(f"{type(module).__name__} fails on example_input of shape "
                                    f"{tuple(example.shape)}: {brief_error(err, limit=400)}") from None
    finally:
        module.train(was_training)
    return graph_module


class _ShapeRecorder(torch.fx.Interpreter):
    """Runs the traced graph once, noting in each node's meta what it gave: a tensor's shape,
    the shapes of a tuple of tensors, or None (an int, a torch.Size)."""

    def run_node(self, node: Any) -> Any:
        result = super().run_node(node)
        if isinstance(result, torch.Tensor):
            node.meta[_META] = result.shape
        elif isinstance(result, (tuple, list)) and any(isinstance(r, torch.Tensor) for r in result):
            node.meta[_META] = tuple(getattr(r, "shape", None) for r in result)
        else:
            node.meta[_META] = None
        return result


def _defaults_of(module: nn.Module) -> dict[str, Any] | None:
    """forward's arguments after the first that have defaults, fixed at them for tracing."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    fixed = {p.name: p.default for p in params[1:] if p.default is not inspect.Parameter.empty
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return fixed or None


@torch.no_grad()
def _max_abs_diff(module: nn.Module, net: Network, x: torch.Tensor) -> tuple[float, float]:
    was_training, net_training = module.training, net.training
    module.eval()
    net.eval()
    try:
        expected, got = module(x), net(x)
    finally:
        module.train(was_training)
        net.train(net_training)
    if not isinstance(expected, torch.Tensor) or expected.shape != got.shape:
        return math.inf, 0.0
    return (expected.float() - got.float()).abs().max().item(), expected.abs().max().item()


def _obstacle_message(module: nn.Module, obstacles: list[str]) -> str:
    lines = "\n".join(f"  {o}" for o in obstacles)
    return (f"cannot convert {type(module).__name__} to a graftnet network ({len(obstacles)} obstacle"
            f"{'s' if len(obstacles) != 1 else ''}):\n{lines}\n"
            f"supported modules: {', '.join(SUPPORTED_MODULES)}; supported operations: {'; '.join(SUPPORTED_FUNCTIONS)}")


# ============================================================================ the conversion
class _Converter:
    """Walks the traced graph in order, one layer spec per node (or none: a shape helper such
    as ``x.size(0)``, or an alias such as ``x.contiguous()``), collecting every obstacle."""

    def __init__(self, module: nn.Module, graph_module: torch.fx.GraphModule,
                 layer_name: Callable[[str, nn.Module | None], str] | None) -> None:
        self.root = graph_module
        self.layer_name = layer_name
        self.obstacles: list[str] = []
        self.specs: list[LayerSpec] = []
        self.rename: dict[str, str] = {}  # torch state key -> graftnet state key
        self.layer_of: dict[Any, str | None] = {}  # fx node -> graftnet layer (None: could not convert)
        self.shape_of: dict[str, Shape] = {}  # graftnet layer -> its output shape (no batch axis)
        self.readers: dict[str, list[Any]] = {}  # layer -> the fx nodes converted to it (for checks)
        self.taken = {n for n, _ in module.named_modules() if n}
        self.calls: dict[str, list[str]] = {}  # submodule -> the fx nodes that call it
        self.refused: set[Any] = set()  # fx nodes that could not be converted
        self.squeezed: set[str] = set()  # global pools that give (C,) where torch gives (C, 1, 1)
        self.input_name = "input"
        self.output: str | None = None

    # --------------------------------------------------------------- walking
    def run(self) -> None:
        while self.input_name in self.taken:
            self.input_name += "_"
        self.taken.add(self.input_name)
        for node in self.root.graph.nodes:
            if node.op == "placeholder" and node.args:  # an argument fixed at its default for tracing
                self.layer_of[node] = None
            elif node.op == "placeholder":
                self.layer_of[node] = self.input_name
                self.shape_of[self.input_name] = _traced_shape(node) or ()
            elif node.op == "output":
                self._output(node)
            elif node.op != "call_module" and node.meta.get(_META) is None:
                self.layer_of[node] = None  # shape arithmetic such as x.size(0): the layers reading it need none
            else:
                try:
                    self._convert(node)
                except (_Refused, GraftnetError) as why:
                    self.layer_of[node] = None
                    self.refused.add(node)
                    reads_refused_tuple = node.target is operator.getitem and any(
                        a in self.refused and not _is_tensor(a) for a in node.all_input_nodes)
                    if str(why) and not reads_refused_tuple:
                        self.obstacles.append(_where(node, self.root) + str(why))
        self._check_sharing()
        self._check_squeezed()

    def _output(self, node: Any) -> None:
        value = node.args[0]
        if not _is_node(value):
            self.obstacles.append(f"forward returns a {type(value).__name__}; a graftnet network has one tensor output")
            return
        layer = self.layer_of.get(value)
        if layer is None and value not in self.refused:
            self.obstacles.append(f"forward returns {value.name!r}, which is not a tensor; a graftnet network has "
                                  f"one tensor output")
        if layer == self.input_name:
            self.obstacles.append("forward returns its input unchanged; there is no layer to convert")
        self.output = layer

    # ---------------------------------------------------------- one node
    def _convert(self, node: Any) -> None:
        if node.op == "get_attr":
            raise _Refused(f"reads the tensor {node.target!r} directly; graftnet converts modules' weights "
                           f"(nn.Linear, nn.Conv2d, ...), not tensors used in forward")
        if node.op == "call_module":
            spec, inputs = self._module(node)
        elif not _is_tensor(node):
            known = (_METHOD_KEYS if node.op == "call_method" else _FUNCTION_KEYS).get(node.target)
            raise _Refused("returns several tensors; a graftnet layer returns one" if known else "is not supported")
        else:
            made = self._function(node)
            if isinstance(made, str):  # an alias: the node computes what its input holds
                self.layer_of[node] = made
                return
            spec, inputs = made
        in_shapes = [self.shape_of[i] for i in inputs]
        try:
            shape = spec.output_shape(in_shapes if spec.merges else in_shapes[0])  # type: ignore[arg-type]
        except GraftnetError as err:
            raise _Refused(f"as {spec.type}: {err}") from None
        traced = _traced_shape(node)
        if shape != traced and not (_squeezes_to(shape, traced)):
            raise _Refused(f"as a graftnet {spec.type} gives shape {shape}, torch gives {traced}")
        spec.name = self._name(node)
        spec.inputs = list(inputs)
        if shape != traced:
            self.squeezed.add(spec.name)
        if node.op == "call_module":
            key = spec.name.replace("/", ".")
            for tensor in self.root.get_submodule(node.target).state_dict():
                self.rename[f"{node.target}.{tensor}"] = f"{key}.{tensor}"
        self.specs.append(spec)
        self.layer_of[node] = spec.name
        self.shape_of[spec.name] = shape
        self.readers[spec.name] = []
        for i in inputs:
            self.readers.setdefault(i, []).append(node)

    def _inputs(self, node: Any, args: list[Any]) -> list[str]:
        """The graftnet layers behind ``args`` (fx nodes); a refused input refuses this node silently."""
        names = []
        for arg in args:
            layer = self.layer_of.get(arg)
            if layer is None:
                raise _Refused("")  # its input could not be converted: reported there
            names.append(layer)
        return names

    def _name(self, node: Any) -> str:
        """The module's qualified name for a call of it; else the fx node's name (its number
        dropped) inside the module it was called from: ``layer4.1.add``."""
        if node.op == "call_module":
            base = node.target
            module = self.root.get_submodule(node.target)
            if base in self.taken and base in self.calls and self.calls[base][0] == node.name:
                self.taken.discard(base)  # the first call of a module is the module's own name
        else:
            scope = _scope(node)
            stem = re.sub(r"_\d+$", "", node.name)
            base, module = (f"{scope}.{stem}" if scope else stem), None
        if self.layer_name is not None:
            base = self.layer_name(base, module)
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    # ------------------------------------------------------------- modules
    def _module(self, node: Any) -> tuple[LayerSpec, list[str]]:
        module = self.root.get_submodule(node.target)
        self.calls.setdefault(node.target, []).append(node.name)
        tensors = [a for a in node.args if _is_node(a)]
        if len(node.args) != 1 or node.kwargs or len(tensors) != 1:
            raise _Refused(f"is called with {len(node.args)} arguments{' and keywords' if node.kwargs else ''}; "
                           f"graftnet layers take one tensor")
        in_shape = _traced_shape(tensors[0])
        spec = _module_spec(module, in_shape, node)
        if len(self.calls[node.target]) > 1 and _has_state(module):
            raise _Refused("")  # reported once, with every call, by _check_sharing
        return spec, self._inputs(node, tensors)

    def _check_sharing(self) -> None:
        for target, nodes in self.calls.items():
            module = self.root.get_submodule(target)
            if len(nodes) > 1 and _has_state(module):
                self.obstacles.append(
                    f"module {target!r} ({type(module).__name__}) is called {len(nodes)} times (fx nodes "
                    f"{', '.join(nodes)}), sharing its weights; a graftnet layer is called once: give each call "
                    f"its own module")

    def _check_squeezed(self) -> None:
        """Global pooling gives (C,) where torch's AdaptiveAvgPool2d(1) gives (C, 1, 1): the same
        numbers, so only layers that flatten may read it."""
        for spec in self.specs:
            if spec.name in self.squeezed:
                for reader in self.readers.get(spec.name, []):  # type: ignore[arg-type]
                    if not isinstance(self._spec_named(self.layer_of.get(reader)), Flatten):
                        self.obstacles.append(f"{_where(reader, self.root)}reads global pooling {spec.name!r} as "
                                              f"(C, 1, 1); graftnet's global pooling gives (C,) and only a flatten "
                                              f"may read it")
                if spec.name == self.output:
                    self.obstacles.append(f"the output {spec.name!r} is (C, 1, 1) in torch; flatten it in forward")

    def _spec_named(self, name: str | None) -> LayerSpec | None:
        return next((s for s in self.specs if s.name == name), None)

    # ----------------------------------------------------------- functions
    def _function(self, node: Any) -> tuple[LayerSpec, list[str]] | str:
        key = (_METHOD_KEYS if node.op == "call_method" else _FUNCTION_KEYS).get(node.target)
        if node.target is operator.getitem:
            raise _Refused("indexes or slices a tensor (x[...]); graftnet has no layer that does")
        if key is None:
            raise _Refused("is not supported")
        x = node.args[0] if node.args else None
        if key == "alias":
            return self._inputs(node, [x])[0]
        if key in _ACTIVATIONS:
            return Activation(_activation_of(key, node)), self._inputs(node, [x])
        if key in _BINARY:
            return self._binary(key, node)
        if key == "cat":
            tensors, dim = node.args[0], _arg(node, 1, "dim", 0)
            if not isinstance(tensors, (list, tuple)) or not all(_is_node(t) for t in tensors):
                raise _Refused("concatenates something other than a list of tensors")
            if dim == 0:
                raise _Refused("concatenates along the batch axis (dim=0); graftnet joins examples' axes only")
            return Concatenate(axis=dim), self._inputs(node, list(tensors))
        if key == "flatten":
            return self._flatten(node), self._inputs(node, [x])
        if key == "mean":
            return self._mean(node), self._inputs(node, [x])
        if key in ("max_pool2d", "avg_pool2d"):
            return self._pool(key, node), self._inputs(node, [x])
        if key == "adaptive_avg_pool2d":
            size = _arg(node, 1, "output_size", None)
            return _adaptive(size, _traced_shape(x), node, AvgPool), self._inputs(node, [x])
        if key in ("dropout", "alpha_dropout"):
            p = _arg(node, 1, "p", 0.5)
            return (Dropout(p) if key == "dropout" else AlphaDropout(p)), self._inputs(node, [x])
        raise _Refused("is not supported")  # pragma: no cover - every key is handled above

    def _binary(self, key: str, node: Any) -> tuple[LayerSpec, list[str]]:
        a, b = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        if node.kwargs.get("alpha", 1) != 1:
            raise _Refused("with alpha != 1 is not supported")
        if _is_node(a) and _is_node(b):
            cls = {"add": Add, "sub": Subtract, "mul": Multiply, "maximum": Maximum, "minimum": Minimum}.get(key)
            if cls is None:
                raise _Refused("divides by a tensor; graftnet divides by numbers only")
            if not (_is_tensor(a) and _is_tensor(b)):
                raise _Refused("mixes a tensor with a value computed from shapes; graftnet cannot carry it")
            return cls(), self._inputs(node, [a, b])
        tensor, number, flipped = (a, b, False) if _is_node(a) else (b, a, True)
        if not isinstance(number, (int, float)) or isinstance(number, bool) or not _is_node(tensor):
            raise _Refused(f"with {type(number).__name__} {number!r} is not supported (a tensor and a number)")
        number = float(number)
        if key == "add":
            spec = Rescaling(1.0, number)
        elif key == "sub":
            spec = Rescaling(-1.0, number) if flipped else Rescaling(1.0, -number)
        elif key == "mul":
            spec = Rescaling(number, 0.0)
        elif key == "div" and not flipped and number != 0:
            spec = Rescaling(1.0 / number, 0.0)
        else:
            raise _Refused(f"{key} of a number by a tensor is not supported")
        return spec, self._inputs(node, [tensor])

    def _flatten(self, node: Any) -> Flatten:
        x = node.args[0]
        before, after = _traced_shape(x), _traced_shape(node)
        if node.target in (torch.flatten, "flatten"):
            start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
            if start != 1 or end not in (-1, len(before)):
                raise _Refused(f"flattens dims {start}..{end}; graftnet flattens all but the batch axis "
                               f"(start_dim=1)")
        elif len(after) != 1 or after[0] != math.prod(before):
            raise _Refused(f"reshapes (B, {', '.join(map(str, before))}) to (B, {', '.join(map(str, after))}); "
                           f"graftnet reshapes to (batch, -1) only")
        return Flatten()

    def _mean(self, node: Any) -> LayerSpec:
        x = node.args[0]
        dims = _arg(node, 1, "dim", None)
        rank = len(_traced_shape(x)) + 1
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        if rank != 4 or sorted(d % rank for d in dims) != [2, 3] or node.kwargs.get("dtype") is not None:
            raise _Refused(f"averages over dims {dims} of a rank-{rank} tensor; graftnet averages images over "
                           f"(2, 3) only (global pooling)")
        if _arg(node, 2, "keepdim", False):
            return AvgPool(tuple(_traced_shape(x)[1:]))  # type: ignore[arg-type]
        return GlobalAvgPool()

    def _pool(self, key: str, node: Any) -> LayerSpec:
        kernel = _arg(node, 1, "kernel_size", None)
        stride = _arg(node, 2, "stride", None) or kernel
        padding = _arg(node, 3, "padding", 0)
        if key == "max_pool2d":
            extra = {"dilation": (_arg(node, 4, "dilation", 1), 1), "ceil_mode": (_arg(node, 5, "ceil_mode", False), False),
                     "return_indices": (_arg(node, 6, "return_indices", False), False)}
        else:
            extra = {"ceil_mode": (_arg(node, 4, "ceil_mode", False), False),
                     "count_include_pad": (_arg(node, 5, "count_include_pad", True), True),
                     "divisor_override": (_arg(node, 6, "divisor_override", None), None)}
        _check_pool_options(extra)
        cls = MaxPool if key == "max_pool2d" else AvgPool
        return cls(_numbers(kernel), _numbers(stride), padding=_numbers(padding) or "valid")


# ============================================================================ module -> spec
def _module_spec(module: nn.Module, in_shape: Shape, node: Any) -> LayerSpec:
    """The graftnet spec reproducing ``module`` on inputs of shape ``in_shape`` (no batch axis)."""
    if isinstance(module, nn.Linear):
        if len(in_shape) != 1:
            raise _Refused(f"reads (B, {', '.join(map(str, in_shape))}); graftnet's Dense reads (B, features): "
                           f"flatten before it")
        return Dense(module.out_features, bias=module.bias is not None)
    if isinstance(module, nn.Conv2d):
        return _conv_spec(module)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        want = 1 if isinstance(module, nn.BatchNorm1d) else 3
        if len(in_shape) != want:
            raise _Refused(f"reads (B, {', '.join(map(str, in_shape))}); graftnet's BatchNorm reads (B, F) or "
                           f"(B, C, H, W)")
        if not module.track_running_stats:
            raise _Refused("track_running_stats=False is not supported")
        return BatchNorm(momentum=module.momentum, eps=module.eps, affine=module.affine)  # type: ignore[arg-type]
    activation = _module_activation(module, in_shape)
    if activation is not None:
        return Activation(activation)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool_spec(module)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return _adaptive(module.output_size, in_shape, node, AvgPool)
    if isinstance(module, nn.AdaptiveMaxPool2d):
        if module.return_indices:
            raise _Refused("return_indices=True is not supported")
        spec = _adaptive(module.output_size, in_shape, node, MaxPool)
        if isinstance(spec, GlobalAvgPool):
            spec = MaxPool(in_shape[1:])  # type: ignore[arg-type]  # (C, 1, 1), then the flatten
        return spec
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim not in (-1, len(in_shape)):
            raise _Refused(f"Flatten(start_dim={module.start_dim}, end_dim={module.end_dim}) is not supported; "
                           f"graftnet flattens all but the batch axis")
        return Flatten()
    if isinstance(module, nn.AlphaDropout):
        return AlphaDropout(module.p)
    if type(module) is nn.Dropout:  # Dropout2d drops whole channels: not the same in training
        return Dropout(module.p)
    raise _Refused(f"{type(module).__name__} is not supported")


def _module_activation(module: nn.Module, in_shape: Shape) -> str | None:
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if isinstance(module, nn.LeakyReLU):
        return f"leaky_relu({module.negative_slope!r})"
    if isinstance(module, nn.ELU):
        return f"elu({module.alpha!r})"
    if isinstance(module, nn.GELU):
        return _gelu(module.approximate)
    if isinstance(module, nn.Softmax):
        return _softmax(module.dim, len(in_shape) + 1)
    simple = {nn.SELU: "selu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu", nn.Hardswish: "hard_swish",
              nn.Hardsigmoid: "hard_sigmoid", nn.Identity: "linear"}
    return next((v for k, v in simple.items() if type(module) is k), None)


def _gelu(approximate: str) -> str:
    if approximate != "none":
        raise _Refused(f"GELU(approximate={approximate!r}) is not supported (only the exact GELU)")
    return "gelu"


def _softmax(dim: int | None, rank: int) -> str:
    if dim is None and rank in (2, 4) or dim is not None and dim % rank == 1:
        return "softmax"
    raise _Refused(f"softmax over dim {dim} of a rank-{rank} tensor is not supported (dim=1 only)")


def _conv_spec(module: nn.Conv2d) -> Conv2d:
    if tuple(module.dilation) != (1, 1) or module.groups != 1 or module.padding_mode != "zeros":
        raise _Refused(f"dilation={tuple(module.dilation)}, groups={module.groups}, padding_mode="
                       f"{module.padding_mode!r}: graftnet's Conv2d takes dilation 1, groups 1, 'zeros' only")
    padding = module.padding if isinstance(module.padding, str) else _numbers(module.padding) or "valid"
    return Conv2d(module.out_channels, _numbers(module.kernel_size), _numbers(module.stride), padding,
                  bias=module.bias is not None)


def _pool_spec(module: nn.MaxPool2d | nn.AvgPool2d) -> LayerSpec:
    if isinstance(module, nn.MaxPool2d):
        _check_pool_options({"dilation": (module.dilation, 1), "ceil_mode": (module.ceil_mode, False),
                             "return_indices": (module.return_indices, False)})
        cls: type[LayerSpec] = MaxPool
    else:
        _check_pool_options({"ceil_mode": (module.ceil_mode, False),
                             "count_include_pad": (module.count_include_pad, True),
                             "divisor_override": (module.divisor_override, None)})
        cls = AvgPool
    return cls(_numbers(module.kernel_size), _numbers(module.stride or module.kernel_size),  # type: ignore[call-arg]
               padding=_numbers(module.padding) or "valid")


def _check_pool_options(options: dict[str, tuple[Any, Any]]) -> None:
    odd = [f"{k}={v!r}" for k, (v, default) in options.items()
           if not (v == default or isinstance(v, (tuple, list)) and all(e == default for e in v))]
    if odd:
        raise _Refused(f"{', '.join(odd)} is not supported ({', '.join(f'{k}={d!r}' for k, (_, d) in options.items())} "
                       f"only)")


def _adaptive(size: Any, in_shape: Shape, node: Any, cls: type[LayerSpec]) -> LayerSpec:
    """Adaptive pooling where it is plain pooling: output (1, 1) read by a flatten is global
    average pooling; an output that divides the input is a pool of input/output."""
    if len(in_shape) != 3:
        raise _Refused(f"pools a (B, {', '.join(map(str, in_shape))}) tensor; expected (B, C, H, W)")
    sizes = (size, size) if isinstance(size, int) else tuple(size)
    out = tuple(s if o is None else o for o, s in zip(sizes, in_shape[1:]))
    readers = [u for u in node.users if u.op == "call_module" or _is_tensor(u)]  # not x.size(0)
    if out == (1, 1) and cls is AvgPool and readers and all(_flattens(u) for u in readers):
        return GlobalAvgPool()
    if in_shape[1] % out[0] or in_shape[2] % out[1]:
        raise _Refused(f"pools {in_shape[1]}x{in_shape[2]} to {out[0]}x{out[1]}, which does not divide it; "
                       f"graftnet converts adaptive pooling that is plain pooling only")
    kernel = (in_shape[1] // out[0], in_shape[2] // out[1])
    return cls(kernel, kernel)  # type: ignore[call-arg]


def _flattens(node: Any) -> bool:
    """Whether ``node`` flattens its input to (batch, -1)."""
    if node.op == "call_module":
        return isinstance(node.graph.owning_module.get_submodule(node.target), nn.Flatten)
    key = _METHOD_KEYS.get(node.target) if node.op == "call_method" else _FUNCTION_KEYS.get(node.target)
    return key == "flatten" and len(_traced_shape(node) or ()) == 1


# ============================================================================ tables and helpers
_ACTIVATIONS = {"relu", "relu6", "selu", "silu", "hard_swish", "hard_sigmoid", "sigmoid", "tanh", "elu",
                "leaky_relu", "gelu", "softmax"}
_BINARY = {"add", "sub", "mul", "div", "maximum", "minimum"}

_FUNCTION_KEYS: dict[Any, str] = {
    F.relu: "relu", torch.relu: "relu", F.relu_: "relu", torch.relu_: "relu", F.relu6: "relu6",
    F.selu: "selu", torch.selu: "selu", F.silu: "silu", F.hardswish: "hard_swish", F.hardsigmoid: "hard_sigmoid",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh", F.elu: "elu",
    F.leaky_relu: "leaky_relu", F.gelu: "gelu", F.softmax: "softmax", torch.softmax: "softmax",
    operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub", operator.mul: "mul",
    torch.mul: "mul", operator.truediv: "div", torch.div: "div", torch.maximum: "maximum",
    torch.minimum: "minimum", torch.cat: "cat", torch.concat: "cat", torch.concatenate: "cat",
    torch.flatten: "flatten", torch.reshape: "flatten", torch.mean: "mean",
    F.max_pool2d: "max_pool2d", torch.max_pool2d: "max_pool2d", F.avg_pool2d: "avg_pool2d",
    F.adaptive_avg_pool2d: "adaptive_avg_pool2d", F.dropout: "dropout", F.alpha_dropout: "alpha_dropout",
}
_METHOD_KEYS = {
    "relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "tanh": "tanh", "tanh_": "tanh",
    "softmax": "softmax", "add": "add", "add_": "add", "sub": "sub", "mul": "mul", "mul_": "mul", "div": "div",
    "flatten": "flatten", "view": "flatten", "reshape": "flatten", "mean": "mean", "contiguous": "alias",
}


def _activation_of(key: str, node: Any) -> str:
    if key == "elu":
        return f"elu({float(_arg(node, 1, 'alpha', 1.0))!r})"
    if key == "leaky_relu":
        return f"leaky_relu({float(_arg(node, 1, 'negative_slope', 0.01))!r})"
    if key == "gelu":
        return _gelu(node.kwargs.get("approximate", "none"))
    if key == "softmax":
        return _softmax(_arg(node, 1, "dim", None), len(_traced_shape(node)) + 1)
    return key


def _arg(node: Any, position: int, keyword: str, default: Any) -> Any:
    """A call's argument, given by position or by keyword."""
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(keyword, default)


def _numbers(value: Any) -> Any:
    """Pool sizes as graftnet takes them: an int, or a pair; 0 padding as None."""
    if isinstance(value, (tuple, list)):
        value = tuple(int(v) for v in value)
        if len(value) == 1:
            value = value[0]
        elif len(set(value)) == 1:
            value = value[0]
    if value == 0:
        return None
    return value


def _is_node(value: Any) -> bool:
    return isinstance(value, torch.fx.Node)


_META = "graftnet_shape"  # what _ShapeRecorder noted about a node's value


def _is_tensor(node: Any) -> bool:
    """Whether the node gave one tensor on the example input."""
    return isinstance(node.meta.get(_META), torch.Size)


def _traced_shape(node: Any) -> Shape:
    """The node's output shape without the batch axis (``()`` when it is not a tensor)."""
    shape = node.meta.get(_META) if _is_node(node) else None
    return tuple(int(s) for s in shape[1:]) if isinstance(shape, torch.Size) else ()


def _squeezes_to(graftnet: Shape, torch_shape: Shape) -> bool:
    """(C,) in graftnet where torch has (C, 1, 1): global pooling, checked by _check_squeezed."""
    return len(torch_shape) == 3 and torch_shape[1:] == (1, 1) and graftnet == torch_shape[:1]


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _scope(node: Any) -> str:
    """The qualified name of the module whose forward made ``node`` ('' at the top)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return re.sub(r"^L\['self'\]\.?", "", str(path))


def _target_name(node: Any) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return str(node.target)
    from torch.fx.node import _get_qualified_name

    try:
        name = _get_qualified_name(node.target)
    except Exception:  # noqa: BLE001 - an odd callable: its repr will do
        name = repr(node.target)
    return name.replace("_operator.", "operator.")


def _where(node: Any, root: torch.fx.GraphModule) -> str:
    """How an obstacle names its node: ``module 'rnn' (LSTM): `` or ``operation 'sort' (torch.sort) in 'enc': ``."""
    if node.op == "call_module":
        return f"module {node.target!r} ({type(root.get_submodule(node.target)).__name__}): "
    if node.op == "get_attr":
        return f"tensor {node.target!r}: "
    scope = _scope(node)
    return f"operation {node.name!r} ({_target_name(node)}){f' in {scope!r}' if scope else ''}: "
