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
    "Cropping2D",
    "Dense",
    "DepthwiseConv2d",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "LayerNormalization",
    "LayerSpec",
    "MaxPool",
    "Normalization",
    "ReLU",
    "Rescaling",
    "Reshape",
    "SeparableConv2d",
    "ZeroPadding2D",
    "layer_from_dict",
    "make_activation",
    "parse_activation",
    "tf_same_padding",
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
    "softplus": (nn.Softplus, (), ()),
    "softsign": (nn.Softsign, (), ()),
    "mish": (nn.Mish, (), ()),
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
        """Rescale each unit's incoming weights to an L2 norm of at most ``max_norm``.

        A module may carry ``max_norm_limit`` and ``max_norm_dim`` attributes instead (set by
        ``graftnet.io.tf_graph.training_setup`` from a TF graph's max-norm ops, e.g. the
        book's ``clip_by_norm(kernel, axes=1)``: one norm per *input* unit, ``dim=1``).
        """
        limit = getattr(self, "max_norm_limit", None) or self.spec.max_norm
        if limit:
            # weight: (out, in) or (out, in, kh, kw); one norm per slice along dim (0: per output unit)
            dim = getattr(self, "max_norm_dim", 0)
            self.weight.copy_(torch.renorm(self.weight, p=2, dim=dim, maxnorm=limit))


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


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a convolution or pool; ``pad`` is the total padding of the axis."""
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


Padding = str | int | tuple[int, int]
Pads = tuple[int, int, int, int]  # (top, bottom, left, right)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis: ``ceil(size / stride)`` outputs, the odd
    pixel at the end (bottom/right)."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pads(padding: Padding, in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
          dilation: tuple[int, int] = (1, 1)) -> Pads:
    """(top, bottom, left, right) pixels for "valid", "same" (TensorFlow's) or symmetric pixels."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return (*_same_pad(in_hw[0], kernel[0], stride[0], dilation[0]),
                *_same_pad(in_hw[1], kernel[1], stride[1], dilation[1]))
    ph, pw = _pair(padding)  # type: ignore[arg-type]
    return (ph, ph, pw, pw)


def tf_same_padding(in_hw: tuple[int, int], kernel: Any, stride: Any = 1, dilation: Any = 1) -> Pads:
    """TensorFlow's "same" padding of an image, (top, bottom, left, right) pixels.

    >>> tf_same_padding((7, 7), 3, 2)
    (1, 1, 1, 1)
    >>> tf_same_padding((8, 8), 3, 2)     # the odd pixel goes to the bottom/right
    (0, 1, 0, 1)
    """
    return _pads("same", in_hw, _pair(kernel), _pair(stride), _pair(dilation))


def _check_padding(spec: LayerSpec, padding: Padding) -> None:
    if isinstance(padding, str) and padding not in ("valid", "same"):
        raise ConfigError(f"layer {spec.name!r}: padding must be 'valid', 'same' or a number of pixels, "
                          f"got {padding!r}")


def _window_output(spec: LayerSpec, in_shape: Shape, channels: int, kernel: tuple[int, int],
                   stride: tuple[int, int], padding: Padding, dilation: tuple[int, int], what: str) -> Shape:
    """(channels, H', W') of a convolution or pool over (C, H, W), or a ShapeError."""
    spec._need(in_shape, 3, "(channels, height, width) input")
    top, bottom, left, right = _pads(padding, (in_shape[1], in_shape[2]), kernel, stride, dilation)
    h = _conv_out(in_shape[1], kernel[0], stride[0], top + bottom, dilation[0])
    w = _conv_out(in_shape[2], kernel[1], stride[1], left + right, dilation[1])
    if h < 1 or w < 1:
        raise ShapeError(f"layer {spec.name!r}: a {kernel[0]}x{kernel[1]} {what} does not fit input {_fmt(in_shape)}")
    return (channels, h, w)


def _split_pads(pads: Pads) -> tuple[tuple[int, int], tuple[int, int, int, int] | None]:
    """Symmetric pads go to the convolution itself; asymmetric ones to an F.pad before it.

    Returns (conv padding (ph, pw), F.pad's (left, right, top, bottom) or None).
    """
    top, bottom, left, right = pads
    if top == bottom and left == right:
        return (top, left), None
    return (0, 0), (left, right, top, bottom)


