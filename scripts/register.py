"""Rule register: PET SUV onto the CT grid with ANTs (rigid then affine, mutual information)."""

from abmseg.preprocess.register import RegistrationSettings, register_pet_to_ct
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
with rule_step(snakemake) as log:
    qc = register_pet_to_ct(
        ct_path=snakemake.input.ct,
        pet_path=snakemake.input.pet,
        out_pet=snakemake.output.pet,
        out_transform=snakemake.output.transform,
        out_qc=snakemake.output.qc,
        settings=RegistrationSettings.from_config(
            snakemake.params.settings, seed=snakemake.params.seed, threads=snakemake.threads
        ),
        patient=patient,
    )
    log.info(
        "MI before %.4f after %.4f", qc["mutual_information_before"], qc["mutual_information_after"]
    )
