"""Rule normalise: CT window and SUV ceiling to [-1, 1]; the label stays integer."""

from abmseg.preprocess.normalise import NormaliseSettings, normalise_patient
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
with rule_step(snakemake):
    normalise_patient(
        ct_path=snakemake.input.ct,
        pet_path=snakemake.input.pet,
        label_path=snakemake.input.label,
        out_ct=snakemake.output.ct,
        out_pet=snakemake.output.pet,
        out_label=snakemake.output.label,
        settings=NormaliseSettings.from_config(snakemake.params.config),
        patient=patient,
    )
