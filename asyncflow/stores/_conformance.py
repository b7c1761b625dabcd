"""check_checkpoint_store: the CheckpointStore contract as checks any implementation can run.

Like trio's ``check_two_way_stream``: a store author calls it from an async test. Each check gets
a new store, uses only the protocol, and fails with an :class:`AssertionError` naming the check.
It cannot check durability across a crash (that takes killing a process); FileStore's own tests
do that.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import anyio

from asyncflow import CheckpointError
from asyncflow.stores import (
    CheckpointStore,
    RunCheckpoints,
    RunInfo,
    RunManifest,
    StepCheckpoint,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

__all__ = ["check_checkpoint_store"]

S = TypeVar("S", bound=CheckpointStore)

#: JSON text as codecs write it, and as they may: newlines, escapes, unicode, deep and long.
OUTPUTS = (
    "null",
    "0",
    '"text"',
    '{"a":[1,2.5,-3e+20,true,false,null],"b":{"c":"d"}}',
    '"line\\nbreak, tab\\t, quote \\" and backslash \\\\"',
    '"ünïcödé ✓ 𝄞 \\u2028"',
    '{\n  "indented": [\n    1,\n    2\n  ]\n}',
    "[" * 50 + "]" * 50,
    json.dumps({"pad": "x" * 100_000}),
)
#: The longest run id and every character a run id may hold.
LONG_ID = ("a.b@c+d=e,f~g-h_0" * 12)[:200]


async def check_checkpoint_store(
    factory: Callable[[], S],
    *,
    persistent: bool = True,
    damage: Callable[[S, str, str], Awaitable[object] | object] | None = None,
) -> None:
    """Check that the stores ``factory`` makes keep the :class:`CheckpointStore` contract.

    Checked: a new store is empty; manifests and step checkpoints read back as saved (JSON text
    as the same JSON value); a save replaces the previous one of the same entry and nothing
    else; a manifest saved with ``save_manifest_nowait`` is there whenever a later step
    checkpoint of its run is, and a later manifest replaces it; ``list_runs`` lists every run
    with a manifest once, with its latest manifest, including saves made in the same open;
    many concurrent saves; calls outside ``open()`` raise :class:`~asyncflow.CheckpointError`;
    ``delete_run`` removes exactly one run's manifest and steps; and, with ``persistent``, all of it again after the store is closed and opened again.

    Run it from an async test::

        async def test_my_store_keeps_the_contract(tmp_path):
            dirs = itertools.count()
            await check_checkpoint_store(lambda: MyStore(tmp_path / str(next(dirs))))

    Args:
        factory: makes a new, empty, unopened store; called once per check.
        persistent: the store keeps what was saved when it is closed and opened again. Pass
            ``False`` for a store that starts empty at each open; reopening is then checked to
            work, not to keep anything.
        damage: for stores that can find a kept entry unusable (a corrupt file, a bad row):
            given the closed store, a run id and a step name, it damages that step's saved
            checkpoint (it may be async). The check then expects the damage to be reported in
            ``RunCheckpoints.discarded``, never raised, and to cost that entry only.

    Raises:
        AssertionError: a check failed; the message names it and says what was wrong.
    """
    for name, check in _CHECKS:
        await _named(name, check(factory(), persistent))
    if damage is not None:
        await _named("a damaged entry", _damaged_entry(factory(), persistent, damage))


async def _named(name: str, check: Awaitable[None]) -> None:
    try:
        await check
    except AssertionError as exc:
        raise AssertionError(f"check_checkpoint_store: {name}: {exc}") from exc


@asynccontextmanager
async def _opened(store: CheckpointStore) -> AsyncIterator[None]:
    """Open ``store`` for a block whose failed check leaves the store's block first.

    So a store whose ``open()`` runs a task group does not wrap it in an ExceptionGroup.
    """
    failed: AssertionError | None = None
    async with store.open():
        try:
            yield
        except AssertionError as exc:
            failed = exc
    if failed is not None:
        raise failed


def _fail(what: str, got: object, want: object) -> AssertionError:
    return AssertionError(f"{what}: got {_short(got)}, expected {_short(want)}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text)} characters)"


def manifest(run_id: str, n: int = 0, *, status: str = "running") -> RunManifest:
    """A manifest of run ``run_id``, version ``n`` (in its inputs and times)."""
    return RunManifest(
        run_id=run_id,
        flow="conformance ✓",
        flow_fingerprint=f"flow-fp-{n}",
        inputs=json.dumps({"n": n, "text": "ünï\ncode"}),
        status=status,
        created_at="2026-01-02T03:04:05.678+00:00",
        updated_at=f"2026-01-02T03:04:{n % 60:02d}.000+00:00",
        failed_steps=("b", "c") if status == "failed" else (),
    )


def checkpoint(run_id: str, step: str, output: str = '"out"') -> StepCheckpoint:
    return StepCheckpoint(
        run_id, step, fingerprint=f"fp-{step}", digest=f"d-{output[:20]}", output=output
    )


def _same_json(a: str, b: str) -> bool:
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return a == b


def _expect_manifest(
    got: RunManifest | None, want: RunManifest | None, run_id: str, what: str
) -> None:
    if got is not None and want is not None and got.inputs != want.inputs:
        if _same_json(got.inputs, want.inputs):
            got = dataclasses.replace(got, inputs=want.inputs)
    if got != want:
        raise _fail(f"{what}: the manifest of run {run_id!r}", got, want)


def _expect_step(got: StepCheckpoint | None, want: StepCheckpoint, what: str) -> None:
    if got is not None and got.output != want.output and _same_json(got.output, want.output):
        got = dataclasses.replace(got, output=want.output)
    if got != want:
        raise _fail(f"{what}: step {want.step!r} of run {want.run_id!r}", got, want)


async def _expect_run(
    store: CheckpointStore,
    run_id: str,
    want_manifest: RunManifest | None,
    want_steps: Sequence[StepCheckpoint],
    what: str,
) -> RunCheckpoints:
    """Load ``run_id``: exactly this manifest and these steps, nothing discarded."""
    got = await store.load_run(run_id)
    _expect_manifest(got.manifest, want_manifest, run_id, what)
    if sorted(got.steps) != sorted(s.step for s in want_steps):
        raise _fail(
            f"{what}: the steps of run {run_id!r}", sorted(got.steps), [s.step for s in want_steps]
        )
    for want in want_steps:
        _expect_step(got.steps.get(want.step), want, what)
    if got.discarded != ():
        raise _fail(f"{what}: discarded entries of run {run_id!r}", got.discarded, ())
    return got


async def _listed(store: CheckpointStore) -> list[RunInfo]:
    return [info async for info in store.list_runs()]


def _expect_listing(got: list[RunInfo], manifests: Mapping[str, RunManifest], what: str) -> None:
    ids = [info.run_id for info in got]
    if len(ids) != len(set(ids)):
        raise AssertionError(
            f"{what}: list_runs() listed a run more than once: {_short(sorted(ids))}"
        )
    if sorted(ids) != sorted(manifests):
        raise _fail(f"{what}: the runs list_runs() listed", sorted(ids), sorted(manifests))
    for info in got:
        want = RunInfo.from_manifest(manifests[info.run_id])
        if info != want:
            raise _fail(f"{what}: list_runs() for run {info.run_id!r}", info, want)


async def _empty(store: CheckpointStore, persistent: bool) -> None:
    """A new store holds nothing; its codec round-trips a value."""
    async with _opened(store):
        got = await store.load_run("never-saved")
        if got.manifest is not None or dict(got.steps) or got.discarded:
            raise _fail("load_run() of a run never saved", got, RunCheckpoints())
        if (listed := await _listed(store)) != []:
            raise _fail("list_runs() of a new store", listed, [])
    value = {"a": [1, "ü"], "b": None}
    back = store.codec.decode(store.codec.encode(value))
    if back != value:
        raise _fail("store.codec.decode(store.codec.encode(value))", back, value)


async def _round_trip(store: CheckpointStore, persistent: bool) -> None:
    """What is saved reads back: in the same open and, when persistent, after reopening."""
    runs = {
        LONG_ID: (manifest(LONG_ID, 1), [checkpoint(LONG_ID, "s", OUTPUTS[3])]),
        "r": (
            manifest("r", 2, status="failed"),
            [checkpoint("r", f"step {i} ✓", out) for i, out in enumerate(OUTPUTS)],
        ),
        "only-steps": (None, [checkpoint("only-steps", "a")]),
    }
    async with _opened(store):
        for m, steps in runs.values():
            if m is not None:
                await store.save_manifest(m)
            for s in steps:
                await store.save_step(s)
        for run_id, (m, steps) in runs.items():
            await _expect_run(store, run_id, m, steps, "in the same open")
    if persistent:
        async with _opened(store):
            for run_id, (m, steps) in runs.items():
                await _expect_run(store, run_id, m, steps, "after reopening")


async def _overwrite(store: CheckpointStore, persistent: bool) -> None:
    """A save replaces that entry's previous one, before and after reopening, and nothing else."""
    other = [checkpoint("other", "a", '"other"')]
    async with _opened(store):
        await store.save_manifest(manifest("r", 1))
        await store.save_step(checkpoint("r", "a", '"v1"'))
        await store.save_step(checkpoint("r", "b", '"b"'))
        await store.save_step(other[0])
        await store.save_step(checkpoint("r", "a", '"v2"'))
        await store.save_manifest(manifest("r", 2, status="failed"))
        b = checkpoint("r", "b", '"b"')
        await _expect_run(
            store,
            "r",
            manifest("r", 2, status="failed"),
            [checkpoint("r", "a", '"v2"'), b],
            "saved twice",
        )
        await _expect_run(store, "other", None, other, "another run")
    async with _opened(store):
        await store.save_step(checkpoint("r", "a", '"v3"'))
        await store.save_manifest(manifest("r", 3, status="succeeded"))
        steps = [checkpoint("r", "a", '"v3"'), b] if persistent else [checkpoint("r", "a", '"v3"')]
        want = (manifest("r", 3, status="succeeded"), steps)
        await _expect_run(store, "r", *want, "saved again after reopening")
    if persistent:
        async with _opened(store):
            await _expect_run(store, "r", *want, "saved again, then reopened")
            await _expect_run(store, "other", None, other, "another run, reopened")


