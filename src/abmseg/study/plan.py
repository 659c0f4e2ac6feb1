"""What the validation study runs, from config['study'] (read while Snakemake builds the DAG:
plain Python only, nothing heavy is imported here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from abmseg.settings import from_section

# CT baselines fitted on the training patients (abmseg.study.baselines), and the references
# that are not CT-only competitors: the phantom's CT-visible ceiling and the PET threshold.
CT_BASELINES = ("all_marrow", "hu_threshold", "logistic")
PET_REFERENCE = "pet_threshold"
CEILING = "ceiling"
ALL_REFERENCES = (*CT_BASELINES, CEILING, PET_REFERENCE)
FULL_NOISE = "T"
BEST_START = "best"


@dataclass(frozen=True)
class StudyPlan:
    """config['study']: whether the study runs, what it scores beside the variants, the sampler
    sweep and the paired statistics."""

    enabled: bool = False
    references: tuple[str, ...] = ALL_REFERENCES
    sampler_steps: tuple[int, ...] = (1, 5, 10, 25, 50)
    start_candidates: tuple[int, ...] = (500, 250, 100)
    start_selection_patients: int = 6
    ddpm: bool = False
    bootstrap_resamples: int = 10_000
    bootstrap_seed: int = 2026

    def __post_init__(self) -> None:
        unknown = sorted(set(self.references) - set(ALL_REFERENCES))
        if unknown:
            raise ValueError(f"unknown study references {unknown}; known: {list(ALL_REFERENCES)}")
        # the start is chosen by DDIM-10 from each candidate (more steps than timesteps are
        # capped by the sampler itself)
        if min(self.start_candidates) < 10:
            raise ValueError(
                f"study.start_candidates {list(self.start_candidates)} must all be >= 10 "
                "(each is tried with DDIM-10)"
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StudyPlan:
        return from_section(cls, config.get("study"), "study")

    @property
    def baselines(self) -> list[str]:
        """References made by the fitted baselines (everything but the ceiling)."""
        return [name for name in self.references if name != CEILING]

    @property
    def active_references(self) -> list[str]:
        return list(self.references) if self.enabled else []

    def methods(self, variants: Sequence[str]) -> list[str]:
        """Every scored method: the variants, then the references."""
        return [*variants, *self.active_references]

    def sampler_points(self, config: Mapping[str, Any]) -> list[str]:
        """The sweep's points (abmseg.study.sampler) when the study runs with the full model."""
        if not self.enabled or "full" not in config.get("variants", []):
            return []
        fraction = float(config.get("training", {}).get("spet_t_fraction", 0.5))
        return sweep_points(
            self.sampler_steps, self.start_candidates, onestep_start(fraction), self.ddpm
        )


def onestep_start(spet_t_fraction: float, timesteps: int = 1000) -> int:
    """The middle of the timesteps MP-FPSN's one-step training estimate is drawn from."""
    return max(1, round(spet_t_fraction * timesteps / 2))


def sweep_points(
    steps: Sequence[int], starts: Sequence[int], onestep_from: int, ddpm: bool
) -> list[str]:
    """Every point of the sweep: ``steps`` from full noise and from the best partial start, DDIM-10
    from each candidate start, one DDIM step from ``onestep_from`` (where MP-FPSN's training
    estimate comes from), the raw pseudo-PET, and DDPM-1000 where asked (a GPU)."""
    names = [f"ddim-{s}-{FULL_NOISE}" for s in steps]
    names += [f"ddim-{s}-{BEST_START}" for s in steps]
    names += [f"ddim-10-{start}" for start in starts]
    names += [f"ddim-1-{onestep_from}", "pseudo"]
    if ddpm:
        names.append(f"ddpm-1000-{FULL_NOISE}")
    return list(dict.fromkeys(names))
