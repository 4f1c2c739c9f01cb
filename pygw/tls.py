"""HTTPS on the traffic listener: certificates chosen by SNI, re-read when they change, and
mutual TLS per custom domain (`domains[].mutual_tls`).

One `ssl.SSLContext` is built per configured certificate, and per (certificate, mutual-TLS
domain) pair. The listening context's `sni_callback` picks the certificate for the client's
server name (an exact SAN DNS name first, then a wildcard SAN, else the first certificate) and
switches the connection to the matching context.

Mutual TLS: OpenSSL takes a connection's verify mode from the context it was accepted with, and
switching contexts in the SNI callback does not change it (the ssl module has no per-connection
setter). So when any domain has mutual TLS, the listening context asks every client for a
certificate (CERT_OPTIONAL), and the switched context's truststore decides: a certificate that
does not chain to it, or has expired, fails the handshake. A client sending no certificate to a
mutual-TLS domain completes the handshake and is disconnected before any request is read
(`TlsListener.admit`); a request whose Host names a mutual-TLS domain on a connection that did
not authenticate for it is answered 421 (`TlsListener.guard`).

Certificates and keys are re-read on reload (the compiled runtime carries new `TlsMaterial`) and
when their files change on disk (checked at most once per second, from the SNI callback): new
connections get the new certificate, open connections keep theirs. Unreadable new files keep
the old certificate and are logged.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from pygw.config.load import ConfigError, ConfigIssue, LoadedConfig
from pygw.http1 import ConnectionLimits, Http1Server
from pygw.response import Response
from pygw.serving import Resume, Served, ServeNow

if TYPE_CHECKING:
    from pygw.request import Request

__all__ = [
    "RedirectListener",
    "TlsListener",
    "TlsMaterial",
    "certificate_names",
    "client_certificate",
    "load_tls",
    "name_matches",
]

log = logging.getLogger("pygw")

# How often the SNI callback may look at the certificate files' modification times.
_CHECK_EVERY_S: Final = 1.0
_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

Issue = Callable[[str, str, str], None]  # (config path, message, fix)
Handler = Callable[["Request"], Awaitable[Response]]


def name_matches(pattern: str, name: str) -> bool:
    """`pattern` (a certificate's or domain's name, lower case) covers `name`: equal, or a
    `*.` wildcard standing for exactly one label."""
    if pattern == name:
        return True
    if pattern.startswith("*."):
        first, dot, rest = name.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return False


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a server certificate is for: its SAN DNS names, else its common name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value).lower() for a in common)
    return tuple(n.lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName))


# --------------------------------------------------------------------------------------------------
# What is read from disk for one config


@dataclass(frozen=True, slots=True)
class _Stamp:
    path: Path
    mtime_ns: int
    size: int


def _stamp(path: Path) -> _Stamp:
    try:
        found = path.stat()
    except OSError:
        return _Stamp(path, -1, -1)
    return _Stamp(path, found.st_mtime_ns, found.st_size)


@dataclass(frozen=True, slots=True)
class _CertSpec:
    cert: Path
    key: Path
    where: str  # config path, e.g. server.tls.certificates[0]


@dataclass(frozen=True, slots=True)
class _DomainSpec:
    name: str
    truststore: Path | None
    forward_header: str | None
    where: str


@dataclass(frozen=True, slots=True)
class _Spec:
    """The TLS settings of a config with paths made absolute: enough to read everything again."""

    config_file: str
    certificates: tuple[_CertSpec, ...]
    min_version: str
    alpn: tuple[str, ...]
    domains: tuple[_DomainSpec, ...]

    def files(self) -> tuple[Path, ...]:
        paths = [p for c in self.certificates for p in (c.cert, c.key)]
        paths.extend(d.truststore for d in self.domains if d.truststore is not None)
        return tuple(paths)


@dataclass(frozen=True, slots=True)
class _Served:
    names: tuple[str, ...]
    context: ssl.SSLContext
    not_after: datetime.datetime


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    mutual: bool
    forward_header: str | None


@dataclass(eq=False, slots=True)
class TlsMaterial:
    """Every context of one TLS configuration, built from the files as they were read."""

    spec: _Spec
    served: tuple[_Served, ...]
    domains: tuple[Domain, ...]
    # (certificate index, domain index) -> the context requiring a client certificate.
    mutual: dict[tuple[int, int], ssl.SSLContext]
    stamps: tuple[_Stamp, ...]
    # Lower-case names of the headers client certificates are forwarded in.
    forward_headers: frozenset[bytes] = frozenset()

    @property
    def asks_for_client_certs(self) -> bool:
        return bool(self.mutual)

    def covers(self, name: str) -> bool:
        """Some certificate is for `name`: one of its names equal to it or, for an exact name, a
        wildcard name covering it. A wildcard domain needs the same wildcard in a certificate."""
        return any(
            name in served.names
            or (not name.startswith("*.") and any(name_matches(p, name) for p in served.names))
            for served in self.served
        )

    def certificate_for(self, name: str | None) -> int:
        if name:
            for index, served in enumerate(self.served):
                if name in served.names:
                    return index
            for index, served in enumerate(self.served):
                if any(name_matches(p, name) for p in served.names if p.startswith("*.")):
                    return index
        return 0

    def domain_for(self, name: str | None) -> int | None:
        if not name:
            return None
        for index, domain in enumerate(self.domains):
            if domain.name == name:
                return index
        for index, domain in enumerate(self.domains):
            if name_matches(domain.name, name):
                return index
        return None

    def routed_domain_for(self, name: str | None) -> int | None:
        """The domain whose routes a request with Host `name` reaches: the exact name, else the
        longest wildcard suffix at any depth, as the router matches hosts. Wider than
        `domain_for` (one label, as certificates match), so that a Host two labels under a
        mutual-TLS wildcard domain cannot reach that domain's mappings without its client
        certificate."""
        # The router ignores a trailing dot, so this must too.
        name = name.rstrip(".") if name else name
        if not name:
            return None
        for index, domain in enumerate(self.domains):
            if domain.name == name:
                return index
        start = name.find(".", 1)
        while start != -1:
            wanted = "*" + name[start:]
            for index, domain in enumerate(self.domains):
                if domain.name == wanted:
                    return index
            start = name.find(".", start + 1)
        return None

    def context_for(self, name: str | None) -> tuple[ssl.SSLContext, Domain | None]:
        cert_index = self.certificate_for(name)
        domain_index = self.domain_for(name)
        if domain_index is None:
            return self.served[cert_index].context, None
        domain = self.domains[domain_index]
        if domain.mutual:
            return self.mutual[(cert_index, domain_index)], domain
        return self.served[cert_index].context, domain

    def changed_on_disk(self) -> bool:
        return any(_stamp(s.path) != s for s in self.stamps)


def _base_context(spec: _Spec) -> ssl.SSLContext:
    # The ssl module's server defaults: modern cipher suites, no SSLv3/TLS 1.0/1.1 by the
    # minimum set below; compression (CRIME) and renegotiation (a cheap CPU sink for a client)
    # are switched off explicitly.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[spec.min_version]
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(spec.alpn))
    return context


def _read_certificate(spec: _CertSpec, tls: _Spec, issue: Issue) -> _Served | None:
    where = spec.where
    ok = True
    for path, key in ((spec.cert, "cert"), (spec.key, "key")):
        if not path.is_file():
            issue(f"{where}.{key}", f"file not found: {path}", f"check the path of {key}")
            ok = False
    if not ok:
        return None
    try:
        pem = spec.cert.read_bytes()
        leaf = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as failed:
        issue(
            f"{where}.cert",
            f"{spec.cert} is not a PEM certificate ({failed})",
            "give the certificate chain in PEM, leaf first",
        )
        return None
    context = _base_context(tls)
    try:
        context.load_cert_chain(spec.cert, spec.key)
    except ssl.SSLError as failed:
        if "KEY_VALUES_MISMATCH" in str(failed) or "key values mismatch" in str(failed):
            issue(
                f"{where}.key",
                f"{spec.key} is not the private key of {spec.cert}",
                "give the key the certificate was issued for",
            )
        else:
            issue(
                f"{where}.key",
                f"cannot load {spec.key} with {spec.cert}: {failed}",
                "give an unencrypted PEM private key matching the certificate",
            )
        return None
    names = certificate_names(leaf)
    not_after = leaf.not_valid_after_utc
    if not_after < datetime.datetime.now(datetime.UTC):
        log.warning("%s: %s expired on %s", tls.config_file, spec.cert, not_after)
    return _Served(names, context, not_after)


def _build(spec: _Spec, issue: Issue) -> TlsMaterial | None:
    stamps = tuple(_stamp(p) for p in spec.files())
    served: list[_Served] = []
    failed = False
    for cert in spec.certificates:
        read = _read_certificate(cert, spec, issue)
        if read is None:
            failed = True
        else:
            served.append(read)
    domains = tuple(
        Domain(d.name, d.truststore is not None, d.forward_header) for d in spec.domains
    )
    mutual: dict[tuple[int, int], ssl.SSLContext] = {}
    for domain_index, domain in enumerate(spec.domains):
        truststore = domain.truststore
        if truststore is None:
            continue
        where = f"{domain.where}.mutual_tls.truststore"
        if not truststore.is_file():
            issue(where, f"file not found: {truststore}", "check the path of truststore")
            failed = True
            continue
        if failed:
            continue
        for cert_index, cert in enumerate(spec.certificates):
            context = _base_context(spec)
            try:
                context.load_cert_chain(cert.cert, cert.key)
                context.load_verify_locations(cafile=truststore)
            except ssl.SSLError as error:
                issue(
                    where,
                    f"{truststore} holds no usable CA certificate ({error})",
                    "give the CA certificates in PEM",
                )
                failed = True
                break
            context.verify_mode = ssl.CERT_REQUIRED
            mutual[(cert_index, domain_index)] = context
    if failed:
        return None
    forward = frozenset(
        d.forward_header.lower().encode("latin-1") for d in domains if d.forward_header is not None
    )
    return TlsMaterial(spec, tuple(served), domains, mutual, stamps, forward)


def load_tls(loaded: LoadedConfig, issue: Issue) -> TlsMaterial | None:
    """The TLS material of a config (None without server.tls, or when `issue` was called)."""
    config = loaded.config
    tls = config.server.tls
    if tls is None:
        return None
    spec = _Spec(
        config_file=str(loaded.path),
        certificates=tuple(
            _CertSpec(
                loaded.resolve(c.cert),
                loaded.resolve(c.key),
                f"server.tls.certificates[{i}]",
            )
            for i, c in enumerate(tls.certificates)
        ),
        min_version=tls.min_version,
        alpn=tuple(tls.alpn),
        domains=tuple(
            _DomainSpec(
                d.name,
                loaded.resolve(d.mutual_tls.truststore) if d.mutual_tls is not None else None,
                d.mutual_tls.forward_header if d.mutual_tls is not None else None,
                f"domains[{i}]",
            )
            for i, d in enumerate(config.domains)
        ),
    )
    return _build(spec, issue)


# --------------------------------------------------------------------------------------------------
# Connections


@dataclass(eq=False, slots=True)
class _Connection:
    """What the SNI callback decided for one connection, and its client certificate once read."""

    domain: Domain | None
    fields: tuple[str, str, str, str, str, str] | None = None  # parsed once per connection
    parsed: bool = field(default=False)


# Keyed by the connection's ssl.SSLObject: the entry goes when the connection does.
_CONNECTIONS: weakref.WeakKeyDictionary[ssl.SSLObject, _Connection] = weakref.WeakKeyDictionary()


def _openssl_time(moment: datetime.datetime) -> str:
    # The form AWS (and `openssl x509 -dates`) writes: "May 28 12:30:02 2019 GMT".
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S %Y} GMT"


def _serial(number: int) -> str:
    raw = number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")
    return raw.hex(":")


def _parse_client_cert(der: bytes) -> tuple[str, str, str, str, str, str]:
    cert = x509.load_der_x509_certificate(der)
    return (
        cert.public_bytes(Encoding.PEM).decode("ascii"),
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        _serial(cert.serial_number),
        _openssl_time(cert.not_valid_before_utc),
        _openssl_time(cert.not_valid_after_utc),
    )


def _ssl_object(transport: Any) -> ssl.SSLObject | None:
    if transport is None:
        return None
    found = transport.get_extra_info("ssl_object")
    return found if isinstance(found, ssl.SSLObject) else None


def _connection_of(transport: Any) -> tuple[ssl.SSLObject, _Connection] | None:
    sslobj = _ssl_object(transport)
    if sslobj is None:
        return None
    record = _CONNECTIONS.get(sslobj)
    return None if record is None else (sslobj, record)


def client_certificate(request: Request) -> dict[str, Any] | None:
    """The client certificate of a mutual-TLS request as API Gateway hands it to Lambda
    functions and authorizers (`requestContext.identity.clientCert` in payload 1.0,
    `requestContext.authentication.clientCert` in 2.0); None for any other request."""
    if request.scheme != "https":
        return None
    found = _connection_of(request.transport)
    if found is None:
        return None
    sslobj, record = found
    if record.domain is None or not record.domain.mutual:
        return None
    if not record.parsed:
        record.parsed = True
        der = sslobj.getpeercert(binary_form=True)
        record.fields = _parse_client_cert(der) if der else None
    if record.fields is None:
        return None
    pem, subject, issuer, serial, not_before, not_after = record.fields
    return {
        "clientCertPem": pem,
        "subjectDN": subject,
        "issuerDN": issuer,
        "serialNumber": serial,
        "validity": {"notBefore": not_before, "notAfter": not_after},
    }


def _host_name(request: Request) -> str:
    host = request.host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host


class TlsListener:
    """The listening context of one HTTPS listener and the material it currently serves."""

    def __init__(self, material: TlsMaterial) -> None:
        self._material = material
        self._next_check = time.monotonic() + _CHECK_EVERY_S
        # Stamps of files that failed to load: not retried (nor logged again) until they change.
        self._refused: tuple[_Stamp, ...] | None = None
        self.context = _base_context(material.spec)
        self.context.sni_callback = self._on_server_name
        self._apply(material)

    @property
    def material(self) -> TlsMaterial:
        return self._material

    def guards_requests(self) -> bool:
        """Whether `guard` may refuse or change a request (client certificates asked for or
        forwarded): otherwise a request may skip it."""
        material = self._material
        return material.asks_for_client_certs or bool(material.forward_headers)

    def _apply(self, material: TlsMaterial) -> None:
        self._material = material
        first = material.spec.certificates[0]
        # Served only if the SNI callback could not switch (it always does): a fallback.
        self.context.load_cert_chain(first.cert, first.key)
        self.context.verify_mode = (
            ssl.CERT_OPTIONAL if material.asks_for_client_certs else ssl.CERT_NONE
        )

    def swap(self, material: TlsMaterial) -> None:
        """New connections are served from `material` (a reload); open ones keep theirs."""
        self._apply(material)
        self._refused = None
        self._next_check = time.monotonic() + _CHECK_EVERY_S

    def refresh_if_changed(self) -> bool:
        """Re-reads the certificate files when they changed on disk; False when the new files
        are refused (the current certificates keep being served)."""
        material = self._material
        if not material.changed_on_disk():
            return True
        stamps = tuple(_stamp(s.path) for s in material.stamps)
        if stamps == self._refused:
            return False
        problems: list[ConfigIssue] = []

        def issue(path: str, message: str, fix: str) -> None:
            problems.append(ConfigIssue(material.spec.config_file, path, message, fix))

        fresh = _build(material.spec, issue)
        if fresh is None:
            self._refused = stamps
            log.error(
                "certificate files changed but were refused, still serving the previous ones:\n%s",
                ConfigError(problems),
            )
            return False
        self._apply(fresh)
        self._refused = None
        log.info("certificates re-read from disk")
        return True

    def _on_server_name(
        self, sslobj: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext
    ) -> int | None:
        try:
            now = time.monotonic()
            if now >= self._next_check:
                self._next_check = now + _CHECK_EVERY_S
                self.refresh_if_changed()
            name = server_name.lower().rstrip(".") if server_name else None
            context, domain = self._material.context_for(name)
            sslobj.context = context
            _CONNECTIONS[sslobj] = _Connection(domain)
        except Exception:
            # An exception here would end the handshake with an internal error alert.
            log.exception("choosing a certificate failed; the default one is served")
            _CONNECTIONS[sslobj] = _Connection(None)
        return None

    def protocol_factory(
        self,
        factory: Callable[[], asyncio.Protocol],
        h2_factory: Callable[[], asyncio.Protocol] | None = None,
    ) -> Callable[[], asyncio.Protocol]:
        """Protocols handed their connection only once `admit` let it in: `h2_factory`'s when
        the handshake chose HTTP/2 through ALPN, else `factory`'s (HTTP/1.1)."""

        def make() -> asyncio.Protocol:
            return _Admission(factory, h2_factory, self.admit)

        return make

    def admit(self, transport: Any) -> bool:
        """False for a connection to a mutual-TLS domain that sent no client certificate."""
        found = _connection_of(transport)
        if found is None:
            return True
        sslobj, record = found
        if record.domain is None or not record.domain.mutual:
            return True
        return sslobj.getpeercert(binary_form=True) is not None

    def guard(self, handler: Handler, refuse: Callable[[int, str], Response]) -> Handler:
        """`handler` behind a check that a request naming a mutual-TLS domain in its Host came
        over a connection that authenticated for that domain: otherwise a client could pick
        another name in the handshake (SNI) and skip the client certificate."""

        async def guarded(request: Request) -> Response:
            refused = self._refusal(request, refuse)
            return refused if refused is not None else await handler(request)

        return guarded

    def guard_now(self, serve_now: ServeNow, refuse: Callable[[int, str], Response]) -> ServeNow:
        """`guard` for the way to serve a request without a task (pygw/serving.py)."""

        def guarded_now(request: Request, resume: Resume | None) -> Served:
            refused = self._refusal(request, refuse)
            return refused if refused is not None else serve_now(request, resume)

        return guarded_now

    def _refusal(self, request: Request, refuse: Callable[[int, str], Response]) -> Response | None:
        material = self._material
        if material.forward_headers:
            if request.upgrade is not None:
                # A WebSocket handshake's headers were read by aiohttp and cannot be
                # rewritten here: one claiming to carry a client certificate is refused.
                if any(n.lower() in material.forward_headers for n, _ in request.raw_headers):
                    return refuse(400, "Bad Request")
            else:
                _forward_client_cert(request, material.forward_headers)
        if material.asks_for_client_certs:
            index = material.routed_domain_for(_host_name(request))
            if index is not None and material.domains[index].mutual:
                found = _connection_of(request.transport)
                chosen = found[1].domain if found is not None else None
                # By name: a reload builds new Domain objects for connections already open.
                wanted = material.domains[index].name
                if chosen is None or not chosen.mutual or chosen.name != wanted:
                    return refuse(421, "Misdirected Request")
        return None


