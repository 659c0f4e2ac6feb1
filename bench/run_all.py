"""Run every benchmark of bench/ in turn (`make bench`), each in its own process.

Each benchmark runs with the arguments of a laptop-scale run: its own defaults, except where
those would not fit a laptop (see ``reason`` below). Its output (the Markdown tables of
BENCHMARKS.md) streams through unchanged; after each one a line gives its name, exit status and
wall time, and a summary table closes the run. A failure does not stop the run; the exit status
is 1 if any benchmark failed. On a machine with a CUDA GPU, model_cost, train_infer and
predict_ct also time the GPU.

Usage: python bench/run_all.py [--only NAME [NAME ...]] [--list]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


@dataclass(frozen=True)
class Benchmark:
    """One script of bench/ and how run_all calls it."""

    script: str
    duration: str  # rough wall time of this run on a 2-core laptop CPU (BENCHMARKS.md)
    # Arguments, given a scratch folder of this run_all invocation.
    args: Callable[[Path], list[str]] = field(default=lambda work: [])
    reason: str = ""  # why the arguments differ from the script's defaults


BENCHMARKS: dict[str, Benchmark] = {
    "provenance_cost": Benchmark("provenance_cost.py", "under 1 min"),
    "model_cost": Benchmark("model_cost.py", "about 1 min"),
    "preprocess_patient": Benchmark("preprocess_patient.py", "about 1 min"),
    "fuzz_dicom": Benchmark("fuzz_dicom.py", "about 3 min"),
    "dag_scale": Benchmark("dag_scale.py", "about 3 min"),
    "train_infer": Benchmark(
        "train_infer.py",
        "about 5 min, 15 GB RAM",
        lambda work: ["--train-batch", "2"],
        "training batch 2: the default 4 runs out of memory in stage 2 on a 24 GB CPU machine",
    ),
    "predict_ct": Benchmark("predict_ct.py", "about 12 min"),
    "peak_rss": Benchmark(
        "peak_rss.py",
        "about 15 min",
        lambda work: ["--work", str(work / "peak_rss")],
        "a fresh work folder: the default /tmp one is reused, and a finished run there would "
        "be reported again instead of measured",
    ),
}


def command(bench: Benchmark, work: Path) -> list[str]:
    return [sys.executable, str(BENCH / bench.script), *bench.args(work)]


def run_one(name: str, bench: Benchmark, work: Path) -> tuple[int, float]:
    """Run one benchmark with this interpreter, output streaming through; (status, seconds)."""
    cmd = command(bench, work)
    shown = " ".join([Path(cmd[0]).name, *cmd[1:]]).replace(str(REPO) + os.sep, "")
    print(f"\n## {name}\n$ {shown}", flush=True)
    # The interpreter's bin folder first on PATH: snakemake and dcm2niix of the same venv.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    try:
        status = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode
    except OSError as exc:  # the interpreter or script could not be started at all
        print(f"could not start {name}: {exc}", file=sys.stderr)
        status = 127
    seconds = time.perf_counter() - start
    print(f"-- {name}: exit status {status}, wall time {seconds:.1f} s", flush=True)
    return status, seconds


def list_benchmarks() -> None:
    print("| name | laptop run | arguments | why not the script's defaults |\n|---|---|---|---|")
    for name, bench in BENCHMARKS.items():
        args = " ".join(bench.args(Path("TMP"))) or "(its defaults)"
        print(f"| {name} | {bench.duration} | {args} | {bench.reason} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", choices=list(BENCHMARKS), help="run only these"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        list_benchmarks()
        return 0
    names = [n for n in BENCHMARKS if args.only is None or n in args.only]
    results: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="abmseg-bench-") as tmp:
        for name in names:
            results[name] = run_one(name, BENCHMARKS[name], Path(tmp))
    print("\n| benchmark | exit status | wall time (s) |\n|---|---|---|")
    for name, (status, seconds) in results.items():
        print(f"| {name} | {status}{'' if status == 0 else ' FAILED'} | {seconds:.1f} |")
    failed = [name for name, (status, _) in results.items() if status != 0]
    sys.stdout.flush()
    if failed:
        print(f"\n{len(failed)} of {len(results)} failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