class Conv2dModule(_Regularized, nn.Conv2d):
    def __init__(self, spec: Conv2d, in_shape: Shape) -> None:
        kernel, stride, dilation = _pair(spec.kernel_size), _pair(spec.stride), _pair(spec.dilation)
        padding, self.extra_pad = _split_pads(_pads(spec.padding, (in_shape[1], in_shape[2]), kernel,
                                                    stride, dilation))
        super().__init__(in_shape[0], spec.filters, kernel, stride, padding=padding, dilation=dilation,
                         bias=spec.bias)
        self.spec = spec
        self.activation = make_activation(spec.activation)
        INITIALIZERS[_check_init(spec.init)](self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)  # TensorFlow's "same": the odd pixel at the bottom/right
        x = self._conv_forward(x, self.weight, self.bias)  # (B, C, H, W) -> (B, filters, H', W')
        return x if self.activation is None else self.activation(x)


@dataclass
class Conv2d(LayerSpec):
    """A 2-D convolution over (C, H, W) inputs.

    ``padding`` is "valid", "same" or pixels on each side. "same" is TensorFlow's at any
    stride: ``ceil(H / stride)`` outputs, with the odd padding pixel at the bottom/right
    (so the padding depends on the input size, fixed when the layer is built).
    ``dilation`` spaces the kernel taps (Keras' ``dilation_rate``).
    """

    type: ClassVar[str] = "conv2d"
    filters: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: Padding = "valid"
    activation: str | None = None
    init: str = "glorot_uniform"
    bias: bool = True
    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None
    dilation: int | tuple[int, int] = 1

    def __post_init__(self) -> None:
        _positive_int(self, "filters")
        parse_activation(self.activation)
        self.init = _check_init(self.init)
        _check_padding(self, self.padding)

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return Conv2dModule(self, in_shape)

    def output_shape(self, in_shape: Shape) -> Shape:
        return _window_output(self, in_shape, self.filters, _pair(self.kernel_size), _pair(self.stride),
                              self.padding, _pair(self.dilation), "kernel")


class DepthwiseConv2dModule(_Regularized, nn.Conv2d):
    """One (kh, kw) filter per input channel and multiplier: output channel ``c * mult + m``
    filters input channel ``c`` (Keras' and TensorFlow's order)."""

    def __init__(self, spec: DepthwiseConv2d, in_shape: Shape) -> None:
        kernel, stride, dilation = _pair(spec.kernel_size), _pair(spec.stride), _pair(spec.dilation)
        padding, self.extra_pad = _split_pads(_pads(spec.padding, (in_shape[1], in_shape[2]), kernel,
                                                    stride, dilation))
        channels = in_shape[0]
        super().__init__(channels, channels * spec.depth_multiplier, kernel, stride, padding=padding,
                         dilation=dilation, groups=channels, bias=spec.bias)
        self.spec = spec
        self.activation = make_activation(spec.activation)
        INITIALIZERS[_check_init(spec.init)](self.weight)  # weight: (C * mult, 1, kh, kw)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        x = self._conv_forward(x, self.weight, self.bias)  # (B, C, H, W) -> (B, C * mult, H', W')
        return x if self.activation is None else self.activation(x)


@dataclass
class DepthwiseConv2d(LayerSpec):
    """A depthwise convolution (Keras' DepthwiseConv2D): each input channel is convolved on its
    own with ``depth_multiplier`` filters, (C, H, W) -> (C * depth_multiplier, H', W').
    ``padding`` and ``dilation`` as in ``Conv2d``. The weight is (C * mult, 1, kh, kw)."""

    type: ClassVar[str] = "depthwise_conv2d"
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: Padding = "valid"
    depth_multiplier: int = 1
    dilation: int | tuple[int, int] = 1
    activation: str | None = None
    init: str = "glorot_uniform"
    bias: bool = True
    l1: float = 0.0
    l2: float = 0.0
    max_norm: float | None = None

    def __post_init__(self) -> None:
        _positive_int(self, "depth_multiplier")
        parse_activation(self.activation)
        self.init = _check_init(self.init)
        _check_padding(self, self.padding)

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return DepthwiseConv2dModule(self, in_shape)

    def output_shape(self, in_shape: Shape) -> Shape:
        self._need(in_shape, 3, "(channels, height, width) input")
        return _window_output(self, in_shape, in_shape[0] * self.depth_multiplier, _pair(self.kernel_size), _pair(self.stride),
                              self.padding, _pair(self.dilation), "kernel")


