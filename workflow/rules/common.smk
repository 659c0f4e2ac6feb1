import gc

from snakemake.utils import validate

from abmseg.cohort.plan import plan_cohort
from abmseg.cohort.series_state import series_input
from abmseg.cohort.sheet import load_sheet
from abmseg.cohort.split import SplitSettings
from abmseg.errors import UserError
from abmseg.infer.bundle_manifest import resolve_configured_bundle
from abmseg.models.presets import PRESET_DIR
from abmseg.settings import stage_config as config_of_stage
from abmseg.study.plan import StudyPlan
from abmseg.variants import VARIANTS as VARIANT_SPECS
from abmseg.variants import final_stage, stage1_owner

# Snakemake builds a graph of Python objects per job; with CPython's default thresholds the
# cyclic collector walks it again and again: this cuts a 10,000-patient dry run by about 15%
# (BENCHMARKS.md). Only this Snakemake process is affected, not the jobs.
gc.set_threshold(100_000, 50, 1000)

validate(config, schema="../schemas/config.schema.yaml")

try:
    patients = load_sheet(config["patients"])
    # One call for the whole table: a validate() per row costs ~5 ms, a minute at 10,000 patients.
    validate(patients, schema="../schemas/patients.schema.yaml", set_default=False)
    PLAN = plan_cohort(patients, SplitSettings.from_config(config))
except UserError as error:
    raise WorkflowError(str(error)) from None

PATIENTS = PLAN.patients
# CT-only patients (no PET, no label) are only predicted, with the model bundle below.
CT_ONLY_PATIENTS = PLAN.ct_only
SCORED_PATIENTS = PLAN.scored
SPLIT = PLAN.split
TRAIN_PATIENTS = PLAN.train
TEST_PATIENTS = PLAN.test
# Training-side patients held out of the fitting and scored after every epoch.
VALIDATION_PATIENTS = PLAN.validation
# Resubmissions of a failed training job (one that stopped at its time limit resumes), made by
# the Snakemake that submits jobs. Inside a cluster job the rule directive would otherwise
# override the executor's --retries 0 and rerun the job in its own allocation, whose time
# limit is the same (measured: a second attempt in the same SLURM job).
TRAIN_RETRIES = 0 if workflow.remote_exec else config["cluster"]["train_retries"]
# The preset files the package reads (not the caller's folder: this workflow may run as a module).
MODEL_PRESET_FILES = [
    str(PRESET_DIR / f"{network}.yaml")
    for network in ("cyclegan", "diffusion", "mpfpsn")
]
VARIANTS = config["variants"]
EQUAL_BUDGET = config["training"].get("equal_budget", False)
# Stage 1 is trained once per distinct stage 1: diffusion starts from cyclegan's (whose folder
# is trained even when cyclegan itself is not a configured variant).
STAGE1_VARIANTS = sorted({stage1_owner(v) for v in VARIANTS} | set(VARIANTS))


# The bundle CT-only patients are predicted with: a configured folder (verified now, once; no
# training needed for them), else the one this run trains for the first variant.
MODEL_BUNDLE = f"results/bundles/{VARIANTS[0]}"
PREDICT_REGIONS = config["regions"]
if CT_ONLY_PATIENTS and config["model_bundle"]:
    try:
        MODEL_BUNDLE, bundle_manifest = resolve_configured_bundle(
            config["model_bundle"]
        )
    except UserError as error:
        raise WorkflowError(str(error)) from None
    PREDICT_REGIONS = bundle_manifest["regions"]
elif CT_ONLY_PATIENTS and not SCORED_PATIENTS:
    raise WorkflowError(
        f"{len(CT_ONLY_PATIENTS)} CT-only patient(s) and no patient with PET and label to train "
        "a model on: set config 'model_bundle' to a trained bundle folder (a copy of "
        "results/bundles/<variant> of an earlier run)"
    )
FIGURE_PATIENTS = TEST_PATIENTS[:3]
try:
    STUDY = StudyPlan.from_config(config)
except (UserError, ValueError) as error:
    raise WorkflowError(f"config 'study': {error}") from None
if STUDY.enabled and "full" not in VARIANTS:
    raise WorkflowError(
        "config study.enabled needs the variant 'full' in config variants (the sampler sweep, "
        "the start selection and the leakage control run on it)"
    )
