"""Metrics against independent references: scikit-image, closed forms, brute-force point sets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from abmseg.metrics import assd, dice, nmse, psnr, region_scores, ssim

RNG = np.random.default_rng(0)


def test_psnr_equals_scikit_image():
    ref = RNG.uniform(0, 8, (6, 32, 32))
    pred = ref + RNG.normal(0, 0.4, ref.shape)
    expected = peak_signal_noise_ratio(ref, pred, data_range=10.0)
    assert psnr(pred, ref, max_value=10.0) == pytest.approx(expected, rel=1e-12)


def test_psnr_inside_a_mask_uses_only_masked_voxels():
    ref = np.zeros((2, 4, 4))
    pred = np.zeros_like(ref)
    pred[0, 0, 0] = 5.0  # outside the mask: must not count
    pred[1, 1, 1] = 1.0
    mask = np.zeros(ref.shape, bool)
    mask[1] = True
    assert psnr(pred, ref, 10.0, mask) == pytest.approx(10 * math.log10(100 / (1.0 / 16)))
    assert psnr(ref, ref, 10.0) == float("inf")


def test_ssim_equals_scikit_image_slice_by_slice():
    ref = RNG.uniform(0, 6, (3, 40, 48))
    pred = np.clip(ref + RNG.normal(0, 0.5, ref.shape), 0, None)
    expected = np.mean(
        [
            structural_similarity(
                r,
                p,
                data_range=10.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for r, p in zip(ref, pred, strict=True)
        ]
    )
    # scikit-image crops a border of (window-1)/2 before averaging; compare on that interior.
    ours_full = ssim(pred, ref, data_range=10.0)
    mask = np.zeros(ref.shape, bool)
    mask[:, 5:-5, 5:-5] = True
    ours_interior = ssim(pred, ref, data_range=10.0, mask=mask)
    assert ours_interior == pytest.approx(expected, abs=2e-3)
    assert 0 < ours_full < 1


def test_ssim_of_identical_images_is_one():
    image = RNG.uniform(0, 5, (2, 16, 16))
    assert ssim(image, image, data_range=10.0) == pytest.approx(1.0)


def test_nmse_closed_form():
    ref = np.array([1.0, 2.0, 3.0])
    pred = np.array([1.0, 1.0, 4.0])
    assert nmse(pred, ref) == pytest.approx(2.0 / 14.0)
    with pytest.raises(ValueError, match="undefined"):
        nmse(pred, np.zeros(3))


def test_dice_hand_computed_and_empty_cases():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros_like(a)
    a[0, 0, :3] = True
    b[0, 0, 1:] = True
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


def brute_force_assd(pred: np.ndarray, gt: np.ndarray, spacing) -> float:
    """Surfaces by an explicit neighbour loop, distances by all pairs."""

    def surface_points(mask):
        points = []
        for idx in itertools.product(*(range(n) for n in mask.shape)):
            if not mask[idx]:
                continue
            for axis, step in itertools.product(range(3), (-1, 1)):
                neighbour = list(idx)
                neighbour[axis] += step
                if not 0 <= neighbour[axis] < mask.shape[axis] or not mask[tuple(neighbour)]:
                    points.append(idx)
                    break
        return np.array(points, float) * np.array(spacing)

    sp, sg = surface_points(pred), surface_points(gt)
    distances = np.linalg.norm(sp[:, None, :] - sg[None, :, :], axis=2)
    return 0.5 * (distances.min(axis=1).mean() + distances.min(axis=0).mean())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_assd_equals_brute_force_on_small_anisotropic_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (6, 9, 8)
    spacing = (2.5, 0.8, 1.3)
    pred = np.zeros(shape, bool)
    gt = np.zeros(shape, bool)
    pred[1:4, 2:7, 1:5] = True
    gt[2:5, 1:6, 3:7] = True
    pred ^= rng.random(shape) < 0.08
    gt ^= rng.random(shape) < 0.08
    assert assd(pred, gt, spacing) == pytest.approx(brute_force_assd(pred, gt, spacing), rel=1e-9)


def test_assd_of_a_shifted_slab_is_the_shift():
    # Slabs two slices thick (z in {2, 3} and {5, 6}): every voxel is on a surface. Points of
    # the near layers are 2 slices (4 mm) apart, of the far layers 3 slices (6 mm): mean 5 mm
    # in each direction.
    gt = np.zeros((10, 5, 5), bool)
    gt[2:4] = True
    pred = np.roll(gt, 3, axis=0)
    assert assd(pred, gt, (2.0, 1.0, 1.0)) == pytest.approx(5.0)


def test_assd_empty_cases_are_defined():
    empty = np.zeros((3, 3, 3), bool)
    full = np.ones_like(empty)
    assert assd(empty, empty, (1, 1, 1)) == 0.0
    assert math.isnan(assd(full, empty, (1, 1, 1)))
    assert math.isnan(assd(empty, full, (1, 1, 1)))


def test_region_scores_per_region_and_mean():
    gt = np.zeros((4, 6, 6), np.uint8)
    gt[:, :3, :3] = 1
    gt[:, 3:, 3:] = 2
    pred = gt.copy()
    pred[:, 3:, 3:] = 0  # region 2 missed entirely; region 3 absent from both
    scores = region_scores(pred, gt, (2.5, 1.0, 1.0), {"spine": 1, "ilium": 2, "lower": 3})
    assert scores["spine"] == {"dice": 1.0, "assd_mm": 0.0}
    assert scores["ilium"]["dice"] == 0.0 and math.isnan(scores["ilium"]["assd_mm"])
    assert scores["lower"] == {"dice": 1.0, "assd_mm": 0.0}
    assert scores["mean"]["dice"] == pytest.approx(2 / 3)
    assert scores["mean"]["assd_mm"] == 0.0