class SeparableConv2dModule(nn.Module):
    """A depthwise convolution (no bias) then a 1x1 convolution with ``filters`` outputs and
    the bias: parameters ``depthwise.weight`` (C * mult, 1, kh, kw), ``pointwise.weight``
    (filters, C * mult, 1, 1) and ``pointwise.bias``."""

    def __init__(self, spec: SeparableConv2d, in_shape: Shape) -> None:
        super().__init__()
        kernel, stride, dilation = _pair(spec.kernel_size), _pair(spec.stride), _pair(spec.dilation)
        padding, self.extra_pad = _split_pads(_pads(spec.padding, (in_shape[1], in_shape[2]), kernel,
                                                    stride, dilation))
        channels = in_shape[0] * spec.depth_multiplier
        self.spec = spec
        self.depthwise = nn.Conv2d(in_shape[0], channels, kernel, stride, padding=padding, dilation=dilation,
                                   groups=in_shape[0], bias=False)
        self.pointwise = nn.Conv2d(channels, spec.filters, 1, bias=spec.bias)
        self.activation = make_activation(spec.activation)
        for conv in (self.depthwise, self.pointwise):
            INITIALIZERS[_check_init(spec.init)](conv.weight)
        if self.pointwise.bias is not None:
            nn.init.zeros_(self.pointwise.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        x = self.pointwise(self.depthwise(x))  # (B, C, H, W) -> (B, C * mult, H', W') -> (B, filters, H', W')
        return x if self.activation is None else self.activation(x)


@dataclass
class SeparableConv2d(LayerSpec):
    """A depthwise separable convolution (Keras' SeparableConv2D): ``DepthwiseConv2d`` without
    bias, then a 1x1 ``Conv2d(filters)`` with the bias, then the activation."""

    type: ClassVar[str] = "separable_conv2d"
    filters: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: Padding = "valid"
    depth_multiplier: int = 1
    dilation: int | tuple[int, int] = 1
    activation: str | None = None
    init: str = "glorot_uniform"
    bias: bool = True

    def __post_init__(self) -> None:
        _positive_int(self, "filters")
        _positive_int(self, "depth_multiplier")
        parse_activation(self.activation)
        self.init = _check_init(self.init)
        _check_padding(self, self.padding)

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return SeparableConv2dModule(self, in_shape)

    def output_shape(self, in_shape: Shape) -> Shape:
        return _window_output(self, in_shape, self.filters, _pair(self.kernel_size), _pair(self.stride),
                              self.padding, _pair(self.dilation), "kernel")


class _PoolModule(nn.Module):
    def __init__(self, spec: _Pool, in_shape: Shape) -> None:
        super().__init__()
        self.spec = spec
        self.kernel, self.stride = _pair(spec.pool_size), _pair(spec.stride or spec.pool_size)
        self.is_max = spec.type == "maxpool"
        self.padding, self.extra_pad = (0, 0), None
        if spec.padding == "same":
            pads = _pads("same", (in_shape[1], in_shape[2]), self.kernel, self.stride)
            self.extra_pad = (pads[2], pads[3], pads[0], pads[1])  # F.pad order: left, right, top, bottom
        elif spec.padding != "valid":
            self.padding = _pair(spec.padding)  # torch's own: -inf for max, zeros counted for average
        if self.extra_pad is not None and not self.is_max:
            # TensorFlow's "same" average leaves the padding out of the count: divide each
            # window by the share of it that lies inside the image. (1, 1, H', W')
            ones = F.pad(torch.ones(1, 1, in_shape[1], in_shape[2]), self.extra_pad)
            self.register_buffer("inside", F.avg_pool2d(ones, self.kernel, self.stride), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad, value=-math.inf if self.is_max else 0.0)
        if self.is_max:
            return F.max_pool2d(x, self.kernel, self.stride, self.padding)  # (B, C, H, W) -> (B, C, H', W')
        x = F.avg_pool2d(x, self.kernel, self.stride, self.padding)
        return x / self.inside if self.extra_pad is not None else x


@dataclass
class _Pool(LayerSpec):
    pool_size: int | tuple[int, int] = 2
    stride: int | tuple[int, int] | None = None
    padding: Padding = "valid"

    def __post_init__(self) -> None:
        _check_padding(self, self.padding)
        if not isinstance(self.padding, str):
            (kh, kw), (ph, pw) = _pair(self.pool_size), _pair(self.padding)
            if ph > kh // 2 or pw > kw // 2:
                raise ConfigError(f"layer {self.name!r}: padding {self.padding} is more than half the pool "
                                  f"size {self.pool_size}")

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return _PoolModule(self, in_shape)

    def output_shape(self, in_shape: Shape) -> Shape:
        self._need(in_shape, 3, "(channels, height, width) input")
        return _window_output(self, in_shape, in_shape[0], _pair(self.pool_size),
                              _pair(self.stride or self.pool_size), self.padding, (1, 1), "pool")


@dataclass
class MaxPool(_Pool):
    """2-D max pooling; ``stride`` defaults to ``pool_size``. ``padding`` is "valid", "same"
    (TensorFlow's, padding ignored by the max) or pixels (padded with -inf, as in torch)."""

    type: ClassVar[str] = "maxpool"


@dataclass
class AvgPool(_Pool):
    """2-D average pooling; ``stride`` defaults to ``pool_size``. ``padding`` is "valid",
    "same" (TensorFlow's: each window averages only its pixels inside the image) or pixels
    (zeros that count in the average, torch's ``count_include_pad=True``)."""

    type: ClassVar[str] = "avgpool"


class _GlobalPoolModule(nn.Module):
    def __init__(self, is_max: bool, keepdims: bool) -> None:
        super().__init__()
        self.is_max, self.keepdims = is_max, keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_max:
            return x.amax(dim=(2, 3), keepdim=self.keepdims)  # (B, C, H, W) -> (B, C) or (B, C, 1, 1)
        return x.mean(dim=(2, 3), keepdim=self.keepdims)


@dataclass
class GlobalAvgPool(LayerSpec):
    """Average over height and width: (C, H, W) -> (C,), or (C, 1, 1) with ``keepdims=True``
    (Keras' keepdims, as squeeze-excite blocks use)."""

    type: ClassVar[str] = "global_avg_pool"
    keepdims: bool = False

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return _GlobalPoolModule(self.type == "global_max_pool", self.keepdims)

    def output_shape(self, in_shape: Shape) -> Shape:
        self._need(in_shape, 3, "(channels, height, width) input")
        return (in_shape[0], 1, 1) if self.keepdims else (in_shape[0],)


@dataclass
class GlobalMaxPool(GlobalAvgPool):
    """Maximum over height and width: (C, H, W) -> (C,), or (C, 1, 1) with ``keepdims=True``."""

    type: ClassVar[str] = "global_max_pool"


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


def _per_channel(values: float | tuple[float, ...], ndim: int) -> torch.Tensor | float:
    """A scalar as it is; a tuple as a (1, C) or (1, C, 1, 1) tensor on the channel axis."""
    if isinstance(values, (int, float)):
        return float(values)
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1, *([1] * (ndim - 1)))


