"""PatientDataError messages and the command line."""

import pandas as pd
import pytest

from abmseg import __version__
from abmseg.cli import build_parser, main
from abmseg.cohort.split import SplitSettings, assign_split
from abmseg.errors import PatientDataError


def test_patient_data_error_message_has_all_parts(tmp_path):
    path = tmp_path / "pet" / "1.dcm"
    error = PatientDataError("P12", path, "PET has no weight", "fill in the weight")
    message = str(error)
    assert message == f"patient P12 ({path}): PET has no weight. Fix: fill in the weight"
    assert error.patient == "P12"
    assert error.path == str(path)
    assert error.problem == "PET has no weight"
    assert error.fix == "fill in the weight"
    assert isinstance(error, Exception)


def test_patient_data_error_without_patient_or_path():
    assert str(PatientDataError(None, None, "bad", "redo")) == "input: bad. Fix: redo"
    assert PatientDataError(None, None, "bad", "redo").path is None


def _sheet(tmp_path, rows):
    lines = ["patient_id\tct\tpet\tlabel\tsplit"]
    for pid, split in rows:
        folder = tmp_path / "data" / pid
        folder.mkdir(parents=True)
        for name in ("ct", "pet", "label.nii.gz"):
            (folder / name).write_text("")
        lines.append(f"{pid}\tdata/{pid}/ct\tdata/{pid}/pet\tdata/{pid}/label.nii.gz\t{split}")
    sheet = tmp_path / "patients.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def test_cli_split_writes_the_split_file(tmp_path, capsys):
    rows = [(f"P{i:03d}", "") for i in range(12)] + [("P100", "test"), ("P101", "train")]
    sheet = _sheet(tmp_path, rows)
    out = tmp_path / "results" / "split.tsv"
    assert main(["split", str(sheet), "--out", str(out), "--set", "split.salt=s1"]) == 0
    table = pd.read_csv(out, sep="\t", dtype=str)
    assert list(table.columns) == ["patient_id", "subset"]
    assert list(table.patient_id) == [pid for pid, _ in rows]
    overrides = {"P100": "test", "P101": "train"}
    ids = [pid for pid, _ in rows]
    expected = assign_split(ids, 0.7, "s1", overrides, validation_fraction=0.15)
    assert dict(zip(table.patient_id, table.subset, strict=True)) == expected
    assert str(out) in capsys.readouterr().out


def test_cli_split_defaults_are_the_settings_defaults(tmp_path):
    """No default is re-declared as a flag: without --config the command uses SplitSettings()."""
    args = build_parser().parse_args(["split", "patients.tsv"])
    assert args.out == "split.tsv" and args.config is None and args.set == []
    rows = [(f"P{i:03d}", "") for i in range(20)]
    out = tmp_path / "split.tsv"
    assert main(["split", str(_sheet(tmp_path, rows)), "--out", str(out)]) == 0
    table = pd.read_csv(out, sep="\t", dtype=str)
    defaults = SplitSettings()
    expected = assign_split(
        [pid for pid, _ in rows],
        defaults.train_fraction,
        defaults.salt,
        validation_fraction=defaults.validation_fraction,
    )
    assert dict(zip(table.patient_id, table.subset, strict=True)) == expected
    assert "validation" in expected.values()  # the default holds patients out


def test_cli_refuses_an_unknown_setting_in_one_line(tmp_path, capsys):
    sheet = _sheet(tmp_path, [("P000", "")])
    assert main(["split", str(sheet), "--set", "split.sallt=x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("abmseg: error: config 'split' has unknown key(s) ['sallt']")
    assert "Traceback" not in err


def test_cli_version_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_cli_needs_a_command(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_cli_reports_patient_data_error_as_exit_1(tmp_path, monkeypatch, capsys):
    import abmseg.cohort.split as split_module

    def broken(*args, **kwargs):
        raise PatientDataError("P000", "x.tsv", "broken", "repair")

    monkeypatch.setattr(split_module, "write_split", broken)
    sheet = _sheet(tmp_path, [("P000", "")])
    assert main(["split", str(sheet), "--out", str(tmp_path / "s.tsv")]) == 1
    err = capsys.readouterr().err
    assert "abmseg: error: patient P000 (x.tsv): broken. Fix: repair" in err
