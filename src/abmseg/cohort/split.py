"""A 7:3 train/test split that never moves a patient when others are added.

Each patient's side depends only on a hash of (salt, patient ID): adding, removing or reordering
other patients cannot change it, so adding a test patient leaves the training set, and with it
the trained models, untouched. The ratio is 7:3 in expectation, not exactly; an optional
``split`` column in the sheet overrides the hash per patient (to reproduce a published split).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abmseg.atomic import write_atomic
from abmseg.settings import from_section

TRAIN, TEST = "train", "test"


@dataclass(frozen=True)
class SplitSettings:
    """config['split']: expected training fraction and the salt of the patient hash."""

    train_fraction: float = 0.7
    salt: str = "abmseg-split-v1"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SplitSettings:
        return from_section(cls, config.get("split"), "split")


def hash_unit(patient_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by the salt and the patient ID alone."""
    digest = hashlib.sha256(f"{salt}\0{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(
    patient_ids: Iterable[str],
    train_fraction: float,
    salt: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Map every patient to 'train' or 'test'; an override ('train'/'test') wins over the hash."""
    overrides = overrides or {}
    return {
        pid: overrides.get(pid) or (TRAIN if hash_unit(pid, salt) < train_fraction else TEST)
        for pid in patient_ids
    }


def write_split(assignment: Mapping[str, str], path: str | Path) -> None:
    """results/split.tsv: patient_id and subset, in sheet order."""
    lines = ["patient_id\tsubset"] + [f"{pid}\t{subset}" for pid, subset in assignment.items()]
    text = "\n".join(lines) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))
