# The report's results page: the summary beside the paper's, per-patient metrics, QA verdicts,
# CT-only predictions and every patient's registration QC (table, cohort figure and each patient's
# figure as a thumbnail), as HTML the report shows in place.
rule results_page:
    input:
        summary="results/metrics/summary.tsv",
        per_patient="results/metrics/per_patient.tsv",
        qa="results/qa/qa.tsv",
        stats="results/qa/abm_stats.tsv",
        registration=expand(
            "results/registered/{patient}/qc.json", patient=SCORED_PATIENTS
        ),
        registration_figures=REGISTRATION_FIGURES,
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


# Every patient with a PET: the PET fused on the CT before and after registration on three planes,
# beside the QC figures against their limits (report; thumbnails on the results page).
rule registration_figure:
    input:
        ct="results/converted/{patient}/ct.nii.gz",
        pet="results/converted/{patient}/pet_suv.nii.gz",
        registered="results/registered/{patient}/pet_suv.nii.gz",
        qc="results/registered/{patient}/qc.json",
    output:
        report(
            "results/qc/registration/{patient}.png",
            caption="../report/registration.rst",
            category="QA",
            subcategory="registration",
            labels={"patient": "{patient}"},
        ),
    log:
        "logs/registration_figure/{patient}.log",
    benchmark:
        "benchmarks/registration_figure/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("registration_figure", "threads")
    resources:
        **scheduler_resources("registration_figure"),
    script:
        "../../scripts/registration_figure.py"
