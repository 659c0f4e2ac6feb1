"""Error types for what the user can fix: every message names the problem and the fix.

Any UserError ends a rule job with one line in its log (abmseg.step.rule_step) and an
``abmseg`` command with one line on stderr, never a traceback: a traceback is for bugs.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input or settings the user can correct; the message says how."""


class ConfigError(UserError, ValueError):
    """A setting that cannot be used (unknown key, value out of range, mismatched run)."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}. Fix: {fix}")


class PatientDataError(UserError):
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


class SheetError(UserError, ValueError):
    """The cohort sheet cannot be used; the message lists every problem at once."""


class DivergedError(UserError, FloatingPointError):
    """Training produced non-finite losses; the message says which settings to change."""
