"""Faults: jobs killed at any moment, a second Snakemake on the same folder, damaged intermediates.

The slow tests share one 6-patient tiny run (``recovered``). It is SIGKILLed, whole process group,
while a job of convert, register, train_stage1 (mid-epoch), infer and metrics runs, and restarted
after each kill the way a user must: ``snakemake --unlock`` (the killed run's lock stays behind),
then the same command with ``--rerun-incomplete``. After each kill no file under results/ may look
complete while it is not. The finished run then serves the damaged-intermediate tests.

What Snakemake 9.27 does after a SIGKILL (checked here): the lock files in .snakemake/locks stay,
and the next run (plain or --rerun-incomplete) stops with "Directory cannot be locked" until
``snakemake --unlock`` removes them; the killed jobs' incomplete markers (.snakemake/incomplete)
stay too, and --rerun-incomplete reruns those jobs (a plain run reruns them as well when one of
their outputs is missing, and refuses with IncompleteFilesException only when every output exists).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import FAST, REPO, run_folders

from abmseg.errors import PatientDataError
from abmseg.evaluate.aggregate import aggregate_files
from abmseg.infer.networks import load_networks, model_maker, read_trained_model_checked
from abmseg.infer.patient import read_roi_box
from abmseg.io.jsonfile import read_json
from abmseg.io.volume import read_nifti, write_nifti
from abmseg.preprocess.convert import ConvertedPaths, convert_patient
from abmseg.train.checkpoint import CheckpointError, load_latest_checkpoint
from abmseg.workflow_run import snakemake_command

LOCK_TEXT = "Directory cannot be locked"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


# ---------------------------------------------------------------- readers of intermediates (fast)


@pytest.fixture
def volume(tmp_path) -> Path:
    path = tmp_path / "normalized" / "P1" / "ct.nii.gz"
    array = np.random.default_rng(0).normal(size=(12, 20, 24)).astype(np.float32)
    write_nifti(sitk.GetImageFromArray(array), path)
    return path


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_truncated_nifti_names_the_file_and_its_maker(volume, fraction):
    truncate(volume, fraction)
    with pytest.raises(PatientDataError) as info:
        read_nifti(volume, "P1", made_by="normalise")
    message = str(info.value)
    assert message.startswith(f"patient P1 ({volume}): the file is truncated")
    assert "rerun the rule 'normalise'" in message


def test_truncated_uncompressed_nifti_is_caught_by_its_header(tmp_path):
    path = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(path))
    truncate(path, 0.9)
    with pytest.raises(PatientDataError, match=r"truncated: \d+ of the 592 bytes"):
        read_nifti(path, "P1", made_by="crop")


def test_whole_nifti_reads_unchanged(volume):
    image = read_nifti(volume, "P1", made_by="normalise")
    assert np.array_equal(
        sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(sitk.ReadImage(str(volume)))
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"box_ct_index": {"x": [1, 2]', "truncated or corrupt"),
        ("", "empty"),
        ("[1, 2]", "holds a JSON list"),
        ('{"other": 1}', "lacks the key(s) box_ct_index"),
        (None, "does not exist"),
    ],
)
def test_read_json_names_the_file_and_its_maker(tmp_path, text, problem):
    path = tmp_path / "roi.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(PatientDataError) as info:
        read_json(path, "P1", made_by="crop", keys=("box_ct_index",))
    message = str(info.value)
    assert f"patient P1 ({path})" in message and problem in message
    assert "rerun the rule 'crop'" in message


def test_roi_box_of_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "roi.json"
    path.write_text(json.dumps({"box_ct_index": {"x": [1, 2], "y": [3]}}))
    with pytest.raises(PatientDataError, match="not an x/y/z box"):
        read_roi_box(path, "P1")


def test_aggregate_names_a_damaged_metrics_file(tmp_path):
    bad = tmp_path / "SYN002.json"
    bad.write_text('{"patient_id": "SYN0')
    with pytest.raises(PatientDataError) as info:
        aggregate_files([bad], tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert f"patient SYN002 ({bad})" in str(info.value)
    assert "rerun the rule 'metrics'" in str(info.value)
    bad.write_text(json.dumps({"patient_id": "SYN002", "variant": "full"}))
    with pytest.raises(PatientDataError, match="lacks the key.s. synthesis, segmentation"):
        aggregate_files([bad], tmp_path / "a", tmp_path / "b", tmp_path / "c")


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage", None])
def test_damaged_trained_model_names_the_training_rule(tmp_path, content):
    path = tmp_path / "models" / "full" / "stage2" / "model.pt"
    path.parent.mkdir(parents=True)
    if content is None:  # a valid torch file that is not a trained model
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(PatientDataError) as info:
        load_networks(path, patient="P1")
    message = str(info.value)
    assert message.startswith(f"patient P1 ({path}): cannot load this trained model")
    assert "rerun the rule 'train_stage2'" in message and "Traceback" not in message
    with pytest.raises(PatientDataError, match="rerun the rule 'train_stage1'"):
        read_trained_model_checked(path, made_by="train_stage1")
    assert model_maker(path) == "train_stage2"


def test_unloadable_checkpoints_are_a_patient_data_error(tmp_path):
    """So a training job ends with one line (rule_step), not a stack trace."""
    (tmp_path / "last.pt").write_bytes(b"half a checkpoint")
    with pytest.raises(CheckpointError) as info:
        load_latest_checkpoint(tmp_path)
    assert isinstance(info.value, PatientDataError)
    assert str(info.value).startswith(f"input ({tmp_path}): no loadable checkpoint")


# ------------------------------------------------ a real SIGKILL inside the checkpoint write


KILLING_SAVE = """
import io, os, signal, sys
import torch
real_save = torch.save

