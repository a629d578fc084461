"""Where apitwin's CPU per request goes under load: parts switched off, one variant at a time.

    .venv/bin/python bench/parts.py A                  # every variant, 3 rounds
    .venv/bin/python bench/parts.py C --rounds 5 --variants full,unstored

Serves the petstore spec as bench/run.py does (the server pinned to CPU 1, wrk with 50
connections on CPU 0), once per variant and round, the variants alternating so the host's slow
and quick phases weigh on them alike, and prints the server's CPU per request (user + system,
median over the rounds) and its requests per second. The variants switch parts off inside the
served process:

    full       apitwin as it ships (journal on, request log on)
    unstored   journal entries built, never stored
    nojournal  no journal
    nolog      no journal and no request log
    bare       fixed bytes from a bare ASGI app on the same uvicorn: the floor

``full`` also reports timers kept inside the server (thread CPU time around each part): the
store's writes per journal entry, building an entry, and the request log line. The variants are
measurement switches of this script, not options of apitwin.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VARIANTS = ("full", "unstored", "nojournal", "nolog", "bare")
CONNECTIONS = 50
BARE_BODY = (
    b'[{"id":1,"name":"Garfield","tag":"cat"},{"id":2,"name":"Odie","tag":"dog"},'
    b'{"id":3,"name":"Nermal","tag":"cat"}]'
)


# -- the served process --------------------------------------------------------------------------


def serve(variant: str, port: int, db: str, report: str) -> None:
    import uvicorn
    from run import PETSTORE

    from apitwin.config import Settings, twin_for_spec
    from apitwin.logs import setup_logging
    from apitwin.server.app import create_app
    from apitwin.server.transport import uvicorn_http_options

    uvicorn_level = setup_logging("text", "warning" if variant == "nolog" else "info")
    app: Any = create_app(Settings(twins=(twin_for_spec(PETSTORE),), db=db))
    timers = {"store": 0.0, "commits": 0, "build": 0.0, "entries": 0, "log": 0.0, "lines": 0}
    for twin in app.twins:
        journal = twin.journal
        if variant in ("nojournal", "nolog"):

            async def unjournalled(*args: Any, **kwargs: Any) -> None:
                return None

            journal.submit = unjournalled
        elif variant == "unstored":

            async def built(queued: list[Any], journal: Any = journal) -> None:
                for item in queued:
                    item.data or journal._build(item)

            journal._store = built
        elif variant == "full":
            _time_parts(journal, twin, timers)
    if variant == "bare":
        app = _bare

    def write_report(*_: Any) -> None:
        Path(report).write_text(json.dumps(timers))

    signal.signal(signal.SIGUSR1, write_report)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        log_level=uvicorn_level,
        **uvicorn_http_options(),
    )
    uvicorn.Server(config).run()


def _time_parts(journal: Any, twin: Any, timers: dict[str, Any]) -> None:
    store = journal.store
    for name in ("_write_group", "_write"):
        setattr(store, name, _timed(getattr(store, name), timers, "store", "commits"))
    journal._build = _timed(journal._build, timers, "build", "entries")
    twin._log_request = _timed(twin._log_request, timers, "log", "lines")


def _timed(function: Any, timers: dict[str, Any], total: str, count: str) -> Any:
    """``function``, adding its thread CPU time to ``timers[total]`` and its calls to ``count``."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            timers[total] += time.thread_time() - started
            timers[count] += 1

    return timed


async def _bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BARE_BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BARE_BODY})


# -- the harness ---------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def measure(variant: str, scenario: str, wrk: Any, work: Path) -> dict[str, float]:
    from run import SERVER_CPU, SERVERS, Running, free_port, seed_pets

    port = free_port()
    report = work / f"report-{variant}-{port}.json"
    command = [sys.executable, __file__, "--serve", variant, str(port), str(work / f"{port}.db")]
    command += [str(report)]
    log = open(work / f"{variant}-{port}.log", "wb")  # noqa: SIM115 (kept for the process)
    process = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CPU), *command], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url)
        if variant != "bare":
            seed_pets(url)
        running = Running(SERVERS["apitwin"], process, port, 0.0)
        wrk.run_unmeasured(running, scenario, CONNECTIONS, 2.0)
        before = cpu_ticks(process.pid)
        result = wrk.run(running, scenario, CONNECTIONS, 0.0)
        ticks = cpu_ticks(process.pid) - before
        found = {
            "rps": result.rps,
            "cpu_us": ticks / os.sysconf("SC_CLK_TCK") * 1e6 / max(1, result.requests),
            "p99_ms": result.p99_ms,
        }
        if variant == "full":
            process.send_signal(signal.SIGUSR1)
            for _ in range(50):
                if report.exists():
                    break
                time.sleep(0.1)
            timers = json.loads(report.read_text())
            entries = max(1, timers["entries"])
            found["store_us_per_entry"] = timers["store"] / entries * 1e6
            found["entries_per_commit"] = timers["entries"] / max(1, timers["commits"])
            found["build_us"] = timers["build"] / entries * 1e6
            found["log_us"] = timers["log"] / max(1, timers["lines"]) * 1e6
        return found
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_http(url: str) -> None:
    import httpx2 as httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="A", choices=("A", "B", "C"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--serve", nargs=4, metavar=("VARIANT", "PORT", "DB", "REPORT"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.serve:
        variant, port, db, report = args.serve
        serve(variant, int(port), db, report)
        return
    from run import Wrk, ensure_wrk, pin_self

    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    pin_self()
    work = Path(tempfile.mkdtemp(prefix="apitwin-parts-"))
    wrk = Wrk(ensure_wrk(), work, args.duration, 0.0)  # warmed up by measure()
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for round_no in range(args.rounds):
        order = variants[round_no % len(variants) :] + variants[: round_no % len(variants)]
        for variant in order:
            found = measure(variant, args.scenario, wrk, work)
            results[variant].append(found)
            shown = ", ".join(f"{k} {v:,.1f}" for k, v in found.items())
            print(f"round {round_no + 1} {variant}: {shown}", file=sys.stderr, flush=True)
    print(f"\n{args.scenario} at {CONNECTIONS} connections, medians of {args.rounds} rounds\n")
    print("| variant | server CPU µs/request | req/s | p99 ms |")
    print("|---|---:|---:|---:|")
    for variant in variants:
        rows = results[variant]
        cpu = statistics.median(r["cpu_us"] for r in rows)
        rps = statistics.median(r["rps"] for r in rows)
        p99 = statistics.median(r["p99_ms"] for r in rows)
        print(f"| {variant} | {cpu:.1f} | {rps:,.0f} | {p99:.2f} |")
    if "full" in results:
        rows = results["full"]
        parts = ("store_us_per_entry", "entries_per_commit", "build_us", "log_us")
        medians = {p: statistics.median(r[p] for r in rows) for p in parts}
        print(
            f"\ninside the server (full): the store {medians['store_us_per_entry']:.1f} µs per "
            f"journal entry ({medians['entries_per_commit']:.1f} entries per commit), building "
            f"an entry {medians['build_us']:.1f} µs, the request log line "
            f"{medians['log_us']:.1f} µs"
        )


if __name__ == "__main__":
    main()
