"""Score extra trained models on the study's test patients, beside the study's own methods.

For the measurements of docs/validation.md that need a model the study's DAG does not train or
score: the stage-1 models of ct_only and cyclegan (the paper's schedule, risk 2), or a model
trained with one setting changed. Each model is run with one sampler point over the test patients
of results/split.tsv and scored like rule metrics; a paired bootstrap against ``--reference``'s
per-patient Dice (results/study/per_patient.tsv) closes the table.

Usage (in the folder holding results/, after `make study`):
    python bench/study_models.py --config config/study.yaml \\
        --model ct_only_stage1=results/models/ct_only/stage1/model.pt \\
        --model cyclegan_stage1=results/models/cyclegan/stage1/model.pt \\
        [--point ddim-10-250] [--reference full] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from abmseg.settings import read_config
from abmseg.study.sampler import run_sampler_point, scored_patients
from abmseg.study.stats import paired_bootstrap, wilcoxon_p

REPO = Path(__file__).resolve().parents[1]


def merged_config(path: Path) -> dict:
    """config/config.yaml with ``path`` merged over it (one level deep, as the study's are)."""
    config = read_config(REPO / "config" / "config.yaml")
    for key, value in read_config(path).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def split_patients(results: Path, subset: str) -> list[str]:
    """The patients of one subset ("train" or "test") of results/split.tsv, sorted."""
    rows = csv.DictReader((results / "split.tsv").open(), delimiter="\t")
    return sorted(row["patient_id"] for row in rows if row["subset"] == subset)


def scored_volumes(results: Path, patients: list[str]) -> list:
    """ScoredPatient per patient, from the files common.smk's scored_volumes names."""
    volumes = [
        str(results / folder / p / f"{image}.nii.gz")
        for p in patients
        for folder, image in (
            ("normalized", "ct"), ("cropped", "pet_suv"), ("cropped", "label"), ("cropped", "ct")
        )
    ]  # fmt: skip
    return scored_patients(patients, volumes)


def score_models(
    config: dict,
    models: dict[str, Path],
    results: Path,
    point: str = "ddim-10-250",
    reference: str = "full",
    threads: int = 2,
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Score each model on the test patients with ``point``: markdown rows, paired against
    ``reference``'s per-patient Dice from results/study/per_patient.tsv, and each model's
    per-patient mean Dice."""
    patients = split_patients(results, "test")
    scored = scored_volumes(results, patients)
    ref = {
        row["patient_id"]: float(row["dice_mean"])
        for row in csv.DictReader((results / "study/per_patient.tsv").open(), delimiter="\t")
        if row["method"] == reference
    }
    per_model: dict[str, dict[str, float]] = {}
    lines = [
        f"| model | point | n | Dice mean | PSNR dB | {reference} - model | 95 % CI | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, path in models.items():
        out = results / "study" / "extra" / f"{name}.{point}.json"
        result = run_sampler_point(point, path, scored, config, threads, out)
        dice = {r["patient_id"]: r["dice_mean"] for r in result["patients"]}
        per_model[name] = dice
        values = [r["psnr"] for r in result["patients"] if r["psnr"] is not None]
        psnr = f"{np.mean(values):.2f}" if values else "-"  # a CT-only model has no sPET
        common = [p for p in patients if p in ref]
        a, b = [ref[p] for p in common], [dice[p] for p in common]
        delta, low, high = paired_bootstrap(a, b, seed=2026)
        lines.append(
            f"| {name} | {point} | {len(dice)} | {np.mean(list(dice.values())):.3f} | "
            f"{psnr} | {delta:+.3f} | {low:+.3f} to {high:+.3f} | {wilcoxon_p(a, b):.3g} |"
        )
        print(lines[-1], flush=True)
    return lines, per_model


def one_model_parser(description: str) -> argparse.ArgumentParser:
    """The options of a bench that runs one study model at one sampler point."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=Path("results/models/full/stage2/model.pt"))
    parser.add_argument("--point", default="ddim-10-250")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="name=path/model.pt")
    parser.add_argument("--point", default="ddim-10-250")
    parser.add_argument("--reference", default="full")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    models = dict(spec.split("=", 1) for spec in args.model)
    lines, _ = score_models(
        merged_config(args.config),
        {name: Path(path) for name, path in models.items()},
        args.results,
        args.point,
        args.reference,
        args.threads,
    )
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
