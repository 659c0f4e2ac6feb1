# The report's results page: the summary beside the paper's, per-patient metrics, QA verdicts,
# CT-only predictions and every patient's registration QC, as HTML the report shows in place.
rule results_page:
    input:
        summary="results/metrics/summary.tsv",
        per_patient="results/metrics/per_patient.tsv",
        qa="results/qa/qa.tsv",
        stats="results/qa/abm_stats.tsv",
        registration=expand(
            "results/registered/{patient}/qc.json", patient=SCORED_PATIENTS
        ),
    output:
        report(
            "results/report/results.html",
            caption="../report/results_page.rst",
            category="Results",
            labels={"page": "results (start here)"},
        ),
    log:
        "logs/results_page.log",
    benchmark:
        "benchmarks/results_page.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("aggregate", "threads")
    resources:
        **scheduler_resources("aggregate"),
    params:
        model_preset=config["model_preset"],
    script:
        "../../scripts/results_page.py"
