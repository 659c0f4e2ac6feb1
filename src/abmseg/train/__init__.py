"""Training plumbing shared by the stages: 2D slice data, augmentation, resumable checkpoints."""

from abmseg.train.augment import AugmentSettings, augment_slice, derive_seed
from abmseg.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from abmseg.train.slices import (
    SliceDataset,
    SliceGeometry,
    SliceIndex,
    from_network,
    make_loader,
    to_network,
)

__all__ = [
    "AugmentSettings",
    "CheckpointError",
    "SliceDataset",
    "SliceGeometry",
    "SliceIndex",
    "augment_slice",
    "capture_rng_state",
    "derive_seed",
    "from_network",
    "load_latest_checkpoint",
    "make_loader",
    "restore_rng_state",
    "save_checkpoint",
    "to_network",
]
