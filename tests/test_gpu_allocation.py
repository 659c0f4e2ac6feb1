"""Training launches one process per GPU that the scheduler gave the job."""

from __future__ import annotations

import pytest

from abmseg.train.distributed import allocated_gpu_count


@pytest.mark.parametrize(
    ("requested", "environ", "expected"),
    [
        (2, {"CUDA_VISIBLE_DEVICES": "0,1"}, 2),  # SLURM gave what the config asked for
        (2, {"CUDA_VISIBLE_DEVICES": "3"}, 1),  # fewer allocated than configured
        (1, {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4),  # a bigger allocation is used whole
        (2, {"CUDA_VISIBLE_DEVICES": "GPU-1a2b,GPU-3c4d"}, 2),  # UUID form
        (2, {"CUDA_VISIBLE_DEVICES": ""}, 0),  # none visible: CPU
        (2, {"CUDA_VISIBLE_DEVICES": "-1"}, 0),
        (2, {}, 2),  # a workstation: no scheduler, the config's count
        (0, {"CUDA_VISIBLE_DEVICES": "0,1"}, 0),  # a CPU configuration stays on the CPU
    ],
)
def test_process_count_follows_the_allocation(requested, environ, expected):
    assert allocated_gpu_count(requested, environ) == expected
