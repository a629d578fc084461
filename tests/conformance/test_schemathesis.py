"""Conformance is the acceptance test: schemathesis against a twin of every real spec.

Valid input gets every response check (status code, content type, headers, schema conformance,
no server error, positive data accepted, auth not ignored). Invalid input must be rejected with a
4xx and never break the twin. Known contradictions inside a spec are listed with their reason and
skipped visibly.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from apitwin.spec.lint import contradictions
from apitwin.spec.loader import load_spec
from apitwin.spec.model import Spec

from conftest import SPECS, Running, serve_twin, shared_specs

pytestmark = pytest.mark.conformance

# Operations schemathesis itself cannot test, with the reason. (Contradictions inside a spec are
# found by `apitwin check` and skipped through `contradictions()`.)
_ID_REF = "schemathesis cannot resolve the $id-based $ref '/components/schemas/petdetails#...'"
_BASE64 = (
    "schemathesis does not know the 'base64' format: its 'valid' bodies are not base64, and its "
    "invalid ones differ from valid ones only by that format"
)
_FORM_OBJECTS = (
    "schemathesis writes nested objects in form bodies as their keys only, so its invalid "
    "'tags' items are byte-identical to valid ones"
)
TOOL_LIMITS: dict[str, dict[str, str]] = {
    "swagger-petstore.oas31.yaml": {"addPet": _ID_REF, "updatePet": _ID_REF},
    "spotify-web-api.oas30.yml": {"upload-custom-playlist-cover": _BASE64},
}
# The same, for invalid input only.
NEGATIVE_LIMITS: dict[str, dict[str, str]] = {
    "swagger-petstore.oas30.yaml": {"addPet": _FORM_OBJECTS, "updatePet": _FORM_OBJECTS},
}

POSITIVE_CHECKS = "all"
NEGATIVE_CHECKS = "not_a_server_error,negative_data_rejection,content_type_conformance"


def auth_headers(running: Running) -> list[str]:
    """Valid credentials of the default connection for every scheme the spec uses."""
    connection = running.twin.connections.get("default")
    spec = running.twin.spec
    used = {name for op in spec.operations for alt in op.security for name in alt}
    headers: dict[str, str] = {}
    for name in sorted(used):
        scheme = spec.security_schemes.get(name)
        if scheme is None:
            continue
        if scheme.type == "apiKey" and scheme.location == "header" and scheme.param_name:
            headers[scheme.param_name] = connection.api_key
        elif scheme.type == "http" and scheme.scheme == "basic":
            pair = f"{connection.client_id}:{connection.client_secret}".encode()
            headers.setdefault("Authorization", "Basic " + base64.b64encode(pair).decode())
        elif scheme.type in ("http", "oauth2", "openIdConnect"):
            headers["Authorization"] = f"Bearer {connection.api_key}"
    return [arg for key, value in headers.items() for arg in ("-H", f"{key}: {value}")]


def schemathesis(spec: Path, url: str, mode: str, checks: str, extra: list[str]) -> str:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        str(spec),
        "--url",
        url,
        "--mode",
        mode,
        "--checks",
        checks,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--seed",
        "1",
        "--workers",
        "1",
        "--no-color",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        *extra,
    ]
    with tempfile.TemporaryDirectory() as scratch:  # schemathesis writes a cache where it runs
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=scratch)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    return output


def exclusions(path: Path, spec: Spec, limits: dict[str, dict[str, str]]) -> list[str]:
    """Operations skipped visibly: the spec's own contradictions, and tool limitations."""
    skipped = {**contradictions(spec), **limits.get(path.name, {})}
    args = []
    for op_id, reason in skipped.items():
        print(f"skipped {path.name} {op_id}: {reason}")
        args += ["--exclude-operation-id", op_id]
    return args


@pytest.mark.parametrize("spec_path", shared_specs(), ids=lambda p: p.name)
def test_twin_conforms_to_its_spec(spec_path: Path) -> None:
    spec = load_spec(spec_path, spec_root=SPECS)
    if not spec.operations:
        pytest.skip(f"{spec_path.name} declares no operations (webhooks only)")
    with serve_twin(spec, seed=1) as running:
        url = running.url
        auth = auth_headers(running)
        positive = auth + exclusions(spec_path, spec, TOOL_LIMITS)
        schemathesis(spec_path, url, "positive", POSITIVE_CHECKS, positive)
        negative_limits = {
            name: {**TOOL_LIMITS.get(name, {}), **NEGATIVE_LIMITS.get(name, {})}
            for name in {*TOOL_LIMITS, *NEGATIVE_LIMITS}
        }
        negative = auth + exclusions(spec_path, spec, negative_limits)
        schemathesis(spec_path, url, "negative", NEGATIVE_CHECKS, negative)
