"""Content digests of files (and, as a guard, folders): the identity a record stores.

SHA-256 in 1 MiB chunks, so a multi-GB volume never has to fit in memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size


def _folder_digest(folder: Path) -> tuple[str, int]:
    """One digest for a folder: its sorted relative file paths with each file's digest."""
    digest = hashlib.sha256()
    total = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
        total += path.stat().st_size
    return digest.hexdigest(), total


def digest(path: str | Path) -> dict[str, Any]:
    """``{path, size, sha256}`` of a file, or of a folder (``directory: true``, summed size).

    ``path`` is kept exactly as given: records store paths as Snakemake named them.
    """
    target = Path(path)
    if target.is_dir():
        sha, size = _folder_digest(target)
        return {"path": str(path), "size": size, "sha256": sha, "directory": True}
    return {"path": str(path), "size": file_size(target), "sha256": sha256_file(target)}


def current_digest(path: Path, directory: bool = False) -> tuple[str, int] | None:
    """(sha256, size) of what is at ``path`` now, or None when nothing is there."""
    if directory:
        return _folder_digest(path) if path.is_dir() else None
    if not path.is_file():
        return None
    return sha256_file(path), file_size(path)
