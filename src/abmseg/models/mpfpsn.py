"""MP-FPSN: multi-scale progressive feature-pyramid fusion segmentation network (stage 3).

The third network of the paper's cascade, trained from training stage 1 on (docs/method.md,
"MP-FPSN").

Two encoders of the same architecture (CT and synthetic PET, separate weights) give features at
1/2, 1/4, 1/8 and 1/16 of the input. Per scale and per modality a 1x1 conv aligns widths; the
pyramid is then fused from coarse to fine::

    F16 = CT16 + sPET16
    S_i = Up(F_2i) + CT_i + sPET_i        (1x1 "lateral" on Up(F_2i) when widths differ)
    F_i = Conv3x3(S_i) + S_i              for i = 8, 4, 2

and a U-Net-style decoder uses F16 (its input) and F8, F4, F2 (skips) up to full resolution.

Lists of widths are ordered fine to coarse (1/2, 1/4, 1/8, 1/16) for the encoder and the fusion,
and coarse to fine (1/8, 1/4, 1/2, 1/1) for the decoder, i.e. in the order each part runs.

Variants (constructor arguments, for the paper's ablation, Table 5):

- ``fusion="concat"``: channel concatenation replaces the sums: F16 = [CT16, sPET16] and
  S_i = [Up(F_2i), CT_i, sPET_i]; the 3x3 fusion conv consumes that wider S_i, and the residual
  goes through a 1x1 projection of S_i (the widths differ). The decoder consumes the wider F16.
- ``fusion="input"``: early (input-level) concatenation, the other reading of the paper's
  "concatenation" (docs/validation.md, risk 3): CT and sPET are stacked as two channels of ONE
  encoder, whose pyramid is fused and decoded as the CT-only network's is.
- ``modalities="ct"``: the CT-only baseline; one encoder, the same fusion and decoder with the CT
  term alone (F16 = CT16, S_i = Up(F_2i) + CT_i).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)
from torch import Tensor, nn

Fusion = Literal["add", "concat", "input"]
Modalities = Literal["ct+spet", "ct"]
Norm = Literal["batch", "instance", "none"]
N_SCALES = 4  # 1/2, 1/4, 1/8, 1/16


def make_norm(kind: Norm, channels: int) -> nn.Module:
    """Normalisation layer by name; batch norm by default (the paper trains with batch 4)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose batch, instance or none")


def _check_widths(name: str, widths: Sequence[int], length: int) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if len(widths) != length or min(widths) < 1:
        raise ValueError(f"{name} needs {length} positive widths, got {widths}")
    return widths


def combine(tensors: Sequence[Tensor], fusion: Fusion) -> Tensor:
    """The fusion operator: element-wise sum (``add``) or channel concatenation (``concat``)."""
    if fusion == "add":
        return torch.stack(list(tensors)).sum(0)
    if fusion == "concat":
        return torch.cat(list(tensors), dim=1)
    raise ValueError(f"unknown fusion {fusion!r}; choose add or concat")


class ConvNormAct(nn.Sequential):
    """Conv (bias only without norm) -> norm -> ReLU: the unit every block is made of."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: Norm = "batch",
        act: bool = True,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                bias=norm == "none",
            ),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True) if act else nn.Identity(),
        )


class DownBlock(nn.Sequential):
    """One encoder level: a stride-2 3x3 conv halves the resolution, a second 3x3 conv refines."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm = "batch") -> None:
        super().__init__(
            ConvNormAct(in_channels, out_channels, 3, stride=2, norm=norm),
            ConvNormAct(out_channels, out_channels, 3, norm=norm),
        )


class Encoder(nn.Module):
    """Features at 1/2, 1/4, 1/8, 1/16 of the input (one per width), fine to coarse."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512),
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        widths = _check_widths("encoder widths", widths, N_SCALES)
        ins = (in_channels, *widths[:-1])
        self.levels = nn.ModuleList(DownBlock(i, o, norm) for i, o in zip(ins, widths, strict=True))

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class FusionStep(nn.Module):
    """One fine-scale fusion point: F_i = Conv3x3(S_i) + shortcut(S_i).

    ``add``: S_i = lateral(Up(F_2i)) + sum of modalities, shortcut = identity.
    ``concat``: S_i = [Up(F_2i), modalities...], the conv consumes the concatenated width and the
    shortcut is a 1x1 projection to ``out_channels``.
    """

    def __init__(
        self,
        coarse_channels: int,
        out_channels: int,
        n_modalities: int,
        fusion: Fusion = "add",
        norm: Norm = "batch",
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        self.fusion = fusion
        self.upsample = upsample
        if fusion == "add":
            self.lateral = (
                nn.Identity()
                if coarse_channels == out_channels
                else nn.Conv2d(coarse_channels, out_channels, 1, bias=False)
            )
            sum_channels = out_channels
            self.shortcut = nn.Identity()
        elif fusion == "concat":
            self.lateral = nn.Identity()
            sum_channels = coarse_channels + n_modalities * out_channels
            self.shortcut = nn.Conv2d(sum_channels, out_channels, 1, bias=False)
        else:
            raise ValueError(f"unknown fusion {fusion!r}; choose add or concat")
        self.conv = ConvNormAct(sum_channels, out_channels, 3, norm=norm)

    def merge(self, coarse: Tensor, modalities: Sequence[Tensor]) -> Tensor:
        """S_i: the up-sampled coarser fused map combined with this scale's aligned features."""
        up = F.interpolate(coarse, size=modalities[0].shape[-2:], mode=self.upsample)
        return combine([self.lateral(up), *modalities], self.fusion)

    def forward(self, coarse: Tensor, modalities: Sequence[Tensor]) -> Tensor:
        merged = self.merge(coarse, modalities)
        return self.conv(merged) + self.shortcut(merged)


