# The predicted ABM back to the planning system, on the patient's original CT series. These files
# carry the CT's patient and study attributes by design (results/dicom/ only; see README).
rule export_dicom:
    input:
        abm_ct="results/inference/{variant}/{patient}/abm_ct.nii.gz",
        ct=get_dicom_files("ct"),
    output:
        seg="results/dicom/{variant}/{patient}/abm_seg.dcm",
        rtstruct="results/dicom/{variant}/{patient}/abm_rtstruct.dcm",
    log:
        "logs/export_dicom/{variant}/{patient}.log",
    benchmark:
        "benchmarks/export_dicom/{variant}/{patient}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    threads: res("export_dicom", "threads")
    resources:
        **scheduler_resources("export_dicom"),
    params:
        ct_folder=get_series_folder("ct"),
        regions=config["regions"],
    script:
        "../../scripts/export_dicom.py"
