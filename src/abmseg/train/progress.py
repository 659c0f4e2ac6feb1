"""What a training run reports: losses.csv, losses.png, TensorBoard, status.json.

The progress line within an epoch is ``abmseg.progress.ProgressLine`` (shared with inference).

Everything is rewritten from the run's full history (kept in the checkpoint), so a resumed run
produces the same files as an uninterrupted one. TensorBoard is used only if
``torch.utils.tensorboard`` imports (it needs the optional ``tensorboard`` package).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abmseg.atomic import atomic_path, write_atomic, write_json
from abmseg.train.loss_glossary import loss_label

LEADING = ("epoch", "global_epoch", "stage", "lr")
TRAILING = ("slices", "distinct_slices", "ranks", "seconds", "slices_per_s", "validation_seconds")
log = logging.getLogger(__name__)


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """CSV header: fixed leading columns, loss terms in first-seen order, fixed trailing ones."""
    terms: list[str] = []
    for row in rows:
        terms.extend(k for k in row if k not in LEADING + TRAILING and k not in terms)
    return [*LEADING, *terms, *TRAILING]


def write_losses_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """One row per epoch (atomically replaced); terms a stage lacks are left empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    text = buffer.getvalue()
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def read_losses_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a losses.csv as strings (for tests and quick checks)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


GROUPS = (  # (panel title, term prefixes), one panel each; "total" is in every panel's title
    ("objective", ("total",)),
    ("segmentation", ("seg_", "val_seg_")),
    ("generators", ("gan_", "cycle_", "identity_", "gen_")),
    ("discriminators", ("d_", "disc_")),
    ("diffusion", ("diff_", "val_diff_")),
    ("sPET vs PET, validation", ("val_synth_",)),
    ("validation Dice", ("val_dice_",)),
)
LINEAR_GROUPS = ("validation Dice",)  # bounded scores, not losses: linear y in [0, 1]
VALIDATION_PREFIX = "val_"


def term_group(term: str) -> str:
    """Panel of a loss term (by prefix); unknown terms go to the objective panel."""
    for title, prefixes in GROUPS:
        if term == "total" and title == "objective":
            return title
        if term != "total" and term.startswith(prefixes):
            return title
    return "objective"


def plot_losses(path: str | Path, rows: Sequence[dict[str, Any]], title: str = "") -> None:
    """Loss terms over global epochs, one panel per network, log y (terms never > 0 skipped);
    legends in plain names (loss_glossary)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = [c for c in columns(rows) if c not in LEADING + TRAILING]
    panels: dict[str, list[str]] = {}
    for term in terms:
        panels.setdefault(term_group(term), []).append(term)
    order = [g for g, _ in GROUPS if g in panels]
    fig, axes = plt.subplots(
        1, max(len(order), 1), figsize=(3.6 * max(len(order), 1), 5.0), squeeze=False
    )
    x = [row["global_epoch"] for row in rows]
    colours: dict[str, str] = {}  # a validation term is drawn in its training term's colour
    for ax, group in zip(axes[0], order, strict=False):
        for term in panels[group]:
            values = [_number(row.get(term)) for row in rows]
            floor = -math.inf if group in LINEAR_GROUPS else 0.0
            ys = [v if v > floor else float("nan") for v in values]
            if all(math.isnan(v) for v in ys):
                continue
            dashed = term.startswith(VALIDATION_PREFIX) and group not in LINEAR_GROUPS
            style = "--" if dashed else "-"
            marker = "o" if len(rows) < 30 else None
            colour = colours.get(term.removeprefix(VALIDATION_PREFIX)) if dashed else None
            (line,) = ax.plot(
                x, ys, style, marker=marker, markersize=3, label=loss_label(term), color=colour
            )
            colours[term] = line.get_color()
        if group in LINEAR_GROUPS:
            ax.set_ylim(0.0, 1.0)
        else:
            ax.set_yscale("log")
        ax.set_title(group, fontsize=10)
        ax.set_xlabel("global epoch")
        ax.grid(True, which="both", alpha=0.3)
        # below the panel: plain names are long, and inside they would hide the curves
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    axes[0][0].set_ylabel("epoch mean (dashed: validation patients)")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _number(value: Any) -> float:
    """A CSV or history cell as a float; NaN for blanks and text (a resumed run's rows are
    numbers, rows read back from a CSV are strings)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class TensorBoardLog:
    """Scalars per epoch into ``folder`` when TensorBoard is installed; a no-op otherwise."""

    def __init__(self, folder: str | Path, enabled: bool = True) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as exc:  # ImportError without tensorboard; anything else is not fatal
            log.debug("TensorBoard unavailable (%s); losses go to losses.csv only", exc)
            return
        self.writer = SummaryWriter(str(folder))

    def add_row(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(row["global_epoch"])
        for key, value in row.items():
            if key not in ("epoch", "global_epoch", "stage") and isinstance(value, float | int):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_status(path: str | Path, **fields: Any) -> None:
    """``status.json``: where the run is (stage, epoch, phase), for monitoring and tests."""
    write_json(path, {**fields, "time": time.time()})


__all__ = [
    "GROUPS",
    "TensorBoardLog",
    "columns",
    "plot_losses",
    "read_losses_csv",
    "term_group",
    "write_losses_csv",
    "write_status",
]
