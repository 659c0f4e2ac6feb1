rule infer:
    input:
        model=final_model,
        ct="results/normalized/{patient}/ct.nii.gz",
        converted_ct="results/converted/{patient}/ct.nii.gz",
        roi="results/cropped/{patient}/roi.json",
    output:
        spet="results/inference/{variant}/{patient}/spet.nii.gz",
        abm="results/inference/{variant}/{patient}/abm.nii.gz",
        abm_ct="results/inference/{variant}/{patient}/abm_ct.nii.gz",
        prob="results/inference/{variant}/{patient}/abm_prob.nii.gz",
        uncertainty="results/inference/{variant}/{patient}/abm_uncertainty.nii.gz",
    log:
        "logs/infer/{variant}/{patient}.log",
    benchmark:
        "benchmarks/infer/{variant}/{patient}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: res("infer", "threads")
    resources:
        **scheduler_resources("infer", gpu_job="infer"),
    params:
        config=stage_config("infer"),
    script:
        "../../scripts/infer.py"


# Statistics, QA flags and QA picture of a test patient's prediction, from rule infer's maps:
# changing a QA limit reruns this rule only, not the networks.
rule qa:
    input:
        abm="results/inference/{variant}/{patient}/abm.nii.gz",
        spet="results/inference/{variant}/{patient}/spet.nii.gz",
        prob="results/inference/{variant}/{patient}/abm_prob.nii.gz",
        uncertainty="results/inference/{variant}/{patient}/abm_uncertainty.nii.gz",
        converted_ct="results/converted/{patient}/ct.nii.gz",
        roi="results/cropped/{patient}/roi.json",
        profile=TRAINING_PROFILE,
    output:
        stats="results/inference/{variant}/{patient}/abm_stats.tsv",
        stats_json="results/inference/{variant}/{patient}/abm_stats.json",
        qa="results/inference/{variant}/{patient}/qa.json",
        qa_png=report(
            "results/inference/{variant}/{patient}/qa.png",
            caption="../report/qa.rst",
            category="QA",
            subcategory="{variant}",
            labels={"variant": "{variant}", "patient": "{patient}"},
        ),
    log:
        "logs/qa/{variant}/{patient}.log",
    benchmark:
        "benchmarks/qa/{variant}/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("qa", "threads")
    resources:
        **scheduler_resources("qa"),
    params:
        config=stage_config("qa"),
        with_spet=lambda wildcards: VARIANT_SPECS[wildcards.variant].uses_cyclegan,
    script:
        "../../scripts/qa.py"


# What the networks were trained on, in the numbers the QA flags compare every prediction with
# (abmseg.qa.profile): the training patients only.
rule training_profile:
    input:
        cts=training_files("results/converted/{patient}/ct.nii.gz"),
        labels=training_files("results/converted/{patient}/label.nii.gz"),
    output:
        TRAINING_PROFILE,
    log:
        "logs/training_profile.log",
    benchmark:
        "benchmarks/training_profile.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("training_profile", "threads")
    resources:
        **scheduler_resources("training_profile"),
    params:
        patients=TRAIN_PATIENTS,
        config=stage_config("training_profile"),
    script:
        "../../scripts/training_profile.py"
