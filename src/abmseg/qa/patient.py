"""One prediction's statistics, QA verdict and QA picture, written beside its masks.

Rule infer, rule predict and ``abmseg predict`` all call :func:`assess_prediction` after the
networks ran, so a test patient and a CT-only patient get the same files (abm_stats.tsv,
abm_stats.json, qa.json, qa.png).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from abmseg.atomic import write_json
from abmseg.io.volume import image_like
from abmseg.qa.checks import QaSettings, assess
from abmseg.qa.measure import measure_ct
from abmseg.qa.profile import TrainingProfile, region_volumes_ml
from abmseg.qa.stats import marrow_mean_entropy, region_statistics, write_stats_tsv

RESEARCH_USE = "Research use only: not a medical device, not for clinical decisions."


@dataclass(frozen=True)
class AssessmentPaths:
    stats: Path
    stats_json: Path
    qa: Path
    qa_png: Path


@dataclass(frozen=True)
class PredictionMaps:
    """What the networks gave for one patient, on the cropped grid (z, y, x)."""

    labels: np.ndarray
    probabilities: np.ndarray  # (C, z, y, x), channel v = label value v
    entropy: np.ndarray
    mutual_information: np.ndarray
    spet_suv: np.ndarray | None  # None for a variant without sPET
    passes: int


def crop_to_box(image: sitk.Image, box: Mapping[str, list[int]]) -> sitk.Image:
    """``image`` inside the ROI box, placed where it lies in the world."""
    (x0, x1), (y0, y1), (z0, z1) = box["x"], box["y"], box["z"]
    return image[x0:x1, y0:y1, z0:z1]


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
    hu = sitk.GetArrayFromImage(grid).astype(np.float32)
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
            "passes": maps.passes,
            "qa_verdict": qa["verdict"],
            "notice": RESEARCH_USE,
        },
    )
    write_json(out.qa, qa)
    qa_figure(out.qa_png, hu, spacing_zyx, maps.labels, maps.entropy, regions, rows, qa, patient)
    return qa
