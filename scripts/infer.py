"""Rule infer: CT -> pseudo-PET -> diffusion sPET -> MP-FPSN ABM for one test patient."""

from abmseg.infer.networks import load_networks
from abmseg.infer.patient import PredictionPaths, Predictor, infer_patient, read_roi_box
from abmseg.infer.predict import InferenceSettings
from abmseg.preprocess.normalise import NormaliseSettings
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
config = snakemake.params.config
with rule_step(snakemake) as log:
    read_roi_box(snakemake.input.roi, patient)  # the patient's own small inputs before the model
    networks, device = load_networks(
        snakemake.input.model, threads=snakemake.threads, patient=patient
    )
    predictor = Predictor(
        networks,
        device,
        InferenceSettings.from_config(config),
        NormaliseSettings.from_config(config).suv_ceiling,
    )
    out = snakemake.output
    summary = infer_patient(
        patient,
        snakemake.input.ct,
        snakemake.input.converted_ct,
        snakemake.input.roi,
        predictor,
        PredictionPaths(out.spet, out.abm, out.abm_ct),
    )
    log.info("label voxels %s on %s", summary["voxels_per_label"], device)
