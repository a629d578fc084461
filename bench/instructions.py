"""apitwin's own cost per request in instructions: deterministic where timings are not.

    .venv/bin/python bench/instructions.py            # A, B, C
    .venv/bin/python bench/instructions.py B --no-journal

Runs the ASGI app in-process (as bench/hotpath.py, 50 clients interleaved on the loop) under
valgrind's callgrind twice, with two request counts, and prints the difference divided by the
difference in requests: start-up, spec loading and the warm-up cancel out. The count is the
same from run to run on the same code (to within about 0.5%, from the SQLite checkpoint
thread), whatever else the machine is doing, so a change worth a few percent shows where
wall-clock timings on a shared host vary by tens of percent. Needs valgrind (Debian's package);
a scenario takes about 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CLIENTS = 50


async def serve(case: str, count: int, journal: bool) -> None:
    from hotpath import CASES, call, orjson_bytes
    from run import PETSTORE, SEED_PETS

    from apitwin.config import Settings, twin_for_spec
    from apitwin.server.app import create_app

    work = Path(tempfile.mkdtemp(prefix="apitwin-instructions-"))
    app = create_app(Settings(twins=(twin_for_spec(PETSTORE),), db=str(work / "ir.db")))
    await app.startup()
    assert app.mcp.task is not None
    app.mcp.task.cancel()  # its import would only add to both runs
    if not journal:

        async def unjournalled(*args: Any, **kwargs: Any) -> None:
            return None

        for twin in app.twins:
            twin.journal.submit = unjournalled  # type: ignore[method-assign]
    for pet in SEED_PETS:
        await call(app, "POST", "/pets", orjson_bytes(pet))
    method, path, body = CASES[case]
    ids = iter(range(10**6, 10**8))

    async def client(requests: int) -> None:
        for _ in range(requests):
            payload = orjson_bytes({"id": next(ids), "name": "G"}) if method == "POST" else body
            await call(app, method, path, payload)
            await asyncio.sleep(0)

    await asyncio.gather(*(client(300 // CLIENTS) for _ in range(CLIENTS)))  # warm-up
    await asyncio.gather(*(client(count // CLIENTS) for _ in range(CLIENTS)))
    await app.shutdown()


def collected(case: str, count: int, journal: bool, work: Path) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={work / f'callgrind.{case}.{count}'}",
        sys.executable,
        __file__,
        "--serve",
        case,
        str(count),
    ]
    if not journal:
        command.append("--no-journal")
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind reported no total:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=["A", "B", "C"])
    parser.add_argument("--no-journal", action="store_true", help="requests not journalled")
    parser.add_argument("--low", type=int, default=500, help="requests in the first run")
    parser.add_argument("--high", type=int, default=1500, help="requests in the second run")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.serve:
        asyncio.run(serve(args.cases[0], int(args.cases[1]), not args.no_journal))
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench: valgrind is not installed (apt-get install valgrind)")
    journal = not args.no_journal
    with tempfile.TemporaryDirectory(prefix="apitwin-instructions-") as folder:
        for case in args.cases:
            low = collected(case, args.low, journal, Path(folder))
            high = collected(case, args.high, journal, Path(folder))
            per = (high - low) / (args.high - args.low)
            label = "" if journal else " (journal off)"
            print(f"{case}{label}: {per:,.0f} instructions per request", flush=True)


if __name__ == "__main__":
    main()
