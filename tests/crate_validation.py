"""Run roc-validator (the RO-Crate community's validator) on a crate, offline.

The validator resolves the crate's JSON-LD context over HTTP through its own cache; its offline
mode serves only what that cache holds (`rocrate-validator cache warm` fills it from the web).
Test machines have no web, so the cache is filled from the RO-Crate 1.1 context document that
the rocrate package ships (rocrate 0.14 carries 1.1, the version the Provenance Run Crate 0.5
profile builds on). Nothing of the validator itself is changed.
"""

from __future__ import annotations

from pathlib import Path

import requests
import rocrate
from requests_cache import CachedSession
from urllib3 import HTTPResponse

CONTEXT_URL = "https://w3id.org/ro/crate/1.1/context"
CONTEXT_FILE = Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld"
PROFILE = "provenance-run-crate-0.5"


def offline_cache(folder: Path) -> Path:
    """A validator HTTP cache holding the RO-Crate 1.1 context."""
    body = CONTEXT_FILE.read_bytes()
    if b'"@id": "https://w3id.org/ro/crate/1.1/context"' not in body[:200]:
        raise AssertionError(f"{CONTEXT_FILE} is not the RO-Crate 1.1 context (rocrate==0.14.0)")
    cache_path = folder / "http_cache"
    session = CachedSession(cache_name=str(cache_path), backend="sqlite", expire_after=-1)
    response = requests.Response()
    response.status_code = 200
    response._content = body
    response.url = CONTEXT_URL
    response.encoding = "utf-8"
    response.headers["Content-Type"] = "application/ld+json"
    response.request = requests.Request("GET", CONTEXT_URL).prepare()
    response.raw = HTTPResponse(
        body=b"", headers=dict(response.headers), status=200, request_url=CONTEXT_URL
    )
    session.cache.save_response(response)
    session.close()
    return cache_path


def validate(crate: Path, cache_path: Path, severity: str = "REQUIRED") -> list[str]:
    """Every issue the validator reports at ``severity`` and above (empty: the crate passes)."""
    from rocrate_validator import services

    settings = {
        "rocrate_uri": str(crate),
        "profile_identifier": PROFILE,
        "requirement_severity": severity,
        "offline": True,
        "cache_path": str(cache_path),
        "abort_on_first": False,
    }
    result = services.validate(settings)
    issues = [
        f"{issue.severity.name} {issue.check.identifier if issue.check else '?'}: {issue.message}"
        for issue in result.get_issues()
    ]
    if not result.passed() and not issues:
        issues.append("validation failed without a reported issue")
    return issues
