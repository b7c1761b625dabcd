"""Checkpointing for one run: restore what has a valid checkpoint, save every success durably.

A run with a store holds a :class:`Checkpointing` (a run without one holds ``None``, so it pays
nothing for this). :meth:`~Checkpointing.run` loads the run's checkpoints and writes its
"running" manifest before the run's steps start, and its final manifest after; when a step becomes ready and its checkpoint's fingerprint (see
``_identity``) matches, :meth:`~Checkpointing.restore` gives its output and the step is
RESTORED without running. Otherwise it runs; after it succeeds :meth:`~Checkpointing.save`
encodes its output and durably saves it, and only then does it count as done: its dependents
start after the save returns.

With leases (an engine with a store always has them), :meth:`~Checkpointing.run` first claims the
run (waiting while another owner holds it), then loads, so it sees what that owner saved; every
save carries the lease, and the lease is released when the run ends. A lost lease stops the run
and fails it with :class:`~asyncflow.LeaseLostError`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import anyio

from ._details import run_details
from ._errors import CheckpointEncodeError, CheckpointError, LeaseLostError
from ._hooks import kept_traceparent, run_contexts, trace_details
from ._identity import canonical_inputs, digest, step_fingerprint
from ._status import StepStatus
from .events import CheckpointDiscarded, StoreWrite
from .stores import RunManifest, StepCheckpoint

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ._codec import Codec
    from ._emit import Emitter
    from ._leasing import Leasing
    from ._plan import Plan
    from ._result import RunResult
    from ._scheduler import Run
    from .stores import CheckpointStore, Lease, RunCheckpoints

__all__ = [
    "FORGOTTEN",
    "MISSING",
    "NOT_TAKEN",
    "NOT_TAKEN_DIGEST",
    "TAKEN_DIGEST",
    "Checkpointing",
    "decode_inputs",
    "forget",
    "new_manifest",
]

logger = logging.getLogger("asyncflow")

#: What :meth:`Checkpointing.restore` returns for a step with no usable checkpoint.
MISSING: Any = object()
#: What :meth:`Checkpointing.restore` returns for a step whose ``when=`` said not to run it.
NOT_TAKEN: Any = object()
#: The digest a checkpointed "not taken" decision is saved with (a real digest is hex).
NOT_TAKEN_DIGEST = "not-taken"
#: The digest of a checkpointed "taken" decision, until the step's output replaces it.
TAKEN_DIGEST = "taken"


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    return dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _now() -> str:
    """The wall-clock time, ISO 8601 UTC to the millisecond, as ``datetime.isoformat`` writes it.

    For people reading the manifest; never used for durations. Two manifests per run ask for
    it, so the formatted second is reused and only the milliseconds are formatted.
    """
    ms = time.time_ns() // 1_000_000
    second, frac = divmod(ms, 1000)
    return f"{_iso_second(second)}.{frac:03d}+00:00"


#: The fingerprint of a forgotten step's checkpoint: no step fingerprint (hex digits) is equal.
FORGOTTEN = "forgotten"


async def forget(store: CheckpointStore, run_id: str, step: str | None = None) -> bool:
    """Make ``store`` forget run ``run_id``, or only step ``step``'s checkpoint in it.

    A whole run is deleted. A step's checkpoint (a mapped step's: each item's) is replaced by
    one whose fingerprint (:data:`FORGOTTEN`) never matches, which every store can keep, so the
    step runs again when the run is resumed; its dependents run again only if its new output
    differs.

    Returns:
        Whether there was something to forget.
    """
    if step is None:
        return await store.delete_run(run_id)
    loaded = await store.load_run(run_id)
    # A mapped step's checkpoints are its items', "step[0]", "step[1]" ...: all of them.
    prefix = f"{step}["
    names = [
        name
        for name, saved in loaded.steps.items()
        if (name == step or (name.startswith(prefix) and name[len(prefix) : -1].isdigit()))
        and saved.fingerprint != FORGOTTEN
    ]
    output = "null"
    for name in names:
        await store.save_step(
            StepCheckpoint(
                run_id=run_id,
                step=name,
                fingerprint=FORGOTTEN,
                digest=digest(output),
                output=output,
            )
        )
    return bool(names)


def decode_inputs(codec: Codec, text: str) -> dict[str, object]:
    """Decode a manifest's inputs (a JSON object of codec texts)."""
    raw = json.loads(text)
    return {
        name: codec.decode(json.dumps(value, ensure_ascii=False)) for name, value in raw.items()
    }


