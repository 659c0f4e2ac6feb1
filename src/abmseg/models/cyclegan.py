"""CycleGAN for CT <-> PET translation (docs/method.md, "CycleGAN"): ResNet generators,
multi-scale spectrally normalised PatchGAN discriminators, and a container holding the four
networks.

Sizes come from ``presets/cyclegan.yaml`` (sections ``generator``, ``discriminator``,
``loss``); the losses live in :mod:`abmseg.models.cyclegan_losses`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("instance", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    """Generator normalisation. Affine InstanceNorm, so the preceding conv needs no bias."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {list(NORMS)}")


def _conv_norm_relu(conv: nn.Module, norm: str, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, _norm(norm, channels), nn.ReLU())


class ResidualBlock(nn.Module):
    """Reflection pad, 3x3 conv, norm, ReLU, reflection pad, 3x3 conv, norm, plus the input.

    Reflection padding avoids the dark border artefacts zero padding leaves in translated images.
    """

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        bias = norm == "none"
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm(norm, channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            _norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """Encoder (7x7 stem, stride-2 convs), residual blocks, decoder (transposed convs), tanh.

    Maps a one-channel image in [-1, 1] to one in [-1, 1] of the same size; H and W must be
    divisible by ``2 ** n_downsampling``. The paper uses 9 residual blocks (fewer than 7
    degraded, more than 11 overfit).

    :meth:`features` exposes the encoder's feature maps so that a trained generator can serve as
    an in-domain, frozen feature network (the diffusion model's perceptual loss uses the encoder
    of G_PET->CT on PET images, as no pretrained weights are available offline).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 64,
        n_residual_blocks: int = 9,
        n_downsampling: int = 2,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {list(NORMS)}")
        bias = norm == "none"
        self.n_downsampling = n_downsampling
        self.stem = _conv_norm_relu(
            nn.Sequential(
                nn.ReflectionPad2d(3), nn.Conv2d(in_channels, base_channels, 7, bias=bias)
            ),
            norm,
            base_channels,
        )
        widths = [base_channels * 2**i for i in range(n_downsampling + 1)]
        self.down = nn.ModuleList(
            _conv_norm_relu(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=bias), norm, c_out)
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.residual = nn.Sequential(
            *(ResidualBlock(widths[-1], norm) for _ in range(n_residual_blocks))
        )
        self.up = nn.Sequential(
            *(
                _conv_norm_relu(
                    nn.ConvTranspose2d(
                        c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias
                    ),
                    norm,
                    c_out,
                )
                for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True)
            )
        )
        self.head = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(base_channels, out_channels, 7), nn.Tanh()
        )
        self.feature_channels: list[int] = [*widths, widths[-1]]

    @classmethod
    def from_preset(cls, preset: Mapping[str, Any]) -> ResnetGenerator:
        """Build from a whole cyclegan preset (its ``generator`` section)."""
        return cls(**preset["generator"])

    def _check_size(self, x: Tensor) -> None:
        factor = 2**self.n_downsampling
        if x.ndim != 4 or x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"expected (N, C, H, W) with H and W divisible by {factor}, got {tuple(x.shape)}"
            )

    def features(self, x: Tensor) -> list[Tensor]:
        """Encoder feature maps: after the stem, after each down-sampling step, after the
        residual blocks, i.e. ``n_downsampling + 2`` tensors with channels
        :attr:`feature_channels` (``[b, 2b, 4b, 4b]`` for base width b and 2 down-samplings) at
        strides 1, 2, 4, 4. Gradients flow to ``x``; freeze the parameters for use as a loss.
        """
        self._check_size(x)
        h = self.stem(x)
        feats = [h]
        for step in self.down:
            h = step(h)
            feats.append(h)
        feats.append(self.residual(h))
        return feats

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.up(self.features(x)[-1]))


class PatchDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs (``n_layers`` of stride 2, then one of stride 1), LeakyReLU(0.2),
    one-channel patch logits; spectral norm on every conv instead of batch norm (the paper).

    Padding is ceil((k - 1) / 2) = 2, as in pix2pixHD, so that the 1/4-scale input of small
    images still yields patch logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        n_layers: int = 3,
        kernel_size: int = 4,
        max_channel_mult: int = 8,
    ) -> None:
        super().__init__()
        pad = math.ceil((kernel_size - 1) / 2)

        def conv(c_in: int, c_out: int, stride: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=pad))

        widths = [base_channels * min(2**i, max_channel_mult) for i in range(n_layers + 1)]
        layers: list[nn.Module] = [conv(in_channels, widths[0], 2), nn.LeakyReLU(0.2)]
        for i in range(1, n_layers):
            layers += [conv(widths[i - 1], widths[i], 2), nn.LeakyReLU(0.2)]
        layers += [conv(widths[n_layers - 1], widths[n_layers], 1), nn.LeakyReLU(0.2)]
        layers.append(conv(widths[n_layers], 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class MultiScaleDiscriminator(nn.Module):
    """``n_scales`` PatchGANs judging the input at full, 1/2, 1/4, ... resolution.

    The coarse scales see global anatomy, the fine scale local texture. ``forward`` returns one
    patch-logit tensor per scale, finest first.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        n_layers: int = 3,
        n_scales: int = 3,
    ) -> None:
        super().__init__()
        self.scales = nn.ModuleList(
            PatchDiscriminator(in_channels, base_channels, n_layers) for _ in range(n_scales)
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    @classmethod
    def from_preset(cls, preset: Mapping[str, Any]) -> MultiScaleDiscriminator:
        """Build from a whole cyclegan preset (its ``discriminator`` section)."""
        return cls(**preset["discriminator"])

    def forward(self, x: Tensor) -> list[Tensor]:
        logits = []
        for i, disc in enumerate(self.scales):
            if i > 0:
                x = self.downsample(x)
            logits.append(disc(x))
        return logits


class CycleGAN(nn.Module):
    """The four networks of stage 1: ``g_ct2pet``, ``g_pet2ct``, ``d_pet``, ``d_ct``.

    ``forward(ct, pet)`` runs both round trips; the objectives are in
    :class:`abmseg.models.cyclegan_losses.CycleGANLoss`.
    """

    def __init__(
        self,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        generator = dict(generator or {})
        discriminator = dict(discriminator or {})
        self.g_ct2pet = ResnetGenerator(**generator)
        self.g_pet2ct = ResnetGenerator(**generator)
        self.d_pet = MultiScaleDiscriminator(**discriminator)
        self.d_ct = MultiScaleDiscriminator(**discriminator)

    @classmethod
    def from_preset(cls, preset: Mapping[str, Any]) -> CycleGAN:
        """Build from a cyclegan preset; its ``loss`` section is for CycleGANLoss."""
        return cls(preset.get("generator"), preset.get("discriminator"))

    def generators(self) -> list[nn.Module]:
        return [self.g_ct2pet, self.g_pet2ct]

    def discriminators(self) -> list[nn.Module]:
        return [self.d_pet, self.d_ct]

    def forward(self, ct: Tensor, pet: Tensor) -> dict[str, Tensor]:
        """Translations and reconstructions: ``fake_pet``, ``rec_ct``, ``fake_ct``, ``rec_pet``."""
        fake_pet = self.g_ct2pet(ct)
        fake_ct = self.g_pet2ct(pet)
        return {
            "fake_pet": fake_pet,
            "rec_ct": self.g_pet2ct(fake_pet),
            "fake_ct": fake_ct,
            "rec_pet": self.g_ct2pet(fake_ct),
        }


def set_requires_grad(modules: nn.Module | list[nn.Module], flag: bool) -> None:
    """Freeze/unfreeze, e.g. the discriminators during the generator step (saves their grads)."""
    for module in modules if isinstance(modules, list) else [modules]:
        for param in module.parameters():
            param.requires_grad_(flag)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "CycleGAN",
    "MultiScaleDiscriminator",
    "PatchDiscriminator",
    "ResidualBlock",
    "ResnetGenerator",
    "count_parameters",
    "set_requires_grad",
]
