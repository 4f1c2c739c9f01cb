"""AWS Signature Version 4 verification, and the IAM principals it establishes.

Neutral ground: the `iam_auth` stage verifies routes with it, the WebSocket integration verifies
calls to the @connections API with it, and the event builders shape `IamPrincipal`s into events.

The canonical request is rebuilt from the request as it arrived, the way botocore's `SigV4Auth`
builds it on the client (the signer every AWS SDK for Python user has): the path as sent, dot
segments and empty segments removed, then percent-encoded once more (`%2F` is signed as `%252F`,
as API Gateway expects for execute-api); query pairs decoded and re-encoded with AWS's unreserved
set, sorted; only the signed headers, values trimmed; the payload hash from
`x-amz-content-sha256` (`UNSIGNED-PAYLOAD` taken as is, a hash checked against the body) or the
body's SHA-256.

Failures raise `SigV4Error` with the error type and message AWS answers with. Messages carry what
the client sent and the canonical forms the gateway computed (as AWS's do, so a client can find
its mistake); never the secret, the signing key or the expected signature.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, unquote_to_bytes

import yaml

__all__ = [
    "EMPTY_SHA256",
    "UNSIGNED_PAYLOAD",
    "IamCredential",
    "IamPrincipal",
    "SigV4Error",
    "SigV4Verifier",
    "iam_authorizer_v2",
    "iam_identity_v1",
    "load_credentials_file",
]

UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
ALGORITHM: Final = "AWS4-HMAC-SHA256"
SERVICE: Final = "execute-api"
CLOCK_SKEW_S: Final = 900  # 15 minutes either way, as AWS allows

SIGNATURE_MISMATCH: Final = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
INVALID_TOKEN: Final = "The security token included in the request is invalid."

INCOMPLETE: Final = "IncompleteSignatureException"
INVALID_SIGNATURE: Final = "InvalidSignatureException"
UNRECOGNIZED_CLIENT: Final = "UnrecognizedClientException"
MISSING_TOKEN: Final = "MissingAuthenticationTokenException"

# Signing keys are valid for one day: (access key, date) -> key. Bounded; a key table of a few
# entries uses at most two dates at a time.
_MAX_SIGNING_KEYS: Final = 4096
_ISO_BASIC: Final = "%Y%m%dT%H%M%SZ"
# A path of unreserved characters and slashes only is its own canonical form (if it starts with
# a slash and has no dot or empty segment).
_PLAIN_PATH: Final = re.compile(r"/[A-Za-z0-9_.~/-]*")


class SigV4Error(Exception):
    """A request SigV4 refuses: `error_type` is AWS's `x-amzn-ErrorType`, `message` its body's."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True, slots=True)
class IamPrincipal:
    """Who signed a request: what reaches `requestContext.identity` (1.0) and
    `requestContext.authorizer.iam` (2.0)."""

    access_key_id: str
    arn: str
    account_id: str
    user_id: str  # AWS's unique id (AIDA... for a user, AROA...:session for an assumed role)
    principal_org_id: str | None = None


@dataclass(frozen=True, slots=True)
class IamCredential:
    principal: IamPrincipal
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        # Never the secret or the token, whoever prints it.
        return f"IamCredential({self.principal.access_key_id!r}, {self.principal.arn!r})"


def iam_identity_v1(principal: IamPrincipal) -> dict[str, str | None]:
    """The fields of a 1.0 event's `requestContext.identity` a signed request fills."""
    return {
        "accessKey": principal.access_key_id,
        "accountId": principal.account_id,
        "caller": principal.user_id,
        "principalOrgId": principal.principal_org_id,
        "user": principal.user_id,
        "userArn": principal.arn,
    }


def iam_authorizer_v2(principal: IamPrincipal) -> dict[str, Any]:
    """A 2.0 event's `requestContext.authorizer` for a route with IAM authorization."""
    return {
        "iam": {
            "accessKey": principal.access_key_id,
            "accountId": principal.account_id,
            "callerId": principal.user_id,
            "cognitoIdentity": None,
            "principalOrgId": principal.principal_org_id,
            "userArn": principal.arn,
            "userId": principal.user_id,
        }
    }


# -- the credentials file ------------------------------------------------------------------------


