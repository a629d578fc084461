"""Throughput of a shared twin: SQLite vs PostgreSQL, and one vs two replicas on PostgreSQL.

Run on demand, never in the test suite, with a PostgreSQL server to use:

    source .ci/postgres.sh            # a throwaway server on loopback; exports its URL
    .venv/bin/python bench/replicas.py [--seconds 10] [--concurrency 16]

Each setup serves the bundled example (two connections, no webhook endpoint) through real
`apitwin serve` processes on 127.0.0.1 and a fresh database; an asyncio load generator in this
process spreads requests round-robin over the replicas (a stand-in for a load balancer). The
workload is the system under test's: submit an expert to a project (a validated write, journaled)
and read it back, alternately. Each run is bounded by --seconds; the numbers are requests per
second over that window, after a one-second warm-up, and the median latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "src" / "apitwin" / "examples" / "expert-network" / "openapi.yaml"
SERVE = [sys.executable, "-m", "apitwin", "serve"]
PROJECT = "prj_BenchReplica"
KEY = "ak_bench_acme"
EXPERT = {
    "name": "Mara Quillfeather",
    "headline": "Former VP Procurement at a cell manufacturer",
    "employment_history": [
        {
            "company": "Cellco",
            "title": "VP Procurement",
            "start_date": "2018-01-01",
            "end_date": None,
            "current": True,
        }
    ],
    "hourly_rate": {"amount": 900, "currency": "USD"},
    "compliance": {
        "attested": True,
        "attested_at": "2026-11-01T10:00:00Z",
        "conflicts_declared": False,
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, db: str) -> Path:
    config = folder / "apitwin.yaml"
    config.write_text(
        textwrap.dedent(f"""
        server: {{db: "{db}"}}
        twins:
          - name: research
            spec: {EXAMPLE}
            fixtures:
              projects:
                - {{id: {PROJECT}, title: Bench, brief: Throughput, industry: industrials,
                    geographies: [DE], status: open}}
            connections:
              - {{client_id: acme, api_key: {KEY}}}
    """)
    )
    return config


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    import psycopg

    name = "apitwin_bench_" + secrets.token_hex(4)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(server)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def replicas(config: Path, count: int) -> Iterator[list[str]]:
    """``count`` serve processes on one config, started one after another; their origins."""
    with ExitStack() as stack:
        origins = []
        for _ in range(count):
            port = free_port()
            process = subprocess.Popen(
                [*SERVE, "--config", str(config), "--port", str(port), "--log-level", "warning"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(stop, process)
            origin = f"http://127.0.0.1:{port}"
            wait_ready(origin, process)
            origins.append(origin)
        yield origins


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wait_ready(origin: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{origin}/_apitwin/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"the replica at {origin} did not start")


async def load(origins: list[str], seconds: float, concurrency: int) -> tuple[float, float, int]:
    """(requests per second, median latency in ms, errors) over ``seconds`` after warm-up."""
    headers = {"authorization": f"Bearer {KEY}"}
    latencies: list[float] = []
    errors = 0
    start = time.monotonic() + 1.0  # warm-up: not counted
    end = start + seconds

    async def worker(n: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=30) as client:
            turn = n
            while time.monotonic() < end:
                base = f"{origins[turn % len(origins)]}/partner/v1/projects/{PROJECT}/experts"
                turn += 1
                began = time.monotonic()
                answer = await client.post(base, json=EXPERT, headers=headers)
                ok = answer.status_code == 201
                if ok:
                    expert = answer.json()["id"]
                    base = f"{origins[turn % len(origins)]}/partner/v1/projects/{PROJECT}/experts"
                    turn += 1
                    read = await client.get(f"{base}/{expert}", headers=headers)
                    ok = read.status_code == 200
                done = time.monotonic()
                if began >= start and done <= end:
                    latencies.append((done - began) * 500)  # two requests: ms per request
                    errors += 0 if ok else 1

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    requests = 2 * len(latencies)
    return requests / seconds, statistics.median(latencies) if latencies else 0.0, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per setup")
    parser.add_argument("--concurrency", type=int, default=16, help="clients at once")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("APITWIN_TEST_POSTGRES_URL", ""),
        help="server URL (default: $APITWIN_TEST_POSTGRES_URL, as .ci/postgres.sh exports)",
    )
    args = parser.parse_args()
    if not args.postgres:
        parser.error("no PostgreSQL server: `source .ci/postgres.sh` first, or pass --postgres")
    seconds = max(1.0, min(args.seconds, 120.0))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        setups = [("SQLite file", 1, None), ("PostgreSQL", 1, "pg"), ("PostgreSQL", 2, "pg")]
        for label, count, backend in setups:
            with ExitStack() as stack:
                db = (
                    stack.enter_context(postgres_database(args.postgres))
                    if backend
                    else str(Path(folder) / f"bench-{secrets.token_hex(3)}.db")
                )
                config = write_config(Path(folder), db)
                origins = stack.enter_context(replicas(config, count))
                rate, median, errors = asyncio.run(load(origins, seconds, args.concurrency))
            rows.append((label, count, rate, median, errors))
            print(
                f"{label:12} x{count}: {rate:8.0f} req/s  median {median:6.1f} ms  errors {errors}"
            )
    print()
    print("| storage | replicas | requests/s | median latency (ms) |")
    print("| --- | --- | --- | --- |")
    for label, count, rate, median, _ in rows:
        print(f"| {label} | {count} | {rate:.0f} | {median:.1f} |")


if __name__ == "__main__":
    main()
