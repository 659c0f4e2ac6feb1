"""Deterministic DICOM UIDs and file names: the same (seed, patient) always gives the same bytes.

Note: ``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)`` silently ignores the entropy and
returns a random UUID, so UIDs are built here from name-based (SHA-1, version 5) UUIDs instead,
which ISO/IEC 9834-8 allows under the '2.25.' root.
"""

from __future__ import annotations

import hashlib
import uuid

from pydicom.uid import UID

NAMESPACE = "abmseg-synth-v1"
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://abmseg.invalid/synth/v1")


def _key(*parts: object) -> str:
    # repr keeps ('1', '23') and ('12', '3') apart, unlike a plain join.
    return repr((NAMESPACE, *(str(p) for p in parts)))


def synth_uid(seed: int, index: int, *parts: object) -> UID:
    """A '2.25.' UID derived from the seed, the patient index and what it names."""
    return UID(f"2.25.{uuid.uuid5(_UUID_NAMESPACE, _key(seed, index, *parts)).int}")


def file_name(seed: int, index: int, *parts: object) -> str:
    """A random-looking but reproducible file name, so nothing can rely on name order."""
    return hashlib.sha256(_key("file", seed, index, *parts).encode()).hexdigest()[:20] + ".dcm"