async def _manifest_before_steps(store: CheckpointStore, persistent: bool) -> None:
    """save_manifest_nowait: there once a later save of its run returns; later manifests win."""
    n = 50
    failed: list[AssertionError] = []  # raised after the task group, not wrapped by it

    async def run(i: int) -> None:
        store.save_manifest_nowait(manifest(f"r{i}", i))
        await store.save_step(checkpoint(f"r{i}", "a"))
        try:
            await _expect_run(
                store,
                f"r{i}",
                manifest(f"r{i}", i),
                [checkpoint(f"r{i}", "a")],
                "after the step's save returned",
            )
        except AssertionError as exc:
            failed.append(exc)

    async with _opened(store):
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(run, i)
        if failed:
            raise failed[0]
        store.save_manifest_nowait(manifest("final", 1))
        await store.save_manifest(manifest("final", 2, status="succeeded"))
        store.save_manifest_nowait(manifest("twice", 1))
        store.save_manifest_nowait(manifest("twice", 2))
        await store.save_step(checkpoint("twice", "a"))
        await _expect_run(
            store,
            "final",
            manifest("final", 2, status="succeeded"),
            [],
            "a manifest saved after one saved without waiting",
        )
        await _expect_run(
            store,
            "twice",
            manifest("twice", 2),
            [checkpoint("twice", "a")],
            "two manifests saved without waiting",
        )
    if persistent:
        async with _opened(store):
            for i in range(n):
                await _expect_run(
                    store, f"r{i}", manifest(f"r{i}", i), [checkpoint(f"r{i}", "a")], "reopened"
                )
            await _expect_run(
                store, "final", manifest("final", 2, status="succeeded"), [], "reopened"
            )
            await _expect_run(
                store, "twice", manifest("twice", 2), [checkpoint("twice", "a")], "reopened"
            )


