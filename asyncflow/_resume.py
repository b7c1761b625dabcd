"""A run with checkpoints: restore what has a valid checkpoint, save every success durably.

:class:`CheckpointedRun` is the scheduler's :class:`RunState` plus a store. Runs without a
store use the plain RunState, so they pay nothing for this.

A step's identity is its fingerprint: a digest of its code fingerprint, the digest of each
dependency's encoded output, and the digest of each run input it takes. It never depends on
execution order. When a step becomes ready and its checkpoint's fingerprint matches, the step
is RESTORED (its output decoded, its dependents released) without running. Otherwise it runs;
after it succeeds its output is encoded and durably saved, and only then does it count as
done: its dependents start after the save returns.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING

import anyio

from ._errors import CheckpointEncodeError, CheckpointError, RunInputError
from ._scheduler import RunState
from ._status import StepStatus
from .events import CheckpointDiscarded, StepRestored
from .stores import RunManifest, StepCheckpoint

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._codec import Codec
    from ._graph import Plan, Step
    from ._result import RunResult
    from ._scheduler import StepRuntime
    from .stores import CheckpointStore, RunCheckpoints

__all__ = ["CheckpointedRun", "decode_inputs", "encode_inputs"]

logger = logging.getLogger("asyncflow")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


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


def encode_inputs(codec: Codec, inputs: Mapping[str, object]) -> dict[str, str]:
    """Encode each run input, by name.

    Raises:
        RunInputError: an input cannot be encoded, so the run could not be resumed.
    """
    encoded: dict[str, str] = {}
    for name, value in inputs.items():
        try:
            text = codec.encode(value)
            if not text.isascii():
                text.encode("utf-8")  # the store writes UTF-8: a lone surrogate fails here
        except Exception as exc:
            raise RunInputError(
                f"Run input {name!r} ({type(value).__name__}) cannot be checkpointed: {exc} "
                f"Pass inputs the store's codec can encode, or run with Engine(store=None).",
                invalid=(name,),
            ) from exc
        encoded[name] = text
    return encoded


def decode_inputs(codec: Codec, text: str) -> dict[str, object]:
    """Decode a manifest's inputs (a JSON object of codec texts)."""
    raw = json.loads(text)
    return {
        name: codec.decode(json.dumps(value, ensure_ascii=False)) for name, value in raw.items()
    }


