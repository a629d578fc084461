"""The webhook sender on the wire: a raw HTTP/1.1 peer on 127.0.0.1 sees the bytes the dispatcher
sends and answers (or misbehaves) byte by byte, so nothing an HTTP library adds or hides escapes
these tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from apitwin.clock import VirtualClock
from apitwin.state.sqlite import SQLiteStore
from apitwin.webhooks.delivery import USER_AGENT, Dispatcher
from apitwin.webhooks.outbox import Outbox
from apitwin.webhooks.safety import AllowList

pytestmark = pytest.mark.anyio

CONN = "acme"
HOLD = 5.0  # seconds a hanging peer waits for the sender to give up, at most


@dataclass
class Seen:
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        [value] = [v for n, v in self.headers if n == name]
        return value


@dataclass
class Wire:
    """A loopback HTTP/1.1 peer: records each request; ``mode`` says how it answers."""

    port: int = 0
    mode: str = "answer"  # answer | hang | close | rst | garbage
    reply: bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    server_names: list[str | None] = field(default_factory=list)  # TLS SNI, when serving TLS

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *rest = head.decode("latin-1").split("\r\n")
        headers = [
            (name.strip().lower(), value.strip())
            for name, _, value in (h.partition(":") for h in rest if h)
        ]
        length = int(dict(headers).get("content-length", "0"))
        self.requests.append(Seen(line, headers, await reader.readexactly(length)))
        if self.mode == "hang":
            async with asyncio.timeout(HOLD):
                await reader.read()  # until the sender gives up and closes
            return False
        if self.mode == "close":
            return False
        if self.mode == "rst":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if self.mode == "garbage":
            writer.write(b"HELLO THERE\r\n\r\n")
            await writer.drain()
            return False
        writer.write(self.reply)
        await writer.drain()
        return True


async def _serve(wire: Wire, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    server = await asyncio.start_server(wire.handle, "127.0.0.1", 0, ssl=tls)
    wire.port = server.sockets[0].getsockname()[1]
    return server


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    found = Wire()
    server = await _serve(found)
    async with server:
        yield found


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    backend = SQLiteStore(tmp_path / "twin.db")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@dataclass
class Rig:
    outbox: Outbox
    dispatcher: Dispatcher

    async def deliver(self, url: str, count: int = 1) -> list[dict[str, Any]]:
        """Sends ``count`` events to ``url``; every delivery, each after its first attempt."""
        await self.outbox.add_endpoint(CONN, url)
        for n in range(count):
            await self.outbox.emit(CONN, "project.created", {"n": n})
        await self.dispatcher.run_due()
        listed = (await self.outbox.list_deliveries(CONN)).items
        return [await self.outbox.get_delivery(CONN, item["id"]) for item in listed]

    async def attempt(self, url: str) -> dict[str, Any]:
        [delivery] = await self.deliver(url)
        [attempt] = delivery["attempt_log"]
        return dict(attempt)


@pytest.fixture
async def rig_factory(store: SQLiteStore) -> AsyncIterator[Any]:
    made: list[Dispatcher] = []

    def make(**options: Any) -> Rig:
        clock = VirtualClock(source=lambda: 1_700_000_000.0)
        outbox = Outbox(store, "twin", clock)
        dispatcher = Dispatcher(store, outbox, clock, **options)
        made.append(dispatcher)
        return Rig(outbox, dispatcher)

    yield make
    for dispatcher in made:
        await dispatcher.stop()


def resolves_to(address: str) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return [address]

    return resolve


# -- the request --------------------------------------------------------------------------------


async def test_exactly_the_built_headers_are_sent(rig_factory: Any, wire: Wire) -> None:
    rig = rig_factory()
    attempt = await rig.attempt(wire.url())
    [seen] = wire.requests
    assert seen.line == "POST /hook HTTP/1.1"
    names = [name for name, _ in seen.headers]
    assert len(names) == len(set(names)), names  # nothing sent twice
    built = {name.lower() for name in attempt["request_headers"]}
    # No Accept, Accept-Encoding, Connection or library User-Agent: only what was built, plus
    # what HTTP/1.1 itself needs.
    assert set(names) == built | {"host", "content-length"}
    assert seen.header("host") == f"127.0.0.1:{wire.port}"
    assert seen.header("user-agent") == USER_AGENT
    assert seen.header("content-type") == "application/json"
    assert seen.body == attempt["request_body"].encode()
    assert int(seen.header("content-length")) == len(seen.body) == attempt["request_body_size"]
    assert attempt["error_class"] is None and attempt["response_status"] == 200


async def test_a_name_is_dialled_at_its_checked_address_and_named_in_host(
    rig_factory: Any, wire: Wire
) -> None:
    # partner.test resolves nowhere but through the allow-list's resolver.
    rig = rig_factory(allow=AllowList(resolver=resolves_to("127.0.0.1")))
    attempt = await rig.attempt(wire.url("partner.test"))
    [seen] = wire.requests
    assert seen.header("host") == f"partner.test:{wire.port}"
    assert attempt["response_status"] == 200


async def test_a_receivers_cookie_is_not_sent_back(rig_factory: Any, wire: Wire) -> None:
    wire.reply = b"HTTP/1.1 200 OK\r\nset-cookie: session=abc\r\ncontent-length: 0\r\n\r\n"
    rig = rig_factory(concurrency=1)
    await rig.deliver(wire.url(), count=2)
    assert len(wire.requests) == 2
    assert all("cookie" not in dict(seen.headers) for seen in wire.requests)


async def test_connections_are_kept_alive(rig_factory: Any, wire: Wire) -> None:
    rig = rig_factory(concurrency=1)  # one attempt at a time: each can reuse the last one's
    deliveries = await rig.deliver(wire.url(), count=3)
    assert [d["status"] for d in deliveries] == ["succeeded"] * 3
    assert (len(wire.requests), wire.connections) == (3, 1)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed(rig_factory: Any, wire: Wire, status: int) -> None:
    wire.reply = (
        f"HTTP/1.1 {status} Moved\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n".encode()
    )
    attempt = await rig_factory().attempt(wire.url())
    assert [seen.line for seen in wire.requests] == ["POST /hook HTTP/1.1"]
    assert (attempt["response_status"], attempt["error_class"]) == (status, "status")
    assert "redirects are not followed" in attempt["error"]


# -- the response -------------------------------------------------------------------------------


def _answer(body: bytes, *, chunked: bool = False, extra: str = "") -> bytes:
    if not chunked:
        return f"HTTP/1.1 200 OK\r\n{extra}content-length: {len(body)}\r\n\r\n".encode() + body
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:]) if part)
    return (
        f"HTTP/1.1 200 OK\r\n{extra}transfer-encoding: chunked\r\n\r\n".encode()
        + chunks
        + (b"0\r\n\r\n")
    )


@pytest.mark.parametrize(
    ("size", "chunked", "cut"),
    [(16, False, False), (17, False, True), (200_000, False, True), (200_000, True, True)],
)
async def test_the_response_body_is_kept_up_to_the_limit(
    rig_factory: Any, wire: Wire, size: int, chunked: bool, cut: bool
) -> None:
    body = (b"0123456789" * (size // 10 + 1))[:size]
    wire.reply = _answer(body, chunked=chunked)
    attempt = await rig_factory(response_limit=16).attempt(wire.url())
    assert attempt["response_status"] == 200 and attempt["error_class"] is None
    assert attempt["response_body"] == body[:16].decode()
    assert attempt["response_body_truncated"] is cut


async def test_the_response_body_is_logged_as_it_came(rig_factory: Any, wire: Wire) -> None:
    packed = gzip.compress(b"accepted")
    wire.reply = _answer(packed, extra="content-encoding: gzip\r\n")
    attempt = await rig_factory().attempt(wire.url())
    assert attempt["response_body"] == packed.decode("utf-8", "replace")  # not inflated


async def test_undecodable_response_bytes_are_replaced(rig_factory: Any, wire: Wire) -> None:
    wire.reply = _answer(b"caf\xe9 ok")
    attempt = await rig_factory().attempt(wire.url())
    assert attempt["response_body"] == "caf\ufffd ok"


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "error_class", "says"),
    [
        ("hang", "timeout", "timeout"),
        ("close", "reset", "closed the connection"),
        ("rst", "reset", "reset"),
        ("garbage", "reset", "not valid HTTP"),
    ],
)
async def test_a_misbehaving_receiver_is_classified(
    rig_factory: Any, wire: Wire, mode: str, error_class: str, says: str
) -> None:
    wire.mode = mode
    attempt = await rig_factory(timeout=0.5).attempt(wire.url())
    assert len(wire.requests) == 1  # the request arrived; the answer is what went wrong
    assert (attempt["response_status"], attempt["error_class"]) == (None, error_class)
    assert says.lower() in attempt["error"].lower(), attempt["error"]


async def test_a_closed_port_is_refused(rig_factory: Any) -> None:
    with socket.socket() as sock:  # a port just freed: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    attempt = await rig_factory().attempt(f"http://127.0.0.1:{port}/hook")
    assert (attempt["response_status"], attempt["error_class"]) == (None, "refused")
    assert f"127.0.0.1:{port}" in attempt["error"]


# -- TLS ----------------------------------------------------------------------------------------


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for partner.test only (not for the address dialled)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner.test")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("partner.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cafile=str(folder / "cert.pem"))
    return Tls(server, client)


@pytest.fixture
async def tls_wire(tls: Tls) -> AsyncIterator[Wire]:
    found = Wire()
    server_side = tls.server

    def named(_sock: Any, server_name: str | None, _context: Any) -> None:
        found.server_names.append(server_name)

    server_side.sni_callback = named
    server = await _serve(found, server_side)
    async with server:
        yield found


def trusting(tls: Tls) -> Any:
    """Sessions that trust the test certificate (and nothing else)."""
    return lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client))


async def test_tls_names_and_verifies_the_original_host(
    rig_factory: Any, tls: Tls, tls_wire: Wire
) -> None:
    allow = AllowList(resolver=resolves_to("127.0.0.1"))
    rig = rig_factory(allow=allow, http_client_factory=trusting(tls))
    attempt = await rig.attempt(tls_wire.url("partner.test", "https"))
    assert (attempt["response_status"], attempt["error_class"]) == (200, None)
    assert tls_wire.server_names == ["partner.test"]  # not the address dialled
    [seen] = tls_wire.requests
    assert seen.header("host") == f"partner.test:{tls_wire.port}"
    # Exactly the built headers here too, though this session has aiohttp's defaults.
    built = {name.lower() for name in attempt["request_headers"]}
    assert {name for name, _ in seen.headers} == built | {"host", "content-length"}


@pytest.mark.parametrize("host", ["other.test", "127.0.0.1"])
async def test_a_certificate_for_another_name_fails_as_tls(
    rig_factory: Any, tls: Tls, tls_wire: Wire, host: str
) -> None:
    allow = AllowList(resolver=resolves_to("127.0.0.1"))
    rig = rig_factory(allow=allow, http_client_factory=trusting(tls))
    attempt = await rig.attempt(tls_wire.url(host, "https"))
    assert (attempt["response_status"], attempt["error_class"]) == (None, "tls")
    assert tls_wire.requests == []
    assert "certificate" in attempt["error"].lower(), attempt["error"]


async def test_an_untrusted_certificate_fails_as_tls(rig_factory: Any, tls_wire: Wire) -> None:
    rig = rig_factory(allow=AllowList(resolver=resolves_to("127.0.0.1")))  # the system's trust
    attempt = await rig.attempt(tls_wire.url("partner.test", "https"))
    assert (attempt["response_status"], attempt["error_class"]) == (None, "tls")
    assert tls_wire.requests == []
