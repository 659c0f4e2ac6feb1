"""Atomic, resumable training checkpoints: a killed job never loses the last good state.

File scheme: one folder per training run holds ``last.pt`` (newest) and ``previous.pt`` (the one
before). A save writes the new state to a temporary file beside them, fsyncs it, hard-links the
current ``last.pt`` to ``previous.pt`` and only then renames the temporary file onto ``last.pt``.
Every rename is atomic, so at any instant ``last.pt`` is a complete checkpoint (old or new) and
``previous.pt`` a complete older one; a crash leaves at worst a stray temporary file, which the next
save removes. Two generations, because a file can also be damaged after it was written (full disk
on a copy, a bad node): loading falls back to ``previous.pt`` and costs one epoch, not the run.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from abmseg.errors import PatientDataError
from abmseg.models.trained_model import load_failure_reason

LAST = "last.pt"
PREVIOUS = "previous.pt"
TEMP_PREFIX = ".ckpt-"
TEMP_SUFFIX = ".part"

log = logging.getLogger(__name__)


class CheckpointError(PatientDataError):
    """No checkpoint in a folder could be loaded, although some exist.

    A PatientDataError (with no patient: checkpoints belong to a whole training run), so a rule
    job that meets one ends with one line naming the files and the fix, not a stack trace.
    """

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        super().__init__(None, path, problem, fix)


def _fsync_dir(folder: Path) -> None:
    """Persist renames in ``folder`` (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_file(folder: Path) -> Path:
    """A new empty file beside the checkpoints, with the mode an ordinary write would give.

    (mkstemp makes files 0600; a shared cluster group should still be able to read checkpoints.)
    """
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def _remove_stale_temps(folder: Path) -> None:
    """Drop temporary files a killed save left behind (one writer per folder is assumed)."""
    for stale in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)


def _second_name(last: Path, folder: Path) -> Path:
    """Make a temporary second name for ``last`` (hard link, or a copy where links fail)."""
    tmp = _temp_file(folder)
    tmp.unlink()
    try:
        os.link(last, tmp)
    except OSError:  # file systems without hard links
        shutil.copy2(last, tmp)
    return tmp


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` (normally ``<run folder>/last.pt``) atomically.

    The checkpoint that ``path`` held before is kept as ``previous.pt`` in the same folder. Returns
    ``path``. Everything is written with ``torch.save``; keep ``state`` to tensors, numbers,
    strings and containers of them so it loads with ``weights_only=True``. One writer per folder
    (rank 0 under distributed training).
    """
    path = Path(path)
    if path.name == PREVIOUS:
        raise ValueError(f"{path}: '{PREVIOUS}' is reserved for the kept older checkpoint")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(folder)
    previous = folder / PREVIOUS
    new_tmp = _temp_file(folder)
    old_tmp: Path | None = None
    try:
        with open(new_tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            old_tmp = _second_name(path, folder)
            os.replace(old_tmp, previous)
            old_tmp = None
        os.replace(new_tmp, path)
        new_tmp = None
        _fsync_dir(folder)
    finally:
        for leftover in (new_tmp, old_tmp):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
    return path


def checkpoint_candidates(folder: str | Path) -> list[Path]:
    """Existing checkpoint files of a run folder, newest first."""
    folder = Path(folder)
    return [folder / name for name in (LAST, PREVIOUS) if (folder / name).is_file()]


def load_latest_checkpoint(
    folder: str | Path, map_location: str | torch.device = "cpu", weights_only: bool = True
) -> dict[str, Any] | None:
    """The newest checkpoint of ``folder`` that loads; ``None`` when there is none.

    A damaged ``last.pt`` (truncated, garbage) is reported with a warning and ``previous.pt`` is
    used instead. Raises ``CheckpointError`` when every checkpoint is damaged, or when one holds
    objects that ``weights_only`` loading refuses (a programming error, not damage).
    """
    candidates = checkpoint_candidates(folder)
    problems: list[str] = []
    for candidate in candidates:
        try:
            state = torch.load(candidate, map_location=map_location, weights_only=weights_only)
        except pickle.UnpicklingError as exc:
            if "Unsupported global" in str(exc):
                raise CheckpointError(
                    candidate,
                    f"holds objects that weights_only loading refuses ({load_failure_reason(exc)})",
                    "store only tensors, numbers, strings and containers in the checkpoint state, "
                    "or load with weights_only=False if the file is trusted",
                ) from exc
            problems.append(f"{candidate} ({load_failure_reason(exc)})")
        except Exception as exc:  # damaged bytes make the unpickler raise almost anything
            problems.append(f"{candidate} ({load_failure_reason(exc)})")
        else:
            if not isinstance(state, dict):
                problems.append(f"{candidate} (holds a {type(state).__name__}, not a dict)")
                continue
            if problems:
                log.warning(
                    "checkpoint %s is damaged and was skipped; resuming from %s",
                    problems[-1],
                    candidate,
                )
            return state
    if not candidates:
        return None
    raise CheckpointError(
        folder,
        "no loadable checkpoint: " + "; ".join(problems),
        "restore a good copy of last.pt, or delete these files to retrain from scratch",
    )


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy (global) and torch (CPU, and CUDA when present) RNG states.

    Stored as plain lists, ints and byte tensors so the checkpoint loads with
    ``weights_only=True``.
    """
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": numpy_state["state"]["key"].astype(np.int64).tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the RNG states of ``capture_rng_state`` (CUDA only where both runs had it)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": np.asarray(npy["key"], dtype=np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            log.warning(
                "checkpoint has CUDA RNG states for %d devices, this run sees %d; restoring the "
                "first %d (GPU randomness will not repeat exactly)",
                len(cuda),
                torch.cuda.device_count(),
                min(len(cuda), torch.cuda.device_count()),
            )
        for device, device_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state.cpu(), device)
