"""Resource policy: allow and deny CIDR lists per API, checked on the peer address; and
`execute-api:Invoke` statements on the IAM principal of SigV4-signed requests.

Deny wins over allow; a non-empty allow list admits only the addresses it covers. The address is
the TCP peer (`ctx.client_ip`): X-Forwarded-For is not trusted, because the configuration has no
way yet to name the proxies whose word could be taken for it.

Statements are checked after SigV4 verification (the principal is known only then), on the
request's resource ARN `arn:aws:execute-api:REGION:ACCOUNT:API_ID/STAGE/METHOD/PATH`: a matching
Deny refuses ("... with an explicit deny"); with Allow statements, one must match. The credentials
file stands for the principals' own IAM policies, which would allow the call: so an API whose
statements are all Deny admits every principal they do not name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pygw.config.model import ApiConfig, IamPolicyStatement
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.response import Response
from pygw.sigv4 import IamPrincipal

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class CidrSet:
    """Networks grouped by prefix length: a lookup costs one mask and one set probe per distinct
    prefix length of the address's family, however many networks are listed."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, networks: Iterable[_IPNetwork]) -> None:
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        for listed in networks:
            network = _unmapped(listed)
            table = v4 if network.version == 4 else v6
            table.setdefault(network.prefixlen, set()).add(int(network.network_address))
        self._v4 = _masked(v4, 32)
        self._v6 = _masked(v6, 128)

    def __contains__(self, address: _IPAddress) -> bool:
        value = int(address)
        table = self._v4 if address.version == 4 else self._v6
        return any(value & mask in prefixes for mask, prefixes in table)

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(network: _IPNetwork) -> _IPNetwork:
    # Peers are matched as the IPv4 address they carry, so an IPv4-mapped rule must be too.
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        return ipaddress.IPv4Network(
            (int(network.network_address) & 0xFFFF_FFFF, network.prefixlen - 96)
        )
    return network


def _masked(table: dict[int, set[int]], bits: int) -> tuple[tuple[int, frozenset[int]], ...]:
    full = (1 << bits) - 1
    # Shortest prefixes first: broad networks are the likelier hit.
    return tuple(
        (full ^ ((1 << (bits - length)) - 1), frozenset(prefixes))
        for length, prefixes in sorted(table.items())
    )


def peer_address(client_ip: str) -> _IPAddress | None:
    """The peer as an address, IPv4-mapped IPv6 (`::ffff:a.b.c.d`) read as the IPv4 it carries
    so that one IPv4 rule covers both socket families; None if it is not an IP (a unix socket)."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return None
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
    return address


class ResourcePolicyStage:
    """Refuses with ACCESS_DENIED a peer the policy does not admit.

    A peer that is not an IP address at all (a unix-socket client) is refused: a policy exists to
    restrict who gets in, and an unknown address cannot be shown to be outside the deny list.
    """

    __slots__ = ("_allow", "_deny")

    def __init__(self, allow_cidrs: Iterable[str], deny_cidrs: Iterable[str]) -> None:
        self._allow = CidrSet(ipaddress.ip_network(cidr, strict=False) for cidr in allow_cidrs)
        self._deny = CidrSet(ipaddress.ip_network(cidr, strict=False) for cidr in deny_cidrs)

    def admits(self, client_ip: str) -> bool:
        address = peer_address(client_ip)
        if address is None or address in self._deny:
            return False
        return not self._allow or address in self._allow

    def check(self, ctx: RequestContext) -> Response | None:
        if self.admits(ctx.client_ip):
            return None
        raise GatewayError(ErrorType.ACCESS_DENIED)

    async def __call__(self, ctx: RequestContext) -> Response | None:
        return self.check(ctx)


def build_resource_policy_stage(api: ApiConfig) -> ResourcePolicyStage | None:
    """The API's policy stage, or None when it has no policy (or an empty one)."""
    policy = api.resource_policy
    if policy is None or not (policy.allow_cidrs or policy.deny_cidrs):
        return None
    return ResourcePolicyStage(policy.allow_cidrs, policy.deny_cidrs)


# -- statements on IAM principals ----------------------------------------------------------------


