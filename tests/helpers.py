"""Helpers shared by several test files: waiting on state, counters, flows, child processes.

A child process (``tests/*_child.py``, run with ``python -m`` from the checkout) appends one line
per fact to a log file with :class:`ChildLog`, outside its own buffers, so a SIGKILL loses none;
its parent drives every kill by that log with :class:`Child`, never by sleeps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from asyncflow import Context, Event, Flow, StepSucceeded
from asyncflow.observe import quiet_stamina

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from types import TracebackType

    from asyncflow import CheckpointStore, Retry, Service

ROOT = Path(__file__).parents[1]

#: A child that writes no new log line for this long has stalled: the test fails.
STALL = 30.0


@contextlib.contextmanager
def stamina_line_back() -> Iterator[None]:
    """What the README tells users: remove ``quiet_stamina`` to get stamina's retry line back."""
    logger = logging.getLogger("stamina")
    logger.removeFilter(quiet_stamina)
    try:
        yield
    finally:
        logger.addFilter(quiet_stamina)


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (a state check, not a timing assertion).

    Not ``anyio.wait_all_tasks_blocked``: it re-checks every 0.1 s, as often as uvicorn's
    server loop ticks in the same event loop, and once the two timers fire in the same loop
    iteration (ours first) it sees the server task awake on every check and never returns.
    The conditions polled here (a circuit's waiters, a pool's queue) have no event to wait on.
    """
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - polled state has no event
            await anyio.sleep(0.002)


class InFlight:
    """Counts the callers inside ``with in_flight:`` now (``now``) and at most at once (``peak``)."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.now -= 1


def fetch_flow(path: str, retry: Retry, *, timeout: float | None = None) -> Flow:
    """A flow of one step, ``fetch``: GET ``url + path`` through ``ctx.http``; its status.

    A failing status raises (``raise_for_status``), so ``retry`` decides what happens next.
    """
    flow = Flow("fetch")

    @flow.step(retry=retry, timeout=timeout)
    async def fetch(url: str, ctx: Context) -> int:
        response = await ctx.http.get(url + path)
        response.raise_for_status()
        return response.status_code

    return flow


# -- in the child ------------------------------------------------------------------------------


class ChildLog:
    """A child's log: lines appended with O_APPEND, each with one ``write``, so none is torn.

    Until :meth:`open` is called (in a test that imports the child's flow) lines go nowhere.
    """

    def __init__(self) -> None:
        self._fd = -1

    def open(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __call__(self, line: str) -> None:
        if self._fd >= 0:
            os.write(self._fd, f"{line}\n".encode())

    def durable(self, event: Event) -> None:
        """An observer: ``done <run> <step>`` once a step's checkpoint is durable.

        StepSucceeded is emitted only after the step's save returned.
        """
        if isinstance(event, StepSucceeded):
            self(f"done {event.run_id} {event.step}")


# -- in the test -------------------------------------------------------------------------------


def log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def dones(lines: list[str]) -> int:
    """How many ``done`` lines (durable steps) a log holds."""
    return sum(ln.startswith("done ") for ln in lines)


class Child:
    """A child process (``python -m module *args``, from the checkout) and its log.

    Standard output and error go to files beside the log (``<log>.stdout``, ``<log>.stderr``),
    not to pipes nobody reads while it runs; standard input is a pipe, for :meth:`send`.
    """

    def __init__(self, module: str, *args: str, log: Path) -> None:
        self.log = log
        self.out = log.with_name(f"{log.name}.stdout")
        self.err = log.with_name(f"{log.name}.stderr")
        with self.out.open("a") as out, self.err.open("a") as err:
            self.out_start, self.err_start = out.tell(), err.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                text=True,
                cwd=ROOT,
            )

    def lines(self) -> list[str]:
        return log_lines(self.log)

    def wait_for(self, condition: Callable[[list[str]], bool], *, exit_ok: bool = False) -> bool:
        """Wait until the log satisfies ``condition``; fail if the child stalls.

        Returns:
            True; False if the child exited first and ``exit_ok`` (else the test fails).
        """
        seen, deadline = -1, time.monotonic() + STALL
        while True:
            now = self.lines()
            if condition(now):
                return True
            if self.proc.poll() is not None:
                if exit_ok:
                    return False
                raise AssertionError(f"the child exited: {self.stderr()}")
            if len(now) != seen:
                seen, deadline = len(now), time.monotonic() + STALL
            elif time.monotonic() > deadline:
                raise AssertionError(f"the child made no progress for {STALL} s ({seen} lines)")
            time.sleep(0.002)  # polling a file another process writes; nothing to await

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def stdout(self) -> str:
        return self._read(self.out, self.out_start)

    def stderr(self) -> str:
        return self._read(self.err, self.err_start)

    @staticmethod
    def _read(path: Path, start: int) -> str:
        with path.open() as f:
            f.seek(start)
            return f.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> str:
        """SIGKILL the child; return what it wrote on standard error."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=30)
        return self.stderr()

    def finish(self, timeout: float = 60) -> str:
        """Wait for the child to exit by itself, successfully; return its standard output."""
        self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, self.stderr()
        return self.stdout()

    def finish_json(self, timeout: float = 60) -> object:
        return json.loads(self.finish(timeout))


@contextlib.asynccontextmanager
async def serving(service: Service) -> AsyncIterator[str]:
    """Run ``service.serve()`` on a free port for a block; yield its URL."""
    urls: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: service.serve(ready=urls.append))
        await until(lambda: bool(urls))
        try:
            yield urls[0]
        finally:
            tg.cancel_scope.cancel()


async def statuses(store: CheckpointStore) -> dict[str, str]:
    """Every run the store lists, by id: its manifest status."""
    return {info.run_id: info.status async for info in store.list_runs()}
