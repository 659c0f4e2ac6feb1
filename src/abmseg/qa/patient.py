"""One prediction's statistics, QA verdict and QA picture, written beside its masks.

Rule predict and ``abmseg predict`` call :func:`assess_prediction` on the maps in memory right
after the networks ran; rule qa (``abmseg qa``) calls :func:`assess_files` on the maps rule
infer wrote, so changing a QA limit does not rerun the networks. Both give the same files
(abm_stats.tsv, abm_stats.json, qa.json, qa.png).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg.atomic import write_json
from abmseg.io.channels import read_channels
from abmseg.io.volume import image_like, read_nifti
from abmseg.preprocess.roi import box_slices
from abmseg.qa.checks import QaSettings, assess
from abmseg.qa.measure import measure_ct
from abmseg.qa.profile import TrainingProfile, region_volumes_ml
from abmseg.qa.stats import marrow_mean_entropy, region_statistics, write_stats_tsv

RESEARCH_USE = "Research use only: not a medical device, not for clinical decisions."


# rule infer's maps the assessment reads (abmseg qa --maps FOLDER)
MAPS = {
    "abm": "abm.nii.gz",
    "spet": "spet.nii.gz",
    "prob": "abm_prob.nii.gz",
    "uncertainty": "abm_uncertainty.nii.gz",
}
ASSESSMENT_NAMES = {
    "stats": "abm_stats.tsv",
    "stats_json": "abm_stats.json",
    "qa": "qa.json",
    "qa_png": "qa.png",
}


@dataclass(frozen=True)
class AssessmentPaths:
    stats: Path
    stats_json: Path
    qa: Path
    qa_png: Path

    @classmethod
    def in_folder(cls, folder: str | Path) -> AssessmentPaths:
        return cls(**{key: Path(folder) / name for key, name in ASSESSMENT_NAMES.items()})

    @classmethod
    def of_rule(cls, output: Any) -> AssessmentPaths:
        """A rule's named outputs (snakemake.output), which carry these names."""
        return cls(**{key: Path(getattr(output, key)) for key in ASSESSMENT_NAMES})


@dataclass(frozen=True)
class PredictionMaps:
    """What the networks gave for one patient, on the cropped grid (z, y, x)."""

    labels: np.ndarray
    probabilities: np.ndarray  # (C, z, y, x), channel v = label value v
    entropy: np.ndarray
    mutual_information: np.ndarray
    spet_suv: np.ndarray | None  # None for a variant without sPET


def crop_to_box(image: sitk.Image, box: Mapping[str, list[int]]) -> sitk.Image:
    """``image`` inside the ROI box, placed where it lies in the world."""
    z, y, x = box_slices(box)
    return image[x, y, z]


def in_lps(
    grid: sitk.Image, *arrays: np.ndarray
) -> tuple[list[np.ndarray], tuple[float, float, float]]:
    """``arrays`` (z, y, x) of ``grid`` turned so x runs to the patient's left, y to posterior
    and z to superior (LPS), with the matching (z, y, x) spacing: a feet-first or prone scan is
    then drawn like a head-first supine one."""
    turned = [sitk.DICOMOrient(image_like(a, grid), "LPS") for a in arrays]
    spacing = tuple(reversed(turned[0].GetSpacing())) if turned else ()
    return [sitk.GetArrayFromImage(t) for t in turned], spacing  # type: ignore[return-value]


def marrow_on_scan_edge(labels: np.ndarray, box: Mapping[str, list[int]], slices: int) -> bool:
    """Whether the cropped label map has ABM on the scan's first or last slice."""
    (z0, z1) = box["z"]
    return bool((z0 == 0 and labels[0].any()) or (z1 == slices and labels[-1].any()))


def assess_prediction(
    patient: str,
    full_ct: sitk.Image,
    box: Mapping[str, list[int]],
    maps: PredictionMaps,
    regions: Mapping[str, int],
    settings: QaSettings,
    profile: TrainingProfile | None,
    out: AssessmentPaths,
) -> dict[str, Any]:
    """Statistics per region, the QA verdict and the QA picture of one prediction; returns the
    QA record (qa.json). ``full_ct``: the converted planning CT in HU."""
    from abmseg.evaluate.qa_figure import qa_figure  # matplotlib only when a picture is drawn

    grid = crop_to_box(full_ct, box)
    hu = sitk.GetArrayViewFromImage(grid).astype(np.float32)  # one copy, not two
    spacing_zyx = tuple(reversed(full_ct.GetSpacing()))
    rows = region_statistics(
        patient,
        hu,
        spacing_zyx,
        maps.labels,
        maps.probabilities,
        maps.spet_suv,
        maps.entropy,
        maps.mutual_information,
        regions,
        settings.uncertain_entropy,
    )
    marrow_entropy = marrow_mean_entropy(maps.labels, maps.entropy)
    volumes = region_volumes_ml(maps.labels, full_ct.GetSpacing(), regions)
    qa = {
        "patient_id": patient,
        **assess(
            measure_ct(full_ct),
            volumes,
            marrow_entropy,
            profile,
            settings,
            marrow_at_edge=marrow_on_scan_edge(maps.labels, box, full_ct.GetSize()[2]),
        ),
        "notice": RESEARCH_USE,
    }
    write_stats_tsv(out.stats, rows)
    write_json(
        out.stats_json,
        {
            "patient_id": patient,
            "regions": rows,
            "marrow_mean_entropy": marrow_entropy,
            "uncertain_entropy_nats": settings.uncertain_entropy,
            "qa_verdict": qa["verdict"],
            "notice": RESEARCH_USE,
        },
    )
    write_json(out.qa, qa)
    qa_figure(out.qa_png, hu, spacing_zyx, maps.labels, maps.entropy, regions, rows, qa, patient)
    return qa


def assess_files(
    patient: str,
    maps: Mapping[str, str | Path],
    converted_ct: str | Path,
    box: Mapping[str, list[int]],
    regions: Mapping[str, int],
    settings: QaSettings,
    profile: TrainingProfile | None,
    out: AssessmentPaths,
    with_spet: bool = True,
) -> dict[str, Any]:
    """:func:`assess_prediction` from rule infer's files: ``maps`` names its ``abm`` and
    ``spet`` (cropped grid), ``prob`` and ``uncertainty`` (CT grid); ``with_spet`` False for a
    variant without sPET (its spet.nii.gz is a blank)."""
    full_ct = read_nifti(converted_ct, patient, made_by="convert")
    probabilities, _ = read_channels(maps["prob"], patient, made_by="infer")
    uncertainty, _ = read_channels(maps["uncertainty"], patient, made_by="infer")
    inside = (slice(None), *box_slices(box))
    labels = sitk.GetArrayFromImage(read_nifti(maps["abm"], patient, made_by="infer"))
    spet = None
    if with_spet:
        spet = sitk.GetArrayFromImage(read_nifti(maps["spet"], patient, made_by="infer"))
    prediction = PredictionMaps(
        labels,
        np.ascontiguousarray(probabilities[inside]),
        np.ascontiguousarray(uncertainty[inside][0]),
        np.ascontiguousarray(uncertainty[inside][1]),
        spet,
    )
    return assess_prediction(patient, full_ct, box, prediction, regions, settings, profile, out)
