"""Console and log output of a running server.

One line per request to a twin on the ``apitwin.requests`` logger (connection, operation, status,
latency, fault), as text for people or one JSON object per line for machines; and the progress of
loading a big spec. Headers and bodies are never logged, so neither are credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import orjson

from apitwin.spec.loader import Phase

REQUEST_LOGGER = "apitwin.requests"
_HANDLER = "apitwin-console"

request_log = logging.getLogger(REQUEST_LOGGER)
log = logging.getLogger("apitwin")
_root = logging.getLogger()
_REQUEST_FORMAT = "%s  %s  %s %s → %d  %.1f ms%s"

# Control characters in a path must not be able to forge log lines.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(32), 127]}
_MAX_PATH = 200
_MAX_HELD = 1000  # request lines held for the end of a turn of the loop, at most


def log_request(
    twin: str,
    *,
    connection: str,
    operation: str | None,
    method: str,
    path: str,
    status: int,
    latency_ms: float,
    fault: str | None = None,
    fault_kind: str | None = None,
) -> None:
    """Log one answered request; callers check ``request_log.isEnabledFor(INFO)`` first."""
    shown = path if path.isprintable() else path.translate(_CONTROLS)
    if len(shown) > _MAX_PATH:
        shown = shown[: _MAX_PATH - 3] + "..."
    tag = f"  [fault {fault} {fault_kind}]" if fault else ""
    args = (connection or "-", operation or "-", method, shown, status, latency_ms, tag)
    fields = (twin, connection, operation, method, shown, status, latency_ms, fault, fault_kind)
    console = _sole_console()
    if console is not None and console.write_request(_REQUEST_FORMAT % args, fields):
        return
    request_log.info(_REQUEST_FORMAT, *args, extra={"fields": _fields(fields)})


# A request line's fields, made a dict only by the formats that show them (JSON).
_Fields = tuple[str, str, str | None, str, str, int, float, str | None, str | None]
_FIELD_NAMES: Final = (
    "twin", "connection", "operation", "method", "path", "status", "latency_ms", "fault",
    "fault_kind",
)  # fmt: skip


def _fields(fields: _Fields) -> dict[str, Any]:
    found = dict(zip(_FIELD_NAMES, fields, strict=True))
    found["latency_ms"] = round(fields[6], 2)
    return found


def _sole_console() -> ConsoleHandler | None:
    """Our console handler, when a request line would reach it and nothing else: no other
    handler, no filter. The line is then written straight to it, as the logging machinery would
    (a record costs more than the rest of the line; one is logged per request)."""
    handlers = _root.handlers
    if len(handlers) != 1 or request_log.handlers or log.handlers:
        return None
    console = handlers[0]
    if not isinstance(console, ConsoleHandler) or console.filters or console.level > logging.INFO:
        return None
    if request_log.filters or log.filters or _root.filters:
        return None
    if not (request_log.propagate and log.propagate):
        return None
    return console


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The server's console (stderr): request lines may come straight from ``log_request``.

    On an event loop, the request lines of one turn of the loop are written together when it
    ends: one write to the stream (a system call) for all of them instead of one per request.
    Any other record, and ``flush``, first writes the lines still held, so lines keep their
    order; logging's shutdown flushes what a stopped loop left held.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._held: list[str] = []

    def write_request(self, message: str, fields: _Fields) -> bool:
        """Writes a request line as a record would be; False if it could not (the logging
        machinery then reports the problem its own way)."""
        formatter = self.formatter
        if not isinstance(formatter, TextFormatter | JsonFormatter):
            return False
        line = formatter.request_line(time.time(), message, fields)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.acquire()
        try:
            self._held.append(line)
            if len(self._held) == 1 and loop is not None:
                loop.call_soon(self.flush)  # at the end of this turn of the loop
                return True
            if loop is not None and len(self._held) < _MAX_HELD:
                return True
            return self._write_held()
        finally:
            self.release()

    def _write_held(self) -> bool:
        """Called with the lock held."""
        if not self._held:
            return True
        text = self.terminator.join(self._held) + self.terminator
        self._held.clear()
        try:
            self.stream.write(text)
            super().flush()
        except Exception:
            return False
        return True

    def flush(self) -> None:
        self.acquire()
        try:
            if not self._write_held() and sys.__stderr__ is not None:
                with contextlib.suppress(Exception):  # the console itself may be what failed
                    sys.__stderr__.write("--- apitwin: request log lines could not be written\n")
            super().flush()
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        if self._held:
            self.flush()
        super().emit(record)


class TextFormatter(logging.Formatter):
    """`12:01:02 acme-qa  submitExpert  POST /projects → 201  3.1 ms`; other loggers name theirs."""

    _second = -1
    _stamp = ""

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second, not one a line
            self._stamp = time.strftime("%H:%M:%S", time.localtime(second))
            self._second = second
        return self._stamp

    def request_line(self, created: float, message: str, fields: _Fields) -> str:
        return f"{self.stamp(created)} {message}"

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.stamp(record.created)
        message = record.getMessage()
        if record.name == REQUEST_LOGGER:
            line = f"{stamp} {message}"
        else:
            line = f"{stamp} {record.levelname.lower():<7} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's fields."""

    def request_line(self, created: float, message: str, fields: _Fields) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": "info",
            "logger": REQUEST_LOGGER,
            "message": message,
            **_fields(fields),
        }
        return orjson.dumps(entry, default=str).decode()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(
    log_format: str = "text", level: str = "info", stream: TextIO | None = None
) -> str:
    """Send apitwin's logs (and uvicorn's, which propagate) to stderr in ``log_format``.

    Returns the level uvicorn should use: its own info lines repeat the banner, so they show
    only with debug.
    """
    # Our formatters show none of these; computing them (the caller's frame above all) is most
    # of what a log line costs, and a request logs one. The logging HOWTO's own optimisations.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = ConsoleHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for installed in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(installed)  # set up again: replace ours, leave any others
    root.addHandler(handler)
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _NoWebSocketHint) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_NoWebSocketHint())
    # Other libraries (the MCP SDK, ...) stay at warning unless debugging.
    root.setLevel(logging.INFO if level == "debug" else logging.WARNING)
    log.setLevel(level.upper())
    return "info" if level == "debug" else "warning"


