"""How a cropped axial slice becomes a fixed-size network input, and back.

The cropped grid differs per patient (e.g. 90x70 tiny, ~420x320 paper); the networks want a fixed
square. ``to_network`` pads each slice symmetrically to a square (the anatomy keeps its aspect
ratio) and resizes it; ``from_network`` undoes exactly that geometry. Training (``abmseg.train``)
and inference (``abmseg.infer``) both use it, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)

Kind = Literal["image", "label"]
IMAGE_FILL = -1.0  # air in CT, SUV 0 in PET, after normalisation to [-1, 1]
LABEL_FILL = 0  # background


@dataclass(frozen=True)
class SliceGeometry:
    """Pad (h, w) symmetrically to a square of side max(h, w), then resize to ``image_size``."""

    height: int
    width: int
    image_size: int

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom); odd remainders go to the right/bottom."""
        extra_h, extra_w = self.side - self.height, self.side - self.width
        return extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2

    def to_network(self, array2d: np.ndarray | torch.Tensor, kind: Kind = "image") -> torch.Tensor:
        """(h, w) slice -> (S, S) tensor: float32 for images, int64 for labels."""
        _check_kind(kind)
        x = array2d if torch.is_tensor(array2d) else torch.from_numpy(np.ascontiguousarray(array2d))
        if tuple(x.shape) != (self.height, self.width):
            raise ValueError(f"slice shape {tuple(x.shape)} != ({self.height}, {self.width})")
        fill = IMAGE_FILL if kind == "image" else float(LABEL_FILL)
        square = F.pad(x.float()[None, None], self.padding, mode="constant", value=fill)
        shrink = self.image_size < self.side
        out = _resize(square, self.image_size, kind, antialias=shrink)[0, 0]
        return out.contiguous() if kind == "image" else out.round().long()

    def from_network(self, tensor2d: torch.Tensor, kind: Kind = "image") -> np.ndarray:
        """(..., S, S) network-space tensor -> (..., h, w) array on the cropped slice grid.

        Leading dimensions (e.g. class probabilities) are kept, so soft outputs can be mapped back
        before an argmax.
        """
        _check_kind(kind)
        t = torch.as_tensor(tensor2d).detach().cpu()
        lead = t.shape[:-2]
        flat = t.reshape(-1, 1, *t.shape[-2:]).float()
        square = _resize(flat, self.side, kind)
        left, right, top, bottom = self.padding
        crop = square[..., top : self.side - bottom, left : self.side - right]
        crop = crop.reshape(*lead, self.height, self.width)
        if kind == "label":
            return crop.round().long().numpy()
        return np.array(crop.numpy(), dtype=np.float32)  # a copy, never a view of the input


def _check_kind(kind: str) -> None:
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")


def _resize(batch: torch.Tensor, size: int, kind: Kind, antialias: bool = False) -> torch.Tensor:
    """Resize (N, 1, s, s) to (N, 1, size, size); identity when the size already matches.

    Images: bilinear, align_corners=False; ``antialias`` only on the way in when shrinking
    (paper-size crops of ~420 pixels go to 256: point sampling would alias fine bone edges). The
    way back samples at the original pixel centres, the exact inverse geometry. Labels:
    "nearest-exact", the pixel-centre-aligned nearest (torch's legacy "nearest" is shifted by half a
    pixel, which makes the round trip drift).
    """
    if batch.shape[-1] == size and batch.shape[-2] == size:
        return batch
    if kind == "label":
        return F.interpolate(batch, size=(size, size), mode="nearest-exact")
    return F.interpolate(
        batch, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
    )


def to_network(array2d: np.ndarray, image_size: int, kind: Kind = "image") -> torch.Tensor:
    """Cropped (h, w) slice -> (image_size, image_size) network input (see ``SliceGeometry``)."""
    h, w = np.shape(array2d)
    return SliceGeometry(int(h), int(w), image_size).to_network(array2d, kind)


def from_network(
    tensor2d: torch.Tensor, original_hw: tuple[int, int], kind: Kind = "image"
) -> np.ndarray:
    """Network-space (..., S, S) tensor -> (..., h, w) array: the exact inverse geometry."""
    size = int(tensor2d.shape[-1])
    if int(tensor2d.shape[-2]) != size:
        raise ValueError(f"network tensor must be square, got {tuple(tensor2d.shape)}")
    h, w = original_hw
    return SliceGeometry(int(h), int(w), size).from_network(tensor2d, kind)


def body_slices(ct: np.ndarray, body_threshold: float) -> np.ndarray:
    """Indices z of axial CT slices with any voxel above ``body_threshold`` (normalised units)."""
    return np.flatnonzero((ct > body_threshold).reshape(ct.shape[0], -1).any(axis=1))
