"""The vocabulary of graftnet networks: layer specs, activations and initializers.

A layer is described by a small JSON-able *spec* (a dataclass such as ``Dense(300,
"relu")``) and built into a ``torch.nn.Module`` once its input shape is known, the way
Keras layers are configs until they are called. Specs are what a model saves
(``spec.json``) and what a user writes when grafting new layers onto a network::

    >>> from graftnet.layers import Dense
    >>> spec = Dense(300, "relu", init="he_normal", name="hidden1")
    >>> module = spec.build((784,))
    >>> module(torch.zeros(2, 784)).shape
    torch.Size([2, 300])

Built modules keep the torch parameter names (``weight``, ``bias``, ``running_mean``) so a
network's state dict reads ``hidden1.weight``, ``hidden1.bias``, ``bn1.running_var``.
Shapes are channels-first, as in PyTorch: images are (C, H, W).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from graftnet.errors import ConfigError, ShapeError, did_you_mean

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "LAYER_TYPES",
    "Activation",
    "AlphaDropout",
    "AvgPool",
    "BatchNorm",
    "Conv2d",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "LayerSpec",
    "MaxPool",
    "Rescaling",
    "layer_from_dict",
    "make_activation",
    "parse_activation",
]

Shape = tuple[int, ...]

# name -> (constructor, names of its numeric arguments, defaults)
ACTIVATIONS: dict[str, tuple[type[nn.Module] | None, tuple[str, ...], tuple[float, ...]]] = {
    "linear": (None, (), ()),
    "relu": (nn.ReLU, (), ()),
    "leaky_relu": (nn.LeakyReLU, ("negative_slope",), (0.01,)),
    "rrelu": (nn.RReLU, ("lower", "upper"), (1 / 8, 1 / 3)),
    "elu": (nn.ELU, ("alpha",), (1.0,)),
    "selu": (nn.SELU, (), ()),
    "gelu": (nn.GELU, (), ()),
    "sigmoid": (nn.Sigmoid, (), ()),
    "tanh": (nn.Tanh, (), ()),
    "softmax": (None, (), ()),  # built below: softmax over the feature axis
    "relu6": (nn.ReLU6, (), ()),  # min(max(x, 0), 6)
    "silu": (nn.SiLU, (), ()),  # x * sigmoid(x)
    "swish": (nn.SiLU, (), ()),  # Keras' other name for silu
    "hard_sigmoid": (nn.Hardsigmoid, (), ()),  # relu6(x + 3) / 6, Keras 3's definition
    "hard_silu": (nn.Hardswish, (), ()),  # x * hard_sigmoid(x)
    "hard_swish": (nn.Hardswish, (), ()),
}

_ACTIVATION_RE = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(?:\(\s*([^)]*)\s*\))?\s*$")


def parse_activation(text: str | None) -> tuple[str, tuple[float, ...]]:
    """Split ``"leaky_relu(0.2)"`` into ``("leaky_relu", (0.2,))``; ``None`` is linear.

    >>> parse_activation("elu(0.5)")
    ('elu', (0.5,))
    """
    if text is None:
        return "linear", ()
    match = _ACTIVATION_RE.match(str(text).lower())
    name = match.group(1) if match else str(text)
    if name == "none":
        return "linear", ()
    if not match or name not in ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {text!r}; expected one of {', '.join(ACTIVATIONS)} "
            f"(parameters in brackets, e.g. 'leaky_relu(0.2)').{did_you_mean(name, ACTIVATIONS)}"
        )
    _, arg_names, defaults = ACTIVATIONS[name]
    raw = [a for a in (match.group(2) or "").split(",") if a.strip()]
    if len(raw) > len(arg_names):
        raise ConfigError(
            f"activation {text!r} takes at most {len(arg_names)} argument(s) "
            f"({', '.join(arg_names) or 'none'}), got {len(raw)}"
        )
    try:
        given = tuple(float(a) for a in raw)
    except ValueError as err:
        raise ConfigError(f"activation {text!r}: arguments must be numbers") from err
    return name, given + defaults[len(given):]


class _Softmax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1)


def make_activation(text: str | None) -> nn.Module | None:
    """The module for an activation string, or ``None`` for a linear layer."""
    name, args = parse_activation(text)
    if name == "softmax":
        return _Softmax()
    constructor = ACTIVATIONS[name][0]
    return None if constructor is None else constructor(*args)


def _lecun_normal(w: torch.Tensor) -> None:
    nn.init.kaiming_normal_(w, nonlinearity="linear")  # std = 1 / sqrt(fan_in)


def _lecun_uniform(w: torch.Tensor) -> None:
    nn.init.kaiming_uniform_(w, nonlinearity="linear")


def _he_normal(w: torch.Tensor) -> None:
    nn.init.kaiming_normal_(w, nonlinearity="relu")  # std = sqrt(2 / fan_in)


def _he_uniform(w: torch.Tensor) -> None:
    nn.init.kaiming_uniform_(w, nonlinearity="relu")


def _truncated_normal(w: torch.Tensor) -> None:
    nn.init.trunc_normal_(w, std=0.05, a=-0.1, b=0.1)  # Keras' TruncatedNormal defaults


INITIALIZERS = {
    "he_normal": _he_normal,
    "he_uniform": _he_uniform,
    "glorot_normal": nn.init.xavier_normal_,
    "glorot_uniform": nn.init.xavier_uniform_,
    "lecun_normal": _lecun_normal,
    "lecun_uniform": _lecun_uniform,
    "truncated_normal": _truncated_normal,
    "zeros": nn.init.zeros_,
}
_INIT_ALIASES = {"he": "he_normal", "kaiming": "he_normal", "glorot": "glorot_uniform",
                 "xavier": "glorot_uniform", "lecun": "lecun_normal"}


def _check_init(init: str) -> str:
    init = _INIT_ALIASES.get(init, init)
    if init not in INITIALIZERS:
        raise ConfigError(f"unknown initializer {init!r}; expected one of "
                          f"{', '.join(INITIALIZERS)}.{did_you_mean(init, INITIALIZERS)}")
    return init


@dataclass
class LayerSpec:
    """Base of every layer spec: a name, and how to build and describe the layer."""

    type: ClassVar[str] = ""
    merges: ClassVar[bool] = False  # True for layers that take several inputs (graftnet.merge)
    name: str | None = dataclasses.field(default=None, kw_only=True)
    # names of the layers this one reads (None: the layer before it, or the network's input)
    inputs: list[str] | None = dataclasses.field(default=None, kw_only=True)

    def build(self, in_shape: Shape) -> nn.Module:
        raise NotImplementedError

    def output_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"type": "dense", "name": "hidden1", "units": 300, ...}``."""
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "inputs" and value is None:
                continue  # a chain's spec does not spell out "the layer before"
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def activation_name(self) -> str:
        return parse_activation(getattr(self, "activation", None))[0]

    def _need(self, in_shape: Shape, ndim: int, what: str) -> None:
        if len(in_shape) != ndim:
            raise ShapeError(
                f"layer {self.name!r} ({self.type}) expects {what}, got input shape "
                f"{_fmt(in_shape)}{' - add a Flatten layer before it' if ndim == 1 else ''}"
            )


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


