"""Is the study's training budget what holds full back? (docs/validation.md, "Goals")

Trains ct_only and full again, both stages, with every epoch count of the study multiplied by
``--scale`` and, for a replicate, the seed moved by ``--seed-offset`` (the study's settings and
training patients otherwise); scores both on the test patients with the study's inference and
pairs full against ct_only at that budget. A post hoc measurement beside the pre-registered
study, which it does not change.

Usage (in the folder holding results/, after `make study`):
    python bench/training_length.py --config config/study.yaml --scale 2 [--variants ct_only full]
        [--seed-offset 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from stage2_dynamics import run_chains, train_command, training_patients_tsv
from study_models import merged_config, score_models

from abmseg.study.stats import paired_bootstrap, wilcoxon_p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["ct_only", "full"])
    parser.add_argument("--seed-offset", type=int, default=0, help="a replicate: seed + this")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    config = merged_config(args.config)
    for key in ("epochs_stage1", "epochs_stage2"):
        config["training"][key] = int(config["training"][key]) * args.scale
    config["seed"] = int(config["seed"]) + args.seed_offset
    tag = f"x{args.scale}" + (f"_seed+{args.seed_offset}" if args.seed_offset else "")
    out = args.results / "study" / f"training_{tag}"
    patients = training_patients_tsv(args.results, out / "train_patients.tsv")
    cfg = out / "config.json"
    cfg.write_text(json.dumps(config, indent=1))
    chains = {}
    for variant in args.variants:
        s1, s2 = out / variant / "stage1", out / variant / "stage2"
        chains[variant] = [
            train_command(variant, 1, cfg, patients, s1, None),
            train_command(variant, 2, cfg, patients, s2, s1 / "model.pt"),
        ]
    seconds = run_chains(chains, out, args.parallel)
    models = {f"{v}_{tag}": out / v / "stage2" / "model.pt" for v in args.variants}
    lines, dice = score_models(config, models, args.results, threads=args.parallel)
    print("\n" + "\n".join(lines))
    if len(args.variants) == 2:
        a, b = (dice[f"{v}_{tag}"] for v in reversed(args.variants))
        common = sorted(set(a) & set(b))
        x, y = [a[p] for p in common], [b[p] for p in common]
        delta, low, high = paired_bootstrap(x, y, seed=2026)
        print(
            f"\n{args.variants[1]} - {args.variants[0]} at {tag}: {delta:+.3f} "
            f"(95 % CI {low:+.3f} to {high:+.3f}, Wilcoxon p {wilcoxon_p(x, y):.3g}; "
            f"means {np.mean(x):.3f} and {np.mean(y):.3f})"
        )
    print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