def save(obj, f, *args, **kwargs):
    name = str(getattr(f, "name", ""))
    if isinstance(obj, dict) and obj.get("epoch") == 1 and ".ckpt-" in name:
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
from abmseg.train.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_inside_the_checkpoint_write_resumes_from_the_previous_one(tmp_path):
    from test_train import assert_identical, base_config, make_cohort

    make_cohort(tmp_path / "data", n=2)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(base_config(epochs_stage1=3, max_slices_per_epoch=None)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def train(out: Path, *prefix: str) -> subprocess.CompletedProcess:
        args = ["--stage", "1", "--variant", "full", "--config", str(config), "--gpus", "0"]
        args += ["--patients", str(tmp_path / "data" / "patients.tsv"), "--out", str(out)]
        command = [sys.executable, *prefix, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    killed = train(tmp_path / "killed", "-c", KILLING_SAVE)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = tmp_path / "killed" / "checkpoints"
    half = list(checkpoints.glob(".ckpt-*.part"))
    assert len(half) == 1 and half[0].stat().st_size > 0  # the half-written new checkpoint
    assert torch.load(checkpoints / "last.pt", weights_only=True)["epoch"] == 0
    assert not (tmp_path / "killed" / "model.pt").exists()

    resumed = train(tmp_path / "killed", "-m", "abmseg.train.cli")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming stage 1 of full after epoch 1/3" in resumed.stderr
    assert not list(checkpoints.glob(".ckpt-*"))  # the next save removed the stray
    reference = train(tmp_path / "reference", "-m", "abmseg.train.cli")
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert_identical(tmp_path / "reference" / "model.pt", tmp_path / "killed" / "model.pt")


# ------------------------------------------------------------ kills of a real Snakemake run

# The run trains stage 1 for two epochs so that a kill in the second one has a checkpoint to
# resume from; everything else is the tests' FAST configuration.
KILL_FAST = FAST.replace("epochs_stage1: 1", "epochs_stage1: 2")
assert KILL_FAST != FAST
VARIANT = "full"

OUTPUTS = {  # declared outputs of a job, by rule (workflow/rules/*.smk)
    "convert": [
        "results/converted/{p}/ct.nii.gz",
        "results/converted/{p}/pet_suv.nii.gz",
        "results/converted/{p}/label.nii.gz",
        "results/converted/{p}/meta.json",
    ],
    "register": [
        "results/registered/{p}/pet_suv.nii.gz",
        "results/registered/{p}/pet_to_ct.mat",
        "results/registered/{p}/qc.json",
    ],
    "train_stage1": [
        "results/models/{v}/stage1/model.pt",
        "results/models/{v}/stage1/losses.csv",
        "results/models/{v}/stage1/losses.png",
    ],
    "infer": [
        "results/inference/{v}/{p}/spet.nii.gz",
        "results/inference/{v}/{p}/abm.nii.gz",
        "results/inference/{v}/{p}/abm_ct.nii.gz",
    ],
    "metrics": ["results/metrics/{v}/{p}.json"],
}


class Run:
    """The work folder of one tiny run and the snakemake command lines on it."""

    def __init__(self, folders: dict) -> None:
        self.work: Path = folders["work"]
        self.sheet: Path = folders["sheet"]
        self.raw: Path = folders["root"] / "raw"
        folders["fast"].write_text(KILL_FAST)
        self.fast: Path = folders["fast"]

    def command(self, *args: str) -> list[str]:
        config = [REPO / "config" / "demo.yaml", self.fast]
        return snakemake_command(self.work, self.sheet, *args, configfiles=config)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, env=ENV, timeout=900
        )

    def start(self, *args: str, log: str) -> subprocess.Popen:
        """snakemake in its own process group (so killpg takes its jobs too)."""
        with open(self.work.parent / log, "w") as out:
            return subprocess.Popen(
                self.command(*args),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ENV,
                start_new_session=True,
            )

    def output_of(self, log: Path) -> str:
        return (self.work.parent / log).read_text()


def running_job(run: Run, rule: str, since: float) -> str | None:
    """The patient (or variant) of a job of ``rule`` that is running now, started after
    ``since``; for convert only once it has written some but not all of its outputs."""
    if rule == "train_stage1":
        status = run.work / f"results/models/{VARIANT}/stage1/status.json"
        try:
            now = json.loads(status.read_text()) if status.stat().st_mtime >= since else {}
        except (OSError, json.JSONDecodeError):
            return None
        return VARIANT if now.get("phase") == "training" and now.get("epoch", -1) >= 1 else None
    logs = {}
    for log in (run.work / "logs" / rule).rglob("*.log"):
        try:
            if log.stat().st_mtime >= since:
                logs[log.stem] = log.read_text()
        except OSError:
            continue
    # On a fast machine the half-written moment of a convert job can slip between two polls: once
    # most conversions are done, any running one is killed rather than none.
    last_chance = sum("done rule" in text for text in logs.values()) >= 4
    for patient, text in logs.items():
        if "start rule" not in text or "done rule" in text or "failed" in text:
            continue
        if rule == "convert" and not last_chance:
            written = [(run.work / f.format(p=patient)).exists() for f in OUTPUTS[rule]]
            if not (any(written) and not all(written)):
                continue
        return patient
    return None


def any_job_started(run: Run, since: float) -> bool:
    for log in (run.work / "logs").rglob("*.log"):
        try:
            if log.stat().st_mtime >= since and "start rule" in log.read_text():
                return True
        except OSError:
            continue
    return False


def kill_during(
    run: Run, rule: str, *args: str, log: str, meanwhile: Callable[[], None] | None = None
) -> tuple[str, float]:
    """Start snakemake, SIGKILL its process group while a job of ``rule`` runs; ``meanwhile`` is
    called once the run holds its lock (its first job has started)."""
    since = time.time()  # logs of earlier runs are older (a job logs seconds after the start)
    process = run.start("--cores", "2", *args, log=log)
    deadline = time.monotonic() + 600
    job, wait_for = None, 0
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"snakemake ended before a {rule} job could be killed:\n"
                    + run.output_of(log)[-3000:]
                )
            if meanwhile and any_job_started(run, since):
                meanwhile()
                meanwhile = None
                # kill only after the run finished one more job: it went on after meanwhile
                wait_for = run.output_of(log).count("Finished jobid") + 1
            if wait_for and run.output_of(log).count("Finished jobid") < wait_for:
                time.sleep(0.02)
                continue
            job = running_job(run, rule, since)
            if job:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"no {rule} job ran within the deadline")
    finally:
        if process.poll() is None and not job:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return job, time.time() - since


