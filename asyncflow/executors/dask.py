"""Runs of a batch on Dask workers: one long-lived engine per worker, the store as the truth.

Set it up once per cluster, then map as usual::

    from asyncflow.executors.dask import AsyncflowPlugin, DaskExecutor

    async with Client(address, asynchronous=True) as client:
        await client.register_plugin(AsyncflowPlugin(make_engine))
        async with Engine(store=...) as engine:
            async for result in engine.map(flow, inputs, executor=DaskExecutor(client)):
                ...

What travels. Each run is one Dask task holding the flow's reference (:class:`~asyncflow.FlowRef`:
the flow must be bound to a module-level name that the workers can import), the run id and the
inputs encoded by the engine's store codec. An input the codec cannot encode is that item's
failure (a :class:`~asyncflow.RunInputError`), as it is locally. The batch keeps at most its
``concurrency`` tasks in existence (by default twice the cluster's slots, so each slot has its
next run queued): 100,000 inputs never become 100,000 futures.

On the worker. :class:`AsyncflowPlugin` opens one engine per worker (``make_engine()``: its HTTP
client, circuits, host gates, store connection) when the worker starts and closes it when the
worker stops. Runs are coroutines on the worker's event loop, so a step that blocks blocks that
worker's every run: steps must await. A worker takes as many runs at once as it has threads
(``nthreads``; async tasks use none of them, so ``threads_per_worker`` is the worker's run slots).
Circuits, host gates and step ``concurrency=`` limits are per worker; bound a host across the
cluster with a ``distributed.Semaphore`` inside the step.

Failures. Dask's task retries stay off: asyncflow retries steps and resumes runs. A task whose
worker died is run again by the scheduler on another worker, where the run resumes from the
checkpoints its store can see; if the scheduler gives up on it (``KilledWorker``) it is
resubmitted, up to ``resubmit`` times, and then fails as an :class:`~asyncflow.ExecutorError`.
A coordinator that dies loses nothing: run the same batch again and the runs restore from the
store. Errors come back with their type, message, attributes, cause chain and step; one whose
type cannot be imported on the coordinator comes back as an :class:`~asyncflow.ExecutorError`
naming it. Events reach the coordinator's observers in batches: those of a run in flight every
half second (through the scheduler's event topics), the rest with its result.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from distributed import Semaphore, WorkerPlugin, get_worker
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from asyncflow._codec import JsonCodec
from asyncflow._engine import Engine
from asyncflow._errors import ExecutorError
from asyncflow._identity import derive_run_id, encode_inputs, validate_run_id
from asyncflow._plan import compile_plan
from asyncflow._ref import FlowRef

from . import _wire

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Mapping

    from distributed import Client, Worker

    from asyncflow._batch import Runner
    from asyncflow._codec import Codec
    from asyncflow._flow import Flow
    from asyncflow._result import RunResult
    from asyncflow.events import Event

__all__ = ["AsyncflowPlugin", "DaskExecutor", "cluster_semaphore"]

#: The plugin's name on every worker.
PLUGIN_NAME = "asyncflow"
#: Events one run holds for the coordinator between two sends; later ones are dropped.
EVENTS_PER_RUN = 10_000
#: Seconds between two sends of the events of runs still in flight, from a worker.
EVENTS_INTERVAL = 0.5


@dataclass(eq=False, slots=True)
class _Sink:
    """The events of one run on a worker, not yet sent to the coordinator's ``topic``."""

    topic: str
    events: list[Event] = field(default_factory=list)


# Where the events of the run executing in this context go, on a worker.
_sink: contextvars.ContextVar[_Sink | None] = contextvars.ContextVar(
    "asyncflow_dask_events", default=None
)


def _collect(event: Event) -> None:
    sink = _sink.get()
    if sink is not None and len(sink.events) < EVENTS_PER_RUN:
        sink.events.append(event)


class AsyncflowPlugin(WorkerPlugin):
    """Opens one :class:`~asyncflow.Engine` on each Dask worker for the runs sent to it.

    Args:
        engine: makes the worker's engine (not yet open): a module-level function or a class,
            since it is pickled to the workers. ``Engine`` (a ``FileStore(".asyncflow")`` in the
            worker's directory) by default. Give every worker the same shared store.

    Register it with ``await client.register_plugin(AsyncflowPlugin(make_engine))``; workers that
    join later get it too.
    """

    name = PLUGIN_NAME

    def __init__(self, engine: Callable[[], Engine] = Engine) -> None:
        self._make_engine = engine

    async def setup(self, worker: Worker) -> None:
        """Open the worker's engine; raise what opening it raised."""
        self._flows: dict[str, Flow] = {}
        self._semaphores: dict[str, Semaphore] = {}
        self._sinks: set[_Sink] = set()
        self._stop = asyncio.Event()
        opened: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
        # The engine's task group must be entered and left by one task, and a worker calls
        # setup and teardown from different ones: this task owns the engine, from setup to
        # teardown (which awaits it), so nothing outlives the plugin.
        self._host = asyncio.get_running_loop().create_task(self._serve(worker, opened))
        self.engine = await opened

    async def _serve(self, worker: Worker, opened: asyncio.Future[Engine]) -> None:
        try:
            async with self._make_engine() as engine, anyio.create_task_group() as tg:
                engine.add_observer(_collect)
                tg.start_soon(self._send_events, worker)
                opened.set_result(engine)
                await self._stop.wait()
                tg.cancel_scope.cancel()
        except BaseException as exc:
            if not opened.done():
                opened.set_exception(exc)
                return
            raise

    async def _send_events(self, worker: Worker) -> None:
        """Every EVENTS_INTERVAL, send the events of the runs in flight, one message a run."""
        while True:
            await anyio.sleep(EVENTS_INTERVAL)
            for sink in self._sinks:
                if sink.events:
                    events, sink.events = sink.events, []
                    worker.log_event(sink.topic, _wire.dumps((anyio.current_time(), events)))

    async def teardown(self, worker: Worker) -> None:
        """Close the worker's engine (runs still in it are cancelled)."""
        self._stop.set()
        await self._host

    def flow(self, ref: str) -> Flow:
        """The flow ``ref`` names, imported once per worker."""
        flow = self._flows.get(ref)
        if flow is None:
            flow = self._flows[ref] = FlowRef.parse(ref).load()
        return flow


