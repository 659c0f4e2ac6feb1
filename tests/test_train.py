"""Training engine on the CPU: every variant's stage 1, stage 2 from a stage-1 bundle, the bundle
loader, the global-epoch LR schedule, determinism and a loose "it learns" check.

Tiny synthetic volumes (3 patients, 6 slices of 40x48) at 32x32 with the ``tiny`` presets keep
each run to about a second. The helpers here are also used by test_train_resume/_ddp.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from abmseg.models.trained_model import load_trained_model, read_trained_model
from abmseg.progress import ProgressLine
from abmseg.train.cli import read_patients, torchrun_command
from abmseg.train.distributed import DistEnv
from abmseg.train.engine import Trainer, TrainJob, run_training
from abmseg.train.progress import read_losses_csv
from abmseg.train.settings import TrainSettings
from abmseg.variants import VARIANTS, final_stage, has_stage2, stage1_owner

REPO = Path(__file__).resolve().parents[1]
SHAPE = (6, 40, 48)  # (z, y, x) per patient
TRAINING = {  # overrides of config.yaml + demo.yaml for the tests
    "image_size": 32,
    "batch_size": 2,
    "lr": 1e-3,
    "lr_milestones": [100],
    "epochs_stage1": 1,
    "epochs_stage2": 1,
    "max_slices_per_epoch": 8,
    "workers": 0,
}


# --------------------------------------------------------------------------- helpers


def write_patient(folder: Path, seed: int, shape: tuple[int, int, int] = SHAPE) -> None:
    """Normalised CT/PET in [-1, 1] with an elliptic body; three marrow discs (labels 1..3)
    that are bright on CT and graded on PET, so there is something to learn."""
    rng = np.random.default_rng(seed)
    z, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    body = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.44 * w)) ** 2 <= 1
    ct = np.full(shape, -1.0, np.float32)
    pet = np.full(shape, -1.0, np.float32)
    label = np.zeros(shape, np.uint8)
    for k in range(z):
        ct[k][body] = -0.1 + 0.05 * rng.standard_normal(body.sum())
        pet[k][body] = -0.7 + 0.05 * rng.standard_normal(body.sum())
        for cls in (1, 2, 3):
            cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.3, 0.7) * w
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(3, 6) ** 2) & body
            label[k][disc], ct[k][disc], pet[k][disc] = cls, 0.5, 0.2 * cls - 0.2
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("ct", ct), ("pet", pet), ("label", label)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{name}.nii.gz"))


def make_cohort(root: Path, n: int = 3) -> list[tuple[str, Path]]:
    """``n`` synthetic patients under ``root`` plus ``root/patients.tsv`` (relative folders)."""
    patients = []
    for k in range(n):
        write_patient(root / f"P{k}", seed=k)
        patients.append((f"P{k}", root / f"P{k}"))
    lines = ["patient_id\tfolder", *(f"{p}\t{p}" for p, _ in patients)]
    (root / "patients.tsv").write_text("\n".join(lines) + "\n")
    return patients


def base_config(**training) -> dict:
    """config.yaml with demo.yaml merged over it (as Snakemake does) and test overrides."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for key, value in yaml.safe_load((REPO / "config/demo.yaml").read_text()).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    config["training"] = {**config["training"], **TRAINING, **training}
    return config


def settings(**training) -> TrainSettings:
    return TrainSettings.from_config(base_config(**training))


def train(
    cohort, out: Path, variant: str, stage: int = 1, init: Path | None = None, **training
) -> Path:
    job = TrainJob(stage, variant, settings(**training), cohort, out, init=init)
    return run_training(job)


def state_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a bundle's networks, flat."""
    state = read_trained_model(path)["state"]
    return {f"{net}.{k}": v for net, sd in state.items() for k, v in sd.items()}


def assert_identical(a: Path, b: Path) -> None:
    ta, tb = state_tensors(a), state_tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> list[tuple[str, Path]]:
    return make_cohort(tmp_path_factory.mktemp("train_cohort"))


@pytest.fixture(scope="module")
def full_runs(cohort, tmp_path_factory) -> dict[str, Path]:
    """``full`` stage 1 (2 epochs) and stage 2 (2 epochs), LR milestones at global 1 and 2."""
    root = tmp_path_factory.mktemp("full")
    schedule = {"epochs_stage1": 2, "epochs_stage2": 2, "lr_milestones": [1, 2]}
    stage1 = train(cohort, root / "s1", "full", **schedule)
    stage2 = train(cohort, root / "s2", "full", stage=2, init=stage1, **schedule)
    return {"stage1": stage1, "stage2": stage2, "schedule": schedule}


