"""The cohort sheet: one row per patient, paths relative to the sheet, validated before any work."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from abmseg.errors import SheetError  # here for callers of load_sheet

REQUIRED_COLUMNS = ("patient_id", "ct", "pet", "label")
OPTIONAL_COLUMNS = ("split",)
PATH_COLUMNS = ("ct", "pet", "label")
PATIENT_ID = re.compile(r"[A-Za-z0-9_-]+")
SUBSETS = ("train", "validation", "test")


def check_patient_id(patient_id: str) -> str | None:
    """Why ``patient_id`` is not a safe path component, or None when it is."""
    if not patient_id:
        return "is empty"
    if not PATIENT_ID.fullmatch(patient_id):
        return "may only contain letters, digits, '-' and '_' (it becomes a folder name)"
    return None


def _read_rows(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """Parse the TSV, skipping blank lines and whole-line '#' comments (a '#' inside a path stays),
    and keep each data row's line number in the file for error messages."""
    kept, numbers = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            kept.append(line)
            numbers.append(number)
    if not kept:
        raise SheetError(f"patient sheet {path} is empty: it needs a header line and patient rows")
    header = [c.strip() for c in kept[0].split("\t")]
    rows = [line.split("\t") for line in kept[1:]]
    for number, cells in zip(numbers[1:], rows, strict=True):
        if len(cells) > len(header):
            raise SheetError(
                f"patient sheet {path}, line {number}: {len(cells)} cells but {len(header)} "
                "columns (tab-separated)"
            )
        cells.extend([""] * (len(header) - len(cells)))
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    return frame, numbers[1:]


def load_sheet(path: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Read and validate the sheet; return it indexed by patient_id with absolute paths.

    ``pet`` and ``label`` are both given (a training/test patient) or both empty (a CT-only
    patient: predicted with a model bundle, see :func:`ct_only_patients`); empty stays "".

    Every problem is reported in one error (row number, patient, column, fix), so a user fixes the
    sheet once instead of once per problem.
    """
    path = Path(path)
    if not path.is_file():
        raise SheetError(f"patient sheet {path} does not exist: set config key 'patients'")
    sheet, line_numbers = _read_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise SheetError(
            f"patient sheet {path} lacks column(s) {missing}; it needs the tab-separated columns "
            f"{list(REQUIRED_COLUMNS)} (optional: {list(OPTIONAL_COLUMNS)})"
        )
    unknown = [c for c in sheet.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise SheetError(f"patient sheet {path} has unknown column(s) {unknown}: remove or rename")
    sheet = sheet.apply(lambda col: col.str.strip())
    problems: list[str] = []
    if sheet.empty:
        raise SheetError(f"patient sheet {path} lists no patients: add one row per patient")
    for row, record in zip(line_numbers, sheet.itertuples(index=False), strict=True):
        pid = record.patient_id
        why = check_patient_id(pid)
        if why:
            problems.append(f"line {row}: patient_id {pid!r} {why}")
        ct_only = not record.pet and not record.label
        if bool(record.pet) != bool(record.label):
            given, empty = ("pet", "label") if record.pet else ("label", "pet")
            problems.append(
                f"line {row}, patient {pid}: column '{empty}' is empty but '{given}' is not: give "
                "both (a training/test patient) or leave both empty (a CT-only patient, predicted "
                "with the model bundle)"
            )
        for column in PATH_COLUMNS:
            value = getattr(record, column)
            if not value:
                if column == "ct":
                    problems.append(f"line {row}, patient {pid}: column 'ct' is empty")
                continue
            resolved = (path.parent / value).resolve()
            if check_files and not resolved.exists():
                problems.append(
                    f"line {row}, patient {pid}: {column} path {resolved} does not exist "
                    "(paths are relative to the sheet's folder)"
                )
        if "split" in sheet.columns and record.split and record.split not in SUBSETS:
            problems.append(
                f"line {row}, patient {pid}: split {record.split!r} must be train, validation, "
                "test or empty"
            )
        elif "split" in sheet.columns and record.split and ct_only:
            problems.append(
                f"line {row}, patient {pid}: split {record.split!r} needs PET and a label; a "
                "CT-only patient is only predicted: leave its split empty"
            )
    duplicated = sorted(set(sheet.patient_id[sheet.patient_id.duplicated()]))
    if duplicated:
        problems.append(f"patient_id(s) {duplicated} appear more than once: IDs must be unique")
    if problems:
        raise SheetError(
            f"patient sheet {path} has {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        )
    for column in PATH_COLUMNS:
        sheet[column] = [str((path.parent / v).resolve()) if v else "" for v in sheet[column]]
    if "split" not in sheet.columns:
        sheet["split"] = ""
    return sheet.set_index("patient_id", drop=False)


def ct_only_patients(sheet: pd.DataFrame) -> list[str]:
    """Patients with a CT and neither PET nor label: predicted only, never trained or scored."""
    return [pid for pid, pet in sheet["pet"].items() if not pet]


def scored_patients(sheet: pd.DataFrame) -> list[str]:
    """Patients with PET and label: the ones the train/test split divides."""
    return [pid for pid, pet in sheet["pet"].items() if pet]
