"""Cropping a synthetic patient removes the scanner bed and keeps every labelled voxel."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from abmseg.cli import main


def test_crop_removes_the_bed_and_keeps_the_marrow(converted, tmp_path):
    paths, truth = converted["paths"], converted["truth"]
    ct = sitk.ReadImage(str(paths.ct))
    pet_on_ct = sitk.Resample(sitk.ReadImage(str(paths.pet_suv)), ct, sitk.Transform())
    sitk.WriteImage(pet_on_ct, str(tmp_path / "pet_on_ct.nii.gz"))
    args = ["--patient", "SYN001", "--ct", str(paths.ct), "--label", str(paths.label)]
    out = tmp_path / "cropped"
    assert (
        main(["crop", *args, "--pet", str(tmp_path / "pet_on_ct.nii.gz"), "--out", str(out)]) == 0
    )

    cropped = sitk.ReadImage(str(out / "ct.nii.gz"))
    hu = sitk.GetArrayFromImage(cropped)
    y_world = np.array(
        [cropped.TransformIndexToPhysicalPoint((0, j, 0))[1] for j in range(cropped.GetSize()[1])]
    )
    bed_low, bed_high = truth["bed_y_range_mm"]
    bed_rows = (y_world >= bed_low) & (y_world <= bed_high)
    assert not np.any(hu[:, bed_rows, :] > -500), "bed voxels survived the crop"
    # The bed was inside the margin-grown box on the original grid, so clearing was needed.
    original = sitk.GetArrayFromImage(ct)
    y_orig = np.array(
        [ct.TransformIndexToPhysicalPoint((0, j, 0))[1] for j in range(ct.GetSize()[1])]
    )
    assert np.any(original[:, (y_orig >= bed_low) & (y_orig <= bed_high), :] > -500)

    roi = json.loads((out / "roi.json").read_text())
    assert roi["label_voxels_outside_box"] == 0
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "label.nii.gz")))
    assert np.count_nonzero(label) == sum(truth["label_voxels"].values())


def test_normalise_cli_maps_into_unit_range(converted, tmp_path):
    paths = converted["paths"]
    out = tmp_path / "normalised"
    args = ["--patient", "SYN001", "--ct", str(paths.ct), "--label", str(paths.label)]
    ct = sitk.ReadImage(str(paths.ct))
    pet_on_ct = sitk.Resample(sitk.ReadImage(str(paths.pet_suv)), ct, sitk.Transform())
    sitk.WriteImage(pet_on_ct, str(tmp_path / "pet.nii.gz"))
    assert main(["normalise", *args, "--pet", str(tmp_path / "pet.nii.gz"), "--out", str(out)]) == 0
    for name in ("ct", "pet"):
        values = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}.nii.gz")))
        assert values.min() >= -1.0 and values.max() <= 1.0
        assert values.max() > values.min()