class PyramidFusion(nn.Module):
    """Aligns each modality per scale (1x1 conv) and fuses the pyramid from coarse to fine."""

    def __init__(
        self,
        encoder_widths: Sequence[int],
        fused_widths: Sequence[int],
        n_modalities: int = 2,
        fusion: Fusion = "add",
        norm: Norm = "batch",
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        encoder_widths = _check_widths("encoder widths", encoder_widths, N_SCALES)
        fused_widths = _check_widths("fused widths", fused_widths, N_SCALES)
        if fusion not in ("add", "concat"):
            raise ValueError(f"unknown fusion {fusion!r}; choose add or concat")
        self.fusion = fusion
        self.n_modalities = n_modalities
        # align[m][s]: modality m at scale s (fine to coarse).
        self.align = nn.ModuleList(
            nn.ModuleList(
                nn.Conv2d(e, f, 1, bias=False)
                for e, f in zip(encoder_widths, fused_widths, strict=True)
            )
            for _ in range(n_modalities)
        )
        top = fused_widths[-1] * (n_modalities if fusion == "concat" else 1)
        # Output widths of F2, F4, F8, F16; the fine ones are the fused widths in both variants.
        self.out_channels = (*fused_widths[:-1], top)
        # steps[k] builds the fused map at scale k (k = 2, 1, 0 i.e. 1/8, 1/4, 1/2) from k + 1.
        self.steps = nn.ModuleList(
            FusionStep(
                self.out_channels[k + 1], fused_widths[k], n_modalities, fusion, norm, upsample
            )
            for k in range(N_SCALES - 1)
        )

    def aligned(self, features: Sequence[Sequence[Tensor]]) -> list[list[Tensor]]:
        """Per modality, the encoder features mapped to the fused width of their scale."""
        if len(features) != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} modalities, got {len(features)}")
        return [
            [conv(x) for conv, x in zip(convs, feats, strict=True)]
            for convs, feats in zip(self.align, features, strict=True)
        ]

    def fuse(self, aligned: Sequence[Sequence[Tensor]]) -> list[Tensor]:
        """Fused maps [F2, F4, F8, F16] from already aligned features (exposed for tests)."""
        fused = combine([mod[-1] for mod in aligned], self.fusion)
        out = [fused]
        for k in reversed(range(N_SCALES - 1)):
            fused = self.steps[k](fused, [mod[k] for mod in aligned])
            out.append(fused)
        return out[::-1]

    def forward(self, features: Sequence[Sequence[Tensor]]) -> list[Tensor]:
        return self.fuse(self.aligned(features))


