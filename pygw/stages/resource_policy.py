"""Resource policy: allow and deny CIDR lists per API, checked on the peer address.

Deny wins over allow; a non-empty allow list admits only the addresses it covers. The address is
the TCP peer (`ctx.client_ip`): X-Forwarded-For is not trusted, because the configuration has no
way yet to name the proxies whose word could be taken for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pygw.config.model import ApiConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.response import Response

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
