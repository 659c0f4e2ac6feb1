"""The report's results page: tables read back from the HTML equal the TSVs they came from,
the registration QC ratios are hand-computed, each patient's registration figure is a thumbnail
of it, and the banner and sections follow the inputs."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from abmseg.evaluate.results_page import build_page, metric_name, write_results_page

SUMMARY = (
    "variant\tmetric\tmean\tsd\tn\tn_undefined\tpaper_mean\tpaper_sd\n"
    "full\tpsnr_db\t22.8964\t0.4631\t2\t0\t26.42\t0.63\n"
    "full\tdice_ilium\t0.6181\t0.0143\t2\t0\t0.771\t\n"
    "full\tassd_mm_mean\t\t\t0\t2\t3.52\t0.41\n"
)
PER_PATIENT = "patient_id\tvariant\tpsnr_db\tdice_mean\nSYN001\tfull\t23.2231\t0.6631\n"
QA = (
    "source\tpatient_id\tqa_verdict\tchecks\tmarrow_mean_entropy\treasons\n"
    "full\tSYN001\tpass\t\t0.585\t\n"
    "predict\tSYN007\tfail\thu_calibration\t0.604\tair peak -799 HU\n"
)
STATS = (
    "source\tpatient_id\tregion\tabm_volume_ml\tabm_share_of_interior\tqa_verdict\n"
    "predict\tSYN007\tilium\t261.932\t0.441\tfail\n"
)


class Tables(HTMLParser):
    """Every <table> as rows of cell texts, plus every <img src>."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.classes: list[list[str | None]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
            self.classes.append([])
        elif tag == "tr":
            self.tables[-1].append([])
            self.classes[-1].append(attrs.get("class"))
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _qc(folder: Path, patient: str, rotation: float, shift: float, passed: bool = True) -> Path:
    path = folder / f"{patient}.json"
    path.write_text(
        json.dumps(
            {
                "patient_id": patient,
                "mutual_information_before": 0.6,
                "mutual_information_after": 0.7,
                "qc_limits": {
                    "max_rotation_deg": 10.0,
                    "max_centre_displacement_mm": 30.0,
                    "max_scale": 1.05,
                    "min_scale": 0.95,
                },
                "qc_passed": passed,
                "transform": {
                    "rotation_deg": rotation,
                    "centre_displacement_mm": shift,
                    "scale_max": 1.01,
                    "scale_min": 0.98,
                },
            }
        )
    )
    return path


@pytest.fixture
def inputs(tmp_path) -> dict:
    files = {}
    for name, text in (
        ("summary", SUMMARY),
        ("per_patient", PER_PATIENT),
        ("qa", QA),
        ("stats", STATS),
    ):
        files[name] = tmp_path / f"{name}.tsv"
        files[name].write_text(text)
    qc = [_qc(tmp_path, "SYN001", 3.5, 6.0), _qc(tmp_path, "SYN002", 12.0, 3.0, passed=False)]
    return {
        "summary_tsv": files["summary"],
        "per_patient_tsv": files["per_patient"],
        "qa_tsv": files["qa"],
        "stats_tsv": files["stats"],
        "registration_qc": qc,
    }


def _parse(text: str) -> Tables:
    parser = Tables()
    parser.feed(text)
    return parser


def test_the_summary_table_reads_back_as_the_tsv_says(inputs):
    page = _parse(build_page(**inputs, model_preset="paper"))
    summary = page.tables[0]
    assert summary[0] == ["variant", "metric", "this run (mean ± sd)", "n", "undefined", "paper"]
    assert summary[1] == ["full", "PSNR (dB)", "22.896 ± 0.463", "2", "0", "26.420 ± 0.630"]
    # a paper value without sd shows the mean alone; an undefined metric shows "-"
    assert summary[2] == ["full", "Dice, ilium", "0.618 ± 0.014", "2", "0", "0.771"]
    assert summary[3] == ["full", "ASSD (mm), mean of regions", "-", "0", "2", "3.520 ± 0.410"]
    per_patient = page.tables[1]
    assert per_patient[0] == ["patient id", "variant", "PSNR (dB)", "Dice, mean of regions"]
    assert per_patient[1] == ["SYN001", "full", "23.223", "0.663"]


