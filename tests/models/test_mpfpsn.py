"""MP-FPSN (tiny preset, CPU): shapes, fusion structure, gradients, Dice + CE, overfitting."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)

from abmseg.models.mpfpsn import MPFPSN, PyramidFusion
from abmseg.models.presets import load_model_preset
from abmseg.models.seg_losses import SegmentationLoss, dice_loss, soft_dice_per_class

VARIANTS = {
    "add": {},
    "concat": {"fusion": "concat"},
    "ct-only": {"modalities": "ct"},
    "input": {"fusion": "input"},
}


def tiny(**overrides) -> MPFPSN:
    torch.manual_seed(0)
    return MPFPSN.from_preset(load_model_preset("mpfpsn", "tiny"), **overrides)


def images(n: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_output_shape_and_finite(variant):
    model = tiny(**VARIANTS[variant])
    ct, spet = images(2, 48)
    logits = model(ct, spet)
    assert logits.shape == (2, 4, 48, 48)
    assert torch.isfinite(logits).all()


def test_ct_only_has_one_encoder_and_ignores_spet():
    model = tiny(modalities="ct").eval()
    assert list(model.encoders) == ["ct"]
    ct, spet = images()
    assert torch.equal(model(ct), model(ct, spet))


def test_bad_inputs_are_refused():
    model = tiny()
    ct, spet = images(1, 40)
    with pytest.raises(ValueError, match="divisible by 16"):
        model(ct, spet)
    with pytest.raises(ValueError, match="pass spet"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="fusion"):
        tiny(fusion="max")


def test_features_at_four_scales_and_f16_is_the_sum():
    model = tiny().eval()
    preset = load_model_preset("mpfpsn", "tiny")
    ct, spet = images(2, 64)
    feats = model.forward_features(ct, spet)
    for modality in ("ct", "spet"):
        sizes = [tuple(x.shape[-2:]) for x in feats.aligned[modality]]
        assert sizes == [(32, 32), (16, 16), (8, 8), (4, 4)]
        widths = [x.shape[1] for x in feats.aligned[modality]]
        assert widths == preset["fused_widths"]
        assert [x.shape[1] for x in feats.encoded[modality]] == preset["encoder_widths"]
    assert [tuple(f.shape[-2:]) for f in feats.fused] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert torch.equal(feats.fused[3], feats.aligned["ct"][3] + feats.aligned["spet"][3])
    # forward() and forward_features() run the same graph.
    assert torch.allclose(model.decoder(feats.fused), model(ct, spet))


def test_alignment_is_one_1x1_conv_per_scale_and_modality():
    model = tiny()
    for convs in model.pyramid.align:
        assert len(convs) == 4
        assert all(c.kernel_size == (1, 1) for c in convs)
    assert len(model.pyramid.align) == 2


def known_pyramid(widths, n=1, seed=1) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    sizes = (16, 8, 4, 2)
    return [
        [torch.randn(n, w, s, s, generator=g) for w, s in zip(widths, sizes, strict=True)]
        for _ in (0, 1)
    ]


def test_residual_connection_with_zeroed_convs_fused_equals_the_sum():
    widths = (4, 6, 6, 8)  # 1/2 and 1/4 widths differ from their coarser scale: lateral 1x1 used
    fusion = PyramidFusion(widths, widths, n_modalities=2, fusion="add", norm="none").eval()
    with torch.no_grad():
        for step in fusion.steps:
            step.conv[0].weight.zero_()
            step.conv[0].bias.zero_()
    ct, spet = known_pyramid(widths)
    fused = fusion.fuse([ct, spet])
    assert torch.equal(fused[3], ct[3] + spet[3])
    for k in (2, 1, 0):  # F8, F4, F2 from F16, F8, F4
        step = fusion.steps[k]
        up = F.interpolate(fused[k + 1], size=ct[k].shape[-2:], mode="bilinear")
        expected = step.lateral(up) + ct[k] + spet[k]
        assert torch.allclose(fused[k], expected, atol=1e-6)
    assert isinstance(fusion.steps[2].lateral, torch.nn.Conv2d)  # 8 -> 6 channels
    assert isinstance(fusion.steps[1].lateral, torch.nn.Identity)  # 6 -> 6


def test_fusion_step_is_conv_of_sum_plus_sum():
    widths = (4, 4, 4, 4)
    fusion = PyramidFusion(widths, widths, fusion="add", norm="none").eval()
    ct, spet = known_pyramid(widths)
    fused = fusion.fuse([ct, spet])
    step = fusion.steps[0]
    s = F.interpolate(fused[1], size=(16, 16), mode="bilinear") + ct[0] + spet[0]
    assert torch.allclose(fused[0], step.conv(s) + s, atol=1e-6)


def test_concat_has_more_parameters_and_wider_fusion():
    add, concat = tiny(), tiny(fusion="concat")
    n_add, n_concat = n_params(add), n_params(concat)
    print(f"tiny MP-FPSN parameters: add {n_add}, concat {n_concat}")
    assert n_concat > n_add
    ct, spet = images()
    feats = concat.forward_features(ct, spet)
    top = load_model_preset("mpfpsn", "tiny")["fused_widths"][3]
    assert feats.fused[3].shape[1] == 2 * top
    assert torch.equal(
        feats.fused[3], torch.cat([feats.aligned["ct"][3], feats.aligned["spet"][3]], 1)
    )


def test_input_concatenation_is_the_ct_only_network_with_a_two_channel_first_conv():
    """fusion "input": one encoder reading [CT, sPET] as channels; the rest is the CT-only
    network, so the parameters differ by exactly the first conv's weights for the extra channel."""
    early, ct_only = tiny(fusion="input"), tiny(modalities="ct")
    assert list(early.encoders) == ["ct_spet"]
    first = next(m for m in early.encoders["ct_spet"].modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 2
    assert n_params(early) - n_params(ct_only) == first.weight[:, 1:].numel()
    ct, spet = images()
    feats = early.forward_features(ct, spet)
    stacked = early.encoders["ct_spet"](torch.cat([ct, spet], 1))
    assert all(torch.equal(a, b) for a, b in zip(feats.encoded["ct_spet"], stacked, strict=True))
    assert not torch.equal(early.eval()(ct, spet), early(ct, -spet))  # the sPET is read
    with pytest.raises(ValueError, match=r"needs modalities 'ct\+spet'"):
        tiny(fusion="input", modalities="ct")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradients_reach_every_parameter(variant):
    model = tiny(**VARIANTS[variant])
    ct, spet = images()
    target = torch.randint(0, 4, (2, 32, 32))
    SegmentationLoss()(model(ct, spet), target)["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing
    prefixes = {n.split(".")[0] + "." + n.split(".")[1] for n, _ in model.named_parameters()}
    expected_encoders = {"ct-only": {"encoders.ct"}, "input": {"encoders.ct_spet"}}.get(
        variant, {"encoders.ct", "encoders.spet"}
    )
    assert expected_encoders <= prefixes
    assert any(n.startswith("decoder.") for n, _ in model.named_parameters())


# ---- loss ---------------------------------------------------------------------------------------


def test_dice_is_zero_for_perfect_logits():
    target = torch.tensor([[[0, 1], [2, 3]], [[3, 3], [0, 1]]])
    logits = 50.0 * F.one_hot(target, 4).movedim(-1, 1).float()
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(logits, target, include_background=True).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_matches_hand_computation_two_classes_four_pixels():
    # Probabilities of class 1 at 4 pixels (class 0 gets 1 - p); target labels.
    p1 = torch.tensor([0.9, 0.2, 0.6, 0.3])
    labels = torch.tensor([1, 0, 1, 0])
    logits = torch.stack([torch.zeros(4), torch.log(p1 / (1 - p1))]).reshape(1, 2, 2, 2)
    target = labels.reshape(1, 2, 2)
    eps = 1e-5
    # class 1: sum p g = 0.9 + 0.6 = 1.5; sum p^2 = .81 + .04 + .36 + .09 = 1.30; sum g^2 = 2
    dice1 = 1 - (2 * 1.5 + eps) / (1.30 + 2 + eps)
    # class 0: p = .1 .8 .4 .7, g = 0 1 0 1: sum p g = 1.5; sum p^2 = .01+.64+.16+.49 = 1.30
    dice0 = 1 - (2 * 1.5 + eps) / (1.30 + 2 + eps)
    assert dice_loss(logits, target, eps=eps).item() == pytest.approx(dice1, abs=1e-6)
    both = dice_loss(logits, target, eps=eps, include_background=True).item()
    assert both == pytest.approx((dice0 + dice1) / 2, abs=1e-6)
    # an asymmetric case where the two classes differ: class 1 only at pixel 0
    target2 = torch.tensor([1, 0, 0, 0]).reshape(1, 2, 2)
    d1 = 1 - (2 * 0.9 + eps) / (1.30 + 1 + eps)
    d0 = 1 - (2 * (0.8 + 0.4 + 0.7) + eps) / (1.30 + 3 + eps)
    per_class = [d0, d1]
    got = dice_loss(logits, target2, eps=eps, include_background=True).item()
    assert got == pytest.approx(sum(per_class) / 2, abs=1e-6)


def test_empty_class_is_defined_by_eps():
    onehot = torch.zeros(1, 3, 2, 2)
    onehot[:, 0] = 1.0  # classes 1 and 2 absent from the target
    probs = onehot.clone()
    probs[:, 0, 0, 0], probs[:, 2, 0, 0] = 0.5, 0.5  # class 2 predicted at one pixel
    per_class = soft_dice_per_class(probs, onehot, eps=1e-5)
    assert per_class[1].item() == 0.0  # empty in both: (0 + eps) / (0 + eps)
    assert per_class[2].item() == pytest.approx(1 - 1e-5 / (0.25 + 1e-5))  # false positive: ~1


def test_segmentation_loss_is_dice_plus_cross_entropy():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    terms = SegmentationLoss()(logits, target)
    assert set(terms) == {"dice", "ce", "total"}
    assert torch.equal(terms["ce"], F.cross_entropy(logits, target))
    assert torch.equal(terms["dice"], dice_loss(logits, target))
    assert torch.allclose(terms["total"], terms["dice"] + terms["ce"])
    weighted = SegmentationLoss(dice_weight=0.5, ce_weight=2.0)(logits, target)
    assert torch.allclose(weighted["total"], 0.5 * terms["dice"] + 2.0 * terms["ce"])


# ---- overfitting --------------------------------------------------------------------------------


def block_labels(n: int, size: int, block: int, seed: int) -> torch.Tensor:
    """A smooth random 4-class label map: random classes on a coarse grid, upsampled."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 4, (n, size // block, size // block), generator=g)
    return coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = tiny()
    target = block_labels(2, 32, 8, seed=5)
    ct, spet = images(2, 32, seed=6)
    loss_fn = SegmentationLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    start = time.perf_counter()
    for _ in range(200):
        optimiser.zero_grad()
        total = loss_fn(model(ct, spet), target)["total"]
        total.backward()
        optimiser.step()
        losses.append(total.item())
    elapsed = time.perf_counter() - start
    print(f"overfit: {losses[0]:.3f} -> {losses[-1]:.4f} in {len(losses)} steps, {elapsed:.1f} s")
    print("every 25 steps:", [round(v, 4) for v in losses[::25]])
    assert losses[-1] < losses[0] / 10
