"""Rule predict: sPET and ABM of a CT-only patient with the configured model bundle."""

from abmseg.cohort.series_state import series_files
from abmseg.infer.ct_only import predict_ct_only
from abmseg.infer.model_bundle import load_model_bundle
from abmseg.infer.patient import PredictionPaths
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
# The DICOM files themselves: the rule names only their series state file.
with rule_step(snakemake, extra_inputs=lambda: series_files(snakemake.params.ct_folder)) as log:
    bundle = load_model_bundle(snakemake.input.bundle, threads=snakemake.threads, patient=patient)
    out = snakemake.output
    summary = predict_ct_only(
        patient,
        snakemake.params.ct_folder,
        bundle,
        PredictionPaths.of_rule(out),
    )
    log.info("voxels per region %s on %s", summary["voxels_per_region"], bundle.device)