STUDY_BASELINES = STUDY.baselines
STUDY_REFERENCES = STUDY.references
STUDY_METHODS = STUDY.methods(VARIANTS)
SAMPLER_POINTS = STUDY.sampler_points(config)


wildcard_constraints:
    patient="[A-Za-z0-9_-]+",
    variant="|".join(STAGE1_VARIANTS),


def res(rule_name, key):
    """A scheduler resource of a rule, from config['resources']; a rule added since a config
    was written (training_profile, qa) falls back to aggregate's."""
    resources = config["resources"]
    return resources.get(rule_name, resources["aggregate"])[key]


def get_series_state(column):
    """Input function: the series' state file, which changes when any of its DICOM files does
    (abmseg.cohort.series_state): one input instead of hundreds keeps the DAG build fast.
    """

    def state(wildcards):
        patient = wildcards.patient
        return series_input(
            patients.loc[patient, column],
            patient,
            column,
            consumers=[
                f"results/converted/{patient}/meta.json",
                f"results/predict/{patient}/prediction.json",
            ],
        )

    return state


def get_series_folder(column):
    def folder(wildcards):
        return patients.loc[wildcards.patient, column]

    return folder


def get_label(wildcards):
    return patients.loc[wildcards.patient, "label"]


def stage_config(stage):
    """A rule's params: only the config keys its stage reads, so a change elsewhere in the config
    does not rerun it (abmseg.settings.STAGE_CONFIG_KEYS)."""
    return config_of_stage(config, stage)


def require_split():
    """Training and scoring need patients on both sides of the split; converting or
    preprocessing one patient does not, so only their input functions ask."""
    problem = PLAN.split_problem()
    if problem:
        raise WorkflowError(problem)


TRAINING_PROFILE = "results/qa/training_profile.json"


def training_files(pattern):
    """Input function: ``pattern`` of every training patient (the split must be usable)."""

    def files(wildcards):
        require_split()
        return expand(pattern, patient=TRAIN_PATIENTS)

    return files


def training_volumes(wildcards):
    """Normalised volumes of the training patients only: a new test patient changes nothing."""
    require_split()
    return expand(
        "results/normalized/{patient}/{image}.nii.gz",
        patient=TRAIN_PATIENTS,
        image=["ct", "pet", "label"],
    )


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
    stage = final_stage(wildcards.variant, EQUAL_BUDGET)
    return f"results/models/{wildcards.variant}/stage{stage}/model.pt"


def stage1_model(wildcards):
    """The stage-1 model a variant's stage 2 starts from (shared where stage 1 is the same)."""
    return f"results/models/{stage1_owner(wildcards.variant)}/stage1/model.pt"


def test_metrics(wildcards):
    """Every test patient's scores, of every variant."""
    require_split()
    return expand(
        "results/metrics/{variant}/{patient}.json",
        variant=VARIANTS,
        patient=TEST_PATIENTS,
    )


def prediction_pairs():
    """(source, results folder) of every prediction: test patients per variant, CT-only ones."""
    pairs = [("predict", f"results/predict/{p}") for p in CT_ONLY_PATIENTS]
    if SCORED_PATIENTS:
        require_split()
        pairs = [
            (variant, f"results/inference/{variant}/{p}")
            for variant in VARIANTS
            for p in TEST_PATIENTS
        ] + pairs
    return pairs


def prediction_files(name):
    return [f"{folder}/{name}" for _, folder in prediction_pairs()]


def prediction_sources():
    return [source for source, _ in prediction_pairs()]


def get_final_outputs(wildcards):
    predicted = expand(
        "results/predict/{patient}/{name}",
        patient=CT_ONLY_PATIENTS,
        name=["abm_ct.nii.gz", "prediction.json"],
    )
    if not SCORED_PATIENTS:
        return predicted + dicom_exports() + ["results/qa/qa.tsv"]
    require_split()
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
        + ["results/metrics/summary.md", "results/split.tsv", "results/qa/qa.tsv"]
        + ["results/report/results.html"]
        + dicom_exports()
        + (["results/study/summary.md"] if STUDY.enabled else [])
    )


