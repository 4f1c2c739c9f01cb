"""The native one-call parsers of the front end (simple_request) and of the upstream leg
(whole_answer) against httptools, the callback parser they stand in for: whatever they take
is read by llhttp the same way (method, target, version, headers as the connection keeps them,
keep-alive; status, reason, relayed head, body), and the plain shapes they exist for are taken.
Generated messages mix plain pieces with the tricks request smuggling and response splitting
are made of; those must be left to httptools, never read differently."""

from __future__ import annotations

from dataclasses import dataclass, field

import httptools
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import relayed_head, simple_request, whole_answer

_MAX_HEADER_BYTES = 16_384
_MAX_HEADERS = 100


@dataclass
class _Recorded:
    url: bytes = b""
    status: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    begun: int = 0
    complete: int = 0
    # Read when the callback parser's users read them (the parser forgets after the message).
    parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
    keep_alive: bool | None = None
    upgrade: bool | None = None

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()
        if isinstance(self.parser, httptools.HttpRequestParser):
            self.upgrade = self.parser.should_upgrade()

    def on_message_complete(self) -> None:
        self.complete += 1
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()


def _kept(
    headers: list[tuple[bytes, bytes]], underscores: bool, trusted: bool
) -> tuple[tuple[bytes, bytes], ...]:
    """The lines pygw.http1's on_header keeps."""
    kept = []
    for name, value in headers:
        lname = name.lower()
        special = lname in (
            b"host",
            b"x-request-id",
            b"traceparent",
            b"x-amzn-trace-id",
            b"connection",
        )
        if not special and b"_" in name and not underscores:
            continue
        if not special and lname in (b"forwarded", b"x-real-ip") and not trusted:
            continue
        kept.append((name, value))
    return tuple(kept)