def _derived_user_id(arn: str) -> str:
    # AWS's unique ids are 21 upper-case characters after a 4-letter kind prefix; one derived
    # from the ARN keeps events stable across restarts when the file names none.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    digest = hashlib.sha256(arn.encode()).digest()
    kind = "AROA" if ":assumed-role/" in arn or ":role/" in arn else "AIDA"
    return kind + "".join(alphabet[b % 32] for b in digest[:17])


def load_credentials_file(path: Path) -> dict[str, IamCredential]:
    """The credentials file: a YAML list (or `{credentials: [...]}`) of entries with
    access_key_id, secret_access_key, arn, account_id and optionally session_token, user_id,
    principal_org_id. Raises ValueError naming the entry and field at fault."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not YAML: {err}") from None
    if isinstance(document, dict) and "credentials" in document:
        document = document["credentials"]
    if not isinstance(document, list) or not document:
        raise ValueError(
            f"{path} must hold a non-empty list of credentials "
            "(access_key_id, secret_access_key, arn, account_id)"
        )
    found: dict[str, IamCredential] = {}
    allowed = {
        "access_key_id",
        "secret_access_key",
        "arn",
        "account_id",
        "session_token",
        "user_id",
        "principal_org_id",
    }
    for index, entry in enumerate(document):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a mapping")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}")
        values: dict[str, str] = {}
        for name in ("access_key_id", "secret_access_key", "arn", "account_id"):
            value = entry.get(name)
            if value is None or not str(value).strip():
                raise ValueError(f"{where} lacks {name}")
            values[name] = str(value).strip()
        key_id = values["access_key_id"]
        if not key_id.isalnum():
            raise ValueError(f"{where}: access_key_id {key_id!r} must be letters and digits")
        account = values["account_id"]
        if not (account.isdigit() and len(account) == 12):
            raise ValueError(f"{where}: account_id {account!r} must be 12 digits")
        arn = values["arn"]
        if not arn.startswith("arn:"):
            raise ValueError(f"{where}: arn {arn!r} is not an ARN (arn:aws:iam::ACCOUNT:user/NAME)")
        if key_id in found:
            raise ValueError(f"{where}: access_key_id {key_id!r} is listed twice")
        token = entry.get("session_token")
        user_id = entry.get("user_id")
        org = entry.get("principal_org_id")
        principal = IamPrincipal(
            access_key_id=key_id,
            arn=arn,
            account_id=account,
            user_id=str(user_id) if user_id else _derived_user_id(arn),
            principal_org_id=str(org) if org else None,
        )
        found[key_id] = IamCredential(
            principal, values["secret_access_key"], str(token) if token else None
        )
    return found


# -- verification --------------------------------------------------------------------------------


def _trimmed(value: str) -> str:
    return " ".join(value.split())


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, and empty segments dropped, as botocore's signer normalises paths."""
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and out else ""
    return first + "/".join(out) + last


def canonical_path(raw_path: str) -> str:
    """The canonical URI of a path as it arrived (still percent-encoded)."""
    if _PLAIN_PATH.fullmatch(raw_path) and "//" not in raw_path and "/." not in raw_path:
        return raw_path  # nothing to remove, nothing to encode: the common case
    normalised = _remove_dot_segments(raw_path)
    return quote(normalised.encode("utf-8", "surrogateescape"), safe="/~")


def canonical_query(raw_query: str) -> str:
    """Each name and value decoded (`+` is a space, as botocore sends one), then encoded with
    only A-Z a-z 0-9 - _ . ~ left bare, and the pairs sorted."""
    if not raw_query:
        return ""
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append(
            (
                quote(unquote_to_bytes(name.replace("+", " ")), safe="-_.~"),
                quote(unquote_to_bytes(value.replace("+", " ")), safe="-_.~"),
            )
        )
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def _parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    fields: dict[str, str] = {"": algorithm}
    for part in rest.split(","):
        name, sep, item = part.strip().partition("=")
        if sep:
            fields[name.strip()] = item.strip()
    return fields


def _amz_time(text: str) -> float | None:
    """YYYYMMDDTHHMMSSZ as epoch seconds (time.strptime costs more than all the hashing)."""
    if len(text) != 16 or text[8] != "T" or text[15] != "Z":
        return None
    digits = text[:8] + text[9:15]
    if not digits.isdigit() or not digits.isascii():
        return None
    year, month, day = int(text[0:4]), int(text[4:6]), int(text[6:8])
    hour, minute, second = int(text[9:11]), int(text[11:13]), int(text[13:15])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


