"""Who the client is behind a balancer: the address `X-Forwarded-For` names, believed only when
the connection comes from a trusted proxy.

Behind nginx or HAProxy every connection comes from the balancer, so without this the failed-
login limiter, the audit trail and the access log would see one address for every client (and
one guesser would lock everyone out). The header is a list each proxy appends to; entries
added by trusted proxies are skipped from the right, and the first untrusted one is the client,
as nginx's realip module does with `real_ip_recursive on`. A client cannot forge its way past
this: what it sends itself is to the left of what the trusted proxies appended.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network  # config.Config.proxy_networks


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: `peer` unless it is a trusted proxy that forwarded the request."""
    if not trusted or not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed list is not believed at all
        if not _trusted(hop, trusted):
            return hop
    return hops[0]  # every hop is a trusted proxy: the first is as far as the list goes
