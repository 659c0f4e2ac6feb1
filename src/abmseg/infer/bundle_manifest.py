"""A model bundle's manifest (bundle.json) and its checks, without torch.

The workflow verifies a configured bundle while it builds its DAG (config ``model_bundle``):
format, format version, manifest digest and every weight file's size and SHA-256. None of that
needs a network, so it lives here, apart from abmseg.infer.model_bundle (which builds and loads
the networks and re-exports these names): importing torch would cost every Snakemake start,
twice per job under SLURM, seconds for nothing.

Versions: a bundle records its own format version, "MAJOR.MINOR" (``FORMAT_VERSION``; abmseg
0.1.0 wrote the integer 1, read as "1.0"). A bundle loads in any abmseg that reads its MAJOR,
whatever its minor: a minor version only adds optional keys, which an older reader ignores, and
never changes what an existing key means (such a change, or one to how ``manifest_sha256`` is
computed, is a new MAJOR). A bundle of another MAJOR is refused, naming both versions. The
``abmseg_version`` that wrote the bundle is recorded for information only; it is not compared
with the running abmseg (CHANGELOG.md states the policy).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import abmseg
from abmseg.errors import ConfigError, PatientDataError
from abmseg.provenance.hashing import sha256_file
from abmseg.variants import get_variant

MANIFEST = "bundle.json"
BUNDLE_FORMAT = "abmseg-model-bundle"
# The bundle format this abmseg writes, "MAJOR.MINOR"; it reads every bundle of the same MAJOR.
FORMAT_VERSION = "1.0"
FORMAT_MAJOR = int(FORMAT_VERSION.split(".")[0])
WEIGHTS = "weights"
# Inference network -> the key of its preset in the manifest's ``presets``.
PRESET_KEYS = {"mpfpsn": "mpfpsn", "g_ct2pet": "cyclegan", "diffusion": "diffusion"}

FIX_COPY = "copy the bundle again from its source, or rerun the training and the bundle rule"
FIX_POINT = (
    "point to a folder written by the pipeline's bundle rule (results/bundles/<variant>), "
    "or rerun that rule"
)
REQUIRED = (
    "abmseg_version", "variant", "stage", "model_preset", "image_size", "presets", "networks",
    "preprocessing", "sampler", "regions", "training", "provenance", "manifest_sha256",
)  # fmt: skip


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON without its own ``manifest_sha256`` field: an
    edited bundle.json (settings, regions, recorded weight hashes) no longer matches it.

    Every other key is covered, the ones this abmseg does not know included (a newer minor
    version's optional keys), and the manifest is hashed as read, before any key is interpreted
    (an old bundle's integer ``format_version`` included), so a bundle verifies in every reader
    of its major version. Changing this definition is a new major format version."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_format_version(value: Any) -> tuple[int, int] | None:
    """A manifest's ``format_version`` as (major, minor): "MAJOR.MINOR", or an integer N read as
    N.0 (abmseg 0.1.0 wrote 1); None when it is neither."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, 0
    if isinstance(value, str):
        match = re.fullmatch(r"(\d+)\.(\d+)", value)
        if match:
            return int(match[1]), int(match[2])
    return None


def locate_bundle(folder: str | Path) -> tuple[Path, Path]:
    """(bundle folder, its bundle.json) from either of the two."""
    path = Path(folder)
    if path.name == MANIFEST and not path.is_dir():
        return path.parent, path
    return path, path / MANIFEST


def check_format_version(manifest: dict, refuse: Callable[..., PatientDataError]) -> None:
    """Refuse a bundle whose format MAJOR is not this abmseg's (``refuse(problem, fix)`` builds
    the error); any minor of the same MAJOR passes, newer ones included."""
    value, running = manifest.get("format_version"), abmseg.__version__
    reads = f"abmseg {running} reads bundle format {FORMAT_MAJOR}.x"
    found = parse_format_version(value)
    if found is None:
        raise refuse(f"bundle format version {value!r} is not MAJOR.MINOR; {reads}")
    if found[0] == FORMAT_MAJOR:
        return
    writer = manifest.get("abmseg_version")
    written = f"abmseg {writer}" if isinstance(writer, str) and writer else "an unknown abmseg"
    raise refuse(
        f"bundle format version {found[0]}.{found[1]} (written by {written}); {reads}",
        f"install an abmseg that reads bundle format {found[0]}.x (CHANGELOG.md names them), "
        f"or retrain the model with abmseg {running} and bundle it again",
    )


