"""The report's results page: one self-contained HTML file a reader opens first.

Snakemake's report shows a TSV or Markdown result only as a download; an HTML result is shown
in place. This page puts the headline tables in front (summary beside the paper's numbers,
then per patient), the QA verdicts, the CT-only predictions and the registration QC of every
patient (mutual information before and after, the transform against the QC limits, as a figure
and a table, then each patient's registration figure as a thumbnail), with a banner when the
networks are the tiny demo preset. Everything is inline (CSS, the figures as data URIs) so the
page works inside the report and on its own: a link into the report would break when the page is
opened by itself, and the report gives its items no stable address. The thumbnails are JPEGs
``THUMBNAIL_PX`` wide (about 80 kB for a patient's figure, whose PNG is about 200 kB) shown
small in a grid; a click enlarges one to the page's width.
"""

from __future__ import annotations

import base64
import html
import io
import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from abmseg.atomic import write_atomic  # noqa: E402

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; max-width: 9em; }
td.text, th.text { text-align: left; }
.banner { background: #fff3cd; border: 1px solid #e0b000; padding: 0.8em 1em; margin: 1em 0; }
.fail { background: #f8d7da; } .warn { background: #fff3cd; } .pass { background: #d4edda; }
.note { color: #555; font-size: 0.9em; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.gallery figure { margin: 0; width: 380px; outline: none; }
.gallery figure:focus { width: 100%; }
.gallery img { width: 100%; display: block; border: 1px solid #ccc; cursor: zoom-in; }
.gallery figure:focus img { cursor: zoom-out; }
.gallery figcaption { padding: 2px 6px; font-size: 0.9em; }
"""
DEMO_BANNER = (
    "These numbers come from the <b>tiny</b> network preset, trained for minutes on a few "
    "synthetic patients: they show that the pipeline runs end to end, not the method's "
    "accuracy. The paper's configuration is <code>model_preset: paper</code> on GPUs."
)
QA_TEXT = ("source", "patient_id", "qa_verdict", "checks", "reasons")
THUMBNAIL_PX = 900  # wide: readable when enlarged to the page's width
THUMBNAIL_QUALITY = 75
# summary.tsv metric -> what a reader calls it
METRIC_NAMES = {
    "psnr_db": "PSNR (dB)",
    "ssim": "SSIM",
    "nmse": "NMSE",
    "dice_mean": "Dice, mean of regions",
    "assd_mm_mean": "ASSD (mm), mean of regions",
}


def _number(value: object, digits: int = 3) -> str:
    if value is None or value == "" or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def metric_name(metric: str) -> str:
    """``dice_lower_pelvis`` -> ``Dice, lower pelvis``: what a reader calls a metric column."""
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    for prefix, name in (("dice_", "Dice"), ("assd_mm_", "ASSD (mm)")):
        if metric.startswith(prefix):
            return f"{name}, {metric.removeprefix(prefix).replace('_', ' ')}"
    return metric.replace("_", " ")


def table(
    frame: pd.DataFrame, text_columns: Sequence[str] = (), row_class: str | None = None
) -> str:
    """An HTML table of ``frame``: numbers right-aligned to 3 decimals, text escaped; the
    column ``row_class`` (e.g. a QA verdict) colours its rows."""
    head = "".join(
        f'<th class="{"text" if c in text_columns else ""}">'
        f"{html.escape(str(c).replace('_', ' '))}</th>"
        for c in frame.columns
    )
    rows = []
    columns = list(frame.columns)
    for values in frame.itertuples(index=False):  # keeps each column's type (ints stay ints)
        row = dict(zip(columns, values, strict=True))
        css = f' class="{html.escape(str(row[row_class]))}"' if row_class else ""
        cells = "".join(
            f'<td class="text">{html.escape(str(row[c]))}</td>'
            if c in text_columns
            else f"<td>{_number(row[c])}</td>"
            for c in columns
        )
        rows.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """summary.tsv as a reader wants it: one row per variant and metric, mean +- sd beside the
    paper's."""

    def pm(mean: object, sd: object) -> str:
        if _number(mean) == "-":
            return "-"
        return _number(mean) if _number(sd) == "-" else f"{_number(mean)} ± {_number(sd)}"

    return pd.DataFrame(
        {
            "variant": summary["variant"],
            "metric": [metric_name(m) for m in summary["metric"]],
            "this run (mean ± sd)": [
                pm(m, s) for m, s in zip(summary["mean"], summary["sd"], strict=True)
            ],
            "n": summary["n"],
            "undefined": summary["n_undefined"],
            "paper": [
                pm(m, s) for m, s in zip(summary["paper_mean"], summary["paper_sd"], strict=True)
            ],
        }
    )


def registration_rows(qc_files: Sequence[str | Path]) -> pd.DataFrame:
    """One row per patient from register's qc.json: MI before/after and the transform against
    the QC limits (1.0 = at the limit)."""
    rows = []
    for path in qc_files:
        qc = json.loads(Path(path).read_text())
        limits, transform = qc["qc_limits"], qc["transform"]
        scale = max(transform["scale_max"] - 1.0, 1.0 - transform["scale_min"])
        rows.append(
            {
                "patient_id": qc["patient_id"],
                "MI before": qc["mutual_information_before"],
                "MI after": qc["mutual_information_after"],
                "rotation (deg)": transform["rotation_deg"],
                "rotation / limit": transform["rotation_deg"] / limits["max_rotation_deg"],
                "shift (mm)": transform["centre_displacement_mm"],
                "shift / limit": transform["centre_displacement_mm"]
                / limits["max_centre_displacement_mm"],
                "scale / limit": scale / max(limits["max_scale"] - 1.0, 1.0 - limits["min_scale"]),
                "QC": "pass" if qc["qc_passed"] else "fail",
            }
        )
    return pd.DataFrame(rows)


def registration_figure(rows: pd.DataFrame) -> str:
    """The registration QC as a PNG data URI: MI before/after, transform size over the limits."""
    count = max(len(rows), 1)
    # at least 10 inches: the two panel titles collide on a narrower figure
    figure, (mi, limits) = plt.subplots(1, 2, figsize=(min(max(10, 4 + 0.5 * count), 16), 3.6))
    positions = range(len(rows))
    mi.bar([p - 0.2 for p in positions], rows["MI before"], 0.4, label="before", color="#bbb")
    mi.bar([p + 0.2 for p in positions], rows["MI after"], 0.4, label="after", color="#2a7")
    mi.set_title("Mutual information CT-PET (higher is better)")
    mi.legend(loc="lower right")
    for offset, column, colour in (
        (-0.27, "rotation / limit", "#47a"),
        (0.0, "shift / limit", "#a74"),
        (0.27, "scale / limit", "#7a4"),
    ):
        limits.bar([p + offset for p in positions], rows[column], 0.27, label=column, color=colour)
    limits.axhline(1.0, color="red", linewidth=1, label="QC limit")
    limits.set_title("Transform size / QC limit (fail above 1)")
    limits.legend(loc="upper right", fontsize=8)
    for axis in (mi, limits):
        axis.set_xticks(list(positions), rows["patient_id"], rotation=60, fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnail(png: str | Path, width_px: int = THUMBNAIL_PX) -> str:
    """A PNG shrunk to ``width_px`` (never enlarged) as a JPEG data URI."""
    image = mpimg.imread(str(png))
    height, width = image.shape[:2]
    scale = min(1.0, width_px / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    figure = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    axis = figure.add_axes((0, 0, 1, 1))
    axis.axis("off")
    axis.imshow(image[..., :3], interpolation="antialiased", aspect="auto")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="jpeg", dpi=100, pil_kwargs={"quality": THUMBNAIL_QUALITY})
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def registration_gallery(rows: pd.DataFrame, figures: Sequence[str | Path]) -> str:
    """Each patient's registration figure (``<patient>.png``) as a captioned thumbnail, in the
    table's order, coloured by its QC verdict."""
    by_patient = {Path(path).stem: path for path in figures}
    items = []
    for patient, verdict in zip(rows["patient_id"], rows["QC"], strict=True):
        if str(patient) not in by_patient:
            continue
        name = html.escape(str(patient))
        items.append(
            f'<figure tabindex="0"><img alt="registration QC of {name}" '
            f'src="{thumbnail(by_patient[str(patient)])}">'
            f'<figcaption class="{html.escape(verdict)}">{name}: registration QC '
            f"{html.escape(verdict)}</figcaption></figure>"
        )
    return f'<div class="gallery">{"".join(items)}</div>'


def _read(path: str | Path | None) -> pd.DataFrame | None:
    if path is None or not Path(path).is_file():
        return None
    return pd.read_csv(path, sep="\t", keep_default_na=True)


def build_page(
    summary_tsv: str | Path,
    per_patient_tsv: str | Path,
    qa_tsv: str | Path | None,
    stats_tsv: str | Path | None,
    registration_qc: Sequence[str | Path],
    *,
    model_preset: str,
    registration_figures: Sequence[str | Path] = (),
) -> str:
    """The page's HTML."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{STYLE}</style>"]
    parts.append("<title>abmseg results</title></head><body><h1>abmseg results</h1>")
    if model_preset == "tiny":
        parts.append(f'<div class="banner">{DEMO_BANNER}</div>')
    parts.append(
        '<p class="note">Research use only: not a medical device. Metrics are computed on the '
        "test patients of the run's split; the paper's values are from Zhuo et al. 2025.</p>"
    )
    parts.append("<h2>Summary: this run beside the paper (Tables 1 and 2)</h2>")
    summary = summary_table(pd.read_csv(summary_tsv, sep="\t"))
    parts.append(table(summary, ("variant", "metric", "this run (mean ± sd)", "paper")))
    parts.append("<h2>Per test patient</h2>")
    per_patient = pd.read_csv(per_patient_tsv, sep="\t")
    per_patient.columns = [
        c if c in ("patient_id", "variant") else metric_name(c) for c in per_patient.columns
    ]
    parts.append(table(per_patient, ("patient_id", "variant")))
    qa, stats = _read(qa_tsv), _read(stats_tsv)
    if qa is not None:
        qa = qa.fillna("")
        scored = qa[qa["source"] != "predict"]
        parts.append("<h2>QA of each prediction</h2>")
        parts.append(table(scored, QA_TEXT, "qa_verdict"))
        ct_only = qa[qa["source"] == "predict"]
        parts.append("<h2>CT-only predictions</h2>")
        if ct_only.empty:
            parts.append("<p>None in this run (no patient without PET and label).</p>")
        else:
            parts.append(
                table(
                    ct_only,
                    ("source", "patient_id", "qa_verdict", "checks", "reasons"),
                    "qa_verdict",
                )
            )
            if stats is not None:
                volumes = stats[stats["source"] == "predict"][
                    ["patient_id", "region", "abm_volume_ml", "abm_share_of_interior", "qa_verdict"]
                ]
                parts.append(table(volumes, ("patient_id", "region", "qa_verdict"), "qa_verdict"))
            parts.append(
                '<p class="note">Masks, probabilities and DICOM exports: results/predict/'
                "&lt;patient&gt;/ and results/dicom/predict/&lt;patient&gt;/; QA pictures in the "
                "report's QA category.</p>"
            )
    if registration_qc:
        rows = registration_rows(registration_qc)
        parts.append("<h2>PET-CT registration QC, every patient with a PET</h2>")
        parts.append(f'<img alt="registration QC" src="{registration_figure(rows)}">')
        parts.append(table(rows, ("patient_id", "QC"), "QC"))
        if registration_figures:
            parts.append("<h3>Each patient: the PET on the CT before and after registration</h3>")
            parts.append(
                '<p class="note">Left in each picture the PET as acquired, right after '
                "registration, on three planes through the hottest PET region, with the QC "
                "figures against their limits. Click a picture to enlarge it, click beside it to "
                "shrink it. Full size: the report's QA category (registration), and "
                "results/qc/registration/&lt;patient&gt;.png.</p>"
            )
            parts.append(registration_gallery(rows, registration_figures))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_results_page(out_html: str | Path, **kwargs: Any) -> None:
    """Write the page atomically (kwargs as ``build_page``'s)."""
    text = build_page(**kwargs)
    write_atomic(out_html, lambda tmp: tmp.write_text(text, encoding="utf-8"))
