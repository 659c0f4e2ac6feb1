"""abmseg: pelvic active bone marrow segmentation pipeline (DICOM PET-CT to ABM masks)."""

__version__ = "0.2.0"
