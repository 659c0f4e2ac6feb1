"""Keep resumable checkpoints only for the run they belong to.

Snakemake reruns a training rule when its inputs or parameters change; the checkpoints of the old
run must then not be resumed (the engine would refuse a settings change, and would silently mix
training sets if only the patients changed). The rule stamps its checkpoint folder with a key of
everything that defines the run; a folder with another key is set aside, not deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

KEY_FILE = "run_key.txt"
logger = logging.getLogger(__name__)


def run_key(
    variant: str, stage: int, settings: Mapping[str, Any], patients: Sequence[str], init: str | None
) -> str:
    """SHA-256 of the run's definition (init: the stage-1 bundle's own hash, for stage 2)."""
    material = {
        "variant": variant,
        "stage": stage,
        "settings": settings,
        "patients": sorted(patients),
        "init": init,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def claim_checkpoints(folder: str | Path, key: str) -> Path | None:
    """Make ``folder`` belong to the run ``key``; return where a stale folder was moved, if any."""
    folder = Path(folder)
    stamp = folder / KEY_FILE
    moved = None
    if folder.exists() and (not stamp.exists() or stamp.read_text().strip() != key):
        moved = folder.with_name(f"{folder.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(moved)
        logger.warning("checkpoints of a different run set aside: %s -> %s", folder, moved)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key + "\n")
    return moved