def marker(run: Run, output: str) -> Path:
    """Snakemake's incomplete marker of an output (persistence/file.py: urlsafe base64)."""
    name = base64.urlsafe_b64encode(output.encode()).decode()
    return run.work / ".snakemake" / "incomplete" / name


def check_nothing_looks_complete(run: Run, rule: str, job: str) -> dict:
    """Every file under results/ that has a final name is whole; temporaries are hidden names;
    every output of the killed job that exists carries Snakemake's incomplete marker."""
    temps, checked = [], 0
    for path in sorted((run.work / "results").rglob("*")):
        if not path.is_file():
            continue
        if path.name.startswith(".") and ".part" in path.name:
            temps.append(path.name)  # atomic writers' or checkpoints' temporary: never declared
            continue
        name = path.name
        if name.endswith((".nii.gz", ".nii")):
            read_nifti(path, made_by="test")  # raises on a truncated file
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".pt"):
            torch.load(path, map_location="cpu", weights_only=True)
        elif name.endswith((".tsv", ".csv", ".md", ".mat", ".png")):
            assert path.stat().st_size > 0, path
        checked += 1
    outputs = [f.format(p=job, v=VARIANT) for f in OUTPUTS[rule]]
    existing = [o for o in outputs if (run.work / o).exists()]
    unmarked = [o for o in existing if not marker(run, o).exists()]
    assert not unmarked, f"outputs of the killed {rule} job without incomplete marker: {unmarked}"
    locks = sorted(p.name for p in (run.work / ".snakemake" / "locks").glob("*"))
    return {"temps": temps, "checked": checked, "existing": existing, "locks": locks}


