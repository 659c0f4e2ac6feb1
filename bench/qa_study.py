"""The QA flags on the validation study's patients: do they stay quiet on clean CTs, and where
would the uncertainty flag's limit lie? Issue 18's "quiet on the study's clean test patients".

For every training and test patient of a finished `make study`, the study's full model predicts
exactly as rules infer and qa do (infer_patient, then assess_files: maps, statistics, QA)
against the training profile of the study's training patients, and the table lists each
patient's verdict, the checks that fired, the mean predictive entropy over the predicted marrow
and the Dice against the label. The entropy limit (qa.max_marrow_entropy) is read off the
TRAINING patients only (--quantile of their values, times --margin); the test patients are then
judged with it.

Usage (in the folder holding results/):
    python bench/qa_study.py --config config/study.yaml [--samples 2] [--tta] [--threads 2]
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.stats import spearmanr
from study_models import merged_config, one_model_parser, split_patients

from abmseg.infer.patient import PredictionPaths, Predictor, infer_patient
from abmseg.metrics.segmentation import dice
from abmseg.preprocess.roi import read_roi_box
from abmseg.qa.checks import QaSettings
from abmseg.qa.patient import MAPS, AssessmentPaths, assess_files
from abmseg.qa.profile import build_profile
from abmseg.regions import DEFAULT_REGIONS
from abmseg.study.sampler import SamplerPoint, _sweep_context


def predict(patient: str, results: Path, predictor: Predictor, folder: Path) -> dict:
    """Rule infer's and then rule qa's code on one patient."""
    paths = PredictionPaths.in_folder(folder / patient, ct_only=False)
    paths.spet.parent.mkdir(parents=True)
    start = time.perf_counter()
    converted, roi = results / "converted" / patient, results / "cropped" / patient / "roi.json"
    normalised = results / "normalized" / patient / "ct.nii.gz"
    infer_patient(patient, normalised, converted / "ct.nii.gz", roi, predictor, paths)
    assessment = AssessmentPaths.in_folder(folder / patient)
    maps = {name: folder / patient / file for name, file in MAPS.items()}
    box = read_roi_box(roi, patient)
    args = (predictor.regions, predictor.qa, predictor.profile, assessment)
    assess_files(patient, maps, converted / "ct.nii.gz", box, *args)
    seconds = time.perf_counter() - start
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(paths.abm)))
    truth = sitk.GetArrayFromImage(
        sitk.ReadImage(str(results / "cropped" / patient / "label.nii.gz"))
    )
    qa = json.loads(assessment.qa.read_text())
    return {
        "patient": patient,
        "verdict": qa["verdict"],
        "checks": sorted({r["check"] for r in qa["reasons"]}),
        "entropy": qa["measurements"]["marrow_mean_entropy"],
        "dice": float(np.mean([dice(labels == v, truth == v) for v in (1, 2, 3)])),
        "seconds": seconds,
        "reasons": [r["message"] for r in qa["reasons"]],
    }


def main() -> None:
    parser = one_model_parser(__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--quantile", type=float, default=1.0, help="of the training entropies")
    parser.add_argument("--margin", type=float, default=1.1, help="times that quantile")
    args = parser.parse_args()
    config = merged_config(args.config)
    results = Path(args.results)
    networks, device, base, _, ceiling = _sweep_context(args.model, config, args.threads)
    settings = SamplerPoint.parse(args.point).settings(base, None)
    settings = dataclasses.replace(settings, samples=args.samples, tta=args.tta)
    train, test = split_patients(results, "train"), split_patients(results, "test")
    profile = build_profile(
        train,
        [results / "converted" / p / "ct.nii.gz" for p in train],
        [results / "cropped" / p / "label.nii.gz" for p in train],
        DEFAULT_REGIONS,
    )
    print(json.dumps(profile.to_dict()["ct"]), json.dumps(profile.region_volume_ml))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for subset, patients in (("train", train), ("test", test)):
            # no entropy limit yet: it is chosen from the training patients below
            unlimited = QaSettings(max_marrow_entropy=float("inf"))
            predictor = Predictor(
                networks, device, settings, ceiling, profile=profile, qa=unlimited
            )
            rows[subset] = [predict(p, results, predictor, Path(tmp) / subset) for p in patients]
    training_entropy = [r["entropy"] for r in rows["train"]]
    limit = float(np.quantile(training_entropy, args.quantile)) * args.margin
    print(f"\n{args.model} at {args.point}, samples {args.samples}, tta {args.tta}")
    print(f"entropy limit from {len(train)} training patients: {limit:.4f} nats")
    print("| subset | patient | verdict (without the entropy check) | checks | marrow entropy | "
          "over the limit | Dice | s |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for subset in ("train", "test"):
        for r in rows[subset]:
            print(
                f"| {subset} | {r['patient']} | {r['verdict']} | {','.join(r['checks']) or '-'} | "
                f"{r['entropy']:.4f} | {'yes' if r['entropy'] > limit else ''} | "
                f"{r['dice']:.3f} | {r['seconds']:.1f} |"
            )
    for subset in ("train", "test"):
        entropies = [r["entropy"] for r in rows[subset]]
        dices = [r["dice"] for r in rows[subset]]
        verdicts = [r["verdict"] for r in rows[subset]]
        over = sum(e > limit for e in entropies)
        print(
            f"{subset}: {len(verdicts)} patients, verdicts "
            f"{ {v: verdicts.count(v) for v in sorted(set(verdicts))} }, over the entropy limit "
            f"{over}, Spearman rho(entropy, Dice) {spearmanr(entropies, dices)[0]:.2f}, "
            f"entropy {min(entropies):.4f}-{max(entropies):.4f}, "
            f"{np.mean([r['seconds'] for r in rows[subset]]):.1f} s per patient"
        )


if __name__ == "__main__":
    main()
