"""IP pools: which local address an outbound connection leaves from."""

import ipaddress
import random

from relay.models import IpPool, TenantDeliverySettings


class NoSourceAddress(Exception):
    """The pool has addresses, but none of the hop's address family."""


def pool_for(tenant_id):
    pool = (
        TenantDeliverySettings.objects.filter(tenant_id=tenant_id)
        .values_list("ip_pool", flat=True)
        .first()
    )
    if pool is not None:
        return IpPool.objects.get(pk=pool)
    return IpPool.objects.filter(is_default=True).order_by("pk").first()


def source_address(pool, hop):
    """A source address of the pool for this hop, or None to let the
    operating system choose (no pool, or a pool without addresses)."""
    if pool is None or not pool.address_list:
        return None
    family = ipaddress.ip_address(hop.address).version
    usable = [a for a in pool.address_list if ipaddress.ip_address(a).version == family]
    if not usable:
        raise NoSourceAddress(f"pool {pool.name} has no IPv{family} address")
    # Spread a pool's connections over its addresses.
    return random.choice(usable)
