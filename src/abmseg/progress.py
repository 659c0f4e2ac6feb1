"""A progress line for long loops (training epochs, inference over slices), on stderr."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


class ProgressLine:
    """Progress within an epoch on stderr: step i/n, slices per second, running mean loss.

    On a terminal the line is redrawn in place (at most every ``interval`` seconds); in a log
    file (Snakemake, SLURM) it is printed about every 10 % of the epoch so logs stay short.
    """

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO | None = None,
        interval: float = 0.5,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.last_print = -math.inf
        self.next_fraction = 0.1

    def due(self, step: int) -> bool:
        """Whether ``update(step, ...)`` would print (so callers fetch the loss only then)."""
        if not self.enabled:
            return False
        if step >= self.total:
            return True
        if self.tty:
            return time.perf_counter() - self.last_print >= self.interval
        return step / self.total >= self.next_fraction

    def text(self, step: int, slices: int, loss: float) -> str:
        seconds = time.perf_counter() - self.start
        rate = slices / seconds if seconds > 0 else 0.0
        return (
            f"{self.label} step {step}/{self.total} {rate:.1f} slices/s "
            f"loss {loss:.4g} {seconds:.0f}s"
        )

    def update(self, step: int, slices: int, loss: float) -> None:
        if not self.due(step):
            return
        self.last_print = time.perf_counter()
        while step / self.total >= self.next_fraction:
            self.next_fraction += 0.1
        line = self.text(step, slices, loss)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Clear a redrawn terminal line, so the epoch summary (logged) takes its place."""
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
