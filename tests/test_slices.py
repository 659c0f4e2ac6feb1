"""2D slice data: network geometry round trip, lazy index, augmentation, deterministic loaders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from abmseg.errors import PatientDataError
from abmseg.slicing import SliceGeometry, from_network, to_network
from abmseg.train.augment import (
    AugmentSettings,
    augment_batch,
    augment_slice,
    rotate,
    seeded_generator,
)
from abmseg.train.slices import SliceDataset, SliceIndex, make_loader

SHAPES = {"P1": (6, 20, 28), "P2": (5, 24, 18), "P3": (4, 16, 16)}  # (z, y, x)
EMPTY = {"P1": [0, 5], "P2": [4], "P3": []}  # slices without body


def blob_label(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Three filled discs (classes 1-3) of random size, like marrow regions on a slice."""
    yy, xx = np.mgrid[:h, :w]
    label = np.zeros((h, w), np.uint8)
    for cls in (1, 2, 3):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        r = rng.uniform(0.12, 0.2) * min(h, w)
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = cls
    return label


def write_patient(folder: Path, shape: tuple[int, int, int], empty: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    z, h, w = shape
    ct = np.full(shape, -1.0, np.float32)
    pet = np.full(shape, -1.0, np.float32)
    label = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    body = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 <= 1
    for k in range(z):
        if k in empty:
            ct[k] += rng.uniform(0, 0.09, (h, w)).astype(np.float32)  # noise below -0.9
            continue
        ct[k][body] = rng.uniform(-0.2, 0.8, body.sum())
        pet[k][body] = rng.uniform(-1.0, 0.5, body.sum())
        label[k] = blob_label(h, w, rng) * body
    folder.mkdir(parents=True)
    for name, array in (("ct", ct), ("pet", pet), ("label", label)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{name}.nii.gz"))


@pytest.fixture
def cohort(tmp_path) -> list[tuple[str, Path]]:
    pairs = []
    for k, (patient, shape) in enumerate(SHAPES.items()):
        write_patient(tmp_path / patient, shape, EMPTY[patient], seed=k)
        pairs.append((patient, tmp_path / patient))
    return pairs


@pytest.fixture
def dataset(cohort) -> SliceDataset:
    return SliceDataset(SliceIndex(cohort), image_size=32, augment=True, base_seed=5)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# --------------------------------------------------------------------------- geometry


def test_padding_is_symmetric_odd_remainder_last():
    assert SliceGeometry(20, 28, 64).padding == (0, 0, 4, 4)
    assert SliceGeometry(21, 28, 64).padding == (0, 0, 3, 4)
    assert SliceGeometry(90, 70, 64).padding == (10, 10, 0, 0)


def test_to_network_pads_with_background_values():
    image = np.zeros((20, 28), np.float32)
    label = np.ones((20, 28), np.uint8)
    net_image = to_network(image, 28, "image")
    net_label = to_network(label, 28, "label")
    assert net_image.shape == (28, 28) and net_image.dtype == torch.float32
    assert net_label.dtype == torch.int64
    assert torch.all(net_image[:4] == -1) and torch.all(net_image[4:24] == 0)
    assert torch.all(net_label[24:] == 0) and torch.all(net_label[4:24] == 1)


@pytest.mark.parametrize("hw", [(20, 28), (21, 28), (28, 21), (32, 32)])
def test_image_round_trip_is_exact_without_resize(hw):
    image = np.random.default_rng(0).uniform(-1, 1, hw).astype(np.float32)
    back = from_network(to_network(image, max(hw), "image"), hw, "image")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("hw", [(90, 70), (70, 90), (45, 61)])
@pytest.mark.parametrize("extra", [0, 7, 38, 166])
def test_label_round_trip_keeps_every_class(hw, extra):
    label = blob_label(*hw, np.random.default_rng(sum(hw) + extra))
    size = max(hw) + extra
    back = from_network(to_network(label, size, "label"), hw, "label")
    assert back.shape == hw
    for cls in (1, 2, 3):
        assert dice(back == cls, label == cls) > 0.95, (hw, size, cls)
    # stronger: when upsampling, every original pixel centre lands in a copy of itself
    np.testing.assert_array_equal(back, label)


@pytest.mark.parametrize("size", [128, 256])
def test_smooth_image_round_trip_through_upsampling_is_close(size):
    """Only the rows next to the -1 padding blend with it; the interior comes back."""
    yy, xx = np.mgrid[:70, :90]
    image = (np.sin(yy / 9.0) * np.cos(xx / 7.0)).astype(np.float32)
    back = from_network(to_network(image, size, "image"), (70, 90), "image")
    assert np.abs(back - image)[1:-1].max() < 0.01


def test_from_network_keeps_leading_dimensions():
    probabilities = torch.softmax(torch.randn(4, 32, 32), dim=0)
    back = from_network(probabilities, (20, 28), "image")
    assert back.shape == (4, 20, 28)
    with pytest.raises(ValueError, match="kind"):
        from_network(probabilities, (20, 28), "mask")


# --------------------------------------------------------------------------- index and dataset


def test_index_lists_only_body_slices(cohort):
    index = SliceIndex(cohort)
    expected = [
        (p, z) for p, (depth, _, _) in SHAPES.items() for z in range(depth) if z not in EMPTY[p]
    ]
    assert index.items == expected
    assert index.shapes == {p: shape[1:] for p, shape in SHAPES.items()}
    assert len(index.cache) == 0  # building the index keeps no volume


def test_cache_is_lru_and_not_pickled(cohort):
    index = SliceIndex(cohort, cache_size=2)
    for patient in ("P1", "P2", "P1", "P3", "P1", "P2"):
        index.volumes(patient)
    assert index.cache.loads == 4  # P1, P2, P3, then P2 again (evicted by P3)
    clone = pickle.loads(pickle.dumps(index))
    assert len(clone.cache) == 0 and len(pickle.dumps(index)) < 10_000


def test_mismatched_grids_name_patient_and_file(tmp_path):
    write_patient(tmp_path / "P9", (3, 10, 12), [], seed=0)
    sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((3, 10, 11), np.uint8)), str(tmp_path / "P9/label.nii.gz")
    )
    index = SliceIndex([("P9", tmp_path / "P9")])
    with pytest.raises(PatientDataError, match="P9.*label.nii.gz"):
        index.volumes("P9")


