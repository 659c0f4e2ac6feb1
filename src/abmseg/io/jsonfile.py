"""Read a JSON intermediate of the pipeline with an error that names the file and its maker.

A truncated or hand-edited JSON file (roi.json, qc.json, a patient's metrics) would otherwise end
the job with a JSONDecodeError or KeyError stack trace from deep inside the reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from abmseg.errors import PatientDataError


def read_json(
    path: str | Path,
    patient: str | None = None,
    made_by: str | None = None,
    keys: Iterable[str] = (),
) -> dict[str, Any]:
    """The JSON object in ``path``; it must hold every key of ``keys``.

    Raises PatientDataError naming the patient, the file, the problem and the fix: rerun the rule
    ``made_by`` that writes the file (or, without ``made_by``, replace the file).
    """
    path = Path(path)
    fix = (
        f"delete it and rerun the rule '{made_by}' that makes it"
        if made_by
        else "replace it with a valid JSON file"
    )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PatientDataError(patient, path, "the file does not exist", fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PatientDataError(patient, path, f"cannot read this file ({exc})", fix) from None
    if not text.strip():
        raise PatientDataError(patient, path, "the JSON file is empty", fix)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PatientDataError(
            patient, path, f"the JSON file is truncated or corrupt ({exc})", fix
        ) from None
    if not isinstance(data, dict):
        raise PatientDataError(
            patient, path, f"holds a JSON {type(data).__name__}, not an object", fix
        )
    missing = [key for key in keys if key not in data]
    if missing:
        raise PatientDataError(
            patient, path, f"the JSON object lacks the key(s) {', '.join(missing)}", fix
        )
    return data