class _Regularized:
    """Mixin for layers with a weight: l1/l2 penalties and a max-norm constraint."""

    spec: Any
    weight: torch.Tensor

    def penalty(self) -> torch.Tensor | None:
        """``l1 * sum|W| + l2 * sum W^2`` of the kernel (the bias is not penalised)."""
        terms = []
        if self.spec.l1:
            terms.append(self.spec.l1 * self.weight.abs().sum())
        if self.spec.l2:
            terms.append(self.spec.l2 * self.weight.square().sum())
        return sum(terms) if terms else None  # type: ignore[return-value]

    @torch.no_grad()
    def apply_max_norm(self) -> None:
        """Rescale each unit's incoming weights to an L2 norm of at most ``max_norm``."""
        if self.spec.max_norm:
            # weight: (out, in) or (out, in, kh, kw); one norm per output unit
            self.weight.copy_(torch.renorm(self.weight, p=2, dim=0, maxnorm=self.spec.max_norm))


class DenseModule(_Regularized, nn.Linear):
    def __init__(self, spec: Dense, in_features: int) -> None:
        super().__init__(in_features, spec.units, bias=spec.bias)
        self.spec = spec
        self.activation = make_activation(spec.activation)
        INITIALIZERS[_check_init(spec.init)](self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight, self.bias)  # (B, in) -> (B, units)
        return x if self.activation is None else self.activation(x)


