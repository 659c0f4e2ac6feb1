"""Rule study_summary: ablation, per-patient, paired and sampler tables, summary.md, figures."""

from pathlib import Path

from abmseg.io.jsonfile import read_json
from abmseg.step import rule_step
from abmseg.study.plan import StudyPlan
from abmseg.study.summary import write_study

job = snakemake
with rule_step(job) as log:
    records = {method: [] for method in job.params.methods}
    for path in job.input.metrics:
        records[Path(path).parent.name].append(read_json(path))
    plan = StudyPlan.from_config(job.params.config)
    text = write_study(
        records,
        [read_json(path) for path in job.input.sampler],
        read_json(job.input.leakage),
        read_json(job.input.start),
        job.params.variants,
        dict(job.output.items()),
        plan.bootstrap_resamples,
        plan.bootstrap_seed,
    )
    log.info("study summary:\n%s", text)
