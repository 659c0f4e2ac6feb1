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


def draw_augmentation(generator: torch.Generator) -> torch.Tensor:
    """The six uniform numbers one slice's augmentation uses (float64, drawn in a fixed order so
    that switching one augmentation off does not change the others' values)."""
    return torch.rand(6, generator=generator, dtype=torch.float64)


def augment_slice(
    ct: torch.Tensor,
    pet: torch.Tensor,
    label: torch.Tensor,
    settings: AugmentSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Randomly rotate, flip and jitter one (1, S, S) CT/PET pair and its (S, S) label.

    Geometry (angle, flip) is shared by all three so they stay aligned; jitter is drawn for CT and
    PET independently.
    """
    u = draw_augmentation(generator).tolist()
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


def augment_batch(
    ct: torch.Tensor,
    pet: torch.Tensor,
    label: torch.Tensor,
    draws: torch.Tensor,
    settings: AugmentSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``augment_slice`` for a whole (N, 1, S, S) batch at once, on the tensors' device.

    ``draws`` (N, 6) are each item's ``draw_augmentation`` numbers, drawn where the item was
    loaded, so a batch augmented here equals its items augmented one by one in the loader (within
    float rounding on a GPU): the loader workers only cut slices, and one affine grid and one
    ``grid_sample`` per batch replace 2N small CPU calls.
    """
    u = draws.to(device=ct.device, dtype=torch.float64)
    j = settings.intensity_jitter
    images = torch.cat([ct, pet], dim=1)
    if settings.rotation_deg != 0.0:
        theta = torch.deg2rad((2.0 * u[:, 0] - 1.0) * settings.rotation_deg)
        cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
        matrix = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        ).float()
        grid = F.affine_grid(matrix, [len(u), 1, *images.shape[-2:]], align_corners=False)
        shifted = images.float() - IMAGE_FILL
        images = F.grid_sample(shifted, grid, mode="bilinear", align_corners=False) + IMAGE_FILL
        as_float = (label.float() - LABEL_FILL)[:, None]
        sampled = F.grid_sample(as_float, grid, mode="nearest", align_corners=False)
        label = (sampled[:, 0] + LABEL_FILL).round().to(label.dtype)
        images = images.to(ct.dtype)
    flip = u[:, 1] < settings.hflip_p
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    label = torch.where(flip[:, None, None], label.flip(-1), label)
    ct, pet = images[:, 0:1], images[:, 1:2]
    if j > 0.0:
        scale = (1.0 + (2.0 * u[:, [2, 4]] - 1.0) * j).to(images.dtype)[:, :, None, None]
        shift = ((2.0 * u[:, [3, 5]] - 1.0) * j).to(images.dtype)[:, :, None, None]
        ct = (ct * scale[:, 0:1] + shift[:, 0:1]).clamp_(-1.0, 1.0)
        pet = (pet * scale[:, 1:2] + shift[:, 1:2]).clamp_(-1.0, 1.0)
    return ct.contiguous(), pet.contiguous(), label.contiguous()
