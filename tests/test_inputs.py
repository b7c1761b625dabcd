"""Awkward values as run inputs and step outputs: lone surrogates, huge ints, cycles, depth."""

from __future__ import annotations

import json
import os

import pytest

from asyncflow import JsonCodec

#: What os.fsdecode gives for a file name that is not UTF-8.
SURROGATE_NAME = os.fsdecode(b"caf\xe9 \xff.txt")
#: 5,000 digits: more than Python writes in decimal by default (4,300).
HUGE = 3 * 10**4999 + 7


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