@pytest.fixture(scope="module")
def recovered(tmp_path_factory) -> dict:
    """A tiny run killed five times and recovered; what was seen on the way."""
    run = Run(run_folders(tmp_path_factory, "faults"))
    seen: dict = {"run": run, "kills": [], "timings": {}}
    started = time.monotonic()
    args: tuple[str, ...] = ()
    for step, rule in enumerate(["convert", "register", "train_stage1", "infer", "metrics"]):

        def second_run() -> None:
            # While this run holds the folder, the same command again is refused (live lock).
            seen["second"] = run.run("--cores", "2", "--rerun-incomplete")
            seen["finished_before"] = run.output_of("kill1.log").count("Finished jobid")

        meanwhile = second_run if rule == "register" else None
        job, seconds = kill_during(run, rule, *args, log=f"kill{step}.log", meanwhile=meanwhile)
        seen["kills"].append({"rule": rule, "job": job, "seconds": seconds})
        seen["kills"][-1].update(check_nothing_looks_complete(run, rule, job))
        if step == 0:
            # What a user meets: the killed run's lock refuses the next run ...
            seen["refused"] = run.run("--cores", "2", "--rerun-incomplete")
            # ... until snakemake --unlock, which removes the locks and nothing else.
            markers = sorted((run.work / ".snakemake" / "incomplete").glob("*"))
            seen["unlock"] = run.run("--unlock")
            seen["locks_after_unlock"] = list((run.work / ".snakemake" / "locks").glob("*"))
            seen["markers_kept"] = markers == sorted(
                (run.work / ".snakemake" / "incomplete").glob("*")
            )
        else:
            # The same as --unlock (checked after the first kill), without its 10 s start-up.
            shutil.rmtree(run.work / ".snakemake" / "locks")
        args = ("--rerun-incomplete",)
        if rule == "train_stage1":
            ckpt = run.work / f"results/models/{VARIANT}/stage1/checkpoints/last.pt"
            seen["train_checkpoint_epoch"] = torch.load(ckpt, weights_only=True)["epoch"]
        if rule == "register":  # how far the first run went after the refused second one
            seen["finished_after"] = run.output_of("kill1.log").count("Finished jobid")
            seen["first_output"] = run.output_of("kill1.log")
    seen["timings"]["kills"] = time.monotonic() - started

    final = run.run("--cores", "2", "--rerun-incomplete")
    seen["final_rc"], seen["final_log"] = final.returncode, final.stdout + final.stderr
    seen["dry"] = run.run("--cores", "2", "-n")
    seen["timings"]["total"] = time.monotonic() - started
    return seen


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_that_looks_complete(recovered):
    kills = recovered["kills"]
    assert [k["rule"] for k in kills] == ["convert", "register", "train_stage1", "infer", "metrics"]
    for kill in kills:
        assert kill["locks"], f"after the {kill['rule']} kill Snakemake's lock stays behind"
    # The convert kill landed before the job's last (atomic) write: aimed between two of its
    # writes, or at any running conversion when that moment slipped past (running_job).
    assert len(kills[0]["existing"]) < len(OUTPUTS["convert"])
    # Training was killed in its second epoch, after the first epoch's checkpoint.
    assert recovered["train_checkpoint_epoch"] == 0


@pytest.mark.slow
def test_after_a_kill_the_stale_lock_needs_unlock(recovered):
    refused = recovered["refused"]
    assert refused.returncode == 1
    assert LOCK_TEXT in refused.stderr and "--unlock" in refused.stderr
    assert recovered["unlock"].returncode == 0
    assert "Unlocked working directory" in recovered["unlock"].stderr
    assert recovered["locks_after_unlock"] == [] and recovered["markers_kept"]


