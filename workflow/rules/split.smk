rule split:
    input:
        sheet=config["patients"],
    output:
        "results/split.tsv",
    log:
        "logs/split.log",
    conda:
        "../../envs/preprocess.yaml"
    threads: res("split", "threads")
    resources:
        mem_mb=res("split", "mem_mb"),
        runtime=res("split", "runtime"),
    params:
        assignment=SPLIT,
    script:
        "../../scripts/split.py"
