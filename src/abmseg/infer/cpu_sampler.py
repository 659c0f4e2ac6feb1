"""The sampler `abmseg predict` uses without a GPU, unless told otherwise.

The paper's DDIM-50 from full noise runs 50 denoiser passes per slice: about 1.8 hours for a
paper-sized patient on 2 CPU cores (BENCHMARKS.md). The validation study's sampler table
(docs/validation.md) found one DDIM step from a quarter of the chain (t = 250 of 1000, the start
the study picked on training patients) scoring Dice 0.561 on the test patients against 0.550 for
DDIM-50 from full noise, at about a fiftieth of the denoiser cost: 3.5 to 6.5 minutes for that
patient on the same 2 cores. The bundle keeps its own sampler; only the command's choice changes.
"""

from __future__ import annotations

from typing import Any

# One DDIM step from this fraction of the diffusion chain (250 of the preset's 1000 steps).
CPU_SAMPLER = {"sampler": "ddim", "steps": 1}
CPU_START_FRACTION = 0.25
CHOICES = ("auto", "bundle", "cpu")


def describe(sampler: dict[str, Any], timesteps: int | None) -> str:
    """A sampler as a person reads it: 'DDIM, 1 step from t=250 of 1000'."""
    kind = sampler.get("sampler", "ddim")
    if kind == "pseudo" or timesteps is None:
        return "pseudo-PET only (no diffusion refinement)"
    start = sampler.get("start_step") or timesteps
    if kind == "ddpm":
        return f"DDPM, {start} steps from t={start} of {timesteps}"
    steps = sampler.get("steps")
    return f"DDIM, {steps} step{'s' if steps != 1 else ''} from t={start} of {timesteps}"


def cpu_sampler(bundle_sampler: dict[str, Any], timesteps: int) -> dict[str, Any]:
    """The bundle's sampler record (seed, batch size kept) with the CPU steps and start."""
    start = max(1, round(timesteps * CPU_START_FRACTION))
    return {**bundle_sampler, **CPU_SAMPLER, "start_step": start}


def _denoiser_passes(sampler: dict[str, Any], timesteps: int) -> int:
    if sampler.get("sampler") == "pseudo":
        return 0
    if sampler.get("sampler") == "ddpm":
        return int(sampler.get("start_step") or timesteps)
    return int(sampler.get("steps") or 1)


def choose_sampler(
    bundle_sampler: dict[str, Any], device_type: str, choice: str, timesteps: int | None
) -> tuple[dict[str, Any] | None, str]:
    """(sampler to use instead of the bundle's, or None to keep it; the reason, for the log).

    ``timesteps``: the diffusion chain length, None for a variant without diffusion.
    """
    if choice not in CHOICES:
        raise ValueError(f"unknown sampler choice {choice!r}; choose one of {CHOICES}")
    own = describe(bundle_sampler, timesteps)
    if timesteps is None or choice == "bundle":
        return None, f"sampler: the bundle's, {own}"
    fast = cpu_sampler(bundle_sampler, timesteps)
    if choice == "cpu":
        return fast, f"sampler: {describe(fast, timesteps)} (--sampler cpu; the bundle's: {own})"
    if device_type != "cpu" or _denoiser_passes(bundle_sampler, timesteps) <= 1:
        return None, f"sampler: the bundle's, {own}"
    return fast, (
        f"sampler: no GPU, so the CPU sampler: {describe(fast, timesteps)} instead of the "
        f"bundle's {own} (validation study: Dice within 0.02 of DDIM-50; --sampler bundle "
        "keeps the bundle's)"
    )
