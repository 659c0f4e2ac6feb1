"""Rule bundle: the trained variant as a self-describing model bundle folder."""

from pathlib import Path

from abmseg.infer.model_bundle import (
    BundleSettings,
    read_training_record,
    training_record_path,
    write_model_bundle,
)
from abmseg.io.jsonfile import read_json
from abmseg.qa.profile import TrainingProfile
from abmseg.step import rule_step

model = snakemake.input.model
folder = Path(snakemake.output[0]).parent
with rule_step(
    snakemake,
    extra_outputs=f"{folder}/weights/*.pt",
    extra_inputs=str(training_record_path(model)),
) as log:
    settings = BundleSettings.from_config(snakemake.params.config)
    profile = read_json(snakemake.input.profile, made_by="training_profile")
    manifest = write_model_bundle(
        folder,
        model,
        preprocessing=settings.preprocessing,
        sampler=settings.sampler,
        regions=settings.regions,
        provenance=read_training_record(model),
        qa=settings.qa_record(TrainingProfile.from_dict(profile).to_dict()),
    )
    log.info("bundle %s: networks %s", folder, sorted(manifest["networks"]))