async def _list_runs(store: CheckpointStore, persistent: bool) -> None:
    """list_runs() lists each run with a manifest once, with its latest, saved in any open."""
    manifests = {f"run-{i:03d}": manifest(f"run-{i:03d}", i) for i in range(300)}
    async with _opened(store):
        for m in manifests.values():
            await store.save_manifest(m)
        await store.save_step(checkpoint("no-manifest", "a"))
        for i in range(0, 300, 7):
            m = manifests[f"run-{i:03d}"] = manifest(f"run-{i:03d}", i + 1, status="failed")
            await store.save_manifest(m)
        _expect_listing(await _listed(store), manifests, "in the same open")
        async for _ in store.list_runs():
            break  # a listing left early leaves the store working
        await store.save_step(checkpoint("run-000", "a"))
        await _expect_run(
            store,
            "run-000",
            manifests["run-000"],
            [checkpoint("run-000", "a")],
            "after a listing left early",
        )
    if not persistent:
        manifests.clear()
    async with _opened(store):
        _expect_listing(await _listed(store), manifests, "after reopening")
        manifests["run-001"] = manifest("run-001", 9, status="succeeded")
        manifests["new"] = manifest("new", 1)
        await store.save_manifest(manifests["run-001"])
        store.save_manifest_nowait(manifests["new"])
        await store.save_step(checkpoint("new", "a"))
        _expect_listing(await _listed(store), manifests, "saved after reopening")
    if persistent:
        async with _opened(store):
            _expect_listing(await _listed(store), manifests, "reopened again")


