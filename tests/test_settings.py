"""One home per default: every stage's settings type equals config/config.yaml, reads only the
keys its rule passes, refuses unknown keys, and the CLI reads the workflow's config format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from abmseg.cli_stages import load_stage_config
from abmseg.cohort.split import SplitSettings
from abmseg.errors import ConfigError
from abmseg.evaluate.patient import EvaluateSettings
from abmseg.infer.model_bundle import BundleSettings, bundle_config
from abmseg.infer.predict import InferenceSettings
from abmseg.preprocess.convert import ConvertSettings
from abmseg.preprocess.normalise import NormaliseSettings
from abmseg.preprocess.register import AFFINE_DEFAULT, RegistrationSettings, StageSettings
from abmseg.preprocess.roi import CropSettings
from abmseg.qa.checks import QaSettings
from abmseg.rt.export import ExportSettings
from abmseg.settings import STAGE_CONFIG_KEYS, from_section, pick, stage_config, to_section
from abmseg.study.plan import StudyPlan
from abmseg.train.settings import TrainSettings
from abmseg.workflow_run import run_snakemake

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
DEMO = {**CONFIG, **yaml.safe_load((REPO / "config" / "demo.yaml").read_text())}
# Each stage's settings type, built the way its rule script builds it.
BUILDERS = {
    "convert": ConvertSettings.from_config,
    "register": RegistrationSettings.from_config,
    "crop": CropSettings.from_config,
    "normalise": NormaliseSettings.from_config,
    "split": SplitSettings.from_config,
    "train": TrainSettings.from_config,
    "infer": InferenceSettings.from_config,
    "qa": lambda config: (
        QaSettings.from_config(config),
        ConvertSettings.from_config(config).regions,
    ),
    "evaluate": EvaluateSettings.from_config,
    "bundle": BundleSettings.from_config,
    "export": ExportSettings.from_config,
    "train_stage1": TrainSettings.from_config,
    "study_fit": lambda config: config.get("seed", 42),
    "study_sampler": lambda config: (
        InferenceSettings.from_config(config),
        EvaluateSettings.from_config(config),
        NormaliseSettings.from_config(config).suv_ceiling,
        StudyPlan.from_config(config).start_candidates,
        StudyPlan.from_config(config).start_selection_patients,
    ),
    "study_leakage": lambda config: config.get("regions"),
    "study_summary": StudyPlan.from_config,
    "training_profile": lambda config: ConvertSettings.from_config(config).regions,
}
DEFAULTS = {
    "convert": ConvertSettings(),
    "register": RegistrationSettings(),
    "crop": CropSettings(),
    "normalise": NormaliseSettings(),
    "split": SplitSettings(),
    "infer": InferenceSettings(),
    "qa": (QaSettings(), ConvertSettings().regions),
    "evaluate": EvaluateSettings(),
    "export": ExportSettings(),
}


@pytest.mark.parametrize("stage", sorted(DEFAULTS))
def test_config_yaml_equals_the_settings_defaults(stage):
    assert BUILDERS[stage](CONFIG) == DEFAULTS[stage]


def test_config_yaml_equals_the_training_defaults_except_workers():
    # config.yaml's training section is the paper's: equal to TrainSettings() field by field.
    assert TrainSettings.from_config(CONFIG) == TrainSettings()


def test_an_empty_config_gives_the_defaults():
    for stage, default in DEFAULTS.items():
        assert BUILDERS[stage]({}) == default, stage


@pytest.mark.parametrize("config", [CONFIG, DEMO], ids=["config.yaml", "demo.yaml"])
@pytest.mark.parametrize("stage", sorted(BUILDERS))
def test_each_stage_reads_only_the_keys_its_rule_passes(stage, config):
    """The rule's params (stage_config) hold everything the settings type reads: a setting
    outside them would be missed by Snakemake's params rerun trigger. The training's worker
    count is left out on purpose (it changes no result); the script adds it back."""
    from_params, from_config = BUILDERS[stage](stage_config(config, stage)), BUILDERS[stage](config)
    if stage in ("train", "train_stage1"):
        from_params = dataclasses.replace(from_params, workers=from_config.workers)
    if stage == "train_stage1":  # stage 1 does not depend on whether a stage 2 follows
        from_params = dataclasses.replace(from_params, equal_budget=from_config.equal_budget)
    assert from_params == from_config


def test_a_changed_value_reaches_the_settings_through_the_rule_params():
    changed = yaml.safe_load(yaml.safe_dump(CONFIG))
    changed["crop"]["margin_mm"] = [4, 5, 6]
    changed["inference"]["steps"] = 7
    changed["training"]["body_threshold"] = -0.5
    crop = CropSettings.from_config(stage_config(changed, "crop"))
    assert crop.margin_mm == (4.0, 5.0, 6.0)  # floats and a tuple, as ANTs/NumPy code expects
    changed["qa"]["hu_tolerance"] = 80.0
    assert QaSettings.from_config(stage_config(changed, "qa")).hu_tolerance == 80.0
    infer = InferenceSettings.from_config(stage_config(changed, "infer"))
    assert (infer.steps, infer.body_threshold) == (7, -0.5)


def test_training_params_leave_the_worker_count_out_without_touching_the_config():
    config = yaml.safe_load(yaml.safe_dump(CONFIG))
    params = stage_config(config, "train")
    assert "workers" not in params["training"]
    assert config["training"]["workers"] == 4  # pick copies


def test_every_stage_has_its_config_keys():
    assert set(BUILDERS) == set(STAGE_CONFIG_KEYS)


def test_unknown_keys_are_refused_with_their_section():
    with pytest.raises(ConfigError, match=r"'crop' has unknown key\(s\) \['margn_mm'\]"):
        CropSettings.from_config({"crop": {"margn_mm": [1, 1, 1]}})
    with pytest.raises(ConfigError, match=r"'register.rigid' has unknown key"):
        RegistrationSettings.from_config({"register": {"rigid": {"bins": 3}}})
    with pytest.raises(ConfigError, match="unknown training settings"):
        TrainSettings.from_config({"training": {"learning_rate": 1.0}})


def test_a_partial_nested_section_keeps_that_section_s_own_defaults():
    """An affine section with one key keeps the affine defaults, not the rigid stage's."""
    settings = RegistrationSettings.from_config({"register": {"affine": {"gradient_step": 0.3}}})
    assert settings.affine == dataclasses.replace(AFFINE_DEFAULT, gradient_step=0.3)
    assert settings.rigid == StageSettings()


