"""The apitwin error tree.

ApitwinError
├── SpecError          a spec that cannot be served (carries every Problem found)
├── ConfigError        a bad apitwin.yaml, CLI option or environment value
├── InvalidInputError  a caller's input that cannot be used (bad cursor, unknown field, ...)
├── NotFoundError      a control-plane lookup that found nothing (connection, record, ...)
├── LimitExceededError a configured limit is reached (server.limits); nothing was changed
└── StorageFullError   the storage refused a write for want of room (disk full, size limit)

Each error has a machine-readable ``kind``, an HTTP ``status`` for the surfaces that speak HTTP,
and optionally the ``field`` it is about. Surfaces render them in exactly one place each.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or suspicious) in a spec or config, with where it is."""

    file: str
    pointer: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}#{self.pointer}" if self.pointer else self.file
        return f"{where}: {self.reason}"


class ApitwinError(Exception):
    kind = "error"
    status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class SpecError(ApitwinError):
    """The spec cannot be served; ``problems`` lists everything that is wrong."""

    kind = "spec"
    status = 500

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"the spec has {len(problems)} problem(s):\n{lines}")


class ConfigError(ApitwinError):
    kind = "config"
    status = 400


class InvalidInputError(ApitwinError):
    """A caller's input that cannot be used (bad cursor, unknown field, ...)."""

    kind = "invalid_input"
    status = 400


class NotFoundError(ApitwinError):
    kind = "not_found"
    status = 404


class LimitExceededError(ApitwinError):
    kind = "limit_exceeded"
    status = 429


class StorageFullError(ApitwinError):
    """The storage could not write (disk full, a file size limit): nothing of the change was
    applied, and reads still work. 507 Insufficient Storage on the surfaces that speak HTTP."""

    kind = "storage_full"
    status = 507
