"""Search files for patient identifiers, also where a plain text search does not look: inside
gzip (NIfTI headers' descrip/aux_file), zip members (torch checkpoints), PNG text chunks and
base64 attachments of HTML reports."""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from abmseg.privacy.identifiers import Identifier

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(rb"data:[\w/+.-]+;base64,([A-Za-z0-9+/=]+)")
BOUNDARIES = {
    "alpha": (rb"(?<![A-Za-z])", rb"(?![A-Za-z])"),
    "alnum": (rb"(?<![A-Za-z0-9])", rb"(?![A-Za-z0-9])"),
    "digits": (rb"(?<![0-9])", rb"(?![0-9])"),
    "uid": (rb"(?<![0-9.])", rb"(?![0-9.])"),
}


@dataclass(frozen=True)
class Finding:
    path: Path
    layer: str
    identifier: Identifier

    def line(self) -> str:
        """The report line; it masks the value so the report itself leaks nothing."""
        return f"{self.path} [{self.layer}]: {self.identifier.kind} {self.identifier.masked()}"


class IdentifierMatcher:
    """One case-insensitive regular expression per boundary rule over all identifiers."""

    def __init__(self, identifiers: Iterable[Identifier]) -> None:
        self.by_value: dict[bytes, Identifier] = {}
        grouped: dict[str, list[bytes]] = {}
        for identifier in identifiers:
            value = identifier.value.encode("utf-8", "replace")
            self.by_value[value.lower()] = identifier
            grouped.setdefault(identifier.boundary, []).append(value)
        self.patterns = []
        for boundary, values in grouped.items():
            before, after = BOUNDARIES[boundary]
            alternatives = b"|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
            self.patterns.append(re.compile(before + b"(?:" + alternatives + b")" + after, re.I))

    def find(self, data: bytes) -> set[Identifier]:
        return {
            self.by_value[match.group(0).lower()]
            for pattern in self.patterns
            for match in pattern.finditer(data)
        }


def _png_text(data: bytes) -> Iterator[bytes]:
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"tEXt":
            yield body
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\x00")
            yield key + b" " + zlib.decompress(rest[1:])
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\x00")
            compressed, text = rest[0], rest[2:].split(b"\x00", 2)[-1]
            yield key + b" " + (zlib.decompress(text) if compressed else text)
        offset += 12 + length


def layers(path: Path) -> Iterator[tuple[str, bytes]]:
    """The file's bytes and every decoded layer inside them."""
    data = path.read_bytes()
    yield "bytes", data
    if data[:2] == b"\x1f\x8b":
        try:
            unpacked = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            unpacked = b""  # a damaged archive: its readable bytes were searched above
        yield "gzip", unpacked
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for name in archive.namelist():
                    yield f"zip:{name}", name.encode() + b"\n" + archive.read(name)
        except (zipfile.BadZipFile, OSError, zlib.error):
            pass
    if data.startswith(PNG_SIGNATURE):
        for k, text in enumerate(_png_text(data)):
            yield f"png-text:{k}", text
    if path.suffix.lower() in {".html", ".htm"}:
        for k, match in enumerate(DATA_URI.finditer(data)):
            try:
                yield f"base64:{k}", base64.b64decode(match.group(1))
            except (binascii.Error, ValueError):
                continue


def files_under(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Every plain file under ``paths``, except those inside an ``exclude`` folder (or equal to an
    ``exclude`` file)."""
    skipped = [Path(p).resolve() for p in exclude]

    def kept(path: Path) -> bool:
        resolved = path.resolve()
        return not any(resolved == s or s in resolved.parents for s in skipped)

    for path in map(Path, paths):
        if path.is_file():
            if kept(path):
                yield path
        elif path.is_dir():
            yield from (
                p for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink() and kept(p)
            )


def scan(
    paths: Iterable[str | Path],
    identifiers: Iterable[Identifier],
    exclude: Iterable[str | Path] = (),
) -> tuple[list[Finding], int]:
    """Findings in every file under ``paths`` outside ``exclude``, and how many files were read.

    ``exclude`` is for outputs that carry identity on purpose (results/dicom/: DICOM objects a
    planning system must match to its patient)."""
    matcher = IdentifierMatcher(identifiers)
    findings: list[Finding] = []
    count = 0
    for path in files_under(paths, exclude):
        count += 1
        for layer, data in layers(path):
            findings.extend(Finding(path, layer, found) for found in matcher.find(data))
    return findings, count
