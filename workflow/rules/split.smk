rule split:
    input:
        sheet=config["patients"],
    output:
        "results/split.tsv",
    params:
        assignment=SPLIT,
    log:
        "logs/split.log",
    threads: res("split", "threads")
    resources:
        mem_mb=res("split", "mem_mb"),
        runtime=res("split", "runtime"),
    conda:
        "../../envs/preprocess.yaml"
    script:
        "../../scripts/split.py"
