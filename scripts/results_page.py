"""Rule results_page: the report's first page (summary, per patient, QA, CT-only, registration)."""

from abmseg.evaluate.results_page import write_results_page
from abmseg.step import rule_step

with rule_step(snakemake):
    write_results_page(
        snakemake.output[0],
        summary_tsv=snakemake.input.summary,
        per_patient_tsv=snakemake.input.per_patient,
        qa_tsv=snakemake.input.qa,
        stats_tsv=snakemake.input.stats,
        registration_qc=list(snakemake.input.registration),
        registration_figures=list(snakemake.input.registration_figures),
        model_preset=snakemake.params.model_preset,
    )
