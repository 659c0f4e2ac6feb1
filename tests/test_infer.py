"""Inference plumbing with untrained tiny networks: grids, value ranges, the paste-back geometry."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from abmseg.cli import main
from abmseg.infer.patient import (
    PredictionPaths,
    Predictor,
    infer_patient,
    predict_patient,
    spet_to_suv,
)
from abmseg.infer.predict import (
    InferenceNetworks,
    InferenceSettings,
    pass_seed,
    paste_into_ct_grid,
    precision,
    predict_batch,
    predict_ensemble,
    predict_volume,
)
from abmseg.io.channels import read_channels
from abmseg.io.volume import read_nifti
from abmseg.models.cyclegan import ResnetGenerator
from abmseg.models.diffusion import ConditionalDiffusion
from abmseg.models.mpfpsn import MPFPSN
from abmseg.models.presets import load_model_preset
from abmseg.preprocess.normalise import NormaliseSettings, normalise_ct
from abmseg.preprocess.roi import CropSettings, crop_volumes
from abmseg.qa.checks import QaSettings
from abmseg.qa.patient import MAPS, AssessmentPaths, assess_files, assess_prediction
from abmseg.regions import DEFAULT_REGIONS
from abmseg.slicing import SliceGeometry


@pytest.fixture(scope="module")
def networks() -> InferenceNetworks:
    torch.manual_seed(0)
    return InferenceNetworks(
        mpfpsn=MPFPSN.from_preset(load_model_preset("mpfpsn", "tiny")).eval(),
        image_size=32,
        g_ct2pet=ResnetGenerator.from_preset(load_model_preset("cyclegan", "tiny")).eval(),
        diffusion=ConditionalDiffusion.from_preset(load_model_preset("diffusion", "tiny")).eval(),
    )


SETTINGS = InferenceSettings(sampler="ddim", steps=3, batch_size=4, seed=1)
ENSEMBLE = dataclasses.replace(SETTINGS, samples=2, tta=True)


def test_predict_volume_shapes_ranges_and_empty_slices(networks):
    ct = np.full((5, 30, 40), -1.0, np.float32)
    ct[1:4, 5:25, 8:30] = 0.2
    spet, labels = predict_volume(ct, networks, SETTINGS, torch.device("cpu"))
    assert spet.shape == ct.shape and labels.shape == ct.shape
    assert spet.min() >= -1 and spet.max() <= 1
    assert labels.dtype == np.uint8 and labels.max() <= 3
    for z in (0, 4):  # no body: not predicted
        assert np.all(spet[z] == -1) and np.all(labels[z] == 0)
    again, again_labels = predict_volume(ct, networks, SETTINGS, torch.device("cpu"))
    np.testing.assert_array_equal(spet, again)
    np.testing.assert_array_equal(labels, again_labels)


def test_bf16_applies_on_a_gpu_only_and_a_callers_autocast_still_works(networks):
    """On a CPU the setting is ignored (bit-identical to fp32); a caller's CPU autocast, as
    bench/bf16_inference.py uses, is not overridden and changes the numbers only slightly."""
    ct = np.full((3, 30, 40), -1.0, np.float32)
    ct[:, 5:25, 8:30] = np.linspace(-0.5, 0.8, 22, dtype=np.float32)
    cpu = torch.device("cpu")
    bf16 = InferenceSettings(sampler="ddim", steps=3, batch_size=4, seed=1, bf16=True)
    with warnings.catch_warnings():  # without CUDA, torch warns that it disables the autocast
        warnings.simplefilter("ignore", UserWarning)
        assert isinstance(precision(bf16, torch.device("cuda")), torch.autocast)
    assert not isinstance(precision(bf16, cpu), torch.autocast)
    fp32_spet, fp32_labels = predict_volume(ct, networks, SETTINGS, cpu)
    ignored_spet, ignored_labels = predict_volume(ct, networks, bf16, cpu)
    np.testing.assert_array_equal(fp32_spet, ignored_spet)
    np.testing.assert_array_equal(fp32_labels, ignored_labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded_spet, _ = predict_volume(ct, networks, SETTINGS, cpu)
    assert rounded_spet.dtype == np.float32
    difference = np.abs(rounded_spet - fp32_spet)[:, 5:25, 8:30]
    # bf16 keeps 8 bits of mantissa: changed, but close on average (untrained networks amplify
    # the rounding in places, so the largest difference says little)
    assert difference.max() > 0 and difference.mean() < 0.05


def body_volume() -> np.ndarray:
    ct = np.full((4, 30, 40), -1.0, np.float32)
    ct[1:3, 5:25, 8:30] = np.linspace(-0.5, 0.8, 22, dtype=np.float32)
    ct[1:3, 5:25, 8:12] = 0.6  # not mirror-symmetric
    return ct


def test_one_sample_is_the_networks_own_prediction(networks):
    """K = 1 without mirroring: the mean is the softmax of predict_batch mapped back, exactly,
    and predict_volume is its argmax (today's single prediction)."""
    ct = body_volume()
    cpu = torch.device("cpu")
    spet, summary = predict_ensemble(ct, networks, SETTINGS, cpu)
    geometry = SliceGeometry(30, 40, networks.image_size)
    batch = torch.stack([geometry.to_network(ct[z], kind="image") for z in (1, 2)])[:, None]
    generator = torch.Generator().manual_seed(SETTINGS.seed)
    reference_spet, probs = predict_batch(batch, networks, SETTINGS, generator)
    for k, z in enumerate((1, 2)):
        np.testing.assert_array_equal(summary.mean[:, z], geometry.from_network(probs[k]))
        np.testing.assert_array_equal(spet[z], geometry.from_network(reference_spet[k, 0]))
    assert np.all(summary.mean[0, 0] == 1) and np.all(summary.mean[1:, 0] == 0)
    assert np.all(summary.mutual_information == 0)
    np.testing.assert_array_equal(predict_volume(ct, networks, SETTINGS, cpu)[1], summary.labels)


def test_samples_average_their_own_seeds_and_disagree(networks):
    ct, cpu = body_volume(), torch.device("cpu")
    first = predict_ensemble(ct, networks, SETTINGS, cpu)[1].mean
    second_settings = InferenceSettings(**{**vars(SETTINGS), "seed": pass_seed(SETTINGS.seed, 1)})
    second = predict_ensemble(ct, networks, second_settings, cpu)[1].mean
    _, both = predict_ensemble(ct, networks, SETTINGS, cpu, samples=2)
    assert both.passes == 2
    np.testing.assert_allclose(both.mean, (first + second) / 2, atol=1e-6)
    assert both.mutual_information.max() > 0  # the seeds give different sPETs, so masks differ


def test_a_mirrored_pass_is_the_mirror_image_of_the_flipped_ct(networks):
    ct, cpu = body_volume(), torch.device("cpu")
    plain = predict_ensemble(ct, networks, SETTINGS, cpu)[1].mean
    flipped = predict_ensemble(np.ascontiguousarray(ct[:, :, ::-1]), networks, SETTINGS, cpu)
    calls = []
    _, mirrored = predict_ensemble(
        ct, networks, SETTINGS, cpu, mirror=True, on_batch=lambda d, t: calls.append((d, t))
    )
    assert mirrored.passes == 2
    np.testing.assert_allclose(mirrored.mean, (plain + flipped[1].mean[..., ::-1]) / 2, atol=1e-6)
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_ct_only_networks_need_no_pet(networks):
    ct_only = InferenceNetworks(
        mpfpsn=MPFPSN.from_preset(load_model_preset("mpfpsn", "tiny"), modalities="ct").eval(),
        image_size=32,
    )
    ct = np.zeros((2, 20, 20), np.float32)
    spet, labels = predict_volume(ct, ct_only, SETTINGS, torch.device("cpu"))
    assert np.all(spet == -1) and labels.shape == ct.shape
    # no sampler, nothing stochastic: extra seeds would repeat the same pass
    _, summary = predict_ensemble(ct, ct_only, SETTINGS, torch.device("cpu"), samples=3)
    assert summary.passes == 1


def test_paste_into_ct_grid_places_the_box():
    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    box = {"x": [1, 5], "y": [2, 5], "z": [3, 5]}
    full = paste_into_ct_grid(labels, box, (6, 7, 8))
    np.testing.assert_array_equal(full[3:5, 2:5, 1:5], labels)
    assert full.sum() == labels.sum()
    with pytest.raises(ValueError, match="does not match"):
        paste_into_ct_grid(labels, {"x": [0, 4], "y": [0, 3], "z": [0, 3]}, (6, 7, 8))


def test_spet_to_suv_inverts_the_normalisation():
    np.testing.assert_allclose(spet_to_suv(np.array([-1.0, 0.0, 1.0]), 10.0), [0.0, 5.0, 10.0])


def test_infer_patient_writes_exact_geometry(converted, networks, tmp_path):
    paths = converted["paths"]
    ct = sitk.ReadImage(str(paths.ct))
    pet_on_ct = sitk.Resample(sitk.ReadImage(str(paths.pet_suv)), ct, sitk.Transform())
    sitk.WriteImage(pet_on_ct, str(tmp_path / "pet.nii.gz"))
    common = ["--patient", "SYN001", "--label", str(paths.label)]
    main(
        [
            "crop",
            *common,
            "--ct",
            str(paths.ct),
            "--pet",
            str(tmp_path / "pet.nii.gz"),
            "--out",
            str(tmp_path / "crop"),
        ]
    )
    crop = tmp_path / "crop"
    main(
        [
            "normalise",
            *common[:2],
            "--ct",
            str(crop / "ct.nii.gz"),
            "--pet",
            str(crop / "pet_suv.nii.gz"),
            "--label",
            str(crop / "label.nii.gz"),
            "--out",
            str(tmp_path / "norm"),
        ]
    )
    out = tmp_path / "infer"
    infer_patient(
        "SYN001",
        tmp_path / "norm" / "ct.nii.gz",
        paths.ct,
        crop / "roi.json",
        Predictor(networks, torch.device("cpu"), ENSEMBLE, 10.0),
        PredictionPaths.in_folder(out, ct_only=False),
    )
    abm_ct = sitk.ReadImage(str(out / "abm_ct.nii.gz"))
    assert abm_ct.GetSize() == ct.GetSize()
    assert abm_ct.GetOrigin() == ct.GetOrigin() and abm_ct.GetSpacing() == ct.GetSpacing()
    assert abm_ct.GetDirection() == ct.GetDirection()
    abm = sitk.ReadImage(str(out / "abm.nii.gz"))
    box = json.loads((crop / "roi.json").read_text())["box_ct_index"]
    (x0, x1), (y0, y1), (z0, z1) = box["x"], box["y"], box["z"]
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(abm_ct)[z0:z1, y0:y1, x0:x1], sitk.GetArrayFromImage(abm)
    )
    # World position of the cropped grid's first voxel is the full grid's voxel (x0, y0, z0).
    np.testing.assert_allclose(
        abm.GetOrigin(), ct.TransformIndexToPhysicalPoint((x0, y0, z0)), atol=1e-4
    )
    suv = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "spet.nii.gz")))
    assert suv.min() >= 0 and suv.max() <= 10
    # the averaged probabilities and the uncertainty maps lie on the CT grid too
    probabilities, grid = read_channels(out / "abm_prob.nii.gz")
    assert probabilities.shape == (4, *reversed(ct.GetSize()))
    assert grid.GetOrigin() == ct.GetOrigin() and grid.GetDirection() == ct.GetDirection()
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=0), sitk.GetArrayFromImage(abm_ct))
    assert (probabilities[0][:z0] == 1).all()  # outside the box: certain background
    maps, _ = read_channels(out / "abm_uncertainty.nii.gz")
    entropy, mutual_information = maps
    np.testing.assert_allclose(
        entropy, -(probabilities * np.log(np.clip(probabilities, 1e-30, 1))).sum(0), atol=1e-4
    )
    assert (mutual_information >= 0).all() and (mutual_information <= entropy + 1e-5).all()
    assert mutual_information.max() > 0  # two seeds, each mirrored: the passes disagree
    assert not (out / "qa.json").exists()  # rule qa's, from these maps


