"""Rule split: record the stable train/validation/test assignment made when the DAG was built."""

from abmseg.cohort.split import TEST, TRAIN, VALIDATION, write_split
from abmseg.step import rule_step

SUBSETS = (TRAIN, VALIDATION, TEST)

with rule_step(snakemake) as log:
    write_split(snakemake.params.assignment, snakemake.output[0])
    counts = {s: list(snakemake.params.assignment.values()).count(s) for s in SUBSETS}
    log.info("split: %s", counts)
