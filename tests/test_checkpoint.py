"""Checkpoints through the engine: restore, resume, stale checkpoints, bad run files; JsonCodec."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import inspect
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from asyncflow import (
    CheckpointDiscarded,
    CheckpointEncodeError,
    CheckpointError,
    Engine,
    Event,
    FileStore,
    Flow,
    InvalidRunIdError,
    JsonCodec,
    RunInputError,
    StepRestored,
    StepStatus,
)
from tests.stores.files import damage_entry, names, run_file, run_file_json

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from asyncflow import RunResult

pytestmark = pytest.mark.anyio


@dataclasses.dataclass(frozen=True)
class Doc:
    name: str
    words: tuple[str, ...]
    when: dt.datetime


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class WithDerived:
    a: int
    b: int = dataclasses.field(init=False, default=0)


def document_flow(calls: list[str], name: str = "docs") -> Flow:
    flow = Flow(name)

    @flow.step
    async def ingest(path: str) -> Doc:
        calls.append("ingest")
        return Doc(path, tuple(path.split(".")), dt.datetime(2026, 1, 2, tzinfo=dt.UTC))

    @flow.step
    async def enrich(ingest: Doc) -> dict[str, object]:
        calls.append("enrich")
        return {"n": len(ingest.words), "tags": {"x", "y"}}

    @flow.step
    async def label(lang: str = "en") -> str:
        calls.append("label")
        return lang.upper()

    @flow.step
    async def summarize(ingest: Doc, enrich: dict[str, object], label: str) -> str:
        calls.append("summarize")
        return f"{ingest.name}:{enrich['n']}:{label}"

    return flow


def statuses(result: object) -> dict[str, StepStatus]:
    return {n: r.status for n, r in result.steps.items()}  # type: ignore[attr-defined]


async def test_a_second_run_restores_every_step_without_running_it(tmp_path: Path) -> None:
    """Running the same run again restores each step's output and executes nothing."""
    calls: list[str] = []
    flow = document_flow(calls)
    async with Engine(store=FileStore(tmp_path / "ck")) as engine:
        first = await engine.run(flow, run_id="doc-1", path="a.txt")
    assert first.ok
    assert sorted(calls) == ["enrich", "ingest", "label", "summarize"]
    events: list[Event] = []
    async with Engine(store=FileStore(tmp_path / "ck"), observers=[events.append]) as engine:
        second = await engine.run(flow, run_id="doc-1", path="a.txt")
    assert len(calls) == 4
    assert set(statuses(second).values()) == {StepStatus.RESTORED}
    assert second.outputs == first.outputs
    assert sorted(e.step for e in events if isinstance(e, StepRestored)) == sorted(flow.steps)


async def test_resume_takes_the_inputs_from_the_manifest(tmp_path: Path) -> None:
    """engine.resume(flow, run_id) runs only what has no checkpoint, with the saved inputs."""
    calls: list[str] = []
    flow = document_flow(calls)
    fail = True

    @flow.step
    async def publish(summarize: str) -> str:
        if fail:
            raise RuntimeError("publisher down")
        return f"published {summarize}"

    async with Engine(store=FileStore(tmp_path)) as engine:
        failed = await engine.run(flow, run_id="doc-2", path="b.md", lang="fr")
    assert not failed.ok
    fail = False
    calls.clear()
    async with Engine(store=FileStore(tmp_path)) as engine:
        resumed = await engine.resume(flow, "doc-2")
    assert resumed.ok
    assert calls == []
    assert resumed.outputs["publish"] == "published b.md:2:FR"
    assert resumed.steps["publish"].status is StepStatus.SUCCEEDED
    assert resumed.inputs == {"path": "b.md", "lang": "fr"}
    manifest = run_file_json(tmp_path, "doc-2")["manifest"]
    assert manifest["status"] == "succeeded"
    assert manifest["inputs"] == {"lang": "fr", "path": "b.md"}