def test_registration_qc_against_the_limits_is_hand_computed(inputs):
    page = _parse(build_page(**inputs, model_preset="paper"))
    registration = page.tables[-1]
    header = registration[0]
    rows = {row[0]: dict(zip(header, row, strict=True)) for row in registration[1:]}
    assert rows["SYN001"]["rotation / limit"] == "0.350"  # 3.5 / 10
    assert rows["SYN001"]["shift / limit"] == "0.200"  # 6 / 30
    assert rows["SYN001"]["scale / limit"] == "0.400"  # max(0.01, 0.02) / 0.05
    assert rows["SYN002"]["rotation / limit"] == "1.200" and rows["SYN002"]["QC"] == "fail"
    assert page.classes[-1][1:] == ["pass", "fail"]
    figure = page.images[0]
    assert figure.startswith("data:image/png;base64,")
    assert base64.b64decode(figure.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_ct_only_predictions_and_qa_verdicts_have_their_sections(inputs):
    text = build_page(**inputs, model_preset="paper")
    page = _parse(text)
    qa_rows = [row for table in page.tables for row in table if "SYN007" in row]
    assert ["predict", "SYN007", "fail", "hu_calibration", "0.604", "air peak -799 HU"] in qa_rows
    assert ["SYN007", "ilium", "261.932", "0.441", "fail"] in qa_rows
    assert "CT-only predictions" in text and "None in this run" not in text
    no_ct_only = inputs["qa_tsv"]
    no_ct_only.write_text(QA.rsplit("\n", 2)[0] + "\n")
    assert "None in this run" in build_page(**inputs, model_preset="paper")


def test_the_demo_banner_shows_for_the_tiny_preset_only(inputs, tmp_path):
    assert "tiny</b> network preset" not in build_page(**inputs, model_preset="paper")
    out = tmp_path / "page" / "results.html"
    write_results_page(out, **inputs, model_preset="tiny")
    assert "tiny</b> network preset" in out.read_text(encoding="utf-8")
    assert [p.name for p in out.parent.iterdir()] == ["results.html"]


def test_metric_names_are_what_a_reader_calls_them():
    assert metric_name("dice_lower_pelvis") == "Dice, lower pelvis"
    assert metric_name("assd_mm_lumbosacral_spine") == "ASSD (mm), lumbosacral spine"
    assert metric_name("nmse") == "NMSE"


def _png(path: Path, width: int, height: int) -> Path:
    """Left half red, right half blue: a thumbnail that shows the wrong picture or a mirrored
    one fails."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    Image.fromarray(pixels).save(path)
    return path


def _jpeg(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB")).astype(int)


def test_each_patients_registration_figure_is_a_thumbnail_in_table_order(inputs, tmp_path):
    figures = tmp_path / "registration"
    figures.mkdir()
    wide = _png(figures / "SYN002.png", 1800, 600)
    small = _png(figures / "SYN001.png", 400, 300)
    text = build_page(**inputs, model_preset="paper", registration_figures=[wide, small])
    page = _parse(text)
    thumbnails = [_jpeg(src) for src in page.images[1:]]  # [0] is the cohort figure
    # SYN001 first, as in the table; 1800 x 600 shrunk to THUMBNAIL_PX = 900 wide, 300 high;
    # 400 x 300 never enlarged
    assert [t.shape[:2] for t in thumbnails] == [(300, 400), (300, 900)]
    for thumb in thumbnails:
        left, right = thumb[:, : thumb.shape[1] // 4], thumb[:, -thumb.shape[1] // 4 :]
        assert np.abs(left.mean(axis=(0, 1)) - (255, 0, 0)).max() < 12
        assert np.abs(right.mean(axis=(0, 1)) - (0, 0, 255)).max() < 12
    captions = re.findall(r'<figcaption class="(\w+)">([^<]*)</figcaption>', text)
    assert captions == [
        ("pass", "SYN001: registration QC pass"),
        ("fail", "SYN002: registration QC fail"),
    ]
    # a patient without a figure is left out; no figures, no gallery
    only_one = build_page(**inputs, model_preset="paper", registration_figures=[wide])
    assert re.findall(r"<figcaption[^>]*>([^<]*)<", only_one) == ["SYN002: registration QC fail"]
    assert "<figcaption" not in build_page(**inputs, model_preset="paper")
