"""Rule convert: CT/PET DICOM series and label -> HU, SUVbw and label NIfTI plus meta.json."""

from abmseg.preprocess.convert import ConvertedPaths, ConvertSettings, convert_patient
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
with rule_step(snakemake) as log:
    meta = convert_patient(
        patient=patient,
        ct_dir=snakemake.params.ct_dir,
        pet_dir=snakemake.params.pet_dir,
        label_path=snakemake.input.label,
        out=ConvertedPaths(
            ct=snakemake.output.ct,
            pet_suv=snakemake.output.pet,
            label=snakemake.output.label,
            meta=snakemake.output.meta,
        ),
        settings=ConvertSettings.from_config(snakemake.params.config),
    )
    log.info("SUV: %s; label from %s", meta["pet"]["suv"]["method"], meta["label"]["source"])
