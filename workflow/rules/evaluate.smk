rule metrics:
    input:
        spet=variant_spet,
        abm="results/inference/{variant}/{patient}/abm.nii.gz",
        pet="results/cropped/{patient}/pet_suv.nii.gz",
        label="results/cropped/{patient}/label.nii.gz",
        ct="results/cropped/{patient}/ct.nii.gz",
    output:
        "results/metrics/{variant}/{patient}.json",
    log:
        "logs/metrics/{variant}/{patient}.log",
    benchmark:
        "benchmarks/metrics/{variant}/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("metrics", "threads")
    resources:
        **scheduler_resources("metrics"),
    params:
        config=stage_config("evaluate"),
    script:
        "../../scripts/metrics.py"


rule aggregate:
    input:
        test_metrics,
    output:
        per_patient=report(
            "results/metrics/per_patient.tsv",
            caption="../report/per_patient.rst",
            category="Results",
        ),
        summary="results/metrics/summary.tsv",
        json="results/metrics/summary.json",
        markdown=report(
            "results/metrics/summary.md",
            caption="../report/summary.rst",
            category="Results",
        ),
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/aggregate.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("aggregate", "threads")
    resources:
        **scheduler_resources("aggregate"),
    script:
        "../../scripts/aggregate.py"


rule figure:
    input:
        ct="results/cropped/{patient}/ct.nii.gz",
        pet="results/cropped/{patient}/pet_suv.nii.gz",
        spet="results/inference/{variant}/{patient}/spet.nii.gz",
        label="results/cropped/{patient}/label.nii.gz",
        abm="results/inference/{variant}/{patient}/abm.nii.gz",
        converted_ct="results/converted/{patient}/ct.nii.gz",
    output:
        report(
            "results/figures/{variant}/{patient}.png",
            caption="../report/overlay.rst",
            category="Figures",
            subcategory="{variant}",
            labels={"variant": "{variant}", "patient": "{patient}"},
        ),
    log:
        "logs/figure/{variant}/{patient}.log",
    benchmark:
        "benchmarks/figure/{variant}/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("figure", "threads")
    resources:
        **scheduler_resources("figure"),
    script:
        "../../scripts/figure.py"


# The statistics and QA verdicts of every prediction (test patients per variant, CT-only
# patients) in two cohort tables.
rule qa_table:
    input:
        stats=lambda wildcards: prediction_files("abm_stats.json"),
        qa=lambda wildcards: prediction_files("qa.json"),
    output:
        stats=report(
            "results/qa/abm_stats.tsv",
            caption="../report/qa_table.rst",
            category="QA",
        ),
        qa=report(
            "results/qa/qa.tsv",
            caption="../report/qa_table.rst",
            category="QA",
        ),
    log:
        "logs/qa_table.log",
    benchmark:
        "benchmarks/qa_table.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("aggregate", "threads")
    resources:
        **scheduler_resources("aggregate"),
    params:
        sources=lambda wildcards: prediction_sources(),
    script:
        "../../scripts/qa_table.py"
