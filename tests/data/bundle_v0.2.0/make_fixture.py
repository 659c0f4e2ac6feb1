"""How the frozen bundle fixture of abmseg 0.2.0 was made. Run once; never run it again.

tests/test_bundle_compat.py checks that every later abmseg still loads this bundle and predicts
the outputs stored here from the input stored here. Regenerating them with later code would make
that check pass whatever the code does: a later release adds a fixture folder of its own
(tests/data/bundle_v<version>/) instead. README.md beside this file says when and how it ran.

What it writes, beside this file:
  bundle/                  a model bundle of the ``full`` variant (CycleGAN, conditional
                           diffusion, MP-FPSN; tiny presets, 32 px) trained 12 epochs in stage 1
                           and 4 in stage 2 (18 slices each) on tests/test_train.py's synthetic
                           normalised volumes, written by write_model_bundle with the demo's
                           preprocessing and an ensemble sampler (DDIM, 2 steps from t = 100,
                           2 seeds, each mirrored), and a QA record whose training profile is
                           measured on two synthetic CTs made here
  input/ct.nii.gz          a small synthetic planning CT in HU (int16, 48 x 48 x 8 voxels)
  expected/prediction.json what tests/test_bundle_compat.predict (abmseg predict's path) wrote
  expected/arrays.npz      the maps it wrote: masks (abm, abm_ct), sPET, probabilities and
                           uncertainty

Usage, from the repository root with abmseg 0.2.0 installed (it refuses to overwrite):
    python tests/data/bundle_v0.2.0/make_fixture.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

HERE = Path(__file__).resolve().parent
TESTS = HERE.parents[1]
sys.path.insert(0, str(TESTS))

from test_bundle_compat import predict, predicted_arrays  # noqa: E402
from test_train import base_config, make_cohort, settings  # noqa: E402

import abmseg  # noqa: E402
from abmseg.infer.model_bundle import (  # noqa: E402
    BundleSettings,
    load_model_bundle,
    write_model_bundle,
)
from abmseg.qa.measure import measure_ct  # noqa: E402
from abmseg.qa.profile import at_scan_edge, region_volumes_ml, summarise  # noqa: E402
from abmseg.train.engine import TrainJob, run_training  # noqa: E402

VERSION = "0.2.0"
SAMPLER = {"sampler": "ddim", "steps": 2, "start_step": 100, "batch_size": 16}
ENSEMBLE = {"samples": 2, "tta": True}
SHAPE = (8, 48, 48)  # (z, y, x)
SPACING = (10.0, 10.0, 6.0)  # (x, y, z) mm
EPOCHS = {"epochs_stage1": 12, "epochs_stage2": 4, "max_slices_per_epoch": 18}


def synthetic_ct(seed: int) -> tuple[sitk.Image, sitk.Image]:
    """A pelvis-like CT in HU (air, a fat layer around muscle, marrow discs as bright as the
    training volumes' (0.5 in the demo's window), a couch apart from the body) and its marrow
    label: 1 the spine, 2 the ilium (upper half), 3 the lower pelvis (lower half)."""
    rng = np.random.default_rng(seed)
    z, h, w = SHAPE
    yy, xx = np.mgrid[:h, :w]

    def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1

    body, muscle = ellipse(22, 24, 15, 21), ellipse(22, 24, 13, 19)
    hu = rng.normal(-1000.0, 8.0, SHAPE)
    label = np.zeros(SHAPE, np.uint8)
    for k in range(z):
        hu[k][body] = rng.normal(-100.0, 15.0, body.sum())
        hu[k][muscle] = rng.normal(40.0, 15.0, muscle.sum())
        discs = [(ellipse(30, 24, 4, 4), 1)]
        for cx in (12, 36):
            discs.append((ellipse(21 + (k - z // 2) * 0.5, cx, 5, 4), 2 if k < z // 2 else 3))
        for disc, value in discs:
            hu[k][disc] = rng.normal(400.0, 30.0, disc.sum())
            label[k][disc] = value
        hu[k][41:43, 4:44] = rng.normal(-300.0, 20.0, (2, 40))  # the couch, apart from the body
    images = []
    for array in (np.round(hu).astype(np.int16), label):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(SPACING)
        image.SetOrigin((-240.0, -240.0, 100.0 + 6.0 * seed))
        images.append(image)
    return images[0], images[1]


def qa_record(bundle_settings: BundleSettings) -> dict:
    """The bundle's QA entry, with a training profile of two synthetic CTs."""
    cts = [synthetic_ct(seed) for seed in (1, 2)]
    regions = bundle_settings.regions
    profile = summarise(
        [measure_ct(ct) for ct, _ in cts],
        [
            region_volumes_ml(sitk.GetArrayFromImage(label), label.GetSpacing(), regions)
            for _, label in cts
        ],
        regions,
        [at_scan_edge(sitk.GetArrayFromImage(label)) for _, label in cts],
    )
    return bundle_settings.qa_record(profile.to_dict())


def main() -> None:
    if abmseg.__version__ != VERSION:
        raise SystemExit(f"this fixture is abmseg {VERSION}'s; this is {abmseg.__version__}")
    if (HERE / "bundle").exists():
        raise SystemExit(f"{HERE / 'bundle'} exists: the fixture is frozen, never regenerated")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cohort = make_cohort(work / "cohort", n=3)
        train = settings(**EPOCHS)  # tiny presets, 32 px
        stage1 = run_training(TrainJob(1, "full", train, cohort, work / "stage1"))
        stage2 = run_training(TrainJob(2, "full", train, cohort, work / "stage2", init=stage1))
        config = base_config()
        config["inference"] = {**SAMPLER, **ENSEMBLE}
        bundle_settings = BundleSettings.from_config(config)
        write_model_bundle(
            HERE / "bundle",
            stage2,
            preprocessing=bundle_settings.preprocessing,
            sampler=bundle_settings.sampler,
            regions=bundle_settings.regions,
            provenance={
                "rule": "train_stage2",
                "note": "frozen test fixture: tests/data/bundle_v0.2.0/make_fixture.py",
            },
            qa=qa_record(bundle_settings),
        )
    ct, _ = synthetic_ct(3)
    (HERE / "input").mkdir()
    sitk.WriteImage(ct, str(HERE / "input" / "ct.nii.gz"), useCompression=True)
    bundle = load_model_bundle(HERE / "bundle", device=torch.device("cpu"))
    expected = HERE / "expected"
    expected.mkdir()
    predict(bundle, HERE / "input" / "ct.nii.gz", expected)
    np.savez_compressed(expected / "arrays.npz", **predicted_arrays(expected))
    prob = np.sort(np.load(expected / "arrays.npz")["prob"], axis=0)
    print("smallest gap between a voxel's two most likely classes:", (prob[-1] - prob[-2]).min())
    for path in list(expected.iterdir()):  # keep only what the test compares
        if path.name not in ("arrays.npz", "prediction.json"):
            path.unlink()


if __name__ == "__main__":
    main()
