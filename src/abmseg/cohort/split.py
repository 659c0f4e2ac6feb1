"""A 7:3 train/test split, and a validation share of the training side, that never moves a
patient when others are added.

Each patient's side depends only on a hash of (salt, patient ID): adding, removing or reordering
other patients cannot change it, so adding a test patient leaves the training set, and with it
the trained models, untouched. The ratio is 7:3 in expectation, not exactly; an optional
``split`` column in the sheet overrides the hash per patient (to reproduce a published split).

Validation: a second, independent hash of the same ID (salt + ``VALIDATION_SALT_SUFFIX``) holds
``validation_fraction`` of the training side out of the fitting. Those patients are still
training-side patients (never test), and training scores them after every epoch, which is what
the validation curves show. The sheet may name a patient ``validation`` directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abmseg.atomic import write_atomic
from abmseg.settings import from_section

TRAIN, VALIDATION, TEST = "train", "validation", "test"
TRAINING_SIDE = (TRAIN, VALIDATION)
VALIDATION_SALT_SUFFIX = "\0validation"


@dataclass(frozen=True)
class SplitSettings:
    """config['split']: expected training fraction, the share of the training side held out for
    validation, and the salt of the patient hashes."""

    train_fraction: float = 0.7
    salt: str = "abmseg-split-v1"
    validation_fraction: float = 0.15

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
    validation_fraction: float = 0.0,
) -> dict[str, str]:
    """Map every patient to 'train', 'validation' or 'test'.

    An override wins over the hashes: 'test' and 'validation' as written; 'train' puts the patient
    on the training side, where the validation hash still decides (a published train/test split
    says nothing about validation).
    """
    overrides = overrides or {}
    assignment = {}
    for pid in patient_ids:
        side = overrides.get(pid) or (TRAIN if hash_unit(pid, salt) < train_fraction else TEST)
        if side == TRAIN and hash_unit(pid, salt + VALIDATION_SALT_SUFFIX) < validation_fraction:
            side = VALIDATION
        assignment[pid] = side
    return assignment


def write_split(assignment: Mapping[str, str], path: str | Path) -> None:
    """results/split.tsv: patient_id and subset (train, validation, test), in sheet order."""
    lines = ["patient_id\tsubset"] + [f"{pid}\t{subset}" for pid, subset in assignment.items()]
    text = "\n".join(lines) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))
