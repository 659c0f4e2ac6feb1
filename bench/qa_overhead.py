"""What issue 18's outputs cost per patient beside the networks, on a paper-sized CT.

One synthetic patient (abmseg synth, preset paper: 512 x 512 x 96 CT) is prepared as
``abmseg predict`` prepares it (convert, crop, window). Class probabilities are made up (a
softmax of smooth random fields over the crop, so the maps compress as real ones would), and
every step after the networks is timed: the entropy maps, abm_prob and abm_uncertainty on the CT
grid, the statistics (bone interior), the CT measurements, the QA picture and the probability
DICOM SEG. The networks' own time is in BENCHMARKS.md ("`abmseg predict` without a GPU").

Usage: python bench/qa_overhead.py [--passes 4]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from abmseg.infer.ct_only import prepare_ct
from abmseg.infer.patient import PredictionPaths, paste_channels
from abmseg.infer.uncertainty import summarise_passes
from abmseg.io.channels import write_channels
from abmseg.preprocess.normalise import NormaliseSettings
from abmseg.preprocess.roi import CropSettings
from abmseg.qa.checks import QaSettings
from abmseg.qa.patient import PredictionMaps, assess_prediction
from abmseg.regions import DEFAULT_REGIONS
from abmseg.rt.export import export_probabilities
from abmseg.synth import generate_cohort


def made_up_passes(shape: tuple[int, ...], passes: int, rng) -> list[np.ndarray]:
    """Softmaxes of smooth random logits: background dominant, regions in blobs."""
    base = ndimage.gaussian_filter(rng.normal(size=(4, *shape)).astype(np.float32), (0, 1, 4, 4))
    out = []
    for _ in range(passes):
        logits = base * 40 + rng.normal(scale=0.3, size=base.shape).astype(np.float32)
        logits[0] += 2.0
        e = np.exp(logits - logits.max(axis=0))
        out.append((e / e.sum(axis=0)).astype(np.float32))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_cohort(tmp / "raw", n_patients=1, seed=3, preset="paper")
        prepared = prepare_ct(
            "P1", tmp / "raw" / "SYN001" / "CT", CropSettings(), NormaliseSettings()
        )
        box, ct = prepared.cropped.box, prepared.ct
        shape = tuple(reversed(prepared.normalised.GetSize()))
        full = tuple(reversed(ct.GetSize()))
        print(f"{platform.node()}: CT {ct.GetSize()}, crop {shape[::-1]}, {args.passes} passes")
        out = PredictionPaths.in_folder(tmp / "out")
        out.spet.parent.mkdir()
        passes = made_up_passes(shape, args.passes, rng)
        timings = {}

        def timed(name, call):
            start = time.perf_counter()
            result = call()
            timings[name] = time.perf_counter() - start
            return result

        summary = timed("ensemble summary (entropy, MI)", lambda: summarise_passes(passes))
        timed("entropy maps", lambda: (summary.predictive_entropy, summary.mutual_information))
        timed("abm_prob.nii.gz on the CT grid", lambda: write_channels(
            paste_channels(summary.mean, box, full, 1.0), ct, out.prob))  # fmt: skip
        maps = np.stack([summary.predictive_entropy, summary.mutual_information])
        timed("abm_uncertainty.nii.gz", lambda: write_channels(
            paste_channels(maps, box, full, 0.0), ct, out.uncertainty))  # fmt: skip
        prediction = PredictionMaps(
            summary.labels, summary.mean, summary.predictive_entropy,
            summary.mutual_information, None,
        )  # fmt: skip
        qa = QaSettings()
        assess = (ct, box, prediction, DEFAULT_REGIONS, qa, None, out.assessment)
        timed("statistics, QA, qa.png", lambda: assess_prediction("P1", *assess))
        seg = (out.prob, prepared.series, DEFAULT_REGIONS, tmp / "prob_seg.dcm", "predict")
        timed("probability DICOM SEG", lambda: export_probabilities("P1", *seg))
        print("| step | s |\n|---|---|")
        for name, seconds in timings.items():
            print(f"| {name} | {seconds:.2f} |")
        print(f"| total | {sum(timings.values()):.2f} |")
        files = (out.prob, out.uncertainty, out.assessment.qa_png)
        sizes = {p.name: p.stat().st_size / 2**20 for p in files}
        sizes["abm_prob_seg.dcm"] = (tmp / "prob_seg.dcm").stat().st_size / 2**20
        print("MiB: " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))
        print(sitk.ReadImage(str(out.prob)).GetSize())


if __name__ == "__main__":
    main()
