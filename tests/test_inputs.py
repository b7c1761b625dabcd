"""Awkward values as run inputs and step outputs: lone surrogates, huge ints, cycles, depth."""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

import pytest

from asyncflow import (
    CheckpointEncodeError,
    Engine,
    FileStore,
    Flow,
    JsonCodec,
    RunInputError,
    StepStatus,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

#: What os.fsdecode gives for a file name that is not UTF-8.
SURROGATE_NAME = os.fsdecode(b"caf\xe9 \xff.txt")
#: 5,000 digits: more than Python writes in decimal by default (4,300).
HUGE = 3 * 10**4999 + 7


def nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def cyclic() -> list[object]:
    items: list[object] = [1, "two"]
    items.append(items)
    return items


def echo_flow() -> Flow:
    flow = Flow("echo")

    @flow.step
    async def keep(value: object) -> object:
        return value

    @flow.step
    async def wrap(keep: object) -> dict[str, object]:
        return {"kept": [keep], "\udcff key": keep}

    return flow


def statuses(result: object) -> set[StepStatus]:
    return {r.status for r in result.steps.values()}  # type: ignore[attr-defined]


async def run_twice(root: Path, value: object) -> None:
    """Run, then run the same call in a second engine: every output comes back equal."""
    flow = echo_flow()
    async with Engine(store=FileStore(root)) as engine:
        first = await engine.run(flow, value=value)
    assert first.ok, first.error
    assert first.outputs["keep"] == value
    async with Engine(store=FileStore(root)) as engine:
        again = await engine.run(flow, value=value)
        resumed = await engine.resume(flow, first.run_id)
    assert again.run_id == first.run_id
    assert statuses(again) == {StepStatus.RESTORED}
    assert again.outputs == first.outputs
    assert resumed.inputs == {"value": value}


async def test_a_lone_surrogate_input_and_output_checkpoint_and_restore(tmp_path: Path) -> None:
    """A file name os.fsdecode made from non-UTF-8 bytes is saved and restored unchanged."""
    await run_twice(tmp_path, SURROGATE_NAME)


async def test_a_lone_surrogate_input_runs_without_a_store() -> None:
    """With store=None the run id is derived from such a name too, the same for the same name."""
    flow = echo_flow()
    async with Engine(store=None) as engine:
        a = await engine.run(flow, value=SURROGATE_NAME)
        b = await engine.run(flow, value=SURROGATE_NAME)
        c = await engine.run(flow, value=os.fsdecode(b"caf\xe9 \xfe.txt"))
    assert a.ok
    assert a.outputs["keep"] == SURROGATE_NAME
    assert a.run_id == b.run_id != c.run_id


async def test_a_5000_digit_int_input_and_output_checkpoint_and_restore(tmp_path: Path) -> None:
    """An int too long for decimal digits is kept exactly, as input and as output."""
    await run_twice(tmp_path, HUGE)
    async with Engine(store=None) as engine:
        result = await engine.run(echo_flow(), value=-HUGE)
    assert result.outputs["keep"] == -HUGE


async def test_a_cyclic_input_is_refused_by_name_with_a_store(tmp_path: Path) -> None:
    """A list that holds itself cannot go in the manifest: a RunInputError naming the input."""
    async with Engine(store=FileStore(tmp_path)) as engine:
        for run_id in (None, "r"):
            with pytest.raises(RunInputError, match=r"Run input 'value'.*cycle") as info:
                await engine.run(echo_flow(), run_id=run_id, value=cyclic())
            assert info.value.invalid == ("value",)
            assert isinstance(info.value.__cause__, ValueError)


async def test_a_cyclic_input_runs_without_a_store() -> None:
    """With store=None nothing is encoded: the run id comes from the repr and the run goes on."""
    items = cyclic()
    async with Engine(store=None) as engine:
        result = await engine.run(echo_flow(), value=items)
    assert result.ok
    assert result.outputs["keep"] is items


async def test_a_deeply_nested_input_is_a_run_input_error(tmp_path: Path) -> None:
    """No run id comes from 10,000 nested lists: the error names the input and says run_id=.

    Given a run_id, it runs without a store; a store still cannot keep it.
    """
    deep = nested(10_000)
    async with Engine(store=None) as engine:
        with pytest.raises(RunInputError, match=r"run input 'value'.*Pass run_id=") as info:
            await engine.run(echo_flow(), value=deep)
        assert info.value.invalid == ("value",)
        result = await engine.run(echo_flow(), run_id="deep", value=deep)
    assert result.ok
    async with Engine(store=FileStore(tmp_path)) as engine:
        with pytest.raises(RunInputError, match=r"Run input 'value'.*nested too deeply"):
            await engine.run(echo_flow(), run_id="deep", value=deep)


@pytest.mark.parametrize(
    ("output", "match"),
    [(cyclic(), r"output\[2\] is output: .*cycle"), (nested(10_000), "nested too deeply")],
    ids=["cycle", "deep"],
)
async def test_an_output_json_cannot_hold_is_a_checkpoint_encode_error(
    tmp_path: Path, output: object, match: str
) -> None:
    """A step output that holds itself or is too deep fails the step, saying which it is."""
    flow = Flow("out")

    @flow.step
    async def make() -> object:
        return output

    async with Engine(store=FileStore(tmp_path)) as engine:
        result = await engine.run(flow, run_id="r")
    err = result.steps["make"].error
    assert isinstance(err, CheckpointEncodeError)
    assert err.step == "make"
    assert isinstance(err.__cause__, ValueError)
    assert err.__cause__.__cause__ is None  # not a RecursionError's traceback
    assert re.search(match, str(err))


class RawCodec:
    """A codec that writes lone surrogates as they are: its text is not UTF-8."""

    def encode(self, value: object, /) -> str:
        return json.dumps(value, ensure_ascii=False)

    def decode(self, text: str, /) -> object:
        return json.loads(text)


async def test_a_codec_whose_text_is_not_utf8_gives_our_errors(tmp_path: Path) -> None:
    """A codec's text the store cannot write as UTF-8 is refused with our errors.

    RunInputError for an input, CheckpointEncodeError for an output: never a UnicodeEncodeError.
    """
    flow = Flow("raw")

    @flow.step
    async def name(stem: str) -> str:
        return stem + "\udcff"

    async with Engine(store=FileStore(tmp_path, codec=RawCodec())) as engine:
        with pytest.raises(RunInputError, match="Run input 'stem'"):
            await engine.run(flow, run_id="r", stem=SURROGATE_NAME)
        result = await engine.run(flow, run_id="r", stem="plain")
    err = result.steps["name"].error
    assert isinstance(err, CheckpointEncodeError)
    assert isinstance(err.__cause__, UnicodeEncodeError)


AWKWARD: dict[str, object] = {
    "fsdecoded name": SURROGATE_NAME,
    "high surrogate": "\ud800",
    "in a list and a tuple": ["ok", "\udcff\udcfe", ("t\udc80",)],
    "in keys and values": {"\udcff": 1, "plain": "\udcfe", "$tag": "x\udc81"},
    "in a set": {SURROGATE_NAME, "b"},
    "huge int": HUGE,
    "huge negative int": -HUGE,
    "4,300 digits, still decimal": 10**4300 - 1,
    "huge ints as keys and in sets": {HUGE: [HUGE], 1: frozenset({HUGE, 2})},
}


@pytest.mark.parametrize("value", list(AWKWARD.values()), ids=list(AWKWARD))
def test_json_codec_text_is_utf8_and_survives_the_store_reparsing_it(value: object) -> None:
    """The text is UTF-8; parsed and written again as a store does it, it still decodes equal."""
    codec = JsonCodec()
    text = codec.encode(value)
    text.encode("utf-8")
    rewritten = json.dumps(json.loads(text), ensure_ascii=False)
    rewritten.encode("utf-8")
    back = codec.decode(rewritten)
    assert back == value
    assert type(back) is type(value)


def test_json_codec_keeps_awkward_text_canonical() -> None:
    """Equal values give equal text, whatever the dict order, with tagged forms too."""
    codec = JsonCodec()
    assert codec.encode({"\udcff": HUGE, "a": 1}) == codec.encode({"a": 1, "\udcff": HUGE})
    assert codec.encode("plain ünïcode") == json.dumps("plain ünïcode", ensure_ascii=False)
    assert codec.encode(10**4300 - 1) == str(10**4300 - 1)
