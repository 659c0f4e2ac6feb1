"""Rules train_stage1/train_stage2: train one variant's networks (torchrun when >1 GPU)."""

import json
import tempfile
from pathlib import Path

from abmseg.infer.bundle import read_bundle_checked
from abmseg.step import rule_step
from abmseg.train.cli import main as train_main
from abmseg.train.distributed import allocated_gpu_count
from abmseg.train.run_key import claim_checkpoints, run_key

variant = snakemake.wildcards.variant
stage = snakemake.params.stage
with rule_step(
    snakemake,
    config_keys=("training.workers",),
    # Undeclared outputs of training; stage 2 also reads stage 1's checkpoints.
    extra_outputs=[
        f"{Path(snakemake.output.model).parent}/{name}"
        for name in ("status.json", "checkpoints/*", "tensorboard/**")
    ],
    extra_inputs=f"{Path(snakemake.input.init).parent}/checkpoints/*" if stage == 2 else None,
) as log:
    out = Path(snakemake.output.model).parent
    folders = {Path(f).parent.name: Path(f).parent for f in snakemake.input.volumes}
    key = run_key(variant, stage, snakemake.params.settings, list(folders), snakemake.input)
    claim_checkpoints(out / "checkpoints", key)
    if stage == 2:  # a damaged stage-1 bundle: one line naming it and train_stage1, no traceback
        read_bundle_checked(snakemake.input.init, made_by="train_stage1")
    # workers changes no result: it comes from the config, not from params (no rerun for it).
    settings = json.loads(json.dumps(snakemake.params.settings))
    settings["training"]["workers"] = snakemake.config["training"]["workers"]
    with tempfile.TemporaryDirectory() as tmp:
        patients = Path(tmp) / "patients.tsv"
        rows = [f"{p}\t{folder.resolve()}" for p, folder in sorted(folders.items())]
        patients.write_text("patient_id\tfolder\n" + "\n".join(rows) + "\n")
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(settings))
        # One process per GPU this job was given (CUDA_VISIBLE_DEVICES under SLURM).
        gpus = allocated_gpu_count(snakemake.params.gpus)
        if gpus != snakemake.params.gpus:
            log.warning("config asks for %d GPUs, the job got %d", snakemake.params.gpus, gpus)
        argv = [
            "--stage",
            str(stage),
            "--variant",
            variant,
            "--config",
            str(config_file),
            "--patients",
            str(patients),
            "--out",
            str(out),
            "--gpus",
            str(gpus),
        ]
        if stage == 2:
            argv += ["--init", snakemake.input.init]
        log.info(
            "training %s stage %s on %d patients, %d process(es)",
            variant,
            stage,
            len(rows),
            max(gpus, 1),
        )
        status = train_main(argv)
        if status:
            raise SystemExit(status)
