"""Rule infer: CT -> pseudo-PET -> diffusion sPET -> MP-FPSN ABM for one test patient."""

from abmseg.infer.bundle import load_networks
from abmseg.infer.patient import infer_patient, read_roi_box
from abmseg.infer.predict import InferenceSettings
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
with rule_step(snakemake) as log:
    read_roi_box(snakemake.input.roi, patient)  # the patient's own small inputs before the model
    networks, device = load_networks(
        snakemake.input.model, threads=snakemake.threads, patient=patient
    )
    options = snakemake.params.inference
    settings = InferenceSettings(
        sampler=options["sampler"],
        steps=options["steps"],
        start_step=options["start_step"],
        batch_size=options["batch_size"],
        seed=snakemake.params.seed,
        body_threshold=snakemake.params.body_threshold,
    )
    summary = infer_patient(
        patient,
        snakemake.input.ct,
        snakemake.input.converted_ct,
        snakemake.input.roi,
        networks,
        settings,
        snakemake.params.suv_ceiling,
        snakemake.output.spet,
        snakemake.output.abm,
        snakemake.output.abm_ct,
        device,
    )
    log.info("label voxels %s on %s", summary["voxels_per_label"], device)
