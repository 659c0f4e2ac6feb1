"""Rule crop: Otsu body mask, bed removed, the same pelvic box cut from CT, PET and label."""

from abmseg.preprocess.roi import CropSettings, crop_patient
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
with rule_step(snakemake) as log:
    roi = crop_patient(
        ct_path=snakemake.input.ct,
        pet_path=snakemake.input.pet,
        label_path=snakemake.input.label,
        out_ct=snakemake.output.ct,
        out_pet=snakemake.output.pet,
        out_label=snakemake.output.label,
        out_roi=snakemake.output.roi,
        settings=CropSettings.from_config(snakemake.params.config),
        patient=patient,
    )
    log.info("ROI box %s", roi["box_ct_index"])
