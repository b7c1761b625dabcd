"""Engine: owns what runs share (limits, observers, the HTTP client, the checkpoint store)."""

from __future__ import annotations

import hashlib
import json
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ._breakers import BreakerTransport, HostPolicy, resolve_hosts
from ._errors import AsyncflowError
from ._events import Emitter
from ._scheduler import RunState, StepRuntime

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

    from ._events import Observer
    from ._graph import Flow, Plan
    from ._result import RunResult

__all__ = ["Engine"]

#: Default bound on steps in flight across every run of one engine.
DEFAULT_MAX_CONCURRENCY = 10_000
#: Default size of the engine's HTTP connection pool (all hosts together).
DEFAULT_MAX_CONNECTIONS = 100


class Engine:
    """Runs flows. An async context manager owning the resources that runs share.

    Args:
        max_concurrency: the most steps in flight at once, across every run of this engine.
        observers: callables that receive every :mod:`event <asyncflow.events>` of every run.
        fail_fast: the default for :meth:`run`: cancel the rest of a run on its first failure.
        hosts: circuit breaker and concurrency policies by host. A key is a bare host name
            (``"api.example.com"``: every scheme and port of that host) or an origin
            (``"https://api.example.com:8443"``, default port when left out: that origin only,
            which wins over a bare host). Every origin gets its own breaker and gate.
        host_policy: the policy of every host not in ``hosts``.
        http_timeout: httpx's timeout for requests through ``ctx.http`` (seconds or an
            ``httpx.Timeout``); a step's ``timeout=`` still bounds the whole attempt.
        max_connections: the size of the HTTP connection pool, all hosts together; also the
            gate size of hosts whose policy leaves ``max_concurrency`` as ``None``.
        http_transport: the transport the breaker layer sends through; defaults to httpx's
            pooled transport. Pass an ``httpx.MockTransport`` in tests. The engine closes it.

    The HTTP client (``ctx.http`` in steps, :attr:`http` here) is created when the engine is
    entered and closed when it exits. It ignores proxy environment variables, as every httpx
    client given its own transport does; pass a configured ``http_transport`` for a proxy.

    Example::

        async with Engine() as engine:
            result = await engine.run(flow, path="a.txt")
    """

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        observers: Sequence[Observer] = (),
        fail_fast: bool = False,
        hosts: Mapping[str, HostPolicy] | None = None,
        host_policy: HostPolicy | None = None,
        http_timeout: float | httpx.Timeout = 30.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(
                f"max_concurrency={max_concurrency!r}: give a whole number of at least 1."
            )
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(
                f"max_connections={max_connections!r}: give a whole number of at least 1."
            )
        self._hosts = dict(hosts or {})
        resolve_hosts(self._hosts)  # fail early on a malformed key
        self._host_policy = host_policy if host_policy is not None else HostPolicy()
        self._http_timeout = http_timeout
        self._max_connections = max_connections
        self._http_transport = http_transport
        self._http: httpx.AsyncClient | None = None
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._emit = Emitter(observers)
        self._fail_fast = fail_fast
        self._step_limiters: dict[tuple[str, str], anyio.CapacityLimiter | None] = {}
        self._stack: AsyncExitStack | None = None
        self._runtime = StepRuntime(
            limiter=self._limiter, step_limiters=self._step_limiter, emit=self._emit
        )

    async def __aenter__(self) -> Engine:
        if self._stack is not None:
            raise RuntimeError("This Engine is already open; an Engine is entered once.")
        self._stack = AsyncExitStack()
        await self._stack.__aenter__()
        try:
            self._http = await self._stack.enter_async_context(self._open_http())
        except BaseException:
            stack, self._stack = self._stack, None
            await stack.aclose()
            raise
        self._runtime.http = self._http
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._runtime.http = self._http = None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    def _open_http(self) -> httpx.AsyncClient:
        inner = self._http_transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
            )
        )
        transport = BreakerTransport(
            inner,
            hosts=self._hosts,
            default=self._host_policy,
            default_concurrency=self._max_connections,
            emit=self._emit,
        )
        return httpx.AsyncClient(transport=transport, timeout=self._http_timeout)

    @property
    def http(self) -> httpx.AsyncClient:
        """The engine's HTTP client, the one steps get as ``ctx.http``.

        Raises:
            AsyncflowError: the engine is not open.
        """
        self._check_open()
        assert self._http is not None
        return self._http

    def add_observer(self, observer: Observer) -> None:
        """Register an observer for every later event of this engine."""
        self._emit.add(observer)

    def remove_observer(self, observer: Observer) -> None:
        """Unregister an observer."""
        self._emit.remove(observer)

    def _step_limiter(self, plan: Plan, i: int) -> anyio.CapacityLimiter | None:
        key = (plan.flow, plan.steps[i].name)
        try:
            return self._step_limiters[key]
        except KeyError:
            n = plan.steps[i].concurrency
            limiter = self._step_limiters[key] = None if n is None else anyio.CapacityLimiter(n)
            return limiter

    def _check_open(self) -> None:
        if self._stack is None:
            raise AsyncflowError(
                "This Engine is not open. Use it as 'async with Engine() as engine:'."
            )

    async def run(
        self,
        flow: Flow,
        /,
        *,
        run_id: str | None = None,
        fail_fast: bool | None = None,
        **inputs: Any,
    ) -> RunResult:
        """Run ``flow`` once with ``inputs`` and return its :class:`RunResult`.

        A step failure does not raise: it is in the result (call ``raise_for_status()``).

        Args:
            flow: the flow to run.
            run_id: the run's id; derived from the flow and its inputs when not given.
            fail_fast: cancel the rest of the run on its first failure; defaults to the
                engine's setting.
            **inputs: the run inputs the flow's steps take.

        Raises:
            FlowDefinitionError: the flow is not valid.
            RunInputError: inputs are missing or unexpected.
        """
        self._check_open()
        plan = flow.validate()
        plan.check_inputs(inputs)
        rid = run_id if run_id is not None else derive_run_id(plan, inputs)
        state = RunState(
            plan,
            inputs,
            rid,
            self._runtime,
            fail_fast=self._fail_fast if fail_fast is None else fail_fast,
        )
        return await state.execute()


def derive_run_id(plan: Plan, inputs: dict[str, object]) -> str:
    """A stable run id from the flow's name and its inputs."""
    try:
        text = json.dumps(inputs, sort_keys=True, default=repr, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(sorted(inputs.items(), key=lambda kv: kv[0]))
    digest = hashlib.blake2b(text.encode(), digest_size=10).hexdigest()
    return f"{plan.flow}-{digest}"
