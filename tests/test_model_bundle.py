"""Model bundle folders: round trip against model.pt, and refusal of every damaged bundle."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import abmseg
from abmseg.errors import PatientDataError
from abmseg.infer import model_bundle
from abmseg.infer.bundle_manifest import (
    BUNDLE_FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    verify_model_bundle,
)
from abmseg.infer.model_bundle import load_model_bundle, write_model_bundle
from abmseg.infer.networks import load_networks
from abmseg.infer.predict import InferenceSettings, predict_volume
from abmseg.models.diffusion import ConditionalDiffusion
from abmseg.models.trained_model import (
    read_trained_model,
    trained_model_content,
    write_trained_model,
)
from abmseg.train.networks import Networks, variant_presets
from abmseg.train.settings import TrainSettings
from abmseg.variants import get_variant

PREPROCESSING = {
    "crop": {"margin_mm": [10.0, 10.0, 0.0], "clear_outside_body": True},
    "normalise": {"ct_level_hu": 100.0, "ct_width_hu": 1200.0, "suv_ceiling": 10.0},
    "body_threshold": -0.9,
}
SAMPLER = {"sampler": "ddim", "steps": 2, "start_step": None, "batch_size": 4, "seed": 7}
REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}
PROVENANCE = {"rule": "train_stage2", "inputs": [{"path": "split.json", "sha256": "ab" * 32}]}
SETTINGS = InferenceSettings(**SAMPLER, body_threshold=-0.9)
CPU = torch.device("cpu")
EXPECTED = {"full": ["diffusion", "g_ct2pet", "mpfpsn"], "ct_only": ["mpfpsn"]}


@pytest.fixture(scope="module")
def model_pts(tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny model.pt files of a synthesis variant (stage 2) and the CT-only one."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for variant, stage in (("full", 2), ("ct_only", 1)):
        torch.manual_seed(0)
        presets = variant_presets(get_variant(variant), "tiny", stage)
        nets = Networks.build(presets)
        if "diffusion" in presets:  # as a paper run records it: a VGG16 file only training has
            loss = {"perceptual_network": "vgg16", "vgg16_weights": str(root / "no_vgg16.pth")}
            diffusion = presets["diffusion"]
            presets["diffusion"] = {**diffusion, "loss": {**diffusion["loss"], **loss}}
        settings = TrainSettings(model_preset="tiny", image_size=32).to_dict()
        bundle = trained_model_content(
            variant, stage, settings, presets, nets.state(), ["SYN001"], 3, 5, []
        )
        out[variant] = write_trained_model(root / variant / f"stage{stage}" / "model.pt", bundle)
    return out


def write(folder: Path, model_pt: Path) -> dict:
    return write_model_bundle(
        folder,
        model_pt,
        preprocessing=PREPROCESSING,
        sampler=SAMPLER,
        regions=REGIONS,
        provenance=PROVENANCE,
    )


@pytest.fixture
def bundle(tmp_path, model_pts) -> Path:
    """A freshly written bundle of the full variant."""
    folder = tmp_path / "bundles" / "full"
    write(folder, model_pts["full"])
    return folder


def ct_volume() -> np.ndarray:
    rng = np.random.default_rng(3)
    ct = np.full((3, 20, 24), -1.0, np.float32)
    ct[:, 3:17, 4:21] = rng.uniform(-0.6, 0.8, (3, 14, 17))
    return ct


@pytest.mark.parametrize("variant", ["full", "ct_only"])
def test_round_trip_predicts_exactly_like_model_pt(tmp_path, model_pts, variant):
    folder = tmp_path / "bundle"
    manifest = write(folder, model_pts[variant])
    assert json.loads((folder / MANIFEST).read_text()) == manifest
    assert manifest["format"] == BUNDLE_FORMAT and manifest["format_version"] == FORMAT_VERSION
    assert manifest["abmseg_version"] == abmseg.__version__
    assert manifest["variant"] == variant and manifest["image_size"] == 32
    assert sorted(manifest["networks"]) == EXPECTED[variant]
    assert sorted(p.name for p in (folder / "weights").iterdir()) == [
        f"{name}.pt" for name in EXPECTED[variant]
    ]
    for name, entry in manifest["networks"].items():
        data = (folder / entry["file"]).read_bytes()
        assert entry == {
            "file": f"weights/{name}.pt",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
    grid = manifest["preprocessing"].pop("grid")
    assert grid["image_size"] == 32 and "padded to a square" in grid["slices"]
    assert manifest["preprocessing"] == PREPROCESSING
    assert (manifest["sampler"], manifest["regions"]) == (SAMPLER, REGIONS)
    assert manifest["provenance"] == PROVENANCE
    assert manifest["training"]["train_patients"] == ["SYN001"]
    assert manifest["training"]["settings"]["image_size"] == 32
    if variant == "full":  # the VGG16 file is gone, and inference never asks for it
        with pytest.raises((FileNotFoundError, OSError)):
            ConditionalDiffusion.from_preset(
                read_trained_model(model_pts[variant])["presets"]["diffusion"]
            )
        assert manifest["presets"]["diffusion"]["loss"]["perceptual_network"] == "none"
        assert sorted(manifest["presets"]) == ["cyclegan", "diffusion", "mpfpsn"]

    loaded = load_model_bundle(folder / MANIFEST, device=CPU)  # the manifest's path works too
    assert loaded.folder == folder and loaded.variant == variant
    assert loaded.regions == REGIONS and loaded.inference_settings() == SETTINGS
    reference, _ = load_networks(model_pts[variant])
    state = read_trained_model(model_pts[variant])["state"]
    for name in EXPECTED[variant]:
        module = getattr(loaded.networks, name)
        assert not module.training
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[name][key]), (name, key)
    ct = ct_volume()
    spet, labels = predict_volume(ct, loaded.networks, SETTINGS, CPU)
    spet_ref, labels_ref = predict_volume(ct, reference, SETTINGS, CPU)
    assert np.array_equal(spet, spet_ref) and np.array_equal(labels, labels_ref)
    if variant == "full":
        assert not np.all(spet == -1)  # the synthesis networks did run
    assert verify_model_bundle(folder) == json.loads((folder / MANIFEST).read_text())


def refused(folder: Path, *texts: str) -> str:
    """Both verify and load refuse with a PatientDataError naming a path and a fix."""
    messages = []
    for call in (verify_model_bundle, lambda f: load_model_bundle(f, device=CPU, patient="P1")):
        with pytest.raises(PatientDataError) as info:
            call(folder)
        message = str(info.value)
        assert info.value.path and info.value.path in message and "Fix: " in message
        assert "Traceback" not in message
        for text in texts:
            assert text in message, message
        messages.append(message)
    assert messages[1].startswith("patient P1 (")
    return messages[0]


def test_flipped_byte_is_refused_before_unpickling(bundle, monkeypatch):
    weights = bundle / "weights" / "diffusion.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    message = refused(bundle, str(weights), "SHA-256", "changed or damaged after it was written")
    assert "copy the bundle again" in message
    assert calls == []


def test_another_abmseg_version_that_wrote_the_bundle_is_not_refused(bundle):
    """Only the bundle format's major version decides (tests/test_bundle_compat.py); the abmseg
    version is recorded for information (the digest still covers it)."""
    edit("abmseg_version", "0.0.9")(bundle)
    assert verify_model_bundle(bundle)["abmseg_version"] == "0.0.9"
    assert load_model_bundle(bundle, device=CPU).manifest["abmseg_version"] == "0.0.9"
    edit("abmseg_version", "0.0.8", resign=False)(bundle)
    refused(bundle, str(bundle / MANIFEST), "edited after it was written")


def edit(key: str, value, resign: bool = True) -> Callable[[Path], None]:
    """A damage that sets one manifest key (a dotted path) to ``value`` (None: deletes it).

    ``resign``: store the edited manifest's own digest again, as a crafted or miswritten bundle
    would, so the check for that damage itself is reached (not the digest check before it)."""

    def damage(folder: Path) -> None:
        manifest = json.loads((folder / MANIFEST).read_text())
        *parents, last = key.split(".")
        target = manifest
        for part in parents:
            target = target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
        if resign:
            manifest["manifest_sha256"] = model_bundle.manifest_digest(manifest)
        (folder / MANIFEST).write_text(json.dumps(manifest))

    return damage


def escape(folder: Path) -> None:
    """Point a network at a copy of its own (correct) weights outside the folder."""
    (folder.parent / "mpfpsn.pt").write_bytes((folder / "weights" / "mpfpsn.pt").read_bytes())
    edit("networks.mpfpsn.file", "../mpfpsn.pt")(folder)


def truncate(folder: Path) -> None:
    path = folder / "weights" / "g_ct2pet.pt"
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(
    ("damage", "where", "text"),
    [
        (lambda f: (f / "weights" / "mpfpsn.pt").unlink(), "weights/mpfpsn.pt", "is missing"),
        (truncate, "weights/g_ct2pet.pt", "has 100 bytes"),
        (lambda f: (f / MANIFEST).write_text("{not json"), MANIFEST, "not readable JSON"),
        (lambda f: (f / MANIFEST).write_text("[]"), MANIFEST, "not an abmseg-model-bundle"),
        (edit("format_version", "2.0"), MANIFEST, "bundle format version 2.0 (written by"),
        (edit("regions", None), MANIFEST, "lacks the key(s) regions"),
        (edit("variant", "vit"), MANIFEST, "unknown variant 'vit'"),
        (edit("networks.diffusion", None), MANIFEST, "variant full stage 2 uses"),
        (escape, MANIFEST, "'../mpfpsn.pt' lies outside the bundle folder"),
        (edit("networks.mpfpsn.file", "/tmp/mpfpsn.pt"), MANIFEST, "outside the bundle folder"),
    ],
    ids=[
        "missing",
        "truncated",
        "not-json",
        "not-a-manifest",
        "format",
        "key",
        "variant",
        "network-dropped",
        "dotdot",
        "absolute",
    ],
)
def test_damaged_bundles_are_refused(bundle, damage, where, text):
    damage(bundle)
    refused(bundle, str(bundle / where), text)


@pytest.mark.parametrize(
    "key, value",
    [
        ("preprocessing.normalise.ct_width_hu", 400.0),
        ("sampler.steps", 1000),
        ("regions.ilium", 3),
        ("networks.mpfpsn.sha256", "0" * 64),
    ],
)
def test_an_edited_manifest_is_refused(bundle, key, value):
    """Only the weights have their own hashes; the manifest's settings are covered by its
    manifest_sha256 (a recorded weight hash edited to match changed weights included)."""
    edit(key, value, resign=False)(bundle)
    refused(bundle, str(bundle / MANIFEST), "edited after it was written")


def test_ddpm_without_a_step_count_is_a_valid_sampler(tmp_path, model_pts):
    """``steps: null`` (the full DDPM chain) is a setting, not a missing one."""
    ddpm = {**SAMPLER, "sampler": "ddpm", "steps": None}
    write_model_bundle(
        tmp_path / "b",
        model_pts["full"],
        preprocessing=PREPROCESSING,
        sampler=ddpm,
        regions=REGIONS,
        provenance=None,
    )
    loaded = load_model_bundle(tmp_path / "b", device=CPU)
    settings = loaded.inference_settings()
    assert settings.sampler == "ddpm" and settings.steps is None


def test_a_folder_without_bundle_json_is_not_a_bundle(tmp_path):
    for folder in (tmp_path / "absent", tmp_path):
        message = refused(folder, str(folder / MANIFEST), "not a model bundle: no bundle.json")
        assert "results/bundles/<variant>" in message


def test_weights_without_manifest_are_an_unfinished_bundle(bundle, model_pts, monkeypatch):
    (bundle / MANIFEST).unlink()
    refused(bundle, "unfinished bundle", "rerun the pipeline's bundle rule")
    write(bundle, model_pts["full"])
    verify_model_bundle(bundle)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model_bundle, "write_json", killed)  # a rewrite stopped before the end
    with pytest.raises(KeyboardInterrupt):
        write(bundle, model_pts["full"])
    refused(bundle, "unfinished bundle")  # the old manifest does not vouch for new weights


def test_a_copied_bundle_is_complete_on_its_own(tmp_path, model_pts):
    """Nothing in the manifest points back to training: a copy loads with its source gone."""
    source = shutil.copy(model_pts["full"], tmp_path / "model.pt")
    write(tmp_path / "first", source)
    copy = shutil.copytree(tmp_path / "first", tmp_path / "elsewhere" / "full")
    shutil.rmtree(tmp_path / "first")
    Path(source).unlink()
    loaded = load_model_bundle(copy, device=CPU)
    assert loaded.folder == copy and loaded.preprocessing["normalise"]["suv_ceiling"] == 10.0
    assert loaded.sampler == SAMPLER and loaded.networks.diffusion is not None


def test_settings_a_bundle_needs_are_required(tmp_path, model_pts):
    normalise = {"ct_level_hu": 100.0, "ct_width_hu": 1200.0}  # no SUV ceiling
    with pytest.raises(ValueError, match=r"preprocessing\.normalise\.suv_ceiling"):
        write_model_bundle(
            tmp_path / "b",
            model_pts["full"],
            preprocessing={**PREPROCESSING, "normalise": normalise},
            sampler=SAMPLER,
            regions=REGIONS,
            provenance=None,
        )
    assert not (tmp_path / "b").exists()


def test_rewrite_leaves_no_stale_weight_file(bundle, model_pts):
    (bundle / "weights" / "old_network.pt").write_bytes(b"stale")
    manifest = write(bundle, model_pts["ct_only"])
    assert sorted(p.name for p in (bundle / "weights").iterdir()) == ["mpfpsn.pt"]
    assert verify_model_bundle(bundle) == manifest and manifest["variant"] == "ct_only"


def test_weights_that_do_not_fit_their_network_are_refused(bundle, monkeypatch):
    """Consistent hashes of the wrong weights (a hand-edited bundle): loading refuses them."""
    wrong = bundle / "weights" / "mpfpsn.pt"
    wrong.write_bytes((bundle / "weights" / "g_ct2pet.pt").read_bytes())
    edit("networks.mpfpsn.sha256", hashlib.sha256(wrong.read_bytes()).hexdigest())(bundle)
    edit("networks.mpfpsn.bytes", wrong.stat().st_size)(bundle)
    verify_model_bundle(bundle)  # the files are as recorded
    with pytest.raises(PatientDataError, match="do not fit the mpfpsn network") as info:
        load_model_bundle(bundle, device=CPU)
    assert str(wrong) in str(info.value) and "Fix: " in str(info.value)

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(torch, "load", out_of_memory)
    with pytest.raises(MemoryError):  # the machine, not the bundle: not reported as damage
        load_model_bundle(bundle, device=CPU)


def test_the_same_model_gives_the_same_weight_bytes_wherever_it_is_written(tmp_path, model_pts):
    """torch.save to a path names the archive after the (random temporary) file; the digests of
    two bundles of one model must still agree, and match the trained model's own reload."""
    first = write(tmp_path / "a", model_pts["full"])["networks"]
    second = write(tmp_path / "elsewhere" / "b", model_pts["full"])["networks"]
    assert first == second
    assert set(first) == {"g_ct2pet", "diffusion", "mpfpsn"}
    again = tmp_path / "model_copy.pt"
    write_trained_model(again, read_trained_model(model_pts["full"]))
    assert again.read_bytes() == model_pts["full"].read_bytes()
