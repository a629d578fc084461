"""The server's console: one log line per request, as text or JSON, and never a secret."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest

from conftest import EXAMPLE

API_KEY = "ak_logtest_9f3c2e71d4"
CLIENT_SECRET = "cs_logtest_b8a6e0d2c5"
QUERY_SECRET = "qs_logtest_5e1f0a9b7c"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals")


@dataclass
class Server:
    origin: str
    head: list[str]
    process: subprocess.Popen[str]
    tail: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.head + self.tail)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path) -> Path:
    config = folder / "apitwin.yaml"
    config.write_text(
        textwrap.dedent(f"""
        twins:
          - name: research
            spec: {EXAMPLE}
            connections:
              - client_id: acme-qa
                api_key: ${{LOGTEST_KEY}}
                client_secret: ${{LOGTEST_SECRET}}
        """)
    )
    return config


@contextmanager
def serving(tmp_path: Path, *options: str, ready: str) -> Iterator[Server]:
    """`apitwin serve` as a process; yields once stderr shows ``ready``, and collects the rest."""
    port = free_port()
    command = [sys.executable, "-m", "apitwin", "serve", "--config", str(write_config(tmp_path))]
    command += ["--port", str(port), "--db", ":memory:", *options]
    env = {**os.environ, "LOGTEST_KEY": API_KEY, "LOGTEST_SECRET": CLIENT_SECRET}
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path, env=env
    )
    server = Server(f"http://127.0.0.1:{port}", [], process)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            server.head.append(line)
            if ready in line:
                break
        assert ready in server.output, server.output
        yield server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            server.tail = process.stderr.readlines()
            process.stderr.close()


def exercise(origin: str) -> str:
    """A few requests: answered, refused, fault-injected, unserved. Returns the fault's id."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    api = f"{origin}/partner/v1"
    assert httpx.get(f"{api}/projects", headers=auth).status_code == 200
    assert httpx.get(f"{api}/projects", params={"api_key": QUERY_SECRET}).status_code == 401
    fault = httpx.post(
        f"{origin}/_apitwin/api/connections/acme-qa/faults",
        json={"kind": "status", "params": {"status": 503}, "operation": "listProjects", "next": 1},
    )
    assert fault.status_code in (200, 201), fault.text
    assert httpx.get(f"{api}/projects", headers=auth).status_code == 503
    assert httpx.get(f"{origin}/elsewhere").status_code == 404
    return str(fault.json()["id"])


def test_text_log_has_one_line_per_request_and_no_secrets(tmp_path: Path) -> None:
    with serving(tmp_path, ready="press Ctrl+C") as server:
        fault_id = exercise(server.origin)
    assert re.search(
        r"^ready in \d+\.\d s  \(1 twin, 22 operations, \d+ resources\)$", server.output, re.M
    )
    lines = [line.rstrip("\n") for line in server.tail]
    time = r"\d\d:\d\d:\d\d"
    expected = [
        rf"{time} acme-qa  listProjects  GET /partner/v1/projects → 200  \d+\.\d ms",
        rf"{time} default  listProjects  GET /partner/v1/projects → 401  \d+\.\d ms",
        rf"{time} acme-qa  listProjects  GET /partner/v1/projects → 503  \d+\.\d ms"
        rf"  \[fault {re.escape(fault_id)} status\]",
        rf"{time} -  -  GET /elsewhere → 404  \d+\.\d ms",
    ]
    requests = [line for line in lines if " → " in line]
    assert len(requests) == len(expected), lines
    for pattern, line in zip(expected, requests, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)
    for secret in (API_KEY, CLIENT_SECRET, QUERY_SECRET):
        assert secret not in "\n".join(lines)
    assert "/_apitwin" not in "\n".join(lines), "admin requests stay out of the request log"


