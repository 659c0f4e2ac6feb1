"""One patient's predicted ABM back into the planning system: DICOM SEG and RTSTRUCT of the CT.

Both files reference the patient's original CT series (study, series, every SOP instance, frame
of reference), so a planning system places them on that CT. They carry the CT's own patient and
study attributes (a planning system matches on them) and nothing else identifying: they belong
with the raw DICOM, not with the identity-free results. The class probabilities go out the same
way, as a FRACTIONAL (probability) SEG of the same CT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg.io.channels import read_channels
from abmseg.io.dicom_series import DicomSeries, read_series
from abmseg.io.volume import read_nifti
from abmseg.regions import DEFAULT_REGIONS
from abmseg.rt.rtstruct import SERIES_DESCRIPTION as RTSTRUCT_SERIES_DESCRIPTION
from abmseg.rt.rtstruct import write_rtstruct
from abmseg.rt.seg import (
    PROBABILITY_SERIES_DESCRIPTION,
    SEG_SERIES_DESCRIPTION,
    write_dicom_seg,
    write_fractional_seg,
)
from abmseg.settings import pick


@dataclass(frozen=True)
class ExportSettings:
    """The region table the exported SEG segments and RTSTRUCT ROIs are named after: the run's
    config['regions'], or a model bundle's for CT-only patients."""

    regions: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_REGIONS))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ExportSettings:
        return cls(**pick(config, "regions"))


def export_patient(
    patient: str,
    abm_ct: str | Path,
    ct_folder: str | Path,
    regions: Mapping[str, int],
    out_seg: str | Path,
    out_rtstruct: str | Path,
    made_by: str = "infer",
    probabilities: tuple[str | Path, str | Path] | None = None,
    qa_verdict: str | None = None,
) -> dict[str, dict[str, int]]:
    """Write ``abm_ct`` (the ABM on the converted planning-CT grid) as SEG and RTSTRUCT of the CT
    series in ``ct_folder``; return the voxel count per region (0 where the model found none).
    ``made_by``: the rule that wrote ``abm_ct`` (infer, or predict for CT-only patients).
    ``probabilities``: (abm_prob.nii.gz, the probability SEG to write from it), if wanted.
    ``qa_verdict``: the prediction's QA verdict, shown in every series description."""
    label = read_nifti(abm_ct, patient, made_by=made_by)
    series = read_series(ct_folder, "CT", patient)
    summary = export_label(patient, label, series, regions, out_seg, out_rtstruct, qa_verdict)
    if probabilities is not None:
        prob, out = probabilities
        export_probabilities(patient, prob, series, regions, out, made_by, qa_verdict)
    return summary


def with_verdict(description: str, qa_verdict: str | None) -> str:
    """A series description with the QA verdict appended (``... QA FAIL``), so a planner sees
    it in the planning system's series list; at most 64 characters (DICOM LO)."""
    text = description if qa_verdict is None else f"{description} QA {qa_verdict.upper()}"
    if len(text) > 64:
        raise ValueError(f"series description {text!r} is longer than 64 characters")
    return text


def export_label(
    patient: str,
    label: sitk.Image,
    series: DicomSeries,
    regions: Mapping[str, int],
    out_seg: str | Path,
    out_rtstruct: str | Path,
    qa_verdict: str | None = None,
) -> dict[str, dict[str, int]]:
    """:func:`export_patient` for a label and CT series already in memory (``abmseg predict``
    has both: no second read of the series or the mask)."""
    seg_text = with_verdict(SEG_SERIES_DESCRIPTION, qa_verdict)
    write_dicom_seg(label, series, regions, out_seg, patient, series_description=seg_text)
    rt_text = with_verdict(RTSTRUCT_SERIES_DESCRIPTION, qa_verdict)
    write_rtstruct(
        label, series, regions, out_rtstruct, patient=patient, series_description=rt_text
    )
    counts = np.bincount(sitk.GetArrayViewFromImage(label).ravel(), minlength=256)
    return {"voxels_per_region": {name: int(counts[value]) for name, value in regions.items()}}


def export_probabilities(
    patient: str,
    prob_path: str | Path,
    series: DicomSeries,
    regions: Mapping[str, int],
    out_path: str | Path,
    made_by: str = "infer",
    qa_verdict: str | None = None,
) -> None:
    """Write the class probabilities in ``prob_path`` (4D NIfTI, channel c = label value c, on the
    planning-CT grid) as a probability SEG of ``series``. ``made_by``: the rule that wrote it."""
    probabilities, grid = read_channels(prob_path, patient, made_by=made_by)
    text = with_verdict(PROBABILITY_SERIES_DESCRIPTION, qa_verdict)
    write_fractional_seg(probabilities, grid, series, regions, out_path, patient, text)
