"""Host policies and host keys: which :class:`HostPolicy` protects a request.

A host key is ``scheme://host:port``, the port always written out: one circuit and one gate per
key. ``Engine(hosts=...)`` keys are bare host names (any scheme and port) or
``scheme://host[:port]`` (that one origin, which wins over a bare host).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import httpx

from asyncflow._status import OnOpen

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["HostPolicies", "HostPolicy", "host_key", "resolve_hosts"]


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """How requests to one host are protected.

    Attributes:
        fail_max: consecutive failures (transport errors and timeouts, requests cut off by a
            step's deadline, 5xx, 429) that open the circuit.
        reset_timeout: seconds the circuit stays open before one trial request is admitted.
        concurrency: requests to this host in flight at once through the engine's client;
            ``None`` for the engine's connection pool size.
        on_open: ``"fail"`` (default) or ``"wait"``; see :class:`OnOpen`.
        rate: requests per second to this host at most, on average, shared by every step of
            the engine; ``None`` for no limit. Needs the ``rate`` extra (aiolimiter). A 429
            answer's ``Retry-After`` pauses the host for every request (see ``rate.py``).
        burst: with ``rate``, how many requests may go at once after a quiet spell: any
            window of ``t`` seconds holds at most ``burst + rate * t`` requests.
    """

    fail_max: int = 5
    reset_timeout: float = 30.0
    concurrency: int | None = None
    on_open: OnOpen | Literal["fail", "wait"] = OnOpen.FAIL
    rate: float | None = None
    burst: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.fail_max, int) or self.fail_max < 1:
            raise ValueError(f"HostPolicy(fail_max={self.fail_max!r}): give a whole number >= 1.")
        if not (isinstance(self.reset_timeout, int | float) and self.reset_timeout > 0):
            raise ValueError(
                f"HostPolicy(reset_timeout={self.reset_timeout!r}): give positive seconds."
            )
        if self.concurrency is not None and (
            not isinstance(self.concurrency, int) or self.concurrency < 1
        ):
            raise ValueError(
                f"HostPolicy(concurrency={self.concurrency!r}): give a whole number "
                f">= 1, or None for the engine's connection pool size."
            )
        try:
            on_open = OnOpen(self.on_open)
        except ValueError:
            raise ValueError(
                f"HostPolicy(on_open={self.on_open!r}): give 'fail' or 'wait'."
            ) from None
        object.__setattr__(self, "on_open", on_open)
        self._check_rate()

    def _check_rate(self) -> None:
        rate = self.rate
        if rate is not None and not (
            isinstance(rate, int | float)
            and not isinstance(rate, bool)
            and math.isfinite(rate)
            and rate > 0
        ):
            raise ValueError(
                f"HostPolicy(rate={rate!r}): give requests per second above 0 (e.g. rate=10 or "
                f"rate=0.5), or None for no limit."
            )
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(
                f"HostPolicy(burst={self.burst!r}): give a whole number >= 1, the requests that "
                f"may go at once."
            )
        if rate is not None and importlib.util.find_spec("aiolimiter") is None:
            raise ValueError(
                f'HostPolicy(rate={rate!r}) needs aiolimiter: pip install "asyncflow-engine[rate]".'
            )


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def host_key(url: httpx.URL | str) -> str:
    """The host key of a URL: ``scheme://host:port``, the port always written out."""
    url = httpx.URL(url)
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme, 0)
    host = url.host
    if ":" in host:
        host = f"[{host}]"
    return f"{url.scheme}://{host}:{port}"


def resolve_hosts(
    hosts: Mapping[str, HostPolicy],
) -> tuple[dict[str, HostPolicy], dict[str, HostPolicy]]:
    """Split ``Engine(hosts=...)`` keys into exact ``scheme://host:port`` keys and bare hosts.

    Raises:
        ValueError: a key is not a host name or a ``scheme://host[:port]`` URL, or a value is
            not a :class:`HostPolicy`.
    """
    exact: dict[str, HostPolicy] = {}
    bare: dict[str, HostPolicy] = {}
    for key, policy in hosts.items():
        if not isinstance(policy, HostPolicy):
            raise ValueError(f"hosts[{key!r}] is {policy!r}; give a HostPolicy(...).")
        if "://" in key:
            url = httpx.URL(key)
            if not url.host or url.path not in ("", "/") or url.query:
                raise ValueError(
                    f"hosts key {key!r}: give 'scheme://host[:port]' without a path, "
                    f"or a bare host name."
                )
            exact[host_key(url)] = policy
        else:
            try:
                url = httpx.URL(f"http://{key}")
            except httpx.InvalidURL:
                url = None
            has_port = key.rsplit("]", 1)[-1].count(":") > 0
            if url is None or not url.host or has_port or url.raw_path != b"/":
                raise ValueError(
                    f"hosts key {key!r}: give a bare host name ('api.example.com') or "
                    f"'scheme://host:port'."
                )
            bare[url.host] = policy
    return exact, bare


class HostPolicies:
    """Per-host policies and the default, looked up by URL.

    Raises:
        ValueError: as :func:`resolve_hosts`.
    """

    __slots__ = ("_bare", "_default", "_exact")

    def __init__(
        self, hosts: Mapping[str, HostPolicy] | None = None, default: HostPolicy | None = None
    ) -> None:
        self._exact, self._bare = resolve_hosts(hosts or {})
        self._default = default if default is not None else HostPolicy()

    def for_url(self, url: httpx.URL | str) -> HostPolicy:
        """The policy that applies to ``url``: exact origin, then bare host, then the default."""
        url = httpx.URL(url)
        return self._exact.get(host_key(url)) or self._bare.get(url.host) or self._default
