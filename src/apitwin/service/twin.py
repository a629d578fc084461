"""The request pipeline of one twin.

match → identify caller → validate → plan faults → apply to state → build response → journal →
enqueue events. Each stage is a small method a test can call alone; ``handle`` reads top to bottom.
State, faults, journal and events plug in through the hooks below as they are built.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from apitwin.generation import Generator
from apitwin.http import InboundRequest, MockResponse
from apitwin.matching import Match, MatchKind, Router
from apitwin.negotiation import Choice, Refusal, choose, parse_prefer
from apitwin.responses import (
    body_value,
    encode,
    error_response,
    header_values,
    problem,
    stable_rng,
)
from apitwin.security import SecurityOutcome, check_security
from apitwin.spec.model import Operation, Spec
from apitwin.validation import Outcome, Violation, validate_request


@dataclass(slots=True)
class Exchange:
    """Everything known about one request as it moves through the pipeline (for the journal)."""

    request: InboundRequest
    started: float
    match: Match | None = None
    security: SecurityOutcome | None = None
    outcome: Outcome | None = None
    response: MockResponse | None = None


Observer = Callable[[Exchange], None]


class TwinService:
    def __init__(self, spec: Spec, *, seed: int = 0, base_path: str | None = None) -> None:
        self.spec = spec
        self.seed = seed
        self.base_path = (spec.base_path if base_path is None else base_path).rstrip("/")
        self.router = Router(spec.operations)
        self.generator = Generator(seed)
        self.observers: list[Observer] = []
        self._dynamic = itertools.count()

    # -- the pipeline --------------------------------------------------------------------------

    async def handle(self, request: InboundRequest) -> MockResponse:
        exchange = Exchange(request, time.perf_counter())
        exchange.response = self._run(exchange)
        for observer in self.observers:
            observer(exchange)
        return exchange.response

    def _run(self, exchange: Exchange) -> MockResponse:
        request = exchange.request
        match = exchange.match = self.match(request)
        if match.kind is not MatchKind.FULL or match.operation is None:
            return self.unmatched(request, match)
        op = match.operation
        security = exchange.security = check_security(op, self.spec.security_schemes, request)
        if not security.ok:
            return self.unauthorized(op, security)
        outcome = exchange.outcome = validate_request(op, match.path_params, request)
        if outcome.violations:
            return self.invalid(op, outcome)
        return self.respond(op, request)

    # -- stages ----------------------------------------------------------------------------

    def relative_path(self, path: str) -> str | None:
        if not self.base_path:
            return path
        if path == self.base_path or path.startswith(self.base_path + "/"):
            return path[len(self.base_path) :] or "/"
        return None

    def match(self, request: InboundRequest) -> Match:
        relative = self.relative_path(request.path)
        if relative is None:
            return Match(MatchKind.NONE)
        return self.router.match(request.method, relative)

    def unmatched(self, request: InboundRequest, match: Match) -> MockResponse:
        if match.kind is MatchKind.PARTIAL:
            allowed = ", ".join(match.allowed)
            detail = f"{request.method} is not allowed on {match.template}; allowed: {allowed}"
            return problem(405, detail, headers=[("allow", allowed)])
        relative = self.relative_path(request.path)
        if relative is None:
            detail = f"{request.path} is outside this twin's base path {self.base_path}"
        else:
            detail = f"no operation matches {request.method} {relative}"
        return problem(404, detail)

    def unauthorized(self, op: Operation, security: SecurityOutcome) -> MockResponse:
        headers = [("www-authenticate", security.challenge)] if security.challenge else []
        violation = Violation("header", "authorization", "", security.reason, "security")
        return error_response(op, 401, security.reason, [violation], self.generator, headers)

    def invalid(self, op: Operation, outcome: Outcome) -> MockResponse:
        count = len(outcome.violations)
        detail = f"the request has {count} problem(s): " + "; ".join(
            _describe(v) for v in outcome.violations[:5]
        )
        status = outcome.status
        if status == 400 and "400" not in op.responses and "422" in op.responses:
            status = 422
        return error_response(op, status, detail, outcome.violations, self.generator)

    def respond(self, op: Operation, request: InboundRequest) -> MockResponse:
        prefs = parse_prefer(request.headers.get("prefer"))
        choice = choose(op, prefs, request.headers.get("accept"))
        if isinstance(choice, Refusal):
            return error_response(op, choice.status, choice.message, [], self.generator)
        salt = next(self._dynamic) if prefs.dynamic else 0
        rng = stable_rng(self.seed, op.operation_id, choice.status, request.path, request.query, salt)
        return self.render(op, choice, rng, request.method == "HEAD")

    def render(self, op: Operation, choice: Choice, rng: random.Random, head: bool) -> MockResponse:
        headers: list[tuple[str, str]] = []
        body = b""
        if choice.response is not None:
            headers = header_values(choice.response.headers, self.generator, rng)
        if choice.media is not None:
            example = choice.example
            value = body_value(
                choice.media, example.value if example else None, example is not None,
                self.generator, rng,
            )
            body, content_type = encode(choice.media.name, value)
            headers.insert(0, ("content-type", content_type))
        if choice.status in (204, 304) or choice.status < 200:
            body = b""
            headers = [h for h in headers if h[0] != "content-type"]
        return MockResponse(
            choice.status, headers, b"" if head else body, operation_id=op.operation_id
        )


def _describe(violation: Violation) -> str:
    where = violation.location
    if violation.name:
        where += f" '{violation.name}'"
    if violation.pointer:
        where += f" at {violation.pointer}"
    return f"{where}: {violation.message}"
