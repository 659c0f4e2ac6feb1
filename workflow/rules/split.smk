rule split:
    input:
        sheet=config["patients"],
    output:
        "results/split.tsv",
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("split", "threads")
    resources:
        **scheduler_resources("split"),
    params:
        assignment=SPLIT,
    script:
        "../../scripts/split.py"
