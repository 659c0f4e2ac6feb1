"""Per-patient inference: CT -> pseudo-PET -> diffusion sPET -> MP-FPSN -> ABM label map."""
