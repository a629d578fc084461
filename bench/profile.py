"""Profile apitwin under load: py-spy samples the server while wrk drives one scenario.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/profile.py A          # or B, C, D, F; --seconds 8 --conc 50
    .venv/bin/python bench/profile.py C --pyinstrument

py-spy: prints the functions holding the most samples (inclusive, and self) and keeps the
collapsed stacks in bench/results/profile-<scenario>.txt (load them into speedscope or
flamegraph.pl). --pyinstrument runs the server in-process under pyinstrument instead and
writes bench/results/pyinstrument-<scenario>.txt.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run as bench

PYINSTRUMENT_SERVER = """
import sys, signal, pyinstrument, uvicorn
from apitwin.config import Settings, twin_for_spec
from apitwin.server.app import create_app
spec, port, db, out = sys.argv[1:5]
from pathlib import Path
app = create_app(Settings(twins=(twin_for_spec(Path(spec)),), db=db))
profiler = pyinstrument.Profiler(interval=0.0005, async_mode="disabled")
config = uvicorn.Config(app, host="127.0.0.1", port=int(port), log_level="warning",
                        access_log=False, lifespan="on")
server = uvicorn.Server(config)
profiler.start()
try:
    server.run()
finally:
    profiler.stop()
    open(out, "w").write(profiler.output_text(unicode=True, color=False, show_all=False))
"""


def summarize(collapsed: Path, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["A", "B", "C", "D", "F"])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--conc", type=int, default=50)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--gil", action="store_true", help="py-spy: only threads holding the GIL")
    args = parser.parse_args()
    bench.check_shared()
    bench.pin_self()
    work = Path(tempfile.mkdtemp(prefix="apitwin-profile-"))
    bench.RESULTS.mkdir(exist_ok=True)
    wrk = bench.Wrk(bench.ensure_wrk(), work, args.seconds, 1.0)
    server = bench.SERVERS["apitwin"]
    if args.pyinstrument:
        out = bench.RESULTS / f"pyinstrument-{args.scenario}.txt"
        script = work / "server.py"
        script.write_text(PYINSTRUMENT_SERVER)
        db = work / "profile.db"
        command = [bench.PYTHON, str(script), str(bench.PETSTORE), "{port}", str(db), str(out)]
        running = bench.start(server, work, command=command)
        try:
            bench.seed_pets(running.url)
            wrk.run(running, args.scenario, args.conc, 0)
        finally:
            bench.stop(running.process)
        print(out.read_text())
        return
    out = bench.RESULTS / f"profile-{args.scenario}.txt"
    if args.scenario == "F":
        print(profile_webhooks(work, wrk, out, args))
        print(summarize(out, args.top))
        return
    with bench.serving(server, work) as running:
        spy = spying(running.process.pid, out, args)  # taskset execs the server
        result = wrk.run(running, args.scenario, args.conc, 0)
        spy.wait(60)
    print(f"{args.scenario} c={args.conc}: {result.rps:,.0f} req/s under py-spy (sampling)")
    print(summarize(out, args.top))


def spying(pid: int, out: Path, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
         "--rate", "250", "--duration", str(round(args.seconds + 1)), "--format", "raw",
         "--nonblocking", *(["--gil"] if args.gil else []), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    return spy


def profile_webhooks(work: Path, wrk: bench.Wrk, out: Path, args: argparse.Namespace) -> str:
    """Scenario F: wrk fires control calls at the twin while its webhooks go to the receiver."""
    receiver = bench.Server(
        "receiver",
        lambda port, _: [bench.PYTHON, str(bench.HERE / "receiver.py"), "--port", str(port)],
        ready_path="/_stats",
    )
    hook = bench.start(receiver, work, cpu=bench.LOAD_CPU)
    try:
        twin = bench.Server("apitwin-webhooks", bench._apitwin(bench.HERE / "webhooks.yaml"))
        api = bench.start(twin, work)
        try:
            bench.wait_mcp(api.url)
            spy = spying(api.process.pid, out, args)
            result = bench._webhooks(hook, api, wrk, args.seconds, 0, work)
            spy.wait(60)
        finally:
            bench.stop(api.process)
    finally:
        bench.stop(hook.process)
    return (
        f"F: {result['deliveries_per_s']:,.0f} signed deliveries/s, "
        f"{result['control_calls_per_s']:,.0f} control calls/s under py-spy (sampling)"
    )


if __name__ == "__main__":
    main()