async def _concurrent_saves(store: CheckpointStore, persistent: bool) -> None:
    """Many saves at once, across runs and steps, are all kept."""
    runs, steps = 20, 10
    want = {
        f"r{r}": [checkpoint(f"r{r}", f"s{s}", str(r * steps + s)) for s in range(steps)]
        for r in range(runs)
    }
    async with _opened(store):
        async with anyio.create_task_group() as tg:
            for run_id, checkpoints in want.items():
                tg.start_soon(store.save_manifest, manifest(run_id))
                for c in checkpoints:
                    tg.start_soon(store.save_step, c)
        for run_id, checkpoints in want.items():
            await _expect_run(store, run_id, manifest(run_id), checkpoints, "saved concurrently")
    if persistent:
        async with _opened(store):
            for run_id, checkpoints in want.items():
                await _expect_run(
                    store, run_id, manifest(run_id), checkpoints, "saved concurrently, reopened"
                )


async def _delete_run(store: CheckpointStore, persistent: bool) -> None:
    """delete_run() removes a run's manifest and steps, only that run's, and says if it had any.

    For a persistent store the runs are deleted in a later open than the one that saved them
    (a store may refuse to delete a run it may still be writing), and checked gone after
    reopening.
    """
    kept = manifest("kept", 1)
    saved = {"gone": manifest("gone", 1, status="failed"), "kept": kept}

    async def save() -> None:
        for m in saved.values():
            await store.save_manifest(m)
            await store.save_step(checkpoint(m.run_id, "a"))
        await store.save_step(checkpoint("only-steps", "a"))

    async def delete() -> None:
        for run_id in ("gone", "only-steps"):
            if await store.delete_run(run_id) is not True:
                raise AssertionError(f"delete_run({run_id!r}) of a kept run did not return True")
        if await store.delete_run("never-saved") is not False:
            raise AssertionError("delete_run() of a run never saved did not return False")
        await _expect_run(store, "gone", None, [], "after delete_run()")
        await _expect_run(store, "only-steps", None, [], "after delete_run()")
        await _expect_run(store, "kept", kept, [checkpoint("kept", "a")], "beside a deleted run")
        _expect_listing(await _listed(store), {"kept": kept}, "after delete_run()")

    async with _opened(store):
        await save()
        if not persistent:
            await delete()
    if persistent:
        async with _opened(store):
            await delete()
        async with _opened(store):
            _expect_listing(await _listed(store), {"kept": kept}, "reopened after delete_run()")
            await _expect_run(store, "gone", None, [], "reopened after delete_run()")
            again = manifest("gone", 2)
            await store.save_manifest(again)
            await _expect_run(store, "gone", again, [], "saved again after delete_run()")


