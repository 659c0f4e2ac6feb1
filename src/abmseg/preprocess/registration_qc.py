"""Limits a PET-to-CT registration must meet before its result goes downstream.

PET and CT of one PET/CT session share the scanner frame: real misalignment is breathing or
patient motion of a few millimetres to one or two centimetres, a few degrees of rotation and no
change of scale. A registration that makes the similarity worse, or whose transform is far
beyond that, has diverged or aligned two scans that do not belong together; the patient fails
with the figures instead of passing a wrong alignment on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from abmseg.errors import PatientDataError


@dataclass(frozen=True)
class QcLimits:
    """config['register']['qc'] (built with RegistrationSettings.from_config)."""

    min_mutual_information_gain: float = 0.0
    max_centre_displacement_mm: float = 30.0
    max_rotation_deg: float = 10.0
    min_scale: float = 0.95
    max_scale: float = 1.05

    def as_dict(self) -> dict:
        return asdict(self)


_TRANSFORM_KEYS = ("centre_displacement_mm", "rotation_deg", "scale_min", "scale_max")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class QcCheck:
    """One QC figure against its limit: what the register rule refuses on, and one line of the
    registration figure (abmseg.evaluate.registration_figure)."""

    name: str  # "mutual information", "centre shift", "rotation", "scale min", "scale max"
    value: str  # the figure, e.g. "0.6100 -> 0.5500 (gain -0.0600)"
    limit: str  # e.g. "gain >= +0.0000"
    passed: bool
    violation: str  # the sentence check_registration gives when it fails


def qc_checks(qc: dict, limits: QcLimits) -> list[QcCheck]:
    """Every figure of ``qc`` (register_pet_to_ct's) against ``limits``, in a fixed order.

    A missing or non-finite figure (a diverged optimiser's NaN) fails, and then only those are
    listed: NaN compares false with every limit and would otherwise pass.
    """
    transform = qc.get("transform", {})
    figures = {
        "mutual_information_before": qc.get("mutual_information_before"),
        "mutual_information_after": qc.get("mutual_information_after"),
        **{key: transform.get(key) for key in _TRANSFORM_KEYS},
    }
    broken = [name for name, value in figures.items() if not _finite(value)]
    if broken:
        return [
            QcCheck(
                name,
                repr(figures[name]),
                "a finite number",
                False,
                f"{name} is {figures[name]!r}, not a finite number",
            )
            for name in broken
        ]
    before, after = figures["mutual_information_before"], figures["mutual_information_after"]
    gain = after - before
    shift, rotation = figures["centre_displacement_mm"], figures["rotation_deg"]
    scale_min, scale_max = figures["scale_min"], figures["scale_max"]
    return [
        QcCheck(
            "mutual information",
            f"{before:.4f} -> {after:.4f} (gain {gain:+.4f})",
            f"gain >= {limits.min_mutual_information_gain:+.4f}",
            gain >= limits.min_mutual_information_gain,
            f"mutual information went from {before:.4f} to {after:.4f} (gain {gain:+.4f}, "
            f"limit >= {limits.min_mutual_information_gain:+.4f})",
        ),
        QcCheck(
            "centre shift",
            f"{shift:.2f} mm",
            f"<= {limits.max_centre_displacement_mm:g} mm",
            shift <= limits.max_centre_displacement_mm,
            f"centre displacement {shift:.2f} mm > limit {limits.max_centre_displacement_mm:g} mm",
        ),
        QcCheck(
            "rotation",
            f"{rotation:.2f} deg",
            f"<= {limits.max_rotation_deg:g} deg",
            rotation <= limits.max_rotation_deg,
            f"rotation {rotation:.2f} deg > limit {limits.max_rotation_deg:g} deg",
        ),
        QcCheck(
            "scale min",
            f"{scale_min:.4f}",
            f">= {limits.min_scale:g}",
            scale_min >= limits.min_scale,
            f"scale {scale_min:.4f} < limit {limits.min_scale:g}",
        ),
        QcCheck(
            "scale max",
            f"{scale_max:.4f}",
            f"<= {limits.max_scale:g}",
            scale_max <= limits.max_scale,
            f"scale {scale_max:.4f} > limit {limits.max_scale:g}",
        ),
    ]


def check_registration(qc: dict, limits: QcLimits) -> list[str]:
    """Every way ``qc`` breaks ``limits``, as readable sentences with the figure and the limit;
    empty when the registration passes (:func:`qc_checks`)."""
    return [check.violation for check in qc_checks(qc, limits) if not check.passed]


def qc_figures(qc: dict) -> str:
    """The QC figures in one line: MI before/after, displacement, rotation, scales."""
    t = qc.get("transform", {})
    return (
        f"MI before {qc.get('mutual_information_before')} after "
        f"{qc.get('mutual_information_after')}, centre displacement "
        f"{t.get('centre_displacement_mm')} mm, rotation {t.get('rotation_deg')} deg, "
        f"scales {t.get('scale_min')}..{t.get('scale_max')}"
    )


class RegistrationQcError(PatientDataError):
    """A registration outside the QC limits; ``qc`` holds every figure (for a JSON record)."""

    def __init__(
        self, patient: str | None, pet_path: str | Path, qc: dict, violations: list[str]
    ) -> None:
        self.qc = qc
        self.violations = violations
        super().__init__(
            patient,
            pet_path,
            f"PET-to-CT registration failed QC: {'; '.join(violations)} ({qc_figures(qc)})",
            "check that this PET and CT belong to the same PET/CT session, inspect the "
            "registration (overlay the PET on the CT), or, if the motion is real, relax "
            "register.qc in the config",
        )
