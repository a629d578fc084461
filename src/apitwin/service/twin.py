"""The request pipeline of one twin.

match → identify caller → validate → plan faults → apply to state → build response → journal →
enqueue events. Each stage is a small method a test can call alone; ``handle`` reads top to bottom.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from apitwin.clock import VirtualClock
from apitwin.config import Rule, TwinConfig, twin_for_spec
from apitwin.errors import ApitwinError, ConfigError, StorageFullError
from apitwin.faults import (
    RACE_KINDS,
    TRANSPORT_KINDS,
    BreakError,
    FaultPlan,
    Faults,
    StatusFault,
    break_body,
    status_fault,
)
from apitwin.generation import GenerationError, Generator
from apitwin.http import InboundRequest, MockResponse
from apitwin.journal import Journal, redaction_for, suggester
from apitwin.logs import log_request, request_log
from apitwin.matching import Match, MatchKind, Router
from apitwin.negotiation import (
    Choice,
    Refusal,
    choose,
    parse_prefer,
    pick_media,
    response_for_status,
)
from apitwin.responses import (
    body_value,
    encode,
    error_response,
    header_values,
    problem,
    stable_rng,
)
from apitwin.security import SecurityOutcome, challenge_for, check_security
from apitwin.service import oauth, seeding, state
from apitwin.service.actions import parse_actions
from apitwin.service.answers import AnswerKey, Answers
from apitwin.service.connections import Connections
from apitwin.service.exchange import Exchange, StateResult
from apitwin.service.records import Records
from apitwin.spec.model import Operation, Spec
from apitwin.spec.resources import infer_resources
from apitwin.state.store import Clear, Scope, Store
from apitwin.tenants import DEFAULT_CONNECTION, Identity
from apitwin.validation import Outcome, Violation, validate_request
from apitwin.webhooks.delivery import Dispatcher
from apitwin.webhooks.events import (
    Catalogue,
    RequestContext,
    build_payload,
    callback_url,
)
from apitwin.webhooks.outbox import ChangeEvents, Outbox, collected, collecting
from apitwin.webhooks.safety import AllowList

CONNECTION_HEADER = "x-apitwin-connection"
_DRAWN_HEADERS_KEPT = 4096
WARM_AFTER = 0.5  # seconds after start-up before the events' background build begins
log = logging.getLogger("apitwin")


Observer = Callable[[Exchange], None]
StateStage = Callable[["TwinService", Exchange], Awaitable[StateResult | None]]


class TwinService:
    def __init__(
        self,
        spec: Spec,
        store: Store,
        config: TwinConfig | None = None,
        *,
        clock: VirtualClock | None = None,
    ) -> None:
        self.spec = spec
        self.config = config or twin_for_spec(_spec_path(spec))
        self.name = self.config.name
        self.seed = self.config.seed
        base = spec.base_path if self.config.base_path is None else self.config.base_path
        self.base_path = base.rstrip("/")
        self.store = store
        self.clock = clock or VirtualClock()
        self.router = Router(spec.operations)
        self.generator = Generator(self.seed)
        self.connections = Connections(self.name, store, self.clock)
        try:
            self.resource_map = infer_resources(spec, self.config.resources, self.config.operations)
        except ValueError as exc:
            raise ConfigError(f"twin {self.name!r}: {exc}") from None
        self.records = Records(
            self.name, store, self.resource_map, self.generator, self.clock, self.seed
        )
        self.token_paths = oauth.token_paths(spec)
        self.actions = {a.name: a for a in parse_actions(self.config.actions)}
        self.events = Catalogue(spec, self.resource_map, self.config.events)
        if self.config.events:
            len(self.events)  # built now: the config's errors about its events stop start-up
        self._warming: asyncio.Task[None] | None = None
        self.outbox = Outbox(store, self.name, self.clock)
        hooks = self.config.webhooks
        self.dispatcher = Dispatcher(
            store,
            self.outbox,
            self.clock,
            retry_schedule=hooks.retry,
            timeout=hooks.timeout,
            allow=AllowList(hooks.allow),
            seed=self.seed,
            failing_after=hooks.failing_after,
            disable_after=hooks.disable_after,
        )
        if hooks.emit_on_change:
            self.records.emit = ChangeEvents(
                self.outbox, self.events, self.generator, seed=self.seed
            )
        self.journal = Journal(
            store,
            self.name,
            self.clock,
            redaction=redaction_for(spec.security_schemes.values()),
            suggest=suggester(
                [(op.method.upper(), op.path) for op in spec.operations], self.base_path
            ),
        )
        keys = [op.operation_id for op in spec.operations] + [op.key for op in spec.operations]
        self.faults = Faults(store, self.name, self.clock, operations=keys)
        self.dispatcher.faults, self.dispatcher.events = self.faults, self.events
        self.observers: list[Observer] = []
        self.state_stage: StateStage | None = state.apply
        self._dynamic = itertools.count()
        self._payloads = random.Random()  # callbacks' and rules' generated data: unseeded
        self._drawn_headers: dict[tuple[object, ...], list[tuple[str, str]]] = {}
        self.answers = Answers(store)

    async def start(self) -> None:
        await self.connections.load(self.config.connections)
        for connection in self.connections.all():
            await self.seed_connection(connection.client_id)
            if connection.webhook_url:
                await self.ensure_endpoint(connection.client_id, connection.webhook_url)
        await self.dispatcher.start()
        # Built a step at a time while the twin already answers, once the first requests
        # after start-up (a test suite's, a health probe's) have been: they need not wait for it.
        self._warming = asyncio.create_task(self.events.warm(after=WARM_AFTER))

    async def stop(self) -> None:
        await self.dispatcher.stop()
        if self._warming is not None:
            # Stopped between steps: the next use of the events finishes the build (a failed
            # build is not lost either: the next use builds, and raises, again).
            self._warming.cancel()
            await asyncio.wait([self._warming])
            if not self._warming.cancelled():
                self._warming.exception()  # seen here; the next use raises it again
        await self.journal.flush()

    async def seed_connection(self, client_id: str) -> int:
        """Seed a connection once: the twin's fixtures, then its own (config), then examples."""
        configured = {c.client_id: c for c in self.config.connections}
        own = configured.get(client_id)
        fixtures = {**self.config.fixtures, **(own.fixtures if own else {})}
        return await seeding.seed_connection(
            self.records, self.spec, client_id, fixtures, from_examples=self.config.seed_examples
        )

    async def reset(self, client_id: str) -> int:
        """Back to seed data: records, journal, deliveries and faults go; endpoints stay."""
        await self.journal.flush()  # queued entries must not outlive the reset
        await self.store.write([Clear(self.name, client_id, keep=("endpoint",))])
        self.outbox.invalidate(client_id)
        return await self.seed_connection(client_id)

    async def remove_connection(self, client_id: str) -> None:
        """The connection goes with everything of it: records, journal, endpoints, deliveries,
        faults and tokens. Its client id can connect again afresh."""
        self.connections.get(client_id)  # an unknown one fails here, before any work
        await self.journal.flush()  # queued entries must not outlive it
        await self.connections.remove(client_id, also=self.outbox.forget(client_id))
        self.journal.forget(client_id)

    async def ensure_endpoint(self, conn: str, url: str) -> dict[str, Any]:
        """The connection's webhook URL is one of its endpoints (created once).

        Returns the endpoint's view; its signing secret in full only when just created.
        """
        for endpoint in await self.outbox.list_endpoints(conn):
            if endpoint.url == url:
                return endpoint.view()
        endpoint, secret = await self.outbox.add_endpoint(
            conn, url, scheme=self.config.webhooks.scheme
        )
        return {**endpoint.view(), "secret": secret}

    # -- the pipeline --------------------------------------------------------------------------

    async def handle(self, request: InboundRequest) -> MockResponse:
        exchange = Exchange(request, time.perf_counter())
        with collecting() as enqueued:
            try:
                try:
                    exchange.response = await self._run(exchange)
                except GenerationError as exc:
                    op = exchange.match.operation if exchange.match else None
                    where = f" for {op.key}" if op else ""
                    detail = f"the spec's schema{where} cannot be satisfied: {exc}"
                    exchange.response = problem(500, detail)
                except StorageFullError as exc:
                    # Not the partner's behaviour: the twin's own storage is full.
                    exchange.response = problem(507, exc.message)
                await self.after_request(exchange)
                plan = exchange.fault
                if plan is not None and plan.kind == "webhook_before_response":
                    await self._webhook_first(exchange, plan, enqueued)
            finally:
                self.dispatcher.release(enqueued)
        connection = exchange.connection or self._named_connection(request)
        await self.journal.submit(
            exchange,
            plan.rule_id if plan else None,
            fault_kind=plan.kind if plan else None,
            connection=connection,
        )
        if request_log.isEnabledFor(logging.INFO):
            self._log_request(exchange, connection)
        for observer in self.observers:
            observer(exchange)
        if plan is not None and plan.kind in TRANSPORT_KINDS:
            exchange.response.fault = plan
        return exchange.response

    def _log_request(self, exchange: Exchange, connection: str) -> None:
        response, plan = exchange.response, exchange.fault
        if response is None:
            return
        op = exchange.match.operation if exchange.match else None
        log_request(
            self.name,
            connection=connection,
            operation=response.operation_id or (op.operation_id if op else None),
            method=exchange.request.method,
            path=exchange.request.path,
            status=response.status,
            latency_ms=(time.perf_counter() - exchange.started) * 1000,
            fault=plan.rule_id if plan else None,
            fault_kind=plan.kind if plan else None,
        )

    async def after_request(self, exchange: Exchange) -> None:
        """The "enqueue events" stage: callbacks of the operation, and configured rules."""
        response = exchange.response
        match = exchange.match
        if response is None or match is None or match.operation is None or not exchange.identity:
            return
        if exchange.fault is not None and exchange.fault.kind not in RACE_KINDS:
            return
        if not 200 <= response.status < 300:
            return
        op = match.operation
        if not op.callbacks and not any(r.after == op.operation_id for r in self.config.rules):
            return  # the usual case: nothing to enqueue, so no need to parse the response body
        conn = exchange.identity.connection
        context = self._callback_context(exchange, response)
        for callback in op.callbacks:
            await self._callback(conn, f"{op.operation_id}.{callback.name}", context)
        for rule in self.config.rules:
            if rule.after == op.operation_id and (
                not rule.status or response.status in rule.status
            ):
                await self._rule(conn, rule, context.response_body)

    def _callback_context(self, exchange: Exchange, response: MockResponse) -> RequestContext:
        request = exchange.request
        outcome = exchange.outcome
        return RequestContext(
            method=request.method,
            url=request.path + (f"?{request.query}" if request.query else ""),
            path=exchange.match.path_params if exchange.match else {},
            query=request.query_pairs,
            headers=request.headers,
            body=outcome.request.body if outcome else None,
            status=response.status,
            response_headers={k.lower(): v for k, v in response.headers},
            response_body=_json_or_none(response.body),
        )

    async def _callback(self, conn: str, name: str, context: RequestContext) -> None:
        event = self.events.get(name)
        if event is None or event.expression is None:
            return
        url = callback_url(event.expression, context)
        if url is None:
            return  # the request did not carry the value the expression names
        payload = build_payload(
            event, None, generator=self.generator, rng=self._payloads, clock=self.clock
        )
        try:
            await self.outbox.emit(conn, name, payload, url=url, method=event.method)
        except ApitwinError as exc:
            log.warning("callback %s to %s not sent: %s", name, url, exc.message)

    async def _rule(self, conn: str, rule: Rule, record: Any) -> None:
        event = self.events.get(rule.emit)
        if event is None:
            log.warning("rule after %s names no known event %r", rule.after, rule.emit)
            return
        payload = build_payload(
            event,
            record if isinstance(record, dict) else None,
            generator=self.generator,
            rng=self._payloads,
            clock=self.clock,
        )
        ops, _ = await self.outbox.enqueue_ops(
            conn, rule.emit, payload, now=self.clock.now() + rule.delay
        )
        self.outbox.committed(await self.store.write(ops))

    def _named_connection(self, request: InboundRequest) -> str:
        """Requests that fail before identification still belong to a connection if named."""
        named = request.headers.get(CONNECTION_HEADER, "")
        return named if named in self.connections.index.connections else DEFAULT_CONNECTION

    async def _run(self, exchange: Exchange) -> MockResponse:
        request = exchange.request
        if request.method == "POST" and self.is_token_request(request):
            return await self.token(request)
        match = exchange.match = self.match(request)
        if match.kind is not MatchKind.FULL or match.operation is None:
            return self.unmatched(request, match)
        op = match.operation
        security = exchange.security = check_security(op, self.spec.security_schemes, request)
        if not security.ok:
            return self.unauthorized(op, security.reason, security.challenge)
        identity = exchange.identity = self.identify(security, request)
        if identity.error and await self.connections.refresh(tokens=True):
            # A token or key another replica issued a moment ago.
            identity = exchange.identity = self.identify(security, request)
        if identity.error:
            challenge = challenge_for(op, self.spec.security_schemes) or "Bearer"
            return self.unauthorized(op, identity.error, challenge)
        outcome = exchange.outcome = validate_request(op, match.path_params, request)
        if outcome.violations:
            return self.invalid(op, outcome)
        plan = exchange.fault = await self.faults.plan_inbound(
            identity.connection, op.operation_id, request.method, match.template
        )
        if plan is not None and plan.kind == "webhook_before_response":
            # Enqueued by this request, attempted by it (before it answers), not by the worker.
            enqueued = collected()
            if enqueued is not None:
                self.dispatcher.reserve(enqueued)
        injected = status_fault(plan) if plan is not None else None
        if injected is not None:
            return self.injected(op, injected)
        read = self._kept_read(exchange) if plan is None else None
        stamp = self.answers.stamp(read[1]) if read is not None else None
        if read is not None and stamp is not None:
            kept = self.answers.get(read[0], stamp)
            if kept is not None:
                exchange.state = kept[0]
                return kept[1]
        if self.state_stage is not None:
            exchange.state = await self.state_stage(self, exchange)
        response = self.respond(op, request, exchange.state)
        if plan is not None and plan.kind == "schema_break":
            return self.broken(op, response, plan)
        if read is not None and stamp is not None and exchange.state is not None:
            self.answers.keep(read[0], stamp, exchange.state, response)
        return response

    def _kept_read(self, exchange: Exchange) -> tuple[AnswerKey, list[Scope]] | None:
        """For a read of stored records whose answer may be kept (see ``answers``): its key,
        and the scopes it reads."""
        request, match = exchange.request, exchange.match
        if request.method not in ("GET", "HEAD") or self.state_stage is not state.apply:
            return None
        if match is None or match.operation is None or "prefer" in request.headers:
            return None
        found = self.resource_map.for_operation(match.operation)
        if found is None or found[1].role not in ("list", "read"):
            return None
        resource = found[0]
        if resource.kind == "singleton":
            return None  # its first read stores the record it answers with
        conn = exchange.connection
        scopes = [self.records.scope(conn, resource)]
        if resource.parent is not None:
            scopes.append(self.records.scope(conn, self.records.resource(resource.parent)))
        accept = request.headers.get("accept", "")
        op_id = match.operation.operation_id
        return (conn, op_id, request.method, request.path, request.query, accept), scopes

    async def _webhook_first(
        self, exchange: Exchange, plan: FaultPlan, enqueued: list[str]
    ) -> None:
        """The race of a webhook overtaking the API answer that caused it: the answer is held
        until every delivery the call enqueued for now (events and callbacks) was attempted."""
        if exchange.identity is None or exchange.response is None:
            return
        await self.dispatcher.deliver_now(exchange.identity.connection, enqueued, plan)
        if not enqueued:
            exchange.response.note = "webhook_before_response: this call sent no webhook"

    # -- stages ----------------------------------------------------------------------------

    def relative_path(self, path: str) -> str | None:
        if not self.base_path:
            return path
        if path == self.base_path or path.startswith(self.base_path + "/"):
            return path[len(self.base_path) :] or "/"
        return None

    def is_token_request(self, request: InboundRequest) -> bool:
        if not self.token_paths:
            return False
        relative = self.relative_path(request.path)
        return request.path in self.token_paths or relative in self.token_paths

    def match(self, request: InboundRequest) -> Match:
        relative = self.relative_path(request.path)
        if relative is None:
            return Match(MatchKind.NONE)
        return self.router.match(request.method, relative)

    def identify(self, security: SecurityOutcome, request: InboundRequest) -> Identity:
        return self.connections.index.identify(
            security.credentials,
            request.headers.get(CONNECTION_HEADER),
            self.clock.now(),
            self.config.strict_auth,
        )

    async def token(self, request: InboundRequest) -> MockResponse:
        result = await oauth.issue(request, self.connections, oauth.flow_scopes(self.spec))
        headers = [("content-type", "application/json"), ("cache-control", "no-store")]
        if result.status == 401:
            headers.append(("www-authenticate", 'Basic realm="apitwin"'))
        return MockResponse(
            result.status,
            headers,
            orjson.dumps(result.body),
            note=result.body.get("error_description", ""),
        )

    def injected(self, op: Operation, fault: StatusFault) -> MockResponse:
        if fault.body is None:
            return error_response(
                op, fault.status, fault.detail, [], self.generator, list(fault.headers)
            )
        return MockResponse(
            fault.status,
            [*fault.headers],
            fault.body,
            operation_id=op.operation_id,
            note=fault.detail,
        )

    def broken(self, op: Operation, response: MockResponse, plan: FaultPlan) -> MockResponse:
        """The normal answer, broken against its schema in the way the fault names."""
        declared = response_for_status(op, response.status)
        media = next((m for m in (declared.media.values() if declared else ()) if m.is_json), None)
        if media is None or media.schema is None or not response.body:
            response.note = "schema_break: the response has no JSON schema to break"
            return response
        try:
            value = break_body(orjson.loads(response.body), media.schema.json, plan.params["mode"])
        except (BreakError, orjson.JSONDecodeError) as exc:
            response.note = f"schema_break not applied: {exc}"
            return response
        response.body = orjson.dumps(value)
        return response

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

    def unauthorized(self, op: Operation, reason: str, challenge: str) -> MockResponse:
        headers = [("www-authenticate", challenge)] if challenge else []
        violation = Violation("header", "authorization", "", reason, "security")
        return error_response(op, 401, reason, [violation], self.generator, headers)

    def invalid(self, op: Operation, outcome: Outcome) -> MockResponse:
        count = len(outcome.violations)
        detail = f"the request has {count} problem(s): " + "; ".join(
            _describe(v) for v in outcome.violations[:5]
        )
        status = outcome.status
        in_body = all(v.location == "body" for v in outcome.violations)
        # Bodies that parse but break the schema are "unprocessable" where the spec says so.
        if status == 400 and "422" in op.responses and (in_body or "400" not in op.responses):
            status = 422
        return error_response(op, status, detail, outcome.violations, self.generator)

    def respond(
        self, op: Operation, request: InboundRequest, state: StateResult | None = None
    ) -> MockResponse:
        prefs = parse_prefer(request.headers.get("prefer"))
        if state is not None and state.status >= 400:
            return error_response(op, state.status, state.detail, [], self.generator, state.headers)
        if state is not None and not (prefs.code or prefs.example or prefs.dynamic):
            return self.render_state(op, request, state)
        choice = choose(op, prefs, request.headers.get("accept"))
        if isinstance(choice, Refusal):
            return error_response(op, choice.status, choice.message, [], self.generator)
        salt = next(self._dynamic) if prefs.dynamic else 0
        rng = stable_rng(
            self.seed, op.operation_id, choice.status, request.path, request.query, salt
        )
        return self.render(op, choice, rng, request.method == "HEAD")

    def render_state(
        self, op: Operation, request: InboundRequest, state: StateResult
    ) -> MockResponse:
        response = response_for_status(op, state.status)
        media = pick_media(response, request.headers.get("accept")) if response else None
        if isinstance(media, Refusal):
            return error_response(op, media.status, media.message, [], self.generator)
        rng = stable_rng(self.seed, op.operation_id, state.status, request.path, request.query)
        choice = Choice(state.status, response, media, None)
        # The declared headers are drawn from ``rng`` alone (the body is the stored record's), so
        # they are the same every time this request is answered: drawn once.
        key = (op.operation_id, state.status, request.path, request.query)
        cacheable = state.has_value or media is None
        rendered = self.render(
            op, choice, rng, request.method == "HEAD", state, headers_key=key if cacheable else None
        )
        rendered.headers.extend(state.headers)
        return rendered

    def render(
        self,
        op: Operation,
        choice: Choice,
        rng: random.Random,
        head: bool,
        state: StateResult | None = None,
        *,
        headers_key: tuple[object, ...] | None = None,
    ) -> MockResponse:
        headers: list[tuple[str, str]] = []
        body = b""
        if choice.response is not None and choice.response.headers:
            declared = self._drawn_headers.get(headers_key) if headers_key else None
            if declared is None:
                declared = header_values(choice.response.headers, self.generator, rng)
                if headers_key is not None:
                    if len(self._drawn_headers) >= _DRAWN_HEADERS_KEPT:
                        del self._drawn_headers[next(iter(self._drawn_headers))]
                    self._drawn_headers[headers_key] = declared
            skip = {h[0].lower() for h in state.headers} if state else set()
            headers = [h for h in declared if h[0].lower() not in skip]
        if choice.media is not None:
            if state is not None and state.has_value:
                value = state.value
            else:
                example = choice.example
                value = body_value(
                    choice.media,
                    example.value if example else None,
                    example is not None,
                    self.generator,
                    rng,
                )
            body, content_type = encode(choice.media.name, value)
            headers.insert(0, ("content-type", content_type))
        if choice.status in (204, 304) or choice.status < 200:
            body = b""  # no content; a declared media type still names what would have come
        return MockResponse(
            choice.status, headers, b"" if head else body, operation_id=op.operation_id
        )


def _json_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _spec_path(spec: Spec) -> Path:
    return Path(unquote(urlsplit(spec.source).path))


def _describe(violation: Violation) -> str:
    where = violation.location
    if violation.name:
        where += f" '{violation.name}'"
    if violation.pointer:
        where += f" at {violation.pointer}"
    return f"{where}: {violation.message}"
