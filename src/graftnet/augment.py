"""Random image augmentation on batches, as pure tensor ops driven by one generator.

:class:`Augment` is a JSON-able description (shift, rotate, flip, crop) that a recipe
or a checkpoint can store; calling it on a batch ``(B, C, H, W)`` draws every random
number from the ``torch.Generator`` it is given, so training stays reproducible, and
runs on whatever device the batch is on.

    >>> import torch
    >>> augment = Augment(shift=2, rotate=10.0, flip=True)
    >>> generator = torch.Generator().manual_seed(0)
    >>> augment(torch.rand(8, 1, 28, 28), generator).shape
    torch.Size([8, 1, 28, 28])
    >>> Augment.from_dict(augment.to_dict()) == augment
    True

The deterministic pieces (:func:`shift_images`, :func:`rotate_images`,
:func:`crop_images`) are public so that a caller can apply a known transform.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from graftnet.errors import ConfigError, ShapeError, did_you_mean

__all__ = ["Augment", "AugmentParams", "shift_images", "rotate_images", "crop_images"]


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        dtype = x.dtype if isinstance(x, torch.Tensor) else "-"
        raise ShapeError(f"augmentation needs a float batch of images (B, C, H, W); got {shape} ({dtype})")


def shift_images(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Move each image by whole pixels, filling with zeros.

    ``offsets`` is (B, 2) int64 of (down, right) pixels per image; negative moves up/left.

        >>> x = torch.arange(9.).reshape(1, 1, 3, 3)
        >>> shift_images(x, torch.tensor([[1, 0]]))[0, 0].tolist()
        [[0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    _check_images(x)
    batch, channels, height, width = x.shape
    offsets = offsets.to(x.device, torch.int64)
    pad = int(offsets.abs().max()) if offsets.numel() else 0
    if pad == 0:
        return x.clone()
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
    rows = torch.arange(height, device=x.device) + pad - offsets[:, 0:1]  # (B, H): source row per output row
    cols = torch.arange(width, device=x.device) + pad - offsets[:, 1:2]  # (B, W)
    b = torch.arange(batch, device=x.device)[:, None, None, None]
    c = torch.arange(channels, device=x.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def rotate_images(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by ``degrees`` (B,), counter-clockwise as displayed
    (row 0 at the top); bilinear, zeros outside. 90 degrees equals ``torch.rot90(x, 1, (2, 3))``
    on square images.
    """
    _check_images(x)
    _, _, height, width = x.shape
    radians = degrees.to(x.device, x.dtype) * (math.pi / 180.0)  # (B,)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input positions in [-1, 1] units; scale by H/W so that a
    # rotation of a non-square image stays a rotation in pixel space.
    theta = torch.stack(
        [
            torch.stack([cos, -sin * height / width, zero], dim=-1),
            torch.stack([sin * width / height, cos, zero], dim=-1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def crop_images(x: torch.Tensor, top_left: torch.Tensor, crop: int) -> torch.Tensor:
    """Keep a (H - crop) x (W - crop) window of each image where it is; zero the rest.

    ``top_left`` is (B, 2) int64: the window's first row and column, each in [0, crop].

        >>> x = torch.ones(1, 1, 3, 3)
        >>> crop_images(x, torch.tensor([[0, 1]]), 1)[0, 0].tolist()
        [[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    """
    _check_images(x)
    _, _, height, width = x.shape
    top_left = top_left.to(x.device, torch.int64)
    rows = torch.arange(height, device=x.device)[None]  # (1, H)
    cols = torch.arange(width, device=x.device)[None]  # (1, W)
    top, left = top_left[:, 0:1], top_left[:, 1:2]  # (B, 1) each
    keep_rows = (rows >= top) & (rows < top + height - crop)  # (B, H)
    keep_cols = (cols >= left) & (cols < left + width - crop)  # (B, W)
    mask = keep_rows[:, None, :, None] & keep_cols[:, None, None, :]  # (B, 1, H, W)
    return x * mask


@dataclass(frozen=True)
class AugmentParams:
    """The random draws for one batch; a field is None when its transform is off."""

    crop: torch.Tensor | None = None  # (B, 2) int64 top-left of the kept window
    shift: torch.Tensor | None = None  # (B, 2) int64 (down, right) pixels
    angle: torch.Tensor | None = None  # (B,) degrees
    flip: torch.Tensor | None = None  # (B,) bool: flip left-right


@dataclass(frozen=True)
class Augment:
    """Random shifts, rotations, horizontal flips and crops of image batches.

    - ``shift``: move by up to ``shift`` pixels in each direction, zero fill.
    - ``rotate``: rotate by an angle drawn uniformly in [-rotate, +rotate] degrees.
    - ``flip``: flip left-right with probability 0.5.
    - ``crop``: keep a random (H - crop) x (W - crop) window, zero the border around it.

    Transforms run in the order crop, shift, rotate, flip.

        >>> Augment(shift=1).is_identity, Augment().is_identity
        (False, True)
    """

    shift: int = 0
    rotate: float = 0.0
    flip: bool = False
    crop: int = 0

    def __post_init__(self) -> None:
        for name in ("shift", "crop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"Augment.{name} must be a whole number of pixels >= 0; got {value!r}")
        if isinstance(self.rotate, bool) or not isinstance(self.rotate, (int, float)) or not 0 <= self.rotate <= 180:
            raise ConfigError(f"Augment.rotate must be degrees in [0, 180]; got {self.rotate!r}")
        if not isinstance(self.flip, bool):
            raise ConfigError(f"Augment.flip must be true or false; got {self.flip!r}")
        object.__setattr__(self, "rotate", float(self.rotate))

    @property
    def is_identity(self) -> bool:
        """True when every transform is off (calling returns the batch unchanged)."""
        return self.shift == 0 and self.rotate == 0.0 and not self.flip and self.crop == 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: ``{"shift": 2, "rotate": 10.0, "flip": True, "crop": 0}``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Augment:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in config if key not in known]
        if unknown:
            raise ConfigError(
                f"unknown augmentation setting(s) {unknown}; known: {', '.join(known)}."
                + did_you_mean(unknown[0], known)
            )
        return cls(**config)

    def sample(self, batch_size: int, generator: torch.Generator) -> AugmentParams:
        """Draw this batch's random parameters from ``generator`` (on its own device)."""
        device = generator.device
        draw: dict[str, torch.Tensor] = {}
        if self.crop:
            draw["crop"] = torch.randint(0, self.crop + 1, (batch_size, 2), generator=generator, device=device)
        if self.shift:
            draw["shift"] = torch.randint(
                -self.shift, self.shift + 1, (batch_size, 2), generator=generator, device=device
            )
        if self.rotate:
            uniform = torch.rand(batch_size, generator=generator, device=device)  # (B,) in [0, 1)
            draw["angle"] = (uniform * 2 - 1) * self.rotate
        if self.flip:
            draw["flip"] = torch.rand(batch_size, generator=generator, device=device) < 0.5
        return AugmentParams(**draw)

    def apply(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply drawn parameters to ``x`` (B, C, H, W); returns a new (B, C, H, W) tensor."""
        _check_images(x)
        if params.crop is not None:
            x = crop_images(x, params.crop, self.crop)
        if params.shift is not None:
            x = shift_images(x, params.shift)
        if params.angle is not None:
            x = rotate_images(x, params.angle)
        if params.flip is not None:
            flip = params.flip.to(x.device)[:, None, None, None]  # (B, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch ``x`` (B, C, H, W), drawing only from ``generator``."""
        _check_images(x)
        if self.is_identity:
            return x
        height, width = x.shape[-2:]
        if max(self.shift, self.crop) >= min(height, width):
            raise ShapeError(f"Augment(shift={self.shift}, crop={self.crop}) is too large for {height}x{width} images")
        return self.apply(x, self.sample(len(x), generator))