class _RescalingModule(nn.Module):
    def __init__(self, spec: Rescaling, in_shape: Shape) -> None:
        super().__init__()
        self.scale, self.offset = spec.scale, spec.offset
        for name, value in (("scale", spec.scale), ("offset", spec.offset)):
            if not isinstance(value, (int, float)):  # per channel: a buffer, so it moves with .to(device)
                delattr(self, name)
                self.register_buffer(name, _per_channel(value, len(in_shape)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


@dataclass
class Rescaling(LayerSpec):
    """``x * scale + offset`` (Keras' Rescaling), e.g. 1/255 for raw pixels. ``scale`` and
    ``offset`` are numbers, or tuples of one number per channel (features of a flat input)."""

    type: ClassVar[str] = "rescaling"
    scale: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return _RescalingModule(self, in_shape)

    def output_shape(self, in_shape: Shape) -> Shape:
        for name in ("scale", "offset"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) and len(value) not in (1, in_shape[0]):
                raise ShapeError(f"layer {self.name!r} (rescaling): {len(value)} {name} values for "
                                 f"{in_shape[0]} channels in input {_fmt(in_shape)}")
        return in_shape


def _is_pixels(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _four(spec: LayerSpec, value: Any, what: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras' padding/cropping forms n, (h, w) or ((top, bottom), (left, right)), as the last."""
    if _is_pixels(value):
        return ((value, value), (value, value))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        if all(_is_pixels(v) for v in value):
            return ((value[0], value[0]), (value[1], value[1]))
        if all(isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_pixels(p) for p in v) for v in value):
            return ((value[0][0], value[0][1]), (value[1][0], value[1][1]))
    raise ConfigError(f"layer {spec.name!r}: {what} must be n, (h, w) or ((top, bottom), (left, right)) "
                      f"in non-negative pixels, got {value!r}")


class _ZeroPaddingModule(nn.Module):
    def __init__(self, pads: tuple[tuple[int, int], tuple[int, int]]) -> None:
        super().__init__()
        (top, bottom), (left, right) = pads
        self.pads = (left, right, top, bottom)  # F.pad's order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)  # (B, C, H, W) -> (B, C, H + top + bottom, W + left + right)


@dataclass
class ZeroPadding2D(LayerSpec):
    """Zeros around an image (Keras' ZeroPadding2D). ``padding`` is n, (h, w) or
    ((top, bottom), (left, right)); it is stored in the last form."""

    type: ClassVar[str] = "zero_padding2d"
    padding: Any = 1

    def __post_init__(self) -> None:
        self.padding = _four(self, self.padding, "padding")

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return _ZeroPaddingModule(self.padding)

    def output_shape(self, in_shape: Shape) -> Shape:
        self._need(in_shape, 3, "(channels, height, width) input")
        (top, bottom), (left, right) = self.padding
        return (in_shape[0], in_shape[1] + top + bottom, in_shape[2] + left + right)


class _CroppingModule(nn.Module):
    def __init__(self, crops: tuple[tuple[int, int], tuple[int, int]], in_shape: Shape) -> None:
        super().__init__()
        (top, bottom), (left, right) = crops
        self.rows, self.cols = slice(top, in_shape[1] - bottom), slice(left, in_shape[2] - right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, self.rows, self.cols]  # (B, C, H, W) -> (B, C, H - top - bottom, W - left - right)


@dataclass
class Cropping2D(LayerSpec):
    """Cut pixels off an image's edges (Keras' Cropping2D). ``cropping`` is n, (h, w) or
    ((top, bottom), (left, right)); it is stored in the last form."""

    type: ClassVar[str] = "cropping2d"
    cropping: Any = 1

    def __post_init__(self) -> None:
        self.cropping = _four(self, self.cropping, "cropping")

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return _CroppingModule(self.cropping, in_shape)

    def output_shape(self, in_shape: Shape) -> Shape:
        self._need(in_shape, 3, "(channels, height, width) input")
        (top, bottom), (left, right) = self.cropping
        h, w = in_shape[1] - top - bottom, in_shape[2] - left - right
        if h < 1 or w < 1:
            raise ShapeError(f"layer {self.name!r}: cropping {self.cropping} leaves nothing of input {_fmt(in_shape)}")
        return (in_shape[0], h, w)


def _to_channels_last(shape: Shape) -> Shape:
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape


class _ReshapeModule(nn.Module):
    def __init__(self, target: Shape, channels_last: bool) -> None:
        super().__init__()
        self.target, self.channels_last = target, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last:
            return x.reshape(x.shape[0], *self.target)  # (B, *in) -> (B, *target), row-major
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C), Keras' order
        x = x.reshape(x.shape[0], *_to_channels_last(self.target))
        return x.permute(0, 3, 1, 2) if x.dim() == 4 else x  # (B, H, W, C) -> (B, C, H, W)


@dataclass
class Reshape(LayerSpec):
    """Reshape each example to ``target_shape`` (graftnet order: images are (C, H, W); one
    entry may be -1). The elements keep their row-major order over graftnet's shapes, as
    ``torch.reshape`` does. ``channels_last=True`` reorders as Keras' Reshape does on
    channels-last data instead: an image input is read in (H, W, C) order and an image
    target is filled in (H, W, C) order, so ``Reshape((C, 1, 1), channels_last=True)`` of a
    (C,) vector is Keras' ``Reshape((1, 1, C))``."""

    type: ClassVar[str] = "reshape"
    target_shape: tuple[int, ...] = (-1,)
    channels_last: bool = False

    def __post_init__(self) -> None:
        self.target_shape = tuple(self.target_shape)
        bad = [v for v in self.target_shape if isinstance(v, bool) or not isinstance(v, int) or v == 0 or v < -1]
        if not self.target_shape or bad or self.target_shape.count(-1) > 1:
            raise ConfigError(f"layer {self.name!r}: target_shape must be positive integers with at most "
                              f"one -1, got {self.target_shape!r}")

    def build(self, in_shape: Shape) -> nn.Module:
        return _ReshapeModule(self.output_shape(in_shape), self.channels_last)

    def output_shape(self, in_shape: Shape) -> Shape:
        size, known = math.prod(in_shape), math.prod(v for v in self.target_shape if v != -1)
        if -1 in self.target_shape and size % known == 0:
            return tuple(size // known if v == -1 else v for v in self.target_shape)
        if known != size:
            raise ShapeError(f"layer {self.name!r}: cannot reshape input {_fmt(in_shape)} ({size} values) "
                             f"to {_fmt(self.target_shape)}")
        return self.target_shape


class _ReLUModule(nn.Module):
    def __init__(self, spec: ReLU) -> None:
        super().__init__()
        self.max_value, self.threshold, self.slope = spec.max_value, spec.threshold, spec.negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.threshold == 0.0 and self.slope == 0.0:  # relu or relu6: one clip
            return x.clamp(min=0.0, max=self.max_value)
        # Keras' relu: x where x > threshold, else 0; clipped to [0, max_value]; then the
        # negative part, negative_slope * (x - threshold) below the threshold.
        y = torch.where(x > self.threshold, x, torch.zeros_like(x))
        if self.max_value is not None:
            y = y.clamp(min=0.0, max=self.max_value)
        if self.slope:
            y = y - self.slope * F.relu(self.threshold - x)
        return y


@dataclass
class ReLU(LayerSpec):
    """Keras' ReLU layer: ``max_value`` caps the output (6.0 is relu6, as MobileNetV2 uses),
    values at or below ``threshold`` become ``negative_slope * (x - threshold)``."""

    type: ClassVar[str] = "relu"
    max_value: float | None = None
    threshold: float = 0.0
    negative_slope: float = 0.0

    def __post_init__(self) -> None:
        if self.max_value is not None and self.max_value < 0:
            raise ConfigError(f"layer {self.name!r}: max_value must be >= 0 or None, got {self.max_value!r}")
        if self.negative_slope < 0:
            raise ConfigError(f"layer {self.name!r}: negative_slope must be >= 0, got {self.negative_slope!r}")

    def build(self, in_shape: Shape) -> nn.Module:
        return _ReLUModule(self)


def _axes(spec: LayerSpec, axis: int | tuple[int, ...], in_shape: Shape) -> tuple[int, ...]:
    """Axes counted as in torch, with the batch axis: 1 is the channel axis; -1 the last."""
    rank = len(in_shape) + 1
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes or any(not -rank < a < rank for a in axes) or any(a % rank == 0 for a in axes):
        raise ShapeError(f"layer {spec.name!r} ({spec.type}): axis {axis!r} is not a non-batch axis of "
                         f"input {_fmt(in_shape)} (axes count the batch axis 0, as in torch)")
    return tuple(sorted({a % rank for a in axes}))


def _broadcast(axes: tuple[int, ...], in_shape: Shape) -> tuple[int, ...]:
    """(1, C, 1, 1) for axes (1,) of a (C, H, W) input: what a per-axis vector is viewed as."""
    full = (1, *in_shape)
    return tuple(full[d] if d in axes else 1 for d in range(len(full)))


class _NormalizationModule(nn.Module):
    def __init__(self, spec: Normalization, in_shape: Shape) -> None:
        super().__init__()
        axes = () if spec.axis is None else _axes(spec, spec.axis, in_shape)
        self.view = _broadcast(axes, in_shape)
        kept = tuple(self.view[d] for d in axes)
        # Statistics given in the spec are config (as in Keras: no weights); otherwise they are
        # weights, in the state dict, loaded with the rest (Keras' adapted statistics).
        given = spec.mean is not None and spec.variance is not None
        for name, value, default in (("mean", spec.mean, 0.0), ("variance", spec.variance, 1.0)):
            tensor = torch.tensor(default if value is None else value, dtype=torch.float32)
            tensor = tensor.reshape(kept) if tensor.numel() > 1 else tensor.reshape(()).expand(kept).clone()
            self.register_buffer(name, tensor, persistent=not given)
        self.epsilon = spec.epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, variance = self.mean.reshape(self.view), self.variance.reshape(self.view)
        return (x - mean) / variance.sqrt().clamp(min=self.epsilon)  # Keras: / max(sqrt(var), epsilon)


@dataclass
class Normalization(LayerSpec):
    """Keras' preprocessing Normalization: ``(x - mean) / max(sqrt(variance), epsilon)``.

    ``mean`` and ``variance`` hold one value per index of ``axis`` (torch's count, with the
    batch axis: 1 is the channel axis; None: one value for everything). Given in the spec
    (a number, or one value per index; both or neither), they are part of the config, as
    in Keras' ``Normalization(mean=..., variance=...)``. Otherwise they are buffers in the
    state dict (``<layer>.mean``, ``<layer>.variance``, initially 0 and 1) that load with
    the weights, as Keras' adapted statistics do.
    """

    type: ClassVar[str] = "normalization"
    axis: int | tuple[int, ...] | None = 1
    mean: float | tuple[float, ...] | None = None
    variance: float | tuple[float, ...] | None = None
    epsilon: float = 1e-7  # keras.backend.epsilon()

    def build(self, in_shape: Shape) -> nn.Module:
        self.output_shape(in_shape)
        return _NormalizationModule(self, in_shape)

    def output_shape(self, in_shape: Shape) -> Shape:
        axes = () if self.axis is None else _axes(self, self.axis, in_shape)
        size = math.prod((1, *in_shape)[d] for d in axes)
        for name in ("mean", "variance"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (int, float)) and len(value) not in (1, size):
                raise ShapeError(f"layer {self.name!r} (normalization): {len(value)} {name} values for "
                                 f"{size} positions of axis {self.axis} of input {_fmt(in_shape)}")
        return in_shape


class _LayerNormModule(nn.Module):
    def __init__(self, spec: LayerNormalization, in_shape: Shape) -> None:
        super().__init__()
        self.axes = _axes(spec, spec.axis, in_shape)
        self.view = _broadcast(self.axes, in_shape)
        kept = tuple(self.view[d] for d in self.axes)
        self.epsilon = spec.epsilon
        self.weight = nn.Parameter(torch.ones(kept)) if spec.scale else None
        self.bias = nn.Parameter(torch.zeros(kept)) if spec.center else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=self.axes, keepdim=True)
        variance = (x - mean).square().mean(dim=self.axes, keepdim=True)  # biased, as Keras and torch
        x = (x - mean) * torch.rsqrt(variance + self.epsilon)
        if self.weight is not None:
            x = x * self.weight.reshape(self.view)
        if self.bias is not None:
            x = x + self.bias.reshape(self.view)
        return x


@dataclass
class LayerNormalization(LayerSpec):
    """Normalise each example over ``axis`` (torch's count, with the batch axis; -1 is the
    last axis, 1 the channels of a (C, H, W) image) with a learned ``weight`` (``scale``)
    and ``bias`` (``center``) of the normalised axes' shape. Keras' LayerNormalization;
    its default axis -1 on channels-last images is ``axis=1`` here."""

    type: ClassVar[str] = "layer_norm"
    axis: int | tuple[int, ...] = -1
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True

    def build(self, in_shape: Shape) -> nn.Module:
        return _LayerNormModule(self, in_shape)

    def output_shape(self, in_shape: Shape) -> Shape:
        _axes(self, self.axis, in_shape)
        return in_shape


LAYER_TYPES: dict[str, type[LayerSpec]] = {
    cls.type: cls
    for cls in (Dense, Conv2d, DepthwiseConv2d, SeparableConv2d, MaxPool, AvgPool, GlobalAvgPool,
                GlobalMaxPool, Flatten, Reshape, ZeroPadding2D, Cropping2D, BatchNorm, LayerNormalization,
                Normalization, Dropout, AlphaDropout, Activation, ReLU, Rescaling)
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
