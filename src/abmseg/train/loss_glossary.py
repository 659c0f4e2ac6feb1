"""Plain names for the loss terms in losses.csv and losses.png, and what each one measures.

The CSV keeps the short column names (stable for scripts); the plot's legends and the report's
glossary (workflow/report/losses.rst, kept equal by tests/test_loss_glossary.py) use these.
The method's terms follow Zhuo et al. (2025): CycleGAN (Zhu et al. 2017) for CT -> pseudo-PET,
the conditional diffusion refiner, and MP-FPSN for the ABM masks.
"""

from __future__ import annotations

from abmseg.regions import REGION_NAMES

# term -> (plain name, what it measures)
LOSS_TERMS: dict[str, tuple[str, str]] = {
    "total": ("total objective", "the sum the optimiser minimises in this stage (weighted terms)"),
    "seg_dice": ("segmentation Dice loss", "1 - soft Dice of the MP-FPSN masks vs the label"),
    "seg_ce": ("segmentation cross-entropy", "voxel-wise cross-entropy of the MP-FPSN masks"),
    "seg_total": ("segmentation loss", "MP-FPSN: Dice loss + cross-entropy"),
    "gan_pet": ("CT->PET generator, adversarial", "how well pseudo-PET fools the PET critic"),
    "gan_ct": ("PET->CT generator, adversarial", "how well pseudo-CT fools the CT critic"),
    "cycle_ct": ("cycle CT->PET->CT", "L1 between a CT and its round trip through both generators"),
    "cycle_pet": ("cycle PET->CT->PET", "L1 between a PET and its round trip"),
    "identity_pet": ("identity, PET generator", "L1 change when the CT->PET generator gets a PET"),
    "identity_ct": ("identity, CT generator", "L1 change when the PET->CT generator gets a CT"),
    "gen_total": ("generators, weighted sum", "adversarial + cycle (+ identity) terms"),
    "d_pet_real": ("PET critic on real PET", "critic loss on real PET slices (lower: recognised)"),
    "d_pet_fake": ("PET critic on pseudo-PET", "critic loss on generated PET (lower: caught)"),
    "d_ct_real": ("CT critic on real CT", "critic loss on real CT slices"),
    "d_ct_fake": ("CT critic on pseudo-CT", "critic loss on generated CT"),
    "d_pet": ("PET critic", "mean of its real and fake terms (about 0.69 = guessing)"),
    "d_ct": ("CT critic", "mean of its real and fake terms (about 0.69 = guessing)"),
    "disc_total": ("critics, sum", "PET critic + CT critic"),
    "diff_mse": ("diffusion noise MSE", "error of the predicted noise (the DDPM objective)"),
    "diff_perceptual": (
        "diffusion perceptual",
        "error of the denoised PET estimate in the features of the frozen PET->CT encoder",
    ),
    "diff_total": ("diffusion loss", "noise MSE + weighted perceptual term"),
    "diff_w_ct": (
        "diffusion CT-guidance weight",
        "mean adaptive weight of the CT branch of the cross-attention (not a loss)",
    ),
    # Validation (abmseg.train.validation): held-out training-side patients, after each epoch.
    "val_seg_total": (
        "validation segmentation loss",
        "the segmentation loss on the validation patients (rising while training's falls: "
        "overfitting)",
    ),
    "val_seg_dice": ("validation Dice loss", "1 - soft Dice on the validation patients"),
    "val_seg_ce": ("validation cross-entropy", "cross-entropy on the validation patients"),
    "val_synth_l1": (
        "validation sPET error",
        "mean absolute difference between the sPET MP-FPSN reads and the real PET",
    ),
    "val_diff_total": ("validation diffusion loss", "the diffusion loss on the validation PET"),
    **{
        f"val_dice_{region}": (
            f"validation Dice, {region.replace('_', ' ')}",
            "hard Dice of the predicted region per validation patient, averaged (not a loss: "
            "higher is better)",
        )
        for region in REGION_NAMES
    },
    "val_dice_mean": ("validation Dice, mean", "mean of the regions' validation Dice"),
}


def loss_label(term: str) -> str:
    """The plain name of a loss column; an unknown one as it is."""
    return LOSS_TERMS.get(term, (term, ""))[0]
