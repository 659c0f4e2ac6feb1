"""pass / warn / fail for one prediction, with the reasons a planner can act on.

Each check compares one number of the patient with what the networks were trained on (the
:class:`~abmseg.qa.profile.TrainingProfile`) or with a configured limit:

- fail: the input is outside what the networks can be expected to handle: HU calibration off
  (air or fat peak outside the training CTs' range by more than ``hu_tolerance``), slice
  thickness or pixel size outside the training range by more than ``spacing_factor``, a scan
  shorter than ``min_length_fraction`` of the shortest training scan (the field of view cannot
  cover L4 to the lesser trochanters as the training scans did);
- warn: the output looks unusual: a region's ABM volume outside the training labels' range
  widened by ``volume_factor``, metal above ``metal_ml``, predicted ABM on the scan's first or
  last slice where the training labels (almost) never reached them, the mean predictive entropy
  over the predicted marrow above ``max_marrow_entropy`` (issue 18's measurements: this mean
  falls as Dice rises, Spearman rho -0.70 on the study's test patients).

The field-of-view check is a proxy: there are no landmarks, so a scan cut above the acetabulum
shows as a short scan and as a region (lower pelvis) with too little marrow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from abmseg.qa.measure import METAL_HU, CtMeasurements
from abmseg.qa.profile import TrainingProfile
from abmseg.settings import from_section

LEVELS = ("pass", "warn", "fail")
# The truncation check runs only if at most this share of the training labels reached the edge.
EDGE_SHARE = 0.1


@dataclass(frozen=True)
class QaSettings:
    """config['qa']: how far from the training data a patient may be before a flag."""

    hu_tolerance: float = 50.0
    spacing_factor: float = 1.5
    min_length_fraction: float = 0.75
    volume_factor: float = 2.0
    metal_ml: float = 1.0
    # ln 2: on average every predicted marrow voxel as unsure as a coin toss between two classes
    max_marrow_entropy: float = 0.69
    # A voxel is "uncertain" (abm_stats' uncertain_share) above this predictive entropy (nats).
    uncertain_entropy: float = 0.5

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> QaSettings:
        return from_section(cls, config.get("qa"), "qa")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    check: str
    level: str  # warn or fail
    message: str


def _widened(span: Mapping[str, float], margin: float) -> tuple[float, float]:
    """The training range widened by ``margin`` HU (additive)."""
    return span["min"] - margin, span["max"] + margin


def _scaled(span: Mapping[str, float], factor: float) -> tuple[float, float]:
    """The training range widened by ``factor`` (multiplicative: sizes and volumes)."""
    return span["min"] / factor, span["max"] * factor


def _outside(value: float, bounds: tuple[float, float]) -> bool:
    return not bounds[0] <= value <= bounds[1]


def _input_findings(ct: CtMeasurements, profile: TrainingProfile, settings: QaSettings):
    tol, factor = settings.hu_tolerance, settings.spacing_factor
    for key, name in (("air_peak_hu", "air"), ("fat_peak_hu", "fat")):
        span, value = profile.ct.get(key), getattr(ct, key)
        if span is None:
            continue
        if value is None:  # no air around the body (a tight field of view): fat alone judges
            if key == "fat_peak_hu":
                yield Finding("hu_calibration", "warn", "no fat peak found in the body")
            continue
        if _outside(value, _widened(span, tol)):
            yield Finding(
                "hu_calibration",
                "fail",
                f"{name} peak at {value:.0f} HU; the training CTs had it at "
                f"{span['min']:.0f} to {span['max']:.0f} HU (tolerance {tol:.0f} HU): check "
                "the CT's rescale slope and intercept",
            )
    for key, name in (("slice_thickness_mm", "slice thickness"), ("pixel_mm", "pixel size")):
        span, value = profile.ct.get(key), getattr(ct, key)
        if span and _outside(value, _scaled(span, factor)):
            yield Finding(
                "geometry",
                "fail",
                f"{name} {value:.2f} mm; the training CTs had {span['min']:.2f} to "
                f"{span['max']:.2f} mm (x{factor:g} allowed)",
            )
    span = profile.ct.get("scan_length_mm")
    if span and ct.scan_length_mm < settings.min_length_fraction * span["min"]:
        yield Finding(
            "field_of_view",
            "fail",
            f"scan length {ct.scan_length_mm:.0f} mm; the shortest training scan was "
            f"{span['min']:.0f} mm: the field of view may not cover L4 to the lesser trochanters",
        )


def _metal_findings(ct: CtMeasurements, profile: TrainingProfile | None, settings: QaSettings):
    """Metal needs no profile: the training maximum only raises the configured limit."""
    span = profile.ct.get("metal_ml") if profile else None
    allowed = max(settings.metal_ml, span["max"] if span else 0.0)
    if ct.metal_ml > allowed:
        yield Finding(
            "metal",
            "warn",
            f"{ct.metal_ml:.1f} ml above {METAL_HU:.0f} HU (metal?); allowed {allowed:.1f} ml",
        )


def _edge_findings(marrow_at_edge: bool, profile: TrainingProfile | None):
    """ABM on the scan's first or last slice: the field of view may cut the marrow. Only where
    the training labels seldom reached those slices (a cohort scanned with room to spare)."""
    share = profile.label_at_edge if profile else None
    if marrow_at_edge and share is not None and share <= EDGE_SHARE:
        yield Finding(
            "field_of_view",
            "warn",
            "the predicted ABM reaches the first or last slice of the scan (the training labels "
            f"did in {share:.0%} of the training scans): the field of view may cut the marrow",
        )


def _output_findings(
    volumes: Mapping[str, float],
    marrow_entropy: float | None,
    profile: TrainingProfile | None,
    settings: QaSettings,
):
    factor = settings.volume_factor
    for region, value in volumes.items():
        span = profile.region_volume_ml.get(region) if profile else None
        if span and _outside(value, _scaled(span, factor)):
            yield Finding(
                "region_volume",
                "warn",
                f"{region} ABM {value:.1f} ml; training labels {span['min']:.1f} to "
                f"{span['max']:.1f} ml (x{factor:g} allowed)",
            )
    if marrow_entropy is not None and marrow_entropy > settings.max_marrow_entropy:
        yield Finding(
            "uncertainty",
            "warn",
            f"mean predictive entropy over the predicted marrow {marrow_entropy:.3f} nats, "
            f"above {settings.max_marrow_entropy:g}: check the mask against the CT",
        )


def assess(
    ct: CtMeasurements,
    volumes: Mapping[str, float],
    marrow_entropy: float | None,
    profile: TrainingProfile | None,
    settings: QaSettings,
    marrow_at_edge: bool = False,
) -> dict[str, Any]:
    """The QA verdict (pass / warn / fail), its reasons and the numbers they rest on."""
    findings: list[Finding] = []
    if profile is None:
        findings.append(
            Finding(
                "training_profile",
                "warn",
                "the model carries no training profile (a bundle older than this check): "
                "the input CT was not compared with the training CTs",
            )
        )
    else:
        findings.extend(_input_findings(ct, profile, settings))
    findings.extend(_metal_findings(ct, profile, settings))
    findings.extend(_edge_findings(marrow_at_edge, profile))
    findings.extend(_output_findings(volumes, marrow_entropy, profile, settings))
    levels = {f.level for f in findings}
    verdict = "fail" if "fail" in levels else "warn" if "warn" in levels else "pass"
    return {
        "verdict": verdict,
        "reasons": [asdict(f) for f in findings],
        "measurements": {
            **ct.to_dict(),
            "region_volume_ml": dict(volumes),
            "marrow_mean_entropy": marrow_entropy,
            "marrow_at_scan_edge": marrow_at_edge,
        },
        "training_patients": profile.patients if profile else None,
        "settings": settings.to_dict(),
    }
