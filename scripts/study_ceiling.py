"""Rule ceiling: the phantom's CT-visible ceiling (ceiling_prob >= 0.5) on the cropped grid."""

from abmseg.step import rule_step
from abmseg.study.ceiling import write_ceiling

job = snakemake
with rule_step(job):
    inputs = job.input
    write_ceiling(
        job.wildcards.patient, inputs.label, inputs.roi, inputs.cropped_label, job.output.abm
    )
