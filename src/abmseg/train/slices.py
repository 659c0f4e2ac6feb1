"""The training slices of the normalised volumes and their loaders.

Each axial slice with body becomes a fixed-size network input through ``abmseg.slicing``.

Volumes are read lazily: ``SliceIndex`` stores only (patient, z) and keeps a few whole patients in
a small per-process LRU cache, so a paper-sized cohort never sits in memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from abmseg.errors import PatientDataError
from abmseg.io.volume import read_nifti
from abmseg.slicing import SliceGeometry, body_slices
from abmseg.train.augment import (
    AugmentSettings,
    augment_slice,
    derive_seed,
    draw_augmentation,
    seeded_generator,
)

VOLUME_FILES = {"ct": "ct.nii.gz", "pet": "pet.nii.gz", "label": "label.nii.gz"}
MADE_BY = "normalise"  # the rule whose outputs these are, named in read errors


# --------------------------------------------------------------------------- volumes and index


@dataclass(frozen=True)
class PatientVolumes:
    """One patient's normalised CT and PET (float32) and label (uint8), all (z, y, x)."""

    ct: np.ndarray
    pet: np.ndarray
    label: np.ndarray


def read_array(path: Path, patient: str) -> np.ndarray:
    """A NIfTI as a (z, y, x) numpy array, with errors naming the patient and file."""
    return sitk.GetArrayFromImage(read_nifti(path, patient, made_by=MADE_BY))


def load_patient(patient: str, folder: str | Path) -> PatientVolumes:
    """Read ``ct/pet/label.nii.gz`` of one patient and check they share one grid."""
    folder = Path(folder)
    arrays = {key: read_array(folder / name, patient) for key, name in VOLUME_FILES.items()}
    for key in ("pet", "label"):
        if arrays[key].shape != arrays["ct"].shape:
            raise PatientDataError(
                patient,
                folder / VOLUME_FILES[key],
                f"{key} shape {arrays[key].shape} (z, y, x) differs from ct {arrays['ct'].shape}",
                "rerun the crop and normalise rules for this patient so all images share a grid",
            )
    return PatientVolumes(
        ct=arrays["ct"].astype(np.float32, copy=False),
        pet=arrays["pet"].astype(np.float32, copy=False),
        label=arrays["label"].astype(np.uint8, copy=False),
    )


class VolumeCache:
    """Least-recently-used cache of whole patients, private to the process that uses it.

    Each DataLoader worker holds its own copy of the dataset and therefore its own cache, so memory
    is about workers x ``size`` x one patient (CT + PET float32 + label; ~180 MB at paper size).
    The cache is dropped when pickled (spawned workers start empty rather than receiving copies).
    """

    def __init__(self, size: int = 4) -> None:
        if size < 1:
            raise ValueError(f"cache size must be at least 1 patient, got {size}")
        self.size = size
        self.loads = 0  # number of volume reads, for tests and tuning
        self._items: OrderedDict[str, PatientVolumes] = OrderedDict()

    def get(self, patient: str, folder: Path) -> PatientVolumes:
        if patient in self._items:
            self._items.move_to_end(patient)
            return self._items[patient]
        volumes = load_patient(patient, folder)
        self.loads += 1
        self._items[patient] = volumes
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return volumes

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict:
        return {"size": self.size, "loads": 0, "_items": OrderedDict()}