# --------------------------------------------------------------------------- data, settings


def test_variant_table():
    table5 = {"ct_only", "cyclegan", "diffusion", "fusion", "full"}
    assert set(VARIANTS) == table5 | {"early_concat"}
    assert [v for v in VARIANTS if has_stage2(v)] == ["diffusion", "early_concat", "fusion", "full"]
    assert VARIANTS["early_concat"].fusion == "input" and VARIANTS["early_concat"].uses_diffusion
    assert final_stage("cyclegan") == 1 and final_stage("full") == 2
    assert VARIANTS["full"].joint and not VARIANTS["fusion"].joint
    assert VARIANTS["cyclegan"].fusion == "concat" and VARIANTS["ct_only"].modalities == "ct"
    # equal budget: every variant has a stage 2 (the variants without diffusion train on)
    assert all(has_stage2(v, equal_budget=True) for v in VARIANTS)
    assert final_stage("ct_only", equal_budget=True) == 2
    # stage 1 is trained once where it is the same: only the diffusion tells these two apart
    assert stage1_owner("diffusion") == "cyclegan"
    assert {v: stage1_owner(v) for v in VARIANTS if v != "diffusion"} == {
        "ct_only": "ct_only", "cyclegan": "cyclegan", "fusion": "fusion", "full": "full",
        "early_concat": "early_concat",
    }  # fmt: skip


def test_settings_from_the_real_config():
    paper = TrainSettings.from_config(yaml.safe_load((REPO / "config/config.yaml").read_text()))
    assert (paper.epochs_stage1, paper.epochs_stage2, paper.batch_size) == (150, 200, 4)
    assert paper.lr_at(149) == pytest.approx(1e-4)
    assert paper.lr_at(150) == pytest.approx(1e-5)  # milestones count global epochs
    assert paper.lr_at(300) == pytest.approx(1e-6)
    assert TrainSettings.from_dict(paper.to_dict()) == paper
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainSettings.from_config({"training": {"learning_rate": 1.0}})


def test_patients_sheet_and_torchrun_command(cohort):
    sheet = cohort[0][1].parent / "patients.tsv"
    assert read_patients(sheet) == cohort  # relative folders resolve against the sheet
    command = torchrun_command(2, ["--stage", "1"])
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[-4:] == ["-m", "abmseg.train.cli", "--stage", "1"]


