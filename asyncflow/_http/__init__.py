"""The HTTP stack behind ``ctx.http``, in the order a request passes it.

- ``transport.py``: :class:`BreakerTransport`, the httpx transport of the engine's client: it
  routes each request to its host and counts the outcome;
- ``host.py``: one host's admission, its concurrency gate and its circuit;
- ``rate.py``: one host's request rate, a leaky bucket that a 429's ``Retry-After`` pauses;
- ``circuit.py``: the circuit's state machine, the one adapter of aiobreaker;
- ``pool.py``: :class:`ShardedTransport`, httpx's connection pool in small shards;
- ``policy.py``: :class:`HostPolicy` and host keys, which policy applies to a request;
- ``failures.py``: what counts as a host's failure, shared by the circuit and the retries.

Nothing here imports the engine, the scheduler or the retry layer.
"""

from __future__ import annotations

from .failures import is_failure_status, is_transport_failure, step_deadline
from .host import HostStatistics
from .policy import HostPolicy, host_key, resolve_hosts
from .pool import ShardedTransport
from .rate import parse_retry_after
from .transport import BreakerTransport

__all__ = [
    "BreakerTransport",
    "HostPolicy",
    "HostStatistics",
    "ShardedTransport",
    "host_key",
    "is_failure_status",
    "is_transport_failure",
    "parse_retry_after",
    "resolve_hosts",
    "step_deadline",
]