def _forward_client_cert(request: Request, names: frozenset[bytes]) -> None:
    """Puts the client certificate (URL-encoded PEM) in the header its domain names, for
    upstreams behind http_proxy; whatever the client sent under those names is dropped."""
    headers = tuple(pair for pair in request.raw_headers if pair[0].lower() not in names)
    found = _connection_of(request.transport)
    domain = found[1].domain if found is not None else None
    if domain is not None and domain.forward_header is not None:
        cert = client_certificate(request)
        if cert is not None:
            value = quote(cert["clientCertPem"], safe="").encode("ascii")
            headers = (*headers, (domain.forward_header.encode("latin-1"), value))
    request.raw_headers = headers


class _Admission(asyncio.Protocol):
    """Stands in for a connection's protocol until the handshake is done: then either hands
    the connection over (the protocol sees nothing of this one) or closes it."""

    __slots__ = ("_admit", "_h2", "_http1")

    def __init__(
        self,
        http1: Callable[[], asyncio.Protocol],
        h2: Callable[[], asyncio.Protocol] | None,
        admit: Callable[[Any], bool],
    ) -> None:
        self._http1 = http1
        self._h2 = h2
        self._admit = admit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admit(transport):
            log.info("closed a connection to a mutual-TLS domain without a client certificate")
            transport.close()
            return
        inner = self._http1
        if self._h2 is not None:
            sslobj = _ssl_object(transport)
            if sslobj is not None and sslobj.selected_alpn_protocol() == "h2":
                inner = self._h2
        protocol = inner()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        pass  # a refused connection: nothing it sends is read


