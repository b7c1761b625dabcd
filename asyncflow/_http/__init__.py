"""The HTTP stack behind ``ctx.http``: per-host policies, circuits and gates over sharded pools."""

from __future__ import annotations

from .circuit import (
    BreakerTransport,
    HostPolicy,
    HostStatistics,
    host_key,
    is_transport_failure,
    resolve_hosts,
    step_deadline,
)
from .pool import ShardedTransport

__all__ = [
    "BreakerTransport",
    "HostPolicy",
    "HostStatistics",
    "ShardedTransport",
    "host_key",
    "is_transport_failure",
    "resolve_hosts",
    "step_deadline",
]