class CheckpointedRun(RunState):
    """A :class:`RunState` that restores from and saves to a :class:`CheckpointStore`."""

    __slots__ = ("_codec", "_digests", "_input_digests", "_inputs_text", "_loaded", "_store")

    def __init__(
        self,
        plan: Plan,
        inputs: Mapping[str, object],
        run_id: str,
        rt: StepRuntime,
        *,
        store: CheckpointStore,
        encoded_inputs: Mapping[str, str],
        loaded: RunCheckpoints | None = None,
        fail_fast: bool = False,
    ) -> None:
        super().__init__(plan, inputs, run_id, rt, fail_fast=fail_fast)
        self._store = store
        self._codec = store.codec
        self._loaded = loaded
        self._digests: list[str | None] = [None] * len(plan.steps)
        self._input_digests = {k: _digest(v) for k, v in encoded_inputs.items()}
        items = sorted(encoded_inputs.items())
        self._inputs_text = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in items) + "}"

    async def execute(self) -> RunResult:
        """Load the run's checkpoints, write the manifest, run, and write the final manifest.

        Raises:
            CheckpointError: the run id belongs to another flow, or the store failed.
        """
        plan = self.plan
        loaded = self._loaded
        if loaded is None:
            loaded = self._loaded = await self._store.load_run(self.run_id)
        emit = self.emit
        if emit is not None:
            for d in loaded.discarded:
                emit(CheckpointDiscarded(self.run_id, d.step, self.rt.clock(), d.path, d.reason))
        old = loaded.manifest
        if old is not None and old.flow != plan.flow:
            raise CheckpointError(
                f"Run id {self.run_id!r} belongs to flow {old.flow!r}, not {plan.flow!r}. "
                f"Give this run another run_id."
            )
        now = _now()
        manifest = RunManifest(
            run_id=self.run_id,
            flow=plan.flow,
            flow_fingerprint=plan.fingerprint,
            inputs=self._inputs_text,
            status="running",
            created_at=old.created_at if old is not None else now,
            updated_at=now,
        )
        # Not awaited: the store makes it durable before any step checkpoint of this run.
        self._store.save_manifest_nowait(manifest)
        result = await super().execute()
        final = RunManifest(
            run_id=self.run_id,
            flow=plan.flow,
            flow_fingerprint=plan.fingerprint,
            inputs=self._inputs_text,
            status=result.status.value,
            created_at=manifest.created_at,
            updated_at=_now(),
            failed_steps=()
            if result.ok
            else tuple(n for n, r in result.steps.items() if r.status is StepStatus.FAILED),
        )
        try:
            await self._store.save_manifest(final)
        except CheckpointError as exc:
            # Every step's outcome is already saved or in the result; only the run's status
            # line is lost (a resume recomputes it), so the result is still returned.
            logger.warning("run %r: could not save its final manifest: %s", self.run_id, exc)
        return result

    def fingerprint(self, i: int) -> str:
        """The identity of step ``i`` given its dependencies' outputs and its run inputs."""
        plan = self.plan
        parts = [plan.steps[i].code_fingerprint]
        digests = self._digests
        for name, j in plan.data_deps[i]:
            parts.append(f"d:{name}={digests[j]}")
        inputs = self._input_digests
        for name in plan.step_inputs[i]:
            parts.append(f"i:{name}={inputs.get(name, '<default>')}")
        return _digest("\x00".join(parts))

    def _restore(self, i: int) -> bool:
        """Restore step ``i`` from a matching checkpoint; False when it has to run."""
        loaded = self._loaded
        step = self.plan.steps[i]
        saved = loaded.steps.get(step.name) if loaded is not None else None
        if saved is None or saved.fingerprint != self.fingerprint(i):
            return False
        emit = self.emit
        try:
            output = self._codec.decode(saved.output)
            # The stored text can differ from the codec's (a store may re-space it), so a
            # mismatch is checked again against the codec's text for the decoded value.
            intact = _digest(saved.output) == saved.digest or (
                _digest(self._codec.encode(output)) == saved.digest
            )
        except Exception as exc:
            # The file is sound but its content cannot be rebuilt (a class was renamed):
            # run the step, whose new checkpoint replaces this one.
            reason = f"cannot decode the output: {exc}"
            intact = False
        else:
            reason = "its output does not match its digest (edited or damaged)"
        if not intact:
            if emit is not None:
                emit(CheckpointDiscarded(self.run_id, step.name, self.rt.clock(), "", reason))
            return False
        self.outputs[step.name] = output
        self._digests[i] = saved.digest
        self.statuses[i] = StepStatus.RESTORED
        if emit is not None:
            emit(StepRestored(self.run_id, step.name, self.rt.clock()))
        return True

    saves = True

    async def _save(self, i: int, step: Step, output: object) -> bool:
        """Encode and durably save the output; False (and the step failed) when that fails."""
        try:
            text = self._codec.encode(output)
            digest = _digest(text)  # UTF-8, as the store writes it: a lone surrogate fails here
        except Exception as exc:
            t = type(output)
            err = CheckpointEncodeError(
                f"Step {step.name!r} returned a {t.__module__}.{t.__qualname__} that cannot be "
                f"checkpointed: {exc} Return a dataclass, dict, list or another JSON-friendly "
                f"value, give the store a codec for this type, or run with Engine(store=None).",
                step=step.name,
                attempts=self.attempts[i],
            )
            err.__cause__ = exc
            self._failed(i, step, err)
            return False
        checkpoint = StepCheckpoint(
            run_id=self.run_id,
            step=step.name,
            fingerprint=self.fingerprint(i),
            digest=digest,
            output=text,
        )
        try:
            await self._store.save_step(checkpoint)
        except Exception as exc:
            self._failed(i, step, exc)
            return False
        except anyio.get_cancelled_exc_class():
            self.statuses[i] = StepStatus.CANCELLED
            self.finished_at[i] = self.rt.clock()
            raise
        self._digests[i] = digest
        return True
