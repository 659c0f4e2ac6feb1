import gc
from pathlib import Path

from snakemake.utils import validate

from abmseg.cohort.sheet import (
    SheetError,
    ct_only_patients,
    load_sheet,
    scored_patients,
)
from abmseg.cohort.split import assign_split
from abmseg.errors import PatientDataError
from abmseg.infer.model_bundle import MANIFEST as MODEL_BUNDLE_FILE
from abmseg.infer.model_bundle import verify_model_bundle
from abmseg.io.dicom_series import list_dicom_files
from abmseg.train.variants import VARIANTS as VARIANT_SPECS

# Snakemake builds a graph of Python objects per job; with CPython's default thresholds the
# cyclic collector walks it again and again: this cuts a 10,000-patient dry run by about 15%
# (BENCHMARKS.md). Only this Snakemake process is affected, not the jobs.
gc.set_threshold(100_000, 50, 1000)

validate(config, schema="../schemas/config.schema.yaml")

try:
    patients = load_sheet(config["patients"])
except SheetError as error:
    raise WorkflowError(str(error)) from None
# One call for the whole table: a validate() per row costs ~5 ms, a minute at 10,000 patients.
validate(patients, schema="../schemas/patients.schema.yaml", set_default=False)

PATIENTS = list(patients.index)
# CT-only patients (no PET, no label) are only predicted, with the model bundle below.
CT_ONLY_PATIENTS = ct_only_patients(patients)
SCORED_PATIENTS = scored_patients(patients)
SPLIT = assign_split(
    SCORED_PATIENTS,
    config["split"]["train_fraction"],
    config["split"]["salt"],
    overrides={p: s for p, s in patients["split"].items() if s},
)


TRAIN_PATIENTS = [p for p in SCORED_PATIENTS if SPLIT[p] == "train"]
TEST_PATIENTS = [p for p in SCORED_PATIENTS if SPLIT[p] == "test"]
if SCORED_PATIENTS and (not TRAIN_PATIENTS or not TEST_PATIENTS):
    raise WorkflowError(
        f"the split gives {len(TRAIN_PATIENTS)} training and {len(TEST_PATIENTS)} test patients; "
        "both sides need at least one: add patients or set the sheet's 'split' column"
    )
if sorted(config["regions"].values()) != [1, 2, 3]:
    raise WorkflowError(
        f"config 'regions' must give the three regions the label values 1, 2 and 3 (the networks "
        f"have 4 classes); got {config['regions']}: relabel the images to 1-3 instead"
    )
MODEL_PRESET_FILES = [
    str(Path(workflow.basedir) / "config" / "models" / f"{network}.yaml")
    for network in ("cyclegan", "diffusion", "mpfpsn")
]
VARIANTS = config["variants"]


def configured_bundle(path):
    """The configured model bundle as an absolute path and its manifest, verified (format,
    version, SHA-256 of the manifest and of every weight file) before any job is planned. It may
    not lie in this run's results/: a rule writes there, and predicting from it could retrain
    it. A relative path is taken from the working directory."""
    folder = Path(path).resolve()
    if Path("results").resolve() in folder.parents:
        raise WorkflowError(
            f"config 'model_bundle' {path} lies inside this run's results/ folder, which the "
            "pipeline rewrites: leave model_bundle null to use this run's own bundle, or copy "
            "the bundle folder elsewhere and point to the copy"
        )
    if not (folder / MODEL_BUNDLE_FILE).is_file():
        raise WorkflowError(
            f"config 'model_bundle' {path} holds no {MODEL_BUNDLE_FILE}: point it to a bundle "
            "folder written by the rule 'bundle' (a copy of results/bundles/<variant> of a "
            "finished run)"
        )
    try:
        return str(folder), verify_model_bundle(folder)
    except PatientDataError as error:
        raise WorkflowError(f"config 'model_bundle': {error}") from None


# The bundle CT-only patients are predicted with: a configured folder (verified now, once; no
# training needed for them), else the one this run trains for the first variant.
MODEL_BUNDLE = f"results/bundles/{VARIANTS[0]}"
PREDICT_REGIONS = config["regions"]
if CT_ONLY_PATIENTS and config["model_bundle"]:
    MODEL_BUNDLE, bundle_manifest = configured_bundle(config["model_bundle"])
    PREDICT_REGIONS = bundle_manifest["regions"]
elif CT_ONLY_PATIENTS and not SCORED_PATIENTS:
    raise WorkflowError(
        f"{len(CT_ONLY_PATIENTS)} CT-only patient(s) and no patient with PET and label to train "
        "a model on: set config 'model_bundle' to a trained bundle folder (a copy of "
        "results/bundles/<variant> of an earlier run)"
    )
FIGURE_PATIENTS = TEST_PATIENTS[:3]


