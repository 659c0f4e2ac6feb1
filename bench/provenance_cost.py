"""Time the provenance record of a paper-sized convert job, and SHA-256 throughput.

The job reads 96 CT slices of 512 KiB and 100 PET slices of 128 KiB (a paper-sized DICOM pair)
and writes three volumes of 24 MiB (compressed NIfTI of that size); every byte is random, so no
filesystem trick shortens the hashing. Usage: python bench/provenance_cost.py
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from abmseg.provenance.hashing import digest
from abmseg.provenance.record import JobRecorder

CT_SLICES, CT_SLICE_BYTES = 96, 512 * 1024
PET_SLICES, PET_SLICE_BYTES = 100, 128 * 1024
VOLUME_BYTES = 24 * 1024 * 1024
REPEATS = 5


def write_random(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return str(path)


def paper_sized_job(root: Path) -> SimpleNamespace:
    raw = root / "raw" / "P001"
    ct = [write_random(raw / "CT" / f"{i:03d}.dcm", CT_SLICE_BYTES) for i in range(CT_SLICES)]
    pet = [write_random(raw / "PET" / f"{i:03d}.dcm", PET_SLICE_BYTES) for i in range(PET_SLICES)]
    label = write_random(raw / "label.nii.gz", VOLUME_BYTES // 8)
    return SimpleNamespace(
        rule="convert",
        wildcards={"patient": "P001"},
        input={"ct": ct, "pet": pet, "label": label},
        output={
            name: f"results/converted/P001/{name}.nii.gz" for name in ("ct", "pet_suv", "label")
        },
        log=["logs/convert/P001.log"],
        params={"labels": [0, 1, 2, 3]},
        config={"seed": 42},
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        os.chdir(work)
        job = paper_sized_job(root)
        seconds = []
        for _ in range(REPEATS):
            recorder = JobRecorder(job)
            recorder.start()  # hashes the inputs
            for path in job.output.values():
                write_random(Path(path), VOLUME_BYTES)
            records = recorder.finish()  # hashes the outputs, writes one record per output
            assert len(records) == len(job.output)
            seconds.append(recorder.seconds)
        hashed = CT_SLICES * CT_SLICE_BYTES + PET_SLICES * PET_SLICE_BYTES + VOLUME_BYTES // 8
        hashed += 3 * VOLUME_BYTES
        big = write_random(root / "big.bin", 512 * 1024 * 1024)
        begin = time.perf_counter()
        digest(big)
        throughput = 512 / (time.perf_counter() - begin)
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(
        f"convert job, {hashed / 2**20:.0f} MiB in {CT_SLICES + PET_SLICES + 1} inputs and 3 "
        f"outputs: provenance adds {statistics.median(seconds):.3f} s "
        f"(median of {REPEATS}; min {min(seconds):.3f}, max {max(seconds):.3f})"
    )
    print(f"SHA-256 of a 512 MiB file: {throughput:.0f} MiB/s")


if __name__ == "__main__":
    main()
