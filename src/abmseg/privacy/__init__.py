"""Patient-identity checks: the identifiers a DICOM export holds, and outputs that hold any."""
