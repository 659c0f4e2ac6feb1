"""Two leakage checks the study runs on itself.

1. From provenance: every job and raw file behind each trained model (the records the rules
   write) is listed; a test patient's job (a ``patient`` wildcard) or raw file (its CT or PET
   series folder, its label) among them is a leak.
2. A shuffled control: each test patient's prediction is scored against ANOTHER test patient's
   label. A model that reads the patient's own anatomy and CT scores much better on its own
   patient than on a stranger; if it scores as well on a stranger, its Dice came from where ABM
   usually is, and is at the level of a trivial all-marrow guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from abmseg.metrics.segmentation import dice


def leaks_in_lineage(
    lineage: Mapping[str, Any], test_patients: Iterable[str], test_raw: Iterable[str | Path]
) -> list[str]:
    """What of the test patients a lineage (``Lineage.to_dict()``) touches, one line each."""
    tests = set(test_patients)
    raw_roots = [Path(p).resolve() for p in test_raw]
    found = []
    for job in lineage.get("jobs", []):
        patient = job.get("wildcards", {}).get("patient")
        if patient in tests:
            found.append(f"job {job['rule']} of test patient {patient}")
    for entry in lineage.get("raw", []):
        path = Path(entry["path"]).resolve()
        for root in raw_roots:
            if path == root or root in path.parents:
                found.append(f"raw file {path} of the test patients' inputs")
                break
    return found


def lineage_summary(lineage: Mapping[str, Any]) -> dict[str, Any]:
    """Counts for the record: jobs per rule and the patients whose jobs were involved."""
    rules: dict[str, int] = {}
    patients = set()
    for job in lineage.get("jobs", []):
        rules[job["rule"]] = rules.get(job["rule"], 0) + 1
        if "patient" in job.get("wildcards", {}):
            patients.add(job["wildcards"]["patient"])
    return {"jobs_per_rule": rules, "patients": sorted(patients), "raw_files": len(lineage["raw"])}


def centre_to_shape(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` cropped or zero-padded about its centre to ``shape`` (the grids of two patients'
    crops differ in size; both are centred on the body)."""
    out = np.zeros(tuple(shape), dtype=array.dtype)
    src, dst = [], []
    for have, want in zip(array.shape, shape, strict=True):
        if have >= want:
            start = (have - want) // 2
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            start = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(start, start + have))
    out[tuple(dst)] = array[tuple(src)]
    return out


def mean_region_dice(pred: np.ndarray, truth: np.ndarray, regions: Mapping[str, int]) -> float:
    """Mean over regions of the Dice of one region value each."""
    return float(np.mean([dice(pred == value, truth == value) for value in regions.values()]))


def shuffled_control(
    predictions: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    regions: Mapping[str, int],
) -> list[dict[str, Any]]:
    """Patient i's prediction against patient i+1's label (sorted IDs, cyclic), both centred on
    a common grid; and, for comparison, against its own label on the same grid."""
    ids = sorted(predictions)
    if len(ids) < 2:
        return []
    rows = []
    for i, patient in enumerate(ids):
        other = ids[(i + 1) % len(ids)]
        pred, own, stranger = predictions[patient], labels[patient], labels[other]
        shape = np.maximum.reduce([np.array(a.shape) for a in (pred, own, stranger)])
        on_grid = [centre_to_shape(a, shape) for a in (pred, own, stranger)]
        rows.append(
            {
                "patient_id": patient,
                "label_of": other,
                "dice_own": mean_region_dice(on_grid[0], on_grid[1], regions),
                "dice_shuffled": mean_region_dice(on_grid[0], on_grid[2], regions),
            }
        )
    return rows