class SigV4Verifier:
    """Verifies SigV4-signed requests against a table of credentials for one region.

    Everything that does not depend on the request (the scope's region and service parts, the
    key table) is fixed here; per request: one canonical request, two SHA-256 and one HMAC (the
    day's signing key is derived once per access key and date, then kept)."""

    __slots__ = ("_credentials", "_region", "_service", "_signing_keys", "_skew_s")

    def __init__(
        self,
        credentials: Mapping[str, IamCredential],
        region: str,
        service: str = SERVICE,
        skew_s: int = CLOCK_SKEW_S,
    ) -> None:
        self._credentials = dict(credentials)
        self._region = region
        self._service = service
        self._skew_s = skew_s
        self._signing_keys: dict[tuple[str, str], bytes] = {}

    @staticmethod
    def payload_needed(headers: Mapping[str, Sequence[str]]) -> bool:
        """Whether verifying needs the body (it does unless the payload is unsigned)."""
        found = headers.get("x-amz-content-sha256")
        return not (found and found[0].strip() == UNSIGNED_PAYLOAD)

    @staticmethod
    def header_table(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
        table: dict[str, list[str]] = {}
        for name, value in raw_headers:
            table.setdefault(name.decode("latin-1").lower(), []).append(
                value.decode("utf-8", "surrogateescape")
            )
        return table

    def verify(
        self,
        method: str,
        raw_target: str,
        headers: Mapping[str, Sequence[str]],
        body: bytes | None,
        now: float | None = None,
    ) -> IamPrincipal:
        """The principal that signed the request, or SigV4Error. `headers` maps lower-case names
        to their values in order (see `header_table`); `body` may be None when the payload is
        unsigned (see `payload_needed`)."""
        authorization = headers.get("authorization")
        if not authorization:
            raise SigV4Error(MISSING_TOKEN, "Missing Authentication Token")
        auth_value = authorization[0]
        fields = _parse_authorization(auth_value)
        amz_date = headers.get("x-amz-date")
        date_header = headers.get("date")
        missing = [
            f"Authorization header requires '{name}' parameter."
            for name in ("Credential", "Signature", "SignedHeaders")
            if not fields.get(name)
        ]
        if not amz_date and not date_header:
            missing.append(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                "header."
            )
        if missing or fields[""] != ALGORITHM:
            if fields[""] != ALGORITHM and not missing:
                raise SigV4Error(
                    INCOMPLETE,
                    f"Unsupported Authorization Type (only {ALGORITHM} is accepted). "
                    f"Authorization={auth_value}",
                )
            raise SigV4Error(INCOMPLETE, " ".join(missing) + f" Authorization={auth_value}")

        stamp, signed_at = self._request_time(amz_date, date_header)
        moment = time.time() if now is None else now
        if signed_at < moment - self._skew_s:
            raise SigV4Error(
                INVALID_SIGNATURE,
                f"Signature expired: {stamp} is now earlier than "
                f"{_iso(moment - self._skew_s)} ({_iso(moment)} - 15 min.)",
            )
        if signed_at > moment + self._skew_s:
            raise SigV4Error(
                INVALID_SIGNATURE,
                f"Signature not yet current: {stamp} is still later than "
                f"{_iso(moment + self._skew_s)} ({_iso(moment)} + 15 min.)",
            )

        scope_parts = fields["Credential"].split("/")
        if len(scope_parts) != 5:
            raise SigV4Error(
                INCOMPLETE,
                f"Credential should be scoped to a valid region. Authorization={auth_value}",
            )
        key_id, scope_date, region, service, terminator = scope_parts
        if scope_date != stamp[:8]:
            raise SigV4Error(
                INVALID_SIGNATURE,
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                f"from HTTP: '{scope_date}' != '{stamp[:8]}', from '{stamp}'.",
            )
        if region != self._region:
            raise SigV4Error(INVALID_SIGNATURE, "Credential should be scoped to a valid region. ")
        if service != self._service:
            raise SigV4Error(
                INVALID_SIGNATURE,
                f"Credential should be scoped to correct service: '{self._service}'. ",
            )
        if terminator != "aws4_request":
            raise SigV4Error(
                INVALID_SIGNATURE,
                "Credential should be scoped with a valid terminator: 'aws4_request', "
                f"not '{terminator}'. ",
            )

        credential = self._credentials.get(key_id)
        if credential is None:
            raise SigV4Error(UNRECOGNIZED_CLIENT, INVALID_TOKEN)
        sent_token = headers.get("x-amz-security-token")
        expected_token = credential.session_token
        if expected_token is None:
            if sent_token:
                raise SigV4Error(UNRECOGNIZED_CLIENT, INVALID_TOKEN)
        elif not sent_token or not hmac.compare_digest(
            sent_token[0].encode("utf-8", "surrogateescape"), expected_token.encode("utf-8")
        ):
            raise SigV4Error(UNRECOGNIZED_CLIENT, INVALID_TOKEN)

        signed_names = fields["SignedHeaders"].lower().split(";")
        if "host" not in signed_names:
            raise SigV4Error(
                INVALID_SIGNATURE,
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            )
        payload_hash = self._payload_hash(headers, body)
        path, _, query = raw_target.partition("?")
        canonical_headers = "".join(
            f"{name}:{','.join(_trimmed(v) for v in headers.get(name, ()))}\n"
            for name in signed_names
        )
        canonical_request = "\n".join(
            (
                method,
                canonical_path(path),
                canonical_query(query.partition("#")[0]),
                canonical_headers,
                fields["SignedHeaders"],
                payload_hash,
            )
        )
        scope = f"{scope_date}/{region}/{service}/aws4_request"
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                stamp,
                scope,
                hashlib.sha256(canonical_request.encode("utf-8", "surrogateescape")).hexdigest(),
            )
        )
        expected = hmac.digest(
            self._signing_key(credential, key_id, scope_date),
            string_to_sign.encode("utf-8"),
            "sha256",
        ).hex()
        if not hmac.compare_digest(expected.encode(), fields["Signature"].encode()):
            raise SigV4Error(
                INVALID_SIGNATURE,
                f"{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have "
                f"been\n'{canonical_request}'\n\nThe String-to-Sign should have been\n"
                f"'{string_to_sign}'\n",
            )
        return credential.principal

    def _request_time(
        self, amz_date: Sequence[str] | None, date_header: Sequence[str] | None
    ) -> tuple[str, float]:
        if amz_date:
            text = amz_date[0].strip()
            signed_at = _amz_time(text)
            if signed_at is None:
                raise SigV4Error(
                    INCOMPLETE,
                    f"Date must be in ISO-8601 'basic format'. Got '{text}'. "
                    "See http://en.wikipedia.org/wiki/ISO_8601",
                )
            return text, signed_at
        assert date_header
        try:
            parsed = parsedate_to_datetime(date_header[0])
        except (TypeError, ValueError):
            raise SigV4Error(
                INCOMPLETE, f"Date must be in RFC 1123 format. Got '{date_header[0]}'."
            ) from None
        signed_at = parsed.timestamp()
        return _iso(signed_at), signed_at

    def _payload_hash(self, headers: Mapping[str, Sequence[str]], body: bytes | None) -> str:
        declared = headers.get("x-amz-content-sha256")
        if declared:
            value = declared[0].strip()
            if value == UNSIGNED_PAYLOAD:
                return value
            computed = hashlib.sha256(body or b"").hexdigest()
            if value.lower() != computed:
                raise SigV4Error(
                    INVALID_SIGNATURE,
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                )
            return value
        return hashlib.sha256(body or b"").hexdigest()

    def _signing_key(self, credential: IamCredential, key_id: str, date: str) -> bytes:
        cache_key = (key_id, date)
        found = self._signing_keys.get(cache_key)
        if found is not None:
            return found
        key = ("AWS4" + credential.secret_access_key).encode("utf-8")
        for part in (date, self._region, self._service, "aws4_request"):
            key = hmac.digest(key, part.encode("utf-8"), "sha256")
        if len(self._signing_keys) >= _MAX_SIGNING_KEYS:
            self._signing_keys.clear()
        self._signing_keys[cache_key] = key
        return key


def _iso(moment: float) -> str:
    return time.strftime(_ISO_BASIC, time.gmtime(moment))
