"""`abmseg synth-report`: does a synthetic cohort look like the data the method is meant for?

Realism figures (ABM share of the marrow, marrow SUV level and shape, how much the CT alone says)
and trivial baselines (all marrow, a cohort-tuned HU threshold, a logistic model on HU and
position) are checked against the phantom's design targets (:data:`GATES`). A phantom that a
threshold already solves, or whose PET-derived label no CT could approach, would make every
number the pipeline reports on it meaningless.

The core works on in-memory arrays (:func:`measure_patient`, :func:`cohort_report`); the file
layer (:func:`synth_report`) reads the images with the pipeline's own readers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage, stats

from abmseg import __version__
from abmseg.atomic import write_atomic, write_json
from abmseg.errors import PatientDataError, SheetError
from abmseg.synth.baselines import (
    REGIONS,
    fit_logistic,
    logistic_features,
    position_features,
    quantile_candidates,
    region_dice,
    smoothed_inside,
    subsample,
    threshold_dice,
    tune_threshold,
)

REGION_NAMES = {1: "spine", 2: "ilium", 3: "lower_pelvis"}
METHODS = ("all_marrow", "hu_threshold", "logistic", "pet_threshold", "ceiling")
TRIVIAL_METHODS = ("all_marrow", "hu_threshold", "logistic")
SMOOTH_SIGMA_MM = 3.0
CEILING_CUT = 0.5
# Voxels per training patient for the logistic fit: 9 parameters need far fewer than a
# full-size patient's marrow, and this bounds the fit's memory.
LOGISTIC_VOXELS_PER_PATIENT = 50_000
TRUTH_FILES = ("marrow.nii.gz", "ceiling_prob.nii.gz", "truth.json")
TABLE_NAME = "synth_report.tsv"
SUMMARY_NAME = "synth_summary.tsv"
SUMMARY_JSON_NAME = "synth_summary.json"
SUMMARY_COLUMNS = ("name", "value", "gate_low", "gate_high", "passed")
PATIENT_COLUMNS = (
    "patient_id",
    "abm_share",
    "marrow_mean_suv",
    "marrow_mean_hu",
    "suv_bimodality",
    "hu_auc",
    "hu_auc_all",
    "ct_visible_r2",
) + tuple(
    f"dice_{method}_{part}"
    for method in METHODS
    for part in (*(REGION_NAMES[r] for r in REGIONS), "mean")
)


@dataclass(frozen=True)
class Gate:
    """A design target of the phantom: ``low <= value <= high`` (``value < high`` when
    ``high_exclusive``); None leaves that side open."""

    name: str
    low: float | None
    high: float | None
    high_exclusive: bool = False
    why: str = ""

    def passes(self, value: float) -> bool:
        """Whether ``value`` meets the target (a NaN never does)."""
        if value is None or math.isnan(value):
            return False
        if self.low is not None and value < self.low:
            return False
        if self.high is not None:
            return value < self.high if self.high_exclusive else value <= self.high
        return True

    def rule(self) -> str:
        """The target as text, e.g. '[0.35, 0.5]', '< 0.555', '>= 0.85'."""
        if self.low is not None and self.high is not None:
            return f"[{self.low:g}, {self.high:g}]"
        if self.high is not None:
            return f"{'<' if self.high_exclusive else '<='} {self.high:g}"
        return f">= {self.low:g}"


GATES: tuple[Gate, ...] = (
    Gate("abm_share_mean", 0.35, 0.50, why="ABM is a minority of the marrow, as in adults"),
    Gate("marrow_mean_suv_median", 1.0, 2.0, why="clinical marrow SUV level"),
    Gate(
        "suv_bimodality_max",
        None,
        0.555,
        high_exclusive=True,
        why="marrow SUV not bimodal (5/9 is a uniform's coefficient)",
    ),
    Gate(
        "hu_auc_mean",
        0.65,
        0.80,
        why="CT carries some, not all, of the ABM signal (interior marrow, see interior_marrow)",
    ),
    Gate("hu_suv_r", 0.4, 0.75, why="patient-level marrow HU and SUV correlate moderately"),
    Gate("dice_best_trivial", None, 0.70, why="no trivial CT baseline solves the task"),
    Gate("dice_pet_threshold", 0.85, None, why="the label is reproducible from the PET"),
    Gate("dice_ceiling", 0.75, 0.85, why="the CT-only ceiling is good but not perfect"),
    Gate("ceiling_margin", 0.08, None, why="room between trivial baselines and the ceiling"),
)


# --- statistics -------------------------------------------------------------------------------


def bimodality_coefficient(values: np.ndarray) -> float:
    """Sarle's sample bimodality coefficient (g^2 + 1) / (k + 3 (n-1)^2 / ((n-2)(n-3))).

    g and k are the bias-corrected sample skewness and excess kurtosis; above 5/9 (a uniform
    distribution's value) suggests two modes. NaN for fewer than 4 values or constant values.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = len(x)
    if n < 4 or np.ptp(x) == 0:
        return math.nan
    g = stats.skew(x, bias=False)
    k = stats.kurtosis(x, fisher=True, bias=False)
    return float((g**2 + 1.0) / (k + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def voxel_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``positive`` vs the rest: Mann-Whitney U / (n1 n0), with ties
    counted half (mid-ranks). NaN when either class is empty."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n1 = int(np.count_nonzero(positive))
    n0 = len(scores) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    u = float(ranks[positive].sum()) - n1 * (n1 + 1) / 2.0
    return u / (n1 * n0)


def pearson_r(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation; NaN for fewer than 2 pairs or a constant side (no warning)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return math.nan if denominator == 0 else float(dx @ dy) / denominator


def register_pet(pet: sitk.Image, ct: sitk.Image, motion: dict) -> sitk.Image:
    """The PET resampled onto the CT grid with the generator's known motion (linear, 0 outside).

    truth.json's transform T maps PET-world points to CT-world points; Resample needs the map
    from output (CT) points to input (PET) points, which is T's inverse.
    """
    from abmseg.synth.truth import true_pet_to_ct

    to_pet = true_pet_to_ct(motion).GetInverse()
    return sitk.Resample(pet, ct, to_pet, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


# --- one patient --------------------------------------------------------------------------------


@dataclass
class PatientVolumes:
    """One patient's volumes on the CT grid, numpy (z, y, x)."""

    patient_id: str
    hu: np.ndarray  # CT in HU
    suv: np.ndarray  # PET SUVbw registered onto the CT grid
    label: np.ndarray  # ABM label: 0 or region 1..3
    marrow: np.ndarray  # true marrow space: 0 or region 1..3
    ceiling: np.ndarray  # P(ABM | CT), 0 outside marrow
    spacing_xyz: tuple[float, float, float]  # CT voxel size (mm)
    log_suv: dict | None = None  # truth.json marrow.log_suv: the generator's variance split


@dataclass
class MarrowVoxels:
    """What the cohort-wide baselines need of one patient, over its marrow voxels only."""

    patient_id: str
    region: np.ndarray  # uint8, the marrow's region
    label: np.ndarray  # uint8, the ABM label's value
    truth_counts: np.ndarray  # whole-volume voxels of label 1, 2, 3
    hu_smooth: np.ndarray  # float32
    position: np.ndarray  # float32 (n, 4), see baselines.position_features

    def features(self) -> np.ndarray:
        """The logistic model's feature matrix."""
        return logistic_features(self.hu_smooth, self.position, self.region)


@dataclass
class PatientResult:
    """Per-patient figures (a row of synth_report.tsv, cohort baselines still NaN) and the
    marrow voxels the cohort-wide baselines are fitted on."""

    row: dict[str, float | str]
    voxels: MarrowVoxels
    log_suv: dict | None = None


def _dice_columns(row: dict, method: str, dice: np.ndarray) -> None:
    for r, value in zip(REGIONS, dice, strict=True):
        row[f"dice_{method}_{REGION_NAMES[r]}"] = float(value)
    row[f"dice_{method}_mean"] = float(np.mean(dice))


def interior_marrow(inside: np.ndarray) -> np.ndarray:
    """Marrow voxels whose in-plane 3 x 3 neighbourhood is all marrow.

    Voxels at the inner surface of the cortex share their volume with cortical bone (several
    hundred HU at the tiny preset's 3.9 mm pixels) and their PET with the blur across the cortex,
    so their HU measures geometry, not composition. The HU AUC gate is taken on the interior;
    the all-marrow AUC is reported beside it.
    """
    return inside & ndimage.binary_erosion(inside, structure=np.ones((1, 3, 3), dtype=bool))


def _within_r2(log_suv: dict | None) -> float:
    """Share of the patient's true marrow log-SUV variance that the CT-visible terms explain."""
    if not log_suv:
        return math.nan
    return 1.0 - log_suv["var_hidden_field"] / log_suv["var_total_within"]


def pooled_r2(stats: Sequence[dict]) -> float:
    """Cohort-wide share of true marrow log-SUV variance explained by what the CT shows.

    Pools the patients' voxels: total variance = within-patient variance plus the spread of the
    patients' means; the CT-invisible part = the PET-only field within patients plus the spread
    of the patients' log uptake factors.
    """
    if not stats:
        return math.nan
    n = np.array([s["n"] for s in stats], dtype=float)
    mean = np.array([s["mean_log_suv"] for s in stats])
    factor = np.array([s["log_uptake_factor"] for s in stats])
    within = np.array([s["var_total_within"] for s in stats])
    hidden = np.array([s["var_hidden_field"] for s in stats])
    w = n / n.sum()
    total = float(w @ (within + (mean - w @ mean) ** 2))
    invisible = float(w @ (hidden + (factor - w @ factor) ** 2))
    return 1.0 - invisible / total


def measure_patient(volumes: PatientVolumes) -> PatientResult:
    """Realism figures and the per-patient baselines (all marrow, PET threshold, ceiling)."""
    v = volumes
    shapes = {a.shape for a in (v.hu, v.suv, v.label, v.marrow, v.ceiling)}
    if len(shapes) != 1:
        raise ValueError(f"{v.patient_id}: volumes of different shapes {sorted(shapes)}")
    inside = v.marrow > 0
    n_marrow = int(np.count_nonzero(inside))
    if n_marrow == 0:
        raise ValueError(f"{v.patient_id}: the marrow mask is empty")
    interior = interior_marrow(inside)
    region = v.marrow[inside].astype(np.uint8)
    label = v.label[inside].astype(np.uint8)
    truth_counts = np.array([int(np.count_nonzero(v.label == r)) for r in REGIONS])
    hu = v.hu[inside].astype(np.float64)
    suv = v.suv[inside].astype(np.float64)
    mean_suv = float(suv.mean())
    row: dict[str, float | str] = {
        "patient_id": v.patient_id,
        "abm_share": float(np.count_nonzero(v.label > 0)) / n_marrow,
        "marrow_mean_suv": mean_suv,
        "marrow_mean_hu": float(hu.mean()),
        "suv_bimodality": bimodality_coefficient(suv),
        "hu_auc": voxel_auc(v.hu[interior], v.label[interior] > 0),
        "hu_auc_all": voxel_auc(hu, label > 0),
        "ct_visible_r2": _within_r2(v.log_suv),
    }
    predictions = {
        "all_marrow": np.ones(n_marrow, dtype=bool),
        "hu_threshold": None,
        "logistic": None,
        "pet_threshold": suv >= mean_suv,
        "ceiling": v.ceiling[inside] >= CEILING_CUT,
    }
    for method, pred in predictions.items():
        if pred is None:
            _dice_columns(row, method, np.full(len(REGIONS), np.nan))
        else:
            _dice_columns(row, method, region_dice(pred, region, label, truth_counts))
    sigma_vox = [SMOOTH_SIGMA_MM / v.spacing_xyz[i] for i in (2, 1, 0)]
    voxels = MarrowVoxels(
        patient_id=v.patient_id,
        region=region,
        label=label,
        truth_counts=truth_counts,
        hu_smooth=smoothed_inside(v.hu, inside, sigma_vox),
        position=position_features(inside),
    )
    return PatientResult(row=row, voxels=voxels, log_suv=v.log_suv)


# --- the cohort --------------------------------------------------------------------------------


@dataclass
class CohortReport:
    """The per-patient table and the summary figures (rows of synth_summary.tsv)."""

    table: pd.DataFrame
    figures: list[dict]

    @property
    def failed_gates(self) -> list[str]:
        return [f["name"] for f in self.figures if f["passed"] is False]


def _threshold_curves(voxels: Sequence[MarrowVoxels], scores, thresholds) -> list[np.ndarray]:
    return [
        threshold_dice(s, mv.region, mv.label, mv.truth_counts, thresholds)
        for mv, s in zip(voxels, scores, strict=True)
    ]


def _logistic(voxels: Sequence[MarrowVoxels]) -> tuple[list[np.ndarray | None], float]:
    """Fit on patients 1, 3, 5, ... (sheet order), tune the probability cut on them, and predict
    patients 2, 4, 6, ...; returns per-patient predictions (None when not scored) and the cut."""
    train = list(voxels[0::2])
    scored = list(voxels[1::2])
    if not scored:
        return [None] * len(voxels), math.nan
    xs, ys = [], []
    for k, mv in enumerate(train):
        keep = subsample(len(mv.region), LOGISTIC_VOXELS_PER_PATIENT, seed=k)
        xs.append(mv.features()[keep])
        ys.append(mv.label[keep] > 0)
    model = fit_logistic(np.concatenate(xs), np.concatenate(ys))
    train_prob = [model.probability(mv.features()) for mv in train]
    # Fitted probabilities crowd near 0 and 1, so their quantiles alone leave the middle bare.
    fixed = np.linspace(0.05, 0.95, 19)
    candidates = np.union1d(quantile_candidates(np.concatenate(train_prob)), fixed)
    cut, _ = tune_threshold(_threshold_curves(train, train_prob, candidates), candidates)
    predictions: list[np.ndarray | None] = [None] * len(voxels)
    for k in range(1, len(voxels), 2):
        predictions[k] = model.probability(voxels[k].features()) >= cut
    return predictions, cut


def _figure(name: str, value: float) -> dict:
    gate = next((g for g in GATES if g.name == name), None)
    return {
        "name": name,
        "value": value,
        "gate_low": gate.low if gate else None,
        "gate_high": gate.high if gate else None,
        "passed": gate.passes(value) if gate else None,
    }


def _nanmean(values) -> float:
    array = np.asarray(values, dtype=np.float64)
    return float(np.mean(array[~np.isnan(array)])) if np.any(~np.isnan(array)) else math.nan


def _nanmax(values) -> float:
    array = np.asarray(values, dtype=np.float64)
    return float(np.max(array[~np.isnan(array)])) if np.any(~np.isnan(array)) else math.nan


def cohort_report(results: Sequence[PatientResult]) -> CohortReport:
    """Fit the cohort-wide baselines, fill their Dice columns and compute the summary.

    The HU threshold is tuned on the whole cohort (an optimistic baseline on purpose: if even
    that is weak, the CT threshold family is weak); the logistic model is fitted and its cut tuned
    on the odd sheet positions and scored on the even ones.
    """
    if not results:
        raise ValueError("no patients to report on")
    voxels = [r.voxels for r in results]
    rows = [dict(r.row) for r in results]
    log_suv = [r.log_suv for r in results if r.log_suv]

    pooled = np.concatenate([mv.hu_smooth for mv in voxels])
    candidates = quantile_candidates(pooled)
    hu_curves = _threshold_curves(voxels, [mv.hu_smooth for mv in voxels], candidates)
    hu_cut, _ = tune_threshold(hu_curves, candidates)
    for row, mv in zip(rows, voxels, strict=True):
        pred = mv.hu_smooth >= hu_cut
        _dice_columns(row, "hu_threshold", region_dice(pred, mv.region, mv.label, mv.truth_counts))

    predictions, prob_cut = _logistic(voxels)
    for row, mv, pred in zip(rows, voxels, predictions, strict=True):
        if pred is not None:
            dice = region_dice(pred, mv.region, mv.label, mv.truth_counts)
            _dice_columns(row, "logistic", dice)

    table = pd.DataFrame(rows, columns=list(PATIENT_COLUMNS))
    method_dice = {m: _nanmean(table[f"dice_{m}_mean"]) for m in METHODS}
    trivial = [method_dice[m] for m in TRIVIAL_METHODS if not math.isnan(method_dice[m])]
    best_trivial = max(trivial) if trivial else math.nan
    figures = [
        _figure("n_patients", len(rows)),
        _figure("abm_share_mean", _nanmean(table["abm_share"])),
        _figure("marrow_mean_suv_median", float(np.median(table["marrow_mean_suv"]))),
        _figure("suv_bimodality_max", _nanmax(table["suv_bimodality"])),
        _figure("suv_bimodality_mean", _nanmean(table["suv_bimodality"])),
        _figure("hu_auc_mean", _nanmean(table["hu_auc"])),
        _figure("hu_auc_all_mean", _nanmean(table["hu_auc_all"])),
        _figure("hu_suv_r", pearson_r(table["marrow_mean_hu"], table["marrow_mean_suv"])),
        _figure("ct_visible_r2_pooled", pooled_r2(log_suv)),
        _figure("ct_visible_r2_within_mean", _nanmean(table["ct_visible_r2"])),
        *(_figure(f"dice_{m}", method_dice[m]) for m in METHODS),
        _figure("dice_best_trivial", best_trivial),
        _figure("ceiling_margin", method_dice["ceiling"] - best_trivial),
        _figure("hu_threshold", hu_cut),
        _figure("logistic_threshold", prob_cut),
        _figure("logistic_scored_patients", len(rows) // 2),
    ]
    return CohortReport(table=table, figures=figures)


# --- text ---------------------------------------------------------------------------------------


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int | np.integer):
        return str(int(value))
    return "NaN" if math.isnan(value) else f"{value:.4g}"


def format_summary(report: CohortReport) -> str:
    """The summary as an aligned text table, with a closing verdict line."""
    rows = [("figure", "value", "target", "result")]
    for f in report.figures:
        gate = next((g for g in GATES if g.name == f["name"]), None)
        verdict = "" if f["passed"] is None else ("pass" if f["passed"] else "FAIL")
        rows.append((f["name"], _number(f["value"]), gate.rule() if gate else "", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip() for a, b, c, d in rows
    ]
    failed = report.failed_gates
    lines.append(
        f"all {len(GATES)} gates passed"
        if not failed
        else f"{len(failed)} of {len(GATES)} gates failed: {', '.join(failed)}"
    )
    return "\n".join(lines)


def _summary_tsv(report: CohortReport) -> str:
    lines = ["\t".join(SUMMARY_COLUMNS)]
    for f in report.figures:
        passed = "" if f["passed"] is None else str(f["passed"]).lower()
        cells = [f["name"], _tsv_number(f["value"])]
        cells += [_tsv_number(f["gate_low"]), _tsv_number(f["gate_high"]), passed]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def _tsv_number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int | np.integer):
        return str(int(value))
    return "NaN" if math.isnan(value) else repr(float(value))


def _json_value(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_report(report: CohortReport, out: str | Path) -> dict[str, Path]:
    """Write synth_report.tsv, synth_summary.tsv and synth_summary.json into ``out``."""
    out = Path(out)
    paths = {
        "table": out / TABLE_NAME,
        "summary": out / SUMMARY_NAME,
        "summary_json": out / SUMMARY_JSON_NAME,
    }
    table_text = report.table.to_csv(sep="\t", index=False, na_rep="NaN", float_format="%.6g")
    write_atomic(paths["table"], lambda tmp: tmp.write_text(table_text))
    summary_text = _summary_tsv(report)
    write_atomic(paths["summary"], lambda tmp: tmp.write_text(summary_text))
    figures = [{k: _json_value(v) for k, v in f.items()} for f in report.figures]
    write_json(
        paths["summary_json"],
        {
            "abmseg_version": __version__,
            "figures": figures,
            "gates_passed": not report.failed_gates,
        },
    )
    return paths


# --- files --------------------------------------------------------------------------------------


def _regenerate(cohort: Path) -> str:
    return (
        f"regenerate the cohort with `abmseg synth {cohort}` of this version "
        f"(abmseg {__version__}), which writes the truth files the report needs"
    )


def _check_truth_files(cohort: Path, patients: Sequence[str]) -> None:
    """Refuse at once, before reading any image, when truth files are missing."""
    missing = [
        (pid, cohort / pid / name)
        for pid in patients
        for name in TRUTH_FILES
        if not (cohort / pid / name).is_file()
    ]
    if missing:
        pid, path = missing[0]
        others = len({p for p, _ in missing}) - 1
        more = f" (and {others} more patient(s) lack truth files)" if others else ""
        raise PatientDataError(
            pid,
            path,
            f"no {path.name}: this is not a synthetic cohort of this version{more}",
            _regenerate(cohort),
        )


def _on_ct_grid(path: Path, ct: sitk.Image, patient: str, cohort: Path) -> np.ndarray:
    from abmseg.io.volume import Geometry, read_nifti

    image = read_nifti(path, patient)
    if not Geometry.of(image).matches(Geometry.of(ct)):
        raise PatientDataError(
            patient, path, "the image is not on the CT grid", _regenerate(cohort)
        )
    return sitk.GetArrayFromImage(image)


def read_patient(
    cohort: Path, patient: str, ct_dir: str | Path, pet_dir: str | Path, label: str | Path
) -> PatientVolumes:
    """One patient's volumes on the CT grid, read as the pipeline reads them (CT in HU, PET in
    SUVbw from its DICOM tags, label through the converter's checks)."""
    from abmseg.io.convert import convert_ct, convert_pet
    from abmseg.io.jsonfile import read_json
    from abmseg.preprocess.convert import label_on_ct_grid
    from abmseg.regions import DEFAULT_REGIONS

    folder = cohort / patient
    truth = read_json(folder / "truth.json", patient, keys=("motion",))
    ct, ct_meta = convert_ct(ct_dir, patient)
    pet, _ = convert_pet(pet_dir, patient)
    rtstruct = {
        "regions": dict(DEFAULT_REGIONS),
        "roi_aliases": None,
        "frame_of_reference": ct_meta["frame_of_reference_sha256_16"],
    }
    label_image, _ = label_on_ct_grid(label, ct, patient, [0, *REGIONS], rtstruct)
    return PatientVolumes(
        patient_id=patient,
        hu=sitk.GetArrayFromImage(ct),
        suv=sitk.GetArrayFromImage(register_pet(pet, ct, truth["motion"])),
        label=sitk.GetArrayFromImage(label_image),
        marrow=_on_ct_grid(folder / "marrow.nii.gz", ct, patient, cohort),
        ceiling=_on_ct_grid(folder / "ceiling_prob.nii.gz", ct, patient, cohort),
        spacing_xyz=tuple(float(s) for s in ct.GetSpacing()),
        log_suv=truth.get("marrow", {}).get("log_suv"),
    )


def synth_report(
    cohort: str | Path, out: str | Path | None = None, figures: int = 0
) -> CohortReport:
    """Measure every patient of a synthetic cohort (one at a time) and write the report files
    into ``out`` (default: the cohort folder); ``figures`` patients also get a PNG of their
    axial, coronal and sagittal CT, PET and label in ``out/figures/``."""
    from abmseg.cohort.sheet import load_sheet, scored_patients

    cohort = Path(cohort)
    sheet_path = cohort / "patients.tsv"
    if not sheet_path.is_file():
        raise SheetError(
            f"{cohort} is not a synthetic cohort: it has no patients.tsv; make one with "
            f"`abmseg synth {cohort}`"
        )
    sheet = load_sheet(sheet_path)
    patients = scored_patients(sheet)  # CT-only patients have no PET or label to report on
    if not patients:
        raise SheetError(f"{sheet_path} lists no patient with PET and label to report on")
    _check_truth_files(cohort, patients)
    results = []
    for pid in patients:
        row = sheet.loc[pid]
        volumes = read_patient(cohort, pid, row["ct"], row["pet"], row["label"])
        if not np.any(volumes.marrow):
            raise PatientDataError(
                pid, cohort / pid / "marrow.nii.gz", "the marrow mask is empty", _regenerate(cohort)
            )
        results.append(measure_patient(volumes))
        if len(results) <= figures:
            from abmseg.synth.figures import render_patient

            v = volumes
            target = Path(cohort if out is None else out) / "figures" / f"{pid}.png"
            render_patient(v.hu, v.suv, v.label, v.marrow, v.spacing_xyz, pid, target)
        del volumes
    report = cohort_report(results)
    write_report(report, cohort if out is None else out)
    return report
