"""Rules train_stage1/train_stage2: train one variant's networks (torchrun when >1 GPU)."""

import json
import tempfile
from pathlib import Path

from abmseg.step import rule_step
from abmseg.train.cli import main as train_main
from abmseg.train.run_key import claim_checkpoints, file_sha256, run_key

variant = snakemake.wildcards.variant
with rule_step(f"train_stage{snakemake.params.stage}", snakemake.log[0]) as log:
    out = Path(snakemake.output.model).parent
    stage = snakemake.params.stage
    init = file_sha256(snakemake.input.init) if stage == 2 else None
    key = run_key(variant, stage, snakemake.params.settings, snakemake.params.patients, init)
    claim_checkpoints(out / "checkpoints", key)
    with tempfile.TemporaryDirectory() as tmp:
        patients = Path(tmp) / "patients.tsv"
        rows = [f"{p}\tresults/normalized/{p}" for p in snakemake.params.patients]
        patients.write_text("patient_id\tfolder\n" + "\n".join(rows) + "\n")
        settings = Path(tmp) / "config.json"
        settings.write_text(json.dumps(snakemake.params.settings))
        argv = [
            "--stage",
            str(snakemake.params.stage),
            "--variant",
            variant,
            "--config",
            str(settings),
            "--patients",
            str(patients),
            "--out",
            str(out),
            "--gpus",
            str(snakemake.params.gpus),
        ]
        if snakemake.params.stage == 2:
            argv += ["--init", snakemake.input.init]
        log.info("training %s stage %s on %d patients", variant, snakemake.params.stage, len(rows))
        status = train_main(argv)
        if status:
            raise SystemExit(status)
