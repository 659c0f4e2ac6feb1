"""Training augmentation of the paper: rotation +-10 deg, horizontal flip, intensity jitter
(docs/method.md, "Training schedule and augmentation").

Every random number comes from a ``torch.Generator`` the caller seeds per item (see
``derive_seed``), never from a global RNG: an epoch's augmentations then depend only on
(seed, epoch, item), not on how many DataLoader workers there are or which one ran the item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)

from abmseg.slicing import IMAGE_FILL, LABEL_FILL


@dataclass(frozen=True)
class AugmentSettings:
    """Augmentation strengths; zero (or p = 0) turns one off."""

    rotation_deg: float = 10.0  # angle drawn from U(-rotation_deg, rotation_deg)
    hflip_p: float = 0.5  # probability of a left-right (x axis) flip
    intensity_jitter: float = 0.05  # x * U(1-j, 1+j) + U(-j, j), per modality, then clip


def derive_seed(*parts: int) -> int:
    """Mix integers (seed, epoch, index, ...) into one well-spread 64-bit seed.

    ``numpy.random.SeedSequence`` hashes the tuple, so neighbouring epochs or items do not get
    correlated streams as they could with ``seed + epoch``.
    """
    if any(int(p) < 0 for p in parts):
        raise ValueError(f"seed parts must be non-negative integers, got {parts}")
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``derive_seed(*parts)``."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(*parts))
    return generator


def rotate(
    images: torch.Tensor, label: torch.Tensor | None, angle_deg: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rotate (C, S, S) images (bilinear, fill -1) and an (S, S) label (nearest, fill 0) together.

    Positive angles turn the picture counter-clockwise as displayed with row 0 at the top (the same
    sense as ``torch.rot90`` with k=1). Implemented with ``affine_grid``/``grid_sample`` on the
    square network input, where normalised coordinates are isotropic.
    """
    if angle_deg == 0.0:
        return images, label
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    # grid_sample pulls: output pixel (x, y) reads the input at A @ (x, y); A rotates by -theta
    # in display orientation (y points down), which turns the picture by +theta.
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=torch.float32)
    grid = F.affine_grid(matrix[None], [1, 1, *images.shape[-2:]], align_corners=False)
    # grid_sample pads with 0; shift so the padding becomes IMAGE_FILL after shifting back.
    shifted = (images.float() - IMAGE_FILL)[None]
    rotated = F.grid_sample(shifted, grid, mode="bilinear", align_corners=False) + IMAGE_FILL
    rotated_label = None
    if label is not None:
        as_float = (label.float() - LABEL_FILL)[None, None]
        sampled = F.grid_sample(as_float, grid, mode="nearest", align_corners=False)
        rotated_label = (sampled[0, 0] + LABEL_FILL).round().to(label.dtype)
    return rotated[0].to(images.dtype), rotated_label


def jitter(image: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """``image * scale + shift`` clipped back to the normalised range [-1, 1]."""
    return (image * scale + shift).clamp_(-1.0, 1.0)


def augment_slice(
    ct: torch.Tensor,
    pet: torch.Tensor,
    label: torch.Tensor,
    settings: AugmentSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Randomly rotate, flip and jitter one (1, S, S) CT/PET pair and its (S, S) label.

    Geometry (angle, flip) is shared by all three so they stay aligned; jitter is drawn for CT and
    PET independently. All six numbers are always drawn, in a fixed order, so switching one
    augmentation off does not change the random values of the others.
    """
    u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
    angle = (2.0 * u[0] - 1.0) * settings.rotation_deg
    flip = u[1] < settings.hflip_p
    j = settings.intensity_jitter
    ct_scale, ct_shift = 1.0 + (2.0 * u[2] - 1.0) * j, (2.0 * u[3] - 1.0) * j
    pet_scale, pet_shift = 1.0 + (2.0 * u[4] - 1.0) * j, (2.0 * u[5] - 1.0) * j

    images, label = rotate(torch.cat([ct, pet]), label, angle)
    if flip:
        images, label = images.flip(-1), label.flip(-1)
    ct, pet = images[0:1], images[1:2]
    if j > 0.0:
        ct, pet = jitter(ct, ct_scale, ct_shift), jitter(pet, pet_scale, pet_shift)
    return ct.contiguous(), pet.contiguous(), label.contiguous()