@dataclass
class Dense(LayerSpec):
    """A fully connected layer: ``y = activation(x W^T + b)`` on (B, F) inputs."""

    type: ClassVar[str] = "dense"
    units: int
    activation: str | None = None
    init: str = "glorot_uniform"
    bias: bool = True
    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None

    def __post_init__(self) -> None:
        _positive_int(self, "units")
        parse_activation(self.activation)
        self.init = _check_init(self.init)

    def build(self, in_shape: Shape) -> nn.Module:
        self._need(in_shape, 1, "flat (features,) input")
        return DenseModule(self, in_shape[0])

    def output_shape(self, in_shape: Shape) -> Shape:
        self._need(in_shape, 1, "flat (features,) input")
        return (self.units,)


def _positive_int(spec: LayerSpec, field: str) -> None:
    value = getattr(spec, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"layer {spec.name or spec.type!r}: {field} must be a positive integer, got {value!r}")


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


class Conv2dModule(_Regularized, nn.Conv2d):
    def __init__(self, spec: Conv2d, in_channels: int) -> None:
        padding = spec.padding if isinstance(spec.padding, str) else _pair(spec.padding)
        super().__init__(in_channels, spec.filters, _pair(spec.kernel_size), _pair(spec.stride),
                         padding=padding, bias=spec.bias)
        self.spec = spec
        self.activation = make_activation(spec.activation)
        INITIALIZERS[_check_init(spec.init)](self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv_forward(x, self.weight, self.bias)  # (B, C, H, W) -> (B, filters, H', W')
        return x if self.activation is None else self.activation(x)


@dataclass
class Conv2d(LayerSpec):
    """A 2-D convolution over (C, H, W) inputs; ``padding`` is "valid", "same" or pixels."""

    type: ClassVar[str] = "conv2d"
    filters: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: str | int | tuple[int, int] = "valid"
    activation: str | None = None
    init: str = "glorot_uniform"
    bias: bool = True
    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None

    def __post_init__(self) -> None:
        _positive_int(self, "filters")
        parse_activation(self.activation)
        self.init = _check_init(self.init)
        if isinstance(self.padding, str) and self.padding not in ("valid", "same"):
            raise ConfigError(f"layer {self.name!r}: padding must be 'valid', 'same' or a number, got {self.padding!r}")
        if self.padding == "same" and _pair(self.stride) != (1, 1):
            raise ConfigError(f"layer {self.name!r}: padding='same' needs stride 1 in PyTorch; use padding in pixels")

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return Conv2dModule(self, in_shape[0])

    def output_shape(self, in_shape: Shape) -> Shape:
        self._need(in_shape, 3, "(channels, height, width) input")
        kh, kw = _pair(self.kernel_size)
        if self.padding == "same":
            return (self.filters, in_shape[1], in_shape[2])
        ph, pw = (0, 0) if self.padding == "valid" else _pair(self.padding)  # type: ignore[arg-type]
        sh, sw = _pair(self.stride)
        h, w = _conv_out(in_shape[1], kh, sh, ph), _conv_out(in_shape[2], kw, sw, pw)
        if h < 1 or w < 1:
            raise ShapeError(f"layer {self.name!r}: a {kh}x{kw} kernel does not fit input {_fmt(in_shape)}")
        return (self.filters, h, w)


class _PoolModule(nn.Module):
    def __init__(self, spec: _Pool) -> None:
        super().__init__()
        self.spec = spec
        self.kernel, self.stride = _pair(spec.pool_size), _pair(spec.stride or spec.pool_size)
        # pixels on each side, as torch pads: -inf for the max, zeros counted in the average
        self.padding = (0, 0) if spec.padding == "valid" else _pair(spec.padding)  # type: ignore[arg-type]
        self.fn = F.max_pool2d if spec.type == "maxpool" else F.avg_pool2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.kernel, self.stride, self.padding)  # (B, C, H, W) -> (B, C, H', W')


