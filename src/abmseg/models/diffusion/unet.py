"""CT-conditioned noise predictor eps_theta(x_t, t, c) of the diffusion refiner.

See docs/method.md, "Denoiser and bidirectional cross-attention".

A U-Net over the noisy PET (conv + pooling encoder, up-sampling + skip decoder) whose residual
blocks receive a sinusoidal time embedding through an MLP, and a separate CT encoder with the same
number of levels and widths. The CT encoder does not see ``t``, so a sampler encodes the CT once
per chain (:meth:`CTConditionedUNet.encode_ct`) and reuses the features at every step. The two
streams meet at the bottleneck in :class:`BidirectionalCrossAttention`; with ``ct_skips`` the CT
features of every level are also added (1x1 projected, scaled by ``w_ct``) to the decoder's skips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)
from torch import Tensor, nn

from abmseg.models.diffusion.attention import (
    BidirectionalCrossAttention,
    as_batch_weight,
    group_count,
)

DOWNSAMPLE_KINDS = ("avg", "max", "conv")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal embedding of (possibly fractional) timesteps, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float().reshape(-1, 1) * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t`` followed by a two-layer SiLU MLP."""

    def __init__(self, sinusoid_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.mlp = nn.Sequential(
            nn.Linear(sinusoid_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.sinusoid_dim))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added between the convs (DDPM block)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_dim: int,
        norm_groups: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_channels, norm_groups), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(group_count(out_channels, norm_groups), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, kernel_size=1)
        )

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class ConvBlock(nn.Module):
    """``n`` x (conv3x3 - GroupNorm - SiLU): one level of the CT encoder (no time input)."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 2, norm_groups: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                nn.GroupNorm(group_count(out_channels, norm_groups), out_channels),
                nn.SiLU(),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def make_downsample(kind: str, channels: int) -> nn.Module:
    """Halve the grid: the paper's pooling (avg or max) or a strided conv."""
    if kind == "avg":
        return nn.AvgPool2d(2)
    if kind == "max":
        return nn.MaxPool2d(2)
    if kind == "conv":
        return nn.Conv2d(channels, channels, 3, stride=2, padding=1)
    raise ValueError(f"unknown downsample {kind!r}; choose one of {DOWNSAMPLE_KINDS}")


class Upsample(nn.Module):
    """Nearest-neighbour x2 then conv3x3 (avoids transposed-conv checkerboards)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CTEncoder(nn.Module):
    """Conv + pooling pyramid of the CT; returns one feature map per level (fine to coarse)."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        blocks_per_level: int = 2,
        norm_groups: int = 32,
        downsample: str = "avg",
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        prev = widths[0]
        for i, width in enumerate(widths):
            self.levels.append(ConvBlock(prev, width, blocks_per_level, norm_groups))
            if i < len(widths) - 1:
                self.downs.append(make_downsample(downsample, width))
            prev = width

    def forward(self, ct: Tensor) -> list[Tensor]:
        h = self.stem(ct)
        features = []
        for i, level in enumerate(self.levels):
            h = level(h)
            features.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        return features


class CTConditionedUNet(nn.Module):
    """eps_theta(x_t, t, c): PET U-Net + CT encoder joined by bidirectional cross-attention."""

    def __init__(
        self,
        in_channels: int = 1,
        ct_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        ct_blocks: int = 2,
        attention_heads: int = 8,
        attention_dim_head: int | None = None,
        time_embed_dim: int | None = None,
        norm_groups: int = 32,
        dropout: float = 0.0,
        downsample: str = "avg",
        ct_skips: bool = False,
    ) -> None:
        super().__init__()
        if not channel_mults:
            raise ValueError("channel_mults needs at least one level")
        widths = [base_channels * m for m in channel_mults]
        self.widths = widths
        self.ct_skips = ct_skips
        time_dim = time_embed_dim or 4 * base_channels
        self.time_embed = TimeEmbedding(base_channels, time_dim)

        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.enc_blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        prev = base_channels
        for i, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(prev, width, time_dim, norm_groups, dropout))
                prev = width
            self.enc_blocks.append(blocks)
            if i < len(widths) - 1:
                self.downs.append(make_downsample(downsample, width))

        self.ct_encoder = CTEncoder(ct_channels, widths, ct_blocks, norm_groups, downsample)
        mid = widths[-1]
        self.mid_in = ResBlock(mid, mid, time_dim, norm_groups, dropout)
        self.cross = BidirectionalCrossAttention(
            mid, attention_heads, attention_dim_head, norm_groups, dropout
        )
        self.mid_out = ResBlock(mid, mid, time_dim, norm_groups, dropout)

        self.ct_skip_proj = (
            nn.ModuleList(nn.Conv2d(w, w, kernel_size=1) for w in widths) if ct_skips else None
        )
        self.dec_blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        prev = mid
        for i in reversed(range(len(widths))):
            blocks = nn.ModuleList()
            for j in range(num_res_blocks):
                in_ch = prev + widths[i] if j == 0 else widths[i]
                blocks.append(ResBlock(in_ch, widths[i], time_dim, norm_groups, dropout))
            prev = widths[i]
            self.dec_blocks.append(blocks)
            if i > 0:
                self.ups.append(Upsample(prev))
        self.out = nn.Sequential(
            nn.GroupNorm(group_count(widths[0], norm_groups), widths[0]),
            nn.SiLU(),
            nn.Conv2d(widths[0], out_channels, 3, padding=1),
        )

    @property
    def downsample_factor(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (len(self.widths) - 1)

    def encode_ct(self, ct: Tensor) -> list[Tensor]:
        """CT features per level; independent of t, so samplers compute them once per chain."""
        return self.ct_encoder(ct)

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        ct: Tensor | None = None,
        *,
        ct_features: list[Tensor] | None = None,
        w_ct: Tensor | float = 0.5,
        w_prev: Tensor | float | None = None,
    ) -> Tensor:
        """Predicted noise, same shape as ``x_t``; ``w_prev`` defaults to ``1 - w_ct``."""
        size = x_t.shape[-2:]
        if size[0] % self.downsample_factor or size[1] % self.downsample_factor:
            raise ValueError(f"input {tuple(size)} not a multiple of {self.downsample_factor}")
        if ct_features is None:
            if ct is None:
                raise ValueError("pass the CT or its encode_ct() features")
            if ct.shape[-2:] != size:
                raise ValueError(f"CT grid {tuple(ct.shape[-2:])} != PET grid {tuple(size)}")
            ct_features = self.encode_ct(ct)
        batch = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(batch)
        w_ct = as_batch_weight(w_ct, batch, x_t)
        w_prev = 1 - w_ct if w_prev is None else as_batch_weight(w_prev, batch, x_t)
        temb = self.time_embed(t)

        h = self.stem(x_t)
        skips = []
        for i, blocks in enumerate(self.enc_blocks):
            for block in blocks:
                h = block(h, temb)
            skips.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)

        h = self.mid_in(h, temb)
        h = self.cross(h, ct_features[-1], w_ct, w_prev)
        h = self.mid_out(h, temb)

        for k, blocks in enumerate(self.dec_blocks):
            level = len(self.widths) - 1 - k
            skip = skips[level]
            if self.ct_skip_proj is not None:
                skip = skip + w_ct * self.ct_skip_proj[level](ct_features[level])
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, temb)
            if k < len(self.ups):
                h = self.ups[k](h)
        return self.out(h)
