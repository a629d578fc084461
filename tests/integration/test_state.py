"""Stateful twins through the real HTTP server, with real credentials.

CRUD cycles on the bundled expert-network spec and on specs from the shared folder, isolation
between connections, restarts on the same SQLite file, concurrent clients, and error shapes.
Tests marked ``xfail(strict=True)`` pin down bugs found in the twin; their reasons say what is
wrong.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx2 as httpx
import pytest
from jsonschema import Draft202012Validator

import apitwin
from apitwin.config import ConnectionConfig
from apitwin.spec.resources import Resource
from apitwin.state.store import Query

from conftest import SPECS, Running, need_specs, serve_twin

NETWORK_SPEC = Path(apitwin.__file__).resolve().parent / "examples/expert-network/openapi.yaml"

ACME = ConnectionConfig(
    client_id="acme",
    api_key="ak_acme_state_tests_0001",
    client_secret="cs_acme_state_tests_0001",
)
GLOBEX = ConnectionConfig(
    client_id="globex",
    api_key="ak_globex_state_tests_0002",
    client_secret="cs_globex_state_tests_0002",
)
BOTH = (ACME, GLOBEX)

PROJECT = {
    "title": "Battery supply chain in Southeast Asia",
    "brief": "Cell and precursor capacity being built in Indonesia, Thailand and Vietnam.",
    "industry": "energy_resources",
}
EXPERT = {
    "name": "Mara Quillfeather",
    "headline": "Former VP Procurement at a cell manufacturer",
    "employment_history": [
        {
            "company": "Northwind Cell Manufacturing",
            "title": "VP Procurement",
            "start_date": "2019-04-01",
            "end_date": None,
            "current": True,
        }
    ],
    "hourly_rate": {"amount": 850, "currency": "USD"},
    "compliance": {
        "attested": True,
        "attested_at": "2026-11-04T07:30:00Z",
        "conflicts_declared": False,
    },
}
MISSING_PROJECT = "prj_AAAAAAAAAAAA"
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
CLIENTS = 50


# -- helpers ----------------------------------------------------------------------------------

# One TLS context for every client (building one per client costs ~50 ms); the environment's
# proxies are ignored so that everything stays on loopback.
TLS = ssl.create_default_context()


def client(**options: Any) -> httpx.Client:
    return httpx.Client(verify=TLS, trust_env=False, **options)


def send(method: str, url: str, **options: Any) -> httpx.Response:
    with client() as one_off:
        return one_off.request(method, url, **options)


def issue_token(url: str, connection: ConnectionConfig) -> str:
    response = send(
        "POST",
        f"{url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": connection.client_id,
            "client_secret": connection.client_secret,
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def schema_of(running: Running, op_id: str, status: str) -> dict[str, Any]:
    """The JSON schema of one declared response of ``op_id``."""
    op = running.twin.spec.operation(op_id)
    assert op is not None
    media = next(m for m in op.responses[status].media.values() if m.is_json)
    assert media.schema is not None
    schema: dict[str, Any] = media.schema.json
    return schema


def body_schema(running: Running, op_id: str) -> dict[str, Any]:
    op = running.twin.spec.operation(op_id)
    assert op is not None and op.body is not None
    media = op.body.media["application/json"]
    assert media.schema is not None
    schema: dict[str, Any] = media.schema.json
    return schema


def assert_valid(instance: Any, schema: dict[str, Any]) -> None:
    errors = [
        f"{list(e.path)}: {e.message}" for e in Draft202012Validator(schema).iter_errors(instance)
    ]
    assert not errors, errors


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(items: list[dict[str, Any]], field: str = "id") -> list[Any]:
    return [item[field] for item in items]


def cursor_pages(http: httpx.Client, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a cursor-paginated list, following ``next_cursor`` until ``has_more`` ends."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = http.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return pages
        cursor = page["next_cursor"]
        assert isinstance(cursor, str) and cursor
    raise AssertionError("the list never reached has_more: false")


def numbered_pages(http: httpx.Client, path: str, limit: int) -> list[list[dict[str, Any]]]:
    """Every non-empty page of a page/limit-paginated bare-array list."""
    pages: list[list[dict[str, Any]]] = []
    for number in range(1, 100):
        response = http.get(path, params={"page": number, "limit": limit})
        assert response.status_code == 200, response.text
        if not response.json():
            return pages
        pages.append(response.json())
    raise AssertionError("the list never ran out of pages")


def stored(running: Running, resource: Resource, conn: str) -> list[dict[str, Any]]:
    """The records as the store holds them (not as a response shapes them)."""
    scope = running.twin.records.scope(conn, resource)
    items = asyncio.run(running.twin.store.query(Query(scope, limit=10_000)))
    return [item.data for item in items]


Call = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


def concurrently(url: str, call: Call, **client_options: Any) -> list[httpx.Response]:
    """``CLIENTS`` separate clients, each sending one request, all at once."""

    async def one(index: int) -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=url, timeout=30, verify=TLS, trust_env=False, **client_options
        ) as session:
            return await call(session, index)

    async def everyone() -> list[httpx.Response]:
        return await asyncio.gather(*(one(i) for i in range(CLIENTS)))

    return asyncio.run(everyone())


# -- the bundled expert-network spec --------------------------------------------------------------


@dataclass
class Network:
    running: Running
    acme: httpx.Client
    globex: httpx.Client


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    with serve_twin(NETWORK_SPEC, connections=BOTH) as running:
        acme_token = issue_token(running.url, ACME)
        globex_token = issue_token(running.url, GLOBEX)
        with (
            client(base_url=running.url, headers=bearer(acme_token)) as acme,
            client(base_url=running.url, headers=bearer(globex_token)) as globex,
        ):
            yield Network(running, acme, globex)


def new_project(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    return created(http.post("/projects", json={**PROJECT, **fields}))


def new_expert(http: httpx.Client, project_id: str, **fields: Any) -> dict[str, Any]:
    return created(http.post(f"/projects/{project_id}/experts", json={**EXPERT, **fields}))


def test_a_network_exchanges_its_client_credentials_for_a_bearer_token(network: Network) -> None:
    url = network.running.url
    form = {"grant_type": "client_credentials", "client_id": "acme"}
    response = send(
        "POST", f"{url}/oauth/token", data={**form, "client_secret": ACME.client_secret}
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    listed = send("GET", f"{url}/projects", headers=bearer(body["access_token"]))
    assert listed.status_code == 200

    refused = send("POST", f"{url}/oauth/token", data={**form, "client_secret": "cs_wrong_secret"})
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert_valid(refused.json(), schema_of(network.running, "createAccessToken", "401"))
    assert "www-authenticate" in refused.headers


def test_the_token_response_matches_the_specs_token_response_schema(network: Network) -> None:
    url = network.running.url
    response = send(
        "POST",
        f"{url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "acme",
            "client_secret": ACME.client_secret,
        },
    )
    assert_valid(response.json(), schema_of(network.running, "createAccessToken", "200"))


def test_a_project_is_created_read_listed_patched_and_deleted_like_on_the_platform(
    network: Network,
) -> None:
    running, acme = network.running, network.acme
    project_schema = schema_of(running, "getProject", "200")

    response = acme.post("/projects", json={**PROJECT, "status": "draft"})
    project = created(response)
    pid = project["id"]
    assert pid.startswith("prj_")
    assert {k: project[k] for k in PROJECT} == PROJECT
    assert project["status"] == "draft"
    assert_valid(project, project_schema)
    location = response.headers["location"]
    assert location == f"/partner/v1/projects/{pid}"
    assert acme.get(urljoin(running.origin, location)).json() == project
    assert acme.get(f"/projects/{pid}").json() == project

    drafts = [pid] + [new_project(acme, title=f"Draft {i}", status="draft")["id"] for i in range(4)]
    opened = [new_project(acme, title=f"Open {i}", status="open")["id"] for i in range(2)]
    pages = cursor_pages(acme, "/projects", {"status": "draft", "limit": 2})
    assert len(pages) >= 3
    assert all(len(page["data"]) == 2 for page in pages[:-1])
    for page in pages:
        assert_valid(page, schema_of(running, "listProjects", "200"))
    paged = [item["id"] for page in pages for item in page["data"]]
    assert len(paged) == len(set(paged)), "a record appeared on two pages"
    whole = acme.get("/projects", params={"status": "draft", "limit": 100}).json()
    assert not whole["has_more"]
    assert paged == ids(whole["data"]), "pages skipped or reordered records"
    assert set(drafts) <= set(paged)
    assert not set(opened) & set(paged)
    assert {item["status"] for page in pages for item in page["data"]} == {"draft"}

    running.twin.clock.advance(60)
    patch = {"title": "Battery supply chain (phase 2)", "target_expert_count": 12}
    patched = acme.patch(f"/projects/{pid}", content=json.dumps(patch), headers=MERGE_PATCH)
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert after == {**project, **patch, "updated_at": after["updated_at"]}
    assert after["updated_at"] > project["updated_at"]
    assert after["created_at"] == project["created_at"]
    assert acme.get(f"/projects/{pid}").json() == after

    deleted = acme.delete(f"/projects/{pid}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = acme.get(f"/projects/{pid}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert_valid(gone.json(), schema_of(running, "getProject", "404"))
    assert pid not in ids(acme.get("/projects", params={"limit": 100}).json()["data"])
    assert acme.delete(f"/projects/{pid}").status_code == 404
    assert acme.patch(f"/projects/{pid}", json={"title": "x"}).status_code == 404


def test_cursor_pages_have_no_gaps_when_a_seen_record_is_deleted_between_pages(
    network: Network,
) -> None:
    acme = network.acme
    only_mine: dict[str, Any] = {"industry": "consumer_retail", "limit": 2}
    mine = [
        new_project(acme, title=f"Retail {i}", industry="consumer_retail")["id"] for i in range(5)
    ]
    first = acme.get("/projects", params=only_mine).json()
    assert ids(first["data"]) == mine[:2]
    assert acme.delete(f"/projects/{mine[0]}").status_code == 204
    rest = cursor_pages(acme, "/projects", {**only_mine, "cursor": first["next_cursor"]})
    later = [item["id"] for page in rest for item in page["data"]]
    assert later == mine[2:]


def test_experts_are_submitted_under_a_project_and_listed_for_that_project_only(
    network: Network,
) -> None:
    running, acme = network.running, network.acme
    assert_valid(EXPERT, body_schema(running, "submitExpert"))
    first = new_project(acme)["id"]
    second = new_project(acme)["id"]

    response = acme.post(f"/projects/{first}/experts", json=EXPERT)
    expert = created(response)
    assert expert["id"].startswith("exp_")
    assert expert["project_id"] == first
    assert expert["status"] == "submitted"
    assert {k: expert[k] for k in EXPERT} == EXPERT
    assert_valid(expert, schema_of(running, "getProjectExpert", "200"))
    location = response.headers["location"]
    assert location == f"/partner/v1/projects/{first}/experts/{expert['id']}"
    assert acme.get(urljoin(running.origin, location)).json() == expert

    more = [new_expert(acme, first, name=f"Expert {i}")["id"] for i in range(2)]
    other = new_expert(acme, second, name="Someone else")
    assert other["project_id"] == second

    pages = cursor_pages(acme, f"/projects/{first}/experts", {"limit": 2})
    listed = [item for page in pages for item in page["data"]]
    assert ids(listed) == [expert["id"], *more]
    assert {item["project_id"] for item in listed} == {first}
    for page in pages:
        assert_valid(page, schema_of(running, "listProjectExperts", "200"))
    assert ids(acme.get(f"/projects/{second}/experts").json()["data"]) == [other["id"]]


def test_submitting_an_expert_to_a_missing_project_is_not_found(network: Network) -> None:
    response = network.acme.post(f"/projects/{MISSING_PROJECT}/experts", json=EXPERT)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert_valid(response.json(), schema_of(network.running, "submitExpert", "404"))


def test_shortlisting_an_expert_moves_it_to_shortlisted(network: Network) -> None:
    acme = network.acme
    pid = new_project(acme)["id"]
    eid = new_expert(acme, pid)["id"]
    waiting = new_expert(acme, pid, name="Still waiting")["id"]

    response = acme.post(f"/projects/{pid}/experts/{eid}/shortlist")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "shortlisted"
    assert acme.get(f"/projects/{pid}/experts/{eid}").json()["status"] == "shortlisted"
    shortlisted = acme.get(f"/projects/{pid}/experts", params={"status": "shortlisted"})
    assert ids(shortlisted.json()["data"]) == [eid]
    submitted = acme.get(f"/projects/{pid}/experts", params={"status": "submitted"})
    assert ids(submitted.json()["data"]) == [waiting]


def test_cancelling_a_call_with_a_reason_records_the_status_and_the_reason(
    network: Network,
) -> None:
    running, acme = network.running, network.acme
    pid = new_project(acme)["id"]
    eid = new_expert(acme, pid)["id"]
    request = {
        "project_id": pid,
        "expert_id": eid,
        "requested_windows": [{"start": "2026-11-10T01:00:00Z", "end": "2026-11-10T05:00:00Z"}],
        "duration_minutes": 60,
        "topic": "Cathode sourcing",
    }
    response = acme.post("/calls", json=request)
    call = created(response)
    assert call["status"] == "requested"
    assert call["cancellation_reason"] is None
    assert response.headers["location"] == f"/partner/v1/calls/{call['id']}"

    cancelled = acme.post(f"/calls/{call['id']}/cancel", json={"reason": "Workstream paused."})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancellation_reason"] == "Workstream paused."
    assert_valid(cancelled.json(), schema_of(running, "getCall", "200"))
    assert acme.get(f"/calls/{call['id']}").json() == cancelled.json()
    listed = acme.get("/calls", params={"status": "cancelled", "project_id": pid}).json()
    assert ids(listed["data"]) == [call["id"]]
    assert (
        acme.get("/calls", params={"status": "requested", "project_id": pid}).json()["data"] == []
    )


def test_project_settings_read_then_replace_then_read_returns_what_was_put(
    network: Network,
) -> None:
    running, acme = network.running, network.acme
    pid = new_project(acme)["id"]
    before = acme.get(f"/projects/{pid}/settings")
    assert before.status_code == 200
    assert_valid(before.json(), schema_of(running, "getProjectSettings", "200"))

    wanted = {
        "auto_shortlist": True,
        "max_rate": {"amount": 1200, "currency": "USD"},
        "notify_emails": ["research-ops@client.example"],
    }
    put = acme.put(f"/projects/{pid}/settings", json=wanted)
    assert put.status_code == 200, put.text
    assert {k: put.json()[k] for k in wanted} == wanted
    after = acme.get(f"/projects/{pid}/settings").json()
    assert after == put.json()
    assert_valid(after, schema_of(running, "getProjectSettings", "200"))

    other = new_project(acme)["id"]
    assert acme.get(f"/projects/{other}/settings").json()["auto_shortlist"] is False


# -- bugs in the bundled spec's twin --------------------------------------------------------------


def test_a_project_created_without_optional_fields_takes_the_create_schemas_defaults(
    network: Network,
) -> None:
    project = new_project(network.acme)
    assert project["target_expert_count"] == 10
    assert project["geographies"] == []
    assert project["screening_questions"] == []
    assert project["deadline"] is None


def test_patching_the_deadline_to_null_clears_it(network: Network) -> None:
    running, acme = network.running, network.acme
    pid = new_project(acme, deadline="2026-12-15")["id"]
    patched = acme.patch(
        f"/projects/{pid}", content=json.dumps({"deadline": None}), headers=MERGE_PATCH
    )
    assert patched.status_code == 200
    assert patched.json()["deadline"] is None
    resource = running.twin.resource_map.resources["projects"]
    record = next(r for r in stored(running, resource, "acme") if r["id"] == pid)
    assert record.get("deadline", "absent") is None


def test_server_set_nullable_fields_start_null(network: Network) -> None:
    acme = network.acme
    pid = new_project(acme)["id"]
    expert = new_expert(acme, pid)
    assert expert["review"] is None
    call = created(
        acme.post(
            "/calls",
            json={
                "project_id": pid,
                "expert_id": expert["id"],
                "requested_windows": [
                    {"start": "2026-11-10T01:00:00Z", "end": "2026-11-10T05:00:00Z"}
                ],
                "duration_minutes": 30,
                "topic": "Intro",
            },
        )
    )
    assert call["scheduled_slot"] is None


def test_an_expert_is_not_found_under_another_project(network: Network) -> None:
    acme = network.acme
    first = new_project(acme)["id"]
    second = new_project(acme)["id"]
    eid = new_expert(acme, first)["id"]
    assert acme.get(f"/projects/{second}/experts/{eid}").status_code == 404


def test_listing_the_experts_of_a_missing_project_is_not_found(network: Network) -> None:
    response = network.acme.get(f"/projects/{MISSING_PROJECT}/experts")
    assert response.status_code == 404


def test_settings_carry_the_id_of_their_project(network: Network) -> None:
    acme = network.acme
    pid = new_project(acme)["id"]
    assert acme.get(f"/projects/{pid}/settings").json()["project_id"] == pid
    body: dict[str, Any] = {"auto_shortlist": False, "max_rate": None, "notify_emails": []}
    assert acme.put(f"/projects/{pid}/settings", json=body).json()["project_id"] == pid


def test_replacing_settings_moves_their_updated_at(network: Network) -> None:
    acme = network.acme
    pid = new_project(acme)["id"]
    before = acme.get(f"/projects/{pid}/settings").json()
    network.running.twin.clock.advance(60)
    body: dict[str, Any] = {"auto_shortlist": True, "max_rate": None, "notify_emails": []}
    after = acme.put(f"/projects/{pid}/settings", json=body).json()
    assert after["updated_at"] > before["updated_at"]


def test_settings_of_a_missing_project_are_not_found(network: Network) -> None:
    assert network.acme.get(f"/projects/{MISSING_PROJECT}/settings").status_code == 404


# -- isolation and credentials on the bundled spec ------------------------------------------------


def test_one_networks_projects_and_experts_are_invisible_to_another(network: Network) -> None:
    running, acme, globex = network.running, network.acme, network.globex
    pid = new_project(acme, title="Acme only")["id"]
    eid = new_expert(acme, pid)["id"]
    theirs = new_project(globex, title="Globex only")["id"]

    assert pid not in ids(globex.get("/projects", params={"limit": 100}).json()["data"])
    assert theirs not in ids(acme.get("/projects", params={"limit": 100}).json()["data"])
    assert theirs in ids(globex.get("/projects", params={"limit": 100}).json()["data"])
    for response in (
        globex.get(f"/projects/{pid}"),
        globex.get(f"/projects/{pid}/experts/{eid}"),
        globex.patch(f"/projects/{pid}", json={"title": "Hijacked"}),
        globex.delete(f"/projects/{pid}"),
        globex.post(f"/projects/{pid}/experts", json=EXPERT),
        globex.post(f"/projects/{pid}/experts/{eid}/shortlist"),
        acme.get(f"/projects/{theirs}"),
    ):
        assert response.status_code == 404, (response.request.url, response.text)
        assert response.json()["error"]["code"] == "not_found"
        assert_valid(response.json(), schema_of(running, "getProject", "404"))
    # The parent is invisible to globex, so its nested list is not found either.
    assert globex.get(f"/projects/{pid}/experts").status_code == 404

    still = acme.get(f"/projects/{pid}").json()
    assert still["title"] == "Acme only"
    assert acme.get(f"/projects/{pid}/experts/{eid}").json()["status"] == "submitted"


def test_the_api_key_works_as_a_static_bearer_token_for_its_own_connection(
    network: Network,
) -> None:
    pid = new_project(network.acme)["id"]
    with client(base_url=network.running.url, headers=bearer(ACME.api_key or "")) as key:
        assert key.get(f"/projects/{pid}").status_code == 200
    with client(base_url=network.running.url, headers=bearer(GLOBEX.api_key or "")) as key:
        assert key.get(f"/projects/{pid}").status_code == 404


def test_unknown_or_missing_credentials_get_401_in_the_specs_error_shape(network: Network) -> None:
    running = network.running
    unauthorized = schema_of(running, "listProjects", "401")
    for headers in ({"Authorization": "Bearer at_not_issued_by_this_twin"}, {}):
        response = send("GET", f"{running.url}/projects", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert_valid(response.json(), unauthorized)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_an_access_token_stops_working_when_it_expires() -> None:
    with serve_twin(NETWORK_SPEC, connections=(ACME,)) as running:
        token = issue_token(running.url, ACME)
        assert send("GET", f"{running.url}/projects", headers=bearer(token)).status_code == 200
        running.twin.clock.advance(3601)
        expired = send("GET", f"{running.url}/projects", headers=bearer(token))
        assert expired.status_code == 401
        assert "expired" in expired.json()["error"]["message"]
        fresh = issue_token(running.url, ACME)
        assert send("GET", f"{running.url}/projects", headers=bearer(fresh)).status_code == 200


# -- error shapes ---------------------------------------------------------------------------------


def test_an_invalid_project_body_answers_in_the_specs_error_shape_naming_each_field(
    network: Network,
) -> None:
    body = {"title": "", "brief": "B", "industry": "shipbuilding", "target_expert_count": 0}
    response = network.acme.post("/projects", json=body)
    assert response.status_code in (400, 422)
    error = response.json()["error"]
    assert_valid(response.json(), schema_of(network.running, "createProject", "422"))
    assert {d["field"].strip("/") for d in error["details"]} == {
        "title",
        "industry",
        "target_expert_count",
    }
    assert all(d["issue"] for d in error["details"])


def test_an_invalid_project_body_answers_422_validation_failed(network: Network) -> None:
    response = network.acme.post("/projects", json={**PROJECT, "title": ""})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"


def test_a_cursor_the_twin_never_issued_is_400_in_the_specs_error_shape(network: Network) -> None:
    response = network.acme.get("/projects", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert_valid(response.json(), schema_of(network.running, "listProjects", "400"))


def test_errors_the_spec_gives_no_shape_for_are_rfc_9457_problems(network: Network) -> None:
    response = network.acme.get("/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 404
    assert {"type", "title", "detail"} <= set(problem)


# -- a restart that keeps everything --------------------------------------------------------------


def test_a_restart_on_the_same_file_keeps_records_connections_credentials_and_tokens(
    tmp_path: Path,
) -> None:
    db = tmp_path / "twin.db"
    settings = {"auto_shortlist": True, "max_rate": None, "notify_emails": ["ops@acme.example"]}
    with serve_twin(NETWORK_SPEC, db=db, connections=(ACME,)) as running:
        token = issue_token(running.url, ACME)
        with client(base_url=running.url, headers=bearer(token)) as acme:
            project = new_project(acme)
            expert = new_expert(acme, project["id"])
            assert acme.put(f"/projects/{project['id']}/settings", json=settings).is_success
            saved_settings = acme.get(f"/projects/{project['id']}/settings").json()
        default_key = running.api_key

    # Served again without any connection configured: everything comes from the file.
    with serve_twin(NETWORK_SPEC, db=db) as running:
        assert running.api_key == default_key
        with client(base_url=running.url, headers=bearer(token)) as acme:
            assert acme.get(f"/projects/{project['id']}").json() == project
            listed = acme.get(f"/projects/{project['id']}/experts").json()["data"]
            assert listed == [expert]
            assert acme.get(f"/projects/{project['id']}/settings").json() == saved_settings
        by_key = send("GET", f"{running.url}/projects", headers=bearer(ACME.api_key or ""))
        assert ids(by_key.json()["data"]) == [project["id"]]
        fresh = issue_token(running.url, ACME)
        assert send("GET", f"{running.url}/projects", headers=bearer(fresh)).status_code == 200
        stranger = send("GET", f"{running.url}/projects", headers=bearer("at_unknown"))
        assert stranger.status_code == 401
        default = send("GET", f"{running.url}/projects", headers=bearer(default_key))
        assert default.json()["data"] == []


# -- concurrency ----------------------------------------------------------------------------------


def test_fifty_clients_create_and_patch_projects_without_losing_or_corrupting_anything() -> None:
    with serve_twin(NETWORK_SPEC, connections=(ACME,)) as running:
        headers = bearer(issue_token(running.url, ACME))
        creates = concurrently(
            running.url,
            lambda c, i: c.post("/projects", json={**PROJECT, "title": f"Project {i}"}),
            headers=headers,
        )
        made = [created(r) for r in creates]
        assert len({p["id"] for p in made}) == CLIENTS
        with client(base_url=running.url, headers=headers) as acme:
            pages = cursor_pages(acme, "/projects", {"limit": 7})
            listed = [item for page in pages for item in page["data"]]
            assert sorted(ids(listed)) == sorted(p["id"] for p in made)
            assert sorted(p["title"] for p in listed) == sorted(
                f"Project {i}" for i in range(CLIENTS)
            )

            # The schema forbids extra fields: every client replaces the same array instead.
            target = made[0]["id"]
            codes = [f"{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(CLIENTS)]
            patches = concurrently(
                running.url,
                lambda c, i: c.patch(f"/projects/{target}", json={"geographies": [codes[i]]}),
                headers=headers,
            )
            applied = [[codes[i]] for i, r in enumerate(patches) if r.status_code == 200]
            assert applied, "no patch succeeded"
            for response in patches:
                assert response.status_code in (200, 409), response.text
                if response.status_code == 409:
                    assert response.json()["error"]["code"] == "conflict"
            final = acme.get(f"/projects/{target}").json()
            assert final["geographies"] in applied, "the final state is no serial order's result"
            assert {k: v for k, v in final.items() if k not in ("geographies", "updated_at")} == {
                k: v for k, v in made[0].items() if k not in ("geographies", "updated_at")
            }
        resource = running.twin.resource_map.resources["projects"]
        records = stored(running, resource, "acme")
        assert len(records) == CLIENTS
        assert resource.schema is not None
        for record in records:
            assert_valid(record, resource.schema.json)


# -- Redocly museum: HTTP Basic, page/limit pagination ---------------------------------------------

EVENT = {
    "name": "Pirate Coding Workshop",
    "location": "Computer Room",
    "eventDescription": "Captain Blackbeard shares his love of the C language.",
    "dates": ["2026-10-29", "2026-10-30"],
    "price": 25,
}


@pytest.fixture(scope="module")
def museum() -> Iterator[Running]:
    need_specs()
    with serve_twin(SPECS / "redocly-museum.oas31.yaml", connections=BOTH) as running:
        yield running


def basic(connection: ConnectionConfig) -> tuple[str, str]:
    return (connection.client_id, connection.client_secret or "")


def test_museum_special_events_go_through_crud_with_page_pagination_over_http_basic(
    museum: Running,
) -> None:
    events = museum.twin.resource_map.resources["special-events"]
    assert events.id_field == "eventId"
    assert events.id_schema.get("format") == "uuid"
    assert events.pagination.style == "page"
    assert (events.pagination.page_param, events.pagination.limit_param) == ("page", "limit")
    assert set(events.operations) == {"list", "create", "read", "update", "delete"}

    with client(base_url=museum.url, auth=basic(ACME)) as acme:
        made = [
            created(acme.post("/special-events", json={**EVENT, "name": f"Event {i}"}))
            for i in range(5)
        ]
        first = made[0]
        assert {k: first[k] for k in EVENT} == {**EVENT, "name": "Event 0"}
        assert len({e["eventId"] for e in made}) == 5
        assert_valid(first, schema_of(museum, "getSpecialEvent", "200"))
        assert acme.get(f"/special-events/{first['eventId']}").json() == first

        pages = numbered_pages(acme, "/special-events", limit=2)
        assert [len(page) for page in pages][:-1] == [2] * (len(pages) - 1)
        paged = [e["eventId"] for page in pages for e in page]
        assert len(paged) == len(set(paged))
        assert paged == ids(acme.get("/special-events", params={"limit": 30}).json(), "eventId")
        assert {e["eventId"] for e in made} <= set(paged)
        for page in pages:
            assert_valid(page, schema_of(museum, "listSpecialEvents", "200"))

        patched = acme.patch(f"/special-events/{first['eventId']}", json={"price": 30})
        assert patched.status_code == 200
        assert patched.json() == {**first, "price": 30}
        assert acme.get(f"/special-events/{first['eventId']}").json() == {**first, "price": 30}

        assert acme.delete(f"/special-events/{first['eventId']}").status_code == 204
        gone = acme.get(f"/special-events/{first['eventId']}")
        assert gone.status_code == 404
        assert gone.headers["content-type"] == "application/problem+json"
        assert_valid(gone.json(), schema_of(museum, "getSpecialEvent", "404"))
        remaining = [
            e["eventId"] for page in numbered_pages(acme, "/special-events", 2) for e in page
        ]
        assert first["eventId"] not in remaining


def test_museum_events_of_one_connection_are_invisible_to_another(museum: Running) -> None:
    with (
        client(base_url=museum.url, auth=basic(ACME)) as acme,
        client(base_url=museum.url, auth=basic(GLOBEX)) as globex,
    ):
        event = created(acme.post("/special-events", json=EVENT))
        path = f"/special-events/{event['eventId']}"
        theirs = [
            e["eventId"] for page in numbered_pages(globex, "/special-events", 30) for e in page
        ]
        assert event["eventId"] not in theirs
        for response in (
            globex.get(path),
            globex.patch(path, json={"price": 1}),
            globex.delete(path),
        ):
            assert response.status_code == 404
            assert_valid(response.json(), schema_of(museum, "getSpecialEvent", "404"))
        assert acme.get(path).json() == event


def test_museum_rejects_wrong_basic_credentials_with_401_problems(museum: Running) -> None:
    url = f"{museum.url}/special-events"
    wrong = send("GET", url, auth=("acme", "not-the-secret"))
    assert wrong.status_code == 401
    assert wrong.headers["content-type"] == "application/problem+json"
    assert "www-authenticate" in wrong.headers
    problem = wrong.json()
    assert problem["status"] == 401
    assert {"type", "title", "detail"} <= set(problem)  # listSpecialEvents declares no 401

    unknown = send(
        "DELETE", f"{url}/3be6453c-03eb-4357-ae5a-984a0e574a54", auth=("nobody", "x" * 8)
    )
    assert unknown.status_code == 401
    assert_valid(unknown.json(), schema_of(museum, "deleteSpecialEvent", "401"))

    missing = send("GET", url)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic")


def test_wrong_basic_credentials_are_challenged_with_basic(museum: Running) -> None:
    wrong = send("GET", f"{museum.url}/special-events", auth=("acme", "not-the-secret"))
    assert wrong.headers["www-authenticate"].startswith("Basic")


def museum_patches(url: str, event_id: str) -> list[httpx.Response]:
    return concurrently(
        url,
        lambda c, i: c.patch(f"/special-events/{event_id}", json={f"note_{i}": f"from {i}"}),
        auth=basic(ACME),
    )


def test_fifty_clients_create_and_patch_museum_events_without_lost_updates() -> None:
    need_specs()
    with serve_twin(SPECS / "redocly-museum.oas31.yaml", connections=(ACME,)) as running:
        creates = concurrently(
            running.url,
            lambda c, i: c.post("/special-events", json={**EVENT, "name": f"Event {i}"}),
            auth=basic(ACME),
        )
        made = [created(r) for r in creates]
        assert len({e["eventId"] for e in made}) == CLIENTS
        with client(base_url=running.url, auth=basic(ACME)) as acme:
            listed = [e for page in numbered_pages(acme, "/special-events", 30) for e in page]
            assert sorted(ids(listed, "eventId")) == sorted(e["eventId"] for e in made)

            target = made[0]["eventId"]
            patches = museum_patches(running.url, target)
            final = acme.get(f"/special-events/{target}").json()
        assert {r.status_code for r in patches} <= {200, 409}
        for index, response in enumerate(patches):
            if response.status_code == 200:
                assert final[f"note_{index}"] == f"from {index}", "an accepted update was lost"
            else:
                assert f"note_{index}" not in final, "a refused update was applied"
        assert {k: final[k] for k in made[0]} == made[0]
        resource = running.twin.resource_map.resources["special-events"]
        records = stored(running, resource, "acme")
        assert len(records) == CLIENTS
        assert resource.schema is not None
        for record in records:
            assert_valid(record, resource.schema.json)


def test_fifty_concurrent_patches_of_different_fields_all_apply() -> None:
    need_specs()
    with serve_twin(SPECS / "redocly-museum.oas31.yaml", connections=(ACME,)) as running:
        with client(base_url=running.url, auth=basic(ACME)) as acme:
            target = created(acme.post("/special-events", json=EVENT))["eventId"]
            patches = museum_patches(running.url, target)
            final = acme.get(f"/special-events/{target}").json()
        assert [r.status_code for r in patches] == [200] * CLIENTS
        assert all(final[f"note_{i}"] == f"from {i}" for i in range(CLIENTS))


# -- Swagger petstore (OAS 3.0): api_key header or bearer -----------------------------------------

PET = {"name": "Rex", "photoUrls": ["https://pets.example/rex.jpg"], "status": "available"}


@pytest.fixture(scope="module")
def petstore() -> Iterator[Running]:
    need_specs()
    with serve_twin(SPECS / "swagger-petstore.oas30.yaml", connections=BOTH) as running:
        yield running


def pet_client(running: Running, connection: ConnectionConfig) -> httpx.Client:
    return client(base_url=running.url, headers=bearer(connection.api_key or ""))


def test_petstore_pets_and_users_go_through_their_lifecycle(petstore: Running) -> None:
    resources = petstore.twin.resource_map.resources
    pet, user = resources["pet"], resources["user"]
    assert pet.id_field == "id"
    assert dict(pet.filters) == {"status": "status"}
    assert {k: pet.operations[k] for k in ("list", "create", "read", "delete")} == {
        "list": "findPetsByStatus",
        "create": "addPet",
        "read": "getPetById",
        "delete": "deletePet",
    }
    assert user.id_field == "username"
    assert user.operations["replace"] == "updateUser"

    with pet_client(petstore, ACME) as acme:
        rex = acme.post("/pet", json=PET)
        assert rex.status_code == 200, rex.text
        rex_id = rex.json()["id"]
        assert isinstance(rex_id, int)
        assert rex.json() == {**PET, "id": rex_id}
        tom = acme.post("/pet", json={**PET, "name": "Tom", "status": "sold"}).json()
        assert tom["id"] != rex_id
        assert_valid(tom, schema_of(petstore, "getPetById", "200"))

        by_key = send(
            "GET", f"{petstore.url}/pet/{rex_id}", headers={"api_key": ACME.api_key or ""}
        )
        assert by_key.json() == rex.json()
        sold = acme.get("/pet/findByStatus", params={"status": "sold"}).json()
        assert tom["id"] in ids(sold)
        assert rex_id not in ids(sold)
        assert {p["status"] for p in sold} == {"sold"}

        assert acme.delete(f"/pet/{rex_id}").status_code == 200
        gone = acme.get(f"/pet/{rex_id}")
        assert gone.status_code == 404
        assert gone.headers["content-type"] == "application/problem+json"
        assert gone.json()["status"] == 404

        alice = {"username": "alice", "firstName": "Alice", "email": "alice@acme.example"}
        assert acme.post("/user", json=alice).json() == alice
        assert acme.get("/user/alice").json() == alice
        replaced = {"username": "alice", "firstName": "Alicia"}
        assert acme.put("/user/alice", json=replaced).status_code == 200
        assert acme.get("/user/alice").json() == replaced
        assert acme.delete("/user/alice").status_code == 200
        assert acme.get("/user/alice").status_code == 404


def test_petstore_pets_of_one_connection_are_invisible_to_another(petstore: Running) -> None:
    with pet_client(petstore, ACME) as acme, pet_client(petstore, GLOBEX) as globex:
        mine = acme.post("/pet", json={**PET, "status": "pending"}).json()
        assert globex.get(f"/pet/{mine['id']}").status_code == 404
        pending = globex.get("/pet/findByStatus", params={"status": "pending"}).json()
        assert mine["id"] not in ids(pending)
        globex.delete(f"/pet/{mine['id']}")  # deletePet declares no 404: see the xfail below
        assert acme.get(f"/pet/{mine['id']}").json() == mine, "another connection deleted it"

    wrong = send("GET", f"{petstore.url}/pet/{mine['id']}", headers={"api_key": "ak_not_known"})
    assert wrong.status_code == 401
    assert wrong.headers["content-type"] == "application/problem+json"
    assert "www-authenticate" in wrong.headers
    assert wrong.json()["status"] == 401


def test_deleting_a_pet_that_is_not_there_is_refused(petstore: Running) -> None:
    with pet_client(petstore, ACME) as acme, pet_client(petstore, GLOBEX) as globex:
        pet_id = acme.post("/pet", json=PET).json()["id"]
        assert globex.delete(f"/pet/{pet_id}").status_code in (400, 404)


def test_updating_a_pet_with_form_parameters_changes_the_stored_pet(petstore: Running) -> None:
    with pet_client(petstore, ACME) as acme:
        pet_id = acme.post("/pet", json=PET).json()["id"]
        updated = acme.post(f"/pet/{pet_id}", params={"name": "Rexy", "status": "sold"})
        assert updated.json()["id"] == pet_id
        assert acme.get(f"/pet/{pet_id}").json()["name"] == "Rexy"


def test_put_pet_replaces_the_pet_named_by_its_body_id(petstore: Running) -> None:
    # updatePet has no id in its path: the pet in the body names the record it replaces.
    with pet_client(petstore, ACME) as acme:
        pet_id = acme.post("/pet", json=PET).json()["id"]
        replaced = {**PET, "id": pet_id, "name": "Rex II", "status": "sold"}
        assert acme.put("/pet", json=replaced).json() == replaced
        assert acme.get(f"/pet/{pet_id}").json() == replaced
        unknown = acme.put("/pet", json={**PET, "id": 987654321})
        assert unknown.status_code == 404  # updatePet declares "Pet not found"
        assert acme.get("/pet/987654321").status_code == 404


def test_find_by_status_without_a_status_lists_available_pets(petstore: Running) -> None:
    with pet_client(petstore, ACME) as acme:
        acme.post("/pet", json={**PET, "status": "sold"})
        listed = acme.get("/pet/findByStatus").json()
        assert {p["status"] for p in listed} == {"available"}


# -- OAI petstore-expanded: no security, connections named by header ------------------------------

EXPANDED = "oai-petstore-expanded.oas30.yaml"
AS_ACME = {"X-Apitwin-Connection": "acme"}
AS_GLOBEX = {"X-Apitwin-Connection": "globex"}


@pytest.fixture(scope="module")
def expanded() -> Iterator[Running]:
    need_specs()
    with serve_twin(SPECS / EXPANDED, connections=BOTH) as running:
        yield running


def test_petstore_expanded_pets_are_created_read_listed_and_deleted(expanded: Running) -> None:
    pets = expanded.twin.resource_map.resources["pets"]
    assert pets.id_field == "id"
    assert pets.pagination.limit_param == "limit"
    assert dict(pets.operations) == {
        "list": "findPets",
        "create": "addPet",
        "read": "find pet by id",
        "delete": "deletePet",
    }
    with client(base_url=expanded.url, headers=AS_ACME) as acme:
        made = []
        for name, tag in (("Fido", "dog"), ("Tom", "cat"), ("Rex", "dog")):
            response = acme.post("/pets", json={"name": name, "tag": tag})
            assert response.status_code == 200, response.text
            made.append(response.json())
            assert response.json() == {"name": name, "tag": tag, "id": response.json()["id"]}
        listed = acme.get("/pets").json()
        assert_valid(listed, schema_of(expanded, "findPets", "200"))
        assert {p["id"] for p in made} <= set(ids(listed))
        assert acme.get("/pets", params={"limit": 2}).json() == listed[:2]
        assert acme.get(f"/pets/{made[0]['id']}").json() == made[0]

        assert acme.delete(f"/pets/{made[0]['id']}").status_code == 204
        assert made[0]["id"] not in ids(acme.get("/pets").json())
        assert acme.get(f"/pets/{made[1]['id']}").json() == made[1]


def test_petstore_expanded_connections_named_by_header_are_isolated(expanded: Running) -> None:
    with (
        client(base_url=expanded.url, headers=AS_ACME) as acme,
        client(base_url=expanded.url, headers=AS_GLOBEX) as globex,
        client(base_url=expanded.url) as anonymous,
    ):
        mine = acme.post("/pets", json={"name": "Acme's"}).json()
        assert mine["id"] not in ids(globex.get("/pets").json())
        assert mine["id"] not in ids(anonymous.get("/pets").json())
        assert globex.get(f"/pets/{mine['id']}").json() != mine
        assert acme.get(f"/pets/{mine['id']}").json() == mine

        unknown = anonymous.get("/pets", headers={"X-Apitwin-Connection": "initech"})
        assert unknown.status_code == 401
        assert_valid(unknown.json(), schema_of(expanded, "findPets", "default"))
        assert unknown.json()["code"] == 401
        assert "www-authenticate" in unknown.headers


def test_reading_a_deleted_pet_answers_not_found(expanded: Running) -> None:
    with client(base_url=expanded.url, headers=AS_ACME) as acme:
        pet_id = acme.post("/pets", json={"name": "Short-lived"}).json()["id"]
        assert acme.delete(f"/pets/{pet_id}").status_code == 204
        response = acme.get(f"/pets/{pet_id}")
        assert response.status_code == 404
        assert response.json()["code"] == 404


def test_listing_pets_by_tag_returns_only_that_tag(expanded: Running) -> None:
    # findPets' plural array parameter `tags` filters the singular `tag` field: any of them.
    with client(base_url=expanded.url, headers=AS_GLOBEX) as globex:
        globex.post("/pets", json={"name": "Fido", "tag": "dog"})
        globex.post("/pets", json={"name": "Tom", "tag": "cat"})
        globex.post("/pets", json={"name": "Polly", "tag": "bird"})
        assert {p.get("tag") for p in globex.get("/pets", params={"tags": "dog"}).json()} == {"dog"}
        both = globex.get("/pets", params=[("tags", "dog"), ("tags", "bird")]).json()
        assert {p.get("tag") for p in both} == {"dog", "bird"}
        assert {p.get("tag") for p in globex.get("/pets").json()} == {"dog", "cat", "bird"}


def test_a_restart_does_not_reuse_integer_ids(tmp_path: Path) -> None:
    need_specs()
    db = tmp_path / "twin.db"
    with serve_twin(SPECS / EXPANDED, db=db, connections=(ACME,)) as running:
        first = send("POST", f"{running.url}/pets", json={"name": "Before"}, headers=AS_ACME).json()
    with serve_twin(SPECS / EXPANDED, db=db) as running:
        second = send("POST", f"{running.url}/pets", json={"name": "After"}, headers=AS_ACME).json()
        listed = send("GET", f"{running.url}/pets", headers=AS_ACME).json()
    assert second["id"] != first["id"]
    assert listed == [first, second]
