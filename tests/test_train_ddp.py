"""``--gpus 2`` on a CPU machine: the CLI relaunches itself under torch.distributed.run, two gloo
processes train one epoch of ``full`` stage 1 on different shards, rank 0 writes the outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_train import base_config, make_cohort

from abmseg.models.trained_model import load_trained_model
from abmseg.train.progress import read_losses_csv


def test_two_gloo_processes_train_on_different_shards(tmp_path):
    make_cohort(tmp_path / "data")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(base_config(max_slices_per_epoch=8)))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "abmseg.train.cli",
        "--stage",
        "1",
        "--variant",
        "full",
        "--config",
        str(config),
        "--patients",
        str(tmp_path / "data" / "patients.tsv"),
        "--out",
        str(out),
        "--gpus",
        "2",
        "--backend",
        "gloo",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    (row,) = read_losses_csv(out / "losses.csv")
    assert int(row["ranks"]) == 2
    # 8 slices per epoch = 2 batches of 2 on each rank; all distinct: the shards differ.
    assert int(row["slices"]) == 8 and int(row["distinct_slices"]) == 8
    assert result.stderr.count("epoch 1/1 done") == 1  # only rank 0 reports
    bundle = load_trained_model(out / "model.pt")
    assert bundle["variant"] == "full" and "g_ct2pet" in bundle
    assert not any(k.startswith("module.") for k in bundle["mpfpsn"].state_dict())