def _glob(pattern: str) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters (slashes included), `?` one character."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _role_arn(arn: str) -> str | None:
    # A role named in a policy covers its sessions: arn:aws:sts::ACCT:assumed-role/ROLE/SESSION
    # is arn:aws:iam::ACCT:role/ROLE.
    head, sep, rest = arn.partition(":assumed-role/")
    if not sep or not head.startswith("arn:aws:sts::"):
        return None
    role = rest.rpartition("/")[0]
    return f"arn:aws:iam::{head[len('arn:aws:sts::') :]}:role/{role}" if role else None


@dataclass(frozen=True, slots=True)
class _Statement:
    allow: bool
    everyone: bool
    accounts: frozenset[str]
    principals: tuple[re.Pattern[str], ...]
    resources: tuple[re.Pattern[str], ...]

    def names(self, principal: IamPrincipal) -> bool:
        if self.everyone or principal.account_id in self.accounts:
            return True
        arns = (principal.arn, _role_arn(principal.arn))
        return any(p.fullmatch(arn) for p in self.principals for arn in arns if arn)

    def covers(self, resource: str) -> bool:
        return any(r.fullmatch(resource) for r in self.resources)


def _compile_statement(statement: IamPolicyStatement, api_arn: str) -> _Statement:
    accounts: set[str] = set()
    principals: list[re.Pattern[str]] = []
    everyone = False
    for name in statement.principal:
        if name == "*":
            everyone = True
        elif name.isdigit():
            accounts.add(name)
        elif name.startswith("arn:aws:iam::") and name.endswith(":root"):
            accounts.add(name[len("arn:aws:iam::") : -len(":root")])
        else:
            principals.append(_glob(name))
    resources = tuple(
        _glob(api_arn + r[len("execute-api:") :] if r.startswith("execute-api:/") else r)
        for r in statement.resource
    )
    return _Statement(
        statement.effect == "Allow", everyone, frozenset(accounts), tuple(principals), resources
    )


class PrincipalPolicyStage:
    """Refuses a SigV4-signed request whose principal the API's statements do not admit on the
    request's resource ARN (AWS's AccessDeniedException). Runs after the iam_auth stage, which
    sets `ctx.iam`; a request without a principal is refused (the route demands one)."""

    __slots__ = ("_allows", "_denies", "_prefix")

    def __init__(self, statements: Sequence[IamPolicyStatement], api_arn: str, stage: str) -> None:
        """`api_arn`: arn:aws:execute-api:REGION:ACCOUNT:API_ID, what the resources extend."""
        compiled = [_compile_statement(s, api_arn) for s in statements]
        self._allows = tuple(s for s in compiled if s.allow)
        self._denies = tuple(s for s in compiled if not s.allow)
        self._prefix = f"{api_arn}/{stage}/"

    def resource_arn(self, method: str, path: str) -> str:
        """The request's resource: the path below the stage, without its leading slash."""
        return f"{self._prefix}{method}/{path.lstrip('/')}"

    def check(self, ctx: RequestContext) -> Response | None:
        principal = ctx.iam
        resource = self.resource_arn(ctx.request.method, ctx.path)
        who = principal.arn if principal is not None else "anonymous"
        refused = (
            f"User: {who} is not authorized to perform: execute-api:Invoke on resource: {resource}"
        )
        if principal is None:
            raise GatewayError(ErrorType.AUTHORIZER_DENIED, refused, _DENIED)
        for statement in self._denies:
            if statement.names(principal) and statement.covers(resource):
                raise GatewayError(
                    ErrorType.AUTHORIZER_DENIED, refused + " with an explicit deny", _DENIED
                )
        if not self._allows:
            return None
        for statement in self._allows:
            if statement.names(principal) and statement.covers(resource):
                return None
        raise GatewayError(ErrorType.AUTHORIZER_DENIED, refused, _DENIED)

    async def __call__(self, ctx: RequestContext) -> Response | None:
        return self.check(ctx)


_DENIED = {"x-amzn-ErrorType": "AccessDeniedException"}


def build_principal_policy_stage(
    api: ApiConfig, api_arn: str, stage: str
) -> PrincipalPolicyStage | None:
    """The statements' stage for one stage of the API, or None when the API has none."""
    policy = api.resource_policy
    if policy is None or not policy.statements:
        return None
    return PrincipalPolicyStage(policy.statements, api_arn, stage)