def test_item_without_augmentation_is_the_network_slice(cohort):
    data = SliceDataset(SliceIndex(cohort), image_size=32)
    patient, z = data.index[3]
    item = data[3]
    assert (item["patient"], item["z"]) == (patient, z)
    assert item["ct"].shape == (1, 32, 32) and item["ct"].dtype == torch.float32
    assert item["pet"].shape == (1, 32, 32) and item["label"].shape == (32, 32)
    assert item["label"].dtype == torch.int64
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(data.index.folders[patient] / "ct.nii.gz")))
    assert torch.equal(item["ct"][0], to_network(ct[z], 32, "image"))


def test_augmentation_is_reproducible_per_epoch_and_index(dataset):
    dataset.set_epoch(2)
    first, again = dataset[4], dataset[4]
    for key in ("ct", "pet", "label"):
        assert torch.equal(first[key], again[key])
    assert torch.equal(dataset[(2, 4)]["ct"], first["ct"])
    assert not torch.equal(dataset[(3, 4)]["ct"], first["ct"])
    assert set(first["label"].unique().tolist()) <= {0, 1, 2, 3}
    assert first["ct"].min() >= -1 and first["ct"].max() <= 1


def test_augmentations_switched_off_change_nothing(dataset):
    plain = SliceDataset(dataset.index, image_size=32)[4]
    item = plain["ct"], plain["pet"], plain["label"]
    off = AugmentSettings(rotation_deg=0.0, hflip_p=0.0, intensity_jitter=0.0)
    for got, want in zip(augment_slice(*item, off, seeded_generator(1)), item, strict=True):
        assert torch.equal(got, want)
    flip = AugmentSettings(rotation_deg=0.0, hflip_p=1.0, intensity_jitter=0.0)
    for got, want in zip(augment_slice(*item, flip, seeded_generator(1)), item, strict=True):
        assert torch.equal(got, want.flip(-1))


