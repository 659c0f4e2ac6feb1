"""Deterministic synthetic pelvic PET-CT cohort written as real DICOM (demo and test data)."""

from abmseg.synth.cohort import SyntheticPatient, generate_cohort, simulate_patient
from abmseg.synth.presets import PRESETS, Preset

__all__ = ["PRESETS", "Preset", "SyntheticPatient", "generate_cohort", "simulate_patient"]
