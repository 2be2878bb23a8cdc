"""The limit on a request's head (MAX_REQUEST_HEADER_BYTES), against ``python -m app serve``.

Raw sockets: httpx cannot send a head that never ends, nor pipeline requests.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

import pytest

from app.core.config import MAX_REQUEST_HEADER_BYTES
from tests.conftest import new_database, run_server

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow

MAX = MAX_REQUEST_HEADER_BYTES
REFUSAL = {
    "detail": f"Request header fields exceed {MAX} bytes",
    "code": "request_header_fields_too_large",
}
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"

Response = tuple[int, dict[str, str], bytes]


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One server for the module: the limit is the HTTP layer's, whatever the database."""
    workdir = tmp_path_factory.mktemp("header-limit")
    with new_database("sqlite", workdir) as url, run_server(url, workdir) as base_url:
        yield int(base_url.rsplit(":", 1)[1])


@contextmanager
def connect(port: int) -> Iterator[tuple[socket.socket, BinaryIO]]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock.makefile("rb") as stream:
            yield sock, stream


def send(sock: socket.socket, data: bytes) -> bool:
    """False when the server has closed the connection (it may stop reading a refused head)."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def read_response(stream: BinaryIO) -> Response | None:
    """The next response (the service's have a Content-Length), or None if the connection
    ended first."""
    try:
        status_line = stream.readline()
        if not status_line:
            return None
        headers: dict[str, str] = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = stream.read(int(headers.get("content-length", "0")))
    except ConnectionResetError:
        return None
    return int(status_line.split()[1]), headers, body


def head(size: int) -> bytes:
    """A GET request whose head (request line to blank line) is exactly ``size`` bytes, the
    filler in ``X-Filler-n:value`` fields of at most 8 KiB (no optional whitespace, so every
    byte counts)."""
    start = b"GET /healthz HTTP/1.1\r\nHost:test\r\n"
    fields = []
    room = size - len(start) - 2
    number = 0
    while room > 0:
        name = b"X-Filler-%d:" % number
        length = min(room, 8192)  # of the field: name, value and CRLF
        if 0 < room - length < 64:
            length = room - 64  # leave the last field room for its name
        fields.append(name + b"a" * (length - len(name) - 2) + b"\r\n")
        room -= length
        number += 1
    request = start + b"".join(fields) + b"\r\n"
    assert len(request) == size
    return request


def assert_refused(response: Response | None) -> None:
    assert response is not None, "closed without an answer"
    status, headers, body = response
    assert status == 431
    assert json.loads(body) == REFUSAL
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff"
    assert "x-request-id" not in headers  # the app (which sets it) never saw the request


def assert_healthy(response: Response | None) -> None:
    assert response is not None, "closed without an answer"
    status, headers, body = response
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert "x-request-id" in headers


def assert_still_serving(port: int) -> None:
    with connect(port) as (sock, stream):
        sock.sendall(HEALTHZ)
        assert_healthy(read_response(stream))


def send_slowly(sock: socket.socket, size: int) -> None:
    """``size`` more bytes of a header value, 1 KiB at a time, or fewer if the server closes
    the connection first."""
    sent = 0
    while sent < size and send(sock, b"a" * 1024):
        sent += 1024
        time.sleep(0.002)  # separate packets, each parsed on its own


def assert_closed(stream: BinaryIO) -> None:
    with suppress(ConnectionResetError):
        assert stream.read() == b""


def test_eight_one_megabyte_headers_are_refused(port: int) -> None:
    headers = b"".join(b"X-Big-%d: %s\r\n" % (i, b"a" * 1024 * 1024) for i in range(8))
    with connect(port) as (sock, stream):
        send(sock, b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
        assert_refused(read_response(stream))
        assert_closed(stream)
    assert_still_serving(port)


@pytest.mark.parametrize(("size", "status"), [(MAX - 1, 200), (MAX, 200), (MAX + 1, 431)])
def test_the_limit_is_on_the_whole_head(port: int, size: int, status: int) -> None:
    with connect(port) as (sock, stream):
        sock.sendall(head(size))
        response = read_response(stream)
        if status == 200:
            assert_healthy(response)
            sock.sendall(HEALTHZ)  # and the connection is kept
            assert_healthy(read_response(stream))
        else:
            assert_refused(response)


def test_a_header_streamed_slowly_is_refused_before_it_ends(port: int) -> None:
    """Refused once the head passes the limit, without waiting for it to end: a server that
    waits keeps buffering (the old one did, then answered 200)."""
    with connect(port) as (sock, stream):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        send_slowly(sock, 4 * MAX)
        # The head has not ended; a server without the limit is still waiting for it, and
        # this read times out (the socket's 30 s).
        assert_refused(read_response(stream))
        assert_closed(stream)
    assert_still_serving(port)


def test_keep_alive_requests_each_get_the_whole_limit(port: int) -> None:
    with connect(port) as (sock, stream):
        for request in (HEALTHZ, HEALTHZ, head(MAX - 100), head(MAX - 100), HEALTHZ):
            sock.sendall(request)
            assert_healthy(read_response(stream))


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    with connect(port) as (sock, stream):
        sock.sendall(HEALTHZ + head(MAX - 100) + HEALTHZ + head(MAX) + HEALTHZ)
        for _ in range(5):
            assert_healthy(read_response(stream))


def test_a_pipelined_head_over_the_limit_is_refused_after_the_earlier_answers(
    port: int,
) -> None:
    with connect(port) as (sock, stream):
        send(sock, HEALTHZ + HEALTHZ + head(MAX + 1) + HEALTHZ)
        assert_healthy(read_response(stream))
        assert_healthy(read_response(stream))
        assert_refused(read_response(stream))
        assert_closed(stream)  # the request after the refused one is not served


def test_a_large_body_is_not_counted_as_head(port: int) -> None:
    """Head and body arrive together: only the head counts."""
    body = json.dumps({"username": "a" * (4 * MAX), "password": "x"}).encode()
    with connect(port) as (sock, stream):
        sock.sendall(
            b"POST /api/v1/auth/token HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        response = read_response(stream)
        assert response is not None
        status, headers, answer = response
        assert status == 422, answer
        assert "x-request-id" in headers
        sock.sendall(HEALTHZ)  # and the connection is kept
        assert_healthy(read_response(stream))


def test_a_head_over_the_limit_behind_a_request_in_progress(port: int) -> None:
    """The earlier request's answer comes first, whole; then the connection ends (with 431
    if the earlier answer was complete before the head passed the limit)."""
    login = json.dumps({"username": "nobody", "password": "not-the-password"}).encode()
    with connect(port) as (sock, stream):
        send(
            sock,
            b"POST /api/v1/auth/token HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(login), login)
            + b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: "
            + b"a" * (4 * MAX),  # passes the limit while the password is being checked
        )
        first = read_response(stream)
        assert first is not None
        assert first[0] == 401  # an unknown user's password is checked all the same (slow)
        # A server without the limit waits for the end of the head: the read below times out.
        send_slowly(sock, 2 * MAX)
        second = read_response(stream)
        if second is not None:
            assert_refused(second)
        assert_closed(stream)
