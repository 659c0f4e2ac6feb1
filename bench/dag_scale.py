"""Time `snakemake -n` (DAG build + dry run) for cohorts of N patients.

The cohort is a sheet of N patients whose series folders hold two placeholder files each: a dry
run reads no image, it only plans jobs. Usage: python bench/dag_scale.py 253 2000
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from abmseg.workflow_run import run_snakemake


def make_cohort(root: Path, n: int) -> Path:
    lines = ["patient_id\tct\tpet\tlabel"]
    for k in range(n):
        pid = f"P{k:05d}"
        for series in ("CT", "PET"):
            folder = root / pid / series
            folder.mkdir(parents=True)
            for i in range(2):
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
    jobs = sum(
        int(line.split()[-1])
        for line in proc.stdout.splitlines()
        if line.strip().split() and line.strip().split()[0] == "total"
    )
    return seconds, jobs


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [253, 2000]
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| patients | jobs planned | `snakemake -n` seconds |\n|---|---|---|")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            sheet = make_cohort(root / "cohort", n)
            (root / "work").mkdir()
            seconds, jobs = dry_run_seconds(sheet, root / "work")
            print(f"| {n} | {jobs} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