def cluster_semaphore(name: str, max_leases: int) -> Semaphore:
    """A ``distributed.Semaphore`` shared by every worker: a bound across the cluster.

    Circuits, host gates and step limits are per worker engine. To keep a host under ``n``
    requests at once on the whole cluster, hold this around the call in the step::

        async with cluster_semaphore("api.example.com", 16):
            response = await ctx.http.post(...)

    Each acquire and release is a round trip to the scheduler (see ``benchmarks/bench_dask.py``
    for what it costs). One object per name per worker, kept by the worker's
    :class:`AsyncflowPlugin`; call it on a worker, inside a step.

    Raises:
        ExecutorError: not called on a Dask worker with the plugin.
    """
    semaphores = _plugin()._semaphores
    semaphore = semaphores.get(name)
    if semaphore is None:
        semaphore = semaphores[name] = Semaphore(max_leases=max_leases, name=name)
    return semaphore


def _plugin() -> AsyncflowPlugin:
    try:
        worker = get_worker()
    except ValueError:
        raise ExecutorError(
            "This is not running on a Dask worker: cluster_semaphore() and the runs of "
            "DaskExecutor need the worker's asyncflow engine."
        ) from None
    plugin = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, AsyncflowPlugin):
        raise ExecutorError(
            f"Dask worker {worker.address} has no asyncflow engine. Register one on the "
            f"cluster first: await client.register_plugin(AsyncflowPlugin(make_engine))."
        )
    return plugin


async def _run_on_worker(
    ref: str,
    run_id: str,
    encoded: Mapping[str, str],
    fail_fast: bool | None,
    topic: str | None,
) -> bytes:
    """The Dask task of one run: run it on this worker's engine; its result, pickled by _wire.

    With a ``topic``, the run's events go to the coordinator: every EVENTS_INTERVAL while it
    runs (through the scheduler's event topic), the rest with the result.
    Never raises (but for cancellation): an error travels in the payload, kept intact.
    """
    sink = _Sink(topic) if topic is not None else None
    token = _sink.set(sink)
    plugin: AsyncflowPlugin | None = None
    try:
        try:
            plugin = _plugin()
            if sink is not None:
                plugin._sinks.add(sink)
            engine = plugin.engine
            store = engine.store
            flow = plugin.flow(ref)
            codec = store.codec if store is not None else None
            inputs = {k: (codec or JsonCodec()).decode(v) for k, v in encoded.items()}
            result = await engine.run(
                flow, run_id=run_id, fail_fast=fail_fast, traceparent=None, **inputs
            )
            reply: tuple[object, ...] = ("ok", _without_inputs(result))
        except Exception as exc:
            reply = ("error", exc)
        if plugin is not None and sink is not None:
            plugin._sinks.discard(sink)
        events = sink.events if sink is not None else []
        try:
            return _wire.dumps((*reply, anyio.current_time(), events))
        except Exception as exc:
            error = ExecutorError(
                f"The result of run {run_id!r} cannot be sent back from the Dask worker: {exc}. "
                f"Return outputs that can be pickled."
            )
            return _wire.dumps(("error", error, anyio.current_time(), events))
    finally:
        if plugin is not None and sink is not None:
            plugin._sinks.discard(sink)
        _sink.reset(token)


def _without_inputs(result: RunResult) -> RunResult:
    """``result`` without its inputs: the coordinator has them."""
    return _wire.shift_result(result, 0.0, {})


