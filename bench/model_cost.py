"""Model cost: parameters, forward FLOPs and training-step wall time of the networks.

MP-FPSN with addition vs concatenation fusion (the paper: addition has about 40% fewer parameters
and 35% less compute), at the paper preset, 256 x 256, batch 1 for FLOPs
(torch.utils.flop_counter: convolutions and matmuls, 2 FLOPs per multiply-add; norms, activations
and interpolation are not counted). Wall time is forward + backward (+ loss) per batch, on CPU and,
where CUDA is available, on GPU in fp32, bf16 autocast and bf16 autocast + channels_last.

Usage: python bench/model_cost.py [--networks mpfpsn|all] [--preset paper] [--size 256]
       [--batch 4] [--reps 2] [--threads 2] [--time-variants add concat]
Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from abmseg.models.mpfpsn import MPFPSN
from abmseg.models.presets import load_model_preset
from abmseg.models.seg_losses import SegmentationLoss

MPFPSN_VARIANTS = {
    "add": {"fusion": "add"},
    "concat": {"fusion": "concat"},
    "input": {"fusion": "input"},  # early concatenation (docs/validation.md, risk 3)
    "ct-only": {"modalities": "ct"},
}

# One training step (forward, loss, backward); returns the loss.
Step = Callable[[], torch.Tensor]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flops(fn: Callable[[], object]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def pct_less(small: float, large: float) -> float:
    return 100.0 * (large - small) / large


# ---- networks -----------------------------------------------------------------------------------


def mpfpsn_step(
    preset: str, variant: str, device, batch: int, size: int, fmt
) -> tuple[nn.Module, Step]:
    model = MPFPSN.from_preset(preset, **MPFPSN_VARIANTS[variant]).to(device, memory_format=fmt)
    ct = torch.randn(batch, 1, size, size, device=device).to(memory_format=fmt)
    spet = torch.randn_like(ct)
    target = torch.randint(0, model.n_classes, (batch, size, size), device=device)
    loss_fn = SegmentationLoss()

    def step() -> torch.Tensor:
        loss = loss_fn(model(ct, spet), target)["total"]
        loss.backward()
        return loss

    return model, step


def cyclegan_step(preset: str, device, batch: int, size: int, fmt) -> tuple[nn.Module, Step]:
    """One CycleGAN training step: the generator objective (adversarial both ways + lambda_cyc
    L1 cycle) and the discriminator objective (real vs pooled fakes), both backward."""
    from abmseg.models.cyclegan import CycleGAN
    from abmseg.models.cyclegan_losses import CycleGANLoss

    preset_dict = load_model_preset("cyclegan", preset)
    model = CycleGAN.from_preset(preset_dict).to(device, memory_format=fmt)
    losses = CycleGANLoss.from_preset(preset_dict)
    ct = torch.randn(batch, 1, size, size, device=device).to(memory_format=fmt)
    pet = torch.randn_like(ct)

    def step() -> torch.Tensor:
        images = model(ct, pet)
        generator = losses.generator_objective(model, ct, pet, images)["total"]
        generator.backward()
        losses.discriminator_objective(model, ct, pet, images)["total"].backward()
        return generator

    return model, step


def diffusion_step(preset: str, device, batch: int, size: int, fmt) -> tuple[nn.Module, Step]:
    """One diffusion training step: eps-MSE + 0.1 x perceptual loss through a frozen copy of the
    CycleGAN PET encoder (the default feature network), backward."""
    from abmseg.models.cyclegan import ResnetGenerator
    from abmseg.models.diffusion import ConditionalDiffusion, frozen_feature_extractor

    model = ConditionalDiffusion.from_preset(load_model_preset("diffusion", preset))
    model = model.to(device, memory_format=fmt)
    encoder = ResnetGenerator.from_preset(load_model_preset("cyclegan", preset)).to(device)
    features = frozen_feature_extractor(encoder)
    pet = torch.rand(batch, 1, size, size, device=device).to(memory_format=fmt) * 2 - 1
    ct = torch.rand_like(pet) * 2 - 1

    def step() -> torch.Tensor:
        loss = model.training_loss(pet, ct, feature_fn=features)["total"]
        loss.backward()
        return loss

    return model, step


# ---- timing -------------------------------------------------------------------------------------


def seconds_per_step(step: Step, model: nn.Module, device, reps: int, warmup: int, amp: bool):
    cuda = device.type == "cuda"
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if amp
        else contextlib.nullcontext()
    )

    def one() -> None:
        model.zero_grad(set_to_none=True)
        with autocast:
            step()

    for _ in range(warmup):
        one()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        one()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def timing_modes(device) -> list[tuple[str, bool, torch.memory_format]]:
    if device.type == "cpu":
        return [("fp32", False, torch.contiguous_format)]
    return [
        ("fp32", False, torch.contiguous_format),
        ("bf16 autocast", True, torch.contiguous_format),
        ("bf16 autocast + channels_last", True, torch.channels_last),
    ]


def time_network(name: str, build, devices, args) -> None:
    """Print one table row per device and mode; ImportError when the network does not exist."""
    for device in devices:
        for mode, amp, fmt in timing_modes(device):
            model, step = build(device, args.batch, args.size, fmt)
            reps = args.reps if device.type == "cpu" else 10 * args.reps
            warmup = 1 if device.type == "cpu" else 3
            seconds = seconds_per_step(step, model, device, reps, warmup, amp)
            print(f"| {name} | {n_params(model):,} | {device.type} | {mode} | {seconds:.3f} |")
            del model, step


# ---- main ---------------------------------------------------------------------------------------


def cost_table(preset: str, size: int) -> None:
    print(f"\n### MP-FPSN cost, preset {preset!r}, {size} x {size}, batch 1 (forward FLOPs)\n")
    print("| variant | params | encoders | fusion | decoder | forward GFLOPs |")
    print("|---|---|---|---|---|---|")
    results = {}
    for variant, kwargs in MPFPSN_VARIANTS.items():
        model = MPFPSN.from_preset(preset, **kwargs).eval()
        ct = torch.randn(1, 1, size, size)
        flops = forward_flops(lambda model=model, ct=ct: model(ct, ct))
        parts = [n_params(model.encoders), n_params(model.pyramid), n_params(model.decoder)]
        results[variant] = (n_params(model), flops, parts[1] + parts[2])
        cells = [f"{v:,}" for v in (n_params(model), *parts)]
        print(f"| {variant} | {' | '.join(cells)} | {flops / 1e9:.2f} |")
    (p_add, f_add, fd_add), (p_cat, f_cat, fd_cat) = results["add"], results["concat"]
    print(
        f"\nadd vs concat: {pct_less(p_add, p_cat):.1f}% fewer parameters (whole network), "
        f"{pct_less(fd_add, fd_cat):.1f}% fewer in fusion + decoder, "
        f"{pct_less(f_add, f_cat):.1f}% fewer forward FLOPs (paper: about 40% and 35%)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", choices=["mpfpsn", "all"], default="mpfpsn")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2, help="timed steps (CPU; GPU uses 10x)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-variants", nargs="+", default=["add"], choices=MPFPSN_VARIANTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} CPU threads, CUDA: "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )

    cost_table(args.preset, args.size)

    steps = {
        f"MP-FPSN ({v})": (lambda *a, v=v: mpfpsn_step(args.preset, v, *a))
        for v in args.time_variants
    }
    if args.networks == "all":
        steps["CycleGAN (G and D objectives)"] = lambda *a: cyclegan_step(args.preset, *a)
        steps["diffusion (eps-MSE + perceptual)"] = lambda *a: diffusion_step(args.preset, *a)

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"\n### Training step (forward + backward), batch {args.batch}, {args.size} x {args.size}\n"
    )
    print("| network | params | device | mode | s / step |")
    print("|---|---|---|---|---|")
    for name, build in steps.items():
        try:
            time_network(name, build, devices, args)
        except ImportError as error:
            print(f"| {name} | - | - | skipped: not available ({error}) | - |")


if __name__ == "__main__":
    main()
