"""No patient identity in anything the pipeline writes.

The synthetic patients carry distinctive made-up names, birth dates, MRNs (DICOM PatientID, not
the sheet's pseudonym) and accession numbers; the scanner (abmseg.privacy) is first shown to find
each of them where they could hide, then run over every file of a finished run.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import pipeline_snakemake

from abmseg.cli import main as cli_main
from abmseg.io.dicom_series import list_dicom_files
from abmseg.privacy.identifiers import identifiers_in, identifiers_of
from abmseg.privacy.scan import scan

NIFTI_DESCRIP = slice(148, 228)
NIFTI_AUX_FILE = slice(228, 252)


@pytest.fixture(scope="module")
def header(tiny_cohort) -> pydicom.Dataset:
    return pydicom.dcmread(list_dicom_files(tiny_cohort / "SYN001" / "CT")[0])


@pytest.fixture(scope="module")
def identifiers(tiny_cohort):
    return identifiers_in([tiny_cohort / "SYN001"])


def test_identifiers_cover_name_birth_date_mrn_accession_and_uids(header, identifiers):
    values = {i.value for i in identifiers}
    family, given = str(header.PatientName).split("^")
    birth = str(header.PatientBirthDate)
    assert {family, given, f"{given} {family}", header.PatientID, header.AccessionNumber} <= values
    dates = {
        birth,
        f"{birth[:4]}-{birth[4:6]}-{birth[6:]}",
        f"{birth[6:]}.{birth[4:6]}.{birth[:4]}",
    }
    assert dates <= values
    assert {header.StudyInstanceUID, header.SeriesInstanceUID} <= values
    assert "SYN001" not in values, "the sheet's pseudonym is not an identifier"
    assert identifiers_of(header) <= identifiers


def _plant(folder: Path, header: pydicom.Dataset) -> dict[str, str]:
    """One file per hiding place, each holding one identifier; returns file name -> kind."""
    family = str(header.PatientName).split("^")[0]
    birth = str(header.PatientBirthDate)
    (folder / "meta.json").write_text(json.dumps({"note": family.lower()}))
    (folder / "log.txt").write_text(f"born {birth[6:]}/{birth[4:6]}/{birth[:4]}\n")
    plain = folder / "image.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.float32)), str(plain))
    data = bytearray(plain.read_bytes())
    mrn = header.PatientID.encode()
    data[NIFTI_DESCRIP.start : NIFTI_DESCRIP.start + len(mrn)] = mrn
    (folder / "image.nii.gz").write_bytes(gzip.compress(bytes(data)))
    plain.unlink()
    with zipfile.ZipFile(folder / "model.pt", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/data.pkl", f"accession={header.AccessionNumber}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(1, 1))
    figure.savefig(folder / "figure.png", metadata={"Title": str(header.PatientName)})
    plt.close(figure)
    uid = base64.b64encode(f"study {header.StudyInstanceUID}".encode()).decode()
    (folder / "report.html").write_text(f'<a href="data:text/plain;base64,{uid}">x</a>')
    return {
        "meta.json": "patient name",
        "log.txt": "birth date",
        "image.nii.gz": "PatientID",
        "model.pt": "AccessionNumber",
        "figure.png": "patient name",
        "report.html": "StudyInstanceUID",
    }


def test_scanner_finds_identifiers_wherever_they_hide(tmp_path, header, identifiers):
    planted = _plant(tmp_path, header)
    findings, files = scan([tmp_path], identifiers)
    assert files == len(planted)
    found = {(f.path.name, f.identifier.kind) for f in findings}
    for name, kind in planted.items():
        assert (name, kind) in found, f"{kind} in {name} was missed"


def test_scanner_ignores_digits_and_letters_that_only_contain_an_identifier(
    tmp_path, header, identifiers
):
    birth = str(header.PatientBirthDate)
    family = str(header.PatientName).split("^")[0]
    (tmp_path / "losses.csv").write_text(f"epoch,loss\n1,0.{birth}5\n2,{birth}1\n")
    (tmp_path / "words.txt").write_text(f"{family}son {header.StudyInstanceUID}.7\n")
    assert scan([tmp_path], identifiers)[0] == []


def test_cli_masks_what_it_reports_and_fails_on_findings(tmp_path, tiny_cohort, header, capsys):
    _plant(tmp_path, header)
    assert cli_main(["phi-scan", str(tmp_path), "--dicom", str(tiny_cohort / "SYN001")]) == 1
    out = capsys.readouterr().out
    assert "meta.json" in out and header.PatientID not in out
    assert str(header.PatientName).split("^")[0] not in out
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.txt").write_text("SYN001 is a pseudonym\n")
    assert cli_main(["phi-scan", str(clean), "--dicom", str(tiny_cohort / "SYN001")]) == 0
    args = ["phi-scan", str(tmp_path), "--dicom", str(tiny_cohort / "SYN001")]
    excluded = [f"--exclude={p}" for p in tmp_path.iterdir() if p.name != "meta.json"]
    capsys.readouterr()
    assert cli_main(args + excluded) == 1
    assert capsys.readouterr().out.count("\n") == 1  # only meta.json is left to find
    assert cli_main(args + [f"--exclude={tmp_path}"]) == 0


@pytest.mark.slow
def test_no_identifier_in_any_output_of_a_run(pipeline):
    work = pipeline["work"]
    report = work / "report.html"
    if not report.exists():
        result = pipeline_snakemake(
            work, pipeline["sheet"], pipeline["fast"], "--report", str(report)
        )
        assert result.returncode == 0, result.stderr[-3000:]
    identifiers = identifiers_in([pipeline["root"] / "raw"])
    assert {i.kind for i in identifiers} >= {"patient name", "PatientID", "birth date"}
    exports = work / "results" / "dicom"  # carry their CT's identity by design: test_dicom_export
    assert any(exports.rglob("*.dcm"))
    findings, files = scan([work], identifiers, exclude=[exports])
    assert not findings, "\n".join(f.line() for f in findings[:20])
    for folder in ("results", "results/provenance", "logs", "benchmarks", ".snakemake"):
        assert any((work / folder).rglob("*")), f"nothing was scanned under {folder}"
    assert files > 300
    niftis = list((work / "results").rglob("*.nii.gz"))
    assert niftis
    for path in niftis:
        with gzip.open(path) as nifti:
            header = nifti.read(348)
        assert header[NIFTI_DESCRIP].strip(b"\x00") == b"", path
        assert header[NIFTI_AUX_FILE].strip(b"\x00") == b"", path


def test_a_sop_instance_uid_in_a_log_is_found(tmp_path, header, identifiers):
    """highdicom once quoted the CT slice's SOP Instance UID in every export's log."""
    quoted = f'copy Patient-related attributes from dataset "{header.SOPInstanceUID}"'
    (tmp_path / "export.log").write_text(f"INFO highdicom.base: {quoted}\n")
    findings, _ = scan([tmp_path], identifiers)
    assert {f.identifier.kind for f in findings} == {"SOPInstanceUID"}


def export_log_findings(folder: Path, converted: dict, identifiers) -> list:
    """Export a SEG with a rule's logging (abmseg.step) and scan the log it leaves."""
    from abmseg.io.dicom_series import read_series
    from abmseg.rt.seg import write_dicom_seg
    from abmseg.step import _configure

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    log = folder / "logs" / "export.log"
    try:
        _configure(log)
        series = read_series(converted["raw"] / "CT", "CT", "SYN001")
        label = sitk.ReadImage(str(converted["paths"].label))
        write_dicom_seg(label, series, {"a": 1, "b": 2, "c": 3}, folder / "seg.dcm", "SYN001")
        logging.getLogger("abmseg.export_dicom").info("SEG written")
        for handler in root.handlers:
            handler.close()
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    assert "SEG written" in log.read_text()  # the log was written to
    return scan([log.parent], identifiers)[0]


def test_exporting_a_seg_logs_no_dicom_identifier(tmp_path, converted, identifiers, monkeypatch):
    assert export_log_findings(tmp_path / "quiet", converted, identifiers) == []
    # the control: with highdicom's INFO lines let through, the log names a slice's UID
    monkeypatch.setattr("abmseg.step.IDENTIFYING_LOGGERS", ())
    monkeypatch.setattr(logging.getLogger("highdicom"), "level", logging.NOTSET)
    loud = export_log_findings(tmp_path / "loud", converted, identifiers)
    assert {f.identifier.kind for f in loud} == {"SOPInstanceUID"}
