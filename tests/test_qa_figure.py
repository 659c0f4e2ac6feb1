"""The per-patient QA picture (issue 18): size, contour and verdict colours, empty masks,
atomicity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image
from scipy import ndimage

from abmseg.evaluate.figures import REGION_COLOURS
from abmseg.evaluate.qa_figure import (
    _IMAGE_RIGHT,
    DPI,
    ENTROPY_MAX,
    FIGSIZE,
    VERDICT_COLOURS,
    _layout,
    _reasons_text,
    qa_figure,
)

REGIONS = {"lumbosacral_spine": 1, "ilium": 2, "lower_pelvis": 3}
SPACING = (5.0, 3.0, 3.0)  # z, y, x mm


def synthetic_case(shape=(40, 96, 128), spacing=SPACING):
    """A body ellipse at 0 HU in air, three bones (700 HU cortex, 100 HU marrow) whose marrow is
    labelled 1 (spine, all slices), 2 (two ilia, upper two thirds), 3 (two pubic/ischial bones,
    lower third), and an entropy map that is high at the label borders."""
    nz, ny, nx = shape
    sz, sy, sx = spacing
    zz, yy, xx = np.meshgrid(
        np.arange(nz) * sz, np.arange(ny) * sy, np.arange(nx) * sx, indexing="ij"
    )
    cy, cx = ny * sy / 2, nx * sx / 2
    hu = np.full(shape, -1000.0, np.float32)
    body = ((yy - cy) / (0.45 * ny * sy)) ** 2 + ((xx - cx) / (0.47 * nx * sx)) ** 2 <= 1
    hu[body] = 0.0
    labels = np.zeros(shape, np.uint8)
    # (centre y mm, centre x mm, radius mm, z range as fractions, label)
    bones = [
        (cy + 0.25 * ny * sy, cx, 18.0, (0.0, 1.0), 1),
        (cy + 0.05 * ny * sy, cx - 0.28 * nx * sx, 22.0, (0.35, 1.0), 2),
        (cy + 0.05 * ny * sy, cx + 0.28 * nx * sx, 22.0, (0.35, 1.0), 2),
        (cy - 0.2 * ny * sy, cx - 0.18 * nx * sx, 14.0, (0.0, 0.4), 3),
        (cy - 0.2 * ny * sy, cx + 0.18 * nx * sx, 14.0, (0.0, 0.4), 3),
    ]
    height = nz * sz
    for by, bx, radius, (z0, z1), value in bones:
        in_z = (zz >= z0 * height) & (zz < z1 * height)
        distance = np.hypot(yy - by, xx - bx)
        hu[in_z & (distance <= radius)] = 700.0
        marrow = in_z & (distance <= radius - 4.0)
        hu[marrow] = 100.0
        labels[marrow] = value
    border = ndimage.morphological_gradient(labels, size=3) > 0
    entropy = ndimage.gaussian_filter(border.astype(np.float32), 1.0)
    entropy = np.clip(entropy / max(float(entropy.max()), 1e-6), 0, 1) * 0.9 * ENTROPY_MAX
    stats = []
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for name, value in REGIONS.items():
        mask = labels == value
        stats.append(
            {
                "region": name,
                "abm_volume_ml": mask.sum() * voxel_ml,
                "bone_interior_ml": mask.sum() * voxel_ml * 1.6,
                "abm_share_of_interior": 1 / 1.6,
                "mean_hu": float(hu[mask].mean()) if mask.any() else None,
                "mean_spet_suv": 2.1,
                "mean_entropy": float(entropy[mask].mean()) if mask.any() else None,
                "uncertain_share": 0.12,
            }
        )
    return hu, labels, entropy.astype(np.float32), stats


QA = {
    "fail": {
        "verdict": "fail",
        "reasons": [
            {
                "check": "hu_calibration",
                "level": "fail",
                "message": "air peak at -799 HU; the training CTs had it at -999 to -999 HU "
                "(tolerance 50 HU): check the CT's rescale slope and intercept",
            },
            {"check": "region_volume", "level": "warn", "message": "ilium ABM 0.0 ml"},
        ],
    },
    "warn": {
        "verdict": "warn",
        "reasons": [{"check": "uncertainty", "level": "warn", "message": "mean entropy 0.72 nats"}],
    },
    "pass": {"verdict": "pass", "reasons": []},
}


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def near(image: np.ndarray, colour, tolerance: float = 40.0) -> np.ndarray:
    rgb = np.array(to_rgb(colour)) * 255
    return np.linalg.norm(image - rgb, axis=-1) < tolerance


def image_panels(image: np.ndarray) -> np.ndarray:
    """The CT and entropy panels: left of the text column, below the headings (region legend)."""
    height, width = image.shape[:2]
    return image[int(0.07 * height) :, : int(_IMAGE_RIGHT * width)]


def verdict_area(image: np.ndarray) -> np.ndarray:
    """The text column above the table: patient, verdict, reasons."""
    height, width = image.shape[:2]
    return image[: int(0.45 * height), int(_IMAGE_RIGHT * width) :]


@pytest.fixture(scope="module")
def case():
    return synthetic_case()


def draw(path, case, verdict="pass", labels=None, **kwargs):
    hu, case_labels, entropy, stats = case
    qa_figure(
        path,
        hu,
        SPACING,
        case_labels if labels is None else labels,
        entropy,
        REGIONS,
        stats,
        QA[verdict],
        "SYN042",
        **kwargs,
    )
    return pixels(path)


def test_png_has_the_promised_size_and_is_small(tmp_path, case):
    path = tmp_path / "qa.png"
    image = draw(path, case, "fail")
    assert image.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    assert path.stat().st_size < 300_000
    assert not [p for p in tmp_path.iterdir() if p.name != "qa.png"]  # no temporary left


def test_region_one_contour_is_red_in_the_ct_row_only_when_drawn(tmp_path, case):
    red = REGION_COLOURS.colors[1]
    image = draw(tmp_path / "with.png", case)
    panels = image_panels(image)
    hits = np.argwhere(near(panels, red))
    assert len(hits) > 50
    # contours are drawn on the CT (top) row, not on the entropy row
    top_row = hits[:, 0] + (image.shape[0] - panels.shape[0]) < image.shape[0] / 2
    assert top_row.mean() > 0.95
    without = case[1].copy()
    without[without == 1] = 0
    image = draw(tmp_path / "without.png", case, labels=without)
    assert near(image_panels(image), red).sum() < len(hits) / 20
    # the other regions are still drawn in their colours
    assert near(image_panels(image), REGION_COLOURS.colors[2]).sum() > 50


def test_verdict_colour_follows_the_verdict(tmp_path, case):
    counts = {}
    for verdict in VERDICT_COLOURS:
        area = verdict_area(draw(tmp_path / f"{verdict}.png", case, verdict))
        counts[verdict] = {
            other: int(near(area, colour, 30.0).sum()) for other, colour in VERDICT_COLOURS.items()
        }
    for verdict in VERDICT_COLOURS:
        assert counts[verdict][verdict] > 200, counts
    assert counts["pass"]["fail"] < 10 and counts["warn"]["fail"] < 10, counts
    assert counts["fail"]["pass"] < 10 and counts["warn"]["pass"] < 10, counts
    assert counts["pass"]["warn"] < 10, counts


def test_empty_prediction_still_gives_a_figure(tmp_path, case):
    hu, labels, entropy, stats = case
    empty_stats = [
        {key: (row["region"] if key == "region" else None) for key in row} for row in stats
    ]
    path = tmp_path / "empty.png"
    qa_figure(
        path,
        hu,
        SPACING,
        np.zeros_like(labels),
        np.zeros_like(entropy),
        REGIONS,
        empty_stats,
        QA["pass"],
        "SYN000",
    )
    image = pixels(path)
    assert image.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    for value in (1, 2, 3):  # no region contour anywhere on the images
        assert near(image_panels(image), REGION_COLOURS.colors[value], 30.0).sum() < 10
    # the CT is still drawn (grey body, not a blank panel) ...
    grey = np.all(np.abs(image_panels(image) - image_panels(image)[..., :1]) < 3, axis=-1)
    assert (
        grey & (image_panels(image)[..., 0] > 40) & (image_panels(image)[..., 0] < 200)
    ).sum() > 10_000
    # ... and the heading says that nothing was predicted (in the warn colour)
    heading = image[: int(0.07 * image.shape[0]), : int(_IMAGE_RIGHT * image.shape[1])]
    assert near(heading, VERDICT_COLOURS["warn"], 30.0).sum() > 50
    full = draw(tmp_path / "full.png", case)
    heading = full[: int(0.07 * full.shape[0]), : int(_IMAGE_RIGHT * full.shape[1])]
    assert near(heading, VERDICT_COLOURS["warn"], 30.0).sum() < 10


def panel(image: np.ndarray, box) -> np.ndarray:
    """The pixels of one axes box (figure fractions, origin bottom left)."""
    height, width = image.shape[:2]
    x0, y0, w, h = box
    rows = slice(int(round(height * (1 - y0 - h))) + 2, int(round(height * (1 - y0))) - 2)
    return image[rows, int(round(width * x0)) + 2 : int(round(width * (x0 + w))) - 2]


def test_orientation_and_physical_aspect(tmp_path):
    """Head up on coronal and sagittal (z index 0 = inferior at the bottom), patient right on the
    axial image's left, anterior on the sagittal's left; panels sized in mm, not voxels."""
    shape, spacing = (30, 60, 80), (6.0, 2.0, 2.0)  # anisotropic: 6 mm slices
    hu = np.zeros(shape, np.float32)
    hu[:5] = 1000.0  # the five most inferior slices: white
    hu[:, :, :10] = 1000.0  # x index 0..9: the patient's right
    hu[:, :10, :] = 1000.0  # y index 0..9: anterior
    labels = np.zeros(shape, np.uint8)
    labels[10:20, 25:35, 35:45] = 1
    path = tmp_path / "orient.png"
    stats = [{"region": "lumbosacral_spine"}]
    qa_figure(
        path, hu, spacing, labels, np.zeros(shape, np.float32), REGIONS, stats, QA["pass"], "O"
    )
    image = pixels(path)[..., 0]
    sizes = [(80 * 2.0, 60 * 2.0), (80 * 2.0, 30 * 6.0), (60 * 2.0, 30 * 6.0)]
    top, bottom, _ = _layout(sizes)
    for row in (top, bottom):
        for (w_mm, h_mm), (_, _, w, h) in zip(sizes, row, strict=True):
            px_w, px_h = w * FIGSIZE[0] * DPI, h * FIGSIZE[1] * DPI
            assert px_w / px_h == pytest.approx(w_mm / h_mm, rel=0.02)
    axial, coronal, sagittal = (panel(pixels(path)[..., 0], box) for box in bottom)

    def white(strip):
        return (strip > 200).mean()

    assert white(coronal[-5:, 30:]) > 0.9 and white(coronal[:5, 30:]) < 0.1  # feet down
    assert white(sagittal[-5:, 30:]) > 0.9 and white(sagittal[:5, 30:]) < 0.1
    assert white(axial[20:-20, :5]) > 0.9 and white(axial[20:-20, -5:]) < 0.1  # right on left
    assert white(axial[:5, 30:]) > 0.9 and white(axial[-5:, 30:]) < 0.1  # anterior up
    above_feet = sagittal[: int(0.7 * sagittal.shape[0])]  # the white inferior slices left out
    assert white(above_feet[:, :5]) > 0.9 and white(above_feet[:, -5:]) < 0.1  # anterior left
    # Drawn in mm: the 20 mm band on the right and the 30 mm band at the feet (10 voxels across,
    # 5 slices up) measure 2:3 on the coronal panel, not 2:1 as voxels would.
    right_band = (coronal[int(0.5 * coronal.shape[0])] > 200).sum()
    feet_band = (coronal[:, int(0.6 * coronal.shape[1])] > 200).sum()
    assert right_band / feet_band == pytest.approx(20 / 30, rel=0.12)
    assert image.shape == (FIGSIZE[1] * DPI, FIGSIZE[0] * DPI)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"labels": np.zeros((4, 4, 4), np.uint8)}, "labels shape"),
        ({"uncertainty": np.zeros((40, 96, 127), np.float32)}, "uncertainty shape"),
        ({"spacing_zyx": (5.0, 0.0, 3.0)}, "spacing"),
        ({"qa": {"verdict": "maybe", "reasons": []}}, "verdict"),
        ({"labels": "a value 7"}, "label values"),
    ],
)
def test_bad_input_raises_before_writing(tmp_path, case, change, message):
    hu, labels, entropy, stats = case
    arguments = {
        "path": tmp_path / "qa.png",
        "hu": hu,
        "spacing_zyx": SPACING,
        "labels": labels,
        "uncertainty": entropy,
        "regions": REGIONS,
        "stats": stats,
        "qa": QA["pass"],
        "patient": "SYN001",
    }
    if isinstance(change.get("labels"), str):
        bad = labels.copy()
        bad[0, 0, 0] = 7
        change = {"labels": bad}
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        qa_figure(**arguments)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_saving_leaves_no_file(tmp_path, case, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, target, *args, **kwargs):
        Path(target).write_bytes(b"\x89PNG half a picture")  # a partial write, then the crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        draw(tmp_path / "qa.png", case)
    assert list(tmp_path.iterdir()) == []


def test_a_200x200x100_volume_gives_a_small_png(tmp_path):
    hu, labels, entropy, stats = synthetic_case((100, 200, 200), (3.0, 2.0, 2.0))
    path = tmp_path / "big.png"
    qa_figure(path, hu, (3.0, 2.0, 2.0), labels, entropy, REGIONS, stats, QA["warn"], "SYN1")
    assert path.stat().st_size < 300_000


def test_fail_reasons_come_first_and_long_messages_wrap():
    qa = {
        "verdict": "fail",
        "reasons": [
            {"check": "uncertainty", "level": "warn", "message": "w " * 60},
            {"check": "geometry", "level": "fail", "message": "f " * 60},
        ],
    }
    lines = _reasons_text(qa, width=52)
    assert [colour for _, colour in lines] == [VERDICT_COLOURS["fail"], VERDICT_COLOURS["warn"]]
    assert lines[0][0].startswith("FAIL geometry:")
    assert all(len(line) <= 52 for text, _ in lines for line in text.split("\n"))
    assert lines[0][0].count("\n") >= 2
