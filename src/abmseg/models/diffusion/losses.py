"""L_diff = ||eps - eps_theta(x_t, t, c)||^2 + 0.1 L_perceptual (docs/method.md, "Losses").

``L_perceptual = sum_l ||phi_l(x0_hat) - phi_l(x0)||^2 / (C_l H_l W_l)`` with x0_hat rebuilt from
the predicted noise. The feature network phi is frozen and pluggable: any callable mapping a
(B, 1, H, W) image in [-1, 1] to a list of feature maps. The paper's network is unknown and
nothing can be downloaded here, so (open choice, config ``loss.perceptual_network``):

* ``"cyclegan"`` (default): an in-domain network, the PET encoder of the CycleGAN's G_PET->CT
  (``ResnetGenerator.features``), passed in by the trainer via :func:`frozen_feature_extractor`.
  It is snapshotted (deep copy) so freezing it never freezes the generator being trained.
* ``"vgg16"``: :class:`VGG16Features`, VGG16 conv layers up to relu3_3 (configurable) loading a
  torchvision-format state_dict from ``loss.vgg16_weights`` (a local file).
* ``"none"``: no perceptual term.

If no feature network is available when the loss is computed, the perceptual weight is 0 and a
warning is logged once: a randomly initialised "perceptual" network would be an arbitrary
regulariser, not the paper's loss.

Timestep weighting (``loss.perceptual_t_weighting``, open choice):
x0_hat = (x_t - sqrt(1 - ab) eps_hat) / sqrt(ab) amplifies the noise error by ~156x at
t = T - 1, so the literal term (``"none"``) is dominated by the noisiest timesteps.
``"alpha_bar"`` (default) multiplies each sample's term by alpha_bar_t, which turns
||x0_hat - x0||^2 back into (1 - ab) ||eps_hat - eps||^2 scale.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch convention)
from torch import Tensor, nn

FeatureFn = Callable[[Tensor], Sequence[Tensor]]
PERCEPTUAL_NETWORKS = ("cyclegan", "vgg16", "none")
T_WEIGHTINGS = ("alpha_bar", "none")
log = logging.getLogger(__name__)

# torchvision's vgg16().features: conv widths, "M" for max-pool; a ReLU follows every conv.
_VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
_VGG16_TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def frozen_feature_extractor(module: nn.Module, copy_module: bool = True) -> FeatureFn:
    """``module.features`` of a frozen (eval, no grad) module, by default of a deep copy of it.

    Gradients still flow to the *input* (x0_hat); only the network's own weights are fixed.
    """
    if copy_module:
        module = copy.deepcopy(module)
    module.eval()
    module.requires_grad_(False)
    return module.features


class VGG16Features(nn.Module):
    """VGG16 conv stack (torchvision layout ``features.<i>``) tapped after the given ReLUs.

    A 1-channel image in [-1, 1] is repeated to RGB in [0, 1] and ImageNet-normalised first.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
    ) -> None:
        super().__init__()
        unknown = set(layers) - set(_VGG16_TAPS)
        if unknown:
            raise ValueError(f"unknown VGG16 layers {sorted(unknown)}; choose from {_VGG16_TAPS}")
        self.taps = sorted(_VGG16_TAPS[name] for name in layers)
        modules: list[nn.Module] = []
        channels = 3
        for item in _VGG16_CFG:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*modules[: self.taps[-1] + 1])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).reshape(1, 3, 1, 1))
        if weights is not None:
            self.load_torchvision(weights)
        self.eval()
        self.requires_grad_(False)

    def load_torchvision(self, path: str | Path) -> None:
        """Load ``features.*`` tensors of a torchvision VGG16 state_dict saved at ``path``."""
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        own = self.state_dict()
        picked = {k: v for k, v in state.items() if k in own and k.startswith("features.")}
        missing = [k for k in own if k.startswith("features.") and k not in picked]
        if missing:
            raise ValueError(f"{path} lacks VGG16 tensors {missing[:4]}...")
        self.load_state_dict(picked, strict=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = ((x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x) + 1) / 2
        h = (h - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h)
        return out

    def train(self, mode: bool = True) -> VGG16Features:
        """Stays in eval mode: the feature network is frozen."""
        return super().train(False)


def perceptual_loss(
    x0_hat: Tensor, x0: Tensor, feature_fn: FeatureFn, sample_weight: Tensor | None = None
) -> Tensor:
    """sum_l ||phi_l(x0_hat) - phi_l(x0)||^2 / (C_l H_l W_l), averaged over the batch.

    ``sample_weight`` (B,) optionally weights each sample's term before the batch mean.
    """
    with torch.no_grad():
        target = [f.detach() for f in feature_fn(x0)]
    pred = list(feature_fn(x0_hat))
    if len(pred) != len(target):
        raise ValueError(f"feature_fn gave {len(pred)} vs {len(target)} layers")
    per_sample = x0.new_zeros(x0.shape[0])
    for fp, ft in zip(pred, target, strict=True):
        per_sample = per_sample + (fp - ft).pow(2).flatten(1).mean(dim=1)
    if sample_weight is not None:
        per_sample = per_sample * sample_weight.reshape(-1)
    return per_sample.mean()


def diffusion_loss(
    eps: Tensor,
    eps_pred: Tensor,
    x0: Tensor | None = None,
    x0_hat: Tensor | None = None,
    feature_fn: FeatureFn | None = None,
    perceptual_weight: float = 0.1,
    sample_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """Every term of L_diff plus ``total``; the perceptual term is 0 without a feature network."""
    mse = F.mse_loss(eps_pred, eps)
    if feature_fn is None or perceptual_weight == 0 or x0 is None or x0_hat is None:
        perceptual = mse.new_zeros(())
    else:
        perceptual = perceptual_loss(x0_hat, x0, feature_fn, sample_weight)
    return {"mse": mse, "perceptual": perceptual, "total": mse + perceptual_weight * perceptual}