async def test_the_final_manifest_names_the_failed_steps_until_the_run_succeeds(
    tmp_path: Path,
) -> None:
    """A failed run's manifest lists its failed steps (not the skipped ones), as list_runs does."""
    flow = document_flow([])
    fail = True

    @flow.step
    async def publish(summarize: str) -> str:
        if fail:
            raise RuntimeError("publisher down")
        return summarize

    @flow.step
    async def notify(publish: str) -> str:
        return publish

    async with Engine(store=FileStore(tmp_path)) as engine:
        failed = await engine.run(flow, run_id="doc-7", path="a.txt")
        assert engine.store is not None
        listed = [info async for info in engine.store.list_runs()]
    assert failed.steps["notify"].status is StepStatus.SKIPPED
    assert [(i.run_id, i.status, i.failed_steps) for i in listed] == [
        ("doc-7", "failed", ("publish",))
    ]
    assert run_file_json(tmp_path, "doc-7")["manifest"]["failed_steps"] == ["publish"]
    fail = False
    async with Engine(store=FileStore(tmp_path)) as engine:
        assert (await engine.resume(flow, "doc-7")).ok
    manifest = run_file_json(tmp_path, "doc-7")["manifest"]
    assert (manifest["status"], manifest["failed_steps"]) == ("succeeded", [])


async def test_without_run_id_the_same_call_resumes_the_same_run(tmp_path: Path) -> None:
    """The derived run id depends on the flow and inputs only, so a repeat call restores."""
    calls: list[str] = []
    flow = document_flow(calls)
    async with Engine(store=FileStore(tmp_path)) as engine:
        a = await engine.run(flow, path="a.txt")
        b = await engine.run(flow, path="a.txt")
        c = await engine.run(flow, path="c.txt")
    assert a.run_id == b.run_id != c.run_id
    assert set(statuses(b).values()) == {StepStatus.RESTORED}
    assert calls.count("ingest") == 2


def test_derived_run_ids_are_the_same_in_every_process() -> None:
    """Set order depends on the hash seed; the derived id does not."""
    code = textwrap.dedent(
        """
        import datetime

        import anyio

        from asyncflow import Engine, Flow

        f = Flow("my flow/v2")

        @f.step
        async def a(tags: set, when: object) -> None: ...

        async def main() -> None:
            async with Engine(store=None) as engine:
                result = await engine.run(
                    f, tags={"x", "y", "z", "w"}, when=datetime.date(2026, 1, 1)
                )
            print(result.run_id)

        anyio.run(main)
        """
    )
    ids = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout.strip()
        for seed in (1, 2, 3)
    }
    assert len(ids) == 1
    (run_id,) = ids
    assert run_id.startswith("my_flow_v2-")


async def test_a_changed_input_makes_the_steps_that_depend_on_it_stale(tmp_path: Path) -> None:
    """Steps whose inputs changed run again; a step that does not see the change is restored."""
    calls: list[str] = []
    flow = document_flow(calls)
    async with Engine(store=FileStore(tmp_path)) as engine:
        await engine.run(flow, run_id="doc-3", path="a.txt")
        calls.clear()
        result = await engine.run(flow, run_id="doc-3", path="a.b.txt")
    assert sorted(calls) == ["enrich", "ingest", "summarize"]
    assert result.steps["label"].status is StepStatus.RESTORED
    assert result.outputs["summarize"] == "a.b.txt:3:EN"


async def test_an_equal_output_keeps_dependents_valid(tmp_path: Path) -> None:
    """Identity is by what a step received: a re-run producing the same output restores on."""
    calls: list[str] = []
    flow = Flow("lengths")

    @flow.step
    async def measure(text: str) -> int:
        calls.append("measure")
        return len(text)

    @flow.step
    async def double(measure: int) -> int:
        calls.append("double")
        return measure * 2

    async with Engine(store=FileStore(tmp_path)) as engine:
        await engine.run(flow, run_id="r", text="abc")
        result = await engine.run(flow, run_id="r", text="xyz")
    assert calls == ["measure", "double", "measure"]
    assert result.steps["double"].status is StepStatus.RESTORED


def make_flow_with_enrich(version: int, calls: list[str]) -> Flow:
    flow = Flow("code-change")

    @flow.step
    async def ingest(path: str) -> str:
        calls.append("ingest")
        return path

    if version == 1:

        @flow.step
        async def enrich(ingest: str) -> str:
            calls.append("enrich v1")
            return ingest.upper()

    else:

        @flow.step
        async def enrich(ingest: str) -> str:
            calls.append("enrich v2")
            return ingest.title()

    return flow


