"""The three reported ABM regions: one table of names, label values and RTSTRUCT ROI aliases.

The networks have four classes (background and three regions), so a region table maps exactly
these names to the values 1, 2 and 3 (workflow/schemas/config.schema.yaml enforces it).
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_REGIONS: dict[str, int] = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}
REGION_NAMES: tuple[str, ...] = tuple(DEFAULT_REGIONS)
# RTSTRUCT ROI names that mean each region besides the region's own name (case-insensitive).
DEFAULT_ROI_ALIASES: dict[str, list[str]] = {
    "lumbosacral_spine": ["spine", "lumbosacral spine", "ABM_spine", "ABM lumbosacral spine"],
    "ilium": ["ABM_ilium", "ABM ilium", "iliac bone"],
    "lower_pelvis": ["ABM_lower_pelvis", "ABM lower pelvis", "lower pelvic bones"],
}


def label_values(regions: Mapping[str, int]) -> list[int]:
    """Every value a label image may hold: background 0 and the regions' values, ascending."""
    return [0, *sorted(regions.values())]
