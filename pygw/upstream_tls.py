"""TLS from the gateway to its https upstreams (`http_proxy` integrations' `tls` blocks): the CA
bundle an upstream's certificate must chain to, a client certificate for upstreams that require
mutual TLS, and the server name sent as SNI and verified.

Contexts are built when a config is compiled, never per connection: reading PEM files and
loading a CA bundle cost milliseconds, a TLS handshake with a ready context does not. Targets
with the same files and `verify` share one context (the server name is given per connection).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from pygw.config.load import LoadedConfig
from pygw.config.model import UpstreamTlsConfig
from pygw.tls import Issue

__all__ = ["UpstreamTls", "UpstreamTlsBuilder", "client_context"]


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """What one https target connects with."""

    context: ssl.SSLContext
    # SNI and the name verified; None means the target URL's host.
    server_name: str | None = None


def client_context(
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """A client context; raises OSError or ssl.SSLError when a file cannot be used."""
    # The ssl module's client defaults: TLS 1.2 or later, modern cipher suites, the system's
    # CAs unless a bundle is given.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def _merged(own: UpstreamTlsConfig | None, base: UpstreamTlsConfig | None) -> UpstreamTlsConfig:
    """A target's settings: its own fields, the rest from the integration's block. The client
    certificate and its key are taken together, never one from each block."""
    if own is None:
        return base if base is not None else UpstreamTlsConfig()
    if base is None:
        return own
    pair = own if own.cert is not None else base
    return UpstreamTlsConfig(
        ca=own.ca if own.ca is not None else base.ca,
        cert=pair.cert,
        key=pair.key,
        server_name=own.server_name if own.server_name is not None else base.server_name,
        verify=own.verify if own.verify is not None else base.verify,
    )


class UpstreamTlsBuilder:
    """Builds (and shares within one compile) the contexts of a config's https targets, reporting
    unusable settings through `issue` and `verify: false` through `warn`."""

    def __init__(self, loaded: LoadedConfig, issue: Issue, warn: Issue) -> None:
        self._loaded = loaded
        self._report_issue = issue
        self._report_warning = warn
        self._contexts: dict[tuple[Path | None, Path | None, Path | None, bool], ssl.SSLContext]
        self._contexts = {}
        # An integration's block applies to each of its targets and to each stage's copy of the
        # route: one report per place and problem is enough.
        self._reported: set[tuple[str, str]] = set()

    def _issue(self, where: str, message: str, fix: str) -> None:
        if (where, message) not in self._reported:
            self._reported.add((where, message))
            self._report_issue(where, message, fix)

    def _warn(self, where: str, message: str, fix: str) -> None:
        if (where, message) not in self._reported:
            self._reported.add((where, message))
            self._report_warning(where, message, fix)

    def for_target(
        self,
        url: str,
        own: UpstreamTlsConfig | None,
        base: UpstreamTlsConfig | None,
        where: str,
        insecure: bool = False,
    ) -> UpstreamTls | None:
        """The settings of the target at `url`, None for the defaults (system CAs, URL host,
        verified) or when `issue` was called. `where` is the path of the block that applies
        (the target's own when it has one); `insecure` is the legacy `tls_verify: false`."""
        if not url.startswith("https://"):
            if own is not None or base is not None:
                self._issue(
                    where,
                    f"tls is set for {url}, which is plain http",
                    "write https:// in the URL, or remove the tls block",
                )
            return None
        if own is None and base is None and not insecure:
            return None
        settings = _merged(own, base)
        verify = settings.verify is not False and not insecure
        if not verify:
            self._warn(
                where,
                f"the certificate of {url} is not verified: anyone on the path can read and "
                "change this traffic",
                "remove verify: false (and tls_verify: false) outside testing; give tls.ca "
                "for a private CA",
            )
        files: list[Path | None] = []
        usable = True
        for name in ("ca", "cert", "key"):
            value: str | None = getattr(settings, name)
            path = self._loaded.resolve(value) if value is not None else None
            if path is not None and not path.is_file():
                self._issue(
                    f"{where}.{name}", f"file not found: {path}", f"check the path of {name}"
                )
                usable = False
            files.append(path)
        if not usable:
            return None
        ca, cert, key = files
        cache_key = (ca, cert, key, verify)
        context = self._contexts.get(cache_key)
        if context is None:
            context = self._build(ca, cert, key, verify, where)
            if context is None:
                return None
            self._contexts[cache_key] = context
        return UpstreamTls(context, settings.server_name)

    def _build(
        self, ca: Path | None, cert: Path | None, key: Path | None, verify: bool, where: str
    ) -> ssl.SSLContext | None:
        try:
            context = client_context(ca, None, None, verify)
        except (OSError, ssl.SSLError) as failed:
            self._issue(
                f"{where}.ca",
                f"{ca} holds no usable CA certificate ({failed})",
                "give the CA certificates in PEM",
            )
            return None
        if cert is None:
            return context
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as failed:
            text = str(failed)
            if "KEY_VALUES_MISMATCH" in text or "key values mismatch" in text:
                self._issue(
                    f"{where}.key",
                    f"{key} is not the private key of {cert}",
                    "give the key the client certificate was issued for",
                )
            else:
                self._issue(
                    f"{where}.cert",
                    f"cannot load {cert} with {key}: {failed}",
                    "give the client certificate chain in PEM (leaf first) and its unencrypted "
                    "PEM private key",
                )
            return None
        return context