def variant_spet(wildcards):
    """The sPET to score: none for ct_only (its spet.nii.gz is a blank, not a synthesis)."""
    if not VARIANT_SPECS[wildcards.variant].uses_cyclegan:
        return []
    return f"results/inference/{wildcards.variant}/{wildcards.patient}/spet.nii.gz"


def baseline_pet(wildcards):
    """Only the PET threshold reads the PET; the CT baselines' provenance must not list it."""
    if wildcards.method == "pet_threshold":
        return f"results/cropped/{wildcards.patient}/pet_suv.nii.gz"
    return []


def study_training_volumes(wildcards):
    """What the baselines are fitted on: the training patients' cropped CT, PET and label."""
    require_split()
    return expand(
        "results/cropped/{patient}/{image}.nii.gz",
        patient=TRAIN_PATIENTS,
        image=["ct", "pet_suv", "label"],
    )


def scored_volumes(patients):
    return expand(
        "results/{folder}/{patient}/{image}.nii.gz",
        zip,
        folder=["normalized", "cropped", "cropped", "cropped"] * len(patients),
        patient=[p for p in patients for _ in range(4)],
        image=["ct", "pet_suv", "label", "ct"] * len(patients),
    )


def start_selection_patients(wildcards=None):
    """Training patients the partial start step is chosen on (never a test patient)."""
    require_split()
    return TRAIN_PATIENTS[: STUDY.start_selection_patients]


def start_selection_volumes(wildcards):
    return scored_volumes(start_selection_patients())


def test_volumes(wildcards):
    require_split()
    return scored_volumes(TEST_PATIENTS)


def sampler_start_input(wildcards):
    """A sweep point from the best partial start reads the start chosen on training patients."""
    if wildcards.point.endswith("-best"):
        return "results/study/start_selection.json"
    return []


def trained_models(wildcards):
    """Every trained model of the run's variants, both stages."""
    return sorted(
        {
            f"results/models/{name}/stage1/model.pt"
            for name in (stage1_owner(v) for v in VARIANTS)
        }
        | {
            f"results/models/{v}/stage2/model.pt"
            for v in VARIANTS
            if final_stage(v, EQUAL_BUDGET) == 2
        }
    )


def test_raw_inputs(wildcards):
    """The test patients' raw inputs (series folders and labels), for the leakage check."""
    return [
        str(patients.loc[p, column])
        for p in TEST_PATIENTS
        for column in ("ct", "pet", "label")
    ]


def study_metrics(wildcards):
    """Every test patient's scores of every method of the study."""
    require_split()
    return expand(
        "results/metrics/{method}/{patient}.json",
        method=STUDY_METHODS,
        patient=TEST_PATIENTS,
    )


def dicom_exports():
    """SEG and RTSTRUCT of every test patient's and CT-only patient's ABM, when config
    export.dicom asks for them (CT-only patients' under results/dicom/predict/)."""
    if not config["export"]["dicom"]:
        return []
    kinds = ["seg", "prob_seg", "rtstruct"]
    path = "results/dicom/{source}/{patient}/abm_{kind}.dcm"
    return expand(path, source=VARIANTS, patient=TEST_PATIENTS, kind=kinds) + expand(
        path, source=["predict"], patient=CT_ONLY_PATIENTS, kind=kinds
    )


def export_config(wildcards):
    """Region table of an export: the bundle's for CT-only patients (a bundle from elsewhere
    may name its regions differently from this config)."""
    if wildcards.source == "predict":
        return {"regions": PREDICT_REGIONS}
    return stage_config("export")


def exported(name):
    """Input function: a prediction's file on the CT grid that rule export_dicom turns into
    DICOM (abm_ct.nii.gz, abm_prob.nii.gz)."""

    def path(wildcards):
        if wildcards.source == "predict":
            return f"results/predict/{wildcards.patient}/{name}"
        return f"results/inference/{wildcards.source}/{wildcards.patient}/{name}"

    return path


# Every patient with a PET: the PET on the CT before and after registration (rule
# registration_figure), a final target and a results-page input.
REGISTRATION_FIGURES = expand(
    "results/qc/registration/{patient}.png", patient=SCORED_PATIENTS
)
