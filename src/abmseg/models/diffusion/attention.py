"""Bidirectional CT <-> noisy-PET cross-attention at the denoiser's bottleneck.

See docs/method.md, "Denoiser and bidirectional cross-attention".

Two multi-head cross-attentions over the flattened bottleneck tokens:

* ``pet_queries_ct``: Q from noisy-PET features, K/V from CT features. Its values are CT content,
  so this branch is the *CT guidance* and is scaled by ``w_ct``.
* ``ct_queries_pet``: Q from CT features, K/V from noisy-PET features. Its values are the model's
  own current PET state, so this branch is the *previous denoising result* and is scaled by
  ``w_prev``.

Both are fused by concatenation + 1x1 conv and added to the PET features (residual). Because the
1x1 conv is linear, ``conv([w_ct a, w_prev b]) = w_ct W_a a + w_prev W_b b + bias``: the adaptive
weights of :mod:`.weighting` act as a weighted sum of the two attended feature maps. CT and PET
are on the same grid, so the CT-position outputs of ``ct_queries_pet`` align with PET positions.

Attention uses ``F.scaled_dot_product_attention``, which picks memory-efficient/flash kernels on
GPU; at the paper preset (32 x 32 = 1024 tokens) even the plain kernel needs ~0.1 GB per branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)
from torch import Tensor, nn


def group_count(channels: int, max_groups: int) -> int:
    """Largest divisor of ``channels`` that is <= ``max_groups`` (GroupNorm needs a divisor)."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def as_batch_weight(w: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """A scalar or per-sample weight as a (B, 1, ..., 1) tensor broadcastable against ``like``."""
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device).reshape(-1)
    if w.numel() == 1:
        w = w.expand(batch)
    if w.numel() != batch:
        raise ValueError(f"weight has {w.numel()} entries for a batch of {batch}")
    return w.reshape(batch, *([1] * (like.dim() - 1)))


class MultiHeadCrossAttention(nn.Module):
    """Multi-head attention of ``query`` tokens over ``context`` tokens (both (B, N, C))."""

    def __init__(
        self,
        query_dim: int,
        context_dim: int,
        heads: int = 4,
        dim_head: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dim_head = dim_head or max(query_dim // heads, 1)
        inner = heads * dim_head
        self.heads = heads
        self.dropout = dropout
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        q, k, v = (
            self._split(self.to_q(query)),
            self._split(self.to_k(context)),
            self._split(self.to_v(context)),
        )
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class BidirectionalCrossAttention(nn.Module):
    """CT queries PET and PET queries CT; the two results are weighted, fused and added to PET."""

    def __init__(
        self,
        channels: int,
        heads: int = 4,
        dim_head: int | None = None,
        norm_groups: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        groups = group_count(channels, norm_groups)
        self.norm_pet = nn.GroupNorm(groups, channels)
        self.norm_ct = nn.GroupNorm(groups, channels)
        self.pet_queries_ct = MultiHeadCrossAttention(channels, channels, heads, dim_head, dropout)
        self.ct_queries_pet = MultiHeadCrossAttention(channels, channels, heads, dim_head, dropout)
        self.fuse = nn.Conv2d(2 * channels, channels, kernel_size=1)

    def forward(
        self, pet: Tensor, ct: Tensor, w_ct: Tensor | float, w_prev: Tensor | float
    ) -> Tensor:
        if pet.shape != ct.shape:
            raise ValueError(f"PET {tuple(pet.shape)} and CT {tuple(ct.shape)} features differ")
        b, c, h, w = pet.shape
        p = self.norm_pet(pet).flatten(2).transpose(1, 2)
        k = self.norm_ct(ct).flatten(2).transpose(1, 2)
        guidance = self.pet_queries_ct(p, k)  # CT content at PET positions
        own = self.ct_queries_pet(k, p)  # PET content re-read through CT structure
        guidance = guidance.transpose(1, 2).reshape(b, c, h, w)
        own = own.transpose(1, 2).reshape(b, c, h, w)
        w_ct = as_batch_weight(w_ct, b, pet)
        w_prev = as_batch_weight(w_prev, b, pet)
        return pet + self.fuse(torch.cat([w_ct * guidance, w_prev * own], dim=1))