@pytest.mark.slow
def test_the_recovered_run_completes(recovered):
    run: Run = recovered["run"]
    assert recovered["final_rc"] == 0, recovered["final_log"][-4000:]
    assert (run.work / "results/metrics/summary.tsv").is_file()
    dry = recovered["dry"]
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    assert not list((run.work / ".snakemake" / "incomplete").glob("*"))
    # Training resumed from the checkpoint of its first epoch.
    train_log = (run.work / f"logs/train_stage1/{VARIANT}.log").read_text()
    assert f"resuming stage 1 of {VARIANT} after epoch 1/2" in train_log
    # The conversion killed half-way was redone from scratch: voxel-identical to a fresh one.
    patient = recovered["kills"][0]["job"]
    fresh = run.work.parent / "fresh"
    raw = run.raw / patient
    paths = ConvertedPaths(*(fresh / n for n in ("ct.nii.gz", "pet.nii.gz", "l.nii.gz", "m.json")))
    convert_patient(patient, raw / "CT", raw / "PET", raw / "label.nii.gz", paths)
    for ours, theirs in (("ct.nii.gz", paths.ct), ("pet_suv.nii.gz", paths.pet_suv)):
        a = sitk.ReadImage(str(run.work / "results/converted" / patient / ours))
        b = sitk.ReadImage(str(theirs))
        assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
        assert a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing()


@pytest.mark.slow
def test_a_second_snakemake_is_refused_and_the_first_goes_on(recovered):
    second = recovered["second"]
    assert second.returncode == 1
    assert LOCK_TEXT in second.stderr
    # The first run finished more jobs after the refusal, and none of its jobs failed.
    assert recovered["finished_after"] > recovered["finished_before"]
    assert "Error in rule" not in recovered["first_output"]
    assert recovered["final_rc"] == 0


def split_of(run: Run) -> dict[str, list[str]]:
    rows = [line.split("\t") for line in (run.work / "results/split.tsv").read_text().splitlines()]
    groups: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for row in rows[1:]:
        groups[row[1]].append(row[0])
    return groups


def assert_one_clear_line(result, log: Path, file: str, maker: str, rule: str) -> str:
    text = log.read_text()
    line = next((x for x in text.splitlines() if f"rule {rule} failed:" in x), None)
    assert line, text[-3000:]
    assert file in line and f"rerun the rule '{maker}'" in line, line
    assert "Traceback" not in text
    assert "Traceback" not in result.stdout + result.stderr
    return line[line.index("rule ") :]


@pytest.mark.slow
def test_damaged_intermediates_fail_with_the_file_and_its_maker(recovered):
    """Truncated NIfTI and JSON intermediates and a model.pt that does not load, each read by
    a later rule: that job fails with one line naming the file and the rule that makes it.
    (A damaged metrics JSON read by aggregate is tested in-process above: any rerun upstream of
    aggregate, as these damaged files cause, holds aggregate back.)"""
    run: Run = recovered["run"]
    train, test = split_of(run)["train"], split_of(run)["test"]
    damaged = {
        "register_pet": f"results/registered/{train[0]}/pet_suv.nii.gz",  # read by crop
        "cropped_ct": f"results/cropped/{train[1]}/ct.nii.gz",  # read by normalise
    }
    for path in damaged.values():
        truncate(run.work / path)
    first = run.run(
        "--cores",
        "2",
        "-k",
        f"results/cropped/{train[0]}/roi.json",
        f"results/normalized/{train[1]}/ct.nii.gz",
    )
    assert first.returncode != 0
    lines = [
        assert_one_clear_line(
            first,
            run.work / f"logs/crop/{train[0]}.log",
            damaged["register_pet"],
            "register",
            "crop",
        ),
        assert_one_clear_line(
            first,
            run.work / f"logs/normalise/{train[1]}.log",
            damaged["cropped_ct"],
            "crop",
            "normalise",
        ),
    ]
    # A model.pt that does not load (both test patients) and a truncated roi.json (second
    # test patient; infer reads the patient's small inputs before the model).
    model = f"results/models/{VARIANT}/stage2/model.pt"
    roi = f"results/cropped/{test[1]}/roi.json"
    truncate(run.work / model)
    truncate(run.work / roi)
    second = run.run(
        "--cores",
        "2",
        "-k",
        *(f"results/inference/{VARIANT}/{p}/abm_ct.nii.gz" for p in test),
    )
    assert second.returncode != 0
    lines += [
        assert_one_clear_line(
            second,
            run.work / f"logs/infer/{VARIANT}/{test[0]}.log",
            model,
            "train_stage2",
            "infer",
        ),
        assert_one_clear_line(
            second, run.work / f"logs/infer/{VARIANT}/{test[1]}.log", roi, "crop", "infer"
        ),
    ]
    print("\n".join(lines))
