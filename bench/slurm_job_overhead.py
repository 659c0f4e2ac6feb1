"""What a SLURM job costs before the rule's code runs, on a live cluster (tests/slurm/cluster.sh).

A tiny synthetic cohort's convert jobs run through `snakemake --profile slurm`. For each job,
SLURM's accounting gives the submission and start times; the rule's log gives the moment the
rule's code began (its first line, "start rule convert"). Between start and that line lies the
job's own start-up: the batch script's Snakemake, srun, the inner Snakemake that builds the DAG
again, and the rule script's imports.

Usage (repository root, cluster running): python bench/slurm_job_overhead.py [--patients 4]
       [--checkout DIR]   # another checkout of abmseg (e.g. a git worktree of an older commit),
                          # run with its own Snakefile and package (PYTHONPATH=DIR/src)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from abmseg.synth import generate_cohort

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("JobIDRaw", "Submit", "Start", "End", "Comment")
RULE_START = re.compile(r"^(\S+ \S+) INFO abmseg\.convert: start rule convert for patient (\S+)")


def sacct_jobs(run_id: str, since: str) -> list[dict[str, str]]:
    out = subprocess.run(
        ["sacct", "-X", "--noheader", "--parsable2", "--format", ",".join(FIELDS),
         "--name", run_id, "--starttime", since],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [dict(zip(FIELDS, line.split("|"), strict=False)) for line in out.splitlines() if line]


def rule_starts(work: Path) -> dict[str, datetime]:
    """patient -> when the convert rule's code logged its first line."""
    starts = {}
    for log in (work / "logs" / "convert").glob("*.log"):
        for line in log.read_text().splitlines():
            match = RULE_START.match(line)
            if match:
                starts[match.group(2)] = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return starts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--checkout", type=Path, default=REPO)
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sheet = generate_cohort(root / "raw", n_patients=args.patients, seed=3, preset="tiny")
        patients = [line.split("\t")[0] for line in sheet.read_text().splitlines()[1:]]
        work = root / "work"
        work.mkdir()
        targets = [f"results/converted/{p}/meta.json" for p in patients]
        # checkouts before 0.2.0 have the Snakefile at the top level
        snakefile = next(
            path
            for path in (checkout / "workflow" / "Snakefile", checkout / "Snakefile")
            if path.is_file()
        )
        command = [
            sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
            "--directory", str(work), "--profile", str(checkout / "slurm"),
            "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", *targets,
            "--configfile", str(checkout / "config" / "config.yaml"),
            str(checkout / "config" / "demo.yaml"), str(REPO / "tests" / "slurm" / "gpus.yaml"),
            "--config", f"patients={sheet}",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"], "/usr/sbin"])
        env["PYTHONPATH"] = str(checkout / "src")
        since = (datetime.now() - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S")
        begin = time.perf_counter()
        result = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - begin
        log = result.stdout + result.stderr
        if result.returncode:
            sys.exit(f"snakemake failed ({result.returncode}):\n{log[-4000:]}")
        run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
        jobs = sacct_jobs(run_id, since)
        starts = rule_starts(work)
        rows = []
        for job in jobs:
            patient = next((p for p in patients if p in job["Comment"]), None)
            if patient is None or patient not in starts:
                continue
            submit, start = (datetime.fromisoformat(job[k]) for k in ("Submit", "Start"))
            rows.append(
                ((start - submit).total_seconds(), (starts[patient] - start).total_seconds())
            )
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; checkout {commit}")
    print(f"{len(rows)} convert jobs, snakemake --profile slurm wall {wall:.1f} s")
    queued = [r[0] for r in rows]
    startup = [r[1] for r in rows]
    print(
        f"queued (SLURM Submit -> Start): median {statistics.median(queued):.1f} s; "
        f"job start-up (Start -> rule code): median {statistics.median(startup):.2f} s, "
        f"range {min(startup):.2f}-{max(startup):.2f} s"
    )


if __name__ == "__main__":
    main()