def redirect_location(request: Request, https_port: int) -> str | None:
    """Where the redirect listener sends `request`: the same host and target over HTTPS, or
    None when the Host header is missing or is not a plain host name or address."""
    host = _host_name(request)
    if not host or not all(c.isalnum() or c in ".-_[]:" for c in host):
        return None
    port = "" if https_port == 443 else f":{https_port}"
    target = request.raw_path if request.raw_path.startswith("/") else "/"
    return f"https://{host}{port}{target}"


def redirect_handler(https_port: Callable[[], int]) -> Handler:
    """The whole application of the redirect listener: 308 to the HTTPS listener."""

    async def redirect(request: Request) -> Response:
        location = redirect_location(request, https_port())
        if location is None:
            response = Response(status=400, text="Bad Request: missing or malformed Host\n")
            response.force_close()
            return response
        return Response(status=308, headers={"Location": location})

    return redirect


@dataclass(slots=True)
class RedirectListener:
    """The plain listener of `server.redirect_http`."""

    server: asyncio.Server
    http: Http1Server

    @classmethod
    async def start(
        cls,
        host: str,
        port: int,
        https_port: int,
        limits: ConnectionLimits,
        error_answer: Callable[[int, str], Response],
        reuse_port: bool,
    ) -> RedirectListener:
        http = Http1Server(redirect_handler(lambda: https_port), limits, error_answer)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(http, host, port, reuse_port=reuse_port, backlog=1024)
        return cls(server, http)

    @property
    def port(self) -> int:
        sock = self.server.sockets[0]
        port: int = sock.getsockname()[1]
        return port

    async def stop(self, within_s: float) -> None:
        self.server.close()
        await self.http.shutdown(within_s)