def _final(manifest: RunManifest, result: RunResult, details: str) -> RunManifest:
    """The manifest of a finished run: its status, the steps that failed, each step's details."""
    return RunManifest(
        run_id=manifest.run_id,
        flow=manifest.flow,
        flow_fingerprint=manifest.flow_fingerprint,
        inputs=manifest.inputs,
        status=result.status.value,
        created_at=manifest.created_at,
        updated_at=_now(),
        failed_steps=()
        if result.ok
        else tuple(n for n, r in result.steps.items() if r.status is StepStatus.FAILED),
        details=details,
    )


def new_manifest(
    plan: Plan,
    run_id: str,
    encoded_inputs: Mapping[str, str] | None,
    status: str,
    *,
    inputs_text: str | None = None,
    old: RunManifest | None = None,
    details: str = "",
) -> RunManifest:
    """The manifest of a run starting (``"running"``) or admitted (``"pending"``) now.

    A run started from an earlier manifest (a pending one, a resumed one) keeps its
    ``created_at``. ``details`` is the run's trace (``_hooks.trace_details``), or empty.
    """
    now = _now()
    if inputs_text is None:
        assert encoded_inputs is not None
        inputs_text = canonical_inputs(encoded_inputs)
    return RunManifest(
        run_id=run_id,
        flow=plan.flow,
        flow_fingerprint=plan.fingerprint,
        inputs=inputs_text,
        status=status,
        created_at=old.created_at if old is not None else now,
        updated_at=now,
        details=details,
    )


