"""Conformance is the acceptance test: schemathesis against a twin of every real spec.

Valid input gets every response check (status code, content type, headers, schema conformance,
no server error, positive data accepted, auth not ignored). Invalid input must be rejected with a
4xx and never break the twin. Known contradictions inside a spec are listed with their reason and
skipped visibly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SPECS, serve, shared_specs

from apitwin.server.app import create_app
from apitwin.service.twin import TwinService
from apitwin.spec.loader import load_spec

pytestmark = pytest.mark.conformance

# Operations whose spec contradicts itself, with the reason (`apitwin check` names them too).
CONTRADICTIONS: dict[str, dict[str, str]] = {}

POSITIVE_CHECKS = "all"
NEGATIVE_CHECKS = "not_a_server_error,negative_data_rejection,content_type_conformance"
AUTH_HEADERS = ["-H", "Authorization: Bearer conformance-token"]


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
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    return output


def exclusions(spec: Path) -> list[str]:
    args = []
    for op_id, reason in CONTRADICTIONS.get(spec.name, {}).items():
        print(f"skipped {spec.name} {op_id}: {reason}")
        args += ["--exclude-operation-id", op_id]
    return args


@pytest.mark.parametrize("spec_path", shared_specs(), ids=lambda p: p.name)
def test_twin_conforms_to_its_spec(spec_path: Path) -> None:
    spec = load_spec(spec_path, spec_root=SPECS)
    if not spec.operations:
        pytest.skip(f"{spec_path.name} declares no operations (webhooks only)")
    with serve(create_app([TwinService(spec, seed=1)])) as origin:
        url = origin + spec.base_path
        extra = AUTH_HEADERS + exclusions(spec_path)
        schemathesis(spec_path, url, "positive", POSITIVE_CHECKS, extra)
        schemathesis(spec_path, url, "negative", NEGATIVE_CHECKS, extra)
