"""Write CT and PET series as standard DICOM files (Explicit VR Little Endian, one slice a file).

The tags are the ones real readers need: full geometry, rescale, and for PET the QIBA SUV tags
(BQML, DecayCorrection START, dose, half-life, injection and series times, weight).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from abmseg.synth.ct import CT_RESCALE_INTERCEPT
from abmseg.synth.grid import Grid
from abmseg.synth.identity import synthetic_identity
from abmseg.synth.params import STUDY_DATE, PatientParams
from abmseg.synth.uids import file_name, synth_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
MANUFACTURER = "abmseg-synth"
STUDY_DATE_STR = STUDY_DATE.strftime("%Y%m%d")


def dicom_time(seconds_of_day: int) -> str:
    """HHMMSS.ffffff for a whole number of seconds since midnight."""
    h, rest = divmod(int(seconds_of_day), 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}{m:02d}{s:02d}.000000"


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (the DS limit)."""
    return format_number_as_ds(float(value))


class SeriesWriter:
    """Shared patient/study/frame-of-reference tags of one synthetic patient."""

    def __init__(self, p: PatientParams, seed: int, preset: str) -> None:
        self.p = p
        self.key = (seed, p.index)
        self.preset = preset

    def uid(self, *parts: object) -> str:
        return synth_uid(*self.key, self.preset, *parts)

    def _base(self, sop_class: str, modality: str, number: int) -> Dataset:
        acq = self.p.acquisition
        identity = synthetic_identity(*self.key)
        sop_uid = self.uid(modality, "instance", number)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.PatientName = identity.dicom_name
        ds.PatientID = identity.mrn
        ds.PatientBirthDate = acq.birth_date.strftime("%Y%m%d")
        ds.PatientSex = acq.sex
        ds.PatientAge = f"{acq.age:03d}Y"
        ds.PatientWeight = _ds(acq.weight_kg)
        ds.PatientSize = _ds(acq.height_m)
        ds.StudyInstanceUID = self.uid("study")
        ds.StudyDate = STUDY_DATE_STR
        ds.StudyTime = dicom_time(acq.ct_s)
        ds.StudyID = "1"
        ds.AccessionNumber = identity.accession_number
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Synthetic pelvic PET-CT"
        ds.FrameOfReferenceUID = self.uid("frame")
        ds.PositionReferenceIndicator = ""
        ds.Modality = modality
        ds.Manufacturer = MANUFACTURER
        ds.ManufacturerModelName = f"synthetic {self.preset}"
        ds.BodyPartExamined = "PELVIS"
        ds.PatientPosition = "HFS"
        ds.SeriesInstanceUID = self.uid(modality, "series")
        return ds

    @staticmethod
    def _image(ds: Dataset, grid: Grid, k: int, pixels: np.ndarray) -> None:
        z = grid.origin[2] + k * grid.spacing[2]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(grid.origin[0]), _ds(grid.origin[1]), _ds(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [_ds(grid.spacing[1]), _ds(grid.spacing[0])]
        ds.SliceThickness = _ds(grid.spacing[2])
        ds.SpacingBetweenSlices = _ds(grid.spacing[2])
        ds.SliceLocation = _ds(z)
        ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()

    def write_ct(self, folder: Path, grid: Grid, stored: np.ndarray) -> None:
        """One file per slice of ``stored`` (z, y, x) int16, HU = value - 1024."""
        acq = self.p.acquisition
        for k in range(grid.size[2]):
            ds = self._base(CT_IMAGE_STORAGE, "CT", k)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SeriesNumber = 2
            ds.SeriesDescription = "CT pelvis"
            for what in ("Series", "Acquisition", "Content"):
                setattr(ds, f"{what}Date", STUDY_DATE_STR)
                setattr(ds, f"{what}Time", dicom_time(acq.ct_s))
            ds.KVP = "120"
            ds.ConvolutionKernel = "STANDARD"
            ds.RescaleType = "HU"
            ds.RescaleIntercept = _ds(CT_RESCALE_INTERCEPT)
            ds.RescaleSlope = "1"
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
            self._image(ds, grid, k, stored[k])
            ds.save_as(
                folder / file_name(*self.key, self.preset, "CT", k), enforce_file_format=True
            )

    def write_pet(self, folder: Path, grid: Grid, slices: Sequence[tuple[np.ndarray, str]]) -> None:
        """One file per (int16 pixels, RescaleSlope string) slice, in Bq/ml after rescale."""
        acq = self.p.acquisition
        injection_time = dicom_time(acq.injection_s)
        for k, (pixels, slope) in enumerate(slices):
            ds = self._base(PET_IMAGE_STORAGE, "PT", k)
            ds.ImageType = ["ORIGINAL", "PRIMARY"]
            ds.SeriesNumber = 3
            ds.SeriesDescription = "PET AC pelvis"
            for what in ("Series", "Acquisition", "Content"):
                setattr(ds, f"{what}Date", STUDY_DATE_STR)
                setattr(ds, f"{what}Time", dicom_time(acq.pet_s))
            ds.Units = "BQML"
            ds.DecayCorrection = "START"
            ds.CorrectedImage = ["ATTN", "DECY"]
            ds.SeriesType = ["STATIC", "IMAGE"]
            ds.CountsSource = "EMISSION"
            ds.DecayFactor = "1"
            ds.FrameReferenceTime = "0"
            ds.ActualFrameDuration = 180000
            ds.NumberOfSlices = len(slices)
            ds.ImageIndex = k + 1
            info = Dataset()
            info.Radiopharmaceutical = "Fluorodeoxyglucose"
            info.RadiopharmaceuticalStartTime = injection_time
            info.RadiopharmaceuticalStartDateTime = STUDY_DATE_STR + injection_time
            info.RadionuclideTotalDose = _ds(acq.total_dose_bq)
            info.RadionuclideHalfLife = _ds(acq.half_life_s)
            ds.RadiopharmaceuticalInformationSequence = DicomSequence([info])
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = slope
            self._image(ds, grid, k, pixels)
            ds.save_as(
                folder / file_name(*self.key, self.preset, "PT", k), enforce_file_format=True
            )
