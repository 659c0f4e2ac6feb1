"""Who is trained on, who is tested and who is only predicted: the cohort plan the workflow
builds its jobs from, computed once from the sheet and the split settings."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from abmseg.cohort.sheet import ct_only_patients, scored_patients
from abmseg.cohort.split import (
    TEST,
    TRAIN,
    TRAINING_SIDE,
    VALIDATION,
    SplitSettings,
    assign_split,
)
from abmseg.errors import SheetError


@dataclass(frozen=True)
class CohortPlan:
    patients: list[str]  # sheet order
    scored: list[str]  # with PET and label: split into training and test
    ct_only: list[str]  # CT alone: only predicted, with a model bundle
    split: dict[str, str]  # scored patient -> 'train' | 'validation' | 'test'

    @property
    def train(self) -> list[str]:
        """The training side: every patient training reads (fitted on, or validated on)."""
        return [p for p in self.scored if self.split[p] in TRAINING_SIDE]

    @property
    def validation(self) -> list[str]:
        """Training-side patients held out of the fitting and scored after every epoch."""
        return [p for p in self.scored if self.split[p] == VALIDATION]

    @property
    def fit(self) -> list[str]:
        """Training-side patients the networks are fitted on."""
        return [p for p in self.scored if self.split[p] == TRAIN]

    @property
    def test(self) -> list[str]:
        return [p for p in self.scored if self.split[p] == TEST]

    def split_problem(self) -> str | None:
        """Why this plan cannot train and test a model, or None. Only asked when a training or
        test target is requested: converting a one-patient sheet needs no split."""
        train, test = self.train, self.test
        if train and test and not self.fit:
            return (
                f"all {len(train)} training-side patients are held out for validation, none is "
                "left to fit the networks on. Fix: lower config split.validation_fraction, add "
                "patients, or set the sheet's 'split' column"
            )
        if train and test:
            return None
        return (
            f"the split gives {len(train)} training and {len(test)} test patients; both sides "
            "need at least one to train and score a model. Fix: add patients or set the sheet's "
            "'split' column (or request only per-patient targets, e.g. results/converted/...)"
        )

    def require_split(self) -> None:
        problem = self.split_problem()
        if problem:
            raise SheetError(problem)


def plan_cohort(sheet: pd.DataFrame, settings: SplitSettings) -> CohortPlan:
    """The plan of a loaded sheet: the sheet's 'split' column overrides the hash per patient."""
    scored = scored_patients(sheet)
    overrides = {p: s for p, s in sheet["split"].items() if s}
    split = assign_split(
        scored, settings.train_fraction, settings.salt, overrides, settings.validation_fraction
    )
    return CohortPlan(list(sheet.index), scored, ct_only_patients(sheet), split)
