"""Made-up but distinctive identities for synthetic patients (name, MRN, accession number).

Distinctive on purpose: a privacy test can search every output for them without false hits.
The DICOM PatientID is an MRN unrelated to the cohort sheet's pseudonymous patient ID, as in a
real export, so a leak of the MRN cannot hide behind the pseudonym.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

GIVEN_NAMES = (
    "Ottoline",
    "Peregrine",
    "Wilhelmina",
    "Thaddeus",
    "Eudora",
    "Lysander",
    "Clementine",
    "Barnabas",
)
FAMILY_NAMES = (
    "Quillfeather",
    "Marchbanks",
    "Ravensworth",
    "Fennimore",
    "Zouchbury",
    "Pettigrew",
    "Oxenholme",
    "Wrexhamley",
)


@dataclass(frozen=True)
class SyntheticIdentity:
    family_name: str
    given_name: str
    mrn: str
    accession_number: str

    @property
    def dicom_name(self) -> str:
        """DICOM PN form: Family^Given."""
        return f"{self.family_name}^{self.given_name}"


def synthetic_identity(seed: int, index: int) -> SyntheticIdentity:
    """The identity of synthetic patient ``index`` of cohort ``seed`` (reproducible)."""
    digest = hashlib.sha256(f"abmseg-identity:{seed}:{index}".encode()).hexdigest()
    number = int(digest, 16)
    return SyntheticIdentity(
        family_name=FAMILY_NAMES[(index - 1) % len(FAMILY_NAMES)],
        given_name=GIVEN_NAMES[number % len(GIVEN_NAMES)],
        mrn=f"MRN{number % 10**9:09d}",
        accession_number=f"ACX{(number // 10**9) % 10**8:08d}",
    )