def test_progress_line_in_a_log_file():
    class Log(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    log = Log()
    line = ProgressLine("[stage 1 full] epoch 1/2", total=40, stream=log)
    for step in range(1, 41):
        line.update(step, 2 * step, 1.5)
    line.close()
    assert 5 <= len(log) <= 11  # about every 10 %, never per step
    assert "step 40/40" in log[-1] and "slices/s" in log[-1] and "loss 1.5" in log[-1]


# --------------------------------------------------------------------------- stage runs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stage1_of_every_variant(cohort, tmp_path, variant):
    model = train(cohort, tmp_path, variant)
    assert model == tmp_path / "model.pt" and model.is_file()
    assert (tmp_path / "losses.png").stat().st_size > 0
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    (row,) = read_losses_csv(tmp_path / "losses.csv")
    terms = {k: float(v) for k, v in row.items() if v != "" and k not in ("stage",)}
    assert all(math.isfinite(v) for v in terms.values())
    assert int(row["slices"]) == 8 and int(row["distinct_slices"]) == 8  # the per-epoch cap
    assert "seg_dice" in row and "seg_ce" in row
    assert ("gan_pet" in row) == ("d_pet_fake" in row) == VARIANTS[variant].uses_cyclegan
    bundle = read_trained_model(model)
    assert (bundle["variant"], bundle["stage"], bundle["epochs"]) == (variant, 1, 1)
    assert bundle["train_patients"] == ["P0", "P1", "P2"]
    expected = {"mpfpsn"} | (
        {"g_ct2pet", "g_pet2ct", "d_pet", "d_ct"} if variant != "ct_only" else set()
    )
    assert set(bundle["state"]) == expected
    assert bundle["presets"]["mpfpsn"]["fusion"] == VARIANTS[variant].fusion


def test_lr_follows_global_epochs_across_stages(full_runs):
    s1 = read_losses_csv(full_runs["stage1"].parent / "losses.csv")
    s2 = read_losses_csv(full_runs["stage2"].parent / "losses.csv")
    assert [int(r["global_epoch"]) for r in s1 + s2] == [0, 1, 2, 3]
    assert [float(r["lr"]) for r in s1 + s2] == pytest.approx([1e-3, 1e-4, 1e-5, 1e-5])
    checkpoint = torch.load(
        full_runs["stage2"].parent / "checkpoints" / "last.pt", weights_only=True
    )
    for optimizer in checkpoint["optimizers"].values():
        assert optimizer["param_groups"][0]["lr"] == pytest.approx(1e-5)


def test_stage2_starts_from_the_stage1_bundle(cohort, full_runs, tmp_path):
    stage1 = full_runs["stage1"]
    job = TrainJob(2, "full", settings(**full_runs["schedule"]), cohort, tmp_path, init=stage1)
    trainer = Trainer(job, DistEnv())
    saved = read_trained_model(stage1)["state"]
    for name, module in trainer.nets.parts().items():
        if name == "diffusion":
            continue
        for key, value in module.state_dict().items():
            assert torch.equal(value, saved[name][key]), f"{name}.{key} not from stage 1"
    run = torch.load(stage1.parent / "checkpoints" / "last.pt", weights_only=True)
    restored = trainer.optimizers["gen"].state_dict()["state"][0]["exp_avg"]
    assert torch.equal(restored, run["optimizers"]["gen"]["state"][0]["exp_avg"])
    assert trainer.optimizers["diff"].state_dict()["state"] == {}  # the diffusion's Adam is new

    bundle = read_trained_model(full_runs["stage2"])
    assert (bundle["stage"], bundle["epochs"], bundle["global_epochs"]) == (2, 2, 4)
    assert set(bundle["state"]) == {"g_ct2pet", "g_pet2ct", "d_pet", "d_ct", "mpfpsn", "diffusion"}
    assert [row["global_epoch"] for row in bundle["history"]] == [0, 1, 2, 3]
    rows = read_losses_csv(full_runs["stage2"].parent / "losses.csv")
    assert all(math.isfinite(float(rows[-1][k])) for k in ("diff_mse", "diff_total", "seg_total"))


def test_diffusion_starts_stage2_from_the_cyclegan_stage1(cohort, tmp_path):
    """cyclegan and diffusion train the same stage 1; diffusion's stage 2 takes cyclegan's."""
    stage1 = train(cohort, tmp_path / "cyclegan_s1", "cyclegan")
    model = train(cohort, tmp_path / "diffusion_s2", "diffusion", stage=2, init=stage1)
    bundle = read_trained_model(model)
    assert (bundle["variant"], bundle["stage"]) == ("diffusion", 2)
    assert "diffusion" in bundle["state"]
    own_stage1 = train(cohort, tmp_path / "diffusion_s1", "diffusion")
    assert_identical(stage1, own_stage1)  # the shared stage 1 is exactly what it would train


def test_equal_budget_trains_a_variant_without_diffusion_through_stage2(cohort, tmp_path):
    stage1 = train(cohort, tmp_path / "s1", "ct_only", equal_budget=True)
    with pytest.raises(ValueError, match="has no stage 2"):
        train(cohort, tmp_path / "paper", "ct_only", stage=2, init=stage1)
    model = train(cohort, tmp_path / "s2", "ct_only", stage=2, init=stage1, equal_budget=True)
    bundle = read_trained_model(model)
    assert (bundle["stage"], bundle["global_epochs"], set(bundle["state"])) == (2, 2, {"mpfpsn"})
    before = read_trained_model(stage1)["state"]["mpfpsn"]
    changed = [k for k, v in bundle["state"]["mpfpsn"].items() if not torch.equal(v, before[k])]
    assert changed  # it trained on
    rows = read_losses_csv(tmp_path / "s2" / "losses.csv")
    assert [int(r["global_epoch"]) for r in rows] == [1] and "seg_total" in rows[0]


def test_stage2_refuses_a_foreign_bundle(cohort, full_runs, tmp_path):
    with pytest.raises(ValueError, match="not the stage-1 model"):
        train(cohort, tmp_path, "fusion", stage=2, init=full_runs["stage1"])


def test_load_trained_model_gives_working_eval_networks(full_runs, cohort, tmp_path):
    bundle = load_trained_model(full_runs["stage2"], "cpu")
    assert {"g_ct2pet", "diffusion", "mpfpsn"} <= set(bundle) and "state" not in bundle
    assert not any(bundle[k].training for k in ("g_ct2pet", "diffusion", "mpfpsn"))
    ct = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        pseudo = bundle["g_ct2pet"](ct)
        spet = bundle["diffusion"].refine(pseudo, ct, sampler="ddim", steps=2)
        logits = bundle["mpfpsn"](ct, spet)
    assert logits.shape == (2, 4, 32, 32) and torch.isfinite(logits).all()

    ct_only = load_trained_model(train(cohort, tmp_path, "ct_only"))
    assert "g_ct2pet" not in ct_only and "diffusion" not in ct_only
    with torch.no_grad():
        assert ct_only["mpfpsn"](ct).shape == (2, 4, 32, 32)


def test_identical_runs_give_identical_weights(cohort, tmp_path):
    first = train(cohort, tmp_path / "a", "full", epochs_stage1=2)
    second = train(cohort, tmp_path / "b", "full", epochs_stage1=2)
    assert_identical(first, second)
    other = state_tensors(train(cohort, tmp_path / "c", "ct_only"))
    again = state_tensors(train(cohort, tmp_path / "d", "ct_only", lr=2e-3))
    assert any(not torch.equal(other[k], again[k]) for k in other)  # settings do matter


def test_worker_processes_do_not_change_the_weights(cohort, tmp_path):
    """Batches depend on (seed, epoch) only, so a resume may use another worker count."""
    inline = train(cohort, tmp_path / "inline", "cyclegan", epochs_stage1=2, workers=0)
    workers = train(cohort, tmp_path / "workers", "cyclegan", epochs_stage1=2, workers=2)
    assert_identical(inline, workers)


def test_augmenting_on_the_device_does_not_change_the_weights(cohort, tmp_path):
    """Batched augmentation on the training device uses the loader's numbers: on a CPU the two
    paths give bit-identical training, so the setting is a pure speed choice."""
    loader = train(cohort, tmp_path / "loader", "full", epochs_stage1=2)
    device = train(cohort, tmp_path / "device", "full", epochs_stage1=2, augment_on_device=True)
    assert_identical(loader, device)


def test_resume_refuses_a_checkpoint_of_other_settings(cohort, tmp_path):
    train(cohort, tmp_path, "ct_only")
    with pytest.raises(ValueError, match="lr: 0.001 -> 0.002"):
        train(cohort, tmp_path, "ct_only", lr=2e-3)


def test_segmentation_loss_goes_down(cohort, tmp_path):
    train(
        cohort,
        tmp_path,
        "ct_only",
        epochs_stage1=4,
        max_slices_per_epoch=None,
        augment={"rotation_deg": 0.0, "hflip_p": 0.0, "intensity_jitter": 0.0},
    )
    seg = [float(r["seg_total"]) for r in read_losses_csv(tmp_path / "losses.csv")]
    assert len(seg) == 4 and seg[3] < seg[0] and seg[2] < seg[0]


def test_config_json_round_trip_through_the_cli(cohort, tmp_path):
    from abmseg.train.cli import main

    config = copy.deepcopy(base_config())
    (tmp_path / "config.json").write_text(json.dumps(config))
    sheet = cohort[0][1].parent / "patients.tsv"
    args = ["--stage", "1", "--variant", "ct_only", "--config", str(tmp_path / "config.json")]
    assert main([*args, "--patients", str(sheet), "--out", str(tmp_path / "o"), "--gpus", "0"]) == 0
    assert read_trained_model(tmp_path / "o" / "model.pt")["settings"]["image_size"] == 32


# --------------------------------------------------------------------------- stage-2 knobs
# (the validation study's risk 4: diffusion lr, warm-up on the pseudo-PET, detached denoiser)


def test_the_diffusion_lr_scale_moves_only_the_diffusion_optimizer():
    s = TrainSettings(lr=1e-3, lr_milestones=(2,), lr_gamma=0.1, diffusion_lr_scale=0.1)
    assert s.optimizer_lr("gen", 1) == pytest.approx(1e-3)
    assert s.optimizer_lr("disc", 3) == pytest.approx(1e-4)
    assert s.optimizer_lr("diff", 1) == pytest.approx(1e-4)
    assert s.optimizer_lr("diff", 3) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="diffusion_lr_scale"):
        TrainSettings(diffusion_lr_scale=0)
    with pytest.raises(ValueError, match="spet_warmup_epochs"):
        TrainSettings(spet_warmup_epochs=-1)