class Checkpointing:
    """Restores one run's steps from a :class:`CheckpointStore` and saves its successes there."""

    __slots__ = (
        "_codec",
        "_digests",
        "_input_digests",
        "_inputs_text",
        "_lease",
        "_leasing",
        "_loaded",
        "_lost",
        "_run",
        "_scope",
        "_store",
    )

    def __init__(
        self,
        run: Run,
        store: CheckpointStore,
        *,
        encoded_inputs: Mapping[str, str],
        loaded: RunCheckpoints | None = None,
        leasing: Leasing | None = None,
    ) -> None:
        self._run = run
        self._store = store
        self._leasing = leasing
        self._lease: Lease | None = None
        self._lost: LeaseLostError | None = None
        self._scope: anyio.CancelScope | None = None
        self._codec = store.codec
        self._loaded = loaded
        self._digests: list[str | None] = [None] * len(run.plan.steps)
        self._input_digests = {k: digest(v) for k, v in encoded_inputs.items()}
        self._inputs_text = canonical_inputs(encoded_inputs)

    async def run(self, execute: Callable[[], Awaitable[RunResult]]) -> RunResult:
        """Claim the run, load it, write its "running" manifest, execute, write the final one.

        The run is released at the end, whatever happens.

        Raises:
            LeaseLostError: another owner took the run over while it ran here: it was stopped.
            CheckpointError: the run id belongs to another flow, or the store failed (a failure
                to write the final manifest is logged instead: the result is returned).
        """
        leasing = self._leasing
        if leasing is None:
            return await self._run_held(execute)
        self._lease = await leasing.acquire(self._run.run_id, self)
        # Loaded after the claim: a previous owner's saves are all in by now.
        self._loaded = None
        try:
            return await self._run_held(execute)
        finally:
            with anyio.CancelScope(shield=True):
                await leasing.release(self._lease)

    async def _run_held(self, execute: Callable[[], Awaitable[RunResult]]) -> RunResult:
        loaded = self._loaded
        if loaded is None:
            loaded = self._loaded = await self._store.load_run(self._run.run_id)
        run = self._run
        kept = kept_traceparent(loaded.manifest)
        if run.shared.hooks:
            # A run that ran before continues its trace; a given parent (a trigger's) wins.
            parent = run.traceparent or kept
            with run_contexts(run.shared.hooks, run.run_id, run.plan.flow, parent) as made:
                manifest = self._start(loaded, kept or made or run.traceparent)
                result = await self._execute_held(execute)
        else:
            manifest = self._start(loaded, kept or run.traceparent)
            result = await self._execute_held(execute)
        # Wall clock minus the engine's clock: dates the steps' clock readings in the details.
        offset = time.time() - run.shared.clock()
        final = _final(manifest, result, run_details(run.plan, result, offset, manifest.details))
        try:
            write = self._store.save_manifest(final, lease=self.lease)
            if run.emit is None:
                await write
            else:
                await self._timed(run.emit, "manifest", None, write)
        except LeaseLostError as exc:
            raise self._lose(exc) from exc
        except CheckpointError as exc:
            # Every step's outcome is already saved or in the result; only the run's status
            # line is lost (a resume recomputes it), so the result is still returned.
            logger.warning("run %r: could not save its final manifest: %s", manifest.run_id, exc)
        return result

    async def _execute_held(self, execute: Callable[[], Awaitable[RunResult]]) -> RunResult:
        """Execute; stopped, and LeaseLostError raised, if the lease is lost meanwhile."""
        if self._leasing is None:
            return await execute()
        lease = self._lease
        if lease is not None and lease.expires_at == math.inf:
            # A lease that never expires is never lost to the renewer: only a refused save
            # loses it, from inside the run, and lease_lost cancels the run's own task group
            # (one scope less a run).
            result = await execute()
        else:
            with anyio.CancelScope() as self._scope:
                result = await execute()
            self._scope = None
        if self._lost is not None:
            raise self._lost
        return result

    @property
    def lease(self) -> Lease | None:
        """The run's lease as held now (renewals replace it); ``None`` without leases."""
        leasing = self._leasing
        return leasing.current(self._run.run_id) if leasing is not None else None

    def lease_lost(self, error: LeaseLostError, /) -> None:
        """Stop the run: another owner has it (told by the renewer, or by a refused save)."""
        if self._lost is None:
            self._lost = error
        scope = self._scope
        if scope is None and self._run.tg is not None:
            scope = self._run.tg.cancel_scope
        if scope is not None:
            scope.cancel()

    def _lose(self, refused: LeaseLostError) -> LeaseLostError:
        run_id = self._run.run_id
        error = LeaseLostError(
            f"Run {run_id!r} was taken over by another owner: this engine's save was refused "
            f"({refused}). The run was stopped here and goes on there.",
            run_id=run_id,
            epoch=refused.epoch,
        )
        self.lease_lost(error)
        return error

    def _start(self, loaded: RunCheckpoints, traceparent: str | None) -> RunManifest:
        """Report what the store discarded, check the run's flow, write its manifest.

        The manifest keeps ``traceparent``, the run's trace, in its details.
        """
        run = self._run
        plan = run.plan
        emit = run.emit
        if emit is not None:
            for d in loaded.discarded:
                emit(CheckpointDiscarded(run.run_id, d.step, run.shared.clock(), d.path, d.reason))
        old = loaded.manifest
        if old is not None and old.flow != plan.flow:
            raise CheckpointError(
                f"Run id {run.run_id!r} belongs to flow {old.flow!r}, not {plan.flow!r}. "
                f"Give this run another run_id."
            )
        manifest = new_manifest(
            plan,
            run.run_id,
            None,
            "running",
            inputs_text=self._inputs_text,
            old=old,
            details=trace_details(traceparent),
        )
        # Not awaited: the store makes it durable before any step checkpoint of this run.
        self._store.save_manifest_nowait(manifest, lease=self.lease)
        return manifest

    def fingerprint(self, i: int) -> str:
        """The identity of step ``i`` given its dependencies' outputs and its run inputs."""
        plan = self._run.plan
        step = plan.steps[i]
        return step_fingerprint(
            step.code_fingerprint,
            plan.data_deps[i],
            self._digests,
            plan.step_inputs[i],
            self._input_digests,
            step.version,
        )

    def restore(self, i: int) -> object:
        """Step ``i``'s output from its matching checkpoint, :data:`MISSING`, or :data:`NOT_TAKEN`.

        A checkpoint whose output cannot be decoded or does not match its digest is discarded
        (a :class:`CheckpointDiscarded` event says why) and the step runs again. A checkpointed
        ``when=`` decision not to run gives :data:`NOT_TAKEN`.
        """
        loaded = self._loaded
        name = self._run.plan.steps[i].name
        saved = loaded.steps.get(name) if loaded is not None else None
        if saved is None or saved.fingerprint != self.fingerprint(i):
            return MISSING
        if saved.digest == NOT_TAKEN_DIGEST:
            self._digests[i] = NOT_TAKEN_DIGEST
            return NOT_TAKEN
        if saved.digest == TAKEN_DIGEST:
            return MISSING  # decided, not done: it runs (see decided)
        output = self._decode(saved)
        if output is not MISSING:
            self._digests[i] = saved.digest
        return output

    def _decode(self, saved: StepCheckpoint) -> object:
        """A checkpoint's output, or :data:`MISSING` (and an event) when it cannot be used."""
        run = self._run
        try:
            output = self._codec.decode(saved.output)
            # The stored text can differ from the codec's (a store may re-space it), so a
            # mismatch is checked again against the codec's text for the decoded value.
            intact = digest(saved.output) == saved.digest or (
                digest(self._codec.encode(output)) == saved.digest
            )
        except Exception as exc:
            # The file is sound but its content cannot be rebuilt (a class was renamed):
            # run the step, whose new checkpoint replaces this one.
            reason = f"cannot decode the output: {exc}"
            intact = False
        else:
            reason = "its output does not match its digest (edited or damaged)"
        if not intact:
            if run.emit is not None:
                run.emit(
                    CheckpointDiscarded(run.run_id, saved.step, run.shared.clock(), "", reason)
                )
            return MISSING
        return output

    def decided(self, i: int) -> bool | None:
        """The checkpointed ``when=`` decision of step ``i`` for its fingerprint, if any."""
        loaded = self._loaded
        saved = loaded.steps.get(self._run.plan.steps[i].name) if loaded is not None else None
        if saved is None or saved.digest not in (TAKEN_DIGEST, NOT_TAKEN_DIGEST):
            return None
        if saved.fingerprint != self.fingerprint(i):
            return None
        return saved.digest == TAKEN_DIGEST

    async def save_decision(self, i: int, taken: bool) -> None:
        """Durably record step ``i``'s ``when=`` decision, for its fingerprint.

        A "taken" one stands until the step's output replaces it, so a run resumed before then
        runs the step without asking the predicate again.
        """
        mark = TAKEN_DIGEST if taken else NOT_TAKEN_DIGEST
        await self._put(self._checkpoint(i, mark, "null"))
        if not taken:
            self._digests[i] = NOT_TAKEN_DIGEST

    def not_taken(self, i: int) -> None:
        """Step ``i`` was not taken: its dependents' fingerprints say so."""
        self._digests[i] = NOT_TAKEN_DIGEST

    # -- the items of a mapped step ----------------------------------------------------------

    def item_fingerprint(self, i: int, item: object) -> str:
        """The identity of one item of mapped step ``i``: the step's, with the item for the list.

        Each item is identified by its own content, not the whole list's, so a list that grew
        or changed elsewhere keeps the checkpoints of the items that are the same.

        Raises:
            CheckpointEncodeError: the codec cannot encode the item.
        """
        run = self._run
        plan = run.plan
        step = plan.steps[i]
        try:
            item_digest = digest(self._codec.encode(item))
        except Exception as exc:
            raise CheckpointEncodeError(
                f"Step {step.name!r} maps over an item of type {type(item).__qualname__} that "
                f"cannot be checkpointed: {exc} Give {step.map_over!r} items the store's codec "
                f"can encode, or run with Engine(store=None).",
                step=step.name,
                attempts=0,
            ) from exc
        others = tuple((n, j) for n, j in plan.data_deps[i] if n != step.map_over)
        base = step_fingerprint(
            step.code_fingerprint,
            others,
            self._digests,
            plan.step_inputs[i],
            self._input_digests,
            step.version,
        )
        return digest(f"{base}\x00item={item_digest}")

    def restore_item(self, name: str, fingerprint: str) -> tuple[object, str] | None:
        """The output and digest of the item checkpointed as ``name``, or ``None``."""
        loaded = self._loaded
        saved = loaded.steps.get(name) if loaded is not None else None
        if saved is None or saved.fingerprint != fingerprint:
            return None
        output = self._decode(saved)
        return None if output is MISSING else (output, saved.digest)

    async def save_item(self, i: int, name: str, fingerprint: str, output: object) -> str:
        """Save one item's output as the checkpoint ``name``; its digest.

        Raises:
            CheckpointEncodeError: the store's codec cannot encode the output.
        """
        text, output_digest = self._encode(i, output)
        await self._put(
            StepCheckpoint(
                run_id=self._run.run_id,
                step=name,
                fingerprint=fingerprint,
                digest=output_digest,
                output=text,
            )
        )
        return output_digest

    async def _put(self, checkpoint: StepCheckpoint) -> None:
        """Save one record of this run (an output, an item's, a decision) under its lease.

        Raises:
            LeaseLostError: another owner took the run over; the run is stopped.
        """
        run = self._run
        try:
            write = self._store.save_step(checkpoint, lease=self.lease)
            if run.emit is None:
                await write
            else:
                await self._timed(run.emit, "step", checkpoint.step, write)
        except LeaseLostError as exc:
            raise self._lose(exc) from exc

    async def _timed(
        self, emit: Emitter, kind: str, step: str | None, write: Awaitable[None]
    ) -> None:
        """Await ``write``, reporting how long it took and whether it failed (StoreWrite)."""
        run_id = self._run.run_id
        clock = self._run.shared.clock
        t = clock()
        try:
            await write
        except Exception as exc:
            now = clock()
            emit(StoreWrite(run_id, kind, step, now - t, type(exc).__name__, now))
            raise
        now = clock()
        emit(StoreWrite(run_id, kind, step, now - t, None, now))

    def mapped(self, i: int, item_digests: list[str]) -> None:
        """Mapped step ``i`` is done: its digest, for its dependents, is that of its items'."""
        self._digests[i] = digest("\x00".join(item_digests))

    async def save(self, i: int, output: object) -> None:
        """Encode step ``i``'s output and save it durably.

        Raises:
            CheckpointEncodeError: the store's codec cannot encode the output.
            Exception: whatever the store raised (a :class:`CheckpointError`).
        """
        text, output_digest = self._encode(i, output)
        await self._put(self._checkpoint(i, output_digest, text))
        self._digests[i] = output_digest

    def _checkpoint(self, i: int, output_digest: str, output: str) -> StepCheckpoint:
        """Step ``i``'s checkpoint of this run, for its fingerprint now."""
        run = self._run
        return StepCheckpoint(
            run_id=run.run_id,
            step=run.plan.steps[i].name,
            fingerprint=self.fingerprint(i),
            digest=output_digest,
            output=output,
        )

    def _encode(self, i: int, output: object) -> tuple[str, str]:
        """An output of step ``i`` as codec text, and that text's digest."""
        run = self._run
        step = run.plan.steps[i]
        try:
            text = self._codec.encode(output)
            return text, digest(text)  # UTF-8, as the store writes it: a lone surrogate fails
        except Exception as exc:
            t = type(output)
            raise CheckpointEncodeError(
                f"Step {step.name!r} returned a {t.__module__}.{t.__qualname__} that cannot be "
                f"checkpointed: {exc} Return a dataclass, dict, list or another JSON-friendly "
                f"value, give the store a codec for this type, or run with Engine(store=None).",
                step=step.name,
                attempts=run.attempts[i],
            ) from exc
