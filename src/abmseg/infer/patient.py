"""One patient through the networks: sPET (SUV) and ABM on the cropped grid, and the ABM pasted
back onto the patient's original planning-CT grid (exact geometry, for overlay).

``predict_patient`` is the one core of rule infer (a test patient, from the pipeline's
normalised CT and a trained model), rule predict and ``abmseg predict`` (a CT-only patient, from
a model bundle, through abmseg.infer.ct_only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from abmseg.infer.predict import (
    InferenceNetworks,
    InferenceSettings,
    paste_into_ct_grid,
    predict_ensemble,
)
from abmseg.io.channels import write_channels
from abmseg.io.volume import image_like, read_nifti, write_nifti
from abmseg.preprocess.convert import ConvertSettings
from abmseg.preprocess.normalise import NormaliseSettings
from abmseg.preprocess.roi import box_slices, read_roi_box
from abmseg.qa.checks import QaSettings
from abmseg.qa.patient import MAPS, AssessmentPaths, PredictionMaps
from abmseg.qa.profile import TrainingProfile
from abmseg.regions import DEFAULT_REGIONS


def spet_to_suv(spet: np.ndarray, suv_ceiling: float) -> np.ndarray:
    """Inverse of the SUV normalisation: [-1, 1] -> [0, ceiling]."""
    return ((spet.astype(np.float32) + 1.0) / 2.0 * suv_ceiling).astype(np.float32)


@dataclass(frozen=True)
class Predictor:
    """Trained networks on their device with the settings they predict with."""

    networks: InferenceNetworks
    device: torch.device
    settings: InferenceSettings
    suv_ceiling: float  # the normalisation's: sPET in [-1, 1] back to SUV
    regions: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_REGIONS))
    qa: QaSettings = QaSettings()
    profile: TrainingProfile | None = None  # the training data's ranges (QA flags)

    @classmethod
    def from_config(
        cls,
        networks: InferenceNetworks,
        device: torch.device,
        config: Mapping[str, Any],
        profile: TrainingProfile | None,
    ) -> Predictor:
        """The settings rule infer, ``abmseg infer`` and a model bundle predict with, read from a
        (stage) config: the sampler and ensemble, the SUV ceiling, the regions and the QA."""
        return cls(
            networks,
            device,
            InferenceSettings.from_config(config),
            NormaliseSettings.from_config(config).suv_ceiling,
            regions=dict(ConvertSettings.from_config(config).regions),
            qa=QaSettings.from_config(config),
            profile=profile,
        )


# the maps rule qa reads, and the mask on the CT grid for the DICOM export
MAP_NAMES = {**MAPS, "abm_ct": "abm_ct.nii.gz"}


@dataclass(frozen=True)
class PredictionPaths:
    """What one prediction writes (a rule's outputs, or ``abmseg predict``'s --out folder);
    ``summary`` (prediction.json) only for CT-only patients."""

    spet: Path
    abm: Path
    abm_ct: Path
    prob: Path
    uncertainty: Path
    # statistics and QA: written with the maps by rule predict and abmseg predict; rule qa
    # writes a test patient's (None here)
    assessment: AssessmentPaths | None = None
    summary: Path | None = None

    @classmethod
    def in_folder(cls, folder: str | Path, ct_only: bool = True) -> PredictionPaths:
        """The files of one prediction in ``folder``: the maps, and for a CT-only patient the
        statistics, QA and prediction.json too."""
        folder = Path(folder)
        paths = {key: folder / name for key, name in MAP_NAMES.items()}
        if not ct_only:
            return cls(**paths)
        return cls(**paths, assessment=AssessmentPaths.in_folder(folder),
                   summary=folder / "prediction.json")  # fmt: skip

    @classmethod
    def of_rule(cls, output: Any) -> PredictionPaths:
        """A rule's named outputs (snakemake.output), which carry these names."""
        paths = {key: Path(getattr(output, key)) for key in MAP_NAMES}
        summary = getattr(output, "summary", None)
        assessment = AssessmentPaths.of_rule(output) if hasattr(output, "qa") else None
        return cls(**paths, assessment=assessment, summary=summary and Path(summary))


def paste_channels(
    channels: np.ndarray, box: Mapping[str, list[int]], ct_shape_zyx: tuple[int, ...], fill: float
) -> np.ndarray:
    """(C, z, y, x) maps of the cropped grid on the full CT grid: channel 0 is ``fill`` outside
    the box (certain background for probabilities), the others 0."""
    full = np.zeros((channels.shape[0], *ct_shape_zyx), dtype=np.float32)
    full[0] = fill
    full[(slice(None), *box_slices(box, channels.shape[1:]))] = channels
    return full


def predict_patient(
    normalised: sitk.Image,
    full_ct: sitk.Image,
    box: dict[str, list[int]],
    predictor: Predictor,
    out: PredictionPaths,
    progress: Callable[[int, int], None] | None = None,
) -> PredictionMaps:
    """Run the networks over the normalised, cropped CT (``inference.samples`` seeds, mirrored
    too with ``inference.tta``) and write sPET (SUV) and ABM on the cropped grid, and the ABM,
    the mean class probabilities and the uncertainty maps on the full CT grid. Returns the maps
    on the cropped grid, for the statistics and QA (abmseg.qa.patient)."""
    settings = predictor.settings
    spet, summary = predict_ensemble(
        sitk.GetArrayFromImage(normalised),
        predictor.networks,
        settings,
        predictor.device,
        samples=settings.samples,
        mirror=settings.tta,
        on_batch=progress,
    )
    labels = summary.labels
    # the slices' resize back to the crop can overshoot 1 by a float32 rounding step
    np.clip(summary.mean, 0.0, 1.0, out=summary.mean)
    full_shape = tuple(reversed(full_ct.GetSize()))
    spet_suv = spet_to_suv(spet, predictor.suv_ceiling)
    write_nifti(image_like(spet_suv, normalised), out.spet)
    write_nifti(image_like(labels, normalised), out.abm)
    write_nifti(image_like(paste_into_ct_grid(labels, box, full_shape), full_ct), out.abm_ct)
    write_channels(paste_channels(summary.mean, box, full_shape, 1.0), full_ct, out.prob)
    uncertainty = np.stack([summary.predictive_entropy, summary.mutual_information])
    write_channels(paste_channels(uncertainty, box, full_shape, 0.0), full_ct, out.uncertainty)
    return PredictionMaps(
        labels,
        summary.mean,
        summary.predictive_entropy,
        summary.mutual_information,
        spet_suv if predictor.networks.g_ct2pet is not None else None,
    )


def infer_patient(
    patient: str,
    normalized_ct: str | Path,
    converted_ct: str | Path,
    roi_json: str | Path,
    predictor: Predictor,
    out: PredictionPaths,
) -> dict:
    """Rule infer: a test patient from the pipeline's files; returns the label counts (its
    statistics and QA are rule qa's, from the written maps)."""
    box = read_roi_box(roi_json, patient)
    ct_image = read_nifti(normalized_ct, patient, made_by="normalise")
    full_ct = read_nifti(converted_ct, patient, made_by="convert")
    maps = predict_patient(ct_image, full_ct, box, predictor, out)
    counts = np.bincount(maps.labels.ravel(), minlength=4)
    return {
        "patient_id": patient,
        "voxels_per_label": {str(k): int(v) for k, v in enumerate(counts)},
    }
