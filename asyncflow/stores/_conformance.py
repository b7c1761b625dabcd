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
import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import anyio

from asyncflow import CheckpointError, LeaseLostError
from asyncflow.stores import (
    CheckpointStore,
    Lease,
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
#: How long "lease expiry" waits for a lease of 0.2 s to lapse, in seconds.
EXPIRY_WAIT = 30.0
#: The longest run id and every character a run id may hold.
LONG_ID = ("a.b@c+d=e,f~g-h_0" * 12)[:200]


async def check_checkpoint_store(
    factory: Callable[[], S],
    *,
    persistent: bool = True,
    damage: Callable[[S, str, str], Awaitable[object] | object] | None = None,
    leases_expire: bool = True,
) -> None:
    """Check that the stores ``factory`` makes keep the :class:`CheckpointStore` contract.

    Checked: a new store is empty; manifests and step checkpoints read back as saved (JSON text
    as the same JSON value); a save replaces the previous one of the same entry and nothing
    else; a manifest saved with ``save_manifest_nowait`` is there whenever a later step
    checkpoint of its run is, and a later manifest replaces it; ``list_runs`` lists every run
    with a manifest once, with its latest manifest, including saves made in the same open;
    many concurrent saves; calls outside ``open()`` raise :class:`~asyncflow.CheckpointError`;
    ``delete_run`` removes exactly one run's manifest and steps; ``details`` round-trip;
    ``list_runs`` filters by flow, status and time; leases: one owner at a time, the same
    owner renews, a release lets another owner in with a greater epoch, epochs never go down
    (after ``delete_run`` and reopening either), ``renew_leases`` reports lost ones; fencing: a
    save with a lease another owner took over is refused with
    :class:`~asyncflow.LeaseLostError` and writes nothing (``save_manifest_nowait``'s at the
    run's next fenced save); with ``leases_expire``, an expired lease is taken over;
    admission: of concurrent ``create_run_if_absent`` calls for one run exactly one returns
    ``True``; and, with ``persistent``, all of it again after the store is closed and opened
    again.

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
        leases_expire: leases lapse after their ttl unless renewed (a database's). Pass
            ``False`` for a store whose leases last as long as their holder (FileStore's
            per-machine locks): expiry is then not checked, and ``expires_at`` must be
            ``math.inf``.

    Raises:
        AssertionError: a check failed; the message names it and says what was wrong.
    """
    for name, check in _CHECKS:
        await _named(name, check(factory(), persistent))
    await _named("leases", _leases(factory(), persistent, leases_expire))
    await _named("fencing", _fencing(factory(), persistent))
    if leases_expire:
        await _named("lease expiry", _lease_expiry(factory(), persistent))
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
    if got is not None and want is not None and got.details != want.details:
        if got.details and want.details and _same_json(got.details, want.details):
            got = dataclasses.replace(got, details=want.details)
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
        ("claim_run", lambda: store.claim_run("r", owner="a", ttl=30)),
        ("renew_leases", lambda: store.renew_leases([Lease("r", "a", 1, 0.0)], ttl=30)),
        ("create_run_if_absent", lambda: store.create_run_if_absent(manifest("r"))),
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


#: A run's details as the engine writes them: trace context, then each step's account.
DETAILS = json.dumps(
    {
        "trace": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "steps": {
            "fetch ✓": {
                "status": "failed",
                "attempts": 3,
                "error": {"type": "StepError", "message": "line\nbreak", "causes": []},
            }
        },
    },
    ensure_ascii=False,
)


async def _details(store: CheckpointStore, persistent: bool) -> None:
    """A manifest's details read back as the same JSON value; none stays none."""
    with_details = dataclasses.replace(manifest("d", 1, status="failed"), details=DETAILS)
    plain = manifest("p", 1)
    async with _opened(store):
        await store.save_manifest(with_details)
        store.save_manifest_nowait(dataclasses.replace(with_details, run_id="n"))
        await store.save_step(checkpoint("n", "a"))
        await store.save_manifest(plain)
        await _expect_run(store, "d", with_details, [], "saved with details")
        want_n = dataclasses.replace(with_details, run_id="n")
        await _expect_run(store, "n", want_n, [checkpoint("n", "a")], "saved without waiting")
        await _expect_run(store, "p", plain, [], "saved without details")
    if persistent:
        async with _opened(store):
            await _expect_run(store, "d", with_details, [], "with details, reopened")
            await _expect_run(store, "p", plain, [], "without details, reopened")


async def _filters(store: CheckpointStore, persistent: bool) -> None:
    """list_runs(flow=, status=, since=) yields exactly the runs that pass every filter given."""
    saved = []
    for i in range(12):
        m = dataclasses.replace(
            manifest(
                f"run-{i:02d}", i, status=("pending", "running", "succeeded", "failed")[i % 4]
            ),
            flow=f"flow-{i % 3}",
        )
        saved.append(m)
    since = "2026-01-02T03:04:06.000+00:00"

    def want(flow: str | None, status: str | None, after: str | None) -> dict[str, RunManifest]:
        return {
            m.run_id: m
            for m in saved
            if flow in (None, m.flow)
            and status in (None, m.status)
            and (after is None or m.updated_at >= after)
        }

    cases = [
        ("flow-1", None, None),
        (None, "failed", None),
        (None, None, since),
        ("flow-0", "pending", None),
        ("flow-2", None, since),
        ("no such flow", None, None),
        (None, "succeeded", "2999-01-01T00:00:00.000+00:00"),
    ]

    async def check(what: str) -> None:
        for flow, status, after in cases:
            got = [i async for i in store.list_runs(flow=flow, status=status, since=after)]
            _expect_listing(
                got, want(flow, status, after), f"{what}: list_runs({flow=}, {status=}, {after=})"
            )

    async with _opened(store):
        for m in saved:
            await store.save_manifest(m)
        await check("in the same open")
    if persistent:
        async with _opened(store):
            await check("after reopening")


async def _admission(store: CheckpointStore, persistent: bool) -> None:
    """Of concurrent create_run_if_absent() calls for one run, exactly one creates it."""
    calls = 20
    created: list[int] = []

    async def admit(i: int) -> None:
        m = manifest("admitted", i, status="pending")
        if await store.create_run_if_absent(m):
            created.append(i)

    async with _opened(store):
        async with anyio.create_task_group() as tg:
            for i in range(calls):
                tg.start_soon(admit, i)
        if len(created) != 1:
            raise _fail("how many concurrent create_run_if_absent() returned True", created, 1)
        winner = manifest("admitted", created[0], status="pending")
        await _expect_run(store, "admitted", winner, [], "admitted")
        _expect_listing(
            [i async for i in store.list_runs(status="pending")],
            {"admitted": winner},
            "list_runs(status='pending') after admission",
        )
        await store.save_manifest(manifest("started", 1))
        if await store.create_run_if_absent(manifest("started", 2, status="pending")):
            raise AssertionError("create_run_if_absent() of a run with a manifest returned True")
        await _expect_run(store, "started", manifest("started", 1), [], "not admitted twice")
    if persistent:
        async with _opened(store):
            again = manifest("admitted", 99, status="pending")
            if await store.create_run_if_absent(again):
                raise AssertionError("create_run_if_absent() after reopening returned True")
            await _expect_run(store, "admitted", winner, [], "admitted, reopened")


async def _claim(store: CheckpointStore, run_id: str, owner: str) -> Lease:
    lease = await store.claim_run(run_id, owner=owner, ttl=30)
    if lease is None:
        raise AssertionError(f"claim_run({run_id!r}, owner={owner!r}) of a free run gave None")
    if (lease.run_id, lease.owner) != (run_id, owner):
        raise _fail(f"claim_run({run_id!r}, owner={owner!r})", lease, f"a lease of {owner!r}")
    return lease


async def _leases(store: CheckpointStore, persistent: bool, leases_expire: bool) -> None:
    """One owner at a time; renewals keep the epoch; a new owner's epoch is greater, always."""
    async with _opened(store):
        first = await _claim(store, "r", "a")
        if not leases_expire and first.expires_at != math.inf:
            raise _fail("expires_at of a lease that lasts as long as its holder", first, math.inf)
        if await store.claim_run("r", owner="b", ttl=30) is not None:
            raise AssertionError("claim_run() by another owner of a held run did not give None")
        again = await _claim(store, "r", "a")
        if again.epoch != first.epoch:
            raise _fail("the epoch of a lease claimed again by its owner", again, first.epoch)
        (renewed,) = await store.renew_leases([again], ttl=30)
        if renewed is None or renewed.epoch != first.epoch:
            raise _fail("renew_leases() of a held lease", renewed, f"epoch {first.epoch}")
        other = await _claim(store, "other-run", "b")  # another run: no conflict
        await store.release_run(again)
        await store.release_run(again)  # idempotent
        second = await _claim(store, "r", "b")
        if not second.epoch > first.epoch:
            raise _fail("the epoch of a run's next owner", second.epoch, f"> {first.epoch}")
        got = await store.renew_leases([first, second, other], ttl=30)
        if got[0] is not None or got[1] is None or got[2] is None:
            raise _fail("renew_leases([lost, held, held])", got, "[None, a lease, a lease]")
        await store.release_run(first)  # lost: no error, and the holder keeps it
        if await store.claim_run("r", owner="c", ttl=30) is not None:
            raise AssertionError("releasing a lost lease released its new owner's")
        for ttl in (0, -1.0):
            try:
                await store.claim_run("x", owner="a", ttl=ttl)
            except ValueError:
                pass
            else:
                raise AssertionError(f"claim_run(ttl={ttl}) did not raise ValueError")
        await store.release_run(second)
        await store.save_manifest(manifest("r", 1))
        third = await _claim(store, "r", "c")
        await store.release_run(third)
        await store.release_run(other)
        if not persistent:
            await _deleted_then_claimed(store, third)
    if persistent:
        # In a later open, as in "delete_run": a store may refuse to delete what it may write.
        async with _opened(store):
            fourth = await _deleted_then_claimed(store, third)
        async with _opened(store):
            fifth = await _claim(store, "r", "e")
            if not fifth.epoch > fourth.epoch:
                raise _fail("a run's epoch after reopening", fifth.epoch, f"> {fourth.epoch}")
            await store.release_run(fifth)


async def _deleted_then_claimed(store: CheckpointStore, last: Lease) -> Lease:
    if await store.delete_run("r") is not True:
        raise AssertionError("delete_run() of a claimed run's manifest did not return True")
    lease = await _claim(store, "r", "d")
    if not lease.epoch > last.epoch:
        raise _fail("a run's epoch after delete_run()", lease.epoch, f"> {last.epoch}")
    await store.release_run(lease)
    return lease


async def _fencing(store: CheckpointStore, persistent: bool) -> None:
    """A stale owner's saves are refused and write nothing; the current owner's are kept."""
    kept = checkpoint("r", "a", '"first owner"')
    async with _opened(store):
        old = await _claim(store, "r", "a")
        await store.save_manifest(manifest("r", 1), lease=old)
        await store.save_step(kept, lease=old)
        await store.release_run(old)
        new = await _claim(store, "r", "b")
        refused: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("save_step", lambda: store.save_step(checkpoint("r", "b", '"stale"'), lease=old)),
            ("save_step", lambda: store.save_step(checkpoint("r", "a", '"stale"'), lease=old)),
            ("save_manifest", lambda: store.save_manifest(manifest("r", 2), lease=old)),
        ]
        for name, call in refused:
            try:
                await call()
            except LeaseLostError as exc:
                if exc.run_id != "r" or exc.epoch != old.epoch:
                    raise _fail(f"{name}()'s LeaseLostError", (exc.run_id, exc.epoch), "r") from exc
            else:
                raise AssertionError(f"{name}() with a lease taken over was not refused")
        store.save_manifest_nowait(manifest("r", 3), lease=old)
        try:
            await store.save_step(checkpoint("r", "c", '"stale"'), lease=old)
        except LeaseLostError:
            pass
        else:
            raise AssertionError("a fenced save after a refused save_manifest_nowait() returned")
        await _expect_run(store, "r", manifest("r", 1), [kept], "after stale saves")
        current = checkpoint("r", "b", '"new owner"')
        await store.save_step(current, lease=new)
        await store.save_manifest(manifest("r", 4), lease=new)
        unfenced = checkpoint("r", "z", '"a tool"')
        await store.save_step(unfenced)
        await _expect_run(store, "r", manifest("r", 4), [kept, current, unfenced], "new owner")
        await store.release_run(new)
    if persistent:
        async with _opened(store):
            await _expect_run(
                store, "r", manifest("r", 4), [kept, current, unfenced], "fenced, reopened"
            )


