from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from app.core.config import IPNetwork


def _trusted(address: str, proxies: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(
    peer: str, forwarded_for: Iterable[str], trusted_proxies: Sequence[IPNetwork]
) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy.

    Walks X-Forwarded-For from the right (the hops our proxies appended) and returns the
    first address that is not a trusted proxy; the left part is client-controlled and is
    only reached through a chain of trusted proxies.
    """
    if not _trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer
