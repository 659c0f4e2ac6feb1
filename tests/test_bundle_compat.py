"""Model bundles across releases: a bundle loads in every abmseg that reads its format's MAJOR.

The frozen fixture tests/data/bundle_v0.2.0/ (a real bundle written by abmseg 0.2.0, its input CT
and the outputs it predicted then; README.md there) must load and predict the same outputs with
the current code. The unit tests edit a copy of its manifest: a newer minor version with a key
this abmseg does not know loads, another major is refused naming both versions, abmseg 0.1.0's
integer format version reads as 1.0, and the abmseg version that wrote a bundle is not checked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import abmseg
from abmseg.errors import PatientDataError
from abmseg.infer.bundle_manifest import (
    FORMAT_MAJOR,
    FORMAT_VERSION,
    MANIFEST,
    manifest_digest,
    parse_format_version,
    verify_model_bundle,
)
from abmseg.infer.ct_only import PreparedCT, predict_ct_only
from abmseg.infer.model_bundle import ModelBundle, load_model_bundle
from abmseg.infer.patient import PredictionPaths
from abmseg.io.channels import read_channels
from abmseg.preprocess.normalise import NormaliseSettings, normalise_ct
from abmseg.preprocess.roi import CropSettings, crop_volumes

FIXTURE = Path(__file__).resolve().parent / "data" / "bundle_v0.2.0"
PATIENT = "FIXTURE1"
CPU = torch.device("cpu")
# prediction.json's entries that depend on the bundle and the input only
SUMMARY_KEYS = ("bundle", "sampler", "sampler_from_bundle", "voxels_per_region", "qa_verdict")


def predict(bundle: ModelBundle, ct_path: Path, out: Path) -> dict:
    """What ``abmseg predict`` does (predict_ct_only), on a CT stored as NIfTI (HU) instead of a
    DICOM series: prepare_ct's crop and normalise cores with the bundle's settings, then its
    networks, sampler, statistics and QA. Returns prediction.json's content."""
    ct = sitk.ReadImage(str(ct_path))
    config = bundle.config()
    crop, normalise = CropSettings.from_config(config), NormaliseSettings.from_config(config)
    cropped = crop_volumes(ct, crop, patient=PATIENT, ct_path=ct_path)
    normalised = normalise_ct(cropped.images["ct"], normalise)
    prepared = PreparedCT(None, ct, cropped, normalised)  # type: ignore[arg-type]  # no DICOM
    paths = PredictionPaths.in_folder(out)
    return predict_ct_only(PATIENT, ct_path.parent, bundle, paths, prepared=prepared)


def predicted_arrays(folder: Path) -> dict[str, np.ndarray]:
    """The written maps a bundle's compatibility is judged on, as arrays."""

    def array(name: str) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name)))

    return {
        "abm": array("abm.nii.gz"),
        "abm_ct": array("abm_ct.nii.gz"),
        "spet": array("spet.nii.gz"),
        "prob": read_channels(folder / "abm_prob.nii.gz")[0],
        "uncertainty": read_channels(folder / "abm_uncertainty.nii.gz")[0],
    }


# ------------------------------------------------------------------ the frozen 0.2.0 bundle


def test_the_0_2_0_bundle_predicts_what_it_predicted_when_written(tmp_path):
    bundle = load_model_bundle(FIXTURE / "bundle", device=CPU)
    assert bundle.manifest["abmseg_version"] == "0.2.0"
    assert bundle.manifest["format_version"] == "1.0"
    summary = predict(bundle, FIXTURE / "input" / "ct.nii.gz", tmp_path)
    expected = json.loads((FIXTURE / "expected" / "prediction.json").read_text())
    for key in (*SUMMARY_KEYS, "roi"):
        assert summary[key] == expected[key], key
    got = predicted_arrays(tmp_path)
    with np.load(FIXTURE / "expected" / "arrays.npz") as stored:
        want = {name: stored[name] for name in stored.files}
    assert sorted(got) == sorted(want)
    for name in ("abm", "abm_ct"):  # the masks exactly
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    for name in ("prob", "uncertainty", "spet"):  # the float maps to float32 rounding
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5, err_msg=name)
    ct = sitk.ReadImage(str(FIXTURE / "input" / "ct.nii.gz"))
    abm_ct = sitk.ReadImage(str(tmp_path / "abm_ct.nii.gz"))
    assert abm_ct.GetOrigin() == ct.GetOrigin() and abm_ct.GetSpacing() == ct.GetSpacing()


def test_the_fixture_stays_small():
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 3_000_000, f"tests/data/bundle_v0.2.0 holds {size} bytes"


# ------------------------------------------------------------------ edited copies of it


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A writable copy of the frozen bundle."""
    return Path(shutil.copytree(FIXTURE / "bundle", tmp_path / "bundle"))


def rewrite(folder: Path, resign: bool = True, **changes) -> dict:
    """Set top-level manifest keys and store the manifest's own digest again (as the abmseg
    that wrote such a bundle would have)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.update(changes)
    if resign:
        manifest["manifest_sha256"] = manifest_digest(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def loads(folder: Path) -> ModelBundle:
    verify_model_bundle(folder)
    return load_model_bundle(folder, device=CPU)


def test_a_newer_minor_version_with_an_unknown_key_loads(bundle):
    future = {"written_by": "a later abmseg", "numbers": [1, 2.5]}
    manifest = rewrite(bundle, format_version="1.7", abmseg_version="0.9.0", future_field=future)
    loaded = loads(bundle)
    assert loaded.manifest == manifest and loaded.manifest["future_field"] == future
    assert loaded.predictor().regions == manifest["regions"]  # its settings read as before


def test_an_unknown_key_is_still_covered_by_the_manifest_digest(bundle):
    rewrite(bundle, format_version="1.7", future_field={"a": 1})
    rewrite(bundle, resign=False, future_field={"a": 2})
    with pytest.raises(PatientDataError, match="edited after it was written"):
        verify_model_bundle(bundle)


@pytest.mark.parametrize("version", ["2.0", "0.3", 2])
def test_another_major_version_is_refused_naming_both_versions_and_the_fix(bundle, version):
    rewrite(bundle, format_version=version, abmseg_version="1.4.0")
    shown = version if isinstance(version, str) else f"{version}.0"
    major = shown.split(".")[0]
    for call in (verify_model_bundle, lambda f: load_model_bundle(f, device=CPU, patient="P1")):
        with pytest.raises(PatientDataError) as info:
            call(bundle)
        message = str(info.value)
        assert info.value.path == str(bundle / MANIFEST)
        for text in (
            str(bundle / MANIFEST),
            f"bundle format version {shown} (written by abmseg 1.4.0)",
            f"abmseg {abmseg.__version__} reads bundle format 1.x",
            f"Fix: install an abmseg that reads bundle format {major}.x",
            f"or retrain the model with abmseg {abmseg.__version__}",
        ):
            assert text in message, message


@pytest.mark.parametrize("version", ["1", "one", "1.0.0", None, True, -1, 1.0])
def test_a_format_version_that_is_no_version_is_refused(bundle, version):
    rewrite(bundle, format_version=version)
    with pytest.raises(PatientDataError, match="is not MAJOR.MINOR") as info:
        verify_model_bundle(bundle)
    assert "reads bundle format 1.x" in str(info.value) and "Fix: " in str(info.value)


def test_abmseg_0_1_0s_integer_format_version_reads_as_1_0(bundle):
    """abmseg 0.1.0 wrote ``"format_version": 1``; its digest covers that integer as written."""
    assert parse_format_version(1) == (1, 0) == parse_format_version("1.0")
    assert parse_format_version("1.12") == (1, 12) and parse_format_version(True) is None
    manifest = rewrite(bundle, format_version=1, abmseg_version="0.1.0")
    assert json.loads((bundle / MANIFEST).read_text())["format_version"] == 1
    assert loads(bundle).manifest == manifest


@pytest.mark.parametrize("written_by", ["0.1.0", "0.2.1", "1.0.0", "0.3.0.dev2+g1234"])
def test_the_abmseg_version_that_wrote_a_bundle_is_not_checked(bundle, written_by):
    rewrite(bundle, abmseg_version=written_by)
    assert loads(bundle).manifest["abmseg_version"] == written_by


def test_this_release_writes_the_format_version_it_reads():
    assert parse_format_version(FORMAT_VERSION) == (FORMAT_MAJOR, 0)  # 1.0: no optional key yet
