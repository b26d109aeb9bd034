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

__all__ = ["Augment", "AugmentParams", "ImageAugment", "shift_images", "rotate_images", "crop_images", "to_unit_rgb",
           "from_unit_rgb"]


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


# ============================================================ colour images
_PIXEL_FORMS = ("unit", "caffe", "torch", "tf", "none")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _channel(values: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)


def to_unit_rgb(x: torch.Tensor, form: str) -> torch.Tensor:
    """Undo ``preprocess_input(form)``: (B, 3, H, W) back to RGB in [0, 1] (``"unit"``: as is)."""
    if form == "unit":
        return x
    if form == "none":
        return x / 255.0
    if form == "tf":
        return (x + 1.0) / 2.0
    if form == "torch":
        return x * _channel(_TORCH_STD, x) + _channel(_TORCH_MEAN, x)
    if form == "caffe":
        return (x + _channel(_CAFFE_MEAN_BGR, x)).flip(1) / 255.0  # BGR minus mean -> RGB [0, 255] -> [0, 1]
    raise ConfigError(f"unknown pixel form {form!r}; expected one of {', '.join(_PIXEL_FORMS)}")


def from_unit_rgb(x: torch.Tensor, form: str) -> torch.Tensor:
    """``preprocess_input(255 * x, form)`` for RGB ``x`` in [0, 1], (B, 3, H, W); the inverse of :func:`to_unit_rgb`."""
    if form == "unit":
        return x
    if form == "none":
        return x * 255.0
    if form == "tf":
        return x * 2.0 - 1.0
    if form == "torch":
        return (x - _channel(_TORCH_MEAN, x)) / _channel(_TORCH_STD, x)
    if form == "caffe":
        return (x * 255.0).flip(1) - _channel(_CAFFE_MEAN_BGR, x)
    raise ConfigError(f"unknown pixel form {form!r}; expected one of {', '.join(_PIXEL_FORMS)}")


def _kornia_enhance() -> Any:
    try:
        import kornia.enhance
    except ImportError as exc:
        raise ConfigError("ImageAugment's colour transforms need kornia: pip install kornia "
                          "(or graftnet[images])") from exc
    return kornia.enhance


