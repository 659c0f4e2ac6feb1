from pathlib import Path

from snakemake.utils import validate

from abmseg.cohort.sheet import SheetError, load_sheet
from abmseg.cohort.split import assign_split
from abmseg.io.dicom_series import list_dicom_files

validate(config, schema="../schemas/config.schema.yaml")

try:
    patients = load_sheet(config["patients"])
except SheetError as error:
    raise WorkflowError(str(error)) from None
for record in patients.to_dict("records"):
    validate(record, schema="../schemas/patients.schema.yaml")

PATIENTS = list(patients.index)
SPLIT = assign_split(
    PATIENTS,
    config["split"]["train_fraction"],
    config["split"]["salt"],
    overrides={p: s for p, s in patients["split"].items() if s},
)


wildcard_constraints:
    patient="[A-Za-z0-9_-]+",


def res(rule_name, key):
    """A scheduler resource of a rule, from config['resources']."""
    return config["resources"][rule_name][key]


def get_dicom_files(column):
    """Input function: every file of the patient's series folder, so a changed file reruns it."""

    def files(wildcards):
        folder = Path(patients.loc[wildcards.patient, column])
        return [str(p) for p in list_dicom_files(folder)] or [str(folder)]

    return files


def get_series_folder(column):
    def folder(wildcards):
        return patients.loc[wildcards.patient, column]

    return folder


def get_label(wildcards):
    return patients.loc[wildcards.patient, "label"]


def region_labels():
    return [0] + sorted(config["regions"].values())


def get_final_outputs():
    return expand(
        "results/normalized/{patient}/{image}.nii.gz",
        patient=PATIENTS,
        image=["ct", "pet", "label"],
    ) + ["results/split.tsv"]
