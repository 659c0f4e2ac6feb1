"""Conditional diffusion refiner of the CycleGAN pseudo-PET.

See docs/method.md, "Stage 2: conditional diffusion refiner".

Small modules: :mod:`.schedule` (q(x_t | x_0)), :mod:`.unet` + :mod:`.attention` (eps_theta with
bidirectional CT <-> PET cross-attention), :mod:`.weighting` (Table 4 CT-weight strategies),
:mod:`.sampling` (DDPM / DDIM), :mod:`.losses` (eps-MSE + perceptual) and :mod:`.model`
(:class:`ConditionalDiffusion`, built from ``models/presets/diffusion.yaml``).
"""

from abmseg.models.diffusion.attention import BidirectionalCrossAttention, MultiHeadCrossAttention
from abmseg.models.diffusion.losses import (
    VGG16Features,
    diffusion_loss,
    frozen_feature_extractor,
    perceptual_loss,
)
from abmseg.models.diffusion.model import ConditionalDiffusion, LossConfig, SamplerConfig
from abmseg.models.diffusion.sampling import (
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    noised_start,
)
from abmseg.models.diffusion.schedule import NoiseSchedule
from abmseg.models.diffusion.unet import CTConditionedUNet, CTEncoder, ResBlock, TimeEmbedding
from abmseg.models.diffusion.weighting import (
    STRATEGIES,
    CTWeighting,
    ct_weights,
    step_from_timestep,
)

__all__ = [
    "STRATEGIES",
    "BidirectionalCrossAttention",
    "ConditionalDiffusion",
    "CTConditionedUNet",
    "CTEncoder",
    "CTWeighting",
    "LossConfig",
    "MultiHeadCrossAttention",
    "NoiseSchedule",
    "ResBlock",
    "SamplerConfig",
    "TimeEmbedding",
    "VGG16Features",
    "ct_weights",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_sample",
    "diffusion_loss",
    "frozen_feature_extractor",
    "noised_start",
    "perceptual_loss",
    "step_from_timestep",
]
