"""Rules train_stage1/train_stage2: train one variant's networks (torchrun when >1 GPU); stop
between epochs before the job's time limit, so the rule's retries resume it."""

import time
from pathlib import Path

from abmseg.infer.networks import read_trained_model_checked
from abmseg.settings import RUNTIME_TRAINING_KEYS, pick
from abmseg.step import rule_step
from abmseg.train.cli import JOB_FILE, launch
from abmseg.train.distributed import allocated_gpu_count
from abmseg.train.engine import TrainJob
from abmseg.train.run_key import claim_checkpoints, run_key
from abmseg.train.settings import TrainSettings
from abmseg.train.time_limit import EXIT_TIME_LIMIT, job_deadline

STARTED = time.time()

variant = snakemake.wildcards.variant
stage = snakemake.params.stage
out = Path(snakemake.output.model).parent
with rule_step(
    snakemake,
    config_keys=RUNTIME_TRAINING_KEYS,
    # Undeclared outputs of training; stage 2 also reads stage 1's checkpoints.
    extra_outputs=[
        f"{out}/{name}" for name in (JOB_FILE, "status.json", "checkpoints/*", "tensorboard/**")
    ],
    extra_inputs=f"{Path(snakemake.input.init).parent}/checkpoints/*" if stage == 2 else None,
) as log:
    folders = {Path(f).parent.name: Path(f).parent for f in snakemake.input.volumes}
    held_out = set(snakemake.params.validation)
    fit = [(p, folder.resolve()) for p, folder in sorted(folders.items()) if p not in held_out]
    validation = [(p, folder.resolve()) for p, folder in sorted(folders.items()) if p in held_out]
    roles = [p for p, _ in fit] + [f"validation:{p}" for p, _ in validation]
    key = run_key(variant, stage, snakemake.params.config, roles, snakemake.input)
    claim_checkpoints(out / "checkpoints", key)
    if stage == 2:  # a damaged stage-1 model: one line naming it and train_stage1, no traceback
        read_trained_model_checked(snakemake.input.init, made_by="train_stage1")
    # Runtime settings change no result: from the config, not from params (no rerun for them).
    config = snakemake.params.config
    config["training"] = {
        **config["training"],
        **pick(snakemake.config, *RUNTIME_TRAINING_KEYS).get("training", {}),
    }
    deadline, source = job_deadline(getattr(snakemake.resources, "runtime", None), STARTED)
    job = TrainJob(
        stage=stage,
        variant=variant,
        settings=TrainSettings.from_config(config),
        patients=fit,
        out=out,
        init=Path(snakemake.input.init) if stage == 2 else None,
        validation=validation,
        regions=snakemake.config["regions"],
        deadline=deadline,
    )
    # One process per GPU this job was given (CUDA_VISIBLE_DEVICES under SLURM).
    gpus = allocated_gpu_count(snakemake.params.gpus)
    if gpus != snakemake.params.gpus:
        log.warning("config asks for %d GPUs, the job got %d", snakemake.params.gpus, gpus)
    log.info(
        "training %s stage %s on %d patients (%d more validated), %d process(es); time limit: %s",
        variant,
        stage,
        len(fit),
        len(validation),
        max(gpus, 1),
        f"{(deadline - time.time()) / 60:.1f} min left ({source})" if deadline else source,
    )
    status = launch(job, gpus)
    if status == EXIT_TIME_LIMIT:  # a planned stop: the rule's retries resume the run
        log.warning("exit status %d: a resubmitted job resumes this training", status)
    if status:
        raise SystemExit(status)
