"""`apitwin.testing`: a twin inside someone else's test suite."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx2 as httpx
import pytest

from apitwin.testing import run_twin

from conftest import EXAMPLE, PROJECT

pytest_plugins = ["pytester"]


def test_run_twin_serves_the_spec_and_its_control_plane() -> None:
    with run_twin(EXAMPLE) as twin:
        auth = {"Authorization": f"Bearer {twin.api_key}"}
        created = httpx.post(f"{twin.url}/projects", json=PROJECT, headers=auth)
        assert created.status_code == 201
        listed = twin.control.list_records(twin.connection_id, "projects")
        assert [r["id"] for r in listed["records"]] == [created.json()["id"]]
        counted = twin.control.count_requests(
            twin.connection_id, operation="createProject", status=201
        )
        assert counted["count"] == 1


def test_the_pytest_fixture_works_from_ini_options(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        textwrap.dedent(f"""
        [pytest]
        apitwin_spec = {EXAMPLE}
    """)
    )
    pytester.makeconftest('pytest_plugins = ["apitwin.testing"]')
    pytester.makepyfile(
        textwrap.dedent("""
        import httpx2

        def test_projects_start_empty(apitwin_twin):
            answer = httpx2.get(apitwin_twin.url + "/projects",
                                headers={"Authorization": "Bearer " + apitwin_twin.api_key})
            assert answer.json()["data"] == []
    """)
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_missing_spec_setting_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["apitwin.testing"]')
    pytester.makepyfile("def test_x(apitwin_twin):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*set apitwin_spec or apitwin_config*"])
    assert Path(str(pytester.path)).exists()


def test_run_twin_applies_the_configs_limits_like_serve(tmp_path: Path) -> None:
    (tmp_path / "openapi.yaml").write_bytes(EXAMPLE.read_bytes())
    config = tmp_path / "apitwin.yaml"
    config.write_text(
        "server:\n  limits: {request_header_bytes: 4096, request_body_bytes: 2048}\n"
        "twins:\n  - spec: openapi.yaml\n"
    )
    with run_twin(config=config) as twin:
        big_header = httpx.get(twin.url + "/projects", headers={"x-pad": "a" * 8192})
        assert big_header.status_code == 431
        big_body = httpx.post(
            twin.url + "/projects",
            content=b"{" + b" " * 4096 + b"}",
            headers={"content-type": "application/json"},
        )
        assert big_body.status_code == 413
