"""Training launches one process per GPU that the scheduler gave the job."""

from __future__ import annotations

import pytest

from abmseg.train.distributed import allocated_gpu_count

SLURM = {"SLURM_JOB_ID": "4242"}


@pytest.mark.parametrize(
    ("requested", "environ", "expected"),
    [
        (2, {**SLURM, "CUDA_VISIBLE_DEVICES": "0,1"}, 2),  # SLURM gave what was asked for
        (2, {**SLURM, "CUDA_VISIBLE_DEVICES": "3"}, 1),  # fewer allocated than configured
        (1, {**SLURM, "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4),  # a bigger allocation, used whole
        (2, {**SLURM, "CUDA_VISIBLE_DEVICES": "GPU-1a2b,GPU-3c4d"}, 2),  # UUID form
        (2, {**SLURM, "CUDA_VISIBLE_DEVICES": ""}, 0),  # none visible: CPU
        (2, {"CUDA_VISIBLE_DEVICES": "-1"}, 0),
        (2, {}, 2),  # a workstation: the config's count
        (1, {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 1),  # ... capped by what the user made visible
        (4, {"CUDA_VISIBLE_DEVICES": "0,1"}, 2),
        (0, {**SLURM, "CUDA_VISIBLE_DEVICES": "0,1"}, 0),  # a CPU configuration stays on the CPU
    ],
)
def test_process_count_follows_the_allocation(requested, environ, expected):
    assert allocated_gpu_count(requested, environ) == expected