def test_json_log_is_one_object_per_line_with_secrets_only_where_created(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, "--log-format", "json", ready='"message":"ready"') as server:
        fault_id = exercise(server.origin)
    records = [json.loads(line) for line in server.output.splitlines() if line.strip()]
    ready = next(r for r in records if r["message"] == "ready")
    assert ready["twins"][0]["api"] == f"{server.origin}/partner/v1"
    connections = {c["client_id"]: c for c in ready["twins"][0]["connections"]}
    assert list(connections) == ["default", "acme-qa"]
    # Created by this process: shown in full once, as the text banner does.
    assert connections["acme-qa"]["api_key"] == API_KEY
    assert connections["acme-qa"]["client_secret"] == CLIENT_SECRET
    requests = [r for r in records if r["logger"] == "apitwin.requests"]
    assert [(r["connection"], r["operation"], r["status"]) for r in requests] == [
        ("acme-qa", "listProjects", 200),
        ("default", "listProjects", 401),
        ("acme-qa", "listProjects", 503),
        ("-", None, 404),
    ]
    first = requests[0]
    assert first["twin"] == "research"
    assert first["method"] == "GET"
    assert first["path"] == "/partner/v1/projects"
    assert first["level"] == "info"
    assert isinstance(first["latency_ms"], float)
    assert first["fault"] is None
    assert (requests[2]["fault"], requests[2]["fault_kind"]) == (fault_id, "status")
    others = json.dumps([r for r in records if r is not ready])
    for secret in (API_KEY, CLIENT_SECRET, QUERY_SECRET):
        assert secret not in others


def test_log_level_warning_leaves_out_request_lines(tmp_path: Path) -> None:
    with serving(tmp_path, "--log-level", "warning", ready="press Ctrl+C") as server:
        exercise(server.origin)
    assert "ready in" in server.output
    assert " → " not in server.output


def test_schema_command_prints_the_published_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "apitwin", "schema"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    published = Path(__file__).parents[2] / "src" / "apitwin" / "schema" / "apitwin.schema.json"
    assert result.stdout == published.read_text(encoding="utf-8")
    assert json.loads(result.stdout)["title"].startswith("apitwin configuration")


def test_a_path_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    from apitwin.logs import REQUEST_LOGGER, JsonFormatter, TextFormatter, log_request

    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        log_request(
            "t",
            connection="qa",
            operation=None,
            method="GET",
            path="/a\r\n12:00:00 forged",
            status=404,
            latency_ms=1.0,
        )
    [record] = caplog.records
    text = TextFormatter().format(record)
    assert "\n" not in text and "\r" not in text
    assert text.endswith("qa  -  GET /a\\x0d\\x0a12:00:00 forged → 404  1.0 ms")
    assert json.loads(JsonFormatter().format(record))["path"] == "/a\\x0d\\x0a12:00:00 forged"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_request_line_is_the_same_written_directly_or_through_logging(log_format: str) -> None:
    """Alone on the root logger, the console takes request lines straight from log_request;
    with another handler beside it they go through the logging machinery: same lines."""
    import io

    from apitwin.logs import (
        ConsoleHandler,
        _sole_console,
        log,
        log_request,
        request_log,
        setup_logging,
    )

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, log.level)
    stream = io.StringIO()
    try:
        root.handlers.clear()
        setup_logging(log_format, "info", stream)
        for extra_handler in (None, logging.NullHandler()):
            if extra_handler is not None:
                root.addHandler(extra_handler)
            direct = _sole_console()
            assert isinstance(direct, ConsoleHandler) if extra_handler is None else direct is None
            assert request_log.isEnabledFor(logging.INFO)
            log_request(
                "research",
                connection="acme-qa",
                operation="submitExpert",
                method="POST",
                path="/projects/p1/experts",
                status=201,
                latency_ms=3.14159,
                fault="f1",
                fault_kind="delay",
            )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        log.setLevel(saved[2])
    direct, logged = stream.getvalue().splitlines()
    if log_format == "json":
        first, second = json.loads(direct), json.loads(logged)
        assert first.pop("time")[:10] == second.pop("time")[:10]
        assert first == second and first["latency_ms"] == 3.14 and first["fault_kind"] == "delay"
    else:
        assert re.fullmatch(r"\d\d:\d\d:\d\d ", direct[:9]) and direct[9:] == logged[9:]
        assert direct[9:] == (
            "acme-qa  submitExpert  POST /projects/p1/experts → 201  3.1 ms  [fault f1 delay]"
        )


