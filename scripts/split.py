"""Rule split: record the stable train/test assignment computed when the DAG was built."""

from abmseg.cohort.split import write_split
from abmseg.step import rule_step

with rule_step(snakemake) as log:
    write_split(snakemake.params.assignment, snakemake.output[0])
    counts = {s: list(snakemake.params.assignment.values()).count(s) for s in ("train", "test")}
    log.info("split: %s", counts)
