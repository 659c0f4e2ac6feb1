import gc
from pathlib import Path

from snakemake.utils import validate

from abmseg.cohort.sheet import SheetError, load_sheet
from abmseg.cohort.split import assign_split
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
SPLIT = assign_split(
    PATIENTS,
    config["split"]["train_fraction"],
    config["split"]["salt"],
    overrides={p: s for p, s in patients["split"].items() if s},
)


TRAIN_PATIENTS = [p for p in PATIENTS if SPLIT[p] == "train"]
TEST_PATIENTS = [p for p in PATIENTS if SPLIT[p] == "test"]
if not TRAIN_PATIENTS or not TEST_PATIENTS:
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
STAGE2_VARIANTS = [v for v in VARIANTS if VARIANT_SPECS[v].uses_diffusion]
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


def get_final_outputs():
    return (
        expand(
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
    """SEG and RTSTRUCT of every test patient's ABM, when config export.dicom asks for them."""
    if not config["export"]["dicom"]:
        return []
    return expand(
        "results/dicom/{variant}/{patient}/abm_{kind}.dcm",
        variant=VARIANTS,
        patient=TEST_PATIENTS,
        kind=["seg", "rtstruct"],
    )
