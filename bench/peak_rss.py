"""Peak memory per rule, read from Snakemake's benchmark files, and how the cohort-wide steps'
memory grows with the number of patients.

1. A real run on paper-sized synthetic patients (`abmseg synth --preset paper`: CT 512 x 512,
   PET 192 x 192) with the demo's model settings (config/demo.yaml), `--cores 2`; prints the
   max_rss (MB) of every rule from benchmarks/**/*.tsv (max and median over its jobs).
2. The steps whose input is the whole cohort (split, aggregate), run alone in a fresh
   process for N patients; prints each one's peak RSS (VmHWM).

Usage: python bench/peak_rss.py --patients 4 --work /tmp/rss [--sizes 253 2000 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pandas as pd

from abmseg.synth import generate_cohort
from abmseg.workflow_run import REPO, run_snakemake


def run_pipeline(work: Path, patients: int) -> Path:
    """Synthesise the cohort (once) and run the whole DAG; return the finished work folder."""
    sheet = work / "raw" / "patients.tsv"
    if not sheet.exists():
        generate_cohort(work / "raw", n_patients=patients, seed=5, preset="paper")
    (work / "run").mkdir(parents=True, exist_ok=True)
    result = run_snakemake(
        work / "run",
        sheet,
        "--cores",
        "2",
        configfiles=[REPO / "config" / "demo.yaml"],
        timeout=7200,
    )
    if result.returncode != 0:
        sys.exit(result.stdout[-3000:] + result.stderr[-3000:])
    return work / "run"


def rule_memory(run: Path) -> list[tuple[str, int, float, float, float]]:
    """(rule, jobs, max of max_rss MB, median max_rss MB, median seconds) per rule."""
    found: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for path in sorted((run / "benchmarks").rglob("*.tsv")):
        rule = path.relative_to(run / "benchmarks").parts[0].removesuffix(".tsv")
        row = pd.read_csv(path, sep="\t").iloc[-1]
        found[rule].append((float(row["max_rss"]), float(row["s"])))
    return [
        (
            rule,
            len(rows),
            max(r for r, _ in rows),
            statistics.median(r for r, _ in rows),
            statistics.median(s for _, s in rows),
        )
        for rule, rows in found.items()
    ]


def measure(step: str, n: int, template: Path) -> None:
    """Run one cohort-wide step for n patients in this (fresh) process; print its peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ids = [f"P{k:05d}" for k in range(n)]
        if step == "split":
            from abmseg.cohort.split import assign_split, write_split

            write_split(assign_split(ids, 0.7, "abmseg-split-v1"), folder / "split.tsv")
        else:
            from abmseg.evaluate.aggregate import aggregate_files

            record = json.loads(template.read_text())
            files = []
            for pid in ids:
                record["patient_id"] = pid
                path = folder / f"{pid}.json"
                path.write_text(json.dumps(record))
                files.append(path)
            aggregate_files(files, folder / "a.tsv", folder / "b.tsv", folder / "c.md")
    print(peak_rss_mb())


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that across exec from the
    parent that forked us, so a child of a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cohort_growth(sizes: list[int], template: Path) -> None:
    print("\n| step | " + " | ".join(f"{n} patients" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for step in ("split", "aggregate"):
        cells = []
        for n in sizes:
            out = subprocess.run(
                [sys.executable, __file__, "--measure", step, str(n), str(template)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            cells.append(f"{float(out.split()[-1]):.0f} MB")
        print(f"| {step} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/abmseg-peak-rss"))
    parser.add_argument("--sizes", type=int, nargs="*", default=[253, 2000, 10000])
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure[0], int(args.measure[1]), Path(args.measure[2]))
        return
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    run = run_pipeline(args.work, args.patients)
    print("\n| rule | jobs | peak RSS, max (MB) | peak RSS, median (MB) | median s |")
    print("|---|---|---|---|---|")
    for rule, jobs, peak, median, seconds in rule_memory(run):
        print(f"| {rule} | {jobs} | {peak:.0f} | {median:.0f} | {seconds:.1f} |")
    template = next((run / "results" / "metrics").rglob("*/*.json"))
    cohort_growth(args.sizes, template)


if __name__ == "__main__":
    main()
