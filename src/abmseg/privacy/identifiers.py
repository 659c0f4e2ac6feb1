"""The identifiers of the patients in DICOM series folders: what must never appear in an output.

Read from the headers only (no pixel data). Each identifier carries the boundary rule used to
find it, so '0.19670312' in a loss table is not taken for the birth date 19670312.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

# Shorter values (a PatientID "12", a given name "Li") would match everywhere by chance.
MIN_LENGTH = 4
NAME_TAGS = ("PatientName", "PatientBirthName", "PatientMotherBirthName", "OtherPatientNames")
ID_TAGS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID")
# SOPInstanceUID: each file's own; libraries quote it in their log lines (highdicom did).
UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID")


@dataclass(frozen=True)
class Identifier:
    """One value to search for. ``boundary``: 'alpha' (names), 'alnum' (IDs) or 'uid'/'digits'."""

    kind: str
    value: str
    boundary: str

    def masked(self) -> str:
        """Enough to recognise the value in a report without repeating it."""
        return self.value[0] + "*" * (len(self.value) - 1)


def _values(ds: pydicom.Dataset, keyword: str) -> list[str]:
    element = ds.get(keyword)
    if element is None or element == "":
        return []
    if isinstance(element, pydicom.multival.MultiValue):
        return [str(v) for v in element]
    return [str(element)]


def _name_parts(name: str) -> set[str]:
    """The whole name in its usual spellings and each component (family, given, middle)."""
    components = [c.strip() for c in name.split("^") if c.strip()]
    forms = {name.strip(), " ".join(components), " ".join(reversed(components[:2]))}
    forms.update(part for c in components for part in c.split())
    return {f for f in forms if len(f) >= MIN_LENGTH}


def _date_forms(value: str) -> set[str]:
    try:
        date = dt.datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return set()
    formats = ("%Y%m%d", "%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d")
    return {date.strftime(f) for f in formats}


def identifiers_of(ds: pydicom.Dataset) -> set[Identifier]:
    """Every identifier of one DICOM header."""
    found: set[Identifier] = set()
    for keyword in NAME_TAGS:
        for name in _values(ds, keyword):
            found.update(Identifier("patient name", part, "alpha") for part in _name_parts(name))
    for keyword in ID_TAGS:
        for value in _values(ds, keyword):
            if len(value.strip()) >= MIN_LENGTH:
                found.add(Identifier(keyword, value.strip(), "alnum"))
    for value in _values(ds, "PatientBirthDate"):
        found.update(Identifier("birth date", form, "digits") for form in _date_forms(value))
    for keyword in UID_TAGS:
        for value in _values(ds, keyword):
            found.add(Identifier(keyword, value.strip(), "uid"))
    return found


def identifiers_in(folders: Iterable[str | Path]) -> set[Identifier]:
    """Identifiers of every DICOM file under ``folders`` (other files are skipped)."""
    found: set[Identifier] = set()
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if not path.is_file():
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
                continue
            found |= identifiers_of(ds)
    return found