class UpBlock(nn.Module):
    """Decoder step: up-sample x2, concatenate the skip (if any), two 3x3 convs."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        norm: Norm = "batch",
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.convs = nn.Sequential(
            ConvNormAct(in_channels + skip_channels, out_channels, 3, norm=norm),
            ConvNormAct(out_channels, out_channels, 3, norm=norm),
        )

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        size = skip.shape[-2:] if skip is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        x = F.interpolate(x, size=size, mode=self.upsample)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class Decoder(nn.Module):
    """From F16 up to full resolution with F8, F4, F2 as skips; a 1x1 head gives class logits."""

    def __init__(
        self,
        fused_channels: Sequence[int],
        widths: Sequence[int] = (256, 128, 64, 32),
        n_classes: int = 4,
        norm: Norm = "batch",
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        fused_channels = _check_widths("fused channels", fused_channels, N_SCALES)
        widths = _check_widths("decoder widths", widths, N_SCALES)
        skips = (fused_channels[2], fused_channels[1], fused_channels[0], 0)
        ins = (fused_channels[3], *widths[:-1])
        self.blocks = nn.ModuleList(
            UpBlock(i, s, o, norm, upsample) for i, s, o in zip(ins, skips, widths, strict=True)
        )
        self.head = nn.Conv2d(widths[-1], n_classes, 1)

    def forward(self, fused: Sequence[Tensor]) -> Tensor:
        """``fused`` is [F2, F4, F8, F16]."""
        x = fused[3]
        for block, skip in zip(self.blocks, (fused[2], fused[1], fused[0], None), strict=True):
            x = block(x, skip)
        return self.head(x)


class PyramidFeatures(NamedTuple):
    """Everything between the encoders and the decoder, fine to coarse per list."""

    encoded: dict[str, list[Tensor]]  # raw encoder outputs per modality
    aligned: dict[str, list[Tensor]]  # after the per-scale, per-modality 1x1 convs
    fused: list[Tensor]  # [F2, F4, F8, F16]


class MPFPSN(nn.Module):
    """CT + synthetic-PET segmentation network; ``forward(ct, spet)`` returns (N, n_classes, H, W).

    Inputs are (N, in_channels, H, W) with H and W divisible by 16. With ``modalities="ct"`` the
    ``spet`` argument is ignored (so one training loop serves both the method and the baseline).
    """

    def __init__(
        self,
        in_channels: int = 1,
        encoder_widths: Sequence[int] = (64, 128, 256, 512),
        fused_widths: Sequence[int] = (64, 128, 256, 512),
        decoder_widths: Sequence[int] = (256, 128, 64, 32),
        n_classes: int = 4,
        fusion: Fusion = "add",
        modalities: Modalities = "ct+spet",
        norm: Norm = "batch",
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if modalities not in ("ct+spet", "ct"):
            raise ValueError(f"unknown modalities {modalities!r}; choose 'ct+spet' or 'ct'")
        if fusion == "input" and modalities != "ct+spet":
            raise ValueError("fusion 'input' stacks CT and sPET: it needs modalities 'ct+spet'")
        self.modalities = ("ct", "spet") if modalities == "ct+spet" else ("ct",)
        self.fusion = fusion
        self.n_classes = n_classes
        # one encoder per stream: per modality, or one for the stacked CT + sPET (fusion "input")
        self.streams = ("ct_spet",) if fusion == "input" else self.modalities
        channels = in_channels * (len(self.modalities) if fusion == "input" else 1)
        self.encoders = nn.ModuleDict(
            {s: Encoder(channels, encoder_widths, norm) for s in self.streams}
        )
        self.pyramid = PyramidFusion(
            encoder_widths,
            fused_widths,
            len(self.streams),
            "add" if fusion == "input" else fusion,
            norm,
            upsample,
        )
        self.decoder = Decoder(self.pyramid.out_channels, decoder_widths, n_classes, norm, upsample)

    @classmethod
    def from_preset(cls, preset: Mapping[str, Any] | str, **overrides: Any) -> MPFPSN:
        """Build from a preset mapping (or its name in presets/mpfpsn.yaml) plus overrides."""
        if isinstance(preset, str):
            from abmseg.models.presets import load_model_preset

            preset = load_model_preset("mpfpsn", preset)
        return cls(**{**preset, **overrides})

    def _inputs(self, ct: Tensor, spet: Tensor | None) -> dict[str, Tensor]:
        if ct.shape[-2] % 16 or ct.shape[-1] % 16:
            raise ValueError(f"H and W must be divisible by 16, got {tuple(ct.shape[-2:])}")
        if "spet" not in self.modalities:
            return {"ct": ct}
        if spet is None:
            raise ValueError("this MP-FPSN fuses CT and sPET: pass spet")
        if spet.shape != ct.shape:
            raise ValueError(f"ct {tuple(ct.shape)} and spet {tuple(spet.shape)} differ")
        return {"ct": ct, "spet": spet}

    def _stream_inputs(self, ct: Tensor, spet: Tensor | None) -> dict[str, Tensor]:
        """The input of each encoder: the modalities, or both stacked (fusion "input")."""
        inputs = self._inputs(ct, spet)
        if self.fusion == "input":
            return {"ct_spet": torch.cat([inputs[m] for m in self.modalities], dim=1)}
        return inputs

    def forward_features(self, ct: Tensor, spet: Tensor | None = None) -> PyramidFeatures:
        """Encoder, aligned and fused pyramids per stream (for inspection and tests)."""
        inputs = self._stream_inputs(ct, spet)
        encoded = {s: self.encoders[s](x) for s, x in inputs.items()}
        aligned_list = self.pyramid.aligned([encoded[s] for s in self.streams])
        fused = self.pyramid.fuse(aligned_list)
        aligned = dict(zip(self.streams, aligned_list, strict=True))
        return PyramidFeatures(encoded, aligned, fused)

    def forward(self, ct: Tensor, spet: Tensor | None = None) -> Tensor:
        inputs = self._stream_inputs(ct, spet)
        features = [self.encoders[s](inputs[s]) for s in self.streams]
        return self.decoder(self.pyramid(features))


__all__ = [
    "MPFPSN",
    "ConvNormAct",
    "Decoder",
    "DownBlock",
    "Encoder",
    "FusionStep",
    "PyramidFeatures",
    "PyramidFusion",
    "UpBlock",
    "combine",
    "make_norm",
]
