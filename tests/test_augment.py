"""graftnet.augment: each transform against a reference, reproducibility, configuration."""

from __future__ import annotations

import doctest
import json

import pytest
import torch

from graftnet.augment import Augment, AugmentParams, crop_images, rotate_images, shift_images
from graftnet.errors import ConfigError, ShapeError


def _batch(n: int = 4, channels: int = 1, size: int = 8) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(123))


def _shifted_reference(image: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """Roll by (down, right) and zero the pixels that wrapped around."""
    rolled = torch.roll(image, shifts=(down, right), dims=(-2, -1))
    if down > 0:
        rolled[..., :down, :] = 0
    elif down < 0:
        rolled[..., down:, :] = 0
    if right > 0:
        rolled[..., :, :right] = 0
    elif right < 0:
        rolled[..., :, right:] = 0
    return rolled


def test_output_keeps_shape_dtype_and_device() -> None:
    x = _batch(5, channels=3)
    out = Augment(shift=2, rotate=15.0, flip=True, crop=2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not torch.equal(out, x)


def test_identity_returns_the_batch() -> None:
    x = _batch()
    augment = Augment()
    assert augment.is_identity and not Augment(flip=True).is_identity
    assert augment(x, torch.Generator().manual_seed(0)) is x


def test_same_seed_same_result_different_seed_different() -> None:
    augment = Augment(shift=2, rotate=20.0, flip=True, crop=1)
    x = _batch(16)
    first = augment(x, torch.Generator().manual_seed(7))
    again = augment(x, torch.Generator().manual_seed(7))
    other = augment(x, torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_shift_by_one_pixel_matches_the_rolled_reference() -> None:
    image = torch.arange(36.0).reshape(1, 1, 6, 6)
    for down, right in [(1, 0), (0, -1), (-1, 1)]:
        shifted = shift_images(image, torch.tensor([[down, right]]))
        assert torch.equal(shifted, _shifted_reference(image, down, right))


def test_random_shift_is_one_of_the_allowed_moves() -> None:
    x = torch.arange(36.0).reshape(1, 1, 6, 6).repeat(64, 1, 1, 1)  # (64, 1, 6, 6)
    out = Augment(shift=1)(x, torch.Generator().manual_seed(0))
    references = {(d, r): _shifted_reference(x[0], d, r) for d in (-1, 0, 1) for r in (-1, 0, 1)}
    seen = set()
    for image in out:
        matches = [move for move, reference in references.items() if torch.equal(image, reference)]
        assert len(matches) == 1
        seen.update(matches)
    assert len(seen) >= 7  # 64 draws over 9 moves


def test_flip_twice_with_the_same_draws_is_the_identity() -> None:
    x = _batch(32)
    augment = Augment(flip=True)
    once = augment(x, torch.Generator().manual_seed(3))
    twice = augment(once, torch.Generator().manual_seed(3))
    assert torch.equal(twice, x)
    flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(once, x, strict=True)]
    kept = [torch.equal(a, b) for a, b in zip(once, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_rotation_by_90_degrees_equals_rot90() -> None:
    x = _batch(2, channels=2, size=6)
    rotated = rotate_images(x, torch.tensor([90.0, -90.0]))
    torch.testing.assert_close(rotated[0], torch.rot90(x[0], 1, (1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotated[1], torch.rot90(x[1], -1, (1, 2)), atol=1e-5, rtol=0)


def test_rotation_of_a_wide_image_stays_a_rotation_in_pixels() -> None:
    x = torch.zeros(1, 1, 8, 16)
    x[..., 4:12] = _batch(1, size=8)[0]  # content in the central 8x8 square
    expected = torch.zeros_like(x)
    expected[..., 4:12] = torch.rot90(x[..., 4:12], 1, (2, 3))
    torch.testing.assert_close(rotate_images(x, torch.tensor([90.0])), expected, atol=1e-5, rtol=0)


def test_random_rotation_stays_within_its_range() -> None:
    augment = Augment(rotate=10.0)
    params = augment.sample(1000, torch.Generator().manual_seed(0))
    assert params.angle is not None and params.shift is None and params.flip is None
    assert float(params.angle.abs().max()) <= 10.0 and float(params.angle.std()) > 4.0
    x = _batch(3)
    torch.testing.assert_close(augment.apply(x, AugmentParams(angle=torch.zeros(3))), x)


def test_crop_zeroes_the_border_outside_the_window() -> None:
    x = torch.ones(2, 1, 5, 5)
    cropped = crop_images(x, torch.tensor([[0, 0], [2, 1]]), crop=2)
    assert cropped[0, 0, :3, :3].eq(1).all() and cropped[0].sum() == 9
    assert cropped[1, 0, 2:, 1:4].eq(1).all() and cropped[1].sum() == 9
    params = Augment(crop=2).sample(100, torch.Generator().manual_seed(0))
    assert params.crop is not None and params.crop.min() >= 0 and params.crop.max() == 2


def test_dict_round_trip_and_bad_settings() -> None:
    augment = Augment(shift=2, rotate=10, flip=True, crop=1)
    config = json.loads(json.dumps(augment.to_dict()))
    assert config == {"shift": 2, "rotate": 10.0, "flip": True, "crop": 1}
    assert Augment.from_dict(config) == augment
    with pytest.raises(ConfigError, match=r"unknown augmentation setting\(s\) \['rotation'\].*Did you mean 'rotate'"):
        Augment.from_dict({"rotation": 10})
    with pytest.raises(ConfigError, match="shift must be a whole number of pixels >= 0; got -1"):
        Augment(shift=-1)
    with pytest.raises(ConfigError, match=r"rotate must be degrees in \[0, 180\]; got 200"):
        Augment(rotate=200)


def test_bad_batches_are_rejected() -> None:
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ShapeError, match=r"float batch of images \(B, C, H, W\); got \(8, 8\)"):
        Augment(flip=True)(torch.rand(8, 8), generator)
    with pytest.raises(ShapeError, match="too large for 4x4 images"):
        Augment(shift=4)(torch.rand(2, 1, 4, 4), generator)


def test_docstring_examples_run() -> None:
    import graftnet.augment

    results = doctest.testmod(graftnet.augment)
    assert results.failed == 0 and results.attempted >= 5