def test_a_bad_value_is_a_config_error_naming_the_section():
    with pytest.raises(ConfigError, match="config 'training'.*multiple of 16"):
        TrainSettings.from_config({"training": {"image_size": 100}})


def test_to_section_round_trips():
    crop = CropSettings(margin_mm=(1.0, 2.0, 3.0), clear_outside_body=False)
    assert to_section(crop) == {"margin_mm": [1.0, 2.0, 3.0], "clear_outside_body": False}
    assert from_section(CropSettings, to_section(crop), "crop") == crop


def test_pick_takes_dotted_keys_and_skips_absent_ones():
    config = {"a": {"b": 1, "c": 2}, "d": 3}
    assert pick(config, "a.b", "d", "e", "f.g") == {"a": {"b": 1}, "d": 3, "f": {}}


def test_a_bundle_s_settings_read_back_as_the_run_s():
    """The bundle records the run's settings; read back through the same from_config they are
    the settings the run's own rules used."""
    recorded = BundleSettings.from_config(DEMO)
    manifest = {
        "preprocessing": recorded.preprocessing,
        "sampler": recorded.sampler,
        "regions": recorded.regions,
    }
    config = bundle_config(manifest)
    for stage in ("crop", "normalise", "infer", "convert"):
        assert BUILDERS[stage](config) == BUILDERS[stage](DEMO), stage
    assert recorded.sampler == {**DEMO["inference"], "seed": DEMO["seed"]}


def test_cli_reads_the_config_file_and_set_overrides(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("crop: {margin_mm: [1, 1, 1]}\nnormalise: {suv_ceiling: 8}\n")

    class Args:
        config = str(path)
        set = ["crop.clear_outside_body=false", "normalise.ct_width_hu=1000"]

    config = load_stage_config(Args)
    assert CropSettings.from_config(config) == CropSettings((1.0, 1.0, 1.0), False)
    assert NormaliseSettings.from_config(config) == NormaliseSettings(100.0, 1000.0, 8.0)


def _sheet(tmp_path: Path, cohort: Path, patients: list[str]) -> Path:
    rows = [f"{p}\t{cohort}/{p}/CT\t{cohort}/{p}/PET\t{cohort}/{p}/label.nii.gz" for p in patients]
    sheet = tmp_path / "patients.tsv"
    sheet.write_text("patient_id\tct\tpet\tlabel\n" + "\n".join(rows) + "\n")
    return sheet


def test_one_patient_sheet_converts_but_cannot_train(tmp_path, tiny_cohort):
    """The split needs both sides only for training and scoring targets."""
    sheet = _sheet(tmp_path, tiny_cohort, ["SYN001"])
    target = "results/normalized/SYN001/ct.nii.gz"
    result = run_snakemake(tmp_path, sheet, "-n", target)
    assert result.returncode == 0, result.stderr[-3000:]
    refused = run_snakemake(tmp_path, sheet, "-n")
    assert refused.returncode != 0
    text = refused.stdout + refused.stderr
    assert "both sides need at least one" in text and "Fix: add patients" in text


def test_regions_other_than_one_to_three_are_refused_by_the_schema(tmp_path, tiny_cohort):
    config = ("regions={'lumbosacral_spine': 1, 'ilium': 2, 'lower_pelvis': 2}",)
    result = run_snakemake(tmp_path, tiny_cohort / "patients.tsv", "-n", config=config)
    assert result.returncode != 0
    assert "regions" in result.stdout + result.stderr
