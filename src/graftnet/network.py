"""Network: an ordered set of named layers, built from a JSON-able spec.

Everything in transfer learning is said with layer names ("reuse hidden[123]", "freeze
hidden[12]", "cache the output of hidden2"), so a ``Network`` is an ``nn.Sequential``
whose children carry those names, plus the spec it was built from, so it can be saved
without pickle and rebuilt exactly::

    >>> net = Network.mlp((1, 28, 28), [300, 100], 10)
    >>> net.layer_names
    ['flatten', 'hidden1', 'hidden2', 'outputs']
    >>> net.select("hidden[12]")
    ['hidden1', 'hidden2']
    >>> net.freeze("hidden1").frozen
    ['hidden1']

Selectors, accepted by every method that picks layers:
  - a regex over names, matched in full: ``"hidden[123]"``, ``"hidden[34]|outputs"``;
  - a slice of positions: ``":-1"`` (all but the last), ``"2:"``, ``"1:3"``;
  - a list of exact names, a single position (``int``), or ``"all"`` / ``None``.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn

from graftnet.errors import ConfigError, ShapeError, did_you_mean, format_names
from graftnet.layers import (
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

__all__ = ["Network", "Selector", "SPEC_FORMAT", "default_init"]

SPEC_FORMAT = "graftnet.network/1"
Selector = str | int | Sequence[str] | None
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_SLICE_RE = re.compile(r"^\s*(-?\d+)?\s*:\s*(-?\d+)?\s*$")
_DEFAULT_PREFIX = {"dense": "dense", "conv2d": "conv", "maxpool": "pool", "avgpool": "pool",
                   "global_avg_pool": "gap", "flatten": "flatten", "batchnorm": "bn",
                   "dropout": "dropout", "alpha_dropout": "dropout", "activation": "act",
                   "rescaling": "rescale"}


class Network(nn.Sequential):
    """A sequence of named layers with the spec that rebuilds it.

    Args:
        layers: layer specs (``Dense(300, "relu")``, ...); unnamed ones get ``dense1``,
            ``conv1``, ... in order.
        input_shape: shape of one example, channels-first: ``(784,)`` or ``(1, 28, 28)``.
        name: a label for summaries and saved models.

    Frozen layers (``freeze``) have ``requires_grad=False`` and always run in inference
    mode: BatchNorm keeps its statistics, Dropout is off.
    """

    def __init__(self, layers: Sequence[LayerSpec], input_shape: Sequence[int], name: str = "network") -> None:
        specs = _assign_names(list(layers))
        shape = _check_shape(input_shape)
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        self.shapes: list[tuple[int, ...]] = []  # output shape of each layer, batch axis excluded
        for spec in specs:
            try:
                modules[spec.name] = spec.build(shape)  # type: ignore[index]
                shape = spec.output_shape(shape)
            except ShapeError as err:
                raise ShapeError(f"network {name!r}: {err}") from None
            self.shapes.append(shape)
        super().__init__(modules)
        self.name = name
        self.input_shape = _check_shape(input_shape)
        self.specs = specs
        self._frozen: set[str] = set()
        self._bn_affine: set[str] = set()  # frozen BatchNorms whose scale/shift still train
        self.lineage: dict[str, Any] | None = None  # where reused layers came from (transfer.graft)
        self.info: dict[str, Any] = {}  # metadata saved beside the weights: data, classes, metrics

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
        """Rebuild a network (layers, frozen state, lineage) from ``to_spec()``'s dict."""
        if not isinstance(spec, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(spec).__name__}")
        missing = [k for k in ("input_shape", "layers") if k not in spec]
        if missing:
            raise ConfigError(f"{source}: missing key(s) {', '.join(missing)}; a network spec has "
                              f"format, name, input_shape, layers, frozen")
        fmt = spec.get("format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT:
            raise ConfigError(f"{source}: unsupported spec format {fmt!r}; this graftnet reads {SPEC_FORMAT!r}")
        if not isinstance(spec["layers"], list):
            raise ConfigError(f"{source}: 'layers' must be a list of layer specs")
        layers = [layer_from_dict(d, where=f"{source}: layers[{i}]") for i, d in enumerate(spec["layers"])]
        net = cls(layers, spec["input_shape"], name=spec.get("name", "network"))
        frozen = spec.get("frozen", [])
        if frozen:
            net.freeze(list(frozen), bn_affine=spec.get("bn_affine", []))
        net.lineage = spec.get("lineage")
        return net

    def to_spec(self) -> dict[str, Any]:
        """JSON-able description: everything needed to rebuild this network but its weights."""
        return {
            "format": SPEC_FORMAT,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "layers": [s.to_dict() for s in self.specs],
            "frozen": self.frozen,
            "bn_affine": self.bn_affine,
            "lineage": self.lineage,
        }

    # ---------------------------------------------------------------- naming
    @property
    def layer_names(self) -> list[str]:
        return list(self._modules)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1] if self.shapes else self.input_shape

    def layer(self, name: str) -> nn.Module:
        """The module called ``name``; an error lists the names that exist."""
        if name not in self._modules:
            raise ConfigError(f"No such layer: {name!r}. Existing layers are: "
                              f"{format_names(self.layer_names)}.{did_you_mean(name, self._modules)}")
        return self._modules[name]  # type: ignore[return-value]

    def spec_of(self, name: str) -> LayerSpec:
        self.layer(name)
        return self.specs[self.index(name)]

    def index(self, name: str) -> int:
        self.layer(name)
        return self.layer_names.index(name)

    def select(self, selector: Selector, *, what: str = "selector") -> list[str]:
        """Names picked by ``selector``, in network order. Matching nothing is an error.

        >>> Network.mlp(4, [3, 3, 3], 2).select(":-1")
        ['hidden1', 'hidden2', 'hidden3']
        """
        names = self.layer_names
        picked = _select(names, selector, what)
        if not picked:
            raise ConfigError(f"{what}={selector!r} matched no layer; layers are {format_names(names)}")
        return picked

    # -------------------------------------------------------------- freezing
    @property
    def frozen(self) -> list[str]:
        """Names of frozen layers, in network order."""
        return [n for n in self.layer_names if n in self._frozen]

    @property
    def bn_affine(self) -> list[str]:
        """Frozen BatchNorm layers whose scale/shift still train (``freeze(bn_affine=...)``)."""
        return [n for n in self.layer_names if n in self._bn_affine]

    @property
    def trainable(self) -> list[str]:
        """Names of layers that train (parameter-free layers count as trainable unless frozen)."""
        return [n for n in self.layer_names if n not in self._frozen]

    def freeze(self, selector: Selector = "all", *, bn_affine: bool | Selector = False) -> Network:
        """Stop the selected layers from learning: no gradients, inference mode.

        ``bn_affine=True`` keeps the scale/shift of frozen BatchNorm layers trainable while
        their statistics stay frozen (or pass a selector of the BatchNorms to treat so).
        Returns ``self`` so calls chain.
        """
        picked = self.select(selector, what="freeze")
        if bn_affine is True:
            affine = {n for n in picked if isinstance(self._modules[n], BatchNormModule)}
        elif bn_affine:
            affine = set(self.select(bn_affine, what="bn_affine"))
        else:
            affine = set()
        for name in picked:
            module = self._modules[name]
            for p in module.parameters():  # type: ignore[union-attr]
                p.requires_grad_(name in affine)
            module.train(False)  # type: ignore[union-attr]
        self._frozen |= set(picked)
        self._bn_affine = (self._bn_affine - set(picked)) | affine
        return self

    def unfreeze(self, selector: Selector = "all") -> Network:
        """Let the selected layers learn again (they follow the network's train/eval mode)."""
        picked = self.select(selector, what="unfreeze")
        for name in picked:
            module = self._modules[name]
            for p in module.parameters():  # type: ignore[union-attr]
                p.requires_grad_(True)
            module.train(self.training)  # type: ignore[union-attr]
        self._frozen -= set(picked)
        self._bn_affine -= set(picked)
        return self

    def train(self, mode: bool = True) -> Network:
        super().train(mode)
        for name in self._frozen:
            self._modules[name].train(False)  # type: ignore[union-attr]
        return self

    # --------------------------------------------------------------- running
    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run layers ``start`` to ``stop`` (positions, end excluded) on a batch."""
        for module in list(self._modules.values())[start:stop]:
            x = module(x)
        return x

    def inference_batch_size(self, start: int = 0, budget_bytes: int = 64 * 2**20, limit: int = 8192) -> int:
        """Examples per batch for inference from layer ``start`` on: as many as keep the
        largest float32 activation within ``budget_bytes`` (at least 16, at most ``limit``).

        A small MLP gets ``limit``; VGG16 at 150x150 (64x150x150 floats after conv1) gets 16.
        """
        shapes = [self.input_shape if start == 0 else self.shapes[start - 1], *self.shapes[start:]]
        largest = max(math.prod(s) for s in shapes) * 4  # bytes of one example's largest activation
        return int(min(max(budget_bytes // largest, 16), limit))

    def split(self, at: str | int) -> tuple[Network, Network]:
        """Cut after layer ``at`` into (lower, upper) networks that share this one's modules."""
        k = (self.index(at) if isinstance(at, str) else at % len(self)) + 1
        return self._view(0, k), self._view(k, len(self))

    def _view(self, start: int, stop: int) -> Network:
        names = self.layer_names[start:stop]
        in_shape = self.input_shape if start == 0 else self.shapes[start - 1]
        view = Network.__new__(Network)
        nn.Sequential.__init__(view, OrderedDict((n, self._modules[n]) for n in names))
        view.name, view.input_shape, view.specs = self.name, in_shape, self.specs[start:stop]
        view.shapes = self.shapes[start:stop]
        view._frozen, view._bn_affine = self._frozen & set(names), self._bn_affine & set(names)
        view.lineage, view.info = None, {}
        return view

    # ----------------------------------------------------------- regularizing
    def penalty(self) -> torch.Tensor | None:
        """Sum of the l1/l2 penalties of trainable layers (``None`` when there are none)."""
        terms = [m.penalty() for n, m in self.named_children()
                 if n not in self._frozen and hasattr(m, "penalty")]
        terms = [t for t in terms if t is not None]
        return torch.stack(terms).sum() if terms else None

    def has_constraints(self) -> bool:
        return any(getattr(s, "max_norm", None) for s in self.specs)

    def apply_constraints(self) -> None:
        """Apply max-norm constraints of trainable layers (call after each optimizer step)."""
        for name, module in self.named_children():
            if name not in self._frozen and hasattr(module, "apply_max_norm"):
                module.apply_max_norm()

    # ---------------------------------------------------------------- describing
    def count_params(self, name: str | None = None, trainable_only: bool = False) -> int:
        module = self if name is None else self.layer(name)
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per layer: name, type, output shape, params, trainable, origin."""
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
            if act and spec.type != "activation" and parse_activation(act)[0] != "linear":
                kind += f"({act})"
            rows.append({"name": name, "type": kind, "output_shape": shape, "params": n_params,
                         "trainable": trainable, "origin": origins.get(name, "")})
        return rows

    def summary(self) -> str:
        """A table like Keras' ``model.summary()`` plus where each layer came from."""
        rows = self.summary_rows()
        show_origin = any(r["origin"] for r in rows)
        header = ["layer", "type", "output shape", "params", "trainable"] + (["origin"] if show_origin else [])
        body = [[r["name"], r["type"], "(None, " + ", ".join(map(str, r["output_shape"])) + ")",
                 f"{r['params']:,}", r["trainable"]] + ([r["origin"]] if show_origin else []) for r in rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
        line = lambda cells: "  ".join(c.rjust(w) if i == 3 else c.ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        total, trainable = self.count_params(), self.count_params(trainable_only=True)
        out = [f"{self.name}: input (None, {', '.join(map(str, self.input_shape))})", line(header),
               "-" * (sum(widths) + 2 * (len(widths) - 1))]
        out += [line(b) for b in body]
        out.append(f"params: {total:,} total, {trainable:,} trainable, {total - trainable:,} frozen")
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"Network({self.name!r}, layers=[{', '.join(self.layer_names)}], frozen=[{', '.join(self.frozen)}])"


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


def _assign_names(specs: list[LayerSpec]) -> list[LayerSpec]:
    if not specs:
        raise ConfigError("a network needs at least one layer")
    taken = {s.name for s in specs if s.name}
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
        elif not _NAME_RE.match(spec.name):
            raise ConfigError(f"layer name {spec.name!r} is not valid: use letters, digits, '_' or '-', "
                              f"starting with a letter (no dots)")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"layer name {spec.name!r} is used twice; layer names must be unique")
        seen.add(spec.name)  # type: ignore[arg-type]
    return specs


def _select(names: list[str], selector: Selector, what: str) -> list[str]:
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
        sl = _SLICE_RE.match(selector)
        if sl:
            start, stop = (int(g) if g is not None else None for g in sl.groups())
            return names[slice(start, stop)]
        if selector.strip().lstrip("-").isdigit():
            return _select(names, int(selector), what)
        try:
            pattern = re.compile(selector)
        except re.error as err:
            raise ConfigError(f"{what}={selector!r} is not a valid regex ({err}); layers are {format_names(names)}") from None
        return [n for n in names if pattern.fullmatch(n)]
    if isinstance(selector, Iterable):
        wanted = list(selector)
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise ConfigError(f"{what}: no such layer(s) {', '.join(map(repr, unknown))}; layers are "
                              f"{format_names(names)}.{did_you_mean(str(unknown[0]), names)}")
        return [n for n in names if n in set(wanted)]
    raise ConfigError(f"{what}={selector!r}: expected a regex, a slice such as ':-1', a position or a list of names")

