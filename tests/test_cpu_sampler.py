"""Which sampler `abmseg predict` takes: the bundle's on a GPU, one DDIM step from T/4 on a CPU."""

import pytest

from abmseg.infer.cpu_sampler import choose_sampler, cpu_sampler, describe

DDIM50 = {"sampler": "ddim", "steps": 50, "start_step": None, "batch_size": 16, "seed": 7}


def test_a_cpu_gets_one_step_from_a_quarter_of_the_chain_keeping_seed_and_batch():
    chosen, reason = choose_sampler(DDIM50, "cpu", "auto", 1000)
    assert chosen == {"sampler": "ddim", "steps": 1, "start_step": 250, "batch_size": 16, "seed": 7}
    assert "no GPU" in reason and "DDIM, 50 steps from t=1000 of 1000" in reason


def test_a_gpu_keeps_the_bundles_sampler():
    assert choose_sampler(DDIM50, "cuda", "auto", 1000)[0] is None


@pytest.mark.parametrize(
    "sampler",
    [
        {"sampler": "pseudo", "steps": None, "start_step": None},
        {"sampler": "ddim", "steps": 1, "start_step": 100},
    ],
)
def test_a_bundle_sampler_as_cheap_already_is_kept_on_a_cpu(sampler):
    assert choose_sampler(sampler, "cpu", "auto", 1000)[0] is None


def test_ddpm_counts_one_pass_per_step_and_is_replaced_on_a_cpu():
    chosen, _ = choose_sampler({"sampler": "ddpm", "steps": None}, "cpu", "auto", 1000)
    assert chosen["steps"] == 1 and chosen["start_step"] == 250


def test_a_variant_without_diffusion_has_nothing_to_choose():
    chosen, reason = choose_sampler(DDIM50, "cpu", "cpu", None)
    assert chosen is None and "pseudo-PET only" in reason


def test_explicit_choices_override_the_device():
    assert choose_sampler(DDIM50, "cpu", "bundle", 1000)[0] is None
    assert choose_sampler(DDIM50, "cuda", "cpu", 1000)[0] == cpu_sampler(DDIM50, 1000)
    with pytest.raises(ValueError, match="unknown sampler choice"):
        choose_sampler(DDIM50, "cpu", "fastest", 1000)


def test_the_start_scales_with_the_chain_length():
    assert cpu_sampler(DDIM50, 200)["start_step"] == 50
    assert cpu_sampler(DDIM50, 2)["start_step"] == 1  # never t=0
    assert describe({"sampler": "ddim", "steps": 1, "start_step": 50}, 200) == (
        "DDIM, 1 step from t=50 of 200"
    )
