"""Rule qa: a test patient's per-region statistics, QA flags and QA picture, from rule infer's
maps and the training profile."""

from abmseg.io.jsonfile import read_json
from abmseg.preprocess.convert import ConvertSettings
from abmseg.preprocess.roi import read_roi_box
from abmseg.qa.checks import QaSettings
from abmseg.qa.patient import MAPS, AssessmentPaths, assess_files
from abmseg.qa.profile import TrainingProfile
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
config = snakemake.params.config
with rule_step(snakemake) as log:
    profile = read_json(snakemake.input.profile, made_by="training_profile")
    maps = {name: getattr(snakemake.input, name) for name in MAPS}
    qa = assess_files(
        patient,
        maps,
        snakemake.input.converted_ct,
        read_roi_box(snakemake.input.roi, patient),
        ConvertSettings.from_config(config).regions,
        QaSettings.from_config(config),
        TrainingProfile.from_dict(profile),
        AssessmentPaths.of_rule(snakemake.output),
        with_spet=snakemake.params.with_spet,
    )
    log.info("QA %s: %s", qa["verdict"], [r["check"] for r in qa["reasons"]])