class _NoWebSocketHint(logging.Filter):
    """uvicorn answers an upgrade request by advising to install a WebSocket library; apitwin
    runs without one on purpose (nothing it serves speaks WebSocket)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No supported WebSocket library")


class LoadProgress:
    """Loading progress on the console: phases as they happen when loading is slow on a TTY.

    Nothing is shown for the first ``delay`` seconds, so a quick start prints only the summary
    line; a slow one on a terminal shows each phase with its count and time.
    """

    LABELS = {
        "reading": ("reading", "bytes"),
        "parsing": ("parsing", "document(s)"),
        "resolving refs": ("resolving refs", "$ref(s)"),
        "building operations": ("building operations", "operation(s)"),
        "inferring resources": ("inferring resources", "resource(s)"),
    }

    def __init__(
        self, stream: TextIO | None = None, *, tty: bool | None = None, delay: float = 1.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.delay = delay
        self.started = time.perf_counter()
        self.phase_started = self.started
        self.shown = False
        self.pending: list[str] = []
        self.operations = 0
        self.resources = 0
        self.twins = 0

    def __call__(self, phase: Phase) -> None:
        now = time.perf_counter()
        label, unit = self.LABELS.get(phase.name, (phase.name, ""))
        if not phase.done:
            self.phase_started = now
            if self.shown:
                # A slow phase shows what is under way; its line is completed when it ends.
                print(f"  {label}...", end="", file=self.stream, flush=True)
            return
        if phase.name == "building operations":
            self.operations += phase.count or 0
        elif phase.name == "inferring resources":
            self.resources += phase.count or 0
            self.twins += 1
        if not self.tty:
            return
        count = _size(phase.count) if unit == "bytes" else f"{phase.count or 0:,} {unit}"
        self.pending.append(f"  {label:<20} {count:<18} {now - self.phase_started:6.2f} s")
        if self.shown or now - self.started >= self.delay:
            lead = "\r" if self.shown else ""
            self.shown = True
            print(lead + "\n".join(self.pending), file=self.stream, flush=True)
            self.pending.clear()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def summary(self) -> str:
        twins = f"{self.twins} twin{'s' if self.twins != 1 else ''}"
        return (
            f"ready in {self.elapsed:.1f} s  ({twins}, {self.operations:,} operations, "
            f"{self.resources:,} resources)"
        )


def _size(count: int | None) -> str:
    size = float(count or 0)
    for unit in ("B", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} MB"
