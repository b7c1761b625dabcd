"""Engine: owns what runs share (limits, observers, the HTTP client, the checkpoint store)."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, cast

import anyio
import httpx

from ._attempt import in_step
from ._batch import Batch
from ._checkpointing import Checkpointing, decode_inputs, forget, new_manifest
from ._context import NO_RESOURCES, Resources
from ._emit import Emitter
from ._errors import AsyncflowError, CheckpointError, RunInputError
from ._hooks import trace_details, validate_traceparent
from ._http import BreakerTransport, HostPolicy, HostStatistics, ShardedTransport, resolve_hosts
from ._identity import derive_run_id, encode_inputs, validate_run_id
from ._leasing import DEFAULT_LEASE_TTL, Leasing, new_owner
from ._plan import RESERVED_INPUTS, compile_plan
from ._scheduler import Run, Shared
from ._subflow import run_nested
from .events import RunHook
from .observe import _stamina
from .stores import CheckpointStore, FileStore

if TYPE_CHECKING:
    from collections.abc import (
        AsyncIterable,
        Awaitable,
        Callable,
        Coroutine,
        Iterable,
        Sequence,
    )
    from types import TracebackType

    from anyio.abc import TaskGroup

    from ._batch import BatchInput, Runner
    from ._flow import Flow
    from ._plan import Plan
    from ._result import RunResult
    from .events import Event, Observer
    from .executors import Executor
    from .stores import RunCheckpoints

#: Each step's own limit, by index, for one compiled plan of a flow.
StepLimiters = tuple["anyio.CapacityLimiter | None", ...]

__all__ = ["Engine"]

#: Default bound on steps in flight across every run of one engine.
DEFAULT_CONCURRENCY = 10_000
#: Where ``Engine()`` keeps checkpoints: ``.asyncflow`` in the working directory at open time.
DEFAULT_CHECKPOINT_DIR = ".asyncflow"
#: Default bound on runs in flight in one batch of :meth:`Engine.map` (without an executor).
DEFAULT_MAP_CONCURRENCY = 100
#: Default size of the engine's HTTP connection pool (all hosts together).
DEFAULT_MAX_CONNECTIONS = 100

# stamina's own line about our retries stays off the console (see asyncflow/observe/_stamina.py).
# Once, here, not per engine: a user who removed the filter keeps it removed.
_stamina.install()


class Engine:
    """Runs flows. An async context manager owning the resources that runs share.

    Args:
        concurrency: the most steps in flight at once, across every run of this engine.
        observers: callables that receive every :mod:`event <asyncflow.events>` of every run.
            One that is also a :class:`~asyncflow.RunHook` (the OpenTelemetry exporter) wraps
            every run and step attempt in its context too.
        fail_fast: the default for :meth:`run`: cancel the rest of a run on its first failure.
        store: where checkpoints go: a :class:`CheckpointStore`, a directory for a
            :class:`FileStore`, or ``None`` to run without checkpoints. The default is
            ``FileStore(".asyncflow")``, relative to the working directory when the engine opens.
        hosts: circuit and concurrency policies by host. A key is a bare host name
            (``"api.example.com"``: every scheme and port of that host) or an origin
            (``"https://api.example.com:8443"``, default port when left out: that origin only,
            which wins over a bare host). Every origin gets its own circuit and gate.
        host_policy: the policy of every host not in ``hosts``.
        http_timeout: httpx's timeout for requests through ``ctx.http`` (seconds or an
            ``httpx.Timeout``); a step's ``timeout=`` still bounds the whole attempt.
        max_connections: the size of the HTTP connection pool, all hosts together; also the
            gate size of hosts whose policy leaves ``concurrency`` as ``None``.
        http_transport: the transport the circuit layer sends through; defaults to httpx's
            pooled transport, split into pools of at most 8 connections (httpx's pool costs
            CPU per request in proportion to its connections squared). Pass an ``httpx.MockTransport`` in tests. The engine closes it.
        resources: what steps reach as ``ctx.resources[name]`` (or ``ctx.resource(name, type)``):
            settings and clients that must not change a run's identity, such as an API's base
            URL, a key, a database pool. Never part of a fingerprint, an id or a checkpoint, so
            changing them never invalidates a run. The engine neither opens nor closes them.
        lease_ttl: with a store, every run is claimed before it executes, with a lease of
            this many seconds that the engine renews in the background (stores whose leases
            expire: not FileStore's, which last as long as the process). An engine paused for
            longer loses its runs to other engines, and its writes to them are refused.

    One owner per run: a run another engine (or process) is executing is waited for, then
    run here, restoring what that one saved; a second caller of a run this engine is already
    executing awaits the first caller's result instead of running it again.

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
        concurrency: int = DEFAULT_CONCURRENCY,
        observers: Sequence[Observer] = (),
        fail_fast: bool = False,
        store: CheckpointStore | str | os.PathLike[str] | None = DEFAULT_CHECKPOINT_DIR,
        hosts: Mapping[str, HostPolicy] | None = None,
        host_policy: HostPolicy | None = None,
        http_timeout: float | httpx.Timeout = 30.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        http_transport: httpx.AsyncBaseTransport | None = None,
        resources: Mapping[str, object] | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency={concurrency!r}: give a whole number of at least 1.")
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(
                f"max_connections={max_connections!r}: give a whole number of at least 1."
            )
        if not (isinstance(lease_ttl, int | float) and 0 < lease_ttl < float("inf")):
            raise ValueError(f"lease_ttl={lease_ttl!r}: give a number of seconds above 0.")
        self._hosts = dict(hosts or {})
        resolve_hosts(self._hosts)  # fail early on a malformed key
        self._host_policy = host_policy if host_policy is not None else HostPolicy()
        self._http_timeout = http_timeout
        self._max_connections = max_connections
        self._http_transport = http_transport
        self._http: httpx.AsyncClient | None = None
        self._breakers: BreakerTransport | None = None
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._emit = Emitter(observers)
        self._fail_fast = fail_fast
        # Keyed by the flow object, not its name: two flows named alike never share limits.
        self._step_limiters: weakref.WeakKeyDictionary[Flow, tuple[Plan, StepLimiters]] = (
            weakref.WeakKeyDictionary()
        )
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._store: CheckpointStore | None = (
            FileStore(store) if isinstance(store, str | os.PathLike) else store
        )
        self._shared = Shared(
            limiter=self._limiter,
            emit=self._emit,
            resources=_resources(resources),
            subflows=self._subflow,
        )
        self._shared.hooks = tuple(o for o in observers if isinstance(o, RunHook))
        self._runner = _EngineRunner(self)
        self._owner = new_owner()
        self._leasing: Leasing | None = (
            Leasing(self._store, owner=self._owner, ttl=lease_ttl) if self._store else None
        )
        #: runs executing now, by run id: a second caller awaits the first's result.
        self._flights: dict[str, _Flight] = {}

    async def __aenter__(self) -> Engine:
        if self._stack is not None:
            raise RuntimeError("This Engine is already open; an Engine is entered once.")
        stack = AsyncExitStack()
        await stack.__aenter__()
        self._shared.clock = current_clock()
        try:
            if self._store is not None:
                await stack.enter_async_context(self._store.open())
            self._http = await stack.enter_async_context(self._open_http())
            # Batches run in this group, so they outlive any one `async for`. It is entered
            # last and left first, by hand (see __aexit__).
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
            if self._leasing is not None:
                tg.start_soon(self._leasing.renewer)
        except BaseException:
            self._http = None
            await stack.aclose()
            raise
        self._shared.http = self._http
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                # Whatever batch is still running is abandoned: cancel it.
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            self._shared.http = self._http = None
            if stack is not None:
                # Left without the body's exception: the store's task groups would hand it
                # back wrapped in an ExceptionGroup. It propagates as it is, after this.
                await stack.__aexit__(None, None, None)

    @property
    def store(self) -> CheckpointStore | None:
        """The checkpoint store, or ``None`` when this engine runs without checkpoints."""
        return self._store

    @property
    def owner(self) -> str:
        """This engine's name in the leases it takes: ``host:pid:random``, unique to it."""
        return self._owner

    def _open_http(self) -> httpx.AsyncClient:
        inner = self._http_transport or ShardedTransport(self._max_connections)
        transport = self._breakers = BreakerTransport(
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

    def host_statistics(self) -> dict[str, HostStatistics]:
        """A snapshot of the hosts ``ctx.http`` keeps circuits for, by ``scheme://host:port``.

        Every host called is there, except healthy idle ones forgotten past 10,000 hosts.

        Each entry has the circuit's state and consecutive failures, the requests in flight
        and waiting, and the seconds until a trial is allowed.

        Raises:
            AsyncflowError: the engine is not open.
        """
        self._check_open()
        assert self._breakers is not None
        return self._breakers.statistics()

    def add_observer(self, observer: Observer) -> None:
        """Register an observer for every later event of this engine (and runs, if a RunHook)."""
        self._emit.add(observer)
        if isinstance(observer, RunHook):
            self._shared.hooks = (*self._shared.hooks, observer)

    def remove_observer(self, observer: Observer) -> None:
        """Unregister an observer."""
        self._emit.remove(observer)
        gone: object = observer
        self._shared.hooks = tuple(h for h in self._shared.hooks if h is not gone)

    def _limiters(self, flow: Flow, plan: Plan) -> StepLimiters:
        """Each step's own limit, shared by every run of ``flow`` (this very object)."""
        cached = self._step_limiters.get(flow)
        if cached is not None and cached[0] is plan:
            return cached[1]
        # A new plan (steps were added since): the steps already there keep their limiters.
        kept = (
            dict(zip((s.name for s in cached[0].steps), cached[1], strict=True)) if cached else {}
        )
        limiters = tuple(
            kept[s.name]
            if s.name in kept
            else (None if s.concurrency is None else anyio.CapacityLimiter(s.concurrency))
            for s in plan.steps
        )
        self._step_limiters[flow] = (plan, limiters)
        return limiters

    def _new_run(
        self,
        flow: Flow,
        plan: Plan,
        inputs: Mapping[str, object],
        run_id: str,
        fail_fast: bool | None,
        *,
        encoded: Mapping[str, str] | None = None,
        loaded: RunCheckpoints | None = None,
    ) -> Run:
        run = Run(
            plan,
            inputs,
            run_id,
            self._shared,
            step_limiters=self._limiters(flow, plan),
            fail_fast=self._fail_fast if fail_fast is None else fail_fast,
        )
        if self._store is not None and encoded is not None:
            run.checkpointing = Checkpointing(
                run, self._store, encoded_inputs=encoded, loaded=loaded, leasing=self._leasing
            )
        return run

    async def _once(self, run_id: str, start: Callable[[], Awaitable[RunResult]]) -> RunResult:
        """``await start()``, unless run ``run_id`` executes already: then await its result.

        Single-flight: every caller of a run executing in this engine gets the first caller's
        result (or its error). If the first caller is cancelled, a waiting one runs it.
        """
        flights = self._flights
        while (flight := flights.get(run_id)) is not None:
            done = anyio.Event()
            flight.waiters.append(done)
            await done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.result is not None:
                return flight.result
            # The first caller was cancelled: one of the waiting ones takes over.
        flight = flights[run_id] = _Flight()
        try:
            flight.result = result = await start()
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del flights[run_id]
            for done in flight.waiters:
                done.set()
        return result

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
        traceparent: str | None = None,
        **inputs: Any,
    ) -> RunResult:
        """Run ``flow`` once with ``inputs`` and return its :class:`RunResult`.

        A step failure does not raise: it is in the result (call ``raise_for_status()``).

        Args:
            flow: the flow to run.
            run_id: the run's id; derived from the flow and its inputs when not given, so the
                same call resumes the same run. With a store, steps of this run that have a
                valid checkpoint are restored instead of run.
            fail_fast: cancel the rest of the run on its first failure; defaults to the
                engine's setting.
            traceparent: the W3C ``traceparent`` of what started the run (a webhook's incoming
                header): the run's trace becomes its child. A run that ran before keeps the
                trace it started in, in its manifest, and continues it.
            **inputs: the run inputs the flow's steps take.

        Raises:
            FlowDefinitionError: the flow is not valid.
            RunInputError: inputs are missing or unexpected, or (with a store) cannot be encoded,
                or (without ``run_id``) no run id can be derived from them.
            InvalidRunIdError: ``run_id`` is not a safe, plain name.
            CheckpointError: the run id belongs to another flow, or the store failed.
            SubflowDepthError: called from a step, runs would nest too deep.
        """
        self._check_open()
        plan = compile_plan(flow)
        plan.check_inputs(inputs)
        store = self._store
        # Before the run id: an input the store cannot keep is refused as that, whatever run_id.
        encoded = encode_inputs(store.codec, inputs) if store is not None else None
        if run_id is not None:
            rid = validate_run_id(run_id)
        else:
            codec = store.codec if store is not None else None
            rid = derive_run_id(plan.flow, inputs, codec, encoded=encoded)
        parent = validate_traceparent(traceparent)

        def start() -> Awaitable[RunResult]:
            run = self._new_run(flow, plan, inputs, rid, fail_fast, encoded=encoded)
            run.traceparent = parent
            return run.execute()

        if in_step():
            # From inside a step (a sub-flow, or this engine called from a step): the step
            # lends out its engine slot while it waits.
            return await run_nested(rid, plan.flow, lambda: self._once(rid, start))
        return await self._once(rid, start)

    async def _subflow(
        self, flow: Flow, /, *, run_id: str, inputs: Mapping[str, object]
    ) -> RunResult:
        """``ctx.run``: a run of ``flow`` started from a step of this engine."""
        reserved = sorted(RESERVED_INPUTS.intersection(inputs))
        if reserved:
            raise RunInputError(
                f"ctx.run() takes the sub-flow's run inputs, and {', '.join(map(repr, reserved))} "
                f"is not one: a sub-flow's run id is derived from its parent's (name the call "
                f"with key=), and it fails fast as the engine does.",
                invalid=tuple(reserved),
            )
        return await self.run(flow, run_id=run_id, **cast("dict[str, Any]", inputs))

    async def resume(
        self,
        flow: Flow,
        run_id: str,
        /,
        *,
        fail_fast: bool | None = None,
        traceparent: str | None = None,
    ) -> RunResult:
        """Resume run ``run_id`` of ``flow`` with the inputs saved in its manifest.

        Steps with a valid checkpoint are restored; the rest run. A run admitted by
        :meth:`admit` (its manifest "pending") starts this way. The run continues the trace
        its manifest keeps; ``traceparent`` (as in :meth:`run`) gives it another parent.

        Raises:
            CheckpointError: the engine has no store, there is no such run, it belongs to
                another flow, or its saved inputs cannot be decoded.
            InvalidRunIdError: ``run_id`` is not a safe, plain name.
        """
        self._check_open()
        plan = compile_plan(flow)
        validate_run_id(run_id)
        store = self._store
        if store is None:
            raise CheckpointError(
                f"Cannot resume run {run_id!r}: this engine runs without checkpoints "
                f"(store=None). Open it with a store, e.g. Engine(store=FileStore('.asyncflow'))."
            )
        parent = validate_traceparent(traceparent)

        def start() -> Awaitable[RunResult]:
            return self._resume(flow, plan, store, run_id, fail_fast, parent)

        if in_step():
            return await run_nested(run_id, plan.flow, lambda: self._once(run_id, start))
        return await self._once(run_id, start)

    async def _resume(
        self,
        flow: Flow,
        plan: Plan,
        store: CheckpointStore,
        run_id: str,
        fail_fast: bool | None,
        traceparent: str | None,
    ) -> RunResult:
        loaded = await store.load_run(run_id)
        manifest = loaded.manifest
        if manifest is None:
            raise CheckpointError(
                f"There is no run {run_id!r} in {store!r}: nothing to resume. Check the run id "
                f"and the store's directory, or start it with engine.run(flow, run_id=...)."
            )
        if manifest.flow != plan.flow:
            raise CheckpointError(
                f"Run {run_id!r} is a run of flow {manifest.flow!r}, not {plan.flow!r}. "
                f"Resume it with that flow."
            )
        try:
            inputs = decode_inputs(store.codec, manifest.inputs)
        except Exception as exc:
            raise CheckpointError(
                f"Cannot decode the inputs saved for run {run_id!r}: {exc}. Run it again with "
                f"engine.run(flow, run_id={run_id!r}, **inputs)."
            ) from exc
        plan.check_inputs(inputs)
        encoded = encode_inputs(store.codec, inputs)
        run = self._new_run(flow, plan, inputs, run_id, fail_fast, encoded=encoded, loaded=loaded)
        run.traceparent = traceparent
        return await run.execute()

    async def forget(self, run_id: str, /, *, step: str | None = None) -> bool:
        """Forget run ``run_id``'s checkpoints, or only those of one ``step``.

        Without ``step`` the whole run is deleted from the store (as ``asyncflow forget RUN``):
        running it again starts afresh. With ``step`` only that step's checkpoint stops counting
        (as ``asyncflow forget RUN --step NAME``): resuming the run runs that step again, and
        its dependents too when its new output differs. Forget runs that are not running.

        Returns:
            Whether there was something to forget.

        Raises:
            CheckpointError: the engine has no store, or the store failed or refused.
            InvalidRunIdError: ``run_id`` is not a safe, plain name.
        """
        self._check_open()
        validate_run_id(run_id)
        if self._store is None:
            raise CheckpointError(
                f"Cannot forget run {run_id!r}: this engine runs without checkpoints "
                f"(store=None), so there is nothing to forget."
            )
        return await forget(self._store, run_id, step)

    async def admit(
        self,
        flow: Flow,
        /,
        *,
        run_id: str | None = None,
        traceparent: str | None = None,
        **inputs: Any,
    ) -> bool:
        """Record a run of ``flow`` as "pending", once; start it later with :meth:`resume`.

        The admission of a trigger's delivery: the store keeps the run's manifest (its inputs)
        only if the run has none yet, atomically, also across processes sharing the store.
        ``traceparent`` (the delivery's, as in :meth:`run`) is kept with it: the run's trace
        becomes its child when it is resumed.

        Returns:
            ``True`` when this call admitted the run; ``False`` when the run existed already
            (a duplicate delivery, or a run already started or finished).

        Raises:
            CheckpointError: the engine has no store, or the store failed.
            RunInputError: inputs are missing, unexpected or cannot be encoded, or (without
                ``run_id``) no run id can be derived from them.
            InvalidRunIdError: ``run_id`` is not a safe, plain name.
        """
        self._check_open()
        plan = compile_plan(flow)
        plan.check_inputs(inputs)
        store = self._store
        if store is None:
            raise CheckpointError(
                f"Cannot admit a run of {plan.flow!r}: this engine runs without checkpoints "
                f"(store=None), and admitting is recording it there. Open it with a store."
            )
        encoded = encode_inputs(store.codec, inputs)
        rid = (
            validate_run_id(run_id)
            if run_id is not None
            else derive_run_id(plan.flow, inputs, store.codec, encoded=encoded)
        )
        details = trace_details(validate_traceparent(traceparent))
        manifest = new_manifest(plan, rid, encoded, "pending", details=details)
        return await store.create_run_if_absent(manifest)

    def map(
        self,
        flow: Flow,
        inputs: Iterable[BatchInput] | AsyncIterable[BatchInput],
        /,
        *,
        concurrency: int | None = None,
        max_failures: int | None = None,
        max_failure_rate: float | None = None,
        fail_fast: bool | None = None,
        name: str | None = None,
        progress: bool | None = None,
        total: int | None = None,
        executor: Executor | None = None,
    ) -> Batch:
        """Run ``flow`` once per input, ``concurrency`` runs at a time; iterate for results.

        Results stream out as runs finish, in the order they finish. Inputs are pulled only
        when a slot is free, so memory grows with ``concurrency``, not with the inputs. Each
        run's id is derived from its inputs unless given as a ``(run_id, inputs)`` pair, so
        running the same batch again restores what was checkpointed and runs only the rest.

        Args:
            flow: the flow to run.
            inputs: mappings of run inputs, or ``(run_id, inputs)`` pairs; an iterable or an
                async iterable.
            concurrency: the most runs in flight at once; 100 by default, or the executor's
                :meth:`~asyncflow.executors.Executor.window`.
            max_failures: stop launching new runs once more than this many have failed.
            max_failure_rate: stop launching new runs once more than this fraction of the
                last 100 finished runs failed (judged from 20 finished runs on).
            fail_fast: passed to each run.
            name: the batch's name in progress events; the flow's name by default.
            progress: draw a live progress bar on standard error; by default, when it is a
                terminal.
            total: how many inputs there are, for the bar's total and eta when ``inputs``
                has no length (a generator); ``len(inputs)`` otherwise.
            executor: where the runs run (:mod:`asyncflow.executors`); in this engine by
                default. The batch, its results, budget, progress and events stay here.

        Returns:
            A :class:`Batch`: ``async for result in batch`` or ``await batch.summary()``.

        Raises:
            FlowDefinitionError: the flow is not valid (raised here, before anything runs).
            FlowRefError: with an executor, the flow is not bound to a module-level name that
                another process could import.
        """
        self._check_open()
        runner: Runner = self._runner
        if executor is not None:
            codec = self._store.codec if self._store is not None else None
            runner = executor.runner(runner, flow, codec=codec)
            if concurrency is None:
                concurrency = executor.window()
        return Batch(
            runner,
            flow,
            inputs,
            concurrency=DEFAULT_MAP_CONCURRENCY if concurrency is None else concurrency,
            max_failures=max_failures,
            max_failure_rate=max_failure_rate,
            fail_fast=fail_fast,
            name=name,
            progress=progress,
            total=total,
        )


def _resources(resources: Mapping[str, object] | None) -> Resources:
    if resources is None:
        return NO_RESOURCES
    if not isinstance(resources, Mapping) or not all(isinstance(k, str) for k in resources):
        raise ValueError(
            f"resources={resources!r}: give a mapping of names to values, "
            f"e.g. Engine(resources={{'api_key': key}})."
        )
    return Resources(resources)


def current_clock() -> Callable[[], float]:
    """The running event loop's monotonic clock, read without anyio's per-call backend lookup."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:  # another anyio backend: no asyncio loop is running
        return anyio.current_time


class _Flight:
    """A run executing in an engine, awaited by its other callers."""

    __slots__ = ("error", "result", "waiters")

    def __init__(self) -> None:
        self.waiters: list[anyio.Event] = []
        self.result: RunResult | None = None
        self.error: Exception | None = None


class _EngineRunner:
    """An open engine as the :class:`~asyncflow._batch.Runner` its batches run on."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def start_soon(self, fn: Callable[[], Coroutine[object, object, None]], /) -> None:
        engine = self._engine
        engine._check_open()
        assert engine._tg is not None
        engine._tg.start_soon(fn)

    @property
    def emit(self) -> Callable[[Event], None] | None:
        emit = self._engine._emit
        return emit if emit else None

    def run(
        self,
        flow: Flow,
        /,
        *,
        run_id: str | None,
        fail_fast: bool | None,
        inputs: Mapping[str, object],
    ) -> Awaitable[RunResult]:
        # The engine's coroutine itself, not one more around it: this runs once per batch item.
        return self._engine.run(
            flow, run_id=run_id, fail_fast=fail_fast, traceparent=None, **inputs
        )