def _last(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    found = None
    for n, v in headers:
        if n.lower() == name:
            found = v
    return found


# Mostly plain pieces, so that many generated messages are of the shape the native parsers
# take, and some tricks among them.
_eol = st.sampled_from([b"\r\n"] * 30 + [b"\n", b"\r", b"\r\r\n", b" \r\n", b"\t\r\n"])
_methods = st.sampled_from(
    [b"GET"] * 12 + [b"HEAD", b"POST", b"DELETE", b"PATCH", b"FOO", b"get", b"GET "]
)
_targets = st.sampled_from(
    [b"/", b"/items/1", b"/a?b=c&d", b"/%2F%20x"] * 4
    + [b"http://gw/x", b"*", b"/\x80", b"/a b", b"", b"/\x00"]
)
_versions = st.sampled_from(
    [b"HTTP/1.1"] * 12 + [b"HTTP/1.0"] * 3 + [b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1", b"HTTP/1.10"]
)
_plain_names = st.sampled_from(
    [
        b"Accept",
        b"User-Agent",
        b"X-Request-Id",
        b"traceparent",
        b"X-Amzn-Trace-Id",
        b"Connection",
        b"X_Under",
        b"Forwarded",
        b"X-Real-IP",
        b"host",
    ]
)
_tricky_names = st.sampled_from(
    [
        b"Host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Expect",
        b"Upgrade",
        b"Host ",
        b" Host",
        b"X:Y",
        b"",
        b"Bad Name",
        b"X-\x80",
    ]
)
_plain_values = st.sampled_from(
    [
        b"gw",
        b"*/*",
        b"close",
        b"keep-alive",
        b"Keep-Alive, foo",
        b"a, b ,c",
        b"",
        b"x" * 40,
        b"\x80\xff",
        b"\tpadded",
    ]
)
_tricky_values = st.sampled_from(
    [b"  padded \t", b"upgrade", b"0", b"5", b"chunked", b"a\x00b", b"a\rb", b"100-continue"]
)
_separators = st.sampled_from([b": "] * 8 + [b":", b" : ", b":\t"])


@st.composite
def _header_line(draw: st.DrawFn) -> bytes:
    plain = draw(st.integers(0, 9)) > 0
    name = draw(_plain_names if plain else _tricky_names)
    value = draw(_plain_values if draw(st.integers(0, 9)) > 0 else _tricky_values)
    line = name + draw(_separators) + value + draw(_eol)
    if draw(st.integers(0, 30)) == 0:
        line += b" folded" + draw(_eol)
    return line


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    parts = [draw(_methods), b" ", draw(_targets), b" ", draw(_versions), draw(_eol)]
    if draw(st.integers(0, 9)) > 0:
        parts += [b"Host: gw", draw(_eol)]
    parts += draw(st.lists(_header_line(), max_size=6))
    parts.append(draw(_eol))
    parts.append(draw(st.sampled_from([b""] * 8 + [b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n", b"x"])))
    return b"".join(parts)


@settings(max_examples=1500)
@given(_requests(), st.booleans(), st.booleans())
def test_a_request_taken_natively_is_read_the_same_by_llhttp(
    data: bytes, underscores: bool, trusted: bool
) -> None:
    taken = simple_request(data, _MAX_HEADER_BYTES, _MAX_HEADERS, underscores, trusted)
    if taken is None:
        return
    method, target, minor, headers, host, request_id, traceparent, amzn, keep_alive = taken
    seen = _Recorded()
    parser = seen.parser = httptools.HttpRequestParser(seen)
    parser.feed_data(data)  # raises (failing the test) if llhttp refuses what was taken
    assert seen.begun == seen.complete == 1
    assert seen.body == b""
    assert parser.get_method().decode("ascii") == method
    assert seen.url.decode("ascii") == target
    assert parser.get_http_version() == f"1.{minor}"
    # A close option wins over keep-alive (llhttp keeps an HTTP/1.0 request naming both alive;
    # the front end's callback path closes it too).
    close = any(
        token.strip().lower() == b"close"
        for name, value in seen.headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    )
    assert (seen.keep_alive and not close) == keep_alive
    assert seen.upgrade is False
    assert headers == _kept(seen.headers, underscores, trusted)
    assert [v for n, v in seen.headers if n.lower() == b"host"] == [host]
    assert request_id == _last(seen.headers, b"x-request-id")
    assert traceparent == _last(seen.headers, b"traceparent")
    assert amzn == _last(seen.headers, b"x-amzn-trace-id")


@given(
    st.sampled_from([b"GET", b"HEAD", b"DELETE"]),
    st.sampled_from([b"/", b"/items/42?lang=en&n=1", b"/a/b%20c"]),
    st.lists(st.sampled_from([b"Accept: */*", b"User-Agent: wrk", b"X-Api-Key: k"]), max_size=3),
)
def test_plain_requests_are_taken(method: bytes, target: bytes, lines: list[bytes]) -> None:
    data = b"%s %s HTTP/1.1\r\nHost: gw\r\n%s\r\n" % (
        method,
        target,
        b"".join(line + b"\r\n" for line in lines),
    )
    assert simple_request(data, _MAX_HEADER_BYTES, _MAX_HEADERS, False, False) is not None


_statuses = st.sampled_from(
    [b"200 OK"] * 12
    + [
        b"201 Created",
        b"404 Not Found",
        b"204 No Content",
        b"304 Not Modified",
        b"100 Continue",
        b"200",
        b"200 ",
        b"599 X",
        b"600 Big",
        b"20 OK",
        b"200 \xe9t\xe9",
    ]
)
_plain_answer_names = st.sampled_from(
    [
        b"Content-Type",
        b"Server",
        b"Date",
        b"Vary",
        b"Connection",
        b"Keep-Alive",
        b"X-Own",
        b"X-Up",
        b"Set-Cookie",
    ]
)
_tricky_answer_names = st.sampled_from([b"Transfer-Encoding", b"Content-Length", b"Bad Name", b""])
_plain_answer_values = st.sampled_from(
    [b"text/plain", b"close", b"keep-alive", b"X-Up", b"Accept, Origin", b"", b"\x80"]
)
_tricky_answer_values = st.sampled_from(
    [b"chunked", b"3", b"03", b"+3", b"3, 3", b"  spaced  ", b"a\x00b"]
)


@st.composite
def _answer_line(draw: st.DrawFn) -> bytes:
    plain = draw(st.integers(0, 9)) > 0
    name = draw(_plain_answer_names if plain else _tricky_answer_names)
    plain_value = draw(st.integers(0, 9)) > 0
    value = draw(_plain_answer_values if plain_value else _tricky_answer_values)
    return name + draw(_separators) + value + draw(_eol)


@st.composite
def _answers(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([b"HTTP/1.1 "] * 10 + [b"HTTP/1.0 ", b"HTTP/2 ", b"HTTP/1.1  "]))
    parts = [version, draw(_statuses), draw(_eol)]
    body = draw(st.sampled_from([b"abc", b"", b'{"id":1}']))
    if draw(st.integers(0, 9)):
        parts += [b"Content-Length: %d" % len(body), draw(_eol)]
    parts += draw(st.lists(_answer_line(), max_size=6))
    parts.append(draw(_eol))
    parts.append(body)
    parts.append(draw(st.sampled_from([b""] * 8 + [b"x", b"HTTP/1.1 200 OK\r\n"])))
    return b"".join(parts)


# A request's own response headers (its stages'): they replace an upstream's, a Vary excepted.
_own = st.lists(
    st.sampled_from(["X-Own", "x-request-id", "Server", "Age", "Vary"]), max_size=3
).map(lambda names: dict.fromkeys(names, "v"))


@settings(max_examples=1500)
@given(_answers(), _own)
def test_an_answer_taken_natively_is_read_the_same_by_llhttp(
    data: bytes, own: dict[str, str]
) -> None:
    taken = whole_answer(data, own, 65_536)
    if taken is None:
        return
    status, reason, head, body, keep_alive = taken
    seen = _Recorded()
    parser = seen.parser = httptools.HttpResponseParser(seen)
    parser.feed_data(data)
    assert seen.begun == seen.complete == 1
    assert parser.get_status_code() == status
    assert reason == (seen.status if seen.status.isascii() else b"")
    assert seen.body == body
    # A "close" ends the connection whatever else the answer says; llhttp lets an HTTP/1.0
    # answer's "keep-alive" win over it, which would reuse a connection the upstream closes.
    says_close = any(
        name.lower() == b"connection"
        and any(token.strip().lower() == b"close" for token in value.split(b","))
        for name, value in seen.headers
    )
    assert keep_alive == (seen.keep_alive and not says_close)
    assert relayed_head(seen.headers, own) == head


@given(st.sampled_from([b"", b"hello", b'{"id":"1"}']), _own)
def test_plain_answers_are_taken(body: bytes, own: dict[str, str]) -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
    data = head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    assert whole_answer(data, own, 65_536) is not None
