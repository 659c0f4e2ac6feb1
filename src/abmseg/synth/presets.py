"""Scan geometry presets: data, so a new resolution is a new entry, not a new code path."""

from __future__ import annotations

import math
from dataclasses import dataclass

from abmseg.synth.grid import Grid, centred_grid


@dataclass(frozen=True)
class Preset:
    """CT and PET matrix/voxel sizes of one synthetic scanner protocol."""

    name: str
    ct_matrix: int
    ct_pixel_mm: float
    ct_slices: int
    ct_slice_mm: float
    pet_matrix: int
    pet_pixel_mm: float
    pet_slice_mm: float
    pet_extra_slices: int = 2  # PET axial field beyond each end of the CT
    centre_xy_mm: tuple[float, float] = (0.0, 0.0)
    # Simulated anatomy extends past the CT so PET end slices and motion see tissue, not a cut.
    anatomy_margin_mm: float = 20.0
    # In-plane binning of the anatomy grid before the PSF blur (the emission grid): uptake varies
    # little below the 6 mm PSF, so the PET chain need not run on 0.98 mm voxels.
    emission_bin: int = 1
    # Monte Carlo redraws behind the CT-visible ceiling (ceiling_prob.nii.gz).
    ceiling_draws: int = 32

    @property
    def z_extent_mm(self) -> float:
        """Axial length covered by the CT slices (the anatomy is laid out in fractions of it)."""
        return self.ct_slices * self.ct_slice_mm

    def ct_grid(self) -> Grid:
        """CT grid: first (most inferior) slice at z = 0."""
        return centred_grid(
            self.ct_matrix,
            self.ct_pixel_mm,
            self.ct_slices,
            self.ct_slice_mm,
            self.centre_xy_mm,
            0.0,
        )

    def pet_grid(self) -> Grid:
        """PET grid: the CT z-range plus ``pet_extra_slices`` on each end, same x/y centre."""
        ct_len = (self.ct_slices - 1) * self.ct_slice_mm
        first = -self.pet_extra_slices * self.pet_slice_mm
        last = ct_len + self.pet_extra_slices * self.pet_slice_mm
        slices = int(math.floor((last - first) / self.pet_slice_mm + 1e-6)) + 1
        return centred_grid(
            self.pet_matrix, self.pet_pixel_mm, slices, self.pet_slice_mm, self.centre_xy_mm, first
        )

    def anatomy_padding(self) -> int:
        """CT-spaced slices simulated beyond each end of the CT."""
        reach = self.pet_extra_slices * self.pet_slice_mm + self.anatomy_margin_mm
        return int(math.ceil(reach / self.ct_slice_mm))

    def anatomy_grid(self) -> Grid:
        """The CT grid extended by ``anatomy_padding`` slices at both ends."""
        pad = self.anatomy_padding()
        ct = self.ct_grid()
        return Grid(
            (ct.size[0], ct.size[1], ct.size[2] + 2 * pad),
            ct.spacing,
            (ct.origin[0], ct.origin[1], ct.origin[2] - pad * ct.spacing[2]),
        )


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        ct_matrix=128,
        ct_pixel_mm=3.90625,
        ct_slices=40,
        ct_slice_mm=6.0,
        pet_matrix=64,
        pet_pixel_mm=7.8125,
        pet_slice_mm=6.0,
    ),
    "paper": Preset(
        name="paper",
        ct_matrix=512,
        ct_pixel_mm=0.9765625,
        ct_slices=96,
        ct_slice_mm=2.5,
        pet_matrix=256,
        pet_pixel_mm=2.734375,
        pet_slice_mm=2.5,
        # 15 mm beyond each end: the PET-CT motion (up to 6 mm and 3 degrees) never maps CT
        # marrow outside the PET (2 slices, 5 mm, left up to 0.2 % of it without PET).
        pet_extra_slices=6,
        emission_bin=2,
        ceiling_draws=16,
    ),
}


def get_preset(name: str) -> Preset:
    """Look a preset up by name, listing the valid names when it is unknown."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown synth preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None
