"""Checkpoints of an older run (other settings or patients) are deleted, never resumed."""

from __future__ import annotations

from abmseg.train.run_key import KEY_FILE, claim_checkpoints, file_sha256, run_key


def settings(**training):
    return {"seed": 1, "model_preset": "tiny", "training": {"lr": 1e-4, **training}}


def test_key_depends_on_everything_that_defines_the_run(tmp_path):
    volume = tmp_path / "ct.nii.gz"
    volume.write_bytes(b"v1")
    base = run_key("full", 1, settings(), ["A", "B"], [volume])
    assert base == run_key("full", 1, settings(), ["B", "A"], [volume])
    assert base != run_key("full", 1, settings(lr=1e-3), ["A", "B"], [volume])
    assert base != run_key("full", 1, settings(), ["A", "B", "C"], [volume])
    assert base != run_key("full", 2, settings(), ["A", "B"], [volume])
    assert base != run_key("ct_only", 1, settings(), ["A", "B"], [volume])
    volume.write_bytes(b"v2")  # a corrected label or re-exported series: new data, new run
    assert base != run_key("full", 1, settings(), ["A", "B"], [volume])


def test_key_ignores_what_a_resume_may_change(tmp_path):
    base = run_key("full", 1, settings(), ["A"])
    assert base == run_key("full", 1, settings(workers=8, epochs_stage1=200), ["A"])


def test_same_run_keeps_its_checkpoints(tmp_path):
    folder = tmp_path / "checkpoints"
    assert claim_checkpoints(folder, "k1") is False
    (folder / "last.pt").write_bytes(b"x")
    assert claim_checkpoints(folder, "k1") is False
    assert (folder / "last.pt").exists()


def test_checkpoints_of_another_run_are_deleted(tmp_path):
    folder = tmp_path / "checkpoints"
    claim_checkpoints(folder, "k1")
    (folder / "last.pt").write_bytes(b"old")
    assert claim_checkpoints(folder, "k2") is True
    assert not (folder / "last.pt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoints"]
    assert (folder / KEY_FILE).read_text().strip() == "k2"


def test_unstamped_folder_is_replaced(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.pt").write_bytes(b"?")
    assert claim_checkpoints(folder, "k") is True
    assert not (folder / "last.pt").exists()


def test_file_sha256(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
