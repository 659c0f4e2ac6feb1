"""Validation after every epoch: the scores equal an independent recomputation from the saved
networks, Dice follows the hand-computed definition, and validating changes no trained weight."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_train import assert_identical, make_cohort, settings
from torch.nn.functional import one_hot

from abmseg.models.seg_losses import SegmentationLoss
from abmseg.models.trained_model import read_trained_model
from abmseg.train.engine import TrainJob, run_training
from abmseg.train.networks import Networks
from abmseg.train.progress import plot_losses, read_losses_csv
from abmseg.train.slices import SliceDataset, SliceIndex
from abmseg.train.validation import dice_columns, overlap_counts, patient_mean_dice

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}


def test_overlap_counts_and_patient_mean_dice_by_hand():
    # Two one-pixel-row "slices" of 4 pixels, classes 0..2: logits pick the arg-max below.
    predicted = torch.tensor([[1, 1, 2, 0], [2, 2, 0, 0]])
    truth = torch.tensor([[1, 0, 2, 2], [0, 0, 0, 0]])
    logits = one_hot(predicted, 3).permute(0, 2, 1)[:, :, None, :].float()  # (N, C, 1, W)
    counts = overlap_counts(logits, truth[:, None, :], classes=3)
    # slice 0: class 1 I=1 P=2 T=1; class 2 I=1 P=1 T=2. slice 1: class 2 P=2 T=0
    assert counts[0, 1].tolist() == [1, 2, 1]
    assert counts[0, 2].tolist() == [1, 1, 2]
    assert counts[1, 2].tolist() == [0, 2, 0]
    # patient A = slice 0, patient B = slice 1; class 1 absent in B entirely: skipped
    per_patient = torch.stack([counts[0], counts[1]])
    dice = patient_mean_dice(per_patient)
    assert dice[0] == pytest.approx(2 * 1 / (2 + 1))
    assert dice[1] == pytest.approx((2 * 1 / (1 + 2) + 0.0) / 2)  # B predicts 2 where none is
    empty = torch.zeros(1, 3, 3, dtype=torch.float64)
    assert all(math.isnan(v) for v in patient_mean_dice(empty))


def test_dice_columns_follow_the_label_values():
    swapped = {"lumbosacral_spine": 3, "ilium": 1, "lower_pelvis": 2}
    assert dice_columns(swapped) == [
        "val_dice_ilium", "val_dice_lower_pelvis", "val_dice_lumbosacral_spine", "val_dice_mean",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("validation_cohort"), n=4)


def _reference_scores(model_path, validation, config) -> dict[str, float]:
    """What the last epoch's validation must be, recomputed here from model.pt with numpy Dice:
    ct_only has no random draw, so the numbers must agree to float rounding."""
    model = read_trained_model(model_path)
    nets = Networks.build(model["presets"])
    nets.load_state(model["state"])
    nets.train(False)
    dataset = SliceDataset(SliceIndex(validation, config.body_threshold), config.image_size)
    loss = SegmentationLoss()
    totals, slices = {"total": 0.0, "dice": 0.0, "ce": 0.0}, 0
    overlap: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(dataset), config.batch_size):
            items = [dataset[i] for i in range(start, min(start + config.batch_size, len(dataset)))]
            ct = torch.stack([torch.as_tensor(item["ct"]) for item in items])
            label = torch.stack([torch.as_tensor(item["label"]) for item in items])
            logits = nets.mpfpsn(ct, None)
            for key, value in loss(logits, label).items():
                totals[key] += float(value) * len(items)
            slices += len(items)
            predicted = logits.argmax(1).numpy()
            for item, pred in zip(items, predicted, strict=True):
                truth = np.asarray(item["label"])
                sums = overlap.setdefault(item["patient"], np.zeros((4, 3)))
                for c in range(1, 4):
                    sums[c] += [((pred == c) & (truth == c)).sum(), (pred == c).sum(),
                                (truth == c).sum()]  # fmt: skip
    scores = {f"val_seg_{k}": v / slices for k, v in totals.items()}
    for name, c in REGIONS.items():
        dice = [2 * s[c, 0] / (s[c, 1] + s[c, 2]) for s in overlap.values() if s[c, 1] + s[c, 2]]
        scores[f"val_dice_{name}"] = float(np.mean(dice)) if dice else math.nan
    return scores


def test_validation_scores_equal_an_independent_recomputation(cohort, tmp_path):
    fit, validation = cohort[:2], cohort[2:]
    config = settings(epochs_stage1=2)
    job = TrainJob(1, "ct_only", config, fit, tmp_path / "run", validation=validation)
    model = run_training(job)
    rows = read_losses_csv(tmp_path / "run" / "losses.csv")
    assert len(rows) == 2
    last = {k: float(v) for k, v in rows[-1].items() if k.startswith("val_")}
    expected = _reference_scores(model, validation, config)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(last[key]), key
        else:
            assert last[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    regions = [last[f"val_dice_{name}"] for name in REGIONS]
    assert last["val_dice_mean"] == pytest.approx(np.nanmean(regions), rel=1e-5)  # 6 digits
    saved = read_trained_model(model)
    assert saved["train_patients"] == ["P0", "P1"]
    assert saved["validation_patients"] == ["P2", "P3"]


def test_validating_changes_no_trained_weight(cohort, tmp_path):
    """Validation runs in eval mode on its own random stream: the full variant (CycleGAN pools,
    diffusion draws in stage 2) ends bit-identical with and without it."""
    fit, validation = cohort[:2], cohort[2:]
    config = settings(epochs_stage1=2, epochs_stage2=1)
    models = {}
    for name, held_out in (("plain", ()), ("validated", validation)):
        stage1 = run_training(
            TrainJob(1, "full", config, fit, tmp_path / name / "s1", validation=held_out)
        )
        models[name] = run_training(
            TrainJob(
                2, "full", config, fit, tmp_path / name / "s2", init=stage1, validation=held_out
            )  # fmt: skip
        )
    assert_identical(models["plain"], models["validated"])
    rows = read_losses_csv(tmp_path / "validated" / "s2" / "losses.csv")
    assert {"val_seg_total", "val_synth_l1", "val_diff_total", "val_dice_mean"} <= set(rows[0])
    assert "val_seg_total" not in read_losses_csv(tmp_path / "plain" / "s2" / "losses.csv")[0]


def test_a_patient_cannot_be_fitted_and_validated(cohort, tmp_path):
    with pytest.raises(ValueError, match="both fitted on and validated on"):
        TrainJob(1, "ct_only", settings(), cohort[:2], tmp_path, validation=cohort[1:3])


def test_the_curve_has_a_validation_dice_panel(tmp_path):
    rows = [
        {"epoch": e, "global_epoch": e, "stage": 1, "lr": 1e-3, "total": 2.0 - e / 10,
         "seg_total": 1.5 - e / 10, "val_seg_total": 1.6, "val_dice_ilium": 0.1 * e,
         "val_dice_mean": 0.1 * e, "seconds": 1.0}
        for e in range(3)
    ]  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = {}
    original = plt.Figure.savefig

    def capture(fig, *args, **kwargs):
        seen.update({ax.get_title(): ax for ax in fig.axes})
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = capture
    try:
        plot_losses(tmp_path / "losses.png", rows)
    finally:
        plt.Figure.savefig = original
    assert (tmp_path / "losses.png").stat().st_size > 0
    dice = seen["validation Dice"]
    assert dice.get_yscale() == "linear" and dice.get_ylim() == (0.0, 1.0)
    segmentation = {line.get_label(): line for line in seen["segmentation"].get_lines()}
    assert segmentation["validation segmentation loss"].get_linestyle() == "--"
    assert segmentation["segmentation loss"].get_linestyle() == "-"
    same = segmentation["validation segmentation loss"].get_color()
    assert same == segmentation["segmentation loss"].get_color()  # one colour per term
