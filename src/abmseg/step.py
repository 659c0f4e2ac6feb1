"""Run one pipeline step from a rule script: log to the rule's log, fail with a readable message,
and leave a provenance record of every output when the step succeeds.

A UserError (bad patient data, a setting that cannot be used) ends the job with one line that
names the problem and the fix (in the log and on stderr) instead of a library stack trace;
Snakemake then removes the job's outputs and, with --keep-going, carries on with the other
patients. A failed step writes no record, so no result is ever described by a record of a job
that did not finish.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from abmseg.errors import UserError
from abmseg.provenance.record import FileSource, JobRecorder

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines quote DICOM identifiers: highdicom names the SOP Instance UID of the
# CT slice it copies patient and study attributes from. Their warnings still come through.
IDENTIFYING_LOGGERS = ("highdicom",)


def quiet_identifying_loggers() -> None:
    """Keep the INFO lines of IDENTIFYING_LOGGERS out of logs and the console."""
    for name in IDENTIFYING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _configure(log_path: str | Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)
    quiet_identifying_loggers()


@contextmanager
def rule_step(
    job: Any,
    config_keys: Iterable[str] = (),
    extra_outputs: FileSource = None,
    extra_inputs: FileSource = None,
) -> Iterator[logging.Logger]:
    """Context for a rule script's body (``job`` is the script's ``snakemake`` object); turns bad
    input into exit status 1 and one clear line, and records provenance on success.

    ``config_keys``: dotted config keys the script reads outside params ('training.workers').
    ``extra_outputs`` / ``extra_inputs``: undeclared files the job writes / reads, as a glob
    pattern or a callable returning paths; they get hashed and recorded like declared ones.
    """
    rule = str(job.rule)
    logs = list(job.log) if getattr(job, "log", None) else []
    patient = job.wildcards.get("patient") if getattr(job, "wildcards", None) else None
    _configure(logs[0] if logs else None)
    logger = logging.getLogger(f"abmseg.{rule}")
    logger.info("start rule %s%s", rule, f" for patient {patient}" if patient else "")
    recorder = JobRecorder(job, config_keys, extra_outputs, extra_inputs)
    recorder.start()
    try:
        yield logger
    except UserError as error:
        logger.error("rule %s failed: %s", rule, error)
        raise SystemExit(1) from None
    records = recorder.finish()
    logger.info(
        "provenance: %d record(s), %.1f MB hashed in %.3f s",
        len(records),
        recorder.hashed_bytes / 1e6,
        recorder.seconds,
    )
    logger.info("done rule %s", rule)
