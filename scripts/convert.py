"""Rule convert: CT/PET DICOM series and label -> HU, SUVbw and label NIfTI plus meta.json."""

from abmseg.cohort.series_state import series_files
from abmseg.preprocess.convert import ConvertedPaths, ConvertSettings, convert_patient
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
# The DICOM files themselves: the rule names only their series state file.
with rule_step(
    snakemake, extra_inputs=lambda: series_files(snakemake.params.ct_dir, snakemake.params.pet_dir)
) as log:
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