async def _lease_expiry(store: CheckpointStore, persistent: bool) -> None:
    """An expired lease is taken over with a greater epoch; its owner can then write nothing."""
    async with _opened(store):
        lapsing = await store.claim_run("r", owner="a", ttl=0.2)
        if lapsing is None:
            raise AssertionError("claim_run() of a free run gave None")
        taken = None
        with anyio.move_on_after(EXPIRY_WAIT):
            # The lease lapses by the store's clock: there is no event to wait on.
            while (taken := await store.claim_run("r", owner="b", ttl=30)) is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        if taken is None:
            raise AssertionError(
                f"a lease of ttl=0.2 was not taken over by another owner in {EXPIRY_WAIT} s"
            )
        if not taken.epoch > lapsing.epoch:
            raise _fail("the epoch of an expired lease's next owner", taken, f"> {lapsing.epoch}")
        try:
            await store.save_step(checkpoint("r", "a"), lease=lapsing)
        except LeaseLostError:
            pass
        else:
            raise AssertionError("save_step() with an expired lease taken over was not refused")
        if (await store.renew_leases([lapsing], ttl=30)) != [None]:
            raise AssertionError("renew_leases() of an expired lease taken over did not give None")
        await _expect_run(store, "r", None, [], "after an expired owner's save")
        await store.release_run(taken)


_CHECKS: list[tuple[str, Callable[[CheckpointStore, bool], Awaitable[None]]]] = [
    ("a new store", _empty),
    ("round trip", _round_trip),
    ("overwrite", _overwrite),
    ("manifest before steps", _manifest_before_steps),
    ("list_runs", _list_runs),
    ("concurrent saves", _concurrent_saves),
    ("outside open()", _closed),
    ("delete_run", _delete_run),
    ("details", _details),
    ("list_runs filters", _filters),
    ("admission", _admission),
]
