"""ABM for a patient who has only a planning CT: convert, crop, normalise and infer in one go.

Every preprocessing setting (crop margin, bed clearing, CT window, SUV ceiling, body threshold)
and the sampler come from the model bundle, not from a config: a bundle predicts new patients
exactly as its networks were trained. The steps are the stages' own cores (``ct_image``,
``crop_volumes``, ``normalise_ct``, ``predict_patient``), and the Snakemake rule ``predict`` and
``abmseg predict`` both call :func:`predict_ct_only`, so the paths give the same masks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abmseg.atomic import staged_folder, write_json
from abmseg.infer.model_bundle import ModelBundle
from abmseg.infer.patient import PredictionPaths, predict_patient
from abmseg.io.convert import ct_image
from abmseg.io.dicom_series import DicomSeries, read_series
from abmseg.io.volume import read_nifti
from abmseg.preprocess.normalise import NormaliseSettings, normalise_ct
from abmseg.preprocess.roi import Cropped, CropSettings, crop_volumes
from abmseg.progress import ProgressLine
from abmseg.qa.patient import assess_prediction

log = logging.getLogger(__name__)


class SliceProgress(ProgressLine):
    """Body slices done, and the rate: a progress bar for ``predict_volume``'s ``on_batch``."""

    def text(self, step: int, slices: int, loss: float) -> str:
        seconds = time.perf_counter() - self.start
        rate = slices / seconds if seconds > 0 else 0.0
        return f"{self.label} {step}/{self.total} slices {rate:.1f} slices/s {seconds:.0f}s"

    def __call__(self, done: int, total: int) -> None:
        self.total = max(total, 1)
        if done == 0:  # the networks start now: the rate leaves CT preparation out
            self.start = time.perf_counter()
            return
        self.update(done, done, float("nan"))


@dataclass(frozen=True)
class PreparedCT:
    """A CT-only patient's CT as the networks see it, and where it came from."""

    series: DicomSeries  # as read: the DICOM export references it without a second read
    ct: sitk.Image  # the converted CT (HU) on its original grid
    cropped: Cropped  # the crop core's result: box, Otsu threshold, body voxels
    normalised: sitk.Image  # cropped to the body box, bed cleared, windowed to [-1, 1]


def prepare_ct(
    patient: str, ct_dir: str | Path, crop: CropSettings, normalise: NormaliseSettings
) -> PreparedCT:
    """The convert, crop and normalise cores on a CT series: exactly what the convert, crop and
    normalise rules do to a training patient's CT, with the given (the bundle's) settings."""
    begin = time.perf_counter()
    series = read_series(ct_dir, "CT", patient)
    ct = ct_image(series, patient)
    cropped = crop_volumes(ct, crop, patient=patient, ct_path=ct_dir)
    normalised = normalise_ct(cropped.images["ct"], normalise)
    log.info(
        "%s: CT converted, cropped and windowed in %.1f s", patient, time.perf_counter() - begin
    )
    return PreparedCT(series, ct, cropped, normalised)


def prepare_for_bundle(patient: str, ct_dir: str | Path, bundle: ModelBundle) -> PreparedCT:
    config = bundle.config()
    crop, normalise = CropSettings.from_config(config), NormaliseSettings.from_config(config)
    return prepare_ct(patient, ct_dir, crop, normalise)


def predict_ct_only(
    patient: str,
    ct_dir: str | Path,
    bundle: ModelBundle,
    out: PredictionPaths,
    progress: Callable[[int, int], None] | None = None,
    prepared: PreparedCT | None = None,
) -> dict:
    """Predict sPET and ABM for the CT series in ``ct_dir`` with ``bundle``; write ``out``.

    sPET (SUV) and ABM are written on the cropped grid, the ABM also on the original CT grid,
    and ``prediction.json`` records the box and the bundle used (no PHI: the patient is named by
    ``patient`` only). Returns that summary. ``prepared``: :func:`prepare_ct`'s result, when the
    caller keeps it (for the DICOM export).
    """
    prepared = prepared or prepare_for_bundle(patient, ct_dir, bundle)
    prepared_at = time.perf_counter()
    box = prepared.cropped.box
    predictor = bundle.predictor()
    maps = predict_patient(prepared.normalised, prepared.ct, box, predictor, out, progress)
    labels = maps.labels
    log.info("%s: networks ran in %.1f s", patient, time.perf_counter() - prepared_at)
    qa = {"verdict": None}
    if out.assessment is not None:
        qa = assess_prediction(
            patient,
            prepared.ct,
            box,
            maps,
            predictor.regions,
            predictor.qa,
            predictor.profile,
            out.assessment,
        )
    counts = np.bincount(labels.ravel(), minlength=256)
    roi = prepared.cropped.summary(patient, prepared.ct)
    del roi["patient_id"]
    summary = {
        "patient_id": patient,
        "roi": roi,
        "bundle": {
            "variant": bundle.variant,
            "abmseg_version": bundle.manifest["abmseg_version"],
            "manifest_sha256": bundle.manifest["manifest_sha256"],
        },
        "sampler": bundle.sampler,
        "sampler_from_bundle": bundle.sampler_override is None,
        "voxels_per_region": {name: int(counts[value]) for name, value in bundle.regions.items()},
        "qa_verdict": qa["verdict"],
    }
    if out.summary is not None:
        write_json(out.summary, summary)
    return summary


DICOM_NAMES = ("abm_seg.dcm", "abm_prob_seg.dcm", "abm_rtstruct.dcm")


def predict_into_folder(
    patient: str,
    ct_dir: str | Path,
    bundle: ModelBundle,
    out: str | Path,
    *,
    dicom: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """``abmseg predict``: :func:`predict_ct_only` into ``out``, plus the DICOM SEG and RTSTRUCT.

    Everything is written into a hidden sibling folder first and moved into ``out`` only when
    complete, so a failure leaves ``out`` as it was; a DICOM file of an earlier prediction that
    this one does not write (``dicom=False``) is removed, so no file in ``out`` is stale.
    """
    with staged_folder(out, stale=DICOM_NAMES) as staging:
        paths = PredictionPaths.in_folder(staging)
        prepared = prepare_for_bundle(patient, ct_dir, bundle)
        summary = predict_ct_only(patient, ct_dir, bundle, paths, progress, prepared)
        if dicom:
            # highdicom only when asked for
            from abmseg.rt.export import export_label, export_probabilities

            begin = time.perf_counter()
            seg, prob_seg, rtstruct = (staging / name for name in DICOM_NAMES)
            label = read_nifti(paths.abm_ct, patient, made_by="predict")
            verdict, regions = summary["qa_verdict"], bundle.regions
            export_label(patient, label, prepared.series, regions, seg, rtstruct, verdict)
            export_probabilities(
                patient, paths.prob, prepared.series, regions, prob_seg, "predict", verdict
            )
            log.info(
                "%s: DICOM SEG, probability SEG and RTSTRUCT written in %.1f s",
                patient,
                time.perf_counter() - begin,
            )
    return summary
