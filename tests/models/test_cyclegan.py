"""CycleGAN (docs/method.md, "CycleGAN"): structure, shapes, losses, image pool, gradients,
overfitting."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from abmseg.models.cyclegan import (
    CycleGAN,
    MultiScaleDiscriminator,
    ResidualBlock,
    ResnetGenerator,
    set_requires_grad,
)
from abmseg.models.cyclegan_losses import CycleGANLoss, adversarial_loss, cycle_loss
from abmseg.models.image_pool import ImagePool
from abmseg.models.presets import load_model_preset


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is faster than two and immune to CPU sharing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> dict:
    return load_model_preset("cyclegan", "tiny")


def _images(n: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ct = torch.rand(n, 1, size, size, generator=g) * 2 - 1
    pet = torch.rand(n, 1, size, size, generator=g) * 2 - 1
    return ct, pet


def test_presets_share_keys_and_paper_sizes():
    tiny = load_model_preset("cyclegan", "tiny")
    paper = load_model_preset("cyclegan", "paper")
    assert set(tiny) == set(paper) == {"generator", "discriminator", "loss"}
    for section in tiny:
        assert set(tiny[section]) == set(paper[section])
    assert paper["generator"]["base_channels"] == 64
    assert paper["generator"]["n_residual_blocks"] == 9
    assert paper["discriminator"] == {
        "in_channels": 1,
        "base_channels": 64,
        "n_layers": 3,
        "n_scales": 3,
    }
    assert paper["loss"]["lambda_cyc"] == 10.0
    assert paper["loss"]["lambda_identity"] == 0.0
    assert tiny["generator"]["n_residual_blocks"] == 9


def test_generator_shapes_and_range(tiny):
    torch.manual_seed(0)
    gen = ResnetGenerator.from_preset(tiny)
    for shape in [(2, 1, 64, 64), (1, 1, 32, 48)]:
        x = torch.rand(shape) * 2 - 1
        y = gen(x)
        assert y.shape == shape
        assert y.abs().max() <= 1.0
    with pytest.raises(ValueError, match="divisible by 4"):
        gen(torch.zeros(1, 1, 30, 32))


def test_discriminator_three_scales_shrinking(tiny):
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator.from_preset(tiny)
    logits = disc(torch.rand(2, 1, 64, 64) * 2 - 1)
    assert len(logits) == 3
    sizes = [t.shape[-1] for t in logits]
    assert all(t.shape[:2] == (2, 1) for t in logits)
    assert sizes[0] > sizes[1] > sizes[2] > 0
    print("patch logits per scale at 64x64:", [tuple(t.shape) for t in logits])


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_generator_structure(preset):
    gen = ResnetGenerator.from_preset(load_model_preset("cyclegan", preset))
    modules = list(gen.modules())
    assert sum(isinstance(m, ResidualBlock) for m in modules) == 9
    down = [m for m in modules if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(down) == 2
    assert all(m.kernel_size == (3, 3) for m in down)
    up = [m for m in modules if isinstance(m, nn.ConvTranspose2d)]
    assert len(up) == 2 and all(m.stride == (2, 2) for m in up)
    assert any(isinstance(m, nn.ReflectionPad2d) for m in modules)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in modules) == 1 + 2 + 2 * 9 + 2
    assert isinstance(modules[-1], nn.Tanh)


def test_discriminator_spectral_norm_everywhere_no_batchnorm(tiny):
    disc = MultiScaleDiscriminator.from_preset(tiny)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 * (3 + 2)
    assert all(parametrize.is_parametrized(m, "weight") for m in convs)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in disc.modules())
    strides = [m.stride[0] for m in disc.scales[0].modules() if isinstance(m, nn.Conv2d)]
    assert strides == [2, 2, 2, 1, 1]


def test_features_documented_entries(tiny):
    gen = ResnetGenerator.from_preset(tiny)
    base = tiny["generator"]["base_channels"]
    assert gen.feature_channels == [base, 2 * base, 4 * base, 4 * base]
    feats = gen.features(torch.zeros(2, 1, 32, 32))
    assert len(feats) == tiny["generator"]["n_downsampling"] + 2
    assert [f.shape[1] for f in feats] == gen.feature_channels
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 8]
    # As a frozen perceptual-loss network: no parameter grads, but gradients reach the input.
    gen.requires_grad_(False)
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    sum(f.square().mean() for f in gen.features(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _check_grads(modules: list[nn.Module]) -> None:
    for module in modules:
        for name, p in module.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_gradients_reach_every_parameter(tiny):
    torch.manual_seed(0)
    model = CycleGAN.from_preset(tiny)
    loss = CycleGANLoss(**{**tiny["loss"], "lambda_identity": 1.0})
    ct, pet = _images(size=32)
    images = model(ct, pet)
    loss.generator_objective(model, ct, pet, images)["total"].backward()
    _check_grads(model.generators())

    model.zero_grad(set_to_none=True)
    loss.discriminator_objective(model, ct, pet, images)["total"].backward()
    _check_grads(model.discriminators())
    # The fakes are detached: the discriminator step leaves the generators alone.
    assert all(p.grad is None for g in model.generators() for p in g.parameters())


def test_set_requires_grad_freezes(tiny):
    model = CycleGAN.from_preset(tiny)
    set_requires_grad(model.discriminators(), False)
    assert not any(p.requires_grad for d in model.discriminators() for p in d.parameters())
    set_requires_grad(model.d_pet, True)
    assert all(p.requires_grad for p in model.d_pet.parameters())


def test_adversarial_and_cycle_losses_by_hand():
    x = torch.tensor([[-2.0, -0.5], [0.0, 3.0]])
    y = torch.tensor([[1.0], [-1.5]])
    sig = torch.sigmoid
    assert torch.isclose(adversarial_loss(x, True, "log"), -torch.log(sig(x)).mean())
    assert torch.isclose(adversarial_loss(x, False, "log"), -torch.log(1 - sig(x)).mean())
    assert torch.isclose(adversarial_loss(x, True, "lsgan"), ((x - 1) ** 2).mean())
    assert torch.isclose(adversarial_loss(x, False, "lsgan"), (x**2).mean())
    # Averaged over scales, each scale averaged over its own patches.
    both = (-torch.log(sig(x)).mean() - torch.log(sig(y)).mean()) / 2
    assert torch.isclose(adversarial_loss([x, y], True, "log"), both)
    a, b = torch.tensor([0.0, 1.0, -1.0, 0.5]), torch.tensor([0.5, 1.0, 1.0, -0.5])
    assert torch.isclose(cycle_loss(a, b), torch.tensor((0.5 + 0 + 2 + 1) / 4))
    with pytest.raises(ValueError, match="mode"):
        adversarial_loss(x, True, "wasserstein")


def test_generator_objective_weights(tiny):
    torch.manual_seed(0)
    model = CycleGAN.from_preset(tiny).eval()  # eval: spectral norm stops its power iteration
    ct, pet = _images(size=32)
    with torch.no_grad():
        images = model(ct, pet)
        t10 = CycleGANLoss(lambda_cyc=10.0, pool_size=0).generator_objective(model, ct, pet, images)
        t1 = CycleGANLoss(lambda_cyc=1.0, pool_size=0).generator_objective(model, ct, pet, images)
        idt = CycleGANLoss(lambda_identity=2.0, pool_size=0).generator_objective(
            model, ct, pet, images
        )
    cyc = t10["cycle_ct"] + t10["cycle_pet"]
    assert torch.isclose(t10["cycle_ct"], (images["rec_ct"] - ct).abs().mean())
    assert torch.isclose(t10["total"], t10["gan_pet"] + t10["gan_ct"] + 10 * cyc)
    assert torch.isclose(t10["total"] - t1["total"], 9 * cyc)
    assert t10["identity_pet"] == 0 and t10["identity_ct"] == 0
    assert idt["identity_pet"] > 0 and idt["identity_ct"] > 0
    extra = 2.0 * (idt["identity_pet"] + idt["identity_ct"])
    assert torch.isclose(idt["total"], t10["total"] + extra)


def test_discriminator_objective_by_hand(tiny):
    torch.manual_seed(0)
    model = CycleGAN.from_preset(tiny).eval()
    ct, pet = _images(size=32)
    loss = CycleGANLoss(mode="lsgan", pool_size=0)
    with torch.no_grad():
        images = model(ct, pet)
        terms = loss.discriminator_objective(model, ct, pet, images)
        real = torch.stack([((t - 1) ** 2).mean() for t in model.d_pet(pet)]).mean()
        fake = torch.stack([(t**2).mean() for t in model.d_pet(images["fake_pet"])]).mean()
    assert torch.isclose(terms["d_pet"], 0.5 * (real + fake))
    assert torch.isclose(terms["total"], terms["d_pet"] + terms["d_ct"])


def test_image_pool_pass_through_and_size():
    x = torch.randn(3, 1, 4, 4)
    assert ImagePool(0).query(x) is x
    pool = ImagePool(4, seed=1)
    for n in [1, 3, 5, 2, 4, 1]:
        out = pool.query(torch.randn(n, 1, 4, 4))
        assert out.shape == (n, 1, 4, 4)
        assert len(pool) <= 4
    with pytest.raises(ValueError):
        ImagePool(-1)


def test_image_pool_deterministic_and_returns_history():
    batches = [torch.full((2, 1, 2, 2), float(i)) for i in range(30)]

    def run(pool: ImagePool) -> list[torch.Tensor]:
        return [pool.query(b) for b in batches]

    a = run(ImagePool(5, seed=7))
    b = run(ImagePool(5, generator=torch.Generator().manual_seed(7)))
    c = run(ImagePool(5, seed=8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    # Some outputs are older images, never newer ones.
    values = [(i, out[k, 0, 0, 0].item()) for i, out in enumerate(a) for k in range(2)]
    assert all(v <= i for i, v in values)
    assert any(v < i for i, v in values)


def test_image_pool_state_round_trip():
    pool = ImagePool(3, seed=2)
    for i in range(4):
        pool.query(torch.full((2, 1, 2, 2), float(i)))
    state = pool.state_dict()
    resumed = ImagePool(3, seed=99)
    resumed.load_state_dict(state)
    for i in range(4, 10):
        batch = torch.full((2, 1, 2, 2), float(i))
        assert torch.equal(pool.query(batch), resumed.query(batch))


def _smooth(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, size // 8, size // 8, generator=g) * 2 - 1
    return nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


def test_generator_overfits_one_batch(tiny):
    torch.manual_seed(0)
    gen = ResnetGenerator.from_preset(tiny)
    ct = _smooth(2, 32, seed=1)
    pet = (0.8 * torch.tanh(2 * ct + _smooth(2, 32, seed=2))).clamp(-0.9, 0.9)
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3)
    losses = []
    for _ in range(200):
        loss = nn.functional.l1_loss(gen(ct), pet)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print("generator L1 every 25 steps:", [round(v, 4) for v in losses[::25]], losses[-1])
    assert min(losses[-5:]) < losses[0] / 10


def test_discriminator_overfits_real_vs_fake(tiny):
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator.from_preset(tiny)
    real = _smooth(2, 32, seed=3)
    fake = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        loss = 0.5 * (adversarial_loss(disc(real), True) + adversarial_loss(disc(fake), False))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print("discriminator BCE every 25 steps:", [round(v, 4) for v in losses[::25]], losses[-1])
    assert math.isclose(losses[0], math.log(2), rel_tol=0.05)
    assert min(losses[-5:]) < losses[0] / 10
