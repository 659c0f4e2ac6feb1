# The validation study (config study.enabled; `make study`, docs/validation.md): CT baselines
# fitted on the training patients, the phantom's CT-visible ceiling and the PET threshold are
# scored by the metrics rules beside the variants; the full model's sampler sweep; leakage
# checks; the study's tables, figures and summary.


rule fit_baselines:
    input:
        volumes=study_training_volumes,
    output:
        "results/study/baselines.json",
    log:
        "logs/study/fit_baselines.log",
    benchmark:
        "benchmarks/study/fit_baselines.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("study", "threads")
    resources:
        **scheduler_resources("study"),
    params:
        patients=TRAIN_PATIENTS,
        config=stage_config("study_fit"),
    script:
        "../../scripts/study_fit_baselines.py"


rule apply_baseline:
    input:
        models="results/study/baselines.json",
        ct="results/cropped/{patient}/ct.nii.gz",
        pet=baseline_pet,
    output:
        abm="results/study/methods/{method}/{patient}/abm.nii.gz",
    log:
        "logs/study/apply_baseline/{method}/{patient}.log",
    benchmark:
        "benchmarks/study/apply_baseline/{method}/{patient}.tsv"
    wildcard_constraints:
        method="|".join(STUDY_BASELINES),
    conda:
        "../../envs/preprocess.yaml"
    threads: res("study", "threads")
    resources:
        **scheduler_resources("study"),
    script:
        "../../scripts/study_apply_baseline.py"


rule ceiling:
    input:
        label=get_label,
        cropped_label="results/cropped/{patient}/label.nii.gz",
        roi="results/cropped/{patient}/roi.json",
    output:
        abm="results/study/methods/ceiling/{patient}/abm.nii.gz",
    log:
        "logs/study/ceiling/{patient}.log",
    benchmark:
        "benchmarks/study/ceiling/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("study", "threads")
    resources:
        **scheduler_resources("study"),
    script:
        "../../scripts/study_ceiling.py"


rule metrics_reference:
    input:
        abm="results/study/methods/{method}/{patient}/abm.nii.gz",
        pet="results/cropped/{patient}/pet_suv.nii.gz",
        label="results/cropped/{patient}/label.nii.gz",
        ct="results/cropped/{patient}/ct.nii.gz",
    output:
        "results/metrics/{method}/{patient}.json",
    log:
        "logs/metrics/{method}/{patient}.log",
    benchmark:
        "benchmarks/metrics/{method}/{patient}.tsv"
    wildcard_constraints:
        method="|".join(STUDY_REFERENCES),
    conda:
        "../../envs/preprocess.yaml"
    threads: res("metrics", "threads")
    resources:
        **scheduler_resources("metrics"),
    params:
        config=stage_config("evaluate"),
    script:
        "../../scripts/metrics.py"


rule select_start:
    input:
        model="results/models/full/stage2/model.pt",
        volumes=start_selection_volumes,
    output:
        "results/study/start_selection.json",
    log:
        "logs/study/select_start.log",
    benchmark:
        "benchmarks/study/select_start.tsv"
    conda:
        "../../envs/train.yaml"
    threads: res("infer", "threads")
    resources:
        **scheduler_resources("infer", gpu_job="infer"),
    params:
        patients=start_selection_patients,
        config=stage_config("study_sampler"),
    script:
        "../../scripts/study_sampler.py"


rule sampler_point:
    input:
        model="results/models/full/stage2/model.pt",
        volumes=test_volumes,
        start=sampler_start_input,
    output:
        "results/study/sampler/{point}.json",
    log:
        "logs/study/sampler/{point}.log",
    benchmark:
        "benchmarks/study/sampler/{point}.tsv"
    wildcard_constraints:
        point="pseudo|dd[ip]m-[0-9]+-[A-Za-z0-9]+",
    conda:
        "../../envs/train.yaml"
    threads: res("infer", "threads")
    resources:
        **scheduler_resources("infer", gpu_job="infer"),
    params:
        patients=TEST_PATIENTS,
        config=stage_config("study_sampler"),
    script:
        "../../scripts/study_sampler.py"


rule leakage:
    input:
        models=trained_models,
        fitted=["results/study/baselines.json", "results/study/start_selection.json"],
        predictions=expand(
            "results/inference/full/{patient}/abm.nii.gz", patient=TEST_PATIENTS
        ),
        labels=expand("results/cropped/{patient}/label.nii.gz", patient=TEST_PATIENTS),
    output:
        "results/study/leakage.json",
    log:
        "logs/study/leakage.log",
    benchmark:
        "benchmarks/study/leakage.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("study", "threads")
    resources:
        **scheduler_resources("study"),
    params:
        test_patients=TEST_PATIENTS,
        test_raw=test_raw_inputs,
        config=stage_config("study_leakage"),
    script:
        "../../scripts/study_leakage.py"


rule study_summary:
    input:
        metrics=study_metrics,
        sampler=expand("results/study/sampler/{point}.json", point=SAMPLER_POINTS),
        start="results/study/start_selection.json",
        leakage="results/study/leakage.json",
    output:
        ablation="results/study/ablation.tsv",
        per_patient="results/study/per_patient.tsv",
        paired="results/study/paired.tsv",
        sampler="results/study/sampler.tsv",
        markdown=report(
            "results/study/summary.md",
            caption="../report/study.rst",
            category="Study",
        ),
        dice_figure=report(
            "results/study/dice_per_region.png",
            caption="../report/study_dice.rst",
            category="Study",
        ),
        sampler_figure=report(
            "results/study/sampler.png",
            caption="../report/study_sampler.rst",
            category="Study",
        ),
    log:
        "logs/study/summary.log",
    benchmark:
        "benchmarks/study/summary.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("study", "threads")
    resources:
        **scheduler_resources("study"),
    params:
        methods=STUDY_METHODS,
        variants=VARIANTS,
        config=stage_config("study_summary"),
    script:
        "../../scripts/study_summary.py"
