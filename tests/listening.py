"""A running `apitwin listen` process, read line by line (for the CLI and walkthrough tests)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

WAIT = 20.0  # seconds; every wait below is bounded by it


class Listen:
    """A running `apitwin listen` process whose output lines are read as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "apitwin", "listen", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        for stream, sink in ((self.process.stdout, self.lines), (self.process.stderr, self.errors)):
            threading.Thread(target=_pump, args=(stream, sink), daemon=True).start()
        self.banner = self._banner()
        found = re.search(r"receiving webhooks at (\S+),", self.banner)
        assert found, self.banner
        self.url = found.group(1)

    def _banner(self) -> str:
        lines = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self.errors.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            lines.append(line)
            if "press Ctrl+C" in line:
                return "".join(lines)
        self.process.kill()
        raise AssertionError("apitwin listen did not start: " + "".join(lines))

    def wait_for(self, wanted: Callable[[str], bool]) -> str:
        """The first printed line (old or new) for which ``wanted`` is true."""
        for line in self.seen:
            if wanted(line):
                return line
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if wanted(line):
                return line
        raise AssertionError("no such line; printed so far:\n" + "".join(self.seen))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.seen]

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        rest = []
        while True:
            try:
                rest.append(self.errors.get(timeout=2))
            except queue.Empty:
                break
        return code, "".join(rest)


def _pump(stream: Any, sink: queue.Queue[str]) -> None:
    for line in stream:
        sink.put(line)


def json_line(**wanted: Any) -> Callable[[str], bool]:
    def match(line: str) -> bool:
        record = json.loads(line)
        return all(record.get(k) == v for k, v in wanted.items())

    return match
