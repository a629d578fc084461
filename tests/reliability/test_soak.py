"""Load: a bounded soak at a steady request rate with deliveries flowing.

`APITWIN_SOAK_SECONDS` sets the length (30 s by default, 300 for the long form). Every answer must
be the expected one, every webhook (a create and a patch each send one) must arrive, the journal
ring must stay bounded, and the server's resident memory may grow only a little between the end of
the warm-up and the end of the run. The latency percentiles are reported (printed, and written to
the figures file), not asserted.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest
from rig import Server, launch, record_figures, write_config

from conftest import PROJECT, Receiver, serve

SECONDS = float(os.environ.get("APITWIN_SOAK_SECONDS", "30"))
RATE = float(os.environ.get("APITWIN_SOAK_RATE", "40"))  # requests per second, all clients
CLIENTS = 8  # each has CLIENTS / RATE seconds per request: room for slow answers
WARM_UP = min(10.0, SECONDS / 4)
RING = 1000  # journal entries kept per connection (the default ring); the CI run wraps it
MAX_GROWTH = 50 * 1024 * 1024  # bytes of resident memory after the warm-up
KEY = "ak_soak_acme_0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: list[str] = field(default_factory=list)
    created: int = 0
    events: int = 0  # webhooks the answered requests caused
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(server: Server, worker: int, deadline: float, tally: Tally) -> None:
    """One client at RATE / CLIENTS: create, list, read, patch in turn, on a fixed schedule."""
    interval = CLIENTS / RATE
    start = time.monotonic() + worker * interval / CLIENTS  # clients interleave evenly
    mine: list[str] = []
    with httpx.Client(headers=AUTH, timeout=30) as client:
        for n in range(int(SECONDS * RATE) + 1):  # bounded: never more than the schedule
            due = start + n * interval
            if due >= deadline or time.monotonic() >= deadline:
                return  # a client that fell behind drops its late slots: the run ends on time
            time.sleep(max(0.0, due - time.monotonic()))
            step = n % 4
            began = time.perf_counter()
            try:
                if step == 0 or not mine:
                    answer = client.post(
                        server.partner("/projects"), json={**PROJECT, "title": f"S{worker}-{n}"}
                    )
                    expected = 201
                elif step == 1:
                    answer = client.get(server.partner("/projects"), params={"limit": 20})
                    expected = 200
                elif step == 2:
                    answer = client.get(server.partner(f"/projects/{mine[-1]}"))
                    expected = 200
                else:
                    answer = client.patch(
                        server.partner(f"/projects/{mine[-1]}"), json={"brief": f"Brief {n}"}
                    )
                    expected = 200
            except httpx.TransportError as exc:
                with tally.lock:
                    tally.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - began
            with tally.lock:
                tally.requests += 1
                tally.latencies.append(elapsed)
                if answer.status_code != expected:
                    tally.errors.append(f"{answer.request.method} {answer.status_code}")
                    continue
                if answer.request.method in ("POST", "PATCH"):
                    tally.events += 1
                if expected == 201:
                    tally.created += 1
                    mine.append(answer.json()["id"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.fixture
def hooks() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serve(app) as origin:
        yield app, origin


@pytest.mark.timeout(SECONDS + 180)  # the long form runs past the suite's default limit
def test_a_steady_soak_with_deliveries_has_no_error_and_flat_memory(
    tmp_path: Path, hooks: tuple[Receiver, str]
) -> None:
    receiver, origin = hooks
    conn = {"client_id": "acme", "api_key": KEY, "webhook_url": f"{origin}/hooks"}
    config = write_config(tmp_path / "apitwin.yaml", tmp_path / "twin.db", [conn])
    server = launch(config, tmp_path / "server.log")
    tally = Tally()
    try:
        began = time.monotonic()
        deadline = began + SECONDS
        workers = [
            threading.Thread(target=client_loop, args=(server, n, deadline, tally))
            for n in range(CLIENTS)
        ]
        for worker in workers:
            worker.start()
        time.sleep(WARM_UP)
        rss_start = server.rss_bytes()
        for worker in workers:
            worker.join(SECONDS + 60)
        elapsed = time.monotonic() - began
        rss_end = server.rss_bytes()
        receiver.wait_for(tally.events, timeout=60)
        journal = httpx.get(f"{server.admin('acme')}/requests/count").json()["count"]
        failed = httpx.get(
            f"{server.admin('acme')}/deliveries", params={"status": "failed"}
        ).json()["deliveries"]
    finally:
        server.stop()
    assert tally.errors == [], tally.errors[:20]
    assert failed == []
    assert len(receiver.received) >= tally.events
    assert journal <= RING + min(100, RING // 10) - 1  # bounded, however long the run
    growth = rss_end - rss_start
    assert growth < MAX_GROWTH, f"resident memory grew {growth / 2**20:.1f} MiB"
    figures = {
        "seconds": round(elapsed, 1),
        "target_rate": RATE,
        "achieved_rate": round(tally.requests / elapsed, 1),
        "requests": tally.requests,
        "errors": len(tally.errors),
        "deliveries": len(receiver.received),
        "journal_entries_kept": journal,
        "journal_ring": RING,
        "p50_ms": round(statistics.median(tally.latencies) * 1000, 1),
        "p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 1),
        "max_ms": round(max(tally.latencies) * 1000, 1),
        "rss_after_warm_up_mib": round(rss_start / 2**20, 1),
        "rss_at_end_mib": round(rss_end / 2**20, 1),
    }
    print(f"\nsoak: {figures}")
    record_figures("soak", figures)
