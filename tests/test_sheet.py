"""The cohort sheet: validation, path resolution and one error listing every problem."""

from pathlib import Path

import pytest

from abmseg.cohort.sheet import SheetError, check_patient_id, ct_only_patients, load_sheet

HEADER = "patient_id\tct\tpet\tlabel"


def _make_patient(root, pid):
    folder = root / "data" / pid
    (folder / "ct").mkdir(parents=True)
    (folder / "pet").mkdir()
    (folder / "label.nii.gz").write_bytes(b"")
    return f"data/{pid}/ct\tdata/{pid}/pet\tdata/{pid}/label.nii.gz"


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def cohort(tmp_path):
    """A folder with three patients' files; returns (folder, {pid: 'ct\\tpet\\tlabel'})."""
    rows = {pid: _make_patient(tmp_path, pid) for pid in ("P001", "p-2", "case_3")}
    return tmp_path, rows


def _error(path, **kwargs):
    with pytest.raises(SheetError) as info:
        load_sheet(path, **kwargs)
    return str(info.value)


def test_valid_sheet_loads_with_absolute_paths(cohort):
    root, rows = cohort
    sheet_path = _write(root / "patients.tsv", [HEADER] + [f"{p}\t{r}" for p, r in rows.items()])
    sheet = load_sheet(sheet_path)
    assert list(sheet.index) == ["P001", "p-2", "case_3"]
    assert sheet.index.name == "patient_id"
    assert list(sheet.patient_id) == ["P001", "p-2", "case_3"]
    for pid in rows:
        assert Path(sheet.loc[pid, "ct"]) == (root / "data" / pid / "ct").resolve()
        assert Path(sheet.loc[pid, "pet"]) == (root / "data" / pid / "pet").resolve()
        assert Path(sheet.loc[pid, "label"]) == (root / "data" / pid / "label.nii.gz").resolve()
        for column in ("ct", "pet", "label"):
            assert Path(sheet.loc[pid, column]).is_absolute()
    assert list(sheet.split) == ["", "", ""]


def test_relative_paths_resolve_against_the_sheet_folder(cohort, tmp_path, monkeypatch):
    root, rows = cohort
    sheets = root / "sheets"
    sheets.mkdir()
    lines = [HEADER, "P001\t../data/P001/ct\t../data/P001/pet\t../data/P001/label.nii.gz"]
    sheet_path = _write(sheets / "patients.tsv", lines)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sheet = load_sheet(sheet_path)
    assert sheet.loc["P001", "ct"] == str((root / "data" / "P001" / "ct").resolve())
    assert sheet.loc["P001", "label"] == str((root / "data" / "P001" / "label.nii.gz").resolve())


def test_absolute_paths_are_kept(cohort):
    root, _ = cohort
    ct = (root / "data" / "P001" / "ct").resolve()
    pet = (root / "data" / "P001" / "pet").resolve()
    label = (root / "data" / "P001" / "label.nii.gz").resolve()
    sheet_path = _write(root / "patients.tsv", [HEADER, f"P001\t{ct}\t{pet}\t{label}"])
    sheet = load_sheet(sheet_path)
    assert sheet.loc["P001", "ct"] == str(ct)


def test_split_column_is_kept(cohort):
    root, rows = cohort
    lines = [HEADER + "\tsplit"]
    splits = ["train", "test", ""]
    lines += [f"{pid}\t{r}\t{s}" for (pid, r), s in zip(rows.items(), splits, strict=True)]
    sheet = load_sheet(_write(root / "patients.tsv", lines))
    assert list(sheet.split) == ["train", "test", ""]


@pytest.mark.parametrize("bad_id", ["a/b", "..", "x y"])
def test_bad_patient_ids_are_refused_naming_line_and_id(cohort, bad_id):
    root, rows = cohort
    lines = [HEADER, f"P001\t{rows['P001']}", f"{bad_id}\t{rows['p-2']}"]
    message = _error(_write(root / "patients.tsv", lines))
    assert "line 3" in message
    assert repr(bad_id) in message
    assert "1 problem(s)" in message


def test_empty_patient_id_is_refused(cohort):
    root, rows = cohort
    lines = [HEADER, f"P001\t{rows['P001']}", f"\t{rows['p-2']}"]
    message = _error(_write(root / "patients.tsv", lines))
    assert "line 3" in message
    assert "''" in message
    assert "is empty" in message


def test_duplicate_ids_are_refused(cohort):
    root, rows = cohort
    lines = [HEADER, f"P001\t{rows['P001']}", f"p-2\t{rows['p-2']}", f"P001\t{rows['p-2']}"]
    message = _error(_write(root / "patients.tsv", lines))
    assert "P001" in message
    assert "more than once" in message


def test_missing_column_is_refused(cohort):
    root, rows = cohort
    ct, pet, _ = rows["P001"].split("\t")
    lines = ["patient_id\tct\tpet", f"P001\t{ct}\t{pet}"]
    message = _error(_write(root / "patients.tsv", lines))
    assert "lacks column" in message
    assert "'label'" in message


