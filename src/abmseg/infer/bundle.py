"""Load a trained model bundle (the training's model.pt) as the networks inference needs."""

from __future__ import annotations

from pathlib import Path

import torch

from abmseg.infer.predict import Networks
from abmseg.train.networks import load_bundle


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_networks(path: str | Path, threads: int = 1) -> tuple[Networks, torch.device]:
    """Networks in eval mode on the best device (CUDA when present, else CPU with ``threads``)."""
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, threads))
    bundle = load_bundle(path, device)
    networks = Networks(
        mpfpsn=bundle["mpfpsn"],
        image_size=int(bundle["image_size"]),
        g_ct2pet=bundle.get("g_ct2pet"),
        diffusion=bundle.get("diffusion"),
    )
    return networks, device
