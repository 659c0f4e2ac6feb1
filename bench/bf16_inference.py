"""Dice and sPET PSNR of a study model in bf16 against fp32, on the study's test patients.

Runs one sampler point (default the study's DDIM-10 from t=250) over the test patients of a
finished `make study` twice: in fp32, then in bf16. On a GPU the second run sets
``inference.bf16`` (the code path users get); on a CPU it wraps the same run in
``torch.autocast("cpu", dtype=torch.bfloat16)``, which rounds the same operations' inputs to bf16
with fp32 accumulation: a proxy for the numbers, not for GPU kernels or their speed.

Usage (in the folder holding results/): python bench/bf16_inference.py --config config/study.yaml
       [--model results/models/full/stage2/model.pt] [--point ddim-10-250] [--device cpu|cuda]
"""

from __future__ import annotations

import copy
import platform
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from study_models import merged_config, one_model_parser, scored_volumes, split_patients

from abmseg.study.sampler import run_sampler_point


def run(point: str, model: Path, scored: list, config: dict, threads: int, bf16_cpu: bool):
    context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16_cpu else nullcontext()
    with tempfile.TemporaryDirectory() as tmp, context:
        begin = time.perf_counter()
        result = run_sampler_point(point, model, scored, config, threads, Path(tmp) / "out.json")
        return result, time.perf_counter() - begin


def main() -> None:
    parser = one_model_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    config = merged_config(args.config)
    scored = scored_volumes(args.results, split_patients(args.results, "test"))
    on_gpu = args.device == "cuda"
    fp32, fp32_s = run(args.point, args.model, scored, config, args.threads, False)
    bf16_config = copy.deepcopy(config)
    bf16_config["inference"]["bf16"] = True
    bf16, bf16_s = run(args.point, args.model, scored, bf16_config, args.threads, not on_gpu)
    rows = {r["patient_id"]: r for r in fp32["patients"]}
    dice_delta = [r["dice_mean"] - rows[r["patient_id"]]["dice_mean"] for r in bf16["patients"]]
    psnr_delta = [r["psnr"] - rows[r["patient_id"]]["psnr"] for r in bf16["patients"]]
    where = torch.cuda.get_device_name(0) if on_gpu else f"{platform.node()} CPU autocast"
    print(f"{args.model} at {args.point}, {len(rows)} test patients, {where}")
    print("| precision | Dice mean | PSNR dB | seconds, whole point |\n|---|---|---|---|")
    for name, result, seconds in (("fp32", fp32, fp32_s), ("bf16", bf16, bf16_s)):
        dice = np.mean([r["dice_mean"] for r in result["patients"]])
        psnr = np.mean([r["psnr"] for r in result["patients"]])
        print(f"| {name} | {dice:.4f} | {psnr:.3f} | {seconds:.0f} |")
    print(
        f"bf16 - fp32 per patient: Dice mean {np.mean(dice_delta):+.4f} (largest |d| "
        f"{np.max(np.abs(dice_delta)):.4f}); PSNR mean {np.mean(psnr_delta):+.3f} dB (largest "
        f"|d| {np.max(np.abs(psnr_delta)):.3f})"
    )


if __name__ == "__main__":
    main()
