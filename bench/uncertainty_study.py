"""Does the ensemble's uncertainty point at the mask's errors? Measured on the study's patients.

For K sampler seeds, with and without left-right mirroring, the study's full model predicts each
test patient of a finished `make study` (issue 18's measurements, before any of it is wired into
the workflow):
- Dice of the ensemble's mask (argmax of the mean probabilities) against K = 1 without mirroring;
- voxel AUROC of the predictive entropy (and of the mutual information) for the misclassified
  voxels, over the body;
- the same AUROC inside the voxels where marrow is predicted or true (the body's easy background
  inflates the first);
- Spearman's rho between a patient's Dice and its mean entropy over the predicted marrow (or the
  body): what a QA flag could use, since it needs no truth;
- expected calibration error of the mean probabilities over the body, before and after
  temperature scaling fitted on the training patients (never on the test patients);
- seconds per patient.

Usage (in the folder holding results/):
    python bench/uncertainty_study.py --config config/study.yaml [--samples 1 4] [--threads 2]
        [--point ddim-10-250] [--fit-patients 6]
"""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk
from scipy.stats import spearmanr
from study_models import merged_config, one_model_parser, scored_volumes, split_patients

from abmseg.infer.predict import predict_ensemble
from abmseg.io.volume import read_nifti
from abmseg.metrics.calibration import (
    error_detection_auroc,
    expected_calibration_error,
    fit_temperature,
    scaled_probabilities,
)
from abmseg.metrics.segmentation import dice
from abmseg.preprocess.roi import body_mask
from abmseg.study.sampler import SamplerPoint, _sweep_context

VOXELS_FOR_TEMPERATURE = 200_000


def array(path: str, patient: str, made_by: str) -> np.ndarray:
    return sitk.GetArrayFromImage(read_nifti(path, patient, made_by=made_by))


def run_patient(patient, networks, settings, device, samples: int, mirror: bool) -> dict:
    ct = array(patient.normalized_ct, patient.patient_id, "normalise")
    truth = array(patient.label, patient.patient_id, "crop")
    body, _ = body_mask(array(patient.ct, patient.patient_id, "crop"))
    start = time.perf_counter()
    _, summary = predict_ensemble(ct, networks, settings, device, samples=samples, mirror=mirror)
    seconds = time.perf_counter() - start
    labels = summary.labels
    regions = [value for value in np.unique(truth) if value > 0]
    near = ((labels > 0) | (truth > 0))[body]  # where marrow is predicted or true
    return {
        "patient": patient.patient_id,
        "dice": float(np.mean([dice(labels == v, truth == v) for v in regions])),
        "entropy": summary.predictive_entropy[body],
        "information": summary.mutual_information[body],
        "error": (labels != truth)[body],
        "near": near,
        # what a QA flag can use (no truth): the mean entropy over the predicted marrow
        "predicted_entropy": float(summary.predictive_entropy[labels > 0].mean()),
        "body_entropy": float(summary.predictive_entropy[body].mean()),
        "mean": summary.mean[:, body],  # (C, voxels)
        "truth": truth[body],
        "seconds": seconds,
    }


def sample_voxels(rows: list[dict], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(log mean probabilities (N, C), true labels (N,)) of a random subset of body voxels."""
    logs = np.concatenate([np.log(np.clip(r["mean"].T, 1e-7, 1.0)) for r in rows])
    labels = np.concatenate([r["truth"] for r in rows]).astype(int)
    keep = rng.choice(len(labels), size=min(VOXELS_FOR_TEMPERATURE, len(labels)), replace=False)
    return logs[keep], labels[keep]


def calibration_error(rows: list[dict], temperature: float) -> float:
    logs = np.concatenate([np.log(np.clip(r["mean"].T, 1e-7, 1.0)) for r in rows])
    labels = np.concatenate([r["truth"] for r in rows])
    probabilities = scaled_probabilities(logs, temperature) if temperature != 1.0 else np.exp(logs)
    return expected_calibration_error(
        probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    )


def main() -> None:
    parser = one_model_parser(__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--fit-patients", type=int, default=6, help="training patients the temperature is fitted on"
    )
    args = parser.parse_args()
    config = merged_config(args.config)
    networks, device, base, _, _ = _sweep_context(args.model, config, args.threads)
    settings = SamplerPoint.parse(args.point).settings(base, None)
    test = scored_volumes(args.results, split_patients(args.results, "test"))
    train_ids = split_patients(args.results, "train")[: args.fit_patients]
    train = scored_volumes(args.results, train_ids)
    rng = np.random.default_rng(2026)
    print(f"{args.model} at {args.point}: {len(test)} test, {len(train)} training patients")
    print(
        "| K | mirror | Dice | entropy AUROC, body | in predicted or true marrow | MI AUROC, "
        "body | Spearman rho (entropy, Dice): predicted marrow / body | ECE, body | T "
        "(training) | ECE at T | s per patient |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for samples in args.samples:
        for mirror in (False, True):
            rows = [run_patient(p, networks, settings, device, samples, mirror) for p in test]
            fitting = [run_patient(p, networks, settings, device, samples, mirror) for p in train]
            temperature = fit_temperature(*sample_voxels(fitting, rng))
            error = np.concatenate([r["error"] for r in rows])
            entropy = np.concatenate([r["entropy"] for r in rows])
            information = np.concatenate([r["information"] for r in rows])
            information_auroc = (  # one pass has no disagreement to measure
                f"{error_detection_auroc(information, error):.3f}" if samples > 1 or mirror else "-"
            )
            dices = [r["dice"] for r in rows]
            rho = spearmanr([r["predicted_entropy"] for r in rows], dices)[0]
            rho_body = spearmanr([r["body_entropy"] for r in rows], dices)[0]
            near = np.concatenate([r["near"] for r in rows])
            near_auroc = error_detection_auroc(entropy[near], error[near])
            print(
                f"| {samples} | {'yes' if mirror else 'no'} | "
                f"{np.mean([r['dice'] for r in rows]):.4f} | "
                f"{error_detection_auroc(entropy, error):.3f} | {near_auroc:.3f} | "
                f"{information_auroc} | "
                f"{rho:.2f} / {rho_body:.2f} | {calibration_error(rows, 1.0):.4f} | "
                f"{temperature:.2f} | "
                f"{calibration_error(rows, temperature):.4f} | "
                f"{np.mean([r['seconds'] for r in rows]):.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
