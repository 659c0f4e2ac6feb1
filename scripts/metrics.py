"""Rules metrics and metrics_reference: sPET vs PET (PSNR, SSIM, NMSE) and ABM Dice/ASSD per
region for one patient (a study reference has no sPET: its synthesis scores are null)."""

from abmseg.atomic import write_json
from abmseg.evaluate.patient import EvaluateSettings, score_patient_files
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
with rule_step(snakemake):
    scores = score_patient_files(
        patient,
        snakemake.input.get("spet") or None,
        snakemake.input.abm,
        snakemake.input.pet,
        snakemake.input.label,
        snakemake.input.ct,
        EvaluateSettings.from_config(snakemake.params.config),
    )
    method = snakemake.wildcards.get("variant") or snakemake.wildcards.method
    write_json(snakemake.output[0], {"variant": method, **scores})