def test_unknown_column_is_refused(cohort):
    root, rows = cohort
    lines = [HEADER + "\tweight", f"P001\t{rows['P001']}\t75"]
    message = _error(_write(root / "patients.tsv", lines))
    assert "unknown column" in message
    assert "'weight'" in message


def test_missing_file_is_refused_naming_the_path(cohort):
    root, rows = cohort
    lines = [HEADER, f"P001\t{rows['P001']}", "p-2\tdata/p-2/ct\tdata/p-2/pet\tnowhere/lab.nii.gz"]
    message = _error(_write(root / "patients.tsv", lines))
    assert str((root / "nowhere" / "lab.nii.gz").resolve()) in message
    assert "line 3" in message
    assert "label" in message


def test_missing_files_are_not_checked_when_asked(cohort):
    root, _ = cohort
    lines = [HEADER, "P9\tno/ct\tno/pet\tno/label.nii.gz"]
    sheet = load_sheet(_write(root / "patients.tsv", lines), check_files=False)
    assert sheet.loc["P9", "ct"] == str((root / "no" / "ct").resolve())


def test_bad_split_value_is_refused(cohort):
    root, rows = cohort
    lines = [HEADER + "\tsplit", f"P001\t{rows['P001']}\tvalidation", f"p-2\t{rows['p-2']}\tval"]
    message = _error(_write(root / "patients.tsv", lines))
    assert "line 3" in message and "line 2" not in message
    assert "'val'" in message and "train, validation, test or empty" in message


def test_empty_path_is_refused(cohort):
    root, rows = cohort
    ct, pet, _ = rows["P001"].split("\t")
    message = _error(_write(root / "patients.tsv", [HEADER, f"P001\t{ct}\t{pet}\t"]))
    assert "line 2" in message
    assert "'label' is empty" in message


def test_a_ct_only_patient_has_neither_pet_nor_label(cohort):
    root, rows = cohort
    ct = rows["P001"].split("\t")[0]
    lines = [HEADER + "\tsplit", f"p-2\t{rows['p-2']}\ttest", f"NEW1\t{ct}\t\t\t"]
    sheet = load_sheet(_write(root / "patients.tsv", lines))
    assert ct_only_patients(sheet) == ["NEW1"]
    assert sheet.loc["NEW1", "pet"] == "" and sheet.loc["NEW1", "label"] == ""
    assert sheet.loc["NEW1", "ct"] == str((root / ct).resolve())


def test_pet_without_label_and_a_split_for_a_ct_only_patient_are_refused(cohort):
    root, rows = cohort
    ct, pet, label = rows["P001"].split("\t")
    lines = [HEADER + "\tsplit", f"P001\t{ct}\t{pet}\t\t", f"NEW1\t{ct}\t\t\ttrain"]
    message = _error(_write(root / "patients.tsv", lines))
    assert "line 2, patient P001: column 'label' is empty but 'pet' is not" in message
    assert "leave both empty (a CT-only patient" in message
    assert "line 3, patient NEW1: split 'train' needs PET and a label" in message


def test_all_problems_are_reported_at_once(cohort):
    root, rows = cohort
    lines = [
        HEADER + "\tsplit",
        f"P001\t{rows['P001']}\t",
        f"a/b\t{rows['p-2']}\t",
        f"case_3\t{rows['case_3']}\tmaybe",
    ]
    message = _error(_write(root / "patients.tsv", lines))
    assert "2 problem(s)" in message
    assert "line 3" in message
    assert "line 4" in message
    assert "line 2" not in message


def test_missing_sheet_is_refused(tmp_path):
    message = _error(tmp_path / "absent.tsv")
    assert "does not exist" in message


def test_line_numbers_count_comment_lines(cohort):
    # A comment line above the header shifts every row by one: the bad row is on line 4.
    root, rows = cohort
    lines = ["# cohort of 2026", HEADER, f"P001\t{rows['P001']}", f"x y\t{rows['p-2']}"]
    message = _error(_write(root / "patients.tsv", lines))
    assert "line 4" in message


def test_hash_in_a_path_is_not_a_comment(cohort):
    root, rows = cohort
    label = root / "data" / "P001" / "label#1.nii.gz"
    label.write_bytes(b"")
    ct, pet, _ = rows["P001"].split("\t")
    sheet_path = _write(root / "patients.tsv", [HEADER, f"P001\t{ct}\t{pet}\t{label}"])
    sheet = load_sheet(sheet_path)
    assert sheet.loc["P001", "label"] == str(label.resolve())


@pytest.mark.parametrize("good", ["P001", "a", "case_3", "p-2", "ABC-def_123"])
def test_check_patient_id_accepts_safe_ids(good):
    assert check_patient_id(good) is None


@pytest.mark.parametrize("bad", ["a/b", "..", ".", "x y", "a.b", "a\\b", "é", "a\n", "a\tb"])
def test_check_patient_id_refuses_unsafe_ids(bad):
    why = check_patient_id(bad)
    assert isinstance(why, str)
    assert "letters, digits" in why


def test_check_patient_id_refuses_empty():
    assert check_patient_id("") == "is empty"
