"""The CT-visible ceiling: P(ABM | everything the CT shows), by Monte Carlo over what it does not.

The generator knows each marrow voxel's cellularity, trabecular fraction, position and all other
tissues; it does not let the CT see the patient's uptake factor, the smooth PET-only uptake field
or the PET noise. Redrawing those (same distributions, same blur, voxels of the PET's size, same
threshold at the patient's mean marrow SUV) and counting how often each voxel ends up labelled
gives the best voxel-wise probability any CT-only method could know. Thresholded at 0.5 it is
the ceiling; no CT-only method beats it except by chance. Simplifications: the redraws skip the
PET-CT motion (a rigid shift that the label's mapping back onto the CT undoes up to
interpolation), and their PET-sized voxels start at the redraw box's corner rather than on the
real PET grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from abmseg.synth.grid import Grid
from abmseg.synth.params import Marrow, draw_uptake_factor
from abmseg.synth.pet import add_pet_noise, blur, marrow_emission, sample


def pet_box_grid(box: Grid, pet_spacing: tuple[float, float, float]) -> Grid:
    """A grid with PET voxel spacing spanning ``box``."""
    extent = [(box.size[i] - 1) * box.spacing[i] for i in range(3)]
    size = tuple(int(np.floor(extent[i] / pet_spacing[i])) + 1 for i in range(3))
    return Grid((size[0], size[1], size[2]), pet_spacing, box.origin)


def ceiling_probability(
    other: np.ndarray,
    uptake: np.ndarray,
    box: Grid,
    pet_spacing: tuple[float, float, float],
    points_xyz: np.ndarray,
    m: Marrow,
    draws: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """P(label) at marrow ``points`` (world mm) from ``draws`` redraws on the emission ``box``.

    ``other`` and ``uptake`` are the non-marrow SUV and the marrow uptake on the box.
    """
    pet = pet_box_grid(box, pet_spacing)
    index = ((points_xyz - np.asarray(pet.origin)) / np.asarray(pet.spacing))[:, ::-1].T
    counts = np.zeros(len(points_xyz), dtype=np.int32)
    for _ in range(draws):
        marrow, _g = marrow_emission(uptake, box, m, draw_uptake_factor(rng), rng)
        acquired = add_pet_noise(sample(blur(other + marrow, box), pet), rng)
        seen = ndimage.map_coordinates(acquired, index, order=1, mode="nearest")
        counts += seen >= seen.mean()
    return (counts / draws).astype(np.float32)
