"""Does the error feedback of the adaptive CT weight do anything? (docs/validation.md, risk 5)

alpha = 1 + beta eps_denoise multiplies the CT weight W_CT. This measures, on TRAINING patients of
a finished study (never test patients), with the study's trained full model:

1. eps_denoise as the model sees it in training (one-step x0 estimate from the real PET noised to
   t < spet_t_fraction T, MSE against the real PET, [-1, 1] units) and at inference (against the
   pseudo-PET, the previous reverse step's estimate), and the alpha each gives at beta = 1;
2. the mean Dice of the full model with beta = 0, 1, 10, 100 at inference, each over several
   sampler seeds, so a difference can be set against the seed-to-seed spread.

Usage (in the folder holding results/, after `make study`):
    python bench/error_feedback.py --config config/study.yaml [--patients 6] [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from study_models import merged_config, scored_volumes, split_patients  # bench/ on sys.path

from abmseg.evaluate.patient import EvaluateSettings
from abmseg.infer.networks import load_networks
from abmseg.infer.predict import InferenceSettings
from abmseg.preprocess.normalise import NormaliseSettings
from abmseg.slicing import SliceGeometry, body_slices
from abmseg.study.sampler import SamplerPoint, run_point


@torch.no_grad()
def training_error(diffusion, results: Path, patients: list[str], size: int, fraction: float):
    """eps_denoise of one-step estimates from the real PET, as training measures it."""
    errors = []
    generator = torch.Generator().manual_seed(0)
    for p in patients:
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(results / "normalized" / p / "ct.nii.gz")))
        pet = sitk.GetArrayFromImage(sitk.ReadImage(str(results / "normalized" / p / "pet.nii.gz")))
        geometry = SliceGeometry(ct.shape[1], ct.shape[2], size)
        zs = [int(z) for z in body_slices(ct, -0.9)]
        c = torch.stack([geometry.to_network(ct[z], kind="image") for z in zs])[:, None]
        x0 = torch.stack([geometry.to_network(pet[z], kind="image") for z in zs])[:, None]
        schedule = diffusion.schedule
        t = torch.randint(0, int(fraction * schedule.T), (len(zs),), generator=generator)
        x_t = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=generator))
        eps = diffusion.predict_eps(x_t, t, diffusion.denoiser.encode_ct(c))
        x0_hat = schedule.predict_x0(x_t, t, eps).clamp(-1, 1)
        errors.append(((x0_hat - x0) ** 2).mean(dim=(1, 2, 3)))
    return torch.cat(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 1.0, 10.0, 100.0])
    parser.add_argument(
        "--strategies",
        nargs="*",
        default=[],
        help="Table 4 CT-weight strategies to swap in at inference (beta 1), after the beta sweep",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    config = merged_config(args.config)
    model = args.results / "models" / "full" / "stage2" / "model.pt"
    networks, device = load_networks(model, threads=args.threads)
    diffusion = networks.diffusion
    patients = split_patients(args.results, "train")[: args.patients]
    fraction = float(config["training"]["spet_t_fraction"])
    err = training_error(diffusion, args.results, patients, networks.image_size, fraction)
    print(f"\nTraining patients {', '.join(patients)}; model {model}\n")
    print(
        f"- training-time eps_denoise (one-step x0 vs real PET, t < {fraction} T): mean "
        f"{err.mean():.4f}, 95th percentile {err.quantile(0.95):.4f}; alpha at beta 1: "
        f"{1 + err.mean():.4f}"
    )

    recorded: list[torch.Tensor] = []
    plain = diffusion.predict_eps

    def recording(x_t, t, ct_features, eps_denoise=None):
        if eps_denoise is not None:
            recorded.append(eps_denoise.detach().float().cpu())
        return plain(x_t, t, ct_features, eps_denoise)

    diffusion.predict_eps = recording
    scored = scored_volumes(args.results, patients)
    base = InferenceSettings.from_config(config)
    point = SamplerPoint("ddim", base.steps, str(base.start_step or "T"))
    evaluate = EvaluateSettings.from_config(config)
    ceiling = NormaliseSettings.from_config(config).suv_ceiling
    weighting = diffusion.weighting
    print("\n| weighting | sampler seeds | Dice mean (sd over seeds) | mean eps_denoise | alpha |")
    print("|---|---|---|---|---|")
    # a strategy swapped in at inference only: the model was trained with the configured one
    runs = [(f"beta {b:g}", dataclasses.replace(weighting, beta=b), b) for b in args.betas]
    runs += [(s, dataclasses.replace(weighting, strategy=s), 1.0) for s in args.strategies]
    for label, chosen, beta in runs:
        diffusion.weighting = chosen
        dice, eps = [], []
        for seed in range(args.seeds):
            recorded.clear()
            settings = dataclasses.replace(base, seed=seed)
            result = run_point(point, scored, networks, device, settings, evaluate, ceiling)
            dice.append(np.mean([r["dice_mean"] for r in result["patients"]]))
            eps.append(float(torch.cat(recorded).mean()) if recorded else float("nan"))
        e = float(np.mean(eps))
        print(
            f"| {label} | {args.seeds} | {np.mean(dice):.4f} ({np.std(dice, ddof=1):.4f}) | "
            f"{e:.4f} | {1 + beta * e:.4f} |"
        )


if __name__ == "__main__":
    main()
