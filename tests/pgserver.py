"""A fresh PostgreSQL database per test, on the server named by APITWIN_TEST_POSTGRES_URL.

`.ci/postgres.sh` starts such a server and exports the URL. Outside CI, tests that need it skip
with the reason; in CI (``CI`` set) a missing server is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

ENV = "APITWIN_TEST_POSTGRES_URL"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests")
    pytest.skip(reason)


def server_url() -> str:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the PostgreSQL driver is missing: pip install -e '.[postgres]'")
    url = os.environ.get(ENV, "")
    if not url:
        _unavailable(f"no PostgreSQL server: set {ENV} (`source .ci/postgres.sh` starts one)")
    return url


def _with_database(url: str, name: str) -> str:
    """``url`` (a postgresql:// URL) naming the database ``name`` instead."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of an empty database, dropped afterwards (connections still open are ended)."""
    server = server_url()
    import psycopg

    name = "apitwin_test_" + secrets.token_hex(6)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
