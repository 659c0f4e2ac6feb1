"""Segmentation loss of MP-FPSN: squared-denominator soft Dice + cross-entropy, weighted 1:1.

Dice counters the class imbalance (marrow regions are a few percent of a pelvic slice);
cross-entropy gives well-scaled per-pixel gradients early in training when the soft Dice is flat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)
from torch import Tensor, nn


def soft_dice_per_class(probs: Tensor, onehot: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-class loss ``1 - (2 sum(p g) + eps) / (sum(p^2) + sum(g^2) + eps)``, shape (C,).

    Sums run over the batch and all spatial positions (one Dice per class for the whole batch),
    so a class absent from one slice but present in another does not make the loss jump.
    A class empty in both prediction and target scores exactly 0 (``eps / eps``); empty in the
    target but predicted, it approaches 1. ``probs`` and ``onehot`` are (N, C, *spatial).
    """
    if probs.shape != onehot.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and onehot {tuple(onehot.shape)} differ")
    dims = [0, *range(2, probs.ndim)]
    intersection = (probs * onehot).sum(dims)
    denominator = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
    return 1.0 - (2.0 * intersection + eps) / (denominator + eps)


def dice_loss(
    logits: Tensor, target: Tensor, eps: float = 1e-5, include_background: bool = False
) -> Tensor:
    """Soft Dice of ``softmax(logits)`` against integer labels, averaged over classes.

    By default only foreground classes 1..C-1 are averaged (the three ABM regions): background
    covers most of a slice, its Dice is near 1 from the start and would dilute the signal.
    ``include_background=True`` averages classes 0..C-1. ``logits`` (N, C, *spatial),
    ``target`` (N, *spatial) integer class indices.
    """
    n_classes = logits.shape[1]
    if not include_background and n_classes < 2:
        raise ValueError("include_background=False needs at least 2 classes")
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target.long(), n_classes).movedim(-1, 1).to(probs.dtype)
    per_class = soft_dice_per_class(probs, onehot, eps)
    return per_class.mean() if include_background else per_class[1:].mean()


class SegmentationLoss(nn.Module):
    """``dice_weight * Dice + ce_weight * CE`` (the paper: 1:1); returns every term for logging."""

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        eps: float = 1e-5,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.eps = eps
        self.include_background = include_background

    def forward(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``{"dice", "ce", "total"}`` for logits (N, C, H, W) and integer labels (N, H, W)."""
        dice = dice_loss(logits, target, self.eps, self.include_background)
        ce = F.cross_entropy(logits.float(), target.long())
        total = self.dice_weight * dice + self.ce_weight * ce
        return {"dice": dice, "ce": ce, "total": total}


__all__ = ["SegmentationLoss", "dice_loss", "soft_dice_per_class"]
