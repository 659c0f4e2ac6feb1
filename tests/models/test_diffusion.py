"""Conditional diffusion refiner (docs/method.md, "Stage 2: conditional diffusion refiner"):
schedule, denoiser, weights, samplers."""

from __future__ import annotations

import logging
import math
import time

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)

from abmseg.models.diffusion import (
    STRATEGIES,
    ConditionalDiffusion,
    CTConditionedUNet,
    CTWeighting,
    NoiseSchedule,
    VGG16Features,
    ct_weights,
    ddim_step,
    ddim_timesteps,
    frozen_feature_extractor,
    perceptual_loss,
    step_from_timestep,
)
from abmseg.models.presets import load_model_preset

SIZE = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is faster than two and immune to CPU sharing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**overrides) -> ConditionalDiffusion:
    """The tiny preset with some sections' keys overridden, e.g. ``schedule={"T": 20}``."""
    preset = load_model_preset("diffusion", "tiny")
    for section, values in overrides.items():
        preset[section] = {**preset[section], **values}
    torch.manual_seed(0)
    return ConditionalDiffusion(**preset)


def images(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A (PET, CT) pair in [-1, 1] with shared structure, so CT carries information on PET."""
    g = torch.Generator().manual_seed(seed)
    ct = torch.rand(batch, 1, SIZE, SIZE, generator=g) * 2 - 1
    pet = (F.avg_pool2d(ct, 3, stride=1, padding=1) * 0.8).clamp(-1, 1)
    return pet, ct


def toy_features(x: torch.Tensor) -> list[torch.Tensor]:
    """Two 'layers': the image itself and a 3-channel half-resolution map."""
    pooled = F.avg_pool2d(x, 2)
    return [x, torch.cat([pooled, 2 * pooled, pooled.pow(2)], dim=1)]


# --- presets and shapes ---------------------------------------------------------------------


def test_presets_build_and_report_sizes():
    for name in ("tiny", "paper"):
        model = ConditionalDiffusion.from_preset(name)
        count = sum(p.numel() for p in model.denoiser.parameters())
        print(f"{name}: {count} denoiser parameters")
        assert count > 0
    assert sum(p.numel() for p in tiny().parameters()) < 500_000


@pytest.mark.parametrize("ct_skips", [False, True])
def test_denoiser_output_has_input_shape(ct_skips):
    torch.manual_seed(0)
    net = CTConditionedUNet(
        base_channels=8, channel_mults=(1, 2, 4), num_res_blocks=1, ct_blocks=1,
        attention_heads=2, norm_groups=8, ct_skips=ct_skips,
    )  # fmt: skip
    pet, ct = images(3)
    t = torch.tensor([0, 500, 999])
    out = net(pet, t, ct, w_ct=torch.tensor([0.2, 0.5, 0.9]))
    assert out.shape == pet.shape
    assert torch.isfinite(out).all()
    # CT encoded once and reused gives the same prediction as passing the CT itself.
    again = net(pet, t, ct_features=net.encode_ct(ct), w_ct=torch.tensor([0.2, 0.5, 0.9]))
    torch.testing.assert_close(out, again)
    with pytest.raises(ValueError, match="multiple"):
        net(pet[..., :30, :30], t, ct[..., :30, :30])


def test_refine_output_shape_and_finite():
    model = tiny(schedule={"T": 20})
    pet, ct = images()
    for sampler in ("ddim", "ddpm"):
        out = model.refine(
            pet, ct, sampler=sampler, steps=5, generator=torch.Generator().manual_seed(1)
        )
        assert out.shape == pet.shape
        assert torch.isfinite(out).all()
        assert out.abs().max() <= 1.0 + 1e-5  # x0 clipped at the last step
    partial = model.refine(
        pet, ct, steps=4, start_step=8, generator=torch.Generator().manual_seed(1)
    )
    assert partial.shape == pet.shape


# --- gradients and training loss ------------------------------------------------------------


def test_gradients_reach_every_denoiser_parameter():
    model = tiny()
    pet, ct = images()
    terms = model.training_loss(
        pet, ct, feature_fn=toy_features, generator=torch.Generator().manual_seed(0)
    )
    assert set(terms) >= {"mse", "perceptual", "total"}
    assert terms["perceptual"] > 0
    torch.testing.assert_close(terms["total"], terms["mse"] + 0.1 * terms["perceptual"])
    terms["total"].backward()
    for name, param in model.denoiser.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    for prefix in ("cross.pet_queries_ct", "cross.ct_queries_pet", "cross.fuse", "ct_encoder"):
        grads = [p.grad for n, p in model.denoiser.named_parameters() if n.startswith(prefix)]
        assert grads and all(g.abs().sum() > 0 for g in grads), prefix


def test_missing_feature_network_zeroes_perceptual_with_warning(caplog):
    model = tiny()
    pet, ct = images()
    with caplog.at_level(logging.WARNING):
        terms = model.training_loss(pet, ct, generator=torch.Generator().manual_seed(0))
    assert terms["perceptual"] == 0
    torch.testing.assert_close(terms["total"], terms["mse"])
    assert "perceptual weight 0" in caplog.text


def test_cyclegan_encoder_as_frozen_feature_network():
    cyclegan = pytest.importorskip("abmseg.models.cyclegan")
    generator = cyclegan.ResnetGenerator(base_channels=4, n_residual_blocks=1)
    model = tiny()
    model.set_feature_network(generator)
    pet, ct = images()
    terms = model.training_loss(pet, ct, generator=torch.Generator().manual_seed(0))
    assert terms["perceptual"] > 0
    terms["total"].backward()
    # The snapshot is frozen; the generator being trained is untouched.
    assert all(p.requires_grad and p.grad is None for p in generator.parameters())
    assert generator.training


class TwoLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.conv(x)
        return [h, F.avg_pool2d(h, 2)]


def test_frozen_feature_extractor_is_a_frozen_copy_passing_input_gradients():
    net = TwoLayer()
    extract = frozen_feature_extractor(net)
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    feats = extract(x)
    assert len(feats) == 2
    sum(f.sum() for f in feats).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert net.conv.weight.requires_grad and net.conv.weight.grad is None
    frozen = extract.__self__
    assert frozen is not net and not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())


# --- forward process ------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "T", "checkpoints"), [
    ("linear", 1000, (0, 9, 99, 499, 999)),
    ("cosine", 100, (0, 24, 49, 99)),
])  # fmt: skip
def test_closed_form_matches_iterated_forward_process(kind, T, checkpoints):  # noqa: N803
    schedule = NoiseSchedule(T=T, kind=kind)
    n, x0 = 200_000, 0.7
    g = torch.Generator().manual_seed(0)
    x = torch.full((n,), x0, dtype=torch.float64)
    for i in range(max(checkpoints) + 1):
        beta = schedule.betas[i]
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
        if i in checkpoints:
            ab = schedule.alpha_bar[i]
            mean, var = ab.sqrt() * x0, 1 - ab
            # 5 standard errors of the sample mean and of the sample variance (Gaussian).
            assert abs(x.mean() - mean) < 5 * (var / n).sqrt(), (i, x.mean(), mean)
            assert abs(x.var() - var) < 5 * var * math.sqrt(2 / n), (i, x.var(), var)
            # ... and the closed form itself draws from that distribution.
            t = torch.tensor([i])
            closed = schedule.q_sample(
                torch.full((n,), x0, dtype=torch.float64),
                t,
                torch.randn(n, generator=g, dtype=torch.float64),
            )
            assert abs(closed.mean() - mean) < 5 * (var / n).sqrt()


def test_schedule_tables_and_inverses():
    schedule = NoiseSchedule(T=1000)
    assert schedule.alpha_bar.dtype == torch.float64
    assert schedule.alpha_bar[-1] < 1e-4  # full T noises the pseudo-PET away
    torch.testing.assert_close(
        schedule.betas[[0, -1]], torch.tensor([1e-4, 0.02], dtype=torch.float64)
    )
    short = NoiseSchedule(T=100)  # betas scaled by 1000 / T: the chain still ends near pure noise
    assert short.alpha_bar[-1] < 1e-3
    x0, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    xt = schedule.q_sample(x0, t, eps)
    assert xt.dtype == torch.float32
    torch.testing.assert_close(schedule.predict_x0(xt, t, eps), x0, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(schedule.predict_eps(xt, t, x0), eps, atol=1e-4, rtol=1e-4)


# --- samplers ----------------------------------------------------------------------------------


def test_ddim_with_all_steps_and_eta_one_is_the_ddpm_posterior():
    T = 50  # noqa: N806
    schedule = NoiseSchedule(T=T)
    assert ddim_timesteps(T, T) == list(range(T - 1, -1, -1))
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    x0 = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    for step in (1, 2, 10, 25, 49):
        t = torch.full((3,), step)
        eps = schedule.predict_eps(xt, t, x0)
        mean, std = ddim_step(schedule, xt, x0, eps, step, step - 1, eta=1.0)
        post_mean, post_var = schedule.q_posterior(x0, xt, t)
        torch.testing.assert_close(mean, post_mean, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(std, post_var.sqrt().expand_as(std), atol=1e-12, rtol=1e-10)


def test_ddim_all_steps_eta_one_reproduces_ddpm_chain():
    model = tiny(schedule={"T": 12})
    pet, ct = images()
    ddpm = model.refine(pet, ct, sampler="ddpm", generator=torch.Generator().manual_seed(5))
    ddim = model.refine(
        pet, ct, sampler="ddim", steps=12, eta=1.0, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("sampler", "eta"), [("ddim", 0.0), ("ddim", 0.5), ("ddpm", None)])
def test_sampling_is_deterministic_given_the_seed(sampler, eta):
    model = tiny(schedule={"T": 20})
    pet, ct = images()

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.refine(pet, ct, sampler=sampler, steps=6, eta=eta, generator=g)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_ddim_timesteps_trailing_grid():
    assert ddim_timesteps(1000, 50)[:3] == [999, 979, 959]
    assert ddim_timesteps(1000, 50)[-1] == 19
    assert ddim_timesteps(300, 3) == [299, 199, 99]
    with pytest.raises(ValueError):
        ddim_timesteps(10, 11)


# --- adaptive CT weight (Table 4) ------------------------------------------------------------


def test_step_is_reverse_index_from_start_of_chain():
    steps = step_from_timestep(torch.tensor([999, 979, 0]), T=1000, step_count=50)
    torch.testing.assert_close(steps, torch.tensor([0.0, 1.0, 49.95], dtype=torch.float64))
    assert step_from_timestep(torch.tensor([999, 0]), 1000, 1000).tolist() == [0.0, 999.0]


def _w(strategy: str, step: float, **kw) -> tuple[float, float]:
    w_ct, w_prev = ct_weights(strategy, step, **kw)
    return float(w_ct), float(w_prev)


@pytest.mark.parametrize("w0", [0.3, 0.5, 0.7])
def test_fixed_weights(w0):
    for step in (0, 7, 49):
        assert _w("fixed", step, w0=w0) == pytest.approx((w0, 1 - w0))


def test_linear_cosine_exponential_weights():
    for step, expected in ((0, 1.0), (10, 0.8), (25, 0.5), (40, 0.2)):
        assert _w("linear", step, step_count=50) == pytest.approx((expected, 1 - expected))
    for step in (0, 12.5, 25, 37.5):
        expected = 0.5 * (1 + math.cos(math.pi * step / 50))
        assert _w("cosine", step, step_count=50) == pytest.approx((expected, 1 - expected))
    assert _w("cosine", 12.5, step_count=50)[0] == pytest.approx(0.8535533905932737)
    for step in (0, 1, 10, 30):
        expected = 0.8 * math.exp(-0.1 * step)
        assert _w("exponential", step, w0=0.8, lam=0.1) == pytest.approx((expected, 1 - expected))
    assert _w("exponential", 10, w0=0.8, lam=0.1)[0] == pytest.approx(0.29430355293715387)


def test_exponential_error_feedback_weights():
    kw = {"w0": 0.8, "lam": 0.1, "beta": 1.0}
    base = 0.8 * math.exp(-0.1 * 10)
    # no error known -> plain exponential; alpha = 1 + beta * eps scales W_CT (clamped to [0, 1]).
    assert _w("exponential_error_feedback", 10, **kw) == pytest.approx((base, 1 - base))
    assert _w("exponential_error_feedback", 10, eps_denoise=0.0, **kw)[0] == pytest.approx(base)
    for eps in (0.1, 0.5):
        expected = base * (1 + eps)
        got = _w("exponential_error_feedback", 10, eps_denoise=eps, **kw)
        assert got == pytest.approx((expected, 1 - expected))
    assert _w("exponential_error_feedback", 0, eps_denoise=0.5, **kw) == pytest.approx((1.0, 0.0))
    scaled = base * 1.5
    expected = scaled / (scaled + 1 - base)
    got = _w("exponential_error_feedback", 10, eps_denoise=0.5, correction="renormalise", **kw)
    assert got == pytest.approx((expected, 1 - expected))
    # beta scales the correction; per-sample errors give per-sample weights.
    w_ct, _ = ct_weights(
        "exponential_error_feedback",
        torch.tensor([10.0, 10.0]),
        eps_denoise=torch.tensor([0.0, 0.2]),
        beta=2.0,
        w0=0.8,
    )
    assert w_ct.tolist() == pytest.approx([base, base * 1.4])


def test_ct_weighting_maps_timesteps_through_step():
    t = torch.tensor([999, 979, 500])
    for strategy in STRATEGIES:
        weighting = CTWeighting(strategy=strategy, w0=0.5, step_count=50)
        w_ct, w_prev = weighting(t, 1000)
        expected, _ = ct_weights(strategy, step_from_timestep(t, 1000, 50), w0=0.5, step_count=50)
        torch.testing.assert_close(w_ct, expected.float())
        torch.testing.assert_close(w_ct + w_prev, torch.ones(3))
    with pytest.raises(ValueError, match="strategy"):
        CTWeighting(strategy="sigmoid")


# --- perceptual loss ---------------------------------------------------------------------------


def test_perceptual_loss_zero_positive_and_hand_computed():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, 8, 8, generator=g)
    b = torch.rand(2, 1, 8, 8, generator=g)
    assert perceptual_loss(a, a.clone(), toy_features) == 0
    got = perceptual_loss(a, b, toy_features)
    assert got > 0
    fa, fb = toy_features(a), toy_features(b)
    expected = 0.0
    for n in range(2):  # per sample: sum over layers of ||diff||^2 / (C H W); mean over the batch
        expected += ((fa[0][n] - fb[0][n]) ** 2).sum() / (1 * 8 * 8)
        expected += ((fa[1][n] - fb[1][n]) ** 2).sum() / (3 * 4 * 4)
    torch.testing.assert_close(got, expected / 2)


def test_vgg16_loads_torchvision_state_dict(tmp_path):
    torch.manual_seed(0)
    source = VGG16Features(layers=("relu1_2", "relu2_2", "relu3_3"))
    state = {k: v for k, v in source.state_dict().items() if k.startswith("features.")}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # extra keys of a full vgg16 are ignored
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    torch.manual_seed(1)
    loaded = VGG16Features(weights=path)
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    feats = loaded(x)
    assert [f.shape[1:] for f in feats] == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    for got, want in zip(feats, source(x), strict=True):
        torch.testing.assert_close(got, want)
    assert not any(p.requires_grad for p in loaded.parameters())
    del state["features.0.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="lacks"):
        VGG16Features(weights=path)


# --- overfitting -------------------------------------------------------------------------------


def test_denoiser_overfits_one_batch():
    torch.manual_seed(0)
    model = tiny()
    net, schedule = model.denoiser, model.schedule
    pet, ct = images()
    noise = torch.randn(pet.shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([150, 600])
    x_t = schedule.q_sample(pet, t, noise)
    w_ct, w_prev = model.weighting(t, schedule.T)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses, start = [], time.perf_counter()
    for _ in range(300):
        optimiser.zero_grad()
        loss = F.mse_loss(net(x_t, t, ct, w_ct=w_ct, w_prev=w_prev), noise)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    print("eps-MSE every 50 steps:", [round(v, 4) for v in losses[::50]], "final", losses[-1])
    print(f"{time.perf_counter() - start:.1f} s")
    assert losses[-1] < losses[0] / 10
