"""Shared by the reliability tests: a real `apitwin serve` subprocess, and the figures file.

(Not a conftest.py: conftest modules outside packages all import as ``conftest`` and would shadow
the suite's own ``from conftest import ...``.)

Figures: when ``APITWIN_FIGURES`` names a JSON file, tests add what they tried, survived and held
to it (``bench/reliability.py`` renders the file as docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "src" / "apitwin" / "examples" / "expert-network" / "openapi.yaml"
FIGURES_ENV = "APITWIN_FIGURES"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One `apitwin serve` process on a loopback port."""

    process: subprocess.Popen[bytes]
    origin: str
    log: Path

    def partner(self, path: str) -> str:
        return f"{self.origin}/partner/v1{path}"

    def admin(self, conn: str) -> str:
        return f"{self.origin}/_apitwin/api/connections/research:{conn}"

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, no goodbye."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS for the server process")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def launch(
    config: Path,
    log: Path,
    *,
    port: int | None = None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    wait: bool = True,
) -> Server:
    """Start `apitwin serve --config CONFIG` (stderr to ``log``) and wait until it is healthy."""
    port = port or free_port()
    command = [sys.executable, "-m", "apitwin", "serve", "--config", str(config)]
    command += ["--port", str(port), *args]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn,  # resource limits only
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    if wait:
        wait_healthy(server)
    return server


def wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            if httpx.get(f"{server.origin}/_apitwin/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    server.stop()
    raise AssertionError(f"the server did not start:\n{server.log_text()[-3000:]}")


def write_config(
    path: Path,
    db: Path | str,
    connections: Sequence[dict[str, str]],
    *,
    extra: str = "",
) -> Path:
    """An apitwin.yaml serving the bundled example as twin ``research``."""
    lines = []
    for conn in connections:
        fields = ", ".join(f"{k}: {json.dumps(v)}" for k, v in conn.items())
        lines.append(f"      - {{{fields}}}")
    body = textwrap.dedent(f"""
        server: {{db: {json.dumps(str(db))}}}
        twins:
          - name: research
            spec: {json.dumps(str(EXAMPLE))}
        """)
    body += textwrap.indent(textwrap.dedent(extra).strip("\n"), "    ") + "\n" if extra else ""
    body += "    connections:\n" + "\n".join(lines) + "\n"
    path.write_text(body)
    return path


def record_figures(section: str, values: dict[str, Any]) -> None:
    """Merge ``values`` under ``section`` into the figures file, if one is named."""
    target = os.environ.get(FIGURES_ENV)
    if not target:
        return
    path = Path(target)
    found: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    found.setdefault(section, {}).update(values)
    path.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
