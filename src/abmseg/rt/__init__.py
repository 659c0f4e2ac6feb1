"""DICOM RT Structure Sets: ABM contours in (as region labels) and out (from predicted labels)."""

from abmseg.rt.contours import fill_polygons, mask_to_contours
from abmseg.rt.rtstruct import (
    RtstructLabel,
    load_rtstruct,
    read_rtstruct,
    write_rtstruct,
)

__all__ = [
    "RtstructLabel",
    "fill_polygons",
    "load_rtstruct",
    "mask_to_contours",
    "read_rtstruct",
    "write_rtstruct",
]