@dataclass
class _Pool(LayerSpec):
    pool_size: int | tuple[int, int] = 2
    stride: int | tuple[int, int] | None = None
    padding: str | int | tuple[int, int] = "valid"  # "valid" or pixels on each side

    def __post_init__(self) -> None:
        if isinstance(self.padding, str):
            if self.padding != "valid":
                raise ConfigError(f"layer {self.name!r}: pool padding must be 'valid' or a number of pixels, "
                                  f"got {self.padding!r}")
            return
        (kh, kw), (ph, pw) = _pair(self.pool_size), _pair(self.padding)
        if ph > kh // 2 or pw > kw // 2:
            raise ConfigError(f"layer {self.name!r}: padding {self.padding} is more than half the pool "
                              f"size {self.pool_size}")

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return _PoolModule(self)

    def output_shape(self, in_shape: Shape) -> Shape:
        self._need(in_shape, 3, "(channels, height, width) input")
        (kh, kw), (sh, sw) = _pair(self.pool_size), _pair(self.stride or self.pool_size)
        ph, pw = (0, 0) if self.padding == "valid" else _pair(self.padding)  # type: ignore[arg-type]
        h, w = _conv_out(in_shape[1], kh, sh, ph), _conv_out(in_shape[2], kw, sw, pw)
        if h < 1 or w < 1:
            raise ShapeError(f"layer {self.name!r}: a {kh}x{kw} pool does not fit input {_fmt(in_shape)}")
        return (in_shape[0], h, w)


@dataclass
class MaxPool(_Pool):
    """2-D max pooling; ``stride`` defaults to ``pool_size``; ``padding`` in pixels (torch's, -inf)."""

    type: ClassVar[str] = "maxpool"


@dataclass
class AvgPool(_Pool):
    """2-D average pooling; ``stride`` defaults to ``pool_size``; ``padding`` in pixels (zeros, counted)."""

    type: ClassVar[str] = "avgpool"


class _GlobalAvgPoolModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)


@dataclass
class GlobalAvgPool(LayerSpec):
    """Average over height and width: (C, H, W) -> (C,)."""

    type: ClassVar[str] = "global_avg_pool"

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return _GlobalAvgPoolModule()

    def output_shape(self, in_shape: Shape) -> Shape:
        self._need(in_shape, 3, "(channels, height, width) input")
        return (in_shape[0],)


class _FlattenModule(nn.Module):
    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C), Keras' order
        return x.reshape(x.shape[0], -1)  # (B, ...) -> (B, prod)


@dataclass
class Flatten(LayerSpec):
    """Flatten all but the batch axis. ``channels_last=True`` flattens in (H, W, C) order,
    so Dense weights imported from a channels-last framework line up."""

    type: ClassVar[str] = "flatten"
    channels_last: bool = False

    def build(self, in_shape: Shape) -> nn.Module:
        return _FlattenModule(self.channels_last)

    def output_shape(self, in_shape: Shape) -> Shape:
        return (math.prod(in_shape),)


