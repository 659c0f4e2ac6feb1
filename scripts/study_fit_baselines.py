"""Rule fit_baselines: the CT baselines and the PET threshold, fitted on training patients only."""

from abmseg.step import rule_step
from abmseg.study.steps import fit_baseline_files

job = snakemake
with rule_step(job) as log:
    fitted = fit_baseline_files(
        job.params.patients, job.input.volumes, job.params.config["seed"], job.output[0]
    )
    log.info("fitted on %d training patients", len(fitted["fitted_on"]))