@pytest.mark.parametrize(
    "settings",
    [
        AugmentSettings(),
        AugmentSettings(rotation_deg=0.0),
        AugmentSettings(hflip_p=0.0, intensity_jitter=0.0),
        AugmentSettings(rotation_deg=45.0, hflip_p=1.0, intensity_jitter=0.3),
    ],
)
def test_a_deferred_batch_augments_exactly_as_the_loader_does(dataset, settings):
    """The loader path (augment_slice per item) is the reference for augment_batch: same items,
    same numbers, bit-identical on a CPU, including the jitter's clipping at +-1."""
    deferred = SliceDataset(
        dataset.index, 32, augment=True, settings=settings, base_seed=7, defer_augment=True
    )
    eager = SliceDataset(dataset.index, 32, augment=True, settings=settings, base_seed=7)
    keys = [(3, i) for i in range(min(len(eager), 12))]
    items = [deferred[k] for k in keys]
    assert all(item["augment"].shape == (6,) for item in items)
    stacked = {k: torch.stack([item[k] for item in items]) for k in ("ct", "pet", "label")}
    got = augment_batch(
        stacked["ct"], stacked["pet"], stacked["label"],
        torch.stack([item["augment"] for item in items]), settings,
    )  # fmt: skip
    for name, batch in zip(("ct", "pet", "label"), got, strict=True):
        want = torch.stack([eager[k][name] for k in keys])
        assert batch.dtype == want.dtype and torch.equal(batch, want), name


def test_rotation_turns_images_and_label_together():
    label = torch.from_numpy(blob_label(32, 32, np.random.default_rng(1)).astype(np.int64))
    images = torch.stack([label.float() / 3 * 2 - 1, torch.rand(32, 32) * 2 - 1])
    turned, turned_label = rotate(images, label, 90.0)
    assert torch.equal(turned_label, torch.rot90(label, 1))
    assert torch.allclose(turned, torch.rot90(images, 1, dims=(-2, -1)), atol=1e-5)
    small, small_label = rotate(images, label, 10.0)
    assert small[:, 0, 0].tolist() == [-1.0, -1.0]  # corners come from outside: fill -1
    from_image = ((small[0] + 1) / 2 * 3).round().long()  # channel 0 encodes the label
    assert (from_image == small_label).float().mean() > 0.95
    back, back_label = rotate(small, small_label, -10.0)
    for cls in (1, 2, 3):
        assert dice(back_label.numpy() == cls, label.numpy() == cls) > 0.85


# --------------------------------------------------------------------------- loaders


def batches(loader) -> list[dict]:
    return list(loader)


def same_batches(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["z"].tolist() == y["z"].tolist()
        and x["patient"] == y["patient"]
        and torch.equal(x["ct"], y["ct"])
        and torch.equal(x["label"], y["label"])
        for x, y in zip(a, b, strict=True)
    )


def test_loader_is_deterministic_per_seed_and_epoch(dataset):
    one = batches(make_loader(dataset, 4, shuffle=True, seed=1, epoch=0))
    two = batches(make_loader(dataset, 4, shuffle=True, seed=1, epoch=0))
    other = batches(make_loader(dataset, 4, shuffle=True, seed=1, epoch=1))
    assert same_batches(one, two)
    assert not same_batches(one, other)
    assert len(one) == len(dataset) // 4  # drop_last for training
    assert len(batches(make_loader(dataset, 4, shuffle=False, seed=1))) == -(-len(dataset) // 4)


def test_persistent_workers_follow_set_epoch(dataset):
    """Two workers give the batches of the in-process loader, epoch after epoch."""
    loader = make_loader(dataset, 3, shuffle=True, seed=4, epoch=0, workers=2)
    assert loader.persistent_workers
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        reference = make_loader(dataset, 3, shuffle=True, seed=4, epoch=epoch, workers=0)
        assert same_batches(batches(loader), batches(reference))


def test_distributed_ranks_share_out_the_epoch(dataset):
    shards = [
        [
            key
            for key in make_loader(
                dataset, 2, True, seed=3, epoch=5, distributed=True, rank=r, world_size=2
            ).sampler
        ]
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == -(-len(dataset) // 2)
    assert {i for _, i in shards[0] + shards[1]} == set(range(len(dataset)))
    assert {e for e, _ in shards[0]} == {5}


@pytest.mark.parametrize("distributed", [False, True])
def test_patient_blocks_keep_each_patient_together(dataset, distributed):
    loader = make_loader(
        dataset,
        2,
        True,
        seed=0,
        epoch=1,
        distributed=distributed,
        world_size=2,
        patients_per_block=1,
    )
    order = [dataset.index[i][0] for _, i in loader.sampler]
    runs = [p for k, p in enumerate(order) if k == 0 or p != order[k - 1]]
    assert len(runs) == len(set(order)) == 3  # one contiguous run per patient
    assert list(loader.sampler) == list(loader.sampler)
    assert len(list(loader.sampler)) == len(loader.sampler)
