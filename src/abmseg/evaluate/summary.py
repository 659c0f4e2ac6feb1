"""Cohort summary: mean +- sd per variant beside the paper's reported numbers (Tables 1-2)."""

from __future__ import annotations

import math

import pandas as pd

from abmseg.regions import REGION_NAMES

# Zhuo et al. 2025, "this method": Table 1 (synthesis) and Table 2 (segmentation), mean and sd.
PAPER = {
    "psnr_db": (26.42, 0.63),
    "ssim": (0.894, 0.011),
    "nmse": (0.0235, 0.0026),
    "dice_lumbosacral_spine": (0.806, None),
    "dice_ilium": (0.771, None),
    "dice_lower_pelvis": (0.754, None),
    "dice_mean": (0.777, 0.023),
    "assd_mm_lumbosacral_spine": (3.02, None),
    "assd_mm_ilium": (3.58, None),
    "assd_mm_lower_pelvis": (3.95, None),
    "assd_mm_mean": (3.52, 0.41),
}
SYNTHESIS = ("psnr_db", "ssim", "nmse")
REGIONS = (*REGION_NAMES, "mean")


def summarise(per_patient: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd, n and the count of undefined values per metric and variant (long format)."""
    rows = []
    metrics = [c for c in per_patient.columns if c not in ("patient_id", "variant")]
    for variant, group in per_patient.groupby("variant", sort=False):
        for metric in metrics:
            values = pd.to_numeric(group[metric], errors="coerce")
            defined = values.dropna()
            paper_mean, paper_sd = PAPER.get(metric, (None, None))
            rows.append(
                {
                    "variant": variant,
                    "metric": metric,
                    "mean": defined.mean() if len(defined) else math.nan,
                    "sd": defined.std(ddof=1) if len(defined) > 1 else math.nan,
                    "n": int(len(defined)),
                    "n_undefined": int(values.isna().sum()),
                    "paper_mean": paper_mean,
                    "paper_sd": paper_sd,
                }
            )
    return pd.DataFrame(rows)


def _number(value: object) -> object:
    """JSON has no NaN: an undefined figure is null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def summary_record(summary: pd.DataFrame, per_patient: pd.DataFrame) -> dict:
    """summary.json: per variant and metric the figures of summary.tsv, and every patient's
    row of per_patient.tsv; the machine-readable twin of summary.md."""
    variants: dict[str, dict] = {}
    for row in summary.to_dict(orient="records"):
        figures = {k: _number(v) for k, v in row.items() if k not in ("variant", "metric")}
        variants.setdefault(row["variant"], {})[row["metric"]] = figures
    patients = [
        {k: _number(v) for k, v in row.items()} for row in per_patient.to_dict(orient="records")
    ]
    return {"variants": variants, "per_patient": patients}


def _cell(mean: float, sd: float, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +- {sd:.{digits}f}"


def markdown(summary: pd.DataFrame) -> str:
    """summary.md: Table 1 (synthesis) and Table 2 (Dice and ASSD per region), paper row last."""
    lookup = {(r.variant, r.metric): r for r in summary.itertuples(index=False)}
    variants = list(dict.fromkeys(summary["variant"]))
    digits = {"psnr_db": 2, "ssim": 3, "nmse": 4}
    lines = ["# Results", "", "## Table 1: synthesis (sPET vs PET, SUV, inside the body)", ""]
    lines += ["| variant | n | PSNR (dB) | SSIM | NMSE |", "|---|---|---|---|---|"]
    for variant in variants:
        cells = [
            _cell(lookup[(variant, m)].mean, lookup[(variant, m)].sd, digits[m]) for m in SYNTHESIS
        ]
        lines.append(
            f"| {variant} | {lookup[(variant, 'psnr_db')].n} | " + " | ".join(cells) + " |"
        )
    lines.append(
        "| paper (this method) | 76 | "
        + " | ".join(_cell(*PAPER[m], digits[m]) for m in SYNTHESIS)
        + " |"
    )
    for kind, title, digit in (("dice", "Dice", 3), ("assd_mm", "ASSD (mm)", 2)):
        lines += ["", f"## Table 2: {title} per region", ""]
        lines += [
            "| variant | lumbosacral spine | ilium | lower pelvis | mean |",
            "|---|---|---|---|---|",
        ]
        for variant in variants:
            cells = []
            for region in REGIONS:
                record = lookup[(variant, f"{kind}_{region}")]
                cell = _cell(record.mean, record.sd, digit)
                if record.n_undefined:
                    cell += f" ({record.n_undefined} undefined)"
                cells.append(cell)
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append(
            "| paper (this method) | "
            + " | ".join(_cell(*PAPER[f"{kind}_{r}"], digit) for r in REGIONS)
            + " |"
        )
    lines += [
        "",
        "Mean +- sd over test patients (sd with n-1). ASSD is undefined for a region that is empty "
        "in exactly one of prediction and truth; such values are counted, not averaged.",
        "",
    ]
    return "\n".join(lines)
