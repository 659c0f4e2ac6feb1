"""Rule bundle: the trained variant as a self-describing model bundle folder."""

from pathlib import Path

from abmseg.infer.model_bundle import write_model_bundle
from abmseg.io.jsonfile import read_json
from abmseg.provenance.layout import record_path
from abmseg.step import rule_step

model = snakemake.input.model
training_record = record_path(Path("results"), model)
folder = Path(snakemake.output[0]).parent
with rule_step(
    snakemake, extra_outputs=f"{folder}/weights/*.pt", extra_inputs=str(training_record)
) as log:
    train_rule = f"train_stage{Path(model).parent.name.removeprefix('stage')}"
    provenance = read_json(training_record, made_by=train_rule)
    manifest = write_model_bundle(
        folder,
        model,
        preprocessing=snakemake.params.preprocessing,
        sampler=snakemake.params.sampler,
        regions=snakemake.params.regions,
        provenance=provenance,
    )
    log.info("bundle %s: networks %s", folder, sorted(manifest["networks"]))
