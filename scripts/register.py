"""Rule register: PET SUV onto the CT grid with ANTs (rigid then affine, mutual information).

A registration outside register.qc fails the patient; its QC figures are kept as
logs/register/<patient>.qc_failed.json beside the rule's log (Snakemake deletes the job's outputs).
"""

from pathlib import Path

from abmseg.atomic import write_json
from abmseg.errors import PatientDataError
from abmseg.preprocess.register import RegistrationSettings, register_pet_to_ct
from abmseg.preprocess.registration_qc import RegistrationQcError
from abmseg.step import rule_step

patient = snakemake.wildcards.patient
logs = list(snakemake.log)
failed_qc = Path(logs[0]).with_name(f"{patient}.qc_failed.json") if logs else None
with rule_step(snakemake) as log:
    try:
        qc = register_pet_to_ct(
            ct_path=snakemake.input.ct,
            pet_path=snakemake.input.pet,
            out_pet=snakemake.output.pet,
            out_transform=snakemake.output.transform,
            out_qc=snakemake.output.qc,
            settings=RegistrationSettings.from_config(
                snakemake.params.config, threads=snakemake.threads
            ),
            patient=patient,
        )
    except RegistrationQcError as failure:
        if failed_qc is None:
            raise
        write_json(failed_qc, failure.qc)
        raise PatientDataError(
            failure.patient,
            failure.path,
            failure.problem,
            f"{failure.fix}. All QC figures: {failed_qc}",
        ) from None
    if failed_qc is not None:
        failed_qc.unlink(missing_ok=True)  # a stale record of an earlier failed try
    log.info(
        "MI before %.4f after %.4f; QC passed (%s)",
        qc["mutual_information_before"],
        qc["mutual_information_after"],
        ", ".join(f"{k} {v}" for k, v in qc["transform"].items()),
    )
