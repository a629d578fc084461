"""Values passed between pipeline stages (kept apart so stages can import them freely)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apitwin.http import InboundRequest, MockResponse
from apitwin.matching import Match
from apitwin.security import SecurityOutcome
from apitwin.tenants import Identity
from apitwin.validation import Outcome


@dataclass(slots=True)
class StateResult:
    """What the state stage decided: the status to answer, and the body value when it has one."""

    status: int
    value: Any = None
    has_value: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)
    detail: str = ""  # for error statuses


@dataclass(slots=True)
class Exchange:
    """Everything known about one request as it moves through the pipeline (for the journal)."""

    request: InboundRequest
    started: float
    match: Match | None = None
    security: SecurityOutcome | None = None
    identity: Identity | None = None
    outcome: Outcome | None = None
    state: StateResult | None = None
    response: MockResponse | None = None
    fault: Any = None  # the inbound FaultPlan that hit this request, if any

    @property
    def connection(self) -> str:
        return self.identity.connection if self.identity else ""
