"""Time each preprocessing step on one paper-sized synthetic patient, beside dcm2niix alone.

Usage: python bench/preprocess_patient.py [--preset paper] [--threads 2] [--out bench/_work]
Prints a Markdown table (seconds per step) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from abmseg.preprocess.convert import ConvertedPaths, convert_patient
from abmseg.preprocess.normalise import NormaliseSettings, normalise_patient
from abmseg.preprocess.register import RegistrationSettings, register_pet_to_ct
from abmseg.preprocess.roi import CropSettings, crop_patient
from abmseg.synth import generate_cohort
from abmseg.synth.truth import registration_residual_mm


def timed(label: str, results: dict, func, *args, **kwargs):
    start = time.perf_counter()
    value = func(*args, **kwargs)
    results[label] = time.perf_counter() - start
    return value


def dcm2niix_seconds(series_dir: Path, out_dir: Path) -> float:
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(
        ["dcm2niix", "-z", "y", "-b", "n", "-o", str(out_dir), "-f", "%m", str(series_dir)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        timed(
            "synth (not part of preprocessing)",
            times,
            generate_cohort,
            work / "raw",
            1,
            args.seed,
            args.preset,
        )
        raw = work / "raw" / "SYN001"
        conv = work / "converted"
        timed(
            "convert",
            times,
            convert_patient,
            "SYN001",
            raw / "CT",
            raw / "PET",
            raw / "label.nii.gz",
            ConvertedPaths(
                conv / "ct.nii.gz",
                conv / "pet_suv.nii.gz",
                conv / "label.nii.gz",
                conv / "meta.json",
            ),
        )
        reg = work / "registered"
        qc = timed(
            "register",
            times,
            register_pet_to_ct,
            conv / "ct.nii.gz",
            conv / "pet_suv.nii.gz",
            reg / "pet_suv.nii.gz",
            reg / "pet_to_ct.mat",
            reg / "qc.json",
            RegistrationSettings(threads=args.threads),
            "SYN001",
        )
        crop = work / "cropped"
        timed(
            "crop",
            times,
            crop_patient,
            conv / "ct.nii.gz",
            reg / "pet_suv.nii.gz",
            conv / "label.nii.gz",
            crop / "ct.nii.gz",
            crop / "pet_suv.nii.gz",
            crop / "label.nii.gz",
            crop / "roi.json",
            CropSettings(),
            "SYN001",
        )
        norm = work / "normalized"
        timed(
            "normalise",
            times,
            normalise_patient,
            crop / "ct.nii.gz",
            crop / "pet_suv.nii.gz",
            crop / "label.nii.gz",
            norm / "ct.nii.gz",
            norm / "pet.nii.gz",
            norm / "label.nii.gz",
            NormaliseSettings(),
            "SYN001",
        )
        if shutil.which("dcm2niix"):
            times["dcm2niix alone, CT series"] = dcm2niix_seconds(raw / "CT", work / "d2n_ct")
            times["dcm2niix alone, PET series"] = dcm2niix_seconds(raw / "PET", work / "d2n_pet")
        truth = json.loads((raw / "truth.json").read_text())
        score = registration_residual_mm(
            reg / "pet_to_ct.mat", truth["motion"], conv / "label.nii.gz"
        )
    total = sum(times[k] for k in ("convert", "register", "crop", "normalise"))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores")
    print(
        f"preset {args.preset}: CT {truth['ct_grid']['size_xyz']}, "
        f"PET {truth['pet_grid']['size_xyz']}"
        f"; ANTs threads {args.threads}"
    )
    print(
        f"registration residual max {score['residual_max_mm']:.2f} mm (mean "
        f"{score['residual_mean_mm']:.2f}) for a true motion of up to "
        f"{score['motion_max_mm']:.2f} mm"
        f"; PET voxel {truth['pet_grid']['spacing_xyz_mm']}"
    )
    print("| step | seconds |\n|---|---|")
    for label, seconds in times.items():
        print(f"| {label} | {seconds:.2f} |")
    print(f"| **preprocessing total (convert+register+crop+normalise)** | **{total:.2f}** |")
    print(
        "registration MI "
        f"{qc['mutual_information_before']:.4f} -> {qc['mutual_information_after']:.4f}"
    )


if __name__ == "__main__":
    main()