def test_the_qa_from_written_maps_equals_the_qa_in_memory(converted, networks, tmp_path):
    """Rule qa judges rule infer's files; rule predict judges the maps in memory. Both must
    give the same statistics and verdict, or test and CT-only patients would differ."""
    paths = converted["paths"]
    ct = read_nifti(paths.ct)
    cropped = crop_volumes(ct, CropSettings(), patient="SYN001")
    normalised = normalise_ct(cropped.images["ct"], NormaliseSettings())
    maps_dir = tmp_path / "maps"
    maps_dir.mkdir()
    predictor = Predictor(networks, torch.device("cpu"), ENSEMBLE, 10.0)
    out = PredictionPaths.in_folder(maps_dir, ct_only=False)
    maps = predict_patient(normalised, ct, cropped.box, predictor, out)
    memory, files = (AssessmentPaths.in_folder(tmp_path / name) for name in ("memory", "files"))
    for folder in ("memory", "files"):
        (tmp_path / folder).mkdir()
    args = (DEFAULT_REGIONS, QaSettings(), None)
    qa = assess_prediction("SYN001", ct, cropped.box, maps, *args, memory)
    named = {name: maps_dir / file for name, file in MAPS.items()}
    assert assess_files("SYN001", named, paths.ct, cropped.box, *args, files) == qa
    for name in ("stats", "stats_json", "qa"):
        assert getattr(memory, name).read_text() == getattr(files, name).read_text(), name
    assert {"check": "training_profile", "level": "warn"}.items() <= qa["reasons"][0].items()
    rows = memory.stats.read_text().splitlines()
    regions = [row.split("\t")[1] for row in rows[1:]]
    assert regions == ["lumbosacral_spine", "ilium", "lower_pelvis"]
    assert sitk.ReadImage(str(memory.qa_png)).GetSize() == (1500, 800)
