"""Time from process start to the first successful response, and peak RSS, per spec.

Run on demand (never in the test suite):

    .venv/bin/python bench/startup.py            # bundled example + GitHub's REST spec
    .venv/bin/python bench/startup.py SPEC PATH  # any spec, probing GET PATH

GitHub's spec comes from the npm package @octokit/openapi (fetched once into bench/.peers/).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx2 as httpx
from run import compile_apitwin

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".peers"
REPO = HERE.parent


def github_spec() -> Path:
    target = CACHE / "github" / "api.github.com.json"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "pack", "@octokit/openapi", "--pack-destination", str(target.parent)],
        check=True,
        capture_output=True,
    )
    archive = next(target.parent.glob("octokit-openapi-*.tgz"))
    with tarfile.open(archive) as tar:
        member = tar.getmember("package/generated/api.github.com.json")
        member.name = target.name
        tar.extract(member, target.parent, filter="data")
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(command: list[str], url: str, timeout: float = 60.0) -> tuple[float, float]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(timeout=1.0, headers={"Authorization": "Bearer bench"}) as client:
            while time.perf_counter() - started < timeout:
                try:
                    if client.get(url).status_code < 300:
                        elapsed = time.perf_counter() - started
                        return elapsed, peak_rss_mb(process.pid)
                except httpx.TransportError:
                    pass
                if process.poll() is not None:
                    raise RuntimeError(f"server exited with {process.returncode}: {command}")
                time.sleep(0.005)
        raise RuntimeError(f"no successful response from {url} within {timeout}s")
    finally:
        process.terminate()
        process.wait(10)


def run(spec: Path, probe: str, repeat: int) -> tuple[float, float]:
    times, rss = [], []
    for _ in range(repeat):
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "apitwin",
            "serve",
            str(spec),
            "--port",
            str(port),
            "--base-path",
            "/",
            "--auth",
            "lenient",
            "--db",
            ":memory:",
        ]
        elapsed, peak = measure(command, f"http://127.0.0.1:{port}{probe}")
        times.append(elapsed)
        rss.append(peak)
    return statistics.median(times), statistics.median(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path)
    parser.add_argument("probe", nargs="?", default="/")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    compile_apitwin()
    if args.spec:
        cases = [(args.spec.name, args.spec, args.probe)]
    else:
        example = REPO / "src" / "apitwin" / "examples" / "expert-network" / "openapi.yaml"
        cases = [
            ("bundled example", example, "/projects"),
            ("GitHub REST (@octokit/openapi)", github_spec(), "/"),
        ]
    print(f"| spec | ready (s, median of {args.repeat}) | peak RSS (MB) |")
    print("| --- | ---: | ---: |")
    for name, spec, probe in cases:
        ready, rss = run(spec, probe, args.repeat)
        print(f"| {name} | {ready:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
