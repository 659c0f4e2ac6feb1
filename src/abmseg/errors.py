"""One error type for bad input, so every message names the patient, the file and the fix."""

from __future__ import annotations

from pathlib import Path


class PatientDataError(Exception):
    """Bad or unusable input for one patient.

    Snakemake prints the message of the failed job; this keeps it readable and actionable:
    which patient, which file, what is wrong, what to do.
    """

    def __init__(
        self,
        patient: str | None,
        path: str | Path | None,
        problem: str,
        fix: str,
    ) -> None:
        self.patient = patient
        self.path = str(path) if path is not None else None
        self.problem = problem
        self.fix = fix
        who = f"patient {patient}" if patient else "input"
        where = f" ({self.path})" if self.path else ""
        super().__init__(f"{who}{where}: {problem}. Fix: {fix}")


class SheetError(ValueError):
    """The cohort sheet cannot be used; the message lists every problem at once."""