class SliceIndex:
    """Every (patient, z) axial slice that shows body, and lazy access to the volumes.

    ``body_threshold`` -0.9 is about -440 HU with the default CT window (L100/W1200): slices of
    air, couch remnants or noise only are skipped. Building the index reads each CT once and keeps
    nothing but the slice numbers and slice shapes.
    """

    def __init__(
        self,
        patients: Sequence[tuple[str, str | Path]],
        body_threshold: float = -0.9,
        cache_size: int = 4,
    ) -> None:
        self.folders: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, int]] = {}
        items: list[tuple[str, int]] = []
        for patient, folder in patients:
            if patient in self.folders:
                raise ValueError(f"patient {patient} listed twice")
            folder = Path(folder)
            ct = read_array(folder / VOLUME_FILES["ct"], patient)
            self.folders[patient] = folder
            self.shapes[patient] = (int(ct.shape[1]), int(ct.shape[2]))
            items.extend((patient, int(z)) for z in body_slices(ct, body_threshold))
        self.items = items
        self.cache = VolumeCache(cache_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.items[i]

    @property
    def patients(self) -> list[str]:
        return list(self.folders)

    def volumes(self, patient: str) -> PatientVolumes:
        """Whole volumes of one patient, through this process's LRU cache."""
        return self.cache.get(patient, self.folders[patient])


# --------------------------------------------------------------------------- dataset


class SliceDataset(Dataset):
    """Axial slices as ``{"ct", "pet", "label", "patient", "z"}`` network-ready samples.

    With ``augment`` on, item i of epoch e is augmented with a generator seeded from
    (base_seed, e, i): reproducible whatever the worker count or order. With ``defer_augment``
    the item carries that generator's numbers as ``"augment"`` instead, for ``augment_batch`` on
    the training device. Items may be requested as
    ``i`` (uses the epoch of ``set_epoch``) or as ``(epoch, i)``, which is what the samplers of
    ``make_loader`` yield, so persistent workers follow the epoch without being told.
    """

    def __init__(
        self,
        index: SliceIndex,
        image_size: int,
        augment: bool = False,
        settings: AugmentSettings | None = None,
        base_seed: int = 0,
        defer_augment: bool = False,
    ) -> None:
        self.index = index
        self.image_size = image_size
        self.augment = augment
        self.defer_augment = defer_augment
        self.settings = settings or AugmentSettings()
        self.base_seed = base_seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for items requested by plain index."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, i = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        if i < 0:
            i += len(self)
        patient, z = self.index[i]
        volumes = self.index.volumes(patient)
        h, w = volumes.ct.shape[1:]
        geometry = SliceGeometry(h, w, self.image_size)
        ct = geometry.to_network(volumes.ct[z], "image")[None]
        pet = geometry.to_network(volumes.pet[z], "image")[None]
        label = geometry.to_network(volumes.label[z], "label")
        item = {"patient": patient, "z": z}
        if self.augment:
            generator = seeded_generator(self.base_seed, epoch, i)
            if self.defer_augment:  # the same numbers, applied to the batch by augment_batch
                item["augment"] = draw_augmentation(generator)
            else:
                ct, pet, label = augment_slice(ct, pet, label, self.settings, generator)
        return {"ct": ct, "pet": pet, "label": label, **item}


# --------------------------------------------------------------------------- samplers, loader


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys in a deterministic order per (seed, epoch).

    Orders: a seeded ``RandomSampler`` (shuffle), a ``DistributedSampler`` shard (distributed), a
    patient-blocked shuffle (``patients_per_block`` > 0), or plain sequential order. Call
    ``set_epoch`` before each epoch, as with ``DistributedSampler``. The epoch travels inside each
    key because persistent DataLoader workers hold their own dataset copies: a ``set_epoch`` on the
    main process's dataset would never reach them, the keys always do.
    """

    def __init__(
        self,
        dataset: SliceDataset,
        shuffle: bool,
        seed: int,
        epoch: int = 0,
        distributed: bool = False,
        rank: int = 0,
        world_size: int = 1,
        patients_per_block: int = 0,
    ) -> None:
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = int(epoch)
        self.rank = rank
        self.world_size = world_size
        self.patients_per_block = patients_per_block
        self.distributed = distributed
        self.blocked = patients_per_block > 0 and shuffle
        self.inner: Sampler | None = None  # None: blocked order, or sequential without shuffle
        if distributed and not self.blocked:
            self.inner = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
            )
        elif shuffle and not self.blocked:
            self.inner = RandomSampler(dataset, generator=torch.Generator())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _indices(self) -> list[int]:
        if self.blocked:
            return self._blocked_order()
        if isinstance(self.inner, DistributedSampler):
            self.inner.set_epoch(self.epoch)
        elif isinstance(self.inner, RandomSampler):
            self.inner.generator.manual_seed(derive_seed(self.seed, self.epoch))
        elif self.inner is None:
            return list(range(len(self.dataset)))
        return list(self.inner)

    def _blocked_order(self) -> list[int]:
        """Shuffle patients into blocks of ``patients_per_block``, then slices within a block.

        Random access over a whole cohort misses a few-patient cache on nearly every item (each
        miss reads three .nii.gz volumes); within a block every worker reads each patient once.
        """
        generator = seeded_generator(self.seed, self.epoch)
        by_patient: dict[str, list[int]] = {}
        for i, (patient, _) in enumerate(self.dataset.index.items):
            by_patient.setdefault(patient, []).append(i)
        patients = list(by_patient)
        order = [patients[k] for k in torch.randperm(len(patients), generator=generator).tolist()]
        indices: list[int] = []
        for start in range(0, len(order), self.patients_per_block):
            block = [
                i for p in order[start : start + self.patients_per_block] for i in by_patient[p]
            ]
            permutation = torch.randperm(len(block), generator=generator).tolist()
            indices.extend(block[k] for k in permutation)
        if self.distributed:  # pad to a multiple of world_size, then take this rank's share
            total = math.ceil(len(indices) / self.world_size) * self.world_size
            indices = (indices * math.ceil(total / max(len(indices), 1)))[:total]
            indices = indices[self.rank : total : self.world_size]
        return indices

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, i) for i in self._indices()])

    def __len__(self) -> int:
        if self.distributed:
            return math.ceil(len(self.dataset) / self.world_size)
        return len(self.dataset)


def make_loader(
    dataset: SliceDataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    workers: int = 0,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    drop_last: bool | None = None,
    patients_per_block: int = 0,
) -> DataLoader:
    """A DataLoader whose batches depend only on (seed, epoch), not on the worker count.

    The sampler is an ``EpochSampler``; move to the next epoch with ``loader.sampler.set_epoch(e)``
    (works with persistent workers: the epoch travels with each index). ``drop_last`` defaults to
    ``shuffle`` (training drops the ragged last batch; evaluation keeps every slice).
    ``patients_per_block`` > 0 shuffles blocks of that many patients (set it to the cache size)
    instead of all slices, which keeps the volume cache hit rate high on large cohorts.
    """
    sampler = EpochSampler(
        dataset, shuffle, seed, epoch, distributed, rank, world_size, patients_per_block
    )
    generator = seeded_generator(seed)  # only feeds workers' base seeds; items use their own
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        drop_last=shuffle if drop_last is None else drop_last,
        generator=generator,
    )
