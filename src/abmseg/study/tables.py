"""The study's tab-separated tables, built from the per-patient metric records.

The column names and their order are a contract: the report and other tools read these files
by header, so they are fixed here as constants rather than derived from the records.
"""

from __future__ import annotations

import csv
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from abmseg.atomic import write_atomic
from abmseg.study.stats import paired_comparison

#: metrics-record region name -> short name used in column names
REGIONS = {"lumbosacral_spine": "spine", "ilium": "ilium", "lower_pelvis": "lower_pelvis"}

PER_PATIENT_COLUMNS = [
    "method",
    "patient_id",
    "dice_spine",
    "dice_ilium",
    "dice_lower_pelvis",
    "dice_mean",
    "assd_mean",
]
ABLATION_COLUMNS = [
    "method",
    "n",
    "dice_spine",
    "dice_ilium",
    "dice_lower_pelvis",
    "dice_mean",
    "dice_mean_sd",
    "assd_mean",
    "psnr",
    "ssim",
    "nmse",
]
PAIRED_COLUMNS = ["a", "b", "n", "delta_dice_mean", "ci_low", "ci_high", "p_wilcoxon"]
SAMPLER_COLUMNS = ["sampler", "steps", "start_step", "dice_mean", "psnr", "seconds_per_patient"]

#: synthesis-record key -> ablation column
_SYNTHESIS = {"psnr_db": "psnr", "ssim": "ssim", "nmse": "nmse"}


def _to_float(value: Any) -> float:
    """A metric as float; a missing value (None, empty field) becomes NaN."""
    if value is None or value == "":
        return float("nan")
    return float(value)


def _finite(values: Iterable[Any]) -> np.ndarray:
    """The finite values: an empty mask's infinite ASSD (or NaN) must not poison a mean."""
    array = np.array([_to_float(v) for v in values], dtype=float)
    return array[np.isfinite(array)]


def _finite_mean(values: Iterable[Any]) -> float:
    """Mean over the finite values; NaN when there are none."""
    finite = _finite(values)
    return float(finite.mean()) if finite.size else float("nan")


def _finite_sd(values: Iterable[Any]) -> float:
    """Sample SD (ddof=1) over the finite values; NaN with fewer than two."""
    finite = _finite(values)
    return float(finite.std(ddof=1)) if finite.size >= 2 else float("nan")


def _metric(record: Mapping[str, Any], region: str, key: str) -> float:
    segmentation = record.get("segmentation") or {}
    return _to_float((segmentation.get(region) or {}).get(key))


def per_patient_rows(records: Mapping[str, Sequence[dict]]) -> list[dict]:
    """One row per (method, patient): the per-region Dice, the mean Dice and the mean ASSD.

    ``records`` maps method -> the metrics rule's per-patient records. Rows follow the methods'
    order as given, then patient_id. Values are copied as recorded (an ASSD may be ``inf`` for
    an empty mask); only the summaries average over finite values.
    """
    rows: list[dict] = []
    for method, method_records in records.items():
        method_rows = []
        for record in method_records:
            row: dict[str, Any] = {"method": method, "patient_id": record["patient_id"]}
            for region, short in REGIONS.items():
                row[f"dice_{short}"] = _metric(record, region, "dice")
            row["dice_mean"] = _metric(record, "mean", "dice")
            row["assd_mean"] = _metric(record, "mean", "assd_mm")
            method_rows.append(row)
        rows.extend(sorted(method_rows, key=lambda r: str(r["patient_id"])))
    return rows


def ablation_rows(records: Mapping[str, Sequence[dict]]) -> list[dict]:
    """One row per method: means over its patients, for the ablation (Table 5) table.

    Every mean is over the finite per-patient values, so an empty mask's infinite or NaN ASSD
    is left out rather than turning the whole method's mean into inf/NaN. ``dice_mean_sd`` is
    the sample SD (ddof=1) of the per-patient mean Dice. ``psnr``/``ssim``/``nmse`` are None for
    a method without a synthetic PET (every record's ``synthesis`` null or absent).
    ``assd_undefined`` of ``assd_pairs`` (patient, region) pairs had no ASSD (an empty
    prediction or truth); these two keys are not columns of ablation.tsv.
    """
    by_method: dict[str, list[dict]] = {}
    for row in per_patient_rows(records):
        by_method.setdefault(row["method"], []).append(row)
    rows = []
    for method, method_records in records.items():
        patients = by_method.get(method, [])
        row: dict[str, Any] = {"method": method, "n": len(patients)}
        for short in REGIONS.values():
            row[f"dice_{short}"] = _finite_mean(p[f"dice_{short}"] for p in patients)
        row["dice_mean"] = _finite_mean(p["dice_mean"] for p in patients)
        row["dice_mean_sd"] = _finite_sd(p["dice_mean"] for p in patients)
        row["assd_mean"] = _finite_mean(p["assd_mean"] for p in patients)
        synthesis = [r["synthesis"] for r in method_records if r.get("synthesis")]
        for key, column in _SYNTHESIS.items():
            row[column] = _finite_mean(s.get(key) for s in synthesis) if synthesis else None
        # a region missing from the prediction has no ASSD and drops out of the means above,
        # which flatters a method that misses regions: count those (patient, region) pairs
        row["assd_undefined"] = sum(
            not np.isfinite(_metric(record, region, "assd_mm"))
            for record in method_records
            for region in REGIONS
        )
        row["assd_pairs"] = len(method_records) * len(REGIONS)
        rows.append(row)
    return rows


