"""Rule leakage: no test patient behind any trained model (provenance), and the shuffled-label
control of the full model's predictions."""

from abmseg.step import rule_step
from abmseg.study.steps import check_leakage

job = snakemake
with rule_step(job) as log:
    report = check_leakage(
        job.input.models,
        job.input.fitted,
        job.params.test_patients,
        job.params.test_raw,
        job.input.predictions,
        job.input.labels,
        job.params.config["regions"],
        job.output[0],
    )
    log.info(
        "leaks: %d; unrecorded results in the lineage: %d; shuffled control %s",
        len(report["leaks"]),
        len(report["incomplete"]),
        report["shuffled"]["summary"],
    )
