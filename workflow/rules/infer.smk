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