def paired_rows(
    per_patient: Sequence[dict],
    pairs: Sequence[tuple[str, str]],
    resamples: int = 10_000,
    seed: int = 0,
) -> list[dict]:
    """One paired comparison of the mean Dice per ``(a, b)`` pair.

    Only patients both methods were evaluated on take part, matched on patient_id, so the
    bootstrap and the signed-rank test see true pairs. ``per_patient`` may be the rows of
    :func:`per_patient_rows` or the same table read back with :func:`read_tsv`.
    """
    dice: dict[str, dict[str, float]] = {}
    for row in per_patient:
        dice.setdefault(str(row["method"]), {})[str(row["patient_id"])] = _to_float(
            row["dice_mean"]
        )
    rows = []
    for a, b in pairs:
        a_dice, b_dice = dice.get(a, {}), dice.get(b, {})
        common = sorted(set(a_dice) & set(b_dice))
        rows.append(
            paired_comparison(
                a,
                b,
                [a_dice[p] for p in common],
                [b_dice[p] for p in common],
                resamples=resamples,
                seed=seed,
            )
        )
    return rows


def study_pairs(
    methods: Sequence[str],
    variants: Sequence[str],
    reference: str = "full",
    baseline: str = "ct_only",
) -> list[tuple[str, str]]:
    """The study's comparisons: ``(reference, m)`` for every other method, then
    ``(v, baseline)`` for every variant v other than the baseline and the reference.

    ``methods`` and ``variants`` both name methods with results (variants being the Table 5
    ones); a pair whose method has no results is skipped, and ``(reference, baseline)`` appears
    once although both rules produce it.
    """
    available = list(dict.fromkeys([*methods, *variants]))
    candidates = [(reference, m) for m in available if m != reference]
    candidates += [(v, baseline) for v in variants if v not in (baseline, reference)]
    pairs: list[tuple[str, str]] = []
    for a, b in candidates:
        if a in available and b in available and a != b and (a, b) not in pairs:
            pairs.append((a, b))
    return pairs


def sampler_rows(points: Sequence[dict]) -> list[dict]:
    """One row per sampler setting: mean Dice, PSNR and seconds per patient over its patients.

    Means are over finite values, as in :func:`ablation_rows`; ``steps`` may be None (a sampler
    without a step count) and is then written as an empty field.
    """
    rows = []
    for point in points:
        patients = point.get("patients") or []
        rows.append(
            {
                "sampler": point["sampler"],
                "steps": point.get("steps"),
                "start_step": point.get("start_step"),
                "dice_mean": _finite_mean(p.get("dice_mean") for p in patients),
                "psnr": _finite_mean(p.get("psnr") for p in patients),
                "seconds_per_patient": _finite_mean(p.get("seconds") for p in patients),
                "start": point.get("start"),  # T, best or a timestep (not a TSV column)
            }
        )
    return rows


def _field(value: Any) -> str:
    """A TSV field: None empty, ints as ints, floats to 6 significant digits (nan, inf kept)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        return "nan" if math.isnan(x) else f"{x:.6g}"
    return str(value)


def write_tsv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` as a tab-separated table with exactly ``columns``, atomically.

    Every row must have every column (a missing one is a bug, not an empty field); extra keys
    are ignored. The file appears complete or not at all.
    """
    lines = [list(columns)]
    for row in rows:
        missing = [c for c in columns if c not in row]
        if missing:
            raise KeyError(f"row {row!r} lacks the columns {missing}")
        lines.append([_field(row[c]) for c in columns])

    def writer(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            csv.writer(handle, delimiter="\t", lineterminator="\n").writerows(lines)

    write_atomic(path, writer)


def read_tsv(path: str | Path) -> list[dict[str, str]]:
    """Read a table written by :func:`write_tsv`: one dict of strings per row."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
