"""Run one pipeline step from a rule script: log to the rule's log, fail with a readable message.

A PatientDataError ends the job with one line that names the patient, the file and the fix
(in the log and on stderr) instead of a library stack trace; Snakemake then removes the job's
outputs and, with --keep-going, carries on with the other patients.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from abmseg.errors import PatientDataError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _configure(log_path: str | Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)


@contextmanager
def rule_step(rule: str, log_path: str | Path | None, patient: str | None = None) -> Iterator:
    """Context for a rule script's body; turns bad input into exit status 1 and one clear line."""
    _configure(log_path)
    logger = logging.getLogger(f"abmseg.{rule}")
    logger.info("start rule %s%s", rule, f" for patient {patient}" if patient else "")
    try:
        yield logger
    except PatientDataError as error:
        logger.error("rule %s failed: %s", rule, error)
        raise SystemExit(1) from None
    logger.info("done rule %s", rule)
