"""Rule infer: CT -> pseudo-PET -> diffusion sPET -> MP-FPSN ABM for one test patient, with its
class probabilities and uncertainty maps."""

from abmseg.infer.networks import load_networks
from abmseg.infer.patient import PredictionPaths, Predictor, infer_patient, read_roi_box
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
with rule_step(snakemake) as log:
    read_roi_box(snakemake.input.roi, patient)  # the patient's own small inputs before the model
    networks, device = load_networks(
        snakemake.input.model, threads=snakemake.threads, patient=patient
    )
    predictor = Predictor.from_config(networks, device, snakemake.params.config, profile=None)
    summary = infer_patient(
        patient,
        snakemake.input.ct,
        snakemake.input.converted_ct,
        snakemake.input.roi,
        predictor,
        PredictionPaths.of_rule(snakemake.output),
    )
    log.info("label voxels %s on %s", summary["voxels_per_label"], device)
