rule train_stage1:
    input:
        volumes=training_volumes,
        presets=MODEL_PRESET_FILES,
    output:
        model="results/models/{variant}/stage1/model.pt",
        losses="results/models/{variant}/stage1/losses.csv",
        curves=report(
            "results/models/{variant}/stage1/losses.png",
            caption="../report/losses.rst",
            category="Training",
            subcategory="{variant}",
            labels={"variant": "{variant}", "stage": "1"},
        ),
    log:
        "logs/train_stage1/{variant}.log",
    benchmark:
        "benchmarks/train_stage1/{variant}.tsv"
    # A job that stops at its time limit is submitted again and resumes from its checkpoint.
    retries: TRAIN_RETRIES
    conda:
        "../../envs/train.yaml"
    threads: res("train_stage1", "threads")
    resources:
        **scheduler_resources("train_stage1", gpu_job="train"),
    params:
        stage=1,
        patients=TRAIN_PATIENTS,
        validation=VALIDATION_PATIENTS,
        config=stage_config("train_stage1"),
        gpus=gpu_count("train"),
    script:
        "../../scripts/train.py"


rule train_stage2:
    input:
        volumes=training_volumes,
        presets=MODEL_PRESET_FILES,
        init=stage1_model,
    output:
        model="results/models/{variant}/stage2/model.pt",
        losses="results/models/{variant}/stage2/losses.csv",
        curves=report(
            "results/models/{variant}/stage2/losses.png",
            caption="../report/losses.rst",
            category="Training",
            subcategory="{variant}",
            labels={"variant": "{variant}", "stage": "2"},
        ),
    log:
        "logs/train_stage2/{variant}.log",
    benchmark:
        "benchmarks/train_stage2/{variant}.tsv"
    retries: TRAIN_RETRIES
    conda:
        "../../envs/train.yaml"
    threads: res("train_stage2", "threads")
    resources:
        **scheduler_resources("train_stage2", gpu_job="train"),
    params:
        stage=2,
        patients=TRAIN_PATIENTS,
        validation=VALIDATION_PATIENTS,
        config=stage_config("train"),
        gpus=gpu_count("train"),
    script:
        "../../scripts/train.py"