def test_uvicorns_advice_to_install_a_websocket_library_is_not_shown() -> None:
    import io

    from apitwin.logs import log, setup_logging

    root = logging.getLogger()
    uvicorn_log = logging.getLogger("uvicorn.error")
    saved = (root.handlers[:], root.level, log.level, uvicorn_log.level)
    caught = io.StringIO()
    catcher = logging.StreamHandler(caught)  # on the logger itself: whatever configured uvicorn's
    try:
        root.handlers.clear()
        setup_logging("text", "info", io.StringIO())
        setup_logging("text", "info", io.StringIO())  # set up twice: still one filter
        uvicorn_log.addHandler(catcher)
        uvicorn_log.setLevel(logging.WARNING)
        uvicorn_log.warning("Unsupported upgrade request.")
        uvicorn_log.warning(
            'No supported WebSocket library detected. Please use "pip install '
            "'uvicorn[standard]'\", or install 'websockets' or 'wsproto' manually."
        )
    finally:
        uvicorn_log.removeHandler(catcher)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        log.setLevel(saved[2])
        uvicorn_log.setLevel(saved[3])
    assert caught.getvalue().splitlines() == ["Unsupported upgrade request."]
    assert len(uvicorn_log.filters) == 1


class _CountingStream:
    """A console that counts the writes it is given (a system call each on a real one)."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(self.writes)


@contextmanager
def _console(stream: _CountingStream) -> Iterator[None]:
    from apitwin.logs import log, setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, log.level)
    try:
        root.handlers.clear()
        setup_logging("text", "info", stream)  # type: ignore[arg-type]
        yield
    finally:
        for handler in root.handlers:
            handler.flush()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        log.setLevel(saved[2])


def _request_line(path: str) -> None:
    from apitwin.logs import log_request

    log_request(
        "t", connection="c", operation="op", method="GET", path=path, status=200, latency_ms=1.0
    )


def test_request_lines_of_one_turn_of_the_loop_are_written_together_and_in_order() -> None:
    """On an event loop the lines of one turn go out in one write when the turn ends; a record
    of another logger first writes the lines held before it, so the order stays as logged."""
    import asyncio

    stream = _CountingStream()

    async def serve() -> None:
        _request_line("/a")
        _request_line("/b")
        assert stream.writes == []  # held until this turn of the loop ends
        await asyncio.sleep(0)
        assert len(stream.writes) == 1
        assert [line[9:] for line in stream.text.splitlines()] == [
            "c  op  GET /a → 200  1.0 ms",
            "c  op  GET /b → 200  1.0 ms",
        ]
        _request_line("/c")
        logging.getLogger("apitwin").warning("something else")
        _request_line("/d")
        await asyncio.sleep(0)

    with _console(stream):
        asyncio.run(serve())
    lines = [line[9:] for line in stream.text.splitlines()]
    assert lines[2:] == [
        "c  op  GET /c → 200  1.0 ms",
        "warning apitwin: something else",
        "c  op  GET /d → 200  1.0 ms",
    ]


def test_request_lines_outside_an_event_loop_are_written_at_once() -> None:
    stream = _CountingStream()
    with _console(stream):
        _request_line("/a")
        assert stream.text.endswith("GET /a → 200  1.0 ms\n")
        _request_line("/b")
        assert len(stream.writes) == 2


def test_request_lines_held_when_the_loop_stops_are_written_by_the_handlers_flush() -> None:
    """A loop closed before its next turn (a server stopping) loses no line: logging's
    shutdown flushes every handler."""
    import asyncio

    stream = _CountingStream()
    with _console(stream):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(asyncio.sleep(0))
            loop.call_soon(_request_line, "/late")
            loop.call_soon(loop.stop)
            loop.run_forever()  # the line is logged in the loop's last turn
        finally:
            loop.close()
        assert stream.writes == []
        logging.getLogger().handlers[0].flush()
        assert stream.text.endswith("GET /late → 200  1.0 ms\n")
