"""Model size presets are data (abmseg/models/presets/<network>.yaml), not code paths.

They ship inside the package (package data), so an installed abmseg, a checkout and a workflow
deployed as a Snakemake module all read the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).resolve().parent
NETWORKS = ("cyclegan", "diffusion", "mpfpsn")


def load_model_preset(
    network: str, preset: str, preset_dir: str | Path | None = None
) -> dict[str, Any]:
    """The keyword arguments of one network's preset, e.g. ``load_model_preset("mpfpsn", "tiny")``.

    Raises ValueError naming the file and the valid choices when the network or preset is unknown.
    """
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {list(NETWORKS)}")
    path = Path(preset_dir or PRESET_DIR) / f"{network}.yaml"
    presets = yaml.safe_load(path.read_text()) or {}
    if preset not in presets:
        raise ValueError(f"{path} has no preset {preset!r}; choose one of {sorted(presets)}")
    return dict(presets[preset])
