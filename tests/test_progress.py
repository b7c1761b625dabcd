"""The progress bar and log lines share a terminal without fighting."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import pytest

from asyncflow import Engine, Flow, ProgressBar
from asyncflow.observe import LogObserver

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

#: rich's "carriage return, erase the line": the live bar is wiped before a line is printed.
ERASE = "\r\x1b[2K"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """A terminal-like file with a stream handler of the ``asyncflow`` logger writing to it."""
    file = io.StringIO()
    handler = logging.StreamHandler(file)
    logger = logging.getLogger("asyncflow")
    logger.addHandler(handler)
    try:
        yield file
    finally:
        logger.removeHandler(handler)
        assert handler.stream is file  # the bar gave the handler its stream back


def failing_flow() -> Flow:
    flow = Flow("f")

    @flow.step
    async def s(x: int) -> int:
        if x == 2:
            raise ValueError("bad two, with a message long enough to pass the bar's width of 80")
        return x

    return flow


async def test_log_lines_are_printed_above_the_live_bar(out: io.StringIO) -> None:
    """A log line during a batch erases the bar, prints whole (unwrapped), and the bar redraws."""
    bar = ProgressBar(out, force=True)
    async with Engine(store=None, observers=[bar, LogObserver()]) as engine:
        await engine.map(failing_flow(), [{"x": x} for x in range(4)], name="nums").summary()
    text = out.getvalue()
    line = "failed after 1 attempt: ValueError: bad two, with a message long enough to pass the bar's width of 80\n"
    before, found, after = text.partition(line)
    assert found, text
    assert before.rsplit("step s of run", 1)[0].endswith(ERASE)
    assert "nums" in after.split("\n", 1)[0]  # the bar comes back right below the line
    assert "4/4" in text


async def test_without_a_bar_log_lines_are_written_as_they_are(out: io.StringIO) -> None:
    """With no live bar the handler writes straight to its stream, no console codes."""
    async with Engine(store=None, observers=[LogObserver()]) as engine:
        await engine.map(failing_flow(), [{"x": x} for x in range(4)], progress=False).summary()
    assert out.getvalue().startswith("step s of run")
    assert "\x1b" not in out.getvalue()