class BatchNormModule(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over (B, F) or (B, C, H, W): one set of statistics per feature/channel."""

    def __init__(self, spec: BatchNorm, features: int) -> None:
        super().__init__(features, eps=spec.eps, momentum=spec.momentum, affine=spec.affine)
        self.spec = spec

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ShapeError(f"BatchNorm expects (B, F) or (B, C, H, W) input, got {tuple(x.shape)}")


@dataclass
class BatchNorm(LayerSpec):
    """Batch normalisation. ``momentum`` is PyTorch's (Keras' 0.99 is 0.01 here)."""

    type: ClassVar[str] = "batchnorm"
    momentum: float = 0.1
    eps: float = 1e-5
    affine: bool = True

    def build(self, in_shape: Shape) -> nn.Module:
        if len(in_shape) not in (1, 3):
            raise ShapeError(f"layer {self.name!r} (batchnorm) expects (F,) or (C, H, W) input, got {_fmt(in_shape)}")
        return BatchNormModule(self, in_shape[0])


@dataclass
class Dropout(LayerSpec):
    """Dropout with drop probability ``rate``."""

    type: ClassVar[str] = "dropout"
    rate: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate < 1.0:
            raise ConfigError(f"layer {self.name!r}: dropout rate must be in [0, 1), got {self.rate!r}")

    def build(self, in_shape: Shape) -> nn.Module:
        return nn.Dropout(self.rate)


@dataclass
class AlphaDropout(Dropout):
    """Dropout that keeps SELU's self-normalisation (mean and variance)."""

    type: ClassVar[str] = "alpha_dropout"

    def build(self, in_shape: Shape) -> nn.Module:
        return nn.AlphaDropout(self.rate)


class _ActivationModule(nn.Module):
    def __init__(self, spec: Activation) -> None:
        super().__init__()
        self.spec = spec
        self.activation = make_activation(spec.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.activation is None else self.activation(x)


@dataclass
class Activation(LayerSpec):
    """An activation on its own, e.g. after a BatchNorm layer."""

    type: ClassVar[str] = "activation"
    activation: str = "relu"

    def __post_init__(self) -> None:
        parse_activation(self.activation)

    def build(self, in_shape: Shape) -> nn.Module:
        return _ActivationModule(self)


class _RescalingModule(nn.Module):
    def __init__(self, spec: Rescaling) -> None:
        super().__init__()
        self.scale, self.offset = spec.scale, spec.offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


@dataclass
class Rescaling(LayerSpec):
    """``x * scale + offset`` (Keras' Rescaling), e.g. 1/255 for raw pixels."""

    type: ClassVar[str] = "rescaling"
    scale: float = 1.0
    offset: float = 0.0

    def build(self, in_shape: Shape) -> nn.Module:
        return _RescalingModule(self)


LAYER_TYPES: dict[str, type[LayerSpec]] = {
    cls.type: cls
    for cls in (Dense, Conv2d, MaxPool, AvgPool, GlobalAvgPool, Flatten, BatchNorm, Dropout,
                AlphaDropout, Activation, Rescaling)
}


def layer_from_dict(d: dict[str, Any], where: str = "layer") -> LayerSpec:
    """Rebuild a spec from its ``to_dict()`` form, with errors that say what is wrong.

    >>> layer_from_dict({"type": "dense", "units": 10}).units
    10
    """
    if not isinstance(d, dict) or "type" not in d:
        raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {d!r}")
    kind = d["type"]
    if kind not in LAYER_TYPES:
        raise ConfigError(f"{where}: unknown layer type {kind!r}; known types are "
                          f"{', '.join(LAYER_TYPES)}.{did_you_mean(str(kind), LAYER_TYPES)}")
    cls = LAYER_TYPES[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields - {"type"})
    if unknown:
        raise ConfigError(f"{where} ({kind}): unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"{kind} takes {', '.join(sorted(fields))}")
    args = {k: tuple(v) if isinstance(v, list) and k != "inputs" else v for k, v in d.items() if k != "type"}
    if isinstance(args.get("inputs"), str):
        args["inputs"] = [args["inputs"]]
    if args.get("inputs") is not None and (not isinstance(args["inputs"], list)
                                           or not all(isinstance(i, str) for i in args["inputs"])):
        raise ConfigError(f"{where} ({kind}): inputs must be a list of layer names, got {args['inputs']!r}")
    try:
        return cls(**args)
    except TypeError as err:  # a missing required argument, e.g. dense without units
        raise ConfigError(f"{where} ({kind}): {err}") from None
