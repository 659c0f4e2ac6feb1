"""The cohort's statistics and QA verdicts in two tables: one row per patient and region
(abm_stats.tsv with a qa_verdict column), and one row per patient (qa.tsv: verdict, the checks
that fired and their messages). A patient appears once per source: each variant that scored it
(test patients) or ``predict`` (CT-only patients)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from abmseg.atomic import write_atomic
from abmseg.io.jsonfile import read_json
from abmseg.qa.stats import COLUMNS


def cohort_tables(
    sources: Sequence[str], stats_files: Sequence[str | Path], qa_files: Sequence[str | Path]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per patient and region, per patient) from each prediction's abm_stats.json and qa.json;
    ``sources[i]`` names where files i came from (a variant, or predict)."""
    region_rows, patient_rows = [], []
    for source, stats_path, qa_path in zip(sources, stats_files, qa_files, strict=True):
        made_by = "predict" if source == "predict" else "infer"
        stats = read_json(stats_path, made_by=made_by, keys=("patient_id", "regions"))
        qa = read_json(qa_path, made_by=made_by, keys=("verdict", "reasons"))
        for row in stats["regions"]:
            region_rows.append({"source": source, **row, "qa_verdict": qa["verdict"]})
        reasons = qa["reasons"]
        patient_rows.append(
            {
                "source": source,
                "patient_id": stats["patient_id"],
                "qa_verdict": qa["verdict"],
                "checks": ",".join(sorted({r["check"] for r in reasons})),
                "marrow_mean_entropy": stats.get("marrow_mean_entropy"),
                "reasons": " | ".join(f"{r['level']}: {r['message']}" for r in reasons),
            }
        )
    columns = ["source", *COLUMNS, "qa_verdict"]
    by_region = pd.DataFrame(region_rows, columns=columns)
    by_patient = pd.DataFrame(
        patient_rows,
        columns=["source", "patient_id", "qa_verdict", "checks", "marrow_mean_entropy", "reasons"],
    )
    return by_region, by_patient


def write_tsv(frame: pd.DataFrame, path: str | Path) -> None:
    write_atomic(path, lambda tmp: frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