class DaskExecutor:
    """Runs a batch's runs on the workers of a Dask cluster (see the module docstring).

    Args:
        client: an asynchronous ``distributed.Client`` (``asynchronous=True``) on the loop the
            engine runs on, connected to a cluster whose workers have the
            :class:`AsyncflowPlugin`.
        resubmit: how many times a run whose task the scheduler gave up on (its workers kept
            dying) is submitted again before it fails.

    Raises:
        TypeError: the client is not asynchronous.
        ValueError: ``resubmit`` is negative.
    """

    def __init__(self, client: Client, *, resubmit: int = 2) -> None:
        if not getattr(client, "asynchronous", False):
            raise TypeError(
                "DaskExecutor needs an asynchronous client on the engine's loop: "
                "Client(address, asynchronous=True), used with 'async with' or 'await'."
            )
        if not isinstance(resubmit, int) or resubmit < 0:
            raise ValueError(f"resubmit={resubmit!r}: give a whole number, 0 or more.")
        self._client = client
        self._resubmit = resubmit

    def window(self) -> int:
        """Twice the cluster's run slots (its threads).

        Every slot has a run running and one queued at the scheduler, so a slot that frees
        starts its next run at once instead of after a round trip through the coordinator.

        Raises:
            ExecutorError: the cluster has no workers yet.
        """
        slots = self._client.scheduler_info().get("total_threads", 0)
        if not slots:
            raise ExecutorError(
                "The Dask cluster has no workers yet, so the batch's window cannot be sized. "
                "await client.wait_for_workers(n) first, or pass concurrency= to map()."
            )
        return 2 * int(slots)

    def runner(self, local: Runner, flow: Flow, /, *, codec: Codec | None) -> Runner:
        """A runner that ships each run of ``flow`` to a worker (see :class:`Executor`)."""
        return _DaskRunner(self._client, local, str(FlowRef.of(flow)), codec, self._resubmit)


class _DaskRunner:
    """A batch's runs as Dask tasks; the rest (its task group, its events) is the local runner."""

    def __init__(
        self, client: Client, local: Runner, ref: str, codec: Codec | None, resubmit: int
    ) -> None:
        self._client = client
        self._local = local
        self._ref = ref
        self._codec = codec
        self._resubmit = resubmit
        # The events of runs still in flight come on this topic, while the batch runs.
        self._topic: str | None = None

    def start_soon(self, fn: Callable[[], Coroutine[object, object, None]], /) -> None:
        """Start the batch (its one task, ``fn``) with its event topic open while it runs."""

        async def batch() -> None:
            emit = self.emit
            if emit is None:
                await fn()
                return
            topic = f"asyncflow-events-{uuid.uuid4().hex}"
            self._client.subscribe_topic(topic, functools.partial(_deliver, emit))
            self._topic = topic
            try:
                await fn()
            finally:
                self._topic = None
                self._client.unsubscribe_topic(topic)

        self._local.start_soon(batch)

    @property
    def emit(self) -> Callable[[Event], None] | None:
        return self._local.emit

    def run(
        self,
        flow: Flow,
        /,
        *,
        run_id: str | None,
        fail_fast: bool | None,
        inputs: Mapping[str, object],
    ) -> Awaitable[RunResult]:
        return self._run(flow, run_id, fail_fast, inputs)

    async def _run(
        self,
        flow: Flow,
        run_id: str | None,
        fail_fast: bool | None,
        inputs: Mapping[str, object],
    ) -> RunResult:
        # What engine.run checks before anything runs, here, so a bad item never travels.
        plan = compile_plan(flow)
        plan.check_inputs(inputs)
        encoded = encode_inputs(self._codec or JsonCodec(), inputs)
        if run_id is not None:
            rid = validate_run_id(run_id)
        else:
            rid = derive_run_id(plan.flow, inputs, self._codec, encoded=encoded)
        emit = self.emit
        lost: BaseException | None = None
        for attempt in range(self._resubmit + 1):
            # The same key for the same run: a coordinator restarted while the run's task is
            # still on the cluster gets that task back instead of a second one.
            key = f"asyncflow-{rid}" if attempt == 0 else f"asyncflow-{rid}-again-{attempt}"
            future = self._client.submit(
                _run_on_worker,
                self._ref,
                rid,
                encoded,
                fail_fast,
                self._topic if emit is not None else None,
                key=key,
                pure=False,
                retries=0,
            )
            try:
                payload: bytes = await future
            except (KilledWorker, FutureCancelledError) as exc:
                lost = exc
                continue
            finally:
                future.release()
            return self._receive(payload, inputs, emit)
        raise ExecutorError(
            f"Run {rid!r} was lost with its Dask workers {self._resubmit + 1} times: {lost}. "
            f"Its checkpoints are kept; run the batch again to resume it."
        ) from lost

    def _receive(
        self,
        payload: bytes,
        inputs: Mapping[str, object],
        emit: Callable[[Event], None] | None,
    ) -> RunResult:
        status, value, sent_at, events = _wire.loads(payload)
        by = anyio.current_time() - sent_at
        if emit is not None:
            for event in events:
                emit(_wire.shift_event(event, by))
        if status == "error":
            raise value
        result: RunResult = _wire.shift_result(value, by, inputs)
        return result


def _deliver(emit: Callable[[Event], None], message: tuple[float, bytes]) -> None:
    """The events of a run in flight, from a worker's periodic send, to the observers."""
    sent_at, events = _wire.loads(message[1])
    by = anyio.current_time() - sent_at
    for event in events:
        emit(_wire.shift_event(event, by))
