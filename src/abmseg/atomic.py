"""Atomic file writes: a killed job must never leave a file that looks complete."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    The temporary name keeps the target's suffixes (``.nii.gz``) so writers that pick a format
    from the extension still work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes files 0600; give the result the mode an ordinary write would have
        # (umask applied), so results stay readable by the group on a shared cluster.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(target: str | Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)


def write_json(target: str | Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomic(target, lambda tmp: tmp.write_text(text))


@contextmanager
def staged_folder(out: str | Path, stale: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a hidden folder beside ``out``; only when the block succeeds are its files moved
    into ``out`` (created if needed) and the names in ``stale`` that it did not write removed
    from ``out``. A failure leaves ``out`` as it was: no mix of new and old results."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        staging = Path(tmp)
        yield staging
        out.mkdir(exist_ok=True)
        for name in stale:
            if not (staging / name).exists():
                (out / name).unlink(missing_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
