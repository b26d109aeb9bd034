"""Merge layers: the joins of a graph network (ResNet's Add, DenseNet's Concatenate, SE's Multiply).

A merge layer takes the outputs of several layers, named in its ``inputs``, and gives one::

    >>> from graftnet import Network, Dense, Add
    >>> net = Network([Dense(8, "relu", name="a"), Dense(8, name="b"),
    ...                Add(name="skip", inputs=["a", "b"])], input_shape=(4,))
    >>> net.inputs_of("skip")
    ['a', 'b']

Elementwise merges (Add, Subtract, Multiply, Average, Maximum, Minimum) need inputs of one
shape, except that an input of size 1 along an axis broadcasts, as squeeze-and-excite's
``(C, 1, 1)`` gates do; Concatenate joins along ``axis`` (counted as in torch, the batch
axis being 0: the default 1 is channels for images and features for vectors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from graftnet.errors import ConfigError, ShapeError
from graftnet.layers import LAYER_TYPES, LayerSpec

__all__ = ["Add", "Average", "Concatenate", "Maximum", "Minimum", "MergeSpec", "Multiply", "Subtract"]

Shape = tuple[int, ...]


def _fmt(shapes: list[Shape]) -> str:
    return ", ".join("(" + ", ".join(map(str, s)) + ")" for s in shapes)


@dataclass
class MergeSpec(LayerSpec):
    """Base of layers that take several inputs (``inputs`` names them; at least two)."""

    merges: ClassVar[bool] = True
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int | None] = None

    def check_arity(self, n: int) -> None:
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"exactly {self.min_inputs}" if self.max_inputs == self.min_inputs
                    else f"at least {self.min_inputs}")
            raise ConfigError(f"layer {self.name!r} ({self.type}) takes {want} inputs, got {n}"
                              f"{' (' + ', '.join(self.inputs) + ')' if self.inputs else ''}; name them in inputs=[...]")


class _ElementwiseModule(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:  # each (B, ...), broadcastable
        out = xs[0]
        if self.kind == "subtract":
            return out - xs[1]
        for x in xs[1:]:
            if self.kind in ("add", "average"):
                out = out + x
            elif self.kind == "multiply":
                out = out * x
            elif self.kind == "maximum":
                out = torch.maximum(out, x)
            else:
                out = torch.minimum(out, x)
        return out / len(xs) if self.kind == "average" else out


@dataclass
class _Elementwise(MergeSpec):
    def build(self, in_shapes: list[Shape]) -> nn.Module:  # type: ignore[override]
        self.output_shape(in_shapes)
        return _ElementwiseModule(self.type)

    def output_shape(self, in_shapes: list[Shape]) -> Shape:  # type: ignore[override]
        self.check_arity(len(in_shapes))
        if len({len(s) for s in in_shapes}) != 1:
            raise ShapeError(f"layer {self.name!r} ({self.type}) needs inputs of the same rank, got "
                             f"{_fmt(in_shapes)} from {', '.join(self.inputs or [])}")
        out = []
        for sizes in zip(*in_shapes):
            big = {s for s in sizes if s != 1}
            if len(big) > 1:
                raise ShapeError(f"layer {self.name!r} ({self.type}) cannot merge shapes {_fmt(in_shapes)} "
                                 f"from {', '.join(self.inputs or [])}: sizes must match (or be 1) on every axis")
            out.append(big.pop() if big else 1)
        return tuple(out)


@dataclass
class Add(_Elementwise):
    """The sum of its inputs (a residual connection)."""

    type: ClassVar[str] = "add"


@dataclass
class Subtract(_Elementwise):
    """First input minus the second."""

    type: ClassVar[str] = "subtract"
    max_inputs: ClassVar[int | None] = 2


@dataclass
class Multiply(_Elementwise):
    """The elementwise product (squeeze-and-excite's channel gates)."""

    type: ClassVar[str] = "multiply"


@dataclass
class Average(_Elementwise):
    """The elementwise mean."""

    type: ClassVar[str] = "average"


@dataclass
class Maximum(_Elementwise):
    """The elementwise maximum."""

    type: ClassVar[str] = "maximum"


@dataclass
class Minimum(_Elementwise):
    """The elementwise minimum."""

    type: ClassVar[str] = "minimum"


class _ConcatModule(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)  # (B, C1, ...) + (B, C2, ...) -> (B, C1 + C2, ...)


@dataclass
class Concatenate(MergeSpec):
    """Join inputs along ``axis`` (1: channels or features; the batch axis is 0)."""

    type: ClassVar[str] = "concatenate"
    axis: int = 1

    def _example_axis(self, rank: int) -> int:
        axis = self.axis if self.axis < 0 else self.axis - 1  # on one example's shape
        if self.axis == 0 or not -rank <= axis < rank:
            raise ShapeError(f"layer {self.name!r} (concatenate): axis {self.axis} does not exist for inputs of "
                             f"rank {rank + 1} (with the batch axis); use 1..{rank} or -1..-{rank}")
        return axis % rank

    def build(self, in_shapes: list[Shape]) -> nn.Module:  # type: ignore[override]
        self.output_shape(in_shapes)
        return _ConcatModule(self._example_axis(len(in_shapes[0])) + 1)

    def output_shape(self, in_shapes: list[Shape]) -> Shape:  # type: ignore[override]
        self.check_arity(len(in_shapes))
        ranks = {len(s) for s in in_shapes}
        if len(ranks) != 1:
            raise ShapeError(f"layer {self.name!r} (concatenate) needs inputs of the same rank, got {_fmt(in_shapes)}")
        axis = self._example_axis(ranks.pop())
        rest = {s[:axis] + s[axis + 1:] for s in in_shapes}
        if len(rest) != 1:
            raise ShapeError(f"layer {self.name!r} (concatenate) along axis {self.axis} needs the other axes to "
                             f"match, got {_fmt(in_shapes)} from {', '.join(self.inputs or [])}")
        out = list(in_shapes[0])
        out[axis] = sum(s[axis] for s in in_shapes)
        return tuple(out)


MERGE_TYPES: dict[str, type[MergeSpec]] = {
    cls.type: cls for cls in (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate)}
LAYER_TYPES.update(MERGE_TYPES)