@dataclass(frozen=True)
class ImageAugment:
    """Random geometry and colour changes of RGB image batches, as batched tensor ops.

    Geometry (one affine warp per image, bilinear, borders reflected as Keras' RandomZoom and
    RandomRotation do by default), then colour on RGB in [0, 1] (kornia's ``enhance`` ops,
    which follow torchvision's and PIL's conventions), clamped to [0, 1]:

    - ``crop``: keep a random window of ``1 - crop`` of each side (at most), resized back to
      the full image (a random resized crop);
    - ``zoom``: scale by a factor drawn in [1 - zoom, 1 + zoom] about the centre;
    - ``rotate``: an angle drawn in [-rotate, +rotate] degrees;
    - ``flip``: left-right with probability 0.5;
    - ``brightness``: add a value drawn in [-brightness, +brightness];
    - ``contrast``: scale the distance from each image's mean grey by [1 - c, 1 + c];
    - ``saturation``: blend with the image's greyscale by a factor in [1 - s, 1 + s];
    - ``hue``: rotate the hue by [-hue, +hue] of a full turn (0.5 is half the colour circle).

    ``pixels`` is what the batches hold: ``"unit"`` (RGB in [0, 1]) or a ``preprocess_input``
    mode (``"caffe"``, ``"torch"``, ``"tf"``, ``"none"``); the batch is brought back to RGB in
    [0, 1] for the transforms and preprocessed again after them, so augmentation always acts
    on colours. :meth:`for_data` reads the mode a dataset was made with.

    Every random number comes from the generator given to the call, so a seeded ``fit`` is
    reproducible. kornia's own ``augmentation`` modules draw from torch's global generator and
    hold their own settings objects; graftnet draws the parameters itself and calls kornia's
    functional colour ops, which are well tested (the RGB <-> HSV hue rotation above all).

        >>> augment = ImageAugment(flip=True, zoom=0.1, brightness=0.1, hue=0.05)
        >>> augment(torch.rand(4, 3, 32, 32), torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 32, 32])
    """

    crop: float = 0.0
    zoom: float = 0.0
    rotate: float = 0.0
    flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    pixels: str = "unit"

    _FRACTIONS = ("crop", "zoom", "brightness", "contrast", "saturation")

    def __post_init__(self) -> None:
        for name in self._FRACTIONS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"ImageAugment.{name} must be a number in [0, 1); got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.hue, bool) or not isinstance(self.hue, (int, float)) or not 0 <= self.hue <= 0.5:
            raise ConfigError(f"ImageAugment.hue must be a fraction of a turn in [0, 0.5]; got {self.hue!r}")
        if isinstance(self.rotate, bool) or not isinstance(self.rotate, (int, float)) or not 0 <= self.rotate <= 180:
            raise ConfigError(f"ImageAugment.rotate must be degrees in [0, 180]; got {self.rotate!r}")
        if not isinstance(self.flip, bool):
            raise ConfigError(f"ImageAugment.flip must be true or false; got {self.flip!r}")
        if self.pixels not in _PIXEL_FORMS:
            raise ConfigError(f"ImageAugment.pixels must be one of {', '.join(_PIXEL_FORMS)}; got {self.pixels!r}"
                              + did_you_mean(str(self.pixels), _PIXEL_FORMS))
        object.__setattr__(self, "hue", float(self.hue))
        object.__setattr__(self, "rotate", float(self.rotate))

    def __repr__(self) -> str:
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                   if getattr(self, f.name) != f.default]
        return f"ImageAugment({', '.join(changed)})"

    @classmethod
    def for_data(cls, data: Any, **settings: Any) -> ImageAugment:
        """An ImageAugment whose ``pixels`` is the preprocessing ``data`` was read with
        (``image_folder(..., preprocess=...)`` records it in ``source["preprocess"]``)."""
        source = getattr(data, "source", None) or {}
        return cls(pixels=str(source.get("preprocess", "unit")), **settings)

    @property
    def is_identity(self) -> bool:
        """True when every transform is off (calling returns the batch unchanged)."""
        return not (self.crop or self.zoom or self.rotate or self.flip or self.brightness or self.contrast
                    or self.saturation or self.hue)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the settings."""
        return {"type": "image", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ImageAugment:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        config = {k: v for k, v in config.items() if k != "type"}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in config if key not in known]
        if unknown:
            raise ConfigError(f"unknown image augmentation setting(s) {unknown}; known: {', '.join(known)}."
                              + did_you_mean(unknown[0], known))
        return cls(**config)

    def _uniform(self, n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)  # (n,)

    def _geometry(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch = len(x)
        one = torch.ones(batch, device=generator.device)
        scale, shift_x, shift_y = one.clone(), torch.zeros_like(one), torch.zeros_like(one)
        if self.crop:
            keep = self._uniform(batch, 1.0 - self.crop, 1.0, generator)  # (B,) side kept
            scale = scale * keep
            shift_x = (self._uniform(batch, -1.0, 1.0, generator) * (1 - keep))  # window centre in [-1, 1] units
            shift_y = (self._uniform(batch, -1.0, 1.0, generator) * (1 - keep))
        if self.zoom:
            scale = scale / self._uniform(batch, 1.0 - self.zoom, 1.0 + self.zoom, generator)  # zoom in: see less
        radians = (self._uniform(batch, -self.rotate, self.rotate, generator) * (math.pi / 180.0)
                   if self.rotate else torch.zeros_like(one))
        flip = (torch.rand(batch, generator=generator, device=generator.device) < 0.5 if self.flip
                else torch.zeros(batch, dtype=torch.bool, device=generator.device))
        if not (self.crop or self.zoom or self.rotate):
            return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
        height, width = x.shape[-2:]
        cos, sin = torch.cos(radians) * scale, torch.sin(radians) * scale
        sign = torch.where(flip, -1.0, 1.0)  # a flip mirrors the output's x axis
        # output (u, v) in [-1, 1] -> input position; rotation kept a rotation in pixels (H/W factors)
        theta = torch.stack([
            torch.stack([cos * sign, -sin * height / width, shift_x], dim=-1),
            torch.stack([sin * width / height * sign, cos, shift_y], dim=-1),
        ], dim=1).to(x.device, x.dtype)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _colour(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not (self.brightness or self.contrast or self.saturation or self.hue):
            return x
        enhance = _kornia_enhance()
        batch = len(x)
        # draw every factor first, in a fixed order, so the stream does not depend on which ops run
        factors = {name: self._uniform(batch, -1.0, 1.0, generator).to(x.device, x.dtype)
                   for name in ("brightness", "contrast", "saturation", "hue") if getattr(self, name)}
        if "brightness" in factors:
            x = enhance.adjust_brightness(x, factors["brightness"] * self.brightness)
        if "contrast" in factors:
            x = enhance.adjust_contrast_with_mean_subtraction(x, 1.0 + factors["contrast"] * self.contrast)
        if "saturation" in factors:
            x = enhance.adjust_saturation_with_gray_subtraction(x, 1.0 + factors["saturation"] * self.saturation)
        if "hue" in factors:
            x = enhance.adjust_hue(x, factors["hue"] * (self.hue * 2 * math.pi))  # radians
        return x.clamp(0.0, 1.0)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch ``x`` (B, 3, H, W) held as ``pixels``, drawing only from ``generator``."""
        _check_images(x)
        if self.is_identity:
            return x
        if x.shape[1] != 3 and (self.saturation or self.hue or self.pixels in ("caffe", "torch")):
            raise ShapeError(f"ImageAugment: saturation, hue and {self.pixels!r} pixels need RGB batches "
                             f"(B, 3, H, W); got {tuple(x.shape)}")
        rgb = to_unit_rgb(x, self.pixels)  # (B, 3, H, W) in [0, 1]
        rgb = self._colour(self._geometry(rgb, generator), generator)
        return from_unit_rgb(rgb, self.pixels)