def test_a_checkpoint_older_than_a_setting_resumes_under_its_default():
    from abmseg.train.settings import resume_differences

    saved = TrainSettings().to_dict()
    del saved["spet_warmup_epochs"]  # written before the setting existed
    assert resume_differences(saved, TrainSettings()) == []
    assert resume_differences(saved, TrainSettings(spet_warmup_epochs=2)) == [
        "spet_warmup_epochs: 0 -> 2"
    ]


def test_frozen_parameters_pass_gradients_to_inputs_only():
    from abmseg.train.stage2 import frozen_parameters

    layer = torch.nn.Linear(3, 2)
    x = torch.ones(4, 3, requires_grad=True)
    with frozen_parameters(layer):
        y = layer(x).sum()
    y.backward()
    # d(sum(W x + b))/dx = column sums of W, for every row of x
    assert torch.allclose(x.grad, layer.weight.sum(dim=0).expand(4, 3))
    assert layer.weight.grad is None and layer.bias.grad is None
    assert layer.weight.requires_grad and layer.bias.requires_grad  # restored


def _step_view(diffusion, **fields):
    from types import SimpleNamespace

    from abmseg.variants import get_variant

    base = {"spec": get_variant("full"), "diffusion": diffusion, "spet_t_fraction": 0.5}
    return SimpleNamespace(
        **{**base, "spet_warmup": False, "seg_grad_into_denoiser": True, **fields}
    )


