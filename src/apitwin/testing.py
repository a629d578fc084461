"""Use a twin inside your own test suite.

```python
from apitwin.testing import run_twin

def test_my_integration_submits_experts():
    with run_twin("partner-openapi.yaml") as twin:
        my_service.configure(base_url=twin.url, api_key=twin.api_key)
        my_service.sync()
        assert twin.control.count_requests(twin.connection_id, operation="submitExpert",
                                           status=201)["count"] == 2
```

Or with pytest: add ``pytest_plugins = ["apitwin.testing"]`` to your ``conftest.py``, set
``apitwin_spec = path/to/openapi.yaml`` (or ``apitwin_config``) in your pytest ini options, and
take the ``apitwin_twin`` fixture.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apitwin.config import Settings, load_config, twin_for_spec

START_TIMEOUT = 30.0


class Control:
    """The control service of a running twin, called synchronously (each call is one request)."""

    def __init__(self, origin: str, token: str | None = None) -> None:
        self.origin = origin
        self.token = token

    def __getattr__(self, name: str) -> Callable[..., Any]:
        from apitwin.remote import RemoteControl

        if name.startswith("_") or not hasattr(RemoteControl, name):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            async def run() -> Any:
                remote = RemoteControl(self.origin, self.token)
                try:
                    return await getattr(remote, name)(*args, **kwargs)
                finally:
                    await remote.client.aclose()

            return asyncio.run(run())

        return call


@dataclass
class RunningTwin:
    origin: str  # http://127.0.0.1:<port>
    url: str  # origin + the twin's base path: what the system under test calls
    connection_id: str  # the default connection's handle
    client_id: str
    client_secret: str
    api_key: str
    control: Control


@contextmanager
def run_twin(
    spec: str | Path | None = None,
    *,
    config: str | Path | None = None,
    db: str = ":memory:",
    **options: Any,
) -> Iterator[RunningTwin]:
    """Serve a twin of ``spec`` (or the first twin of ``config``) on a free loopback port."""
    import uvicorn

    from apitwin.server.app import create_app
    from apitwin.server.transport import uvicorn_http_options

    if config is not None:
        loaded = load_config(config)
        settings = Settings(twins=loaded.twins, db=db, limits=loaded.limits)
    elif spec is not None:
        settings = Settings(twins=(twin_for_spec(Path(spec), **options),), db=db)
    else:
        raise ValueError("give a spec or a config")
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The same HTTP options as `apitwin serve`, so limits answer alike in a test suite.
    http = uvicorn_http_options(settings.limits.request_header_bytes)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **http))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the twin did not start; see its log above")
        time.sleep(0.01)
    try:
        origin = f"http://127.0.0.1:{port}"
        twin = app.twins[0]
        default = twin.connections.get("default")
        yield RunningTwin(
            origin=origin,
            url=origin + twin.base_path,
            connection_id=f"{twin.name}:default",
            client_id=default.client_id,
            client_secret=default.client_secret,
            api_key=default.api_key,
            control=Control(origin),
        )
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


try:
    import pytest
except ImportError:  # run_twin works without pytest; the fixture needs it
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    def pytest_addoption(parser: pytest.Parser) -> None:
        parser.addini("apitwin_spec", "OpenAPI file the apitwin_twin fixture serves")
        parser.addini("apitwin_config", "apitwin.yaml the apitwin_twin fixture serves")

    @pytest.fixture
    def apitwin_twin(request: pytest.FixtureRequest) -> Iterator[RunningTwin]:
        """A fresh twin per test (in-memory state), from the ini options above."""
        root = Path(str(request.config.rootpath))
        spec = request.config.getini("apitwin_spec")
        config = request.config.getini("apitwin_config")
        if not spec and not config:
            pytest.fail("set apitwin_spec or apitwin_config in your pytest ini options")
        with run_twin(
            root / spec if spec else None, config=root / config if config else None
        ) as twin:
            yield twin
