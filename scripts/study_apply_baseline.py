"""Rule apply_baseline: one fitted baseline's ABM label map for one test patient."""

from abmseg.step import rule_step
from abmseg.study.steps import apply_baseline_file

job = snakemake
with rule_step(job):
    apply_baseline_file(
        job.wildcards.method,
        job.wildcards.patient,
        job.input.models,
        job.input.ct,
        job.input.get("pet") or None,
        job.output.abm,
    )