def read_manifest(root: Path, manifest_path: Path, patient: str | None) -> dict:
    """The manifest after the checks that need no weight file (format and its version, keys,
    digest, variant). Keys this abmseg does not know (a newer minor version's) are ignored."""

    def refuse(problem: str, fix: str = FIX_COPY) -> PatientDataError:
        return PatientDataError(patient, manifest_path, problem, fix)

    if not manifest_path.is_file():
        if (root / WEIGHTS).is_dir():
            raise refuse(
                "not a model bundle: no bundle.json, though weights/ is there: an unfinished "
                "bundle (writing stopped before its manifest)",
                "rerun the pipeline's bundle rule to write it again",
            )
        raise refuse("not a model bundle: no bundle.json", FIX_POINT)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(f"bundle.json is not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise refuse(
            f"bundle.json is not an {BUNDLE_FORMAT} manifest (format {found!r})", FIX_POINT
        )
    check_format_version(manifest, refuse)
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise refuse(f"bundle.json lacks the key(s) {', '.join(missing)}")
    if manifest["manifest_sha256"] != manifest_digest(manifest):
        raise refuse(
            "bundle.json does not match its own manifest_sha256: it was edited after it was "
            "written (settings, regions or recorded weight hashes may no longer be the trained "
            "model's)"
        )
    try:
        spec = get_variant(manifest["variant"])
    except ValueError as exc:
        fix = "use a bundle of a known variant, or the abmseg that wrote it"
        raise refuse(str(exc), fix) from None
    expected = ["mpfpsn"]  # the networks variant_presets gives this variant and stage
    if spec.uses_cyclegan:
        expected.append("g_ct2pet")
    if spec.uses_diffusion and manifest["stage"] == 2:
        expected.append("diffusion")
    networks, presets = manifest["networks"], manifest["presets"]
    if not isinstance(presets, dict):
        raise refuse(f"bundle.json's presets are not a table ({type(presets).__name__})")
    if not isinstance(networks, dict) or sorted(networks) != sorted(expected):
        found = sorted(networks) if isinstance(networks, dict) else networks
        raise refuse(
            f"bundle.json lists the networks {found}; variant {manifest['variant']} stage "
            f"{manifest['stage']} uses {sorted(expected)}"
        )
    lacking = [n for n in networks if not isinstance(presets.get(PRESET_KEYS[n]), dict)]
    if lacking:
        raise refuse(f"bundle.json has no preset for the network(s) {', '.join(lacking)}")
    return manifest


def weight_file(root: Path, name: str, entry: Any, patient: str | None) -> Path:
    """The path of one network's weights, refused when it leaves the folder or is missing."""

    def refuse(problem: str, where: Path = root / MANIFEST) -> PatientDataError:
        return PatientDataError(patient, where, problem, FIX_COPY)

    if not isinstance(entry, dict) or not {"file", "sha256", "bytes"} <= set(entry):
        raise refuse(f"network {name} lacks its file, sha256 or bytes")
    relative = PurePosixPath(str(entry["file"]))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise refuse(f"network {name}'s file {str(relative)!r} lies outside the bundle folder")
    if not (root / relative).is_file():
        raise refuse(f"the weight file of network {name} is missing", root / relative)
    return root / relative


def check_digest(path: Path, entry: dict, size: int, sha: str, patient: str | None) -> None:
    """Refuse a weight file whose size or SHA-256 differs from what the manifest recorded."""
    changed = "the bundle was changed or damaged after it was written"
    if size != entry["bytes"]:
        problem = f"{path.name} has {size} bytes, bundle.json records {entry['bytes']}: {changed}"
    elif sha != entry["sha256"]:
        problem = f"{path.name} has SHA-256 {sha}, bundle.json records {entry['sha256']}: {changed}"
    else:
        return
    raise PatientDataError(patient, path, problem, FIX_COPY)


def verify_model_bundle(folder: str | Path, patient: str | None = None) -> dict:
    """Manifest after every check except building networks (format and its version, files,
    SHA-256).

    Cheap enough for a workflow to run before it schedules inference on every patient.
    """
    root, manifest_path = locate_bundle(folder)
    manifest = read_manifest(root, manifest_path, patient)
    for name, entry in manifest["networks"].items():
        path = weight_file(root, name, entry, patient)
        check_digest(path, entry, path.stat().st_size, sha256_file(path), patient)
    return manifest


def resolve_configured_bundle(
    path: str | Path, results: str | Path = "results"
) -> tuple[str, dict]:
    """config 'model_bundle' as an absolute folder and its verified manifest (format and its
    version, SHA-256 of the manifest and of every weight file), checked before any job is
    planned. It may not lie inside the run's ``results`` folder: a rule writes there, and
    predicting from it could retrain it. A relative path is taken from the working directory."""
    folder = Path(path).resolve()
    if Path(results).resolve() in folder.parents:
        raise ConfigError(
            f"config 'model_bundle' {path} lies inside this run's results/ folder, which the "
            "pipeline rewrites",
            "leave model_bundle null to use this run's own bundle, or copy the bundle folder "
            "elsewhere and point to the copy",
        )
    if not (folder / MANIFEST).is_file():
        raise ConfigError(
            f"config 'model_bundle' {path} holds no {MANIFEST}",
            "point it to a bundle folder written by the rule 'bundle' (a copy of "
            "results/bundles/<variant> of a finished run)",
        )
    try:
        return str(folder), verify_model_bundle(folder)
    except PatientDataError as error:
        raise ConfigError(
            f"config 'model_bundle': {error.problem} ({error.path})", error.fix
        ) from None


__all__ = [
    "BUNDLE_FORMAT",
    "FIX_COPY",
    "FIX_POINT",
    "FORMAT_MAJOR",
    "FORMAT_VERSION",
    "MANIFEST",
    "PRESET_KEYS",
    "REQUIRED",
    "WEIGHTS",
    "check_digest",
    "check_format_version",
    "locate_bundle",
    "manifest_digest",
    "parse_format_version",
    "read_manifest",
    "resolve_configured_bundle",
    "verify_model_bundle",
    "weight_file",
]
