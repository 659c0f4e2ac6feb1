"""History buffer of generated images for discriminator updates (Shrivastava et al., 2017).

Showing the discriminator a mix of current and older fakes damps the oscillation between the two
players, as in the reference CycleGAN. Randomness comes from a ``torch.Generator`` so that a run
is reproducible given its seed (and resumable via :meth:`ImagePool.state_dict`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class ImagePool:
    """Keep up to ``pool_size`` past fakes; each query swaps in stored ones with probability 0.5.

    Args:
        pool_size: images kept; 0 makes :meth:`query` a pass-through (no history).
        seed: seeds the private generator when ``generator`` is not given.
        generator: a CPU ``torch.Generator`` to draw from (shared RNG streams are the caller's
            choice); overrides ``seed``.
    """

    def __init__(
        self, pool_size: int = 50, seed: int = 0, generator: torch.Generator | None = None
    ) -> None:
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.pool_size = int(pool_size)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.images: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: Tensor) -> Tensor:
        """Return a batch of the same size as ``images``, some replaced by stored history.

        Inputs are detached before storing: the pool feeds only discriminator updates.
        """
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.clone()
            if len(self.images) < self.pool_size:
                self.images.append(image)
                out.append(image)
            elif torch.rand((), generator=self.generator).item() > 0.5:
                index = int(torch.randint(self.pool_size, (), generator=self.generator).item())
                out.append(self.images[index].to(image.device))
                self.images[index] = image
            else:
                out.append(image)
        return torch.stack(out, dim=0)

    def state_dict(self) -> dict[str, Any]:
        """Stored images and RNG state, for checkpoints that resume bit-identically."""
        return {
            "pool_size": self.pool_size,
            "images": [image.cpu() for image in self.images],
            "rng_state": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.pool_size = int(state["pool_size"])
        self.images = [image.clone() for image in state["images"]]
        self.generator.set_state(state["rng_state"])
