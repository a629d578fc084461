"""apitwin's own cost per request, without sockets: the ASGI app called in-process.

    .venv/bin/python bench/hotpath.py              # µs per request for A, B, C
    .venv/bin/python bench/hotpath.py C --profile  # and where it goes (pyinstrument)

Useful next to bench/run.py: the HTTP server's share drops out, and so does the noise of wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from run import PETSTORE, SEED_PETS

from apitwin.config import Settings, twin_for_spec
from apitwin.server.app import create_app

CASES: dict[str, tuple[str, str, bytes]] = {
    "A": ("GET", "/pets", b""),
    "B": ("GET", "/pets/1", b""),
    "C": ("POST", "/pets", b""),  # a fresh id per request, like bench/run.py
}


def scope(method: str, path: str) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk")]
    if method == "POST":
        headers.append((b"content-type", b"application/json"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


async def call(app: Any, method: str, path: str, body: bytes) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope(method, path), receive, send)
    return status


async def measure(case: str, count: int, profile: bool, concurrency: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="apitwin-hotpath-"))
    app = create_app(Settings(twins=(twin_for_spec(PETSTORE),), db=str(work / "hot.db")))
    await app.startup()
    await asyncio.wait_for(app.mcp.ready.wait(), 60)  # built in the background: not measured
    try:
        for pet in SEED_PETS:
            await call(app, "POST", "/pets", orjson_bytes(pet))
        method, path, body = CASES[case]
        bodies = [
            orjson_bytes({"id": 1000 + i, "name": "Garfield", "tag": "cat"}) for i in range(count)
        ]
        for i in range(min(500, count)):  # warm-up
            await call(app, method, path, bodies[i] if method == "POST" else body)
        profiler: Any = None
        if profile:
            import pyinstrument

            profiler = pyinstrument.Profiler(interval=0.0002)
            profiler.start()
        started, cpu = time.perf_counter(), time.process_time()
        statuses: dict[int, int] = {}
        ids = iter(range(10**6, 10**6 + count))

        async def client(requests: int) -> None:
            for _ in range(requests):
                payload = orjson_bytes({"id": next(ids), "name": "G"}) if method == "POST" else body
                got = await call(app, method, path, payload)
                statuses[got] = statuses.get(got, 0) + 1
                await asyncio.sleep(0)  # a server's loop turns between requests: others run

        clients = max(1, concurrency)
        await asyncio.gather(*(client(count // clients) for _ in range(clients)))
        count = count // clients * clients
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False))
        print(
            f"{case} ({concurrency} clients): {elapsed / count * 1e6:.0f} µs per request, "
            f"{cpu / count * 1e6:.0f} µs CPU ({statuses})"
        )
    finally:
        await app.shutdown()


def orjson_bytes(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=["A", "B", "C"])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--concurrency", type=int, default=50, help="clients interleaved on the loop (as wrk -c)"
    )
    args = parser.parse_args()
    for case in args.cases:
        asyncio.run(measure(case, args.count, args.profile, args.concurrency))


if __name__ == "__main__":
    main()
