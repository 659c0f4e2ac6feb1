"""Atomic writes: the target appears complete or not at all."""

import json
import os
import stat

import pytest

from abmseg.atomic import atomic_path, write_atomic, write_json


class BoomError(RuntimeError):
    pass


def test_write_json_writes_valid_sorted_json(tmp_path):
    target = tmp_path / "deep" / "er" / "qc.json"
    data = {"b": [1, 2.5, None], "a": {"z": "é", "y": True}}
    write_json(target, data)
    text = target.read_text()
    assert json.loads(text) == data
    assert text.index('"a"') < text.index('"b"')
    assert text.endswith("\n")
    assert os.listdir(target.parent) == ["qc.json"]


def test_temporary_path_sits_beside_target_and_keeps_suffixes(tmp_path):
    target = tmp_path / "ct.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith(".nii.gz")
        assert tmp != target
        assert not target.exists()
        tmp.write_bytes(b"payload")
    assert target.read_bytes() == b"payload"
    assert os.listdir(tmp_path) == ["ct.nii.gz"]


def test_failed_writer_leaves_no_target_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(BoomError), atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise BoomError("killed mid-write")
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_failed_write_atomic_leaves_nothing(tmp_path):
    target = tmp_path / "split.tsv"

    def writer(tmp):
        tmp.write_text("patient_id\tsubset\n")
        raise BoomError("disk full")

    with pytest.raises(BoomError):
        write_atomic(target, writer)
    assert os.listdir(tmp_path) == []


def test_existing_target_is_replaced_only_on_success(tmp_path):
    target = tmp_path / "meta.json"
    write_json(target, {"version": 1})

    def failing(tmp):
        tmp.write_text("garbage")
        raise BoomError("writer failed")

    with pytest.raises(BoomError):
        write_atomic(target, failing)
    assert json.loads(target.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["meta.json"]

    write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 2}
    assert os.listdir(tmp_path) == ["meta.json"]


def test_writer_that_writes_nothing_fails_cleanly(tmp_path):
    # mkstemp creates the temporary file; a writer that deletes it makes the rename fail.
    target = tmp_path / "x.json"

    def deleting(tmp):
        tmp.unlink()

    with pytest.raises(FileNotFoundError):
        write_atomic(target, deleting)
    assert os.listdir(tmp_path) == []


def test_written_file_has_ordinary_permissions(tmp_path):
    # A plain open() would create the file with 0o666 & ~umask; the atomic write should too,
    # or results on a shared cluster become unreadable to the group.
    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "atomic.json", {})
        (tmp_path / "plain.json").write_text("{}\n")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "atomic.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o644


def test_a_staged_folder_replaces_results_only_when_complete(tmp_path):
    from abmseg.atomic import staged_folder

    out = tmp_path / "P1"
    out.mkdir()
    (out / "qa.json").write_text("old")
    (out / "abm_seg.dcm").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(out, stale=("abm_seg.dcm",)) as staging:
        (staging / "qa.json").write_text("new")
        raise RuntimeError("the QA picture failed")
    assert (out / "qa.json").read_text() == "old"  # nothing half-new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P1"]  # the staging folder is gone
    with staged_folder(out, stale=("abm_seg.dcm",)) as staging:
        (staging / "qa.json").write_text("new")
    assert (out / "qa.json").read_text() == "new"
    assert not (out / "abm_seg.dcm").exists()  # not written this time: not left stale
