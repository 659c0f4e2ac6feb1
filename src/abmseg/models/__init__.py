"""The three networks of the method (CycleGAN, conditional diffusion refiner, MP-FPSN) and losses.

Sizes come from presets in models/presets/<network>.yaml (`tiny` for CPU tests and the demo,
`paper` for GPUs); see :func:`abmseg.models.presets.load_model_preset`.
"""
