"""Keep resumable checkpoints only for the run they belong to.

Snakemake reruns a training rule when its inputs or parameters change; the checkpoints of the old
run must then not be resumed (the engine would refuse a settings change, and would silently mix
training sets if only the patients changed). The rule stamps its checkpoint folder with a key of
everything that defines the run; a folder with another key is deleted (it can never be resumed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from abmseg.provenance.hashing import sha256_file as file_sha256
from abmseg.train.settings import RESUME_FREE

KEY_FILE = "run_key.txt"
logger = logging.getLogger(__name__)


def run_key(
    variant: str,
    stage: int,
    settings: Mapping[str, Any],
    patients: Sequence[str],
    inputs: Sequence[str | Path] = (),
) -> str:
    """SHA-256 of the run's definition: variant, stage, the training settings except those a
    resume may change (epoch counts, workers), the training patients, and the content of every
    input file (volumes, labels, presets, the stage-1 model.pt)."""
    training = {k: v for k, v in dict(settings.get("training", {})).items() if k not in RESUME_FREE}
    material = {
        "variant": variant,
        "stage": stage,
        "settings": {**settings, "training": training},
        "patients": sorted(patients),
        "inputs": sorted(file_sha256(path) for path in inputs),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def claim_checkpoints(folder: str | Path, key: str) -> bool:
    """Make ``folder`` belong to the run ``key``; return True when checkpoints of another run
    were there and got deleted.

    Such checkpoints can never be resumed (their inputs or settings differ), their final model
    was replaced by Snakemake, and left inside results/ they would be files without provenance.
    """
    folder = Path(folder)
    stamp = folder / KEY_FILE
    discarded = folder.exists() and (not stamp.exists() or stamp.read_text().strip() != key)
    if discarded:
        shutil.rmtree(folder)
        logger.warning(
            "deleted checkpoints of a different run (other inputs or settings): %s", folder
        )
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key + "\n")
    return discarded
