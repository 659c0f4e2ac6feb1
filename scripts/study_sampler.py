"""Rules sampler_point and select_start: the full model's Dice, sPET PSNR and time per patient
for one reverse-chain setting (abmseg.study.sampler), or the partial start step chosen on
training patients."""

from abmseg.step import rule_step
from abmseg.study.sampler import run_sampler_point, scored_patients, select_start

job = snakemake
with rule_step(job) as log:
    patients = scored_patients(job.params.patients, job.input.volumes)
    config, model, out = job.params.config, job.input.model, job.output[0]
    if job.rule == "select_start":
        chosen = select_start(model, patients, config, job.threads, out)
        log.info("partial start chosen on training patients: t = %s", chosen)
    else:
        start = job.input.start or None
        run_sampler_point(job.wildcards.point, model, patients, config, job.threads, out, start)
