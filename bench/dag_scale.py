"""Time `snakemake -n` (DAG build + dry run) for cohorts of N patients.

The cohort is a sheet of N patients whose series folders hold placeholder files (two each unless
--files-per-series says otherwise): a dry run reads no image, it only plans jobs. Each series is
one input (its state file, abmseg.cohort.series_state), but the DAG build lists and stats every
file, so the file count still matters a little. Each size is dry-run twice in one folder: the
first run writes the state files, the second only reads them.
Usage: python bench/dag_scale.py 253 2000 10000 [--files-per-series 150]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from abmseg.workflow_run import run_snakemake


def make_cohort(root: Path, n: int, files_per_series: int = 2) -> Path:
    lines = ["patient_id\tct\tpet\tlabel"]
    for k in range(n):
        pid = f"P{k:05d}"
        for series in ("CT", "PET"):
            folder = root / pid / series
            folder.mkdir(parents=True)
            for i in range(files_per_series):
                (folder / f"{i}.dcm").touch()
        (root / pid / "label.nii.gz").touch()
        lines.append(f"{pid}\t{pid}/CT\t{pid}/PET\t{pid}/label.nii.gz")
    sheet = root / "patients.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def dry_run_seconds(sheet: Path, workdir: Path) -> tuple[float, int]:
    start = time.perf_counter()
    proc = run_snakemake(workdir, sheet, "-n", "--quiet", "rules")
    seconds = time.perf_counter() - start
    proc.check_returncode()
    # The job table is printed twice (plan and dry-run summary): count its first total only.
    jobs = next(
        int(line.split()[-1])
        for line in proc.stdout.splitlines()
        if line.strip().split() and line.strip().split()[0] == "total"
    )
    return seconds, jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", type=int, nargs="*", default=[253, 2000, 10000])
    parser.add_argument("--files-per-series", type=int, default=2)
    args = parser.parse_args()
    sizes = args.sizes
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.files_per_series} DICOM files per series")
    print("| patients | jobs planned | `snakemake -n` seconds, first | again |\n|---|---|---|---|")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            sheet = make_cohort(root / "cohort", n, args.files_per_series)
            (root / "work").mkdir()
            # The first dry run in a folder also writes the series state files; later ones read.
            first, jobs = dry_run_seconds(sheet, root / "work")
            again, _ = dry_run_seconds(sheet, root / "work")
            print(f"| {n} | {jobs} | {first:.2f} | {again:.2f} |", flush=True)


if __name__ == "__main__":
    main()