async def test_a_changed_step_body_makes_its_checkpoint_stale(tmp_path: Path) -> None:
    """Two bodies of a step with the same name: the edited one runs again, the rest restore."""
    calls: list[str] = []
    async with Engine(store=FileStore(tmp_path)) as engine:
        await engine.run(make_flow_with_enrich(1, calls), run_id="r", path="ab cd")
        result = await engine.run(make_flow_with_enrich(2, calls), run_id="r", path="ab cd")
    assert calls == ["ingest", "enrich v1", "enrich v2"]
    assert result.outputs["enrich"] == "Ab Cd"
    assert result.steps["ingest"].status is StepStatus.RESTORED


BAD_FILES: dict[str, Callable[[bytes], bytes]] = {
    "corrupt JSON": lambda b: b"{not json" + b[20:],
    "truncated": lambda b: b[: len(b) // 2],
    "foreign": lambda b: b'{"hello": "world"}\n',
    "another format": lambda b: b.replace(b'"asyncflow.run"', b'"asyncflow.step"'),
    "wrong version": lambda b: b.replace(b'"version": 1', b'"version": 99'),
    "not UTF-8": lambda b: b"\xff\xfe" + b,
    "another run's file": lambda b: b.replace(b'"run_id": "doc-4"', b'"run_id": "doc-5"'),
    "empty": lambda b: b"",
    "steps not an object": lambda b: b.replace(b'"steps": {', b'"steps": [], "x": {'),
}


BAD_ENTRIES: dict[str, Callable[[dict[str, Any]], object]] = {
    "not an object": lambda e: "garbage",
    "no output": lambda e: {k: v for k, v in e.items() if k != "output"},
    "fingerprint not a string": lambda e: {**e, "fingerprint": 7},
}


async def run_with_events(root: Path, flow: Flow, run_id: str) -> tuple[RunResult, list[Event]]:
    events: list[Event] = []
    async with Engine(store=FileStore(root), observers=[events.append]) as engine:
        result = await engine.run(flow, run_id=run_id, path="a.txt")
    return result, events


@pytest.mark.parametrize("damage", list(BAD_FILES), ids=list(BAD_FILES))
async def test_a_bad_run_file_is_reported_moved_aside_and_rerun(
    tmp_path: Path, damage: str
) -> None:
    """Corrupt, truncated, foreign or wrong-version run files never fail the run."""
    calls: list[str] = []
    flow = document_flow(calls)
    async with Engine(store=FileStore(tmp_path)) as engine:
        first = await engine.run(flow, run_id="doc-4", path="a.txt")
    target = run_file(tmp_path, "doc-4")
    damaged = BAD_FILES[damage](target.read_bytes())
    target.write_bytes(damaged)
    calls.clear()
    result, events = await run_with_events(tmp_path, flow, "doc-4")
    assert result.ok
    assert result.outputs == first.outputs
    assert sorted(calls) == sorted(flow.steps)
    (discarded,) = [e for e in events if isinstance(e, CheckpointDiscarded)]
    assert discarded.step is None
    assert discarded.path.endswith("doc-4.json.corrupt-1")
    assert discarded.reason
    assert (tmp_path / "doc-4.json.corrupt-1").read_bytes() == damaged
    rewritten = run_file_json(tmp_path, "doc-4")
    assert sorted(rewritten["steps"]) == sorted(flow.steps)
    assert rewritten["manifest"]["status"] == "succeeded"


@pytest.mark.parametrize("entry", list(BAD_ENTRIES), ids=list(BAD_ENTRIES))
async def test_a_bad_step_entry_discards_only_that_step(tmp_path: Path, entry: str) -> None:
    """In an otherwise sound run file, a malformed step entry is dropped; the rest restore.

    The file as it was is kept aside, never lost.
    """
    calls: list[str] = []
    flow = document_flow(calls)
    async with Engine(store=FileStore(tmp_path)) as engine:
        first = await engine.run(flow, run_id="doc-4", path="a.txt")
    target = run_file(tmp_path, "doc-4")
    damaged = damage_entry(target.read_bytes(), "enrich", BAD_ENTRIES[entry])
    target.write_bytes(damaged)
    calls.clear()
    result, events = await run_with_events(tmp_path, flow, "doc-4")
    assert result.ok
    assert result.outputs == first.outputs
    assert calls == ["enrich"]
    assert result.steps["summarize"].status is StepStatus.RESTORED
    (discarded,) = [e for e in events if isinstance(e, CheckpointDiscarded)]
    assert discarded.step == "enrich"
    assert "enrich" in discarded.reason
    assert discarded.path.endswith("doc-4.json.corrupt-1")
    assert (tmp_path / "doc-4.json.corrupt-1").read_bytes() == damaged
    rewritten = run_file_json(tmp_path, "doc-4")
    assert sorted(rewritten["steps"]) == sorted(flow.steps)
    assert rewritten["steps"]["enrich"]["output"]["n"] == 2


async def test_a_bad_manifest_entry_is_dropped_and_the_steps_still_restore(
    tmp_path: Path,
) -> None:
    """A damaged manifest is discarded like a step entry; step checkpoints still restore."""
    calls: list[str] = []
    flow = document_flow(calls)
    async with Engine(store=FileStore(tmp_path)) as engine:
        await engine.run(flow, run_id="doc-6", path="a.txt")
    raw = run_file_json(tmp_path, "doc-6")
    raw["manifest"]["inputs"] = "not an object"
    run_file(tmp_path, "doc-6").write_text(json.dumps(raw, indent=2))
    result, events = await run_with_events(tmp_path, flow, "doc-6")
    assert set(statuses(result).values()) == {StepStatus.RESTORED}
    (discarded,) = [e for e in events if isinstance(e, CheckpointDiscarded)]
    assert discarded.step is None
    assert "manifest" in discarded.reason
    assert (tmp_path / "doc-6.json.corrupt-1").exists()
    assert run_file_json(tmp_path, "doc-6")["manifest"]["inputs"] == {"path": "a.txt"}


HOSTILE_IDS = [
    "../x",
    "../../etc/passwd",
    "/abs/path",
    "a/b",
    "a\\b",
    "x\x00y",
    "",
    ".",
    "..",
    ".hidden",
    ".journal",
    "a" * 201,
    "with space",
    "new\nline",
    "C:evil",
]


@pytest.mark.parametrize("run_id", HOSTILE_IDS)
async def test_hostile_run_ids_are_refused_with_a_clear_error(tmp_path: Path, run_id: str) -> None:
    """Ids that could escape the directory or are not plain names are refused before any I/O."""
    flow = document_flow([])
    store_dir = tmp_path / "store"
    async with Engine(store=FileStore(store_dir)) as engine:
        with pytest.raises(InvalidRunIdError, match="Run id") as info:
            await engine.run(flow, run_id=run_id, path="a.txt")
        with pytest.raises(InvalidRunIdError):
            await engine.resume(flow, run_id)
    assert info.value.run_id == run_id
    assert "e.g. 'doc-42'" in str(info.value)
    assert names(tmp_path) == ["store"]
    assert names(store_dir) == [".journal"]


LOOKALIKE_IDS = [
    "r.json",
    "r.json.0123abcd.tmp",
    "r.json.tmp-deadbeef",
    "r.json.corrupt-1",
    "r.tmp",
]


async def test_run_ids_that_look_like_the_stores_own_names_cannot_collide(
    tmp_path: Path,
) -> None:
    """Run files end in .json, temp and moved-aside files never do: recovery keeps every run."""
    flow = document_flow([])
    async with Engine(store=FileStore(tmp_path)) as engine:
        await engine.run(flow, run_id="r", path="a.txt")
        for run_id in LOOKALIKE_IDS:
            await engine.run(flow, run_id=run_id, path="a.txt")
    async with Engine(store=FileStore(tmp_path)) as engine:
        for run_id in ["r", *LOOKALIKE_IDS]:
            again = await engine.run(flow, run_id=run_id, path="a.txt")
            assert set(statuses(again).values()) == {StepStatus.RESTORED}, run_id
    expected = sorted([".journal", "r.json", *(f"{i}.json" for i in LOOKALIKE_IDS)])
    assert names(tmp_path) == expected


async def test_an_output_that_cannot_be_encoded_fails_that_step_clearly(tmp_path: Path) -> None:
    """The step fails with CheckpointEncodeError naming step and type; dependents are skipped."""
    flow = Flow("unencodable")

    @flow.step
    async def connect() -> object:
        return object()

    @flow.step
    async def use(connect: object) -> str:
        return "never"

    @flow.step
    async def independent() -> int:
        return 1

    async with Engine(store=FileStore(tmp_path)) as engine:
        result = await engine.run(flow, run_id="r")
    err = result.steps["connect"].error
    assert isinstance(err, CheckpointEncodeError)
    assert err.step == "connect"
    assert "Step 'connect' returned a builtins.object" in str(err)
    assert "codec" in str(err)
    assert isinstance(err.__cause__, TypeError)
    assert result.steps["use"].status is StepStatus.SKIPPED
    assert result.steps["independent"].status is StepStatus.SUCCEEDED


async def test_an_input_that_cannot_be_encoded_is_refused_before_the_run(tmp_path: Path) -> None:
    """Inputs go in the manifest; one the codec cannot encode is a RunInputError."""
    flow = document_flow([])
    async with Engine(store=FileStore(tmp_path)) as engine:
        with pytest.raises(RunInputError, match="Run input 'path'"):
            await engine.run(flow, run_id="r", path=object())


async def test_resume_errors_say_what_is_wrong(tmp_path: Path) -> None:
    """No such run, another flow's run, or no store: each is a CheckpointError saying so."""
    flow = document_flow([])
    async with Engine(store=FileStore(tmp_path)) as engine:
        with pytest.raises(CheckpointError, match="There is no run 'nope'"):
            await engine.resume(flow, "nope")
        await engine.run(flow, run_id="mine", path="a")
        other = document_flow([], name="other")
        with pytest.raises(CheckpointError, match="is a run of flow 'docs', not 'other'"):
            await engine.resume(other, "mine")
        with pytest.raises(CheckpointError, match="belongs to flow 'docs'"):
            await engine.run(other, run_id="mine", path="a")
    async with Engine(store=None) as engine:
        with pytest.raises(CheckpointError, match="without checkpoints"):
            await engine.resume(flow, "mine")


async def test_without_a_store_nothing_is_written(tmp_path: Path) -> None:
    """store=None runs without checkpoints; Engine() checkpoints into ./.asyncflow."""
    calls: list[str] = []
    flow = document_flow(calls)
    async with Engine(store=None) as engine:
        assert engine.store is None
        await engine.run(flow, path="a")
        await engine.run(flow, path="a")
    assert calls.count("ingest") == 2
    assert not (tmp_path / ".asyncflow").exists()
    async with Engine() as engine:
        await engine.run(flow, run_id="default", path="a")
    assert "ingest" in run_file_json(tmp_path / ".asyncflow", "default")["steps"]


ROUND_TRIPS: list[object] = [
    None,
    True,
    0,
    -(2**70),
    1.5,
    float("inf"),
    "text ünïcode\n\u2028",
    [1, [2, [3]]],
    {"a": {"b": [1, 2]}},
    {"$ref": 1, "plain": 2},
    {1: "int key", (1, 2): "tuple key", None: 0},
    (1, "two", (3,)),
    {3, 1, 2},
    frozenset({"a"}),
    b"\x00\xffbytes",
    dt.datetime(2026, 4, 27, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.datetime(2026, 4, 27, 12, 30, 1, 5),
    dt.date(2026, 4, 27),
    dt.time(12, 30, 15),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    Decimal("1.10"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    pathlib.Path("a/b.txt"),
    Doc("d", ("x", "y"), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    Color.RED,
    {"nested": [Doc("e", (), dt.datetime(2026, 1, 1)), {Color.RED: (Decimal(1),)}]},
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=[repr(v)[:40] for v in ROUND_TRIPS])
def test_json_codec_round_trips_value_and_type(value: object) -> None:
    """decode(encode(x)) == x, with the same type, and the text is valid JSON."""
    codec = JsonCodec()
    text = codec.encode(value)
    json.loads(text)
    back = codec.decode(text)
    assert back == value
    assert type(back) is type(value)


def test_json_codec_keeps_init_false_dataclass_fields() -> None:
    """A dataclass field with init=False comes back with its saved value."""
    value = WithDerived(1)
    value.b = 7
    back = JsonCodec().decode(JsonCodec().encode(value))
    assert isinstance(back, WithDerived)
    assert (back.a, back.b) == (1, 7)


def test_json_codec_is_canonical() -> None:
    """Equal values give equal text: dict order and set order do not matter."""
    codec = JsonCodec()
    assert codec.encode({"a": 1, "b": {2, 1}}) == codec.encode({"b": {1, 2}, "a": 1})


@pytest.mark.parametrize(
    "value", [object(), [1, object()], {"k": lambda: 1}, type("L", (list,), {})()]
)
def test_json_codec_refuses_what_it_cannot_round_trip(value: object) -> None:
    """Unknown types (and subclasses that would come back as the base type) are a TypeError."""
    with pytest.raises(TypeError, match="JsonCodec cannot store"):
        JsonCodec().encode(value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"$dataclass": ["not_imported_module:X", {}]}', "not imported"),
        ('{"$dataclass": ["os:path", {}]}', "not a dataclass"),
        ('{"$enum": ["builtins:int", 1]}', "not an Enum"),
        ('{"$what": 1}', "unknown tag"),
        ('{"$dataclass": ["tests.test_checkpoint:Doc", {"name": "x"}]}', "fields"),
    ],
)
def test_json_codec_never_imports_or_calls_arbitrary_code(text: str, match: str) -> None:
    """Decoding only rebuilds dataclasses and enums of modules already imported."""
    with pytest.raises(ValueError, match=match):
        JsonCodec().decode(text)


async def test_a_long_chain_of_restored_steps_does_not_recurse(tmp_path: Path) -> None:
    """Restoring releases dependents iteratively: 3,000 chained steps restore fine."""
    flow = Flow("chain")

    def link(n: int) -> None:
        async def fn(**kwargs: int) -> int:
            return n

        params = [inspect.Parameter(f"s{n - 1}", inspect.Parameter.KEYWORD_ONLY)] if n else []
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        flow.step(name=f"s{n}")(fn)

    for n in range(3000):
        link(n)
    async with Engine(store=FileStore(tmp_path)) as engine:
        first = await engine.run(flow, run_id="r")
        again = await engine.run(flow, run_id="r")
    assert first.ok
    assert set(statuses(again).values()) == {StepStatus.RESTORED}


async def test_records_are_readable_before_and_after_compaction(tmp_path: Path) -> None:
    """Saved records come from the journal until compacted, then from the files."""
    calls: list[str] = []
    flow = document_flow(calls)
    store = FileStore(tmp_path, segment_bytes=1)  # every commit seals and compacts a segment
    async with Engine(store=store) as engine:
        for i in range(5):
            await engine.run(flow, run_id=f"r{i}", path=f"{i}.txt")
        again = await engine.run(flow, run_id="r0", path="0.txt")
    assert set(statuses(again).values()) == {StepStatus.RESTORED}
    assert names(tmp_path) == [".journal", "r0.json", "r1.json", "r2.json", "r3.json", "r4.json"]
    for i in range(5):
        raw = run_file_json(tmp_path, f"r{i}")
        assert sorted(raw["steps"]) == sorted(flow.steps)
        assert raw["manifest"]["status"] == "succeeded"
    assert names(tmp_path / ".journal") == ["leases", "sequence"]  # leases/: lock files, empty


async def test_file_work_never_uses_the_default_executor(tmp_path: Path) -> None:
    """Checkpoint I/O runs on the store's own threads, leaving asyncio's pool to DNS."""

    class Refusing(ThreadPoolExecutor):
        def submit(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise AssertionError("checkpoint I/O ran on the default executor")

    loop = asyncio.get_running_loop()
    refusing = Refusing(1)
    loop.set_default_executor(refusing)
    try:
        async with Engine(store=FileStore(tmp_path)) as engine:
            result = await engine.run(document_flow([]), run_id="r", path="a")
            await engine.run(document_flow([]), run_id="r", path="a")
        assert result.ok
    finally:
        loop.set_default_executor(ThreadPoolExecutor(1))
        refusing.shutdown()
