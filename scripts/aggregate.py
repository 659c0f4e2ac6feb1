"""Rule aggregate: per-patient table and mean +- sd summary beside the paper's Tables 1-2."""

from abmseg.evaluate.aggregate import aggregate_files
from abmseg.step import rule_step

with rule_step(snakemake) as log:
    text = aggregate_files(
        snakemake.input,
        snakemake.output.per_patient,
        snakemake.output.summary,
        snakemake.output.markdown,
        snakemake.output.json,
    )
    log.info("summary:\n%s", text)