@pytest.mark.parametrize("into_denoiser", [True, False])
def test_the_segmentation_gradient_reaches_the_denoiser_only_when_asked(full_runs, into_denoiser):
    from abmseg.train.stage2 import training_spet

    diffusion = load_trained_model(full_runs["stage2"], "cpu")["diffusion"].train()
    pseudo = (torch.rand(2, 1, 32, 32) * 2 - 1).requires_grad_(True)
    ct = torch.rand(2, 1, 32, 32) * 2 - 1
    torch.manual_seed(0)
    m = _step_view(diffusion, seg_grad_into_denoiser=into_denoiser)
    training_spet(m, pseudo, ct).square().sum().backward()
    assert pseudo.grad is not None and pseudo.grad.abs().sum() > 0  # G_CT->PET is reached
    grads = [p.grad for p in diffusion.parameters()]
    if into_denoiser:
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    else:
        assert all(g is None for g in grads)


def test_the_warm_up_hands_mp_fpsn_the_pseudo_pet(full_runs):
    from abmseg.train.stage2 import training_spet

    diffusion = load_trained_model(full_runs["stage2"], "cpu")["diffusion"]
    pseudo = torch.rand(2, 1, 32, 32) * 2 - 1
    m = _step_view(diffusion, spet_warmup=True)
    assert training_spet(m, pseudo, torch.zeros_like(pseudo)) is pseudo


def test_stage2_trains_with_the_knobs_set(cohort, full_runs, tmp_path):
    knobs = {"spet_warmup_epochs": 1, "seg_grad_into_denoiser": False, "diffusion_lr_scale": 0.1}
    schedule = full_runs["schedule"]
    model = train(cohort, tmp_path, "full", stage=2, init=full_runs["stage1"], **schedule, **knobs)
    bundle = read_trained_model(model)
    assert all(bundle["settings"][k] == v for k, v in knobs.items())
    assert all(torch.isfinite(v).all() for v in state_tensors(model).values())
    # the scale reached the diffusion's optimizer and no other (its last epoch's learning rates)
    from abmseg.train.checkpoint import load_latest_checkpoint

    optimizers = load_latest_checkpoint(tmp_path / "checkpoints")["optimizers"]
    lrs = {name: state["param_groups"][0]["lr"] for name, state in optimizers.items()}
    assert lrs["diff"] == pytest.approx(0.1 * lrs["gen"]) and lrs["disc"] == lrs["gen"]
