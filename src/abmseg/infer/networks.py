"""Load a trained model (the training's model.pt) as the networks inference needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from abmseg.errors import PatientDataError
from abmseg.infer.predict import InferenceNetworks
from abmseg.models.trained_model import (
    load_failure_reason,
    load_trained_model,
    read_trained_model,
)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_maker(path: str | Path) -> str | None:
    """The rule that writes a trained model at ``results/models/<variant>/stage<N>/model.pt``."""
    stage = Path(path).parent.name
    return f"train_{stage}" if stage in ("stage1", "stage2") else None


def _model_problem(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "the trained model does not exist"
    return f"cannot load this trained model ({load_failure_reason(exc)})"


def _model_error(
    path: str | Path, patient: str | None, made_by: str | None, exc: BaseException
) -> PatientDataError:
    made_by = made_by or model_maker(path)
    fix = (
        f"delete it and rerun the rule '{made_by}' that makes it"
        if made_by
        else "retrain the model or point to a valid model.pt"
    )
    return PatientDataError(patient, path, _model_problem(exc), fix)


def read_trained_model_checked(
    path: str | Path, patient: str | None = None, made_by: str | None = None
) -> dict[str, Any]:
    """The raw trained model (``read_trained_model``), or PatientDataError naming the file and
    its maker."""
    try:
        return read_trained_model(path)
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise  # the machine, not the file
    except Exception as exc:  # damaged bytes make the unpickler raise almost anything
        raise _model_error(path, patient, made_by, exc) from None


def load_networks(
    path: str | Path,
    threads: int = 1,
    patient: str | None = None,
    made_by: str | None = None,
) -> tuple[InferenceNetworks, torch.device]:
    """Networks in eval mode on the best device (CUDA when present, else CPU with ``threads``).

    A model.pt that does not load (truncated, not a model, weights that do not fit its networks)
    raises PatientDataError naming the file and the rule that makes it (``made_by``, by default
    read from the path: train_stage1 or train_stage2).
    """
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, threads))
    try:
        model = load_trained_model(path, device)
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise  # the device, not the file
    except Exception as exc:  # damaged bytes make the unpickler raise almost anything
        raise _model_error(path, patient, made_by, exc) from None
    networks = InferenceNetworks(
        mpfpsn=model["mpfpsn"],
        image_size=int(model["image_size"]),
        g_ct2pet=model.get("g_ct2pet"),
        diffusion=model.get("diffusion"),
    )
    return networks, device
