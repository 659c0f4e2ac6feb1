"""Rule export_dicom: the predicted ABM as DICOM SEG and RTSTRUCT of the patient's CT series,
and its class probabilities as a FRACTIONAL (probability) SEG."""

from abmseg.cohort.series_state import series_files
from abmseg.io.jsonfile import read_json
from abmseg.rt.export import ExportSettings, export_patient
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
# The DICOM files themselves: the rule names only their series state file.
with rule_step(snakemake, extra_inputs=lambda: series_files(snakemake.params.ct_folder)) as log:
    out = snakemake.output
    made_by = snakemake.params.made_by
    qa = read_json(snakemake.input.qa, patient, made_by=made_by, keys=("verdict",))
    summary = export_patient(
        patient,
        snakemake.input.abm_ct,
        snakemake.params.ct_folder,
        ExportSettings.from_config(snakemake.params.config).regions,
        out.seg,
        out.rtstruct,
        made_by=made_by,
        probabilities=(snakemake.input.prob, out.prob_seg),
        qa_verdict=qa["verdict"],
    )
    log.info("exported %s", summary["voxels_per_region"])
