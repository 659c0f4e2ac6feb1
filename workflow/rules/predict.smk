rule bundle:
    input:
        model=final_model,
        profile=TRAINING_PROFILE,
    output:
        "results/bundles/{variant}/bundle.json",
    log:
        "logs/bundle/{variant}.log",
    benchmark:
        "benchmarks/bundle/{variant}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: res("bundle", "threads")
    resources:
        **scheduler_resources("bundle"),
    params:
        config=stage_config("bundle"),
    script:
        "../../scripts/bundle.py"


# CT-only patients (no PET, no label in the sheet): every setting comes from the bundle.
rule predict:
    input:
        bundle=f"{MODEL_BUNDLE}/bundle.json",
        ct=get_series_state("ct"),
    output:
        spet="results/predict/{patient}/spet.nii.gz",
        abm="results/predict/{patient}/abm.nii.gz",
        abm_ct="results/predict/{patient}/abm_ct.nii.gz",
        prob="results/predict/{patient}/abm_prob.nii.gz",
        uncertainty="results/predict/{patient}/abm_uncertainty.nii.gz",
        stats="results/predict/{patient}/abm_stats.tsv",
        stats_json="results/predict/{patient}/abm_stats.json",
        qa="results/predict/{patient}/qa.json",
        qa_png=report(
            "results/predict/{patient}/qa.png",
            caption="../report/qa.rst",
            category="QA",
            subcategory="predict",
            labels={"patient": "{patient}"},
        ),
        summary="results/predict/{patient}/prediction.json",
    log:
        "logs/predict/{patient}.log",
    benchmark:
        "benchmarks/predict/{patient}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: res("predict", "threads")
    resources:
        **scheduler_resources("predict", gpu_job="infer"),
    params:
        ct_folder=get_series_folder("ct"),
    script:
        "../../scripts/predict.py"
