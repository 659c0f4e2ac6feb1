"""Atomic, resumable checkpoints: round trip, fallback on damage, kill safety, exact resume."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from abmseg.train import checkpoint as ckpt
from abmseg.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def make_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    return model, optimizer


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    """Data and noise come from all three global RNGs, so a resume must restore each of them."""
    model.train()
    for _ in range(steps):
        x = torch.randn(5, 6) * float(np.random.uniform(0.5, 1.5)) + random.random()
        target = torch.randn(5, 2)
        loss = torch.nn.functional.mse_loss(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def state_of(model, optimizer, step: int) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": capture_rng_state(),
    }


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_round_trip_model_and_adam_state(tmp_path):
    seed_all(0)
    model, optimizer = make_model()
    train_steps(model, optimizer, 2)
    save_checkpoint(tmp_path / "last.pt", state_of(model, optimizer, 2))

    loaded = load_latest_checkpoint(tmp_path)
    assert loaded["step"] == 2
    fresh, fresh_opt = make_model()
    fresh.load_state_dict(loaded["model"])
    fresh_opt.load_state_dict(loaded["optimizer"])
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(
        optimizer.state_dict()["state"].values(),
        fresh_opt.state_dict()["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
        assert torch.equal(a["step"], b["step"])


def test_second_save_keeps_previous(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {"step": 1})
    save_checkpoint(tmp_path / "last.pt", {"step": 2})
    save_checkpoint(tmp_path / "last.pt", {"step": 3})
    assert torch.load(tmp_path / "last.pt")["step"] == 3
    assert torch.load(tmp_path / "previous.pt")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]


def test_no_checkpoint_gives_none(tmp_path):
    assert load_latest_checkpoint(tmp_path) is None
    assert load_latest_checkpoint(tmp_path / "missing") is None


def test_truncated_last_falls_back_to_previous(tmp_path, caplog):
    last = tmp_path / "last.pt"
    save_checkpoint(last, {"step": 1, "weights": torch.arange(1000.0)})
    save_checkpoint(last, {"step": 2, "weights": torch.arange(1000.0) * 2})
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])

    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        loaded = load_latest_checkpoint(tmp_path)
    assert loaded["step"] == 1
    assert "last.pt" in caplog.text and "previous.pt" in caplog.text


def test_all_damaged_raises_naming_the_files(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint at all")
    (tmp_path / "previous.pt").write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError) as info:
        load_latest_checkpoint(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "last.pt") in message
    assert str(tmp_path / "previous.pt") in message
    assert "Fix:" in message


@pytest.mark.parametrize("fail_on_call", [1, 2])
def test_kill_during_save_keeps_old_last(tmp_path, monkeypatch, fail_on_call):
    """A failure at either rename leaves the old last.pt intact and no temporary files."""
    last = tmp_path / "last.pt"
    save_checkpoint(last, {"step": 1})
    real_replace = os.replace
    calls = []

    def dying_replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_on_call:
            raise KeyboardInterrupt("killed")  # not an Exception: nothing may swallow it
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(last, {"step": 2})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)

    assert torch.load(last)["step"] == 1
    assert {p.name for p in tmp_path.iterdir()} <= {"last.pt", "previous.pt"}
    assert load_latest_checkpoint(tmp_path)["step"] == 1


def test_stale_temp_files_are_cleaned_by_next_save(tmp_path):
    stale = tmp_path / f"{ckpt.TEMP_PREFIX}abc{ckpt.TEMP_SUFFIX}"
    stale.write_bytes(b"half")
    save_checkpoint(tmp_path / "last.pt", {"step": 1})
    assert not stale.exists()


def test_rng_state_round_trip_through_a_file(tmp_path):
    seed_all(3)
    save_checkpoint(tmp_path / "last.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    seed_all(99)
    restore_rng_state(load_latest_checkpoint(tmp_path)["rng"])
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert expected[:3] == got[:3]
    assert torch.equal(expected[3], got[3])


def test_resume_is_bit_for_bit(tmp_path: Path):
    seed_all(7)
    straight, straight_opt = make_model()
    train_steps(straight, straight_opt, 6)

    seed_all(7)
    model, optimizer = make_model()
    train_steps(model, optimizer, 3)
    save_checkpoint(tmp_path / "last.pt", state_of(model, optimizer, 3))
    del model, optimizer
    seed_all(12345)  # a fresh process would start from unrelated RNG states

    resumed, resumed_opt = make_model()
    state = load_latest_checkpoint(tmp_path)
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["optimizer"])
    restore_rng_state(state["rng"])
    train_steps(resumed, resumed_opt, 3)

    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_untrusted_objects_are_not_mistaken_for_damage(tmp_path):
    torch.save({"path": Path("x")}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_latest_checkpoint(tmp_path)
    assert load_latest_checkpoint(tmp_path, weights_only=False)["path"] == Path("x")
