rule convert:
    input:
        ct=get_series_state("ct"),
        pet=get_series_state("pet"),
        label=get_label,
    output:
        ct="results/converted/{patient}/ct.nii.gz",
        pet="results/converted/{patient}/pet_suv.nii.gz",
        label="results/converted/{patient}/label.nii.gz",
        meta="results/converted/{patient}/meta.json",
    log:
        "logs/convert/{patient}.log",
    benchmark:
        "benchmarks/convert/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("convert", "threads")
    resources:
        **scheduler_resources("convert"),
    params:
        ct_dir=get_series_folder("ct"),
        pet_dir=get_series_folder("pet"),
        config=stage_config("convert"),
    script:
        "../../scripts/convert.py"


rule register:
    input:
        ct="results/converted/{patient}/ct.nii.gz",
        pet="results/converted/{patient}/pet_suv.nii.gz",
    output:
        pet="results/registered/{patient}/pet_suv.nii.gz",
        transform="results/registered/{patient}/pet_to_ct.mat",
        qc="results/registered/{patient}/qc.json",
    log:
        "logs/register/{patient}.log",
    benchmark:
        "benchmarks/register/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("register", "threads")
    resources:
        **scheduler_resources("register"),
    params:
        config=stage_config("register"),
    script:
        "../../scripts/register.py"


rule crop:
    input:
        ct="results/converted/{patient}/ct.nii.gz",
        pet="results/registered/{patient}/pet_suv.nii.gz",
        label="results/converted/{patient}/label.nii.gz",
    output:
        ct="results/cropped/{patient}/ct.nii.gz",
        pet="results/cropped/{patient}/pet_suv.nii.gz",
        label="results/cropped/{patient}/label.nii.gz",
        roi="results/cropped/{patient}/roi.json",
    log:
        "logs/crop/{patient}.log",
    benchmark:
        "benchmarks/crop/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("crop", "threads")
    resources:
        **scheduler_resources("crop"),
    params:
        config=stage_config("crop"),
    script:
        "../../scripts/crop.py"


rule normalise:
    input:
        ct="results/cropped/{patient}/ct.nii.gz",
        pet="results/cropped/{patient}/pet_suv.nii.gz",
        label="results/cropped/{patient}/label.nii.gz",
    output:
        ct="results/normalized/{patient}/ct.nii.gz",
        pet="results/normalized/{patient}/pet.nii.gz",
        label="results/normalized/{patient}/label.nii.gz",
    log:
        "logs/normalise/{patient}.log",
    benchmark:
        "benchmarks/normalise/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("normalise", "threads")
    resources:
        **scheduler_resources("normalise"),
    params:
        config=stage_config("normalise"),
    script:
        "../../scripts/normalise.py"