wildcard_constraints:
    patient="[A-Za-z0-9_-]+",
    variant="|".join(VARIANTS),


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


def training_volumes(wildcards):
    """Normalised volumes of the training patients only: a new test patient changes nothing."""
    return expand(
        "results/normalized/{patient}/{image}.nii.gz",
        patient=TRAIN_PATIENTS,
        image=["ct", "pet", "label"],
    )


def training_settings():
    """Only the config that training reads, so other config changes do not retrain (the worker
    count changes no result: the script takes it from the config, not from params)."""
    training = {k: v for k, v in config["training"].items() if k != "workers"}
    return {
        "seed": config["seed"],
        "model_preset": config["model_preset"],
        "training": training,
    }


def gpu_count(job):
    return config["gpu"][job]["count"]


def gpu_model(job):
    """The GPU model for the SLURM executor, or "" for CPU jobs (a model with count 0 would make
    the executor ask for --gpus=<model>:0)."""
    return config["gpu"][job]["model"] if gpu_count(job) > 0 else ""


def scheduler_resources(rule_name, gpu_job=None):
    """Every scheduler tag of a rule, from config: memory, wall time and cores from
    config['resources'], the partition and account from config['cluster'], and for GPU rules
    the GPU count and model that the SLURM executor turns into --gpus=model:N. Executors without
    these notions (local runs) ignore the tags they do not know."""
    tags = {
        "mem_mb": res(rule_name, "mem_mb"),
        "runtime": res(rule_name, "runtime"),
        "cpus_per_task": res(rule_name, "threads"),
        "slurm_partition": config["cluster"][
            "gpu_partition" if gpu_job else "cpu_partition"
        ],
    }
    if config["cluster"]["account"]:
        tags["slurm_account"] = config["cluster"]["account"]
    if gpu_job:
        # tasks_per_gpu 0: one task holding all GPUs (torchrun starts the per-GPU processes);
        # the plugin's default of one task per GPU would multiply cpus_per_task by the GPUs.
        tags.update(
            gpu=gpu_count(gpu_job), gpu_model=gpu_model(gpu_job), tasks_per_gpu=0
        )
    return tags


def final_model(wildcards):
    stage = 2 if VARIANT_SPECS[wildcards.variant].uses_diffusion else 1
    return f"results/models/{wildcards.variant}/stage{stage}/model.pt"


def bundle_preprocessing():
    """Every preprocessing setting a bundle must carry to predict new patients like its
    training patients (crop, CT window, SUV ceiling, which slices count as body)."""
    return {
        "crop": config["crop"],
        "normalise": config["normalise"],
        "body_threshold": config["training"]["body_threshold"],
    }


def bundle_sampler():
    """The sampler a bundle predicts with: this run's inference settings and seed."""
    return {**config["inference"], "seed": config["seed"]}


def get_final_outputs():
    predicted = expand(
        "results/predict/{patient}/{name}",
        patient=CT_ONLY_PATIENTS,
        name=["abm_ct.nii.gz", "prediction.json"],
    )
    if not SCORED_PATIENTS:
        return predicted + dicom_exports()
    return (
        predicted
        + expand("results/bundles/{variant}/bundle.json", variant=VARIANTS)
        + expand(
            "results/inference/{variant}/{patient}/abm_ct.nii.gz",
            variant=VARIANTS,
            patient=TEST_PATIENTS,
        )
        + expand(
            "results/figures/{variant}/{patient}.png",
            variant=VARIANTS,
            patient=FIGURE_PATIENTS,
        )
        + ["results/metrics/summary.md", "results/split.tsv"]
        + dicom_exports()
    )


def dicom_exports():
    """SEG and RTSTRUCT of every test patient's and CT-only patient's ABM, when config
    export.dicom asks for them (CT-only patients' under results/dicom/predict/)."""
    if not config["export"]["dicom"]:
        return []
    kinds = ["seg", "rtstruct"]
    path = "results/dicom/{source}/{patient}/abm_{kind}.dcm"
    return expand(path, source=VARIANTS, patient=TEST_PATIENTS, kind=kinds) + expand(
        path, source=["predict"], patient=CT_ONLY_PATIENTS, kind=kinds
    )


def exported_regions(wildcards):
    """Region table of an export: the bundle's for CT-only patients (a bundle from elsewhere
    may name its regions differently from this config)."""
    return PREDICT_REGIONS if wildcards.source == "predict" else config["regions"]


def exported_mask(wildcards):
    """The ABM on the CT grid that rule export_dicom turns into DICOM."""
    if wildcards.source == "predict":
        return f"results/predict/{wildcards.patient}/abm_ct.nii.gz"
    return f"results/inference/{wildcards.source}/{wildcards.patient}/abm_ct.nii.gz"
