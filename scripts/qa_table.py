"""Rule qa_table: every prediction's per-region statistics and QA verdict in cohort tables."""

from abmseg.qa.cohort import cohort_tables, write_tsv
from abmseg.step import rule_step

with rule_step(snakemake) as log:
    by_region, by_patient = cohort_tables(
        snakemake.params.sources, snakemake.input.stats, snakemake.input.qa
    )
    write_tsv(by_region, snakemake.output.stats)
    write_tsv(by_patient, snakemake.output.qa)
    log.info("QA verdicts: %s", by_patient["qa_verdict"].value_counts().to_dict())