async def _closed(store: CheckpointStore, persistent: bool) -> None:
    """Outside open(), every call raises CheckpointError, before the first open and after."""

    async def save_manifest_nowait() -> None:
        store.save_manifest_nowait(manifest("r"))

    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("load_run", lambda: store.load_run("r")),
        ("save_manifest", lambda: store.save_manifest(manifest("r"))),
        ("save_manifest_nowait", save_manifest_nowait),
        ("save_step", lambda: store.save_step(checkpoint("r", "a"))),
        ("list_runs", lambda: _listed(store)),
        ("delete_run", lambda: store.delete_run("r")),
    ]
    for when in ("before open()", "after open() ended"):
        for name, call in calls:
            try:
                await call()
            except CheckpointError:
                pass
            else:
                raise AssertionError(f"{name}() {when} returned; it must raise CheckpointError")
        async with _opened(store):
            pass


async def _damaged_entry(
    store: S, persistent: bool, damage: Callable[[S, str, str], Awaitable[object] | object]
) -> None:
    """A damaged step checkpoint is reported, not raised, and costs only itself."""
    m, a, b = manifest("r", 1), checkpoint("r", "a", '"a"'), checkpoint("r", "b", '"b"')
    async with _opened(store):
        await store.save_manifest(m)
        await store.save_step(a)
        await store.save_step(b)
    done = damage(store, "r", "b")
    if inspect.isawaitable(done):
        await done
    async with _opened(store):
        try:
            got = await store.load_run("r")
        except Exception as exc:
            raise AssertionError(
                f"load_run() raised {exc!r}; a damaged entry is reported in discarded"
            ) from exc
        if not any(d.step == "b" for d in got.discarded):
            raise _fail(
                "discarded, after step 'b' was damaged", got.discarded, "an entry for step 'b'"
            )
        if "b" in got.steps:
            raise _fail("the steps loaded, after step 'b' was damaged", sorted(got.steps), ["a"])
        _expect_manifest(got.manifest, m, "r", "after step 'b' was damaged")
        _expect_step(got.steps.get("a"), a, "after step 'b' was damaged")
        try:
            _expect_listing(await _listed(store), {"r": m}, "after step 'b' was damaged")
        except CheckpointError as exc:
            raise AssertionError(f"list_runs() raised {exc!r} after step 'b' was damaged") from exc
        await store.save_step(b)
        got = await store.load_run("r")
        _expect_step(got.steps.get("b"), b, "saved again after it was damaged")
    if persistent:
        async with _opened(store):
            await _expect_run(store, "r", m, [a, b], "saved again after it was damaged, reopened")


_CHECKS: list[tuple[str, Callable[[CheckpointStore, bool], Awaitable[None]]]] = [
    ("a new store", _empty),
    ("round trip", _round_trip),
    ("overwrite", _overwrite),
    ("manifest before steps", _manifest_before_steps),
    ("list_runs", _list_runs),
    ("concurrent saves", _concurrent_saves),
    ("outside open()", _closed),
    ("delete_run", _delete_run),
]
