# The predicted ABM (binary SEG, RTSTRUCT) and its probabilities (FRACTIONAL SEG) back to the
# planning system, on the patient's original CT series. These files
# carry the CT's patient and study attributes by design (results/dicom/ only; see README).
rule export_dicom:
    input:
        abm_ct=exported("abm_ct.nii.gz"),
        prob=exported("abm_prob.nii.gz"),
        qa=exported("qa.json"),
        ct=get_series_state("ct"),
    output:
        seg="results/dicom/{source}/{patient}/abm_seg.dcm",
        prob_seg="results/dicom/{source}/{patient}/abm_prob_seg.dcm",
        rtstruct="results/dicom/{source}/{patient}/abm_rtstruct.dcm",
    log:
        "logs/export_dicom/{source}/{patient}.log",
    benchmark:
        "benchmarks/export_dicom/{source}/{patient}.tsv"
    wildcard_constraints:
        source="|".join([*VARIANTS, "predict"]),
    conda:
        "../../envs/preprocess.yaml"
    threads: res("export_dicom", "threads")
    resources:
        **scheduler_resources("export_dicom"),
    params:
        ct_folder=get_series_folder("ct"),
        config=export_config,
        made_by=lambda wildcards: (
            "predict" if wildcards.source == "predict" else "infer"
        ),
    script:
        "../../scripts/export_dicom.py"
