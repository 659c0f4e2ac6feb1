"""Rule training_profile: the training patients' CT measurements and label volumes, the ranges
the QA flags compare every prediction with."""

from abmseg.atomic import write_json
from abmseg.preprocess.convert import ConvertSettings
from abmseg.qa.profile import build_profile
from abmseg.step import rule_step

with rule_step(snakemake) as log:
    patients = snakemake.params.patients
    profile = build_profile(
        patients,
        snakemake.input.cts,
        snakemake.input.labels,
        ConvertSettings.from_config(snakemake.params.config).regions,
    )
    write_json(snakemake.output[0], profile.to_dict())
    log.info("training profile of %d patients: %s", len(patients), profile.ct)
