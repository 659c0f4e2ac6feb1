"""Collect per-patient metric JSON files into per_patient.tsv, summary.tsv, summary.md and
summary.json (the same figures, machine-readable)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from abmseg.atomic import write_atomic, write_json
from abmseg.evaluate.patient import flatten
from abmseg.evaluate.summary import markdown, summarise, summary_record
from abmseg.io.jsonfile import read_json


def aggregate_files(
    metric_files: Iterable[str | Path],
    out_per_patient: str | Path,
    out_summary: str | Path,
    out_markdown: str | Path,
    out_json: str | Path | None = None,
) -> str:
    """Write the tables (and summary.json when asked); return the Markdown text."""
    rows = []
    for path in metric_files:
        record = read_json(
            path,
            Path(path).stem,
            made_by="metrics",
            keys=("patient_id", "variant", "synthesis", "segmentation"),
        )
        rows.append(flatten(record["patient_id"], record["variant"], record))
    per_patient = pd.DataFrame(rows)
    summary = summarise(per_patient)
    text = markdown(summary)
    write_atomic(out_per_patient, lambda tmp: per_patient.to_csv(tmp, sep="\t", index=False))
    write_atomic(out_summary, lambda tmp: summary.to_csv(tmp, sep="\t", index=False))
    write_atomic(out_markdown, lambda tmp: tmp.write_text(text))
    if out_json is not None:
        write_json(out_json, summary_record(summary, per_patient))
    return text
