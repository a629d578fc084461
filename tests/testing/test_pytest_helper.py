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
