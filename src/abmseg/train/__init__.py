"""Training plumbing shared by the stages: 2D slice data, augmentation, resumable checkpoints.

The slice geometry (``SliceGeometry``, ``to_network``, ``from_network``) lives in
``abmseg.slicing``, shared with inference.
"""

from abmseg.train.augment import AugmentSettings, augment_slice, derive_seed
from abmseg.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from abmseg.train.slices import SliceDataset, SliceIndex, make_loader

__all__ = [
    "AugmentSettings",
    "CheckpointError",
    "SliceDataset",
    "SliceIndex",
    "augment_slice",
    "capture_rng_state",
    "derive_seed",
    "load_latest_checkpoint",
    "make_loader",
    "restore_rng_state",
    "save_checkpoint",
]
